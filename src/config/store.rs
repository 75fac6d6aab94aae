//! `[store]`: where the directory lives. Without `url`, the embedded sled store under
//! `[server] data_dir` (the default, as before); with `url = "postgres://USER@HOST:PORT/DB"`, a
//! PostgreSQL database (issue 11; see docs/postgres.md).
//!
//! Data enters as the `[store]` table of the config file and the `ROSTER_STORE_URL` environment
//! variable (which overrides the file, applied by `Config::parse`); it leaves as
//! [`StoreConfig::postgres`], a [`PostgresTarget`] parsed by the PostgreSQL store
//! (`store::postgres::parse_url`), which is the only code that knows the database's client.

use crate::store::postgres::{parse_url, PostgresTarget};
use serde::{Deserialize, Serialize};

/// The environment variable that overrides `[store] url`.
pub const STORE_URL_ENV: &str = "ROSTER_STORE_URL";

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `postgres://USER@HOST:PORT/DB`; none means the sled store under `data_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl StoreConfig {
    /// True when the directory lives in sled (no `url`).
    pub fn is_default(&self) -> bool {
        self.url.is_none()
    }

    /// Replaces `url` with `ROSTER_STORE_URL` when that is set and not empty.
    pub(super) fn apply_env(&mut self, env_url: Option<String>) {
        if let Some(url) = env_url.filter(|u| !u.trim().is_empty()) {
            self.url = Some(url);
        }
    }

    /// The PostgreSQL database of `url`, or `None` for the sled store; an error names the key.
    pub fn postgres(&self) -> Result<Option<PostgresTarget>, String> {
        match &self.url {
            None => Ok(None),
            Some(url) => parse_url(url).map(Some),
        }
    }

    /// Every problem with `[store]`, each naming the key.
    pub(super) fn problems(&self) -> Vec<String> {
        match self.postgres() {
            Ok(_) => Vec::new(),
            Err(e) => vec![e],
        }
    }
}
