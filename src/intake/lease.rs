//! The intake on several nodes sharing one store and one data folder (docs/postgres.md,
//! "Several nodes"): a tenant's imports run under the store lease `tenant:<id>`, so they never
//! run on two nodes at once, and claims left by a node that died are finished by another.
//!
//! Leases enter from the store's [`Cluster`](crate::store::Cluster) seam and leave as a
//! [`TenantLease`] held for one request (released when dropped). A node takes the lease
//! *before* it claims a file and releases it only after the claim folder is gone, so a claim
//! folder exists only while its tenant's lease is held, or after its holder stopped or died:
//! whoever holds the lease may finish every claim folder of the tenant that no run of its own
//! process is working on. With the one-node sled store every lease is granted at once, so all of
//! this costs nothing there.
//!
//! Each heartbeat (see `serve`) calls [`Intake::take_over_orphans`]: the store moves the claim
//! rows of dead nodes to this node (one node wins each), and every tenant with a claim folder
//! this process did not make gets a recovery request, which finishes those folders once the
//! tenant's lease is free (at once for a dead holder's lease, which expired with its heartbeat).

use super::{run, Intake, Shared};
use crate::config::Tenant;
use crate::store::Store;
use std::path::PathBuf;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

/// How long an explicit request (`run-now`, `approve`, a schedule) waits for a tenant's lease
/// that another node holds.
pub(super) const LEASE_WAIT: Duration = Duration::from_secs(600);
/// How often a waiting request asks for the lease again.
const LEASE_POLL: Duration = Duration::from_millis(500);

/// The name of a tenant's import lease.
pub fn lease_name(tenant: &str) -> String {
    format!("tenant:{tenant}")
}

/// A tenant's import lease, held by this node until dropped.
pub(super) struct TenantLease {
    store: Store,
    name: String,
}

impl Drop for TenantLease {
    fn drop(&mut self) {
        if let Err(e) = self.store.release_lease(&self.name) {
            tracing::warn!(lease = %self.name, "cannot release the lease (it ends by itself within [cluster] lease_secs): {e:#}");
        }
    }
}

/// Why a lease was not taken.
pub(super) enum NotLeased {
    /// A live node holds it.
    Elsewhere,
    /// The store could not be asked.
    Failed(anyhow::Error),
}

/// Takes the tenant's lease if it is free. Blocking.
pub(super) fn try_take(store: &Store, tenant: &str) -> Result<TenantLease, NotLeased> {
    let name = lease_name(tenant);
    match store.take_lease(&name) {
        Ok(Some(fencing)) => {
            tracing::debug!(lease = %name, fencing, "lease taken");
            Ok(TenantLease {
                store: store.clone(),
                name,
            })
        }
        Ok(None) => Err(NotLeased::Elsewhere),
        Err(e) => Err(NotLeased::Failed(e)),
    }
}

/// Takes the tenant's lease, waiting up to `max` while another node holds it, on the async
/// runtime: the wait holds no blocking thread and none of the intake's import permits, so a
/// tenant whose lease another node holds for minutes does not stall the imports of the other
/// tenants of this node (review s27: two such waits took both permits of a 2-core node for
/// up to [`LEASE_WAIT`]). None when the intake stops meanwhile.
pub(super) async fn wait_take(
    store: &Store,
    tenant: &str,
    max: Duration,
    stopping: impl Fn() -> bool,
) -> Option<anyhow::Result<TenantLease>> {
    let end = Instant::now() + max;
    let mut said = false;
    loop {
        let (s, t) = (store.clone(), tenant.to_string());
        let taken = match tokio::task::spawn_blocking(move || try_take(&s, &t)).await {
            Ok(taken) => taken,
            Err(e) => return Some(Err(anyhow::anyhow!("cannot ask for the lease: {e}"))),
        };
        match taken {
            Ok(lease) => return Some(Ok(lease)),
            Err(NotLeased::Failed(e)) => return Some(Err(e)),
            Err(NotLeased::Elsewhere) if Instant::now() < end => {
                if !std::mem::replace(&mut said, true) {
                    tracing::info!(%tenant, "another node is importing for this tenant; waiting for it");
                }
                tokio::time::sleep(LEASE_POLL).await;
                if stopping() {
                    return None;
                }
            }
            Err(NotLeased::Elsewhere) => {
                return Some(Err(anyhow::anyhow!(
                    "another node has been importing for tenant {tenant} for over {} s; try again later",
                    max.as_secs()
                )))
            }
        }
    }
}

/// Another node holds the tenant's lease now: a run that had it gives its claim up to that
/// node instead of retrying (review of 2026-11-30, PostgreSQL F2).
#[derive(Debug)]
pub(super) struct HeldElsewhere(pub String);

