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
//! the staged rows. A stalled node that still means to commit a generation is safe either way:
//! while its commit holds the marker (`FOR SHARE`) the sweep passes the generation over, and a
//! generation swept before is refused by that commit (its marker is gone), which plans the run
//! again.

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

/// Generations of dead nodes one heartbeat deletes at most (each is one bucket of one run),
/// so a sweep stays short; the next heartbeat goes on.
const SWEPT_PER_BEAT: i64 = 64;

/// Deletes the failed discards of `unswept` (put back when the database fails again) and up to
/// [`SWEPT_PER_BEAT`] staged generations of nodes other than `node` that are not alive. Returns
/// how many generations of dead nodes went.
///
/// The markers of those generations are taken `FOR UPDATE SKIP LOCKED` in the transaction that
/// deletes them: a commit applying a generation holds its marker `FOR SHARE` (`directory.rs`),
/// so a generation being committed is skipped, and one swept first is refused by that commit.
pub(super) async fn sweep_staged(
    client: &mut deadpool_postgres::Object,
    node: &str,
    lease_secs: f64,
    unswept: &Unswept,
) -> Result<usize> {
    let retry = std::mem::take(&mut *unswept.lock().unwrap_or_else(PoisonError::into_inner));
    for (i, (tenant, gens)) in retry.iter().enumerate() {
        if let Err(e) = discard_gens(&***client, tenant, gens).await {
            let mut kept = unswept.lock().unwrap_or_else(PoisonError::into_inner);
            kept.extend(retry.into_iter().skip(i));
            return Err(e);
        }
    }
    let tx = client.transaction().await?;
    let dead: Vec<i64> = tx
        .query(
            "SELECT m.gen FROM roster.staged_rows m \
              WHERE m.status = 'staged' AND m.key = '' AND m.node_id <> $1 \
                AND NOT EXISTS (SELECT 1 FROM roster.nodes n WHERE n.node_id = m.node_id \
                      AND n.heartbeat_at > now() - coalesce(n.lease_secs, $2::float8) * interval '1 second') \
              LIMIT $3 FOR UPDATE OF m SKIP LOCKED",
            &[&node, &lease_secs, &SWEPT_PER_BEAT],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    if dead.is_empty() {
        return Ok(0);
    }
    tx.execute(
        "DELETE FROM roster.staged_changes WHERE gen = ANY($1)",
        &[&dead],
    )
    .await?;
    tx.execute(
        "DELETE FROM roster.staged_rows WHERE gen = ANY($1)",
        &[&dead],
    )
    .await?;
    tx.commit().await?;
    Ok(dead.len())
}
