//! An in-process network for raft nodes of one process: each RPC is a direct call on the
//! target's [`Raft`] handle. Nodes can be removed (stopped) and isolated (a partition) and
//! the partition healed, for tests, the example and the bench.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::{Raft, TypeConfig};

#[derive(Default)]
struct Nodes {
    rafts: BTreeMap<u64, Raft>,
    isolated: BTreeSet<u64>,
}

/// The nodes of one in-process cluster. Clones share it.
#[derive(Clone, Default)]
pub struct Router {
    nodes: Arc<Mutex<Nodes>>,
}

impl Router {
    fn lock(&self) -> MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes node `id` reachable through `raft`.
    pub fn add(&self, id: u64, raft: Raft) {
        self.lock().rafts.insert(id, raft);
    }

    /// Makes node `id` unreachable and returns its handle (to shut it down).
    pub fn remove(&self, id: u64) -> Option<Raft> {
        self.lock().rafts.remove(&id)
    }

    /// Cuts node `id` off from every other node, both ways.
    pub fn isolate(&self, id: u64) {
        self.lock().isolated.insert(id);
    }

    /// Heals every partition.
    pub fn heal(&self) {
        self.lock().isolated.clear();
    }

    /// The network factory of node `from`.
    pub fn network(&self, from: u64) -> MemNetwork {
        MemNetwork { from, router: self.clone() }
    }

    fn target(&self, from: u64, to: u64) -> Result<Raft, Unreachable> {
        let nodes = self.lock();
        let unreachable = |why: &str| Unreachable::new(&std::io::Error::other(why.to_owned()));
        if nodes.isolated.contains(&from) || nodes.isolated.contains(&to) {
            return Err(unreachable("partitioned"));
        }
        nodes.rafts.get(&to).cloned().ok_or_else(|| unreachable("node is down"))
    }
}

/// The [`RaftNetworkFactory`] of one node.
#[derive(Clone)]
pub struct MemNetwork {
    from: u64,
    router: Router,
}

/// A connection from one node to another.
pub struct MemConnection {
    from: u64,
    to: u64,
    router: Router,
}

impl RaftNetworkFactory<TypeConfig> for MemNetwork {
    type Network = MemConnection;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> MemConnection {
        MemConnection { from: self.from, to: target, router: self.router.clone() }
    }
}

type RpcResult<T, E = RaftError<u64>> = Result<T, RPCError<u64, BasicNode, E>>;

impl MemConnection {
    fn target<E: std::error::Error>(&self) -> RpcResult<Raft, E> {
        self.router.target(self.from, self.to).map_err(RPCError::Unreachable)
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<u64, E>,
    ) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
        RPCError::RemoteError(RemoteError::new(self.to, e))
    }
}

impl RaftNetwork<TypeConfig> for MemConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        let raft = self.target()?;
        let resp = raft.append_entries(rpc).await.map_err(|e| self.remote(e))?;
        // A reply lost to a partition that appeared meanwhile is lost, as on a real network.
        self.target::<RaftError<u64>>()?;
        Ok(resp)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        let raft = self.target()?;
        raft.install_snapshot(rpc).await.map_err(|e| self.remote(e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        let raft = self.target()?;
        raft.vote(rpc).await.map_err(|e| self.remote(e))
    }
}
