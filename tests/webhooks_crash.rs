//! A real `roster serve` process is killed with SIGKILL while it delivers webhooks, then started
//! again: every event reaches the receiver (verified with the Standard Webhooks reference
//! library), in order, and a message sent twice carries the same `webhook-id` and body.

#[path = "support/process.rs"]
mod process;
use process::{free_port, serve, users_csv, wait_until};

#[path = "webhooks/support.rs"]
mod webhooks;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use webhooks::{Receiver, SECRET};

/// 2,100 users: five `directory.changed` events (500 each at most) and one `import.finished`.
const ROWS: usize = 2100;
const EVENTS: u64 = 6;
const TOKEN: &str = "webhooks-crash-token-5e1f9c3a7d0b2e6f8a4c";

fn write_config(dir: &Path, url: &str, admin_port: u16) -> PathBuf {
    let hash = roster::login::hash_password("pw-not-used").unwrap();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
host_keys = "{dir}/host_keys"
data_dir = "{dir}/data"
settle_ms = 100

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[[tenants]]
id = "big"
password_hash = "{hash}"
[[tenants.webhooks]]
url = "{url}"
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
    );
    let path = dir.join("roster.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The endpoint's status from the admin API, once it answers.
fn endpoint(admin_port: u16) -> Option<serde_json::Value> {
    let agent = ureq::Agent::new_with_defaults();
    let mut resp = agent
        .get(format!(
            "http://127.0.0.1:{admin_port}/api/tenants/big/webhooks"
        ))
        .header("authorization", format!("Bearer {TOKEN}"))
        .call()
        .ok()?;
    let text = resp.body_mut().read_to_string().ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["webhooks"].get(0).cloned()
}

fn drop_in(dir: &Path, bytes: &[u8]) {
    process::drop_in(dir, "big", "users.csv", bytes);
}

#[test]
fn killed_while_delivering_then_restarted_loses_nothing_and_repeats_only_ids() {
    let rx = Receiver::start(SECRET);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let admin_port = free_port();
    let config = write_config(dir, &rx.url, admin_port);
    let mut child = serve(&config);
    // The endpoint is first seen (at the empty end of the log) before anything is imported.
    assert!(
        wait_until(Duration::from_secs(30), || endpoint(admin_port)
            .is_some_and(|e| e["position"].as_u64() == Some(0))),
        "the server did not pick up the endpoint"
    );
    // Slow answers, so the kill lands while a message is in flight.
    rx.answer("sleep:0.5,sleep:0.5,sleep:0.5,sleep:0.5,sleep:0.5,sleep:0.5,sleep:0.5");
    drop_in(dir, &users_csv(ROWS, "First"));
    assert!(
        wait_until(Duration::from_secs(60), || rx.arrivals().len() >= 3),
        "deliveries did not start"
    );
    // The third message is in flight (the receiver holds it for 0.5 s).
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(600)); // the receiver finishes its answer
    assert!(rx.seen().len() < EVENTS as usize, "the kill came too late");

    let mut child = serve(&config);
    let delivered = wait_until(Duration::from_secs(60), || {
        endpoint(admin_port).is_some_and(|e| e["position"].as_u64() == Some(EVENTS))
    });
    // SAFETY: kill only signals the child we started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    child.wait().unwrap();
    assert!(delivered, "not every event was delivered after the restart");

    let seen = rx.seen();
    assert!(seen.iter().all(|s| s.verified), "{seen:#?}");
    // Every id, in order of first arrival, is msg_big_1..=6 (and its time); a repeat is the same
    // message under the same id (an event sent under two ids would be listed twice).
    let mut first: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut order = Vec::new();
    for s in &seen {
        match first.get(&s.id) {
            Some(body) => assert_eq!(
                body, &s.body,
                "{} was sent twice with different bodies",
                s.id
            ),
            None => {
                first.insert(s.id.clone(), s.body.clone());
                order.push(s.event.clone());
            }
        }
    }
    let want: Vec<String> = (1..=EVENTS).map(|n| format!("msg_big_{n}")).collect();
    assert_eq!(order, want);
    assert!(
        seen.len() > EVENTS as usize,
        "the message in flight at the kill is sent again"
    );
    // Nothing lost: every user's creation arrived, once per distinct message.
    let mut keys: Vec<String> = first
        .values()
        .filter(|b| b["type"] == "directory.changed")
        .flat_map(|b| b["data"]["changes"].as_array().unwrap().clone())
        .map(|c| c["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), ROWS);
    let last = first
        .iter()
        .find(|(id, _)| webhooks::event_of(id) == "msg_big_6");
    assert_eq!(
        last.map(|(_, b)| &b["type"]),
        Some(&"import.finished".into())
    );
}
