//! Three annal replicas in one process, connected by the in-memory network: elect a leader,
//! append with expected versions through it, and show that every replica holds the same
//! events. Run: `cargo run --release -p annal-raft --example three_nodes`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use annal::{Options, StoreOptions};
use annal_raft::mem_network::Router;
use annal_raft::{AppendRequest, EventData, Expected, LogStore, Raft, StateMachine};
use openraft::{BasicNode, Config};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = Arc::new(Config::default().validate()?);
    let router = Router::default();
    let mut nodes = BTreeMap::new();
    for id in 1..=3u64 {
        let d = dir.path().join(format!("node-{id}"));
        let log = LogStore::open(d.join("log"), Options::default())?;
        let sm = StateMachine::open(d.join("sm"), StoreOptions::default())?;
        let raft = Raft::new(id, Arc::clone(&config), router.network(id), log, sm.clone()).await?;
        router.add(id, raft.clone());
        nodes.insert(id, (raft, sm));
    }
    let members: BTreeMap<u64, BasicNode> =
        (1..=3).map(|id| (id, BasicNode::new(format!("mem-{id}")))).collect();
    nodes[&1].0.initialize(members).await?;
    let leader = loop {
        if let Some(l) = nodes[&1].0.metrics().borrow().current_leader {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("leader: node {leader}");
    let raft = &nodes[&leader].0;
    let open = AppendRequest {
        stream: "account-42".into(),
        expected: Expected::NoStream,
        events: vec![EventData::new("Opened", r#"{"owner":"ada"}"#)],
    };
    println!("open account: {:?}", raft.client_write(open).await?.data);
    let deposit = AppendRequest {
        stream: "account-42".into(),
        expected: Expected::Exact(0),
        events: vec![EventData::new("Deposited", r#"{"amount":100}"#)],
    };
    println!("deposit at version 0: {:?}", raft.client_write(deposit.clone()).await?.data);
    println!("deposit again at version 0: {:?}", raft.client_write(deposit).await?.data);
    let target = raft.metrics().borrow().last_applied.map(|l| l.index);
    for (id, (raft, sm)) in &nodes {
        raft.wait(Some(Duration::from_secs(5))).applied_index_at_least(target, "sync").await?;
        println!(
            "node {id}: {} events, digest {:016x}",
            sm.store().log().visible_end(),
            sm.digest()?
        );
    }
    for (raft, _) in nodes.values() {
        raft.shutdown().await?;
    }
    Ok(())
}
