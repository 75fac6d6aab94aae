//! The [`Users`] seam on PostgreSQL (to be built).

use super::PostgresStore;
use crate::model::{User, UserPage, UserStatus};
use crate::store::Users;
use anyhow::{bail, Result};

impl Users for PostgresStore {
    fn users(&self, _tenant: &str, _status: Option<UserStatus>) -> Result<Vec<User>> {
        bail!("not built yet")
    }
    fn users_page(
        &self,
        _tenant: &str,
        _keep: &dyn Fn(&User) -> bool,
        _skip: usize,
        _take: usize,
    ) -> Result<UserPage> {
        bail!("not built yet")
    }
    fn user_counts(&self, _tenant: &str) -> Result<(u64, u64, u64)> {
        bail!("not built yet")
    }
    fn user(&self, _tenant: &str, _key: &str) -> Result<Option<User>> {
        bail!("not built yet")
    }
    fn verify_user_password(&self, _tenant: &str, _key: &str, _password: &str) -> Result<bool> {
        bail!("not built yet")
    }
}
