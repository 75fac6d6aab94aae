//! The throttle's counts in a store several nodes share ([`LoginThrottle::share_through`]):
//! failures counted and blocks checked there too, on a blocking thread for at most
//! [`SHARED_WAIT`], left alone for [`STORE_BACKOFF`] after the store failed (see the parent
//! module).

use super::*;

impl LoginThrottle {
    /// Counts and checks failures in `store` too, when several nodes share it (a no-op for a
    /// one-node store, and after the first call).
    pub fn share_through(&self, store: Store) {
        if store.shared_by_nodes() {
            let _ = self.shared_since.set(chrono::Utc::now());
            let _ = self.shared.set(store);
        }
    }

    /// [`gate`](Self::gate), then the shared blocks (remembered locally when found). When the
    /// store cannot answer, the local answer stands (logged).
    pub async fn check(&self, addr: Option<IpAddr>, tenant: Option<&str>) -> Gate {
        let addr = address_key(addr);
        let local = self.gate(addr, tenant);
        if local != Gate::Open {
            return local;
        }
        self.shared_gate(addr, tenant).await
    }

    /// The check of a public-key offer. `shared_asked` is the connection's own flag: the first
    /// offer of a connection is judged as [`check`](Self::check) judges (this node's counts,
    /// then the shared counters), every later one by this node's counts alone.
    ///
    /// Decision (review s29): russh answers an accepted key offer at once, without the delay
    /// of a rejection and without counting it toward `max_auth_attempts`, and the key is
    /// public, so one connection offering an authorized key could loop at network speed for
    /// the whole login deadline, each offer one blocking thread and one query on the store's
    /// small pool (whose slow answers then turn the shared counters off for everyone). One
    /// shared read per connection costs no more than the connection itself; a block it finds
    /// is copied into this node's counts, and later offers see it there.
    pub async fn check_key_offer(&self, addr: Option<IpAddr>, shared_asked: &mut bool) -> Gate {
        if std::mem::replace(shared_asked, true) {
            return self.gate(addr, None);
        }
        self.check(addr, None).await
    }

    /// The blocks in the shared counters (Open without shared counters, or when the store
    /// cannot answer; remembered locally when found).
    pub(super) async fn shared_gate(&self, addr: Option<IpAddr>, tenant: Option<&str>) -> Gate {
        let Some(store) = self.shared_store() else {
            return Gate::Open;
        };
        let subjects = subjects(addr, tenant);
        let lifts = self.lifts_seen();
        let found = ask_store(move || {
            for (scope, subject) in subjects {
                if let Some(until) = store.login_blocked(scope, &subject)? {
                    return Ok(Some((scope, subject, until)));
                }
            }
            Ok(None)
        })
        .await;
        match found {
            Ok(None) => Gate::Open,
            Ok(Some((scope, subject, until))) => {
                self.remember_block_unless_lifted(lifts, scope, &subject, until);
                Gate::Blocked(blocked_reason(scope, &subject))
            }
            Err(e) => {
                self.store_failed();
                tracing::warn!(
                    "cannot read the shared login blocks; judging by this node's own counts: {e:#}"
                );
                Gate::Open
            }
        }
    }

    /// [`failed`](Self::failed), and the failure counted in the shared counters too (a block
    /// they report is remembered locally). Returns how long to delay the answer.
    pub async fn record_failure(
        &self,
        policy: ThrottlePolicy,
        addr: Option<IpAddr>,
        tenant: &str,
    ) -> Duration {
        self.record_failure_as(policy, addr, Some(tenant)).await
    }

    /// A failure that names no tenant (a wrong admin or SCIM bearer token), counted against
    /// the address only, here and in the shared counters. Returns how long the console would
    /// delay its answer (the bearer routes do not wait: the block bounds their guesses).
    pub async fn record_address_failure(
        &self,
        policy: ThrottlePolicy,
        addr: Option<IpAddr>,
    ) -> Duration {
        self.record_failure_as(policy, addr, None).await
    }

    pub(super) async fn record_failure_as(
        &self,
        policy: ThrottlePolicy,
        addr: Option<IpAddr>,
        tenant: Option<&str>,
    ) -> Duration {
        let addr = address_key(addr);
        let delay = self.failed_local(policy, addr, tenant, false);
        self.record_shared(policy, addr, tenant).await;
        delay
    }

