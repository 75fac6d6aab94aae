//! Two real `roster serve` processes on one PostgreSQL database and one data folder (issue 11,
//! "Several nodes"): they list each other in `/api/nodes` and `roster nodes`; an upload both
//! of them see is imported once; when the node importing a big file is killed with SIGKILL,
//! the other finishes that file once the dead node's lease (3 s) has expired, with exactly one
//! history record and every user; a schedule fires once per tick; and failed SFTP logins
//! spread over both nodes add up to one block, which an operator lifts on one node for both;
//! a node that stalls mid-import and loses its
//! lease does not record again the file the other node finished.
//!
//! Every failure message carries the tail of both nodes' logs: until the PostgreSQL store's
//! Directory and RunLog are built, the import tests fail there with the stubs' "not built yet".

#[path = "support/process.rs"]
mod process;
use process::{free_port, users_csv, wait_until};

#[path = "support/postgres.rs"]
#[allow(dead_code)] // each test file uses part of the support
mod test_postgres;

#[path = "cluster_nodes/harness.rs"]
mod harness;

#[path = "support/sftp.rs"]
mod sftp;
use sftp::password_login;

use harness::{config_text, Cluster, Node, LEASE_SECS};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

fn node_ids(v: &Value, alive_only: bool) -> Vec<String> {
    let mut ids: Vec<String> = v["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|n| !alive_only || n["alive"] == Value::Bool(true))
                .filter_map(|n| n["node_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[test]
fn both_nodes_list_each_other() {
    let mut c = Cluster::start("nodes_list");
    for n in &c.nodes {
        let listed = wait_until(Duration::from_secs(20), || {
            node_ids(&n.get("/api/nodes").1, true) == ["node-a", "node-b"]
        });
        assert!(listed, "{}: {}\n{}", n.id, n.get("/api/nodes").1, c.logs());
    }
    let (_, v) = c.nodes[0].get("/api/nodes");
    let b = v["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["node_id"] == "node-b"))
        .cloned()
        .unwrap();
    assert_eq!(b["admin"], c.nodes[1].admin.trim_start_matches("http://"));
    assert!(b["sftp"]
        .as_str()
        .is_some_and(|s| s.starts_with("127.0.0.1:")));
    assert_eq!(b["version"], env!("CARGO_PKG_VERSION"));
    for key in ["started_at", "heartbeat_at"] {
        assert!(b[key].as_str().is_some_and(|s| !s.is_empty()), "{b}");
    }
    // Without the token: 401.
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let resp = agent
        .get(&format!("{}/api/nodes", c.nodes[0].admin))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // `roster nodes` and `roster nodes --json` through the CLI.
    let out = Command::new(env!("CARGO_BIN_EXE_roster"))
        .arg("-c")
        .arg(&c.nodes[1].config)
        .arg("nodes")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("NODE"), "{text}");
    for id in ["node-a", "node-b"] {
        let line = text.lines().find(|l| l.starts_with(id)).unwrap_or_default();
        assert!(line.ends_with("alive"), "{text}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_roster"))
        .arg("-c")
        .arg(&c.nodes[1].config)
        .args(["nodes", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(node_ids(&v, true), ["node-a", "node-b"]);

    // A node that stops leaves the list at once; one killed is listed dead after its lease.
    c.nodes[1].stop();
    assert_eq!(node_ids(&c.nodes[0].get("/api/nodes").1, false), ["node-a"]);
    c.nodes[1].start();
    assert!(wait_until(Duration::from_secs(20), || {
        node_ids(&c.nodes[0].get("/api/nodes").1, true) == ["node-a", "node-b"]
    }));
    c.nodes[1].kill9();
    let dead = wait_until(Duration::from_secs(LEASE_SECS + 5), || {
        let v = c.nodes[0].get("/api/nodes").1;
        node_ids(&v, false) == ["node-a", "node-b"] && node_ids(&v, true) == ["node-a"]
    });
    assert!(dead, "{}", c.nodes[0].get("/api/nodes").1);
    c.nodes[0].stop();
}

#[test]
fn an_upload_both_nodes_see_is_imported_once() {
    let mut c = Cluster::start("import_once");
    const ROWS: usize = 500;
    c.drop_in("users.csv", &users_csv(ROWS, "First"));
    let done = wait_until(Duration::from_secs(60), || {
        c.archived() == 1 && c.claims() == 0
    });
    assert!(done, "the upload was not imported\n{}", c.logs());
    // Give a second run (the other node's) every chance to show.
    std::thread::sleep(Duration::from_secs(2));
    for node in 0..2 {
        let history = c.history(node);
        assert_eq!(history.len(), 1, "{history:?}\n{}", c.logs());
        assert_eq!(history[0]["status"], "success", "{history:?}");
        assert_eq!(history[0]["inserted"], ROWS as u64, "{history:?}");
        assert_eq!(c.active_users(node), ROWS as u64);
    }
    assert_eq!(c.archived(), 1);
    assert!(!c.path().join("data/tenants/big/users.csv").exists());
    for n in &mut c.nodes {
        n.stop();
    }
}

#[test]
fn a_node_killed_mid_import_is_finished_by_the_other() {
    let mut c = Cluster::start("kill_one");
    const ROWS: usize = 100_000;
    c.drop_in("users.csv", &users_csv(ROWS, "First"));
    // Find the node that runs the import, and kill it mid-run.
    let victim = c
        .importing_node(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no node started the import\n{}", c.logs()));
    let survivor = 1 - victim;
    c.nodes[victim].kill9();
    assert_eq!(c.archived(), 0, "the run was filed before the kill");
    assert_eq!(c.claims(), 1, "the killed node's claim is left");

    let done = wait_until(Duration::from_secs(240), || {
        c.claims() == 0 && c.archived() == 1
    });
    assert!(
        done,
        "{} did not finish the claim of {}\n{}",
        c.nodes[survivor].id,
        c.nodes[victim].id,
        c.logs()
    );
    let history = c.history(survivor);
    assert_eq!(history.len(), 1, "{history:?}\n{}", c.logs());
    assert_eq!(history[0]["status"], "success", "{history:?}");
    assert_eq!(history[0]["inserted"], ROWS as u64, "{history:?}");
    assert_eq!(c.active_users(survivor), ROWS as u64);
    // The survivor recovers the claim folder under the tenant's lease. Whether it logs taking
    // over the dead node's claim row first depends on which expires first on a busy machine,
    // the dead node's tenant lease or its heartbeat (both `lease_secs`); the lease fences the
    // commit either way.
    let log = std::fs::read_to_string(&c.nodes[survivor].log).unwrap_or_default();
    assert!(
        log.contains("importing a claimed file whose run never committed"),
        "the survivor did not recover the claim\n{}",
        c.logs()
    );
    c.nodes[survivor].stop();
}

/// A node that stalls mid-import (a long pause of the process, or a database outage longer
/// than the lease) loses its lease; the other node takes over the claim and finishes it. When
/// the stalled node goes on, its own commit of that file is refused (its lease is gone) and it
/// gives the claim up: one history record for one upload (review of 2026-11-30, PostgreSQL F2:
/// the run changed no user, so nothing else stopped a second record, event and mail).
#[test]
fn a_stalled_node_does_not_import_again_what_the_other_finished() {
    let mut c = Cluster::start("stall_one");
    const ROWS: usize = 60_000;
    let first = users_csv(ROWS, "First");
    c.drop_in("users.csv", &first);
    assert!(
        wait_until(Duration::from_secs(120), || c.archived() == 1
            && c.claims() == 0),
        "the first import did not finish\n{}",
        c.logs()
    );
    // The same users in another order: new bytes, nothing to change.
    let text = String::from_utf8(first).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1..].reverse();
    c.drop_in("users.csv", (lines.join("\n") + "\n").as_bytes());
    let stalled = c
        .importing_node(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no node started the second import\n{}", c.logs()));
    let other = 1 - stalled;
    c.nodes[stalled].pause();
    let taken_over = wait_until(Duration::from_secs(120), || {
        c.claims() == 0 && c.archived() == 2
    });
    c.nodes[stalled].resume();
    assert!(
        taken_over,
        "the other node did not finish the claim\n{}",
        c.logs()
    );
    // The stalled node goes on for a while: nothing more may be recorded or filed.
    std::thread::sleep(Duration::from_secs(LEASE_SECS * 3));
    let history = c.history(other);
    assert_eq!(history.len(), 2, "{history:#?}\n{}", c.logs());
    assert_eq!(c.archived(), 2, "{}", c.logs());
    assert_eq!(c.active_users(other), ROWS as u64);
    c.nodes[other].stop();
    c.nodes[stalled].stop();
}

/// With the embedded store the node is a cluster of one: `/api/nodes` lists it, alive.
#[test]
fn a_sled_node_lists_itself() {
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let config = dir.path().join("sled.toml");
    let text = config_text(dir.path(), "ignored-with-sled", admin_port, "unused")
        .replace("[store]\nurl = \"unused\"\n", "");
    std::fs::write(&config, text).unwrap();
    let mut node = Node {
        id: "sled".to_string(),
        log: dir.path().join("sled.log"),
        config,
        admin: format!("http://127.0.0.1:{admin_port}"),
        child: None,
    };
    node.start();
    let listed = wait_until(Duration::from_secs(60), || {
        node_ids(&node.get("/api/nodes").1, true) == ["local"]
    });
    assert!(listed, "{}\n{}", node.get("/api/nodes").1, node.log_tail());
    let (_, v) = node.get("/api/nodes");
    assert_eq!(v["nodes"][0]["admin"], format!("127.0.0.1:{admin_port}"));
    node.stop();
}

/// A schedule every minute on both nodes: each tick leaves one `missing` record, not two.
#[test]
fn a_schedule_fires_once_per_tick_across_the_nodes() {
    let mut c = Cluster::start("schedule_once");
    let history = |node: usize| -> Vec<Value> {
        let (status, v) = c.nodes[node].get("/api/tenants/sched/imports?limit=100");
        match v.as_array() {
            Some(records) if status == 200 => records.clone(),
            _ => panic!("GET /api/tenants/sched/imports: {status} {v}\n{}", c.logs()),
        }
    };
    let fired = wait_until(Duration::from_secs(75), || !history(0).is_empty());
    assert!(
        fired,
        "the schedule did not fire within a minute\n{}",
        c.logs()
    );
    // A second node firing the same tick would have recorded by now.
    std::thread::sleep(Duration::from_secs(3));
    let records = history(1);
    let mut minutes: Vec<String> = records
        .iter()
        .map(|r| r["started_at"].as_str().unwrap_or_default()[..16].to_string())
        .collect();
    assert!(
        records.iter().all(|r| r["status"] == "missing"),
        "{records:?}"
    );
    let all = minutes.len();
    minutes.dedup();
    assert_eq!(
        minutes.len(),
        all,
        "a tick fired twice: {records:?}\n{}",
        c.logs()
    );
    let logs: String = c
        .nodes
        .iter()
        .map(|n| std::fs::read_to_string(&n.log).unwrap_or_default())
        .collect();
    assert!(
        logs.contains("schedule fired on another node"),
        "{}",
        c.logs()
    );
    for n in &mut c.nodes {
        n.stop();
    }
}

/// The node that fired a tick died before running it (here: a node row, `ghost`, owns the next
/// five ticks, and its last heartbeat leaves it alive until 5 s after the first of them): the
/// live node, told no at the tick, asks again and fires it once the owner is known dead (and
/// the later ticks at once), so the minute still has its record (gap of s26: nothing was
/// recorded until the next tick the dead node had not fired).
#[test]
fn a_tick_fired_by_a_node_that_died_is_fired_by_a_live_one() {
    let mut c = Cluster::prepare("tick_ghost");
    c.start_node(0);
    c._pg.psql(
        "tick_ghost",
        "INSERT INTO roster.nodes (node_id, address, version, started_at, heartbeat_at, lease_secs) \
         VALUES ('ghost', '127.0.0.1:1', 'test', now() - interval '1 hour', \
                 date_trunc('minute', now()) + interval '1 minute 2 seconds', 3); \
         INSERT INTO roster.schedule_ticks (tenant, tick, node_id) \
         SELECT 'sched', date_trunc('minute', now()) + n * interval '1 minute', 'ghost' \
         FROM generate_series(1, 5) AS n",
    );
    let history = || -> Vec<Value> {
        let (status, v) = c.nodes[0].get("/api/tenants/sched/imports?limit=100");
        match v.as_array() {
            Some(records) if status == 200 => records.clone(),
            _ => panic!("GET /api/tenants/sched/imports: {status} {v}\n{}", c.logs()),
        }
    };
    let fired = wait_until(Duration::from_secs(80), || !history().is_empty());
    assert!(
        fired,
        "the dead node's tick was not fired by the live node\n{}",
        c.logs()
    );
    let records = history();
    assert!(
        records.iter().all(|r| r["status"] == "missing"),
        "{records:?}"
    );
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap_or_default();
    assert!(
        log.contains("schedule fired on a second ask"),
        "{}",
        c.logs()
    );
    let owners = c._pg.psql(
        "tick_ghost",
        "SELECT count(*) FROM roster.schedule_ticks WHERE node_id = 'node-a' AND tick <= now()",
    );
    assert_eq!(owners.trim(), records.len().to_string(), "{records:?}");
    c.nodes[0].stop();
}

/// `max_auth_failures = 4`: two wrong passwords on each node block the address (and the
/// tenant's password logins) on both, though neither node saw four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_on_both_nodes_add_up_to_one_block() {
    let mut c = Cluster::start("logins_shared");
    let (_, v) = c.nodes[0].get("/api/nodes");
    let sftp: Vec<String> = ["node-a", "node-b"]
        .iter()
        .map(|id| {
            v["nodes"]
                .as_array()
                .and_then(|a| a.iter().find(|n| n["node_id"] == *id))
                .and_then(|n| n["sftp"].as_str())
                .unwrap_or_else(|| panic!("{id} is not listed: {v}"))
                .to_string()
        })
        .collect();
    assert!(
        password_login(&sftp[1], "big", "pw-not-used").await,
        "the right password works"
    );
    for addr in [&sftp[0], &sftp[1], &sftp[0]] {
        assert!(!password_login(addr, "big", "wrong").await);
    }
    // Three failures: still open on both.
    assert!(password_login(&sftp[0], "big", "pw-not-used").await);
    assert!(!password_login(&sftp[1], "big", "wrong").await);
    for addr in &sftp {
        assert!(
            !password_login(addr, "big", "pw-not-used").await,
            "{addr} let a blocked client in\n{}",
            c.logs()
        );
    }
    // Node A lists the tenant's block as shared (the right password above cleared the
    // address's shared count); an operator lifts it, and the address too, on node B, and node
    // A lets the right password in again once its heartbeat has read the lifts.
    let (status, v) = c.nodes[0].get("/api/login-blocks");
    assert_eq!(status, 200, "{v}");
    let shared_tenant = v["blocks"].as_array().is_some_and(|a| {
        a.iter()
            .any(|b| b["source"] == "shared" && b["scope"] == "tenant" && b["subject"] == "big")
    });
    assert!(shared_tenant, "{v}");
    let (status, v) = c.nodes[1].post("/api/login-blocks/tenant/big/lift");
    assert_eq!((status, &v["lifted"]), (200, &Value::Bool(true)), "{v}");
    let (status, v) = c.nodes[1].post("/api/login-blocks/address/127.0.0.1/lift");
    assert_eq!(status, 200, "{v}");
    let mut let_in = false;
    for _ in 0..20 {
        if password_login(&sftp[0], "big", "pw-not-used").await {
            let_in = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(let_in, "node A kept the lifted block\n{}", c.logs());
    let (_, v) = c.nodes[0].get("/api/login-blocks");
    assert_eq!(v["blocks"], Value::Array(vec![]), "{v}");
    for n in &mut c.nodes {
        n.stop();
    }
}

/// A node that starts while another imports leaves that claim alone: its start-up recovery
/// needs the tenant's lease, which the importing node holds. One run, by the first node.
#[test]
fn a_node_starting_mid_import_leaves_the_running_claim_alone() {
    let mut c = Cluster::prepare("start_mid_import");
    c.start_node(0);
    const ROWS: usize = 100_000;
    c.drop_in("users.csv", &users_csv(ROWS, "First"));
    let started = wait_until(Duration::from_secs(60), || c.claims() == 1);
    assert!(started, "node-a did not claim the file\n{}", c.logs());
    c.start_node(1);
    assert_eq!(
        (c.claims(), c.archived()),
        (1, 0),
        "node-a finished before node-b started: nothing was tested\n{}",
        c.logs()
    );
    let done = wait_until(Duration::from_secs(240), || {
        c.claims() == 0 && c.archived() == 1
    });
    assert!(done, "the import did not finish\n{}", c.logs());
    std::thread::sleep(Duration::from_secs(2));
    let history = c.history(1);
    assert_eq!(history.len(), 1, "{history:?}\n{}", c.logs());
    assert_eq!(history[0]["status"], "success", "{history:?}");
    assert_eq!(history[0]["inserted"], ROWS as u64, "{history:?}");
    let log_b = std::fs::read_to_string(&c.nodes[1].log).unwrap_or_default();
    assert!(
        !log_b.contains("importing a claimed file whose run never committed"),
        "node-b took node-a's running claim\n{}",
        c.logs()
    );
    for n in &mut c.nodes {
        n.stop();
    }
}

/// Two processes given one `[cluster] node_id` (a shared config file): the second refuses to
/// start instead of sharing the first one's leases and claims (review s16 cluster F2). A node
/// restarted after a crash, whose old heartbeat no longer moves, still starts (the other tests
/// restart killed nodes).
#[test]
fn a_second_process_with_the_same_node_id_refuses_to_start() {
    let mut c = Cluster::prepare("twin_ids");
    c.start_node(0);
    // A generation node-a is staging (as mid-import): the twin must not delete it before it
    // finds node-a alive (review s26: the store's open deleted it first).
    c._pg.psql(
        "twin_ids",
        "INSERT INTO roster.staged_rows (gen, node_id, tenant, key, bucket, status) VALUES \
         (7, 'node-a', 'acme', 'k1', 0, NULL), (7, 'node-a', 'acme', '', 0, 'staged')",
    );
    let twin = std::fs::read_to_string(&c.nodes[1].config)
        .unwrap()
        .replace("node_id = \"node-b\"", "node_id = \"node-a\"");
    std::fs::write(&c.nodes[1].config, twin).unwrap();
    c.nodes[1].start();
    let mut exited = None;
    wait_until(Duration::from_secs(30), || {
        exited = c.nodes[1]
            .child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten());
        exited.is_some()
    });
    let log = std::fs::read_to_string(&c.nodes[1].log).unwrap_or_default();
    let status = exited.unwrap_or_else(|| panic!("the twin kept running\n{}", c.logs()));
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("another roster serve is running as node \"node-a\""),
        "{log}"
    );
    // The first node is untouched, and so is what it staged.
    assert_eq!(c.nodes[0].get("/health").0, 200, "{}", c.logs());
    let staged = c._pg.psql(
        "twin_ids",
        "SELECT count(*) FROM roster.staged_rows WHERE node_id = 'node-a' AND gen = 7",
    );
    assert_eq!(staged, "2", "{}", c.logs());
}

/// `roster serve` does not start while `roster migrate-store` copies into its database (the
/// copy's node is alive): it would import into half-copied tenants and sweep the copy's
/// staged rows (review s25). Once the copy has left, the node starts.
#[test]
fn a_node_does_not_start_while_migrate_store_copies() {
    let mut c = Cluster::prepare("copying");
    let target = roster::store::postgres::parse_url(&c._pg.url("copying")).unwrap();
    let copy =
        roster::store::postgres::PostgresStore::open(&target, roster::store::MIGRATE_STORE_NODE_ID)
            .unwrap();
    use roster::store::Cluster as _;
    let beat = roster::store::NodeBeat {
        sftp: "-".to_string(),
        admin: "-".to_string(),
        version: "test (migrate-store)".to_string(),
        started_at: chrono::Utc::now(),
    };
    copy.heartbeat(&beat).unwrap();
    // The copy beats as a real one does while the node starts (making its host keys can take
    // longer than the test's 3 s lease).
    let copy = std::sync::Arc::new(copy);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beating = {
        let (copy, stop) = (copy.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = copy.heartbeat(&beat);
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    c.nodes[0].start();
    let mut exited = None;
    wait_until(Duration::from_secs(30), || {
        exited = c.nodes[0]
            .child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten());
        exited.is_some()
    });
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap_or_default();
    let status = exited.unwrap_or_else(|| panic!("the node started\n{}", c.logs()));
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("roster migrate-store is copying into this database (last heartbeat"),
        "{log}"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    beating.join().unwrap();
    copy.leave().unwrap();
    c.start_node(0);
    assert_eq!(c.nodes[0].get("/health").0, 200, "{}", c.logs());
}
