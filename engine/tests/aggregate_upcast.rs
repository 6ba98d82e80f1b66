//! Upcasting: events written in schema versions 1 and 2 are read through a registered
//! v1 -> v2 -> v3 chain, so the aggregate sees only v3 shapes and its state equals the one
//! built from v3 events; a gap in the chain or a version from the future is an error, not a
//! silently wrong state.

use serde::{Deserialize, Serialize};
use serde_json::json;

use annal::{
    Aggregate, Error, ExpectedVersion, JsonCodec, NewEvent, Repository, RepositoryOptions, Store,
    StoreOptions, Upcasters, split_event_type,
};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Wallet {
    /// (amount in cents, currency) in order.
    entries: Vec<(u64, String)>,
}

/// v3: `Deposited { money: { cents, currency } }`. v2 was `{ cents, currency }`; v1 was
/// `{ euros }` (whole euros, currency implied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum WalletEvent {
    Deposited { money: Money },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Money {
    cents: u64,
    currency: String,
}

#[derive(Debug)]
struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}

impl std::error::Error for Never {}

impl Aggregate for Wallet {
    type Command = Money;
    type Event = WalletEvent;
    type Error = Never;
    const CATEGORY: &'static str = "wallet";
    const SNAPSHOT_SCHEMA: &'static str = "test.wallet/1";

    fn handle(&self, cmd: &Money) -> Result<Vec<WalletEvent>, Never> {
        Ok(vec![WalletEvent::Deposited { money: cmd.clone() }])
    }

    fn apply(&mut self, e: &WalletEvent) {
        let WalletEvent::Deposited { money } = e;
        self.entries.push((money.cents, money.currency.clone()));
    }

    fn schema_version(event_type: &str) -> u32 {
        match event_type {
            "Deposited" => 3,
            _ => 1,
        }
    }
}

fn chain() -> Upcasters {
    let mut up = Upcasters::new();
    up.register_json("Deposited", 1, |v| {
        let euros = v["euros"].as_u64().ok_or(Error::Codec { reason: "no euros".into() })?;
        Ok(json!({ "cents": euros * 100, "currency": "EUR" }))
    })
    .unwrap();
    up.register_json("Deposited", 2, |v| Ok(json!({ "money": v }))).unwrap();
    up
}

fn opts() -> RepositoryOptions {
    RepositoryOptions { snapshot_every: None, ..RepositoryOptions::default() }
}

#[test]
fn v1_and_v2_events_are_read_as_v3() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let old = [
        NewEvent::new("Deposited", r#"{"euros":3}"#),
        NewEvent::new("Deposited@v2", r#"{"cents":250,"currency":"USD"}"#),
    ];
    store.append("wallet-w", ExpectedVersion::NoStream, &old).unwrap();
    let repo: Repository<Wallet> =
        Repository::with_codec(store.clone(), JsonCodec, chain(), opts()).unwrap();
    let done = repo.execute("w", &Money { cents: 7, currency: "CHF".into() }).unwrap();
    assert_eq!(done.version, Some(2));
    let want = vec![(300, "EUR".to_string()), (250, "USD".into()), (7, "CHF".into())];
    assert_eq!(done.state.entries, want);
    assert_eq!(repo.load("w").unwrap().state.entries, want);
    // New events are written at the current version, in the type's suffix.
    let stored = store.read_stream("wallet-w", 0, annal::Direction::Forward, 10).unwrap();
    let types: Vec<_> = stored.iter().map(|e| split_event_type(&e.event_type)).collect();
    assert_eq!(types, [("Deposited", 1), ("Deposited", 2), ("Deposited", 3)]);
    assert_eq!(stored[2].event_type, "Deposited@v3");
    assert_eq!(stored[2].json::<serde_json::Value>().unwrap()["money"]["cents"], 7);
}

#[test]
fn a_gap_in_the_chain_or_a_future_version_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    store
        .append("wallet-a", ExpectedVersion::Any, &[NewEvent::new("Deposited", r#"{"euros":1}"#)])
        .unwrap();
    store
        .append(
            "wallet-b",
            ExpectedVersion::Any,
            &[NewEvent::new("Deposited@v4", r#"{"money":{"cents":1,"currency":"X"}}"#)],
        )
        .unwrap();
    // Only v1 -> v2 registered: a v1 event stops at v2.
    let mut partial = Upcasters::new();
    partial.register_json("Deposited", 1, |_| Ok(json!({"cents": 1, "currency": "X"}))).unwrap();
    let repo: Repository<Wallet> =
        Repository::with_codec(store.clone(), JsonCodec, partial, opts()).unwrap();
    let err = repo.load("a").unwrap_err();
    assert!(matches!(&err, Error::Codec { reason } if reason.contains("v2")), "{err}");
    let repo: Repository<Wallet> =
        Repository::with_codec(store.clone(), JsonCodec, chain(), opts()).unwrap();
    assert_eq!(repo.load("a").unwrap().state.entries, [(100, "EUR".to_string())]);
    let err = repo.load("b").unwrap_err();
    assert!(matches!(&err, Error::Codec { reason } if reason.contains("v4")), "{err}");
    // A failing upcaster is reported with the type and version it failed on.
    store
        .append("wallet-c", ExpectedVersion::Any, &[NewEvent::new("Deposited", r#"{"e":1}"#)])
        .unwrap();
    let err = repo.load("c").unwrap_err();
    assert!(matches!(&err, Error::Codec { reason } if reason.contains("Deposited v1")), "{err}");
}

#[test]
fn renaming_upcaster() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    store
        .append("wallet-r", ExpectedVersion::Any, &[NewEvent::new("Credited@v2", r#"{"c":5}"#)])
        .unwrap();
    let mut up = chain();
    up.register_renaming("Credited", 2, "Deposited", |d| {
        let v: serde_json::Value = serde_json::from_slice(d).unwrap();
        Ok(serde_json::to_vec(&json!({"money": {"cents": v["c"], "currency": "GBP"}})).unwrap())
    })
    .unwrap();
    // Credited v2 becomes Deposited v3, the aggregate's current shape.
    let repo: Repository<Wallet> = Repository::with_codec(store, JsonCodec, up, opts()).unwrap();
    assert_eq!(repo.load("r").unwrap().state.entries, [(5, "GBP".to_string())]);
}