    /// Counts a failure in the shared counters, if any (a block they report is remembered
    /// locally).
    pub(super) async fn record_shared(
        &self,
        policy: ThrottlePolicy,
        addr: Option<IpAddr>,
        tenant: Option<&str>,
    ) {
        let Some(store) = self.shared_store() else {
            return;
        };
        let subjects = subjects(addr, tenant);
        let lifts = self.lifts_seen();
        let counted = ask_store(move || {
            let mut blocks = Vec::new();
            for (scope, subject) in subjects {
                let until =
                    store.login_failed(scope, &subject, policy.max_failures, policy.block_for)?;
                if let Some(until) = until {
                    blocks.push((scope, subject, until));
                }
            }
            Ok(blocks)
        })
        .await;
        match counted {
            Ok(blocks) => {
                for (scope, subject, until) in blocks {
                    self.remember_block_unless_lifted(lifts, scope, &subject, until);
                }
            }
            Err(e) => {
                self.store_failed();
                tracing::warn!(
                    "cannot count a failed login in the shared counters; this node counts it alone: {e:#}"
                )
            }
        }
    }

    /// The store of the shared counters, unless there is none or it failed in the last
    /// [`STORE_BACKOFF`].
    pub(super) fn shared_store(&self) -> Option<Store> {
        let store = self.shared.get()?;
        let mut down = self
            .store_down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *down {
            Some(until) if Instant::now() < until => None,
            _ => {
                *down = None;
                Some(store.clone())
            }
        }
    }

    /// The store failed: leave it alone for [`STORE_BACKOFF`].
    pub(super) fn store_failed(&self) {
        let mut down = self
            .store_down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *down = Some(Instant::now() + STORE_BACKOFF);
    }

    /// How many blocks this throttle has lifted so far.
    fn lifts_seen(&self) -> u64 {
        self.lifts.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Keeps a block the shared counters reported, so it holds while the store is unreachable;
    /// unless a block was lifted since `lifts` was read ([`lifts_seen`](Self::lifts_seen)):
    /// the store's answer may be from before the lift, and remembering it would put back the
    /// block the operator lifted. The count is compared under the lock that
    /// [`lift`](Self::lift) clears under (it counts before taking it), so a lift landing
    /// between the comparison and the write cannot be undone either.
    fn remember_block_unless_lifted(
        &self,
        lifts: u64,
        scope: LoginScope,
        subject: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) {
        let Ok(left) = (until - chrono::Utc::now()).to_std() else {
            return;
        };
        let until = super::instant_after(Instant::now(), left);
        let later = |r: &mut Record| {
            if r.blocked_until.is_none_or(|u| u < until) {
                r.blocked_until = Some(until);
            }
        };
        self.with(|t| match scope {
            _ if self.lifts_seen() != lifts => {}
            LoginScope::Address => {
                if let Ok(a) = subject.parse::<IpAddr>() {
                    later(
                        &mut t
                            .by_addr
                            .entry(crate::login::address_group(a))
                            .or_default()
                            .all,
                    );
                }
            }
            LoginScope::Tenant => later(t.by_tenant.entry(subject.to_string()).or_default()),
        });
    }
}

/// The shared counters an attempt touches: its address, and the tenant of a password attempt.
pub(super) fn subjects(addr: Option<IpAddr>, tenant: Option<&str>) -> Vec<(LoginScope, String)> {
    let mut out = Vec::new();
    if let Some(a) = addr {
        out.push((LoginScope::Address, a.to_string()));
    }
    if let Some(t) = tenant {
        out.push((LoginScope::Tenant, t.to_string()));
    }
    out
}

pub(super) fn blocked_reason(scope: LoginScope, subject: &str) -> String {
    match scope {
        LoginScope::Address => {
            format!("address {subject} is blocked after repeated failed logins (on any node)")
        }
        LoginScope::Tenant => format!(
            "password logins for tenant {subject} are blocked after repeated failures (on any node)"
        ),
    }
}

/// Runs a store call on a blocking thread, for at most [`SHARED_WAIT`].
pub(super) async fn ask_store<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    match tokio::time::timeout(SHARED_WAIT, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(anyhow!("the store task failed: {e}")),
        Err(_) => Err(anyhow!(
            "the store did not answer within {} s",
            SHARED_WAIT.as_secs()
        )),
    }
}
