//! The [`Directory`] seam on PostgreSQL (to be built).

use super::PostgresStore;
use crate::model::packed::UserRec;
use crate::store::{Commit, Directory, TenantState};
use anyhow::{bail, Result};

impl Directory for PostgresStore {
    fn tenant_state(&self, _tenant: &str) -> Result<TenantState> {
        bail!("not built yet")
    }
    fn fingerprint_key(&self) -> &[u8; 32] {
        &self.secret
    }
    fn bucket(&self, _tenant: &str, _bucket: u16, _gen: u64) -> Result<Option<Vec<u8>>> {
        bail!("not built yet")
    }
    fn stage_bucket(&self, _tenant: &str, _bucket: u16, _packed: &[u8]) -> Result<u64> {
        bail!("not built yet")
    }
    fn discard_staged(&self, _tenant: &str, _staged: &[(u16, u64)]) -> Result<()> {
        bail!("not built yet")
    }
    fn commit(&self, _c: &Commit) -> Result<TenantState> {
        bail!("not built yet")
    }
    fn update_user(
        &self,
        _tenant: &str,
        _key: &str,
        _change: &mut dyn FnMut(&mut UserRec) -> Result<()>,
    ) -> Result<Option<UserRec>> {
        bail!("not built yet")
    }
}
