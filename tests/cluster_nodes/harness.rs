//! The two-node harness of `cluster_nodes.rs`: real `roster serve` processes on one
//! PostgreSQL database and one data folder, each with its config, log and admin URL.

use crate::process::{self, free_port, wait_until};
use crate::test_postgres::TestPostgres;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const TOKEN: &str = "cluster-test-token-5d1e8b3f9a0c7e2d4b6a";
pub const LEASE_SECS: u64 = 3;

/// One node: its config, log, admin URL and process.
pub struct Node {
    pub id: String,
    pub config: PathBuf,
    pub log: PathBuf,
    pub admin: String,
    pub child: Option<Child>,
}

impl Node {
    pub fn start(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(["serve", "-c"])
            .arg(&self.config)
            .env_remove("ROSTER_STORE_URL")
            .env("RUST_LOG", "info,roster=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    /// Stops the process where it is (SIGSTOP), as a long pause would.
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            // SAFETY: sends a signal to our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGSTOP);
            }
        }
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) {
        if let Some(c) = &self.child {
            // SAFETY: sends a signal to our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGCONT);
            }
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: sends SIGTERM to our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            c.wait().unwrap();
        }
    }

    /// GET `path` on this node's admin API: (status, JSON body or Null).
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path)
    }

    /// POST `path` (no body) on this node's admin API: (status, JSON body or Null).
    pub fn post(&self, path: &str) -> (u16, Value) {
        self.call("POST", path)
    }

    fn call(&self, method: &str, path: &str) -> (u16, Value) {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build(),
        );
        let url = format!("{}{path}", self.admin);
        let bearer = format!("Bearer {TOKEN}");
        let sent = if method == "POST" {
            agent
                .post(&url)
                .header("Authorization", &bearer)
                .send_empty()
        } else {
            agent.get(&url).header("Authorization", &bearer).call()
        };
        match sent {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let text = resp.body_mut().read_to_string().unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(25);
        format!("--- log of {} ---\n{}", self.id, lines[from..].join("\n"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Two nodes on one database and one data folder.
pub struct Cluster {
    pub _pg: TestPostgres,
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub fn start(db: &str) -> Cluster {
        let mut c = Cluster::prepare(db);
        for i in 0..c.nodes.len() {
            c.start_node(i);
        }
        c
    }

    /// Both nodes configured, none started.
    pub fn prepare(db: &str) -> Cluster {
        let pg = TestPostgres::start();
        let url = pg.create_database(db);
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<Node> = ["node-a", "node-b"]
            .iter()
            .map(|id| {
                let admin_port = free_port();
                let config = dir.path().join(format!("{id}.toml"));
                std::fs::write(&config, config_text(dir.path(), id, admin_port, &url)).unwrap();
                Node {
                    id: id.to_string(),
                    log: dir.path().join(format!("{id}.log")),
                    config,
                    admin: format!("http://127.0.0.1:{admin_port}"),
                    child: None,
                }
            })
            .collect();
        std::fs::create_dir_all(dir.path().join("data/tenants/big")).unwrap();
        Cluster {
            _pg: pg,
            dir,
            nodes,
        }
    }

    /// Starts node `i` and waits for its admin API. Nodes start one after the other: the
    /// first creates the shared host keys the next ones read (nodes behind one address must
    /// present the same host key).
    pub fn start_node(&mut self, i: usize) {
        self.nodes[i].start();
        let up = wait_until(Duration::from_secs(60), || {
            self.nodes[i].get("/health").0 == 200
        });
        assert!(up, "{} did not start\n{}", self.nodes[i].id, self.logs());
    }

    /// The node whose `/api/progress` shows an import running, within `limit`.
    pub fn importing_node(&self, limit: Duration) -> Option<usize> {
        let mut importing = None;
        wait_until(limit, || {
            importing = (0..self.nodes.len()).find(|&i| {
                let (_, v) = self.nodes[i].get("/api/progress");
                v.as_object().is_some_and(|m| !m.is_empty())
            });
            importing.is_some()
        });
        importing
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.log.exists())
            .map(Node::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Puts a file into the shared tenant folder as a local copy does: written, renamed in.
    pub fn drop_in(&self, name: &str, bytes: &[u8]) {
        process::drop_in(self.path(), "big", name, bytes);
    }

    pub fn archived(&self) -> usize {
        count_entries(&self.path().join("data/tenants/big/processed"))
    }

    pub fn claims(&self) -> usize {
        count_entries(&self.path().join("data/work/big"))
    }

    /// The tenant's history as one node's API answers it (panics with the answer otherwise).
    pub fn history(&self, node: usize) -> Vec<Value> {
        let (status, v) = self.nodes[node].get("/api/tenants/big/imports?limit=100");
        match v.as_array() {
            Some(records) if status == 200 => records.clone(),
            _ => panic!(
                "GET /api/tenants/big/imports: {status} {v}\n{}",
                self.logs()
            ),
        }
    }

    /// Active users of the tenant, from `/api/tenants`.
    pub fn active_users(&self, node: usize) -> u64 {
        let (status, v) = self.nodes[node].get("/api/tenants");
        assert_eq!(status, 200, "GET /api/tenants: {v}\n{}", self.logs());
        v[0]["users"]["active"].as_u64().unwrap_or(0)
    }
}

pub fn config_text(dir: &Path, node: &str, admin_port: u16, url: &str) -> String {
    let hash = roster::login::hash_password("pw-not-used").unwrap();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
host_keys = "{dir}/host_keys"
data_dir = "{dir}/data"
settle_ms = 100
max_auth_failures = 4

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[store]
url = "{url}"

[cluster]
node_id = "{node}"
lease_secs = {LEASE_SECS}

[[tenants]]
id = "big"
password_hash = "{hash}"
[tenants.import]
file = "users.csv"
on_missing = "deactivate"
[tenants.import.columns]
email = "email"
first_name = "first"
last_name = "last"

[[tenants]]
id = "sched"
password_hash = "{hash}"
[tenants.import]
file = "sched.csv"
trigger = "schedule"
schedule = "* * * * *"
"#,
        dir = dir.display()
    )
}

pub fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|rd| rd.count()).unwrap_or(0)
}
