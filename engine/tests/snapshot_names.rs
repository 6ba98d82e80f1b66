//! Snapshot file names: no stream id, however hostile (`..`, `/`, NUL, absolute paths, case
//! variants, 10 KiB), makes a file outside `<dir>/snapshots/`, and distinct ids never share
//! a name, not even on a case-insensitive file system.

mod support;

use std::collections::HashMap;
use std::path::{Component, Path};
use std::sync::Arc;

use annal::format::SnapshotFile;
use annal::fs::{SimFs, Storage};
use annal::{Repository, RepositoryOptions, SnapshotRead, SnapshotStore, Store, StoreOptions};
use proptest::prelude::*;
use support::{Account, Cmd};

fn hostile_ids() -> Vec<String> {
    let mut ids: Vec<String> = [
        "..",
        ".",
        "../x",
        "../../etc/passwd",
        "/etc/passwd",
        "/",
        "a/b",
        "a\\b",
        "..\\..\\x",
        "a\0b",
        "\0",
        "C:\\x",
        "con",
        "NUL",
        "aux.txt",
        "x.snap",
        "x.snap.tmp",
        "p-x",
        "h-x",
        " ",
        "a ",
        "a.",
        "ACCOUNT-1",
        "account-1",
        "Account-1",
        "_41",
        "A",
        "a",
        "é",
        "e\u{301}",
        "\u{202e}",
        "~",
        "$HOME",
        "*",
        "?",
        "<>|:\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ids.push("A".repeat(4096));
    ids.push("a".repeat(4096));
    ids.push("/..".repeat(1365));
    ids.push(format!("{}b", "a".repeat(4095)));
    ids
}

/// Every regular file under `root`, relative to it.
fn files_under(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out
}

fn snap(store: &SnapshotStore, id: &str) -> SnapshotFile {
    SnapshotFile {
        log_id: store.log_id(),
        stream_id: id.to_owned(),
        stream_version: id.len() as u64,
        seq: 1,
        event_id: [1; 16],
        schema: "s/1".into(),
        payload: id.as_bytes().to_vec(),
    }
}

#[test]
fn hostile_ids_stay_inside_snapshots_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = Store::open(&root, StoreOptions::default()).unwrap();
    let snaps = SnapshotStore::for_store(&store);
    let ids = hostile_ids();
    let mut names = HashMap::new();
    for id in &ids {
        let path = snaps.path_for(id);
        assert_eq!(path.parent(), Some(snaps.dir()), "{id:?}");
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.len() <= 200, "{id:?}: {} bytes", name.len());
        assert!(!name.starts_with('.'));
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        );
        assert!(matches!(Path::new(&name).components().next(), Some(Component::Normal(_))));
        if let Some(other) = names.insert(name.to_ascii_lowercase(), id.clone()) {
            panic!("{id:?} and {other:?} share a file name");
        }
        snaps.write(&snap(&snaps, id)).unwrap();
    }
    for id in &ids {
        match snaps.read(id) {
            SnapshotRead::Found { file, .. } => assert_eq!(file, snap(&snaps, id)),
            other => panic!("{id:?}: {other:?}"),
        }
    }
    // A 10 KiB id is beyond the stream id limit: its name is short, but nothing is written.
    let huge = "../".repeat((10 << 10) / 3);
    assert!(snaps.path_for(&huge).file_name().unwrap().len() < 200);
    assert!(snaps.write(&snap(&snaps, &huge)).is_err());
    assert!(matches!(snaps.read(&huge), SnapshotRead::Missing));
    store.close().unwrap();
    for f in files_under(tmp.path()) {
        let first = f.components().nth(1).map(|c| c.as_os_str().to_owned());
        assert!(f.starts_with("store"), "{f:?} outside the store");
        let allowed = ["snapshots", "segments", "LOCK", "streams.ckpt"];
        assert!(allowed.iter().any(|a| first.as_deref() == Some(a.as_ref())), "{f:?}");
    }
    let in_snapshots = files_under(&root.join("snapshots")).len();
    assert_eq!(in_snapshots, ids.len());
}

/// Through the repository: an aggregate id is part of a stream id, and hostile ones work
/// end to end (the 10 KiB one is refused as a stream id, with nothing written).
#[test]
fn hostile_aggregate_ids_through_the_repository() {
    let sim = SimFs::new(3);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let store = Store::open_with(storage, "/s", StoreOptions::default()).unwrap();
    let o = RepositoryOptions { snapshot_every: Some(1), ..RepositoryOptions::default() };
    let repo: Repository<Account> = Repository::new(store, o).unwrap();
    for id in hostile_ids().iter().filter(|i| i.len() < 4000) {
        repo.execute(id, &Cmd::Open).unwrap();
        repo.execute(id, &Cmd::Deposit(id.len() as u64)).unwrap();
    }
    repo.flush_snapshots();
    for id in hostile_ids().iter().filter(|i| i.len() < 4000) {
        let loaded = repo.load(id).unwrap();
        assert_eq!(loaded.snapshot, annal::SnapshotUse::Used { version: 1 }, "{id:?}");
        assert_eq!(loaded.state.balance, id.len() as u64);
    }
    let huge = "/..".repeat((10 << 10) / 3);
    assert!(repo.execute(&huge, &Cmd::Open).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("ANNAL_SNAPSHOT_NAME_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    /// The mapping is injective (also after case folding) and every name is one plain
    /// component of safe bytes.
    #[test]
    fn names_are_injective_and_safe(
        a in "(?s).{1,64}|[a-zA-Z_./\\\\\u{0}-]{1,300}",
        b in "(?s).{1,64}|[a-zA-Z_./\\\\\u{0}-]{1,300}",
    ) {
        let snaps = SnapshotStore::new(Arc::new(SimFs::new(0)), Path::new("/s"), [0; 16]);
        let variants = [b.clone(), a.to_uppercase(), a.to_lowercase()];
        let pa = snaps.path_for(&a);
        prop_assert_eq!(pa.parent(), Some(snaps.dir()));
        let na = pa.file_name().unwrap().to_str().unwrap().to_ascii_lowercase();
        prop_assert!(na.len() <= 200);
        prop_assert!(!na.contains('/') && !na.contains('\0') && !na.starts_with('.'));
        for v in variants {
            if v != a {
                let pv = snaps.path_for(&v);
                let nv = pv.file_name().unwrap().to_str().unwrap().to_ascii_lowercase();
                prop_assert_ne!(&na, &nv, "{:?} vs {:?}", a, v);
            }
        }
    }
}
