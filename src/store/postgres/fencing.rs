//! Fencing a write by the tenant's lease: a commit, or a refused file's record, is written only
//! while the very process that took the lease still holds it (`roster.leases`: `node_id` and
//! `holder`, unexpired), and a commit renews the lease as it ends.
//!
//! A delivery cursor is written under the fencing number its lease was taken with
//! ([`held_under`]).
//!
//! Data enters as the open transaction of the write, the lease's name and this store's
//! [`LeaseHolder`]; it leaves as [`LeaseLost`](crate::store::LeaseLost) or a renewed row.

use super::PostgresStore;
use anyhow::Result;
use tokio_postgres::Transaction;

/// Who holds a lease: the node, and the process of that node (see `PostgresStore::holder`).
pub(super) struct LeaseHolder {
    pub node: String,
    pub process: String,
}

impl PostgresStore {
    /// This store's process as a lease holder.
    pub(super) fn lease_holder(&self) -> LeaseHolder {
        LeaseHolder {
            node: self.node_id.clone(),
            process: self.holder.clone(),
        }
    }
}

/// Refuses a write unless `holder` holds `lease`, unexpired ([`Commit::lease`](crate::store::Commit::lease)). The row is
/// locked until the commit ends, so no other node can take the lease meanwhile.
pub(super) async fn still_leased(
    tx: &Transaction<'_>,
    lease: &str,
    holder: &LeaseHolder,
) -> Result<()> {
    let held = tx
        .query_opt(
            "SELECT 1 FROM roster.leases WHERE name = $1 AND node_id = $2 AND holder = $3 \
             AND expires_at > now() FOR SHARE",
            &[&lease, &holder.node, &holder.process],
        )
        .await?;
    if held.is_none() {
        return Err(anyhow::Error::new(crate::store::LeaseLost(
            lease.to_string(),
        )));
    }
    Ok(())
}

/// Whether `holder` holds `lease`, unexpired, under the fencing number `fencing`; the row is
/// then locked until the transaction ends, so the lease cannot pass before its write commits
/// (a taker's upsert waits for the lock).
pub(super) async fn held_under(
    tx: &Transaction<'_>,
    lease: &str,
    holder: &LeaseHolder,
    fencing: i64,
) -> Result<bool> {
    let held = tx
        .query_opt(
            "SELECT 1 FROM roster.leases WHERE name = $1 AND node_id = $2 AND holder = $3 \
             AND fencing = $4 AND expires_at > now() FOR SHARE",
            &[&lease, &holder.node, &holder.process, &fencing],
        )
        .await?;
    Ok(held.is_some())
}

/// Renews the lease the commit holds, from the clock at its end: the node's heartbeats pass
/// over a lease row its own commit has locked, so a long commit would otherwise end with the
/// lease run out.
pub(super) async fn renew_as_it_ends(
    tx: &Transaction<'_>,
    lease: &str,
    holder: &LeaseHolder,
    secs: f64,
) -> Result<()> {
    tx.execute(
        "UPDATE roster.leases SET expires_at = greatest(expires_at, \
         clock_timestamp() + $3::float8 * interval '1 second') \
         WHERE name = $1 AND node_id = $2 AND holder = $4",
        &[&lease, &holder.node, &secs, &holder.process],
    )
    .await?;
    Ok(())
}
