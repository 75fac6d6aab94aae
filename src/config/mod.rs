//! Configuration: parsing and validating `roster.toml`, and the types the rest of Roster reads.
//!
//! Data enters as the text of the config file (see `load`) and leaves as an immutable
//! [`Config`], shared behind an `Arc` and swapped whole on reload (see [`reload`]). Every
//! problem found is reported at once, each naming the tenant and key, so an operator can fix
//! a file in one pass. Relative paths (`host_keys`, `data_dir`) are taken relative to the
//! current working directory, which is how the quick start runs the server from the repo root.
//! `[store]` (see [`store`]) is read here too: `ROSTER_STORE_URL` overrides its `url` in
//! [`Config::parse`], the one key the environment overrides.

pub mod admin_token;
pub mod authorized_keys;
pub mod cluster;
mod parse;
pub mod reload;
pub mod scim_push;
pub mod store;
mod validate;
pub mod webhooks;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use cluster::ClusterConfig;
pub use reload::ConfigHandle;
pub use scim_push::{ScimOnMissing, ScimPushConfig};
pub use store::StoreConfig;
pub use validate::{is_valid_tenant_id, MAX_DURATION_SECS, MAX_RETENTION_DAYS};
pub use webhooks::WebhookConfig;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub mail: Option<MailConfig>,
    #[serde(default)]
    pub tenants: Vec<Tenant>,
    /// `[store]`: sled (no `url`, the default) or PostgreSQL; see [`store`].
    #[serde(default, skip_serializing_if = "StoreConfig::is_default")]
    pub store: StoreConfig,
    /// `[cluster]`: this node's id and the lease length (PostgreSQL store only); see [`cluster`].
    #[serde(default, skip_serializing_if = "ClusterConfig::is_default")]
    pub cluster: ClusterConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// SFTP listen address.
    pub listen: String,
    /// Directory holding `ssh_host_ed25519_key` and `ssh_host_rsa_key`.
    pub host_keys: PathBuf,
    /// Directory of the store and the tenant homes (`data/tenants/<id>/`).
    pub data_dir: PathBuf,
    pub max_upload_bytes: u64,
    pub idle_timeout_secs: u64,
    pub max_sessions_per_tenant: usize,
    /// Open SFTP files and folder listings per tenant, across all of its sessions.
    pub max_handles_per_tenant: usize,
    /// Failed logins from one address (or against one tenant) before it is blocked.
    pub max_auth_failures: u32,
    /// How long such a block lasts.
    pub auth_block_secs: u64,
    /// Connections not yet logged in, in all (over it a new connection is closed at once).
    pub max_unauthenticated: usize,
    /// Connections not yet logged in, per source address.
    pub max_unauthenticated_per_address: usize,
    /// Seconds from accept to a finished login; traffic does not extend it.
    pub auth_timeout_secs: u64,
    /// How long after an upload finished before the file may be moved (client follow-up STAT/SETSTAT).
    pub settle_ms: u64,
    /// Free bytes an upload must leave on the volume of `data_dir` (for the store, the
    /// archives and the other tenants): a write that would take it below breaks the upload.
    pub min_free_bytes: u64,
    /// Bytes the files and folders in one tenant's home may take on the disk, its archives
    /// included (0: no limit).
    pub max_tenant_bytes: u64,
    /// Files and folders one tenant's home may hold (0: no limit).
    pub max_tenant_entries: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:2222".into(),
            host_keys: PathBuf::from("host_keys"),
            data_dir: PathBuf::from("data"),
            max_upload_bytes: 209_715_200,
            idle_timeout_secs: 600,
            max_sessions_per_tenant: 16,
            max_handles_per_tenant: 4096,
            max_auth_failures: 10,
            auth_block_secs: 300,
            max_unauthenticated: 1024,
            max_unauthenticated_per_address: 32,
            auth_timeout_secs: 60,
            settle_ms: 1000,
            min_free_bytes: 536_870_912,
            max_tenant_bytes: 53_687_091_200,
            max_tenant_entries: 100_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: String,
    /// Empty (the default) or `change-me`: a generated token in `data_dir` is used instead
    /// (see [`admin_token`]).
    pub token: String,
    /// The console's address as users reach it, e.g. `https://roster.example.com` behind a
    /// TLS proxy: with `https`, session cookies are marked `Secure`. Empty: the listen address.
    pub public_url: String,
    /// How long a console session lasts without use, in minutes (default 30).
    pub session_minutes: u64,
    /// Connections the admin listener holds at once, in all (over it a new one is closed).
    pub max_connections: usize,
    /// Connections the admin listener holds at once from one source address.
    pub max_connections_per_address: usize,
    /// Seconds a client may take to send a request's head, or stall a body or an answer; an
    /// idle keep-alive connection is closed after it too.
    pub client_timeout_secs: u64,
    /// Seconds the server may take to answer a GET or HEAD (waiting on the store, or for a turn
    /// of a heavy listing) before it answers 503 instead.
    pub answer_timeout_secs: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:8022".into(),
            token: String::new(),
            public_url: String::new(),
            session_minutes: 30,
            max_connections: 256,
            max_connections_per_address: 64,
            client_timeout_secs: 20,
            answer_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    pub smtp_url: String,
    pub from: String,
}

