//! `roster restore` / `POST .../users/{key}/restore`: bring back a soft-deleted user (or one an
//! import deactivated because it was missing), in a commit of its own.
//!
//! A tenant (its config) and a user key enter; the restored [`User`] leaves. The key is tried as given, then
//! lower-cased (as email and username keys are stored); the rule itself is
//! [`model::user::restore`](crate::model::user::restore), the write is the directory's.

use crate::config::{Activate, Tenant};
use crate::model::filter::{Attribute, Op, Operand, UserFilter};
use crate::model::user::restore as restore_rule;
use crate::model::{User, UserStatus};
use crate::store::Backend;
use anyhow::{anyhow, bail, Result};
use chrono::Utc;

/// Restores user `key` of `tenant` to active (inactive when the tenant activates only users
/// with a password and this one has none); returns the user. A soft-deleted user owns no
/// email (design §5.2): when another user has its email now, it is not restored.
pub fn restore(directory: &dyn Backend, tenant: &Tenant, key: &str) -> Result<User> {
    let needs_password = tenant.import.activate == Activate::WithPassword;
    // Emails and usernames are stored lower-case, so `Ana@X.example` finds `ana@x.example`;
    // a mapping code is exact (review s21: `restore AB1` brought back user `ab1`).
    let field = tenant.import.match_by.field();
    let exact = key.trim().to_string();
    let stored = super::record::key_of(field, &exact);
    let tenant = tenant.id.as_str();
    let tried = if stored == exact {
        vec![exact]
    } else {
        vec![exact, stored]
    };
    for k in tried {
        refuse_a_taken_email(directory, tenant, &k)?;
        let mut change = |rec: &mut crate::model::packed::UserRec| {
            restore_rule(rec, Utc::now().timestamp_millis(), needs_password)
                .map_err(|e| anyhow!("user {k:?} of tenant {tenant} {e}"))
        };
        if let Some(rec) = directory.update_user(tenant, &k, &mut change)? {
            return Ok(User::from_rec(&k, &rec));
        }
    }
    bail!("tenant {tenant} has no user {key:?}")
}

/// The user of `tenant` that `key` names, as restore and an import name users
/// ([`MatchBy::names`](crate::config::MatchBy::names): a mapping code exactly, email and
/// username keys in any case). The admin API's and the console's reads of one user go
/// through it, so they never find a user restore would not (review s29).
pub fn named_user(directory: &dyn Backend, tenant: &Tenant, key: &str) -> Result<Option<User>> {
    let match_by = tenant.import.match_by;
    Ok(directory
        .user(&tenant.id, key)?
        .filter(|u| match_by.names(key, &u.key)))
}

/// Fails when user `key` is soft-deleted and another user that is not has its email now.
fn refuse_a_taken_email(store: &dyn Backend, tenant: &str, key: &str) -> Result<()> {
    let Some(user) = store.user(tenant, key)? else {
        return Ok(());
    };
    let Some(email) = user.email.filter(|_| user.status == UserStatus::Deleted) else {
        return Ok(());
    };
    if let Some(other) = email_holder(store, tenant, &email, &user.key)? {
        bail!(
            "user {key:?} of tenant {tenant} cannot be restored: its email {email:?} belongs to user {other:?} now; give one of them another email first"
        );
    }
    Ok(())
}

/// The key of a user other than `except` that is not deleted and has `email` (an index lookup
/// on both stores): who owns an address a deleted user would take back, for `roster restore`
/// and for an import that brings such a user back.
pub(crate) fn email_holder(
    store: &dyn Backend,
    tenant: &str,
    email: &str,
    except: &str,
) -> Result<Option<String>> {
    let same = UserFilter::Compare(Attribute::Email, Op::Eq, Operand::Text(email.to_string()));
    let holders = store.users_matching(tenant, &same, 0, 2)?;
    Ok(holders
        .users
        .into_iter()
        .find(|u| u.key != except && u.status != UserStatus::Deleted)
        .map(|u| u.key))
}
