//! What the SCIM push tests share: a tenant's change log, directory and cursor in memory (a
//! `ChangeSource`), a directory user, and a push config for a provider's URL.

#![allow(dead_code)]

use chrono::Utc;
use roster::config::{ScimOnMissing, ScimPushConfig};
use roster::deliver::scim_push::{Batch, ChangeSource, Pusher};
use roster::model::changelog::{ChangeKind, Cursor, LoggedChange};
use roster::model::{FieldChange, User, UserStatus};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// A tenant's change log, directory and cursor in memory.
#[derive(Default)]
pub struct MemSource {
    pub log: Mutex<Vec<LoggedChange>>,
    users: Mutex<HashMap<String, User>>,
    cursor: Mutex<Cursor>,
}

impl ChangeSource for MemSource {
    fn changes(&self, after: u64, limit: usize) -> anyhow::Result<Vec<LoggedChange>> {
        let log = self.log.lock().unwrap();
        Ok(log
            .iter()
            .filter(|c| c.seq > after)
            .take(limit)
            .cloned()
            .collect())
    }
    fn user(&self, key: &str) -> anyhow::Result<Option<User>> {
        Ok(self.users.lock().unwrap().get(key).cloned())
    }
    fn cursor(&self) -> anyhow::Result<Cursor> {
        Ok(self.cursor.lock().unwrap().clone())
    }
    fn save_cursor(&self, c: &Cursor) -> anyhow::Result<()> {
        *self.cursor.lock().unwrap() = c.clone();
        Ok(())
    }
}

impl MemSource {
    /// Sets the user (None: removed) and logs the change.
    pub fn apply(
        &self,
        key: &str,
        user: Option<User>,
        kind: ChangeKind,
        fields: &[(&str, Option<&str>)],
    ) {
        let mut log = self.log.lock().unwrap();
        let seq = log.len() as u64 + 1;
        log.push(LoggedChange {
            seq,
            at: Utc::now(),
            import_id: Some("i1".into()),
            key: key.into(),
            kind,
            fields: fields
                .iter()
                .map(|(f, n)| FieldChange {
                    field: f.to_string(),
                    old: None,
                    new: n.map(str::to_string),
                })
                .collect(),
        });
        let mut users = self.users.lock().unwrap();
        match user {
            Some(u) => users.insert(key.into(), u),
            None => users.remove(key),
        };
    }

    pub fn get(&self, key: &str) -> User {
        self.users.lock().unwrap()[key].clone()
    }

    pub fn position(&self) -> u64 {
        self.cursor.lock().unwrap().position
    }
}

pub fn user(key: &str, first: &str) -> User {
    User {
        key: key.into(),
        status: UserStatus::Active,
        email: Some(format!("{key}@acme.example")),
        username: None,
        mapping_code: Some(format!("E-{key}")),
        first_name: Some(first.into()),
        last_name: Some("Lee".into()),
        fields: [
            ("job_title".to_string(), json!("Clerk")),
            ("org_unit".to_string(), json!("HQ")),
        ]
        .into(),
        attributes: BTreeMap::new(),
        has_password: false,
        managed: true,
        created_at: Utc::now(),
        updated_at: Utc::now(),
        deleted_at: None,
    }
}

pub fn config_for(url: &str, on_missing: ScimOnMissing) -> ScimPushConfig {
    ScimPushConfig {
        url: url.to_string(),
        token: None,
        token_env: None,
        on_missing,
        attributes: BTreeMap::new(),
    }
}

pub fn drain(p: &Pusher, src: &MemSource) -> Batch {
    p.drain(src, 100).unwrap()
}

pub fn create(src: &MemSource, key: &str, first: &str) {
    src.apply(key, Some(user(key, first)), ChangeKind::Created, &[]);
}
