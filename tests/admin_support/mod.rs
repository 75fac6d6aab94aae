//! A whole Roster (SFTP, intake, admin API) on loopback ports for the admin tests, with a real
//! SFTP client to upload and a real HTTP client (ureq, off the async runtime) to call the API.

#![allow(dead_code)]

use crate::support::sftp::{Client, Login};
use roster::model::ImportRecord;
use roster::serve::RunningServer;
use russh::keys::PrivateKey;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const TOKEN: &str = "admin-test-token-7f3a9c0e5d2b8a41c6f9e3d7";
pub const SCIM_ACME: &str = "scim-acme-2b7d0e5f9a1c4e8b";
pub const SCIM_BETA: &str = "scim-beta-9c1e4a7d2f6b3e0a";
/// `max_upload_bytes` of the test config (also the preview body limit).
pub const MAX_UPLOAD: u64 = 1_000_000;

fn sha_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// acme: matched by email, `on_missing = "deactivate"` (held above 20 % missing).
/// beta: matched by mapping code, `on_missing = "delete"`.
/// sched: imported only by schedule or run-now.
pub fn config_text(dir: &Path, key: &PrivateKey, admin_listen: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
host_keys = "{dir}/host_keys"
data_dir = "{dir}/data"
settle_ms = 150
max_upload_bytes = {MAX_UPLOAD}

[admin]
listen = "{admin_listen}"
token = "{TOKEN}"

[[tenants]]
id = "acme"
authorized_keys = ["{key}"]
scim_token_sha256 = "{acme_sha}"
[tenants.import]
file = "users.csv"
on_missing = "deactivate"
report = "never"
[tenants.reference]
org_units = ["HQ", "R&D"]

[[tenants]]
id = "beta"
authorized_keys = ["{key}"]
scim_token_sha256 = "{beta_sha}"
[tenants.import]
file = "users.csv"
match_by = "mapping_code"
on_missing = "delete"
report = "never"

[[tenants]]
id = "sched"
authorized_keys = ["{key}"]
[tenants.import]
file = "hr_{{date}}.csv"
date_format = "%Y-%m-%d"
trigger = "schedule"
schedule = "0 0 1 1 *"
report = "never"
"#,
        dir = dir.display(),
        key = key.public_key().to_openssh().unwrap(),
        acme_sha = sha_hex(SCIM_ACME),
        beta_sha = sha_hex(SCIM_BETA),
    )
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub key: PrivateKey,
    pub server: Option<RunningServer>,
    /// sled, or this test's own PostgreSQL (`ROSTER_TEST_STORE=postgres`).
    pub store_under_test: crate::support::server_store::ServerStore,
}

/// An HTTP answer: status, body text, and the body as JSON when it is JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub text: String,
    pub json: Value,
    pub content_type: String,
    /// The `Allow` header ("" without one).
    pub allow: String,
    /// The `Retry-After` header ("" without one).
    pub retry_after: String,
}

impl Env {
    /// A server on sled, or on PostgreSQL when `ROSTER_TEST_STORE=postgres`.
    pub async fn start() -> Env {
        Env::start_with(crate::support::server_store::ServerStore::for_test()).await
    }

    /// A server on the given store.
    pub async fn start_with(store_under_test: crate::support::server_store::ServerStore) -> Env {
        Env::start_edited(store_under_test, |text| text).await
    }

    /// A server on the given store, its config text passed through `edit` first.
    pub async fn start_edited(
        store_under_test: crate::support::server_store::ServerStore,
        edit: impl FnOnce(String) -> String,
    ) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519).unwrap();
        let config_path = dir.path().join("roster.toml");
        let text =
            edit(config_text(dir.path(), &key, "127.0.0.1:0")) + &store_under_test.config_section();
        std::fs::write(&config_path, text).unwrap();
        let server = Some(roster::serve::start(&config_path).await.unwrap());
        Env {
            dir,
            config_path,
            key,
            server,
            store_under_test,
        }
    }

    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.server().admin.addr)
    }

    /// A config file for the CLI: the server's config with the bound admin address.
    pub fn cli_config(&self) -> PathBuf {
        let path = self.dir.path().join("cli.toml");
        let addr = self.server().admin.addr.to_string();
        std::fs::write(&path, config_text(self.dir.path(), &self.key, &addr)).unwrap();
        path
    }

    pub fn home(&self, tenant: &str) -> PathBuf {
        self.dir.path().join("data/tenants").join(tenant)
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop(Duration::from_secs(10)).await;
        }
    }

    /// Uploads `bytes` as `name` over real SFTP.
    pub async fn upload(&self, tenant: &str, name: &str, bytes: &[u8]) {
        let c = Client::connect(
            self.server().sftp.addr,
            tenant,
            Login::Key(Box::new(self.key.clone())),
        )
        .await
        .unwrap();
        c.put(name, bytes).await.unwrap();
    }

    /// Waits until the tenant has `n` runs, each filed away; returns the history.
    pub async fn wait_history(&self, tenant: &str, n: usize) -> Vec<ImportRecord> {
        let ok = crate::support::history::wait_filed(&self.server().store, tenant, n, 30).await;
        assert!(ok, "{tenant}: {n} run(s) were not recorded in time");
        self.server().store.history(tenant, 100).unwrap()
    }

    /// Uploads and waits for the run; returns it.
    pub async fn import(&self, tenant: &str, csv: &str) -> ImportRecord {
        let before = self.server().store.history(tenant, 1000).unwrap().len();
        self.upload(tenant, "users.csv", csv.as_bytes()).await;
        self.wait_history(tenant, before + 1).await.remove(0)
    }

    /// One HTTP request with an optional bearer token and body.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Answer {
        http(&self.admin_url(), method, path, token, body).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.http("GET", path, Some(TOKEN), None).await
    }

    pub async fn post(&self, path: &str, body: Option<Vec<u8>>) -> Answer {
        self.http("POST", path, Some(TOKEN), body).await
    }

    pub async fn scim(&self, path: &str, token: &str) -> Answer {
        self.http("GET", path, Some(token), None).await
    }
}

/// One HTTP request against `base` (blocking ureq on a blocking thread).
pub async fn http(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> Answer {
    let url = format!("{base}{path}");
    let method = method.to_string();
    let token = token.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .allow_non_standard_methods(true)
                .build(),
        );
        let mut req = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(&url);
        if let Some(t) = &token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let resp = match body {
            Some(b) => agent.run(req.body(b).unwrap()),
            None => agent.run(req.body(()).unwrap()),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (allow, retry_after) = (header("allow"), header("retry-after"));
        let text = resp
            .body_mut()
            .with_config()
            .limit(100_000_000)
            .read_to_string()
            .unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            text,
            json,
            content_type,
            allow,
            retry_after,
        }
    })
    .await
    .unwrap()
}

/// A CSV of users `from..to` with email, names, mapping code, username and more.
pub fn users_csv(from: usize, to: usize) -> String {
    let mut s = String::from(
        "email,first_name,last_name,mapping_code,username,phone,job_title,org_unit,manager_email\n",
    );
    for i in from..to {
        s.push_str(&format!(
            "user{i:02}@acme.example,First{i:02},Last{i:02},E{i:03},u{i:02},+385 1 555 {i:04},Clerk,HQ,user00@acme.example\n"
        ));
    }
    s
}

/// Keys (emails) of users `from..to`, as `users_csv` makes them.
pub fn keys(from: usize, to: usize) -> Vec<String> {
    (from..to)
        .map(|i| format!("user{i:02}@acme.example"))
        .collect()
}