/// One organisation: its login, its folder, and how its files are imported.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub id: String,
    #[serde(default)]
    pub password_hash: Option<String>,
    /// The web console's tenant portal password (argon2id PHC), for a tenant that logs in to
    /// SFTP with keys only, or that wants a portal password apart from the SFTP one. Unset: the
    /// portal takes the SFTP password; neither: no portal for this tenant.
    #[serde(default)]
    pub portal_password_hash: Option<String>,
    #[serde(default)]
    pub authorized_keys: Vec<String>,
    #[serde(default)]
    pub notify: Vec<String>,
    #[serde(default)]
    pub scim_token_sha256: Option<String>,
    #[serde(default)]
    pub import: ImportProfile,
    #[serde(default)]
    pub reference: Reference,
    /// `[[tenants.webhooks]]`: endpoints the tenant's events are posted to (see [`webhooks`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookConfig>,
    /// `[tenants.scim_push]`: push the directory to an application's SCIM API (issue 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scim_push: Option<ScimPushConfig>,
}

impl Tenant {
    /// A tenant with no login, for running the import engine on its own (tests, the import
    /// benchmark): `columns` maps fields to headers; the rest of the profile is the default.
    pub fn for_import(
        id: &str,
        match_by: MatchBy,
        on_missing: OnMissing,
        columns: &[(&str, &str)],
    ) -> Tenant {
        Tenant {
            id: id.to_string(),
            password_hash: None,
            portal_password_hash: None,
            authorized_keys: Vec::new(),
            notify: Vec::new(),
            scim_token_sha256: None,
            import: ImportProfile {
                match_by,
                on_missing,
                columns: columns
                    .iter()
                    .map(|(f, h)| (f.to_string(), h.to_string()))
                    .collect(),
                ..Default::default()
            },
            reference: Reference::default(),
            webhooks: Vec::new(),
            scim_push: None,
        }
    }
}

/// Known org units, locations and workplaces of a tenant (`[tenants.reference]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reference {
    pub org_units: Vec<String>,
    pub locations: Vec<String>,
    pub workplaces: Vec<String>,
}

/// How a tenant's file is found, read and synced (`[tenants.import]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImportProfile {
    /// File name pattern: `{date}` in `date_format`, `*` wildcard.
    pub file: String,
    pub date_format: String,
    pub only_today: bool,
    pub timezone: String,
    pub trigger: Trigger,
    pub schedule: Option<String>,
    pub delimiter: DelimiterSetting,
    pub encoding: EncodingSetting,
    pub match_by: MatchBy,
    pub on_missing: OnMissing,
    pub max_missing_percent: f64,
    pub empty_cells: EmptyCells,
    pub languages: Vec<String>,
    pub name_case: NameCase,
    pub activate: Activate,
    pub list_separator: String,
    pub unknown_reference: UnknownReference,
    pub archive: Archive,
    pub retention_days: u32,
    pub report: ReportWhen,
    /// field name → CSV header. Keys are field names (`email`, `custom.cost_center`, ...).
    pub columns: BTreeMap<String, String>,
}

