//! The whole server (`roster::serve::start`) in a temp folder with a test's own config, on sled
//! or the test's own PostgreSQL (`ROSTER_TEST_STORE=postgres`), with an SSH key every tenant of
//! the config may log in with.

#![allow(dead_code)]

use super::sftp::{Client, Login};
use russh::keys::PrivateKey;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Pipeline {
    pub dir: tempfile::TempDir,
    config_path: PathBuf,
    key: PrivateKey,
    pub server: Option<roster::serve::RunningServer>,
    _store_under_test: super::server_store::ServerStore,
}

impl Pipeline {
    /// Starts the server with the config `config(temp folder, key)` writes.
    pub async fn start(config: impl FnOnce(&Path, &PrivateKey) -> String) -> Pipeline {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519).unwrap();
        let config_path = dir.path().join("roster.toml");
        let store_under_test = super::server_store::ServerStore::for_test();
        let text = config(dir.path(), &key) + &store_under_test.config_section();
        std::fs::write(&config_path, text).unwrap();
        let server = Some(roster::serve::start(&config_path).await.unwrap());
        Pipeline {
            dir,
            config_path,
            key,
            server,
            _store_under_test: store_under_test,
        }
    }

    pub async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop(Duration::from_secs(10)).await;
        }
        self.server = Some(roster::serve::start(&self.config_path).await.unwrap());
    }

    /// Stops the server (the folder and store stay for [`Pipeline::start_again`]).
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop(Duration::from_secs(10)).await;
        }
    }

    pub async fn start_again(&mut self) {
        self.server = Some(roster::serve::start(&self.config_path).await.unwrap());
    }

    pub fn server(&self) -> &roster::serve::RunningServer {
        self.server.as_ref().unwrap()
    }

    pub fn home(&self, tenant: &str) -> PathBuf {
        self.dir.path().join("data/tenants").join(tenant)
    }

    pub async fn client(&self, tenant: &str) -> Client {
        Client::connect(
            self.server().sftp.addr,
            tenant,
            Login::Key(Box::new(self.key.clone())),
        )
        .await
        .unwrap()
    }

    /// The tenant's history once it has `n` filed runs (waiting up to `secs`).
    pub async fn history_len(
        &self,
        tenant: &str,
        n: usize,
        secs: u64,
    ) -> Vec<roster::model::ImportRecord> {
        super::history::wait_filed(&self.server().store, tenant, n, secs).await;
        self.server().store.history(tenant, 100).unwrap()
    }

    /// Names in a folder of the tenant's home, sorted.
    pub fn files(&self, tenant: &str, folder: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.home(tenant).join(folder))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// A config for [`Pipeline::start`]: loopback listeners on free ports, the temp folder's data,
/// `server` (lines) added to `[server]`, and one tenant `id` that logs in with the test key and
/// whose `[tenants.import]` table (columns included) is `import`.
pub fn one_tenant_config(
    dir: &Path,
    key: &PrivateKey,
    server: &str,
    id: &str,
    import: &str,
) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nhost_keys = \"{dir}/host_keys\"\n\
         data_dir = \"{dir}/data\"\nsettle_ms = 100\n{server}\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[tenants]]\nid = \"{id}\"\nauthorized_keys = [\"{key}\"]\n\
         [tenants.import]\n{import}\n",
        dir = dir.display(),
        key = key.public_key().to_openssh().unwrap(),
    )
}
