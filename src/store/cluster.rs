//! The [`Cluster`] seam: what several `roster serve` nodes on one store share to work as one
//! (docs/postgres.md, "Several nodes"): heartbeats and the node list, leases, schedule ticks,
//! shared login failures and blocks (and the blocks an operator lifts), and claims of dead
//! nodes. Data enters as this node's calls and leaves as the values below; the backends
//! (`sled/cluster.rs`, `postgres/cluster.rs`) keep it.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The node id `roster migrate-store` heartbeats under while it fills a PostgreSQL store: no
/// `roster serve` starts while it is alive (its staged rows would be swept, its tenants
/// imported into half copied).
pub const MIGRATE_STORE_NODE_ID: &str = "roster-migrate-store";

/// How often a node (or `roster migrate-store`) heartbeats: a third of the lease, so two beats
/// may be missed before the others call it dead; at least every half second.
pub fn beat_interval(lease_secs: u64) -> std::time::Duration {
    std::time::Duration::from_millis(lease_secs.saturating_mul(1000) / 3)
        .max(std::time::Duration::from_millis(500))
}

/// What a node says about itself in each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBeat {
    /// The SFTP listen address (as bound).
    pub sftp: String,
    /// The admin API listen address (as bound, or as configured before it is bound).
    pub admin: String,
    /// Roster's version.
    pub version: String,
    /// When this node's process started.
    pub started_at: DateTime<Utc>,
}

/// One node as the cluster sees it (`GET /api/nodes`, `roster nodes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub sftp: String,
    pub admin: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// The last heartbeat is younger than `[cluster] lease_secs`.
    pub alive: bool,
}

/// What a failed-login counter counts: a source address, or a tenant's password logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginScope {
    Address,
    Tenant,
}

impl LoginScope {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginScope::Address => "address",
            LoginScope::Tenant => "tenant",
        }
    }

    /// The scope named `text` (`address`, `tenant`), as [`as_str`](Self::as_str) writes it.
    pub fn parse(text: &str) -> Option<LoginScope> {
        match text {
            "address" => Some(LoginScope::Address),
            "tenant" => Some(LoginScope::Tenant),
            _ => None,
        }
    }
}

/// A block in force in the counters several nodes share ([`Cluster::login_blocks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBlock {
    pub scope: LoginScope,
    pub subject: String,
    pub failures: u32,
    pub blocked_until: DateTime<Utc>,
}

/// An intake claim taken over from a node whose heartbeat expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanClaim {
    pub tenant: String,
    pub file: String,
    /// The claim id (the folder `data/work/<tenant>/<claim id>`).
    pub claim: String,
    /// The dead node that held it.
    pub from_node: String,
}

/// What several `roster serve` nodes on one store share to work as one (docs/postgres.md,
/// "Several nodes"). A node is alive while its last [`heartbeat`](Self::heartbeat) is younger
/// than `[cluster] lease_secs`, measured on the store's clock. A store that serves one node
/// (sled) is a one-node cluster: every lease and tick is granted, and login failures stay in
/// the SFTP server's memory ([`shared_by_nodes`](Self::shared_by_nodes) is false).
pub trait Cluster: Send + Sync {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// True when several nodes may share this store: its login counters are the shared ones,
    /// and claims of other nodes may appear in the shared data folder.
    fn shared_by_nodes(&self) -> bool;
    /// The store's clock: the database's on PostgreSQL, which every node sharing it agrees on
    /// (schedules fire by it, so a node whose own clock runs fast does not fire a tick for
    /// the whole cluster early); this machine's for a store no other node shares.
    fn clock(&self) -> Result<DateTime<Utc>> {
        Ok(Utc::now())
    }
    /// Drops what an earlier process of this node id left staged (it died mid-run). Called
    /// once no other live process uses this id (`roster serve` checks that first): deleting at
    /// `open` destroyed a live twin's staging before the twin was found (review s26).
    fn forget_own_staging(&self) -> Result<()> {
        Ok(())
    }
    /// Records this node's heartbeat (inserts or refreshes its row) and extends its leases.
    fn heartbeat(&self, beat: &NodeBeat) -> Result<()>;
    /// This node stops: its row goes and its leases are released.
    fn leave(&self) -> Result<()>;
    /// Every node that has a row, by id.
    fn nodes(&self) -> Result<Vec<NodeStatus>>;
    /// Takes the lease `name` for this node: granted when it is free, released, already this
    /// node's, or held by a node whose heartbeat expired. Returns the lease's fencing number
    /// (it grows with every new holder), or None when a live node holds it.
    fn take_lease(&self, name: &str) -> Result<Option<u64>>;
    /// Releases the lease `name` if this node holds it.
    fn release_lease(&self, name: &str) -> Result<()>;
    /// True for one node per (tenant, tick) across the cluster: that node fires it (and is told
    /// true again if it asks twice, its first answer lost). Once that node is no longer alive,
    /// the next other node to ask is told true and fires it again: the dead node may have
    /// fired without running it (the schedules ask again for a while, `intake::schedules`).
    fn fire_tick(&self, tenant: &str, tick: DateTime<Utc>) -> Result<bool>;
    /// Counts one failed login of `subject`; `max` failures within `block_for` block it for
    /// `block_for`. Returns the end of the block in force, if any.
    fn login_failed(
        &self,
        scope: LoginScope,
        subject: &str,
        max: u32,
        block_for: std::time::Duration,
    ) -> Result<Option<DateTime<Utc>>>;
    /// The end of the block in force on `subject`, if any.
    fn login_blocked(&self, scope: LoginScope, subject: &str) -> Result<Option<DateTime<Utc>>>;
    /// Takes `failures` off the count of `subject` (a successful login: the failures the node
    /// counted from that address against the tenant that logged in), forgetting the subject
    /// when none are left; a block in force stays.
    fn login_forgiven(&self, scope: LoginScope, subject: &str, failures: u32) -> Result<()>;
    /// The blocks in force in the shared counters, at most `limit`, the latest ending first.
    /// A store no other node shares keeps no shared counters: none.
    fn login_blocks(&self, _limit: usize) -> Result<Vec<SharedBlock>> {
        Ok(Vec::new())
    }
    /// An operator lifts the block on `subject`: its shared failures and block are forgotten
    /// and, in the same step, the lift is recorded for every node to read
    /// ([`login_lifts_since`](Self::login_lifts_since)). True when a block was in force.
    fn lift_login_block(&self, _scope: LoginScope, _subject: &str) -> Result<bool> {
        Ok(false)
    }
    /// The lifts recorded after lift number `after` (None: those recorded at or after
    /// `since`), and the number to ask after next time.
    fn login_lifts_since(
        &self,
        after: Option<i64>,
        _since: DateTime<Utc>,
    ) -> Result<(i64, Vec<(LoginScope, String)>)> {
        Ok((after.unwrap_or(0), Vec::new()))
    }
    /// Takes over, each atomically and so by one node only, the intake claims held by nodes
    /// whose heartbeat expired, and sweeps the rows those nodes staged. The caller finishes
    /// the returned claims (their folders are under `data/work/<tenant>/`).
    fn orphan_claims(&self) -> Result<Vec<OrphanClaim>>;
}
