//! The [`Cluster`] seam on sled: a one-node cluster. sled is opened by one process only, so
//! this node is the whole cluster: every lease is granted to it (fencing 1), every schedule
//! tick fires, there are never claims of another node, and failed logins are counted by the
//! SFTP server's in-memory tracker alone ([`Cluster::shared_by_nodes`] is false; the login
//! methods keep nothing).
//!
//! Data enters as this node's heartbeat, kept as JSON under `node` in the `cluster` tree (not
//! flushed: it is for `GET /api/nodes` of the running process), and leaves as the one
//! [`NodeStatus`] of `nodes()`.

use super::SledStore;
use crate::store::{Backend, Cluster, LoginScope, NodeBeat, NodeStatus, OrphanClaim};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The node id of the sled store's one node.
pub const SLED_NODE_ID: &str = "local";

/// The heartbeat as kept in the `cluster` tree.
#[derive(Serialize, Deserialize)]
struct StoredBeat {
    sftp: String,
    admin: String,
    version: String,
    started_at: DateTime<Utc>,
    heartbeat_at: DateTime<Utc>,
}

impl SledStore {
    fn cluster_tree(&self) -> Result<sled::Tree> {
        self.inner
            .db
            .open_tree("cluster")
            .context("cannot open the store tree cluster")
    }
}

impl Cluster for SledStore {
    fn node_id(&self) -> &str {
        SLED_NODE_ID
    }

    fn shared_by_nodes(&self) -> bool {
        false
    }

    fn heartbeat(&self, beat: &NodeBeat) -> Result<()> {
        let stored = StoredBeat {
            sftp: beat.sftp.clone(),
            admin: beat.admin.clone(),
            version: beat.version.clone(),
            started_at: beat.started_at,
            heartbeat_at: Utc::now(),
        };
        self.cluster_tree()?
            .insert("node", serde_json::to_vec(&stored)?)
            .context("cannot record the heartbeat")?;
        // Flushed: the heartbeat is also the store's write check (`store::health`).
        self.flush().context("cannot record the heartbeat")
    }

    fn leave(&self) -> Result<()> {
        self.cluster_tree()?
            .remove("node")
            .context("cannot remove the heartbeat")?;
        Ok(())
    }

    fn nodes(&self) -> Result<Vec<NodeStatus>> {
        let Some(v) = self.cluster_tree()?.get("node")? else {
            return Ok(Vec::new());
        };
        let b: StoredBeat =
            serde_json::from_slice(&v).context("the stored heartbeat is damaged")?;
        Ok(vec![NodeStatus {
            node_id: SLED_NODE_ID.to_string(),
            sftp: b.sftp,
            admin: b.admin,
            version: b.version,
            started_at: b.started_at,
            heartbeat_at: b.heartbeat_at,
            alive: true,
        }])
    }

    fn take_lease(&self, _name: &str) -> Result<Option<u64>> {
        Ok(Some(1))
    }

    fn release_lease(&self, _name: &str) -> Result<()> {
        Ok(())
    }

    fn fire_tick(&self, _tenant: &str, _tick: DateTime<Utc>) -> Result<bool> {
        Ok(true)
    }

    fn login_failed(
        &self,
        _scope: LoginScope,
        _subject: &str,
        _max: u32,
        _block_for: Duration,
    ) -> Result<Option<DateTime<Utc>>> {
        Ok(None)
    }

    fn login_blocked(&self, _scope: LoginScope, _subject: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(None)
    }

    fn login_forgiven(&self, _scope: LoginScope, _subject: &str, _failures: u32) -> Result<()> {
        Ok(())
    }

    fn orphan_claims(&self) -> Result<Vec<OrphanClaim>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_node_that_gets_every_lease_and_tick() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        assert!(store.nodes().unwrap().is_empty());
        let started = Utc::now();
        let beat = NodeBeat {
            sftp: "127.0.0.1:1".into(),
            admin: "127.0.0.1:2".into(),
            version: "9".into(),
            started_at: started,
        };
        store.heartbeat(&beat).unwrap();
        let nodes = store.nodes().unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].sftp, "127.0.0.1:1");
        assert_eq!(nodes[0].admin, "127.0.0.1:2");
        assert_eq!(nodes[0].started_at, started);
        assert!(nodes[0].alive);
        assert_eq!(store.take_lease("tenant:a").unwrap(), Some(1));
        assert_eq!(store.take_lease("tenant:a").unwrap(), Some(1));
        assert!(store.fire_tick("a", started).unwrap());
        assert!(store.fire_tick("a", started).unwrap());
        assert!(!store.shared_by_nodes());
        store.leave().unwrap();
        assert!(store.nodes().unwrap().is_empty());
    }
}
