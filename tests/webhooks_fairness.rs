//! Webhook delivery shared fairly between tenants (review s15 F4), in a real `roster serve`:
//! a tenant with sixteen slow endpoints (each answers 200 after 6 s) does not hold every
//! sending slot, so another tenant's message goes out at once instead of after their backlogs.

#[path = "scim_push/hostile.rs"]
mod hostile;
mod support;
#[path = "webhooks/support.rs"]
mod webhooks;

use hostile::{Answer, Hostile};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::process::{free_port, wait_until, KillOnDrop};

const BIN: &str = env!("CARGO_BIN_EXE_roster");
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDzq2Cb+8N6l3G7MxJm9sc5k1sYSdW0YGSTkLx+lw8/9 t";

fn roster(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn tenant(dir: &Path, id: &str, urls: &[String]) -> String {
    std::fs::create_dir_all(dir.join("data/tenants").join(id)).unwrap();
    let mut t = format!(
        "[[tenants]]\nid = \"{id}\"\nauthorized_keys = [\"{KEY}\"]\n\
         [tenants.import]\nfile = \"users.csv\"\nreport = \"never\"\n"
    );
    for url in urls {
        t.push_str(&format!(
            "[[tenants.webhooks]]\nurl = \"{url}\"\nsecret = \"{}\"\n",
            webhooks::SECRET
        ));
    }
    t
}

fn import(config: &Path, dir: &Path, id: &str, n: usize) {
    let mut csv = String::from("email,first_name,last_name\n");
    for i in 0..n {
        csv.push_str(&format!("u{i:03}@{id}.example,F{i},L{i}\n"));
    }
    std::fs::write(dir.join("data/tenants").join(id).join("users.csv"), csv).unwrap();
    let run = roster(config, &["run-now", id, "--json"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn sixteen_slow_endpoints_of_one_tenant_do_not_stall_another_tenant() {
    let slow = Hostile::start(|_, _| {
        std::thread::sleep(Duration::from_secs(6));
        Answer::json(200, &serde_json::json!({}))
    });
    let fast = Hostile::start(|_, _| Answer::json(200, &serde_json::json!({})));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let slow_urls: Vec<String> = (0..16).map(|i| format!("{}/hook{i}", slow.base)).collect();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nhost_keys = \"{d}/host_keys\"\ndata_dir = \"{d}/data\"\n\
         [admin]\nlisten = \"127.0.0.1:{}\"\ntoken = \"fairness-test-admin-token-0123456789\"\n{}{}",
        free_port(),
        free_port(),
        tenant(dir.path(), "slowco", &slow_urls),
        tenant(dir.path(), "fastco", &[format!("{}/hook", fast.base)]),
    );
    let config = dir.path().join("roster.toml");
    std::fs::write(&config, text).unwrap();
    let child = Command::new(BIN)
        .arg("-c")
        .arg(&config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _serve = KillOnDrop(child);
    assert!(
        wait_until(Duration::from_secs(30), || roster(&config, &["nodes"])
            .status
            .success()),
        "roster serve did not start"
    );
    // The endpoints start after the newest event when first seen: let every one be seen.
    std::thread::sleep(Duration::from_secs(3));
    // Three imports: six events for each slow endpoint, 36 s of answers each.
    for n in [2, 4, 6] {
        import(&config, dir.path(), "slowco", n);
    }
    assert!(
        wait_until(Duration::from_secs(30), || !slow.seen().is_empty()),
        "slowco's deliveries did not start"
    );
    std::thread::sleep(Duration::from_secs(1));
    let sent = Instant::now();
    import(&config, dir.path(), "fastco", 1);
    assert!(
        wait_until(Duration::from_secs(15), || !fast.seen().is_empty()),
        "fastco's message waited for slowco's endpoints ({:?}; slow saw {})",
        sent.elapsed(),
        slow.seen().len()
    );
}