impl Default for ImportProfile {
    fn default() -> Self {
        ImportProfile {
            file: "users.csv".into(),
            date_format: "%Y_%m_%d".into(),
            only_today: false,
            timezone: "UTC".into(),
            trigger: Trigger::Upload,
            schedule: None,
            delimiter: DelimiterSetting::Auto,
            encoding: EncodingSetting::Auto,
            match_by: MatchBy::Email,
            on_missing: OnMissing::Keep,
            max_missing_percent: 20.0,
            empty_cells: EmptyCells::Keep,
            languages: ["hr", "en", "de", "sl", "sr", "ru", "es"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            name_case: NameCase::AsIs,
            activate: Activate::Always,
            list_separator: ";".into(),
            unknown_reference: UnknownReference::Ignore,
            archive: Archive::Processed,
            retention_days: 90,
            report: ReportWhen::Failures,
            columns: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Upload,
    Schedule,
    Both,
}

/// `delimiter`: "auto" or one of `;` `,` tab `|` (written back in the same form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelimiterSetting {
    Auto,
    Fixed(u8),
}

impl Serialize for DelimiterSetting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DelimiterSetting::Auto => s.serialize_str("auto"),
            DelimiterSetting::Fixed(b) => s.serialize_str(&char::from(*b).to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for DelimiterSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "auto" => Ok(DelimiterSetting::Auto),
            ";" => Ok(DelimiterSetting::Fixed(b';')),
            "," => Ok(DelimiterSetting::Fixed(b',')),
            "\t" | "\\t" | "tab" => Ok(DelimiterSetting::Fixed(b'\t')),
            "|" => Ok(DelimiterSetting::Fixed(b'|')),
            other => Err(serde::de::Error::custom(format!(
                "delimiter {other:?} is not one of \"auto\", \";\", \",\", \"\\t\", \"|\""
            ))),
        }
    }
}

/// `encoding`: "auto", "utf-8", or a legacy code page by any of its WHATWG labels
/// ("windows-1250", "cp1251", "iso-8859-2", "koi8-r", "shift_jis", ...; written back by its
/// canonical name). UTF-16 is recognised by its byte order mark under "auto" and "utf-8".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingSetting {
    Auto,
    Utf8,
    Legacy(&'static encoding_rs::Encoding),
}

impl EncodingSetting {
    /// The setting for `label`, or a sentence saying why it is not one.
    pub fn parse(label: &str) -> Result<Self, String> {
        let label = label.trim();
        if label.eq_ignore_ascii_case("auto") {
            return Ok(EncodingSetting::Auto);
        }
        if label.eq_ignore_ascii_case("utf8") {
            return Ok(EncodingSetting::Utf8);
        }
        let known = encoding_rs::Encoding::for_label(label.as_bytes());
        match known {
            Some(e) if e == encoding_rs::UTF_8 => Ok(EncodingSetting::Utf8),
            // UTF-16 needs its byte order mark (read under "auto"), "replacement" decodes
            // nothing, x-user-defined is no code page, and ISO-2022-JP can spell ASCII
            // with escapes: none is something an HR export is saved as.
            Some(e)
                if e != encoding_rs::UTF_16LE
                    && e != encoding_rs::UTF_16BE
                    && e != encoding_rs::REPLACEMENT
                    && e != encoding_rs::X_USER_DEFINED
                    && e != encoding_rs::ISO_2022_JP =>
            {
                Ok(EncodingSetting::Legacy(e))
            }
            _ => Err(format!(
                "encoding {label:?} is not \"auto\", \"utf-8\" or a code page such as \"windows-1252\", \"windows-1250\", \"windows-1251\" or \"iso-8859-2\""
            )),
        }
    }

    /// How the setting is written (a code page by its canonical name).
    pub fn name(self) -> &'static str {
        match self {
            EncodingSetting::Auto => "auto",
            EncodingSetting::Utf8 => "utf-8",
            EncodingSetting::Legacy(e) => e.name(),
        }
    }
}

impl Serialize for EncodingSetting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for EncodingSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EncodingSetting::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchBy {
    Email,
    MappingCode,
    Username,
}

