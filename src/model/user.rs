//! A user of a tenant's directory as everyone outside the import engine sees it ([`User`]: the
//! admin API, SCIM, `users --json`), its [`UserStatus`], and the rule of restoring a user.
//!
//! Data enters as a packed record ([`UserRec`]) with its key and leaves as a [`User`], which
//! never carries the password hash. Fields are placed by the field table: the built-in names a
//! `User` has members for, list fields ([`Kind::List`]) as arrays, `custom.NAME` as attributes.
//! Pure: no I/O.

use super::fields::{
    custom_name, spec, Kind, EMAIL, FIRST_NAME, LAST_NAME, LIST_SEP, MAPPING_CODE, USERNAME,
};
use super::packed::STATUS_INACTIVE;
use super::packed::{UserRec, FLAG_MANAGED, FLAG_MISSING, STATUS_ACTIVE, STATUS_DELETED};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Inactive,
    Deleted,
}

impl UserStatus {
    /// The status of a packed record's status byte.
    pub fn from_byte(b: u8) -> UserStatus {
        match b {
            STATUS_ACTIVE => UserStatus::Active,
            STATUS_DELETED => UserStatus::Deleted,
            _ => UserStatus::Inactive,
        }
    }
}

/// A user as the admin API and `users --json` show it (never the password hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The match key, normalised (lower-case for email and username).
    pub key: String,
    pub status: UserStatus,
    pub email: Option<String>,
    pub username: Option<String>,
    pub mapping_code: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Every other mapped field (`groups`/`teams` as arrays, the rest as strings).
    #[serde(flatten)]
    pub fields: BTreeMap<String, serde_json::Value>,
    /// `custom.NAME` fields, by NAME.
    pub attributes: BTreeMap<String, String>,
    /// Whether a password hash is stored (the hash itself is never shown).
    pub has_password: bool,
    /// Created or last updated by an import (so `on_missing` applies to it).
    pub managed: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A time stored as milliseconds since the epoch.
pub fn millis_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl User {
    pub fn from_rec(key: &str, r: &UserRec) -> User {
        let mut u = User {
            key: key.to_string(),
            status: UserStatus::from_byte(r.status),
            email: None,
            username: None,
            mapping_code: None,
            first_name: None,
            last_name: None,
            fields: BTreeMap::new(),
            attributes: BTreeMap::new(),
            has_password: !r.pw_hash.is_empty(),
            managed: r.flags & FLAG_MANAGED != 0,
            created_at: millis_to_time(r.created_at),
            updated_at: millis_to_time(r.updated_at),
            deleted_at: (r.deleted_at != 0).then(|| millis_to_time(r.deleted_at)),
        };
        for (name, value) in &r.fields {
            u.place(name, value);
        }
        u
    }

    /// Puts one stored field where the field table says a `User` shows it.
    fn place(&mut self, name: &str, value: &str) {
        let member = match name {
            EMAIL => Some(&mut self.email),
            USERNAME => Some(&mut self.username),
            MAPPING_CODE => Some(&mut self.mapping_code),
            FIRST_NAME => Some(&mut self.first_name),
            LAST_NAME => Some(&mut self.last_name),
            _ => None,
        };
        if let Some(m) = member {
            *m = Some(value.to_string());
        } else if let Some(c) = custom_name(name) {
            self.attributes.insert(c.to_string(), value.to_string());
        } else if spec(name).is_some_and(|s| s.kind == Kind::List) {
            let items = value
                .split(LIST_SEP)
                .map(|s| serde_json::Value::String(s.to_string()))
                .collect();
            self.fields
                .insert(name.to_string(), serde_json::Value::Array(items));
        } else {
            self.fields.insert(
                name.to_string(),
                serde_json::Value::String(value.to_string()),
            );
        }
    }
}

/// One page of a paged user listing (SCIM).
#[derive(Debug, Clone, PartialEq)]
pub struct UserPage {
    /// Users matching the filter in the whole directory.
    pub total: u64,
    /// The page, sorted by key.
    pub users: Vec<User>,
}

/// Why a user cannot be restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("is not deleted, so there is nothing to restore")]
pub struct NothingToRestore;

/// The restore rule of `roster restore` (design.md §2): a soft-deleted user, or one an import deactivated because
/// it was missing from a file, becomes active again, no longer marked missing, with its row
/// digest cleared so that the next import compares every field. Any other user is refused.
/// `needs_password` (the tenant's `activate = "with_password"`): a soft-deleted user without a
/// password comes back inactive, as an import would make a new one.
pub fn restore(
    rec: &mut UserRec,
    now_ms: i64,
    needs_password: bool,
) -> Result<(), NothingToRestore> {
    let deactivated_by_import = rec.status == STATUS_INACTIVE && rec.flags & FLAG_MISSING != 0;
    if rec.status != STATUS_DELETED && !deactivated_by_import {
        return Err(NothingToRestore);
    }
    // Back from deleted, a user is judged as a new one would be; one an import deactivated
    // was active when it left.
    let has_password = !rec.pw_hash.is_empty();
    rec.status = if needs_password && !has_password && rec.status == STATUS_DELETED {
        STATUS_INACTIVE
    } else {
        STATUS_ACTIVE
    };
    rec.flags &= !FLAG_MISSING;
    rec.deleted_at = 0;
    rec.row_digest = [0; 16];
    rec.updated_at = now_ms;
    Ok(())
}

/// Finds a user by `key` as every store does: the key as given (trimmed), then lower-cased (email
/// and username keys are stored lower-case); `record_of` reads the packed record of exactly one
/// key. A key holding NUL finds nobody without a read (no key holds one; PostgreSQL cannot be
/// asked for one).
pub fn find_user<E>(
    key: &str,
    mut record_of: impl FnMut(&str) -> Result<Option<UserRec>, E>,
) -> Result<Option<User>, E> {
    if key.contains('\0') {
        return Ok(None);
    }
    for k in [key.trim().to_string(), key.trim().to_lowercase()] {
        if let Some(rec) = record_of(&k)? {
            return Ok(Some(User::from_rec(&k, &rec)));
        }
    }
    Ok(None)
}

/// Whether `password` is the record's imported password (argon2id check of its hash; false
/// without a hash or with a damaged one).
pub fn password_matches(rec: &UserRec, password: &str) -> bool {
    super::argon::verify(&rec.pw_hash, password.as_bytes())
}
