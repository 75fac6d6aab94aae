//! `roster restore` / `POST .../users/{key}/restore`: bring back a soft-deleted user (or one an
//! import deactivated because it was missing), in a commit of its own.
//!
//! A tenant and a user key enter; the restored [`User`] leaves. The key is tried as given, then
//! lower-cased (as email and username keys are stored); the rule itself is
//! [`model::user::restore`](crate::model::user::restore), the write is the directory's.

use crate::model::user::restore as restore_rule;
use crate::model::User;
use crate::store::Directory;
use anyhow::{anyhow, bail, Result};
use chrono::Utc;

/// Restores user `key` of `tenant` to active; returns the user.
pub fn restore(directory: &dyn Directory, tenant: &str, key: &str) -> Result<User> {
    for k in [key.trim().to_string(), key.trim().to_lowercase()] {
        let mut change = |rec: &mut crate::model::packed::UserRec| {
            restore_rule(rec, Utc::now().timestamp_millis())
                .map_err(|e| anyhow!("user {k:?} of tenant {tenant} {e}"))
        };
        if let Some(rec) = directory.update_user(tenant, &k, &mut change)? {
            return Ok(User::from_rec(&k, &rec));
        }
    }
    bail!("tenant {tenant} has no user {key:?}")
}
