//! The store's errors that callers act on: [`Unavailable`] (try again later; [`PoolBusy`] under it
//! when the store answers but every pooled connection is taken) and
//! [`LeaseLost`] (a commit refused because this node no longer holds the run's lease).
//! Backends attach them to their errors; callers find them under any further context.

/// A store call failed because the store cannot be reached right now (PostgreSQL down, restarting
/// or unreachable), not because of what was asked: callers answer "try again later" (the admin
/// API's 503) and retry, instead of blaming the request or the file. Backends attach it as
/// context to such errors; [`is_unavailable`] finds it under any further context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the store is unavailable right now")
    }
}

/// True when `e` (at any level of context) says the store cannot be reached right now.
pub fn is_unavailable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Unavailable>().is_some()
}

/// A commit refused because this node no longer holds the lease the run was started under
/// ([`Commit::lease`]); nothing was changed. Another node may be finishing the same claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseLost(pub String);

impl std::fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this node no longer holds the lease {} (it expired, and another node may have \
             taken over the tenant's imports); nothing was changed",
            self.0
        )
    }
}

impl std::error::Error for LeaseLost {}

/// Every connection of the store's pool is taken (statements waiting on a lock, or slow): the
/// store is reachable but cannot take more now. Attached under [`Unavailable`], so callers
/// answer "try again later" with this sentence instead of "cannot be reached".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolBusy(pub String);

impl std::fmt::Display for PoolBusy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PoolBusy {}
