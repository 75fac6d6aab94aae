//! Open SFTP handles and what they cost: the file and folder handle types of a session, and the
//! per-tenant handle budget shared by all sessions of a tenant.
//!
//! The server makes one [`HandleBudget`] and gives each session a [`TenantHandles`] for its
//! tenant. Every open handle holds a [`HandleTicket`]; dropping the handle (CLOSE, or the session
//! ending) gives the ticket back. Opening past `max_handles_per_tenant` is refused, as is opening
//! past the per-session [`MAX_HANDLES`](super::requests::MAX_HANDLES).

use super::dirstream::DirStream;
use super::jail::JailPath;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Open handles per tenant, across all of its sessions.
#[derive(Clone, Default)]
pub struct HandleBudget {
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl HandleBudget {
    /// The budget of `tenant`, allowing at most `max` handles open at once.
    pub fn for_tenant(&self, tenant: &str, max: usize) -> TenantHandles {
        TenantHandles {
            budget: self.clone(),
            tenant: tenant.to_string(),
            max,
        }
    }

    /// Handles `tenant` holds open now (for tests and metrics).
    pub fn open_count(&self, tenant: &str) -> usize {
        let map = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(tenant).copied().unwrap_or(0)
    }
}

/// One tenant's share of the [`HandleBudget`].
pub struct TenantHandles {
    budget: HandleBudget,
    tenant: String,
    max: usize,
}

impl TenantHandles {
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes one handle from the tenant's budget, or `None` when it is spent.
    pub fn take(&self) -> Option<HandleTicket> {
        let mut map = self
            .budget
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(self.tenant.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(HandleTicket {
            budget: self.budget.clone(),
            tenant: self.tenant.clone(),
        })
    }
}

/// One open handle counted against its tenant; given back when dropped.
pub struct HandleTicket {
    budget: HandleBudget,
    tenant: String,
}

impl Drop for HandleTicket {
    fn drop(&mut self) {
        let mut map = self
            .budget
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.tenant);
            }
        }
    }
}

pub struct FileHandle {
    pub file: std::fs::File,
    pub path: JailPath,
    /// Opened for reading (a copy-data source must be).
    pub readable: bool,
    pub writable: bool,
    pub append: bool,
    /// Opened with TRUNC, or written to: closing it finishes an upload.
    pub wrote: bool,
    /// Highest byte written so far (or the size at open), to enforce `max_upload_bytes`.
    pub size: u64,
    /// The upload broke (too large): further writes fail, CLOSE announces nothing.
    pub broken: bool,
}

pub enum OpenHandle {
    File(FileHandle),
    Dir(DirStream),
}

/// An open handle and its place in the tenant's budget.
pub struct Held {
    pub handle: OpenHandle,
    pub _ticket: HandleTicket,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_shared_per_tenant_and_given_back() {
        let budget = HandleBudget::default();
        let a1 = budget.for_tenant("acme", 2);
        let a2 = budget.for_tenant("acme", 2);
        let b = budget.for_tenant("beta", 2);
        let t1 = a1.take().unwrap();
        let t2 = a2.take().unwrap();
        assert!(a1.take().is_none() && a2.take().is_none());
        assert!(b.take().is_some());
        drop(t1);
        assert_eq!(budget.open_count("acme"), 1);
        assert!(a2.take().is_some());
        drop(t2);
    }
}