impl MatchBy {
    /// The field name of the match key.
    pub fn field(self) -> &'static str {
        match self {
            MatchBy::Email => "email",
            MatchBy::MappingCode => "mapping_code",
            MatchBy::Username => "username",
        }
    }

    /// Whether the user stored under key `stored` is the one `asked` names: the same key
    /// (trimmed), or, for email and username keys (stored lower-case), the same lower-cased.
    /// A mapping code is exact: `AB1` names no user `ab1` (review s21 for restore; s29: the
    /// admin API's and the console's reads found `ab1`, and restore then answered 409).
    pub fn names(self, asked: &str, stored: &str) -> bool {
        let asked = asked.trim();
        match self {
            MatchBy::MappingCode => asked == stored,
            MatchBy::Email | MatchBy::Username => asked == stored || asked.to_lowercase() == stored,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    Keep,
    Deactivate,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmptyCells {
    Keep,
    Clear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NameCase {
    AsIs,
    Capitalize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activate {
    Always,
    WithPassword,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownReference {
    Ignore,
    Create,
    SkipRow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Archive {
    Processed,
    Bak,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportWhen {
    Failures,
    Always,
    Never,
}

/// Every problem found in a config file, one sentence each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub problems: Vec<String>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is not valid:", self.file.display())?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: path.to_path_buf(),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        Config::parse(&text).map_err(|problems| ConfigErrors {
            file: path.to_path_buf(),
            problems,
        })
    }

    /// [`Config::load`] for a server (`serve`, `sftp-server`'s SSH front door, `check-config`):
    /// also refuses a file that is empty or defines no tenants, as a reload does. Such a file
    /// started a server with every tenant locked out, on the default ports, and `check-config`
    /// called it valid (review s19 docs F3).
    pub fn load_to_serve(path: &Path) -> Result<Config, ConfigErrors> {
        let errors = |problems: Vec<String>| ConfigErrors {
            file: path.to_path_buf(),
            problems,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| errors(vec![format!("cannot read the file: {e}")]))?;
        let config = Config::parse(&text).map_err(errors)?;
        match tenantless(&text, &config) {
            Some(why) => Err(errors(vec![why.to_string()])),
            None => Ok(config),
        }
    }

    /// Parses and validates config text (`ROSTER_STORE_URL` overrides `[store] url`); on
    /// failure returns every problem found.
    pub fn parse(text: &str) -> Result<Config, Vec<String>> {
        let mut config = parse::from_text(text)?;
        config
            .store
            .apply_env(std::env::var(store::STORE_URL_ENV).ok());
        let problems = validate::problems(&config);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    pub fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.id == id)
    }

    /// `data_dir/tenants/<id>`: the folder a tenant sees as `/`.
    pub fn tenant_home(&self, id: &str) -> PathBuf {
        self.server.data_dir.join("tenants").join(id)
    }
}

/// Why a server must not run on `config` (read from `text`): the file is empty, or it defines
/// no tenants, which would lock every tenant out. None when it has a tenant.
pub fn tenantless(text: &str, config: &Config) -> Option<&'static str> {
    if !config.tenants.is_empty() {
        None
    } else if text.bytes().all(|b| b.is_ascii_whitespace()) {
        Some("the file is empty (truncated, or caught while being written)")
    } else {
        Some("the file defines no tenants ([[tenants]]), which would lock every tenant out")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_round_trips_through_serde() {
        let text = "[[tenants]]\nid = \"a\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0XSsfOIUbEVJFH1EkHwIqJ5NV+nZFzs1OHp9Fk1dcWs\"\n[tenants.import]\ndelimiter = \"\\t\"\n";
        let config = Config::parse(text).unwrap();
        let json = serde_json::to_string(&config.tenants[0]).unwrap();
        let back: Tenant = serde_json::from_str(&json).unwrap();
        assert_eq!(back.import.delimiter, DelimiterSetting::Fixed(b'\t'));
        let toml_text = toml::to_string(&config).unwrap();
        assert!(Config::parse(&toml_text).is_ok(), "{toml_text}");
    }

    #[test]
    fn two_tenants_cannot_share_a_scim_token() {
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0XSsfOIUbEVJFH1EkHwIqJ5NV+nZFzs1OHp9Fk1dcWs";
        let token = "ab".repeat(32);
        let tenant = |id: &str, tok: &str| {
            format!("[[tenants]]\nid = \"{id}\"\npassword_hash = \"{hash}\"\nscim_token_sha256 = \"{tok}\"\n")
        };
        let shared = tenant("a", &token) + &tenant("b", &token.to_ascii_uppercase());
        let problems = Config::parse(&shared).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("\"b\"") && p.contains("another tenant's")),
            "{problems:?}"
        );
        let own = tenant("a", &token) + &tenant("b", &"cd".repeat(32));
        assert!(Config::parse(&own).is_ok());
    }
}
