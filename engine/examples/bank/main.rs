//! A bank on annal's command side: accounts are aggregates, and a transfer is a process
//! across two accounts driven by a process manager (the domain is in `domain.rs`, shared
//! with `annal demo`).
//!
//! Run it with `cargo run --release -p annal --example bank [DIR]` (default: a fresh
//! temporary directory).

mod domain;

use annal::{ExecuteError, SnapshotUse, Store, StoreOptions};
use domain::{AccountCommand, Bank, BoxError, TransferCommand};

fn main() -> Result<(), BoxError> {
    let tmp;
    let dir = match std::env::args().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let store = Store::open(&dir, StoreOptions::default())?;
    let bank = Bank::open(store)?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let alice = format!("alice.{run}");
    let bob = format!("bob.{run}");
    let nobody = format!("nobody.{run}");

    bank.accounts.execute(&alice, &AccountCommand::Open { owner: "Alice".into() })?;
    bank.accounts.execute(&bob, &AccountCommand::Open { owner: "Bob".into() })?;
    for _ in 0..120 {
        bank.accounts.execute(&alice, &AccountCommand::Deposit { amount: 1, step: None })?;
    }
    println!("alice {} / bob {}", bank.balance(&alice)?, bank.balance(&bob)?);

    match bank.accounts.execute(&bob, &AccountCommand::Withdraw { amount: 5, step: None }) {
        Err(ExecuteError::Rejected(why)) => println!("bob withdraws 5: refused ({why})"),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }

    let t1 = format!("t1.{run}");
    println!("transfer 30 alice -> bob: {:?}", bank.transfer(&t1, &alice, &bob, 30)?);
    println!(
        "the same transfer again: {:?} (nothing moves twice)",
        bank.transfer(&t1, &alice, &bob, 30)?
    );
    let t2 = format!("t2.{run}");
    println!("transfer 1000 alice -> bob: {:?}", bank.transfer(&t2, &alice, &bob, 1000)?);
    let t3 = format!("t3.{run}");
    println!("transfer 10 alice -> nobody: {:?}", bank.transfer(&t3, &alice, &nobody, 10)?);

    // A transfer interrupted after its debit (as if the process died), then resumed.
    let t4 = format!("t4.{run}");
    let start = TransferCommand::Start { from: bob.clone(), to: alice.clone(), amount: 7 };
    bank.transfers.execute(&t4, &start)?;
    let debit = AccountCommand::Withdraw { amount: 7, step: Some(format!("debit:{t4}")) };
    bank.accounts.execute(&bob, &debit)?;
    println!(
        "interrupted after the debit: alice {} / bob {}",
        bank.balance(&alice)?,
        bank.balance(&bob)?
    );
    println!(
        "resumed {} transfer(s): {:?}",
        bank.resume_all()?,
        bank.transfers.load(&t4)?.state.stage
    );

    let (a, b) = (bank.balance(&alice)?, bank.balance(&bob)?);
    println!("alice {a} / bob {b}");
    assert_eq!((a, b), (120 - 30 + 7, 30 - 7), "money is neither created nor lost");

    bank.accounts.flush_snapshots();
    bank.transfers.flush_snapshots();
    for id in [&alice, &bob] {
        let loaded = bank.accounts.load(id)?;
        let replayed = bank.accounts.replay(id)?;
        assert_eq!(loaded.state, replayed.state, "a snapshot load equals a full replay");
        let from = match loaded.snapshot {
            SnapshotUse::Used { version } => format!("snapshot at version {version}"),
            other => format!("{other:?}"),
        };
        println!("{id}: loaded from {from} + {} events", loaded.replayed);
    }
    println!("snapshots: {:?}", bank.accounts.snapshots().stats());
    bank.accounts.store().clone().close()?;
    Ok(())
}