impl std::fmt::Display for HeldElsewhere {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "another node holds the lease {} now and finishes what this node had claimed",
            self.0
        )
    }
}

impl std::error::Error for HeldElsewhere {}

/// Before a run is tried again: the tenant's lease, taken again if it expired meanwhile (a
/// database outage longer than `lease_secs`). Fails with [`HeldElsewhere`] when another node
/// took it. Blocking.
pub(super) fn renew(store: &Store, tenant: &str) -> anyhow::Result<()> {
    let name = lease_name(tenant);
    match store.take_lease(&name)? {
        Some(_) => Ok(()),
        None => Err(lost(tenant)),
    }
}

/// The error of a request whose tenant lease another node took meanwhile.
pub(super) fn lost(tenant: &str) -> anyhow::Error {
    anyhow::Error::new(HeldElsewhere(lease_name(tenant)))
}

/// When a file whose lease is held elsewhere is asked for again: a third of the lease, 1-10 s.
pub(super) fn retry_after(shared: &Shared) -> Duration {
    let lease = shared.config.current().cluster.lease_secs;
    Duration::from_secs((lease / 3).clamp(1, 10))
}

/// Remembers a claim id this process made or gave up on: recovery leaves it alone.
pub(super) fn settle(shared: &Shared, claim: &str) {
    shared
        .settled
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(claim.to_string());
}

/// Forgets a claim id of [`settle`] once its run finished (its folder is gone).
pub(super) fn unsettle(shared: &Shared, claim: &str) {
    shared
        .settled
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(claim);
}

/// Claim folders of the tenant that this process neither made nor gave up on, oldest first.
pub(super) fn foreign_claims(shared: &Shared, tenant: &str) -> Vec<PathBuf> {
    let settled = shared
        .settled
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut claims: Vec<PathBuf> = std::fs::read_dir(run::work_dir(shared, tenant))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter(|e| !settled.contains(&*e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    claims.sort();
    claims
}

/// Finishes the tenant's claim folders that no run of this process works on (the caller holds
/// the tenant's lease). A claim that still fails is left for the next start. Each retry first
/// takes the lease again ([`renew`]), as a retry of a new file's run does: a retry after the
/// lease expired (a database outage longer than `lease_secs`) must not finish a claim another
/// node now holds. False when another node took the lease: the claims left are its to finish,
/// and the caller imports nothing more.
pub(super) fn recover_claims(shared: &Shared, tenant: &Tenant) -> bool {
    super::cleanup::under_lease(shared, &tenant.id);
    for dir in foreign_claims(shared, &tenant.id) {
        let span = tracing::info_span!(
            "recover",
            tenant = %tenant.id,
            claim = %dir.display(),
            import_id = tracing::field::Empty
        );
        let _enter = span.enter();
        let (mut first, mut lost) = (true, false);
        let done = super::with_retries(shared, &tenant.id, &dir.display().to_string(), || {
            if !std::mem::take(&mut first) {
                renew(&shared.store, &tenant.id).inspect_err(|e| lost = is_held_elsewhere(e))?;
            }
            run::recover_claim(shared, tenant, &dir).map(|_| ())
        });
        if !done {
            if let Some(id) = dir.file_name() {
                settle(shared, &id.to_string_lossy());
            }
        }
        if lost {
            return false;
        }
    }
    true
}

/// True when `e` says another node holds the lease now ([`HeldElsewhere`]).
pub(super) fn is_held_elsewhere(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<HeldElsewhere>())
}

impl Intake {
    /// Takes over the claims of dead nodes and asks for every tenant with a claim folder this
    /// process did not make to be recovered (under its lease). Only with a store several nodes
    /// share; with sled, claims are recovered at start only.
    pub async fn take_over_orphans(&self) {
        if self.stopping() || !self.shared.store.shared_by_nodes() {
            return;
        }
        let shared = self.shared.clone();
        let found = tokio::task::spawn_blocking(move || {
            match shared.store.orphan_claims() {
                Ok(taken) => {
                    for c in &taken {
                        tracing::warn!(tenant = %c.tenant, file = %c.file, claim = %c.claim, from = %c.from_node, "took over the claim of a node whose heartbeat expired");
                    }
                }
                Err(e) => tracing::warn!("cannot look for claims of dead nodes: {e:#}"),
            }
            let config = shared.config.current();
            config
                .tenants
                .iter()
                .filter(|t| !foreign_claims(&shared, &t.id).is_empty())
                .map(|t| t.id.clone())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for tenant in found {
            self.request_recover(&tenant);
        }
    }
}
