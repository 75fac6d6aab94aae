//! Staged generations that no commit will ever name: swept by the heartbeat.
//!
//! A run stages its buckets under fresh generations (`staging.rs`) and, when it cannot commit,
//! discards them (`Directory::discard_staged`). Two ways leave them behind: the discard itself
//! fails (the database went away mid-commit), and the node that staged them dies or restarts
//! under another node id (the default id carries the process id), so its start-up sweep of
//! its own id never sees them. Data enters as the generations a failed discard hands to
//! [`PostgresStore::remember_unswept`] and as the heartbeat's call of [`sweep_staged`]; it
//! leaves as deleted rows of `roster.staged_rows` and `roster.staged_changes`.
//!
//! A generation of a node that is not alive (no heartbeat within `lease_secs`) is found by its
//! marker row through the partial index `staged_rows_markers` (schema 13), never by reading
//! the staged rows. Sweeping a generation that a stalled node still means to commit is safe:
//! the commit counts its markers and refuses a plan whose generations are gone.

use super::directory::discard_gens;
use super::PostgresStore;
use anyhow::Result;
use std::sync::{Arc, Mutex, PoisonError};

/// Failed discards remembered at most; past this the oldest is forgotten (logged), left to
/// the sweep of dead nodes or this node's next start.
const UNSWEPT_KEPT: usize = 1024;

/// The failed discards a heartbeat retries: (tenant, generations).
pub(super) type Unswept = Arc<Mutex<Vec<(String, Vec<i64>)>>>;

impl PostgresStore {
    /// Keeps `gens` of `tenant`, whose discard failed, for the next heartbeat to delete.
    pub(super) fn remember_unswept(&self, tenant: &str, gens: Vec<i64>) {
        let mut kept = self.unswept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() >= UNSWEPT_KEPT {
            let (t, g) = kept.remove(0);
            tracing::warn!(tenant = %t, generations = g.len(),
                "too many staged generations wait to be swept; the oldest is left to the next start of this node");
        }
        kept.push((tenant.to_string(), gens));
    }
}

/// Deletes the failed discards of `unswept` (put back when the database fails again) and every
/// staged generation of a node other than `node` that is not alive. Returns how many
/// generations of dead nodes went.
pub(super) async fn sweep_staged(
    client: &tokio_postgres::Client,
    node: &str,
    lease_secs: f64,
    unswept: &Unswept,
) -> Result<usize> {
    let retry = std::mem::take(&mut *unswept.lock().unwrap_or_else(PoisonError::into_inner));
    for (i, (tenant, gens)) in retry.iter().enumerate() {
        if let Err(e) = discard_gens(client, tenant, gens).await {
            let mut kept = unswept.lock().unwrap_or_else(PoisonError::into_inner);
            kept.extend(retry.into_iter().skip(i));
            return Err(e);
        }
    }
    let dead: Vec<i64> = client
        .query(
            "SELECT m.gen FROM roster.staged_rows m \
              WHERE m.status = 'staged' AND m.key = '' AND m.node_id <> $1 \
                AND NOT EXISTS (SELECT 1 FROM roster.nodes n WHERE n.node_id = m.node_id \
                      AND n.heartbeat_at > now() - $2::float8 * interval '1 second')",
            &[&node, &lease_secs],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    if dead.is_empty() {
        return Ok(0);
    }
    client
        .execute(
            "DELETE FROM roster.staged_rows WHERE gen = ANY($1)",
            &[&dead],
        )
        .await?;
    client
        .execute(
            "DELETE FROM roster.staged_changes WHERE gen = ANY($1)",
            &[&dead],
        )
        .await?;
    Ok(dead.len())
}
