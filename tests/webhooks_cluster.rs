//! Webhooks from two real `roster serve` nodes on one PostgreSQL database: only the node that
//! holds the endpoint's store lease delivers; when it is killed with SIGKILL mid-delivery, the
//! other takes the lease over once it expires (3 s) and finishes, with every message received
//! in order and a repeat only of the same `webhook-id` and body.

#[path = "support/process.rs"]
mod process;
use process::{drop_in, free_port, users_csv, wait_until};

#[path = "support/postgres.rs"]
#[allow(dead_code)] // each test file uses part of the support
mod test_postgres;
#[path = "webhooks/support.rs"]
mod webhooks;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use test_postgres::TestPostgres;
use webhooks::{Receiver, SECRET};

const TOKEN: &str = "webhooks-cluster-token-3a9d6f0b2e8c4a7d1e5f";
const ROWS: usize = 2100;
/// Five `directory.changed` (500 changes each at most), one `import.finished`.
const EVENTS: usize = 6;

struct Node {
    config: PathBuf,
    log: PathBuf,
    admin_port: u16,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(["serve", "-c"])
            .arg(&self.config)
            .env_remove("ROSTER_STORE_URL")
            .env("ROSTER_LOG", "info,roster=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// This node's view of the endpoint, once its admin API answers.
    fn endpoint(&self) -> Option<Value> {
        let agent = ureq::Agent::new_with_defaults();
        let mut resp = agent
            .get(format!(
                "http://127.0.0.1:{}/api/tenants/big/webhooks",
                self.admin_port
            ))
            .header("authorization", format!("Bearer {TOKEN}"))
            .call()
            .ok()?;
        let text = resp.body_mut().read_to_string().ok()?;
        serde_json::from_str::<Value>(&text).ok()?["webhooks"]
            .get(0)
            .cloned()
    }

    /// How many messages this node says it delivered (its debug log).
    fn delivered(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("webhook delivered")
            .count()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn config_text(dir: &Path, node: &str, admin_port: u16, db: &str, hook: &str) -> String {
    let hash = roster::login::hash_password("pw-not-used").unwrap();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
host_keys = "{dir}/host_keys"
data_dir = "{dir}/data"
settle_ms = 100

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[store]
url = "{db}"

[cluster]
node_id = "{node}"
lease_secs = 3

[[tenants]]
id = "big"
password_hash = "{hash}"
[[tenants.webhooks]]
url = "{hook}"
secret = "{SECRET}"
[tenants.import]
file = "users.csv"
report = "never"
[tenants.import.columns]
email = "email"
first_name = "first"
last_name = "last"
"#,
        dir = dir.display()
    )
}

#[test]
fn one_node_delivers_and_the_other_takes_over_after_a_kill() {
    let rx = Receiver::start(SECRET);
    let pg = TestPostgres::start();
    let db = pg.create_database("webhooks_cluster");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data/tenants/big")).unwrap();
    let mut nodes: Vec<Node> = ["node-a", "node-b"]
        .iter()
        .map(|id| {
            let admin_port = free_port();
            let config = dir.join(format!("{id}.toml"));
            std::fs::write(&config, config_text(dir, id, admin_port, &db, &rx.url)).unwrap();
            Node {
                config,
                log: dir.join(format!("{id}.log")),
                admin_port,
                child: None,
            }
        })
        .collect();
    // One after the other: the first makes the shared host keys.
    for n in nodes.iter_mut() {
        n.start();
        assert!(
            wait_until(Duration::from_secs(60), || n.endpoint().is_some()),
            "a node did not start"
        );
    }
    assert!(
        wait_until(Duration::from_secs(30), || nodes[0]
            .endpoint()
            .is_some_and(|e| e["position"].as_u64() == Some(0))),
        "the endpoint was not picked up"
    );
    rx.answer(&["sleep:0.4"; EVENTS].join(","));
    drop_in(dir, "big", "users.csv", &users_csv(ROWS, "First"));

    assert!(
        wait_until(Duration::from_secs(60), || rx.arrivals().len() >= 3),
        "deliveries did not start"
    );
    // One node delivers; the other has sent nothing.
    let holder = if nodes[0].delivered() > 0 { 0 } else { 1 };
    let logs = || {
        nodes
            .iter()
            .map(|n| std::fs::read_to_string(&n.log).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n-----\n")
    };
    assert!(nodes[holder].delivered() >= 2, "{}", logs());
    assert_eq!(nodes[1 - holder].delivered(), 0);
    let before: Vec<String> = rx.arrivals();
    let mut unique = before.clone();
    unique.dedup();
    assert_eq!(unique, before, "two nodes sent the same message at once");
    nodes[holder].kill9();

    let survivor = &nodes[1 - holder];
    let done = wait_until(Duration::from_secs(60), || {
        survivor
            .endpoint()
            .is_some_and(|e| e["position"].as_u64() == Some(EVENTS as u64))
    });
    assert!(done, "the other node did not finish the deliveries");
    assert!(survivor.delivered() >= 1);

    let seen = rx.seen();
    assert!(seen.iter().all(|s| s.verified));
    let mut first: BTreeMap<String, Value> = BTreeMap::new();
    let mut order = Vec::new();
    for s in &seen {
        match first.get(&s.id) {
            Some(body) => assert_eq!(body, &s.body, "{} repeated with another body", s.id),
            None => {
                first.insert(s.id.clone(), s.body.clone());
                order.push(s.event.clone());
            }
        }
    }
    let want: Vec<String> = (1..=EVENTS).map(|n| format!("msg_big_{n}")).collect();
    assert_eq!(order, want);
    let mut keys: Vec<&str> = first
        .values()
        .filter(|b| b["type"] == "directory.changed")
        .flat_map(|b| b["data"]["changes"].as_array().unwrap().iter())
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), ROWS);
}
