//! Open SFTP handles and what they cost: the file and folder handle types of a session, and the
//! per-tenant handle budget shared by all sessions of a tenant.
//!
//! The server makes one [`HandleBudget`] and gives each session a [`TenantHandles`] for its
//! tenant. Every open handle holds a [`HandleTicket`]; dropping the handle (CLOSE, or the session
//! ending) gives the ticket back. Opening past `max_handles_per_tenant` is refused, as is opening
//! past the per-session [`MAX_HANDLES`](super::requests::MAX_HANDLES), and past the server-wide
//! cap (the share of the descriptor budget that `serve` gives handles, see
//! [`HandleBudget::with_server_max`]), so many tenants together cannot exhaust descriptors either.

use super::dirstream::DirStream;
use super::jail::JailPath;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Open handles per tenant, across all of its sessions, and in all.
#[derive(Clone)]
pub struct HandleBudget {
    open: Arc<Mutex<OpenHandles>>,
    /// Handles open at once over every tenant.
    server_max: usize,
}

#[derive(Default)]
struct OpenHandles {
    per_tenant: HashMap<String, usize>,
    total: usize,
}

/// Why a handle was refused.
pub enum HandleRefusal {
    /// The tenant holds `max_handles_per_tenant`.
    Tenant,
    /// The server as a whole holds its share of descriptors for handles.
    Server,
}

impl Default for HandleBudget {
    fn default() -> HandleBudget {
        HandleBudget::with_server_max(usize::MAX)
    }
}

impl HandleBudget {
    /// A budget that allows at most `server_max` handles open at once over all tenants.
    pub fn with_server_max(server_max: usize) -> HandleBudget {
        HandleBudget {
            open: Arc::default(),
            server_max,
        }
    }

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
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.per_tenant.get(tenant).copied().unwrap_or(0)
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

    /// The server-wide cap this tenant's handles also count against.
    pub fn server_max(&self) -> usize {
        self.budget.server_max
    }

    /// Takes one handle from the tenant's budget and the server's, or says which is spent.
    pub fn take(&self) -> Result<HandleTicket, HandleRefusal> {
        let mut open = self
            .budget
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.budget.server_max {
            return Err(HandleRefusal::Server);
        }
        let n = open.per_tenant.entry(self.tenant.clone()).or_insert(0);
        if *n >= self.max {
            return Err(HandleRefusal::Tenant);
        }
        *n += 1;
        open.total += 1;
        Ok(HandleTicket {
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
        let mut open = self
            .budget
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_tenant.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_tenant.remove(&self.tenant);
            }
        }
    }
}

pub struct FileHandle {
    pub file: std::fs::File,
    /// Which file it is (device and inode), for the upload state (`uploads`).
    pub file_id: super::uploads::FileId,
    pub path: JailPath,
    /// Opened for reading (a copy-data source must be).
    pub readable: bool,
    pub writable: bool,
    pub append: bool,
    /// Opened with TRUNC, or written to: closing it finishes an upload.
    pub wrote: bool,
    /// Highest byte written so far (or the size at open), to enforce `max_upload_bytes`.
    pub size: u64,
    /// The upload broke (too large, a write failed, the disk reserve reached): further writes
    /// fail, CLOSE announces nothing.
    pub broken: bool,
    /// What this handle may still write (in blocks it may allocate, see
    /// `requests::upload::write_cost`) before it checks the volume's free space
    /// (`min_free_bytes`) and the tenant's share (`usage`) again: reserved at the last check.
    pub space_left: u64,
    /// What the tenant's share holds for this handle since that check (`usage::reserve`).
    pub space_held: u64,
}

impl FileHandle {
    /// Gives back what this handle reserved of the tenant's share and did not write.
    pub fn release_space(&self, usage: &super::usage::TenantUsage) {
        if self.space_held > 0 {
            usage.release(self.space_held, self.space_left);
        }
    }

    /// The handle is closed (CLOSE, or its session ended): what it held of the tenant's share
    /// is given back, and a file it kept after its last name went is freed.
    pub fn closed(&self, usage: &super::usage::TenantUsage) {
        self.release_space(usage);
        usage.closed(self.file_id);
    }
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
        let t1 = a1.take().ok().unwrap();
        let t2 = a2.take().ok().unwrap();
        assert!(a1.take().is_err() && a2.take().is_err());
        assert!(b.take().is_ok());
        drop(t1);
        assert_eq!(budget.open_count("acme"), 1);
        assert!(a2.take().is_ok());
        drop(t2);
    }

    #[test]
    fn the_server_cap_holds_over_all_tenants() {
        let budget = HandleBudget::with_server_max(3);
        let a = budget.for_tenant("acme", 2);
        let b = budget.for_tenant("beta", 2);
        let held: Vec<_> = [a.take(), a.take(), b.take()]
            .into_iter()
            .map(|t| t.ok().unwrap())
            .collect();
        assert!(matches!(b.take(), Err(HandleRefusal::Server)));
        drop(held);
        assert!(b.take().is_ok());
    }
}
