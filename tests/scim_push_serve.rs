//! SCIM push inside `roster serve`, end to end: a tenant's imports reach a real SCIM service
//! provider (`scim2-server`) through the change log and the push worker; the status route
//! shows the cursor; `roster scim-push --reconcile [--dry-run]` finds and fixes drift made in
//! the application behind Roster's back. Needs the change log written by commits (h-changes).

#[path = "admin_support/mod.rs"]
mod admin_support;
#[path = "scim_push/server.rs"]
mod server;
mod support;

use support::process::free_port;

use admin_support::{keys, users_csv, Env};
use serde_json::{json, Value};
use server::ScimServer;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_roster");

/// Adds `[tenants.scim_push]` to acme in the running server's config and waits for the reload.
async fn push_acme_to(env: &Env, scim: &ScimServer) {
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let anchor = "org_units = [\"HQ\", \"R&D\"]\n";
    assert!(text.contains(anchor));
    let block = format!("{anchor}[tenants.scim_push]\nurl = \"{}\"\n", scim.base);
    std::fs::write(&env.config_path, text.replacen(anchor, &block, 1)).unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while env.get("/api/tenants/acme/scim-push").await.status != 200 {
        assert!(
            Instant::now() < until,
            "the config with scim_push was not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `ok` holds for the provider's users.
async fn wait_users(scim: &ScimServer, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let users = scim.users();
        if ok(&users) {
            return users;
        }
        assert!(Instant::now() < until, "{what}: {users:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ours<'a>(users: &'a [Value], key: &str) -> Option<&'a Value> {
    users.iter().find(|u| u["externalId"] == json!(key))
}

#[tokio::test(flavor = "multi_thread")]
async fn imports_reach_the_application_and_reconcile_fixes_drift() {
    let scim = ScimServer::start(&[]);
    let mut env = Env::start().await;
    push_acme_to(&env, &scim).await;
    env.import("acme", &users_csv(0, 10)).await;
    let all = keys(0, 10);
    let users = wait_users(&scim, "the first import was pushed", |u| {
        all.iter().all(|k| ours(u, k).is_some())
    })
    .await;
    assert_eq!(users.len(), 10);
    let u3 = ours(&users, "user03@acme.example").unwrap();
    assert_eq!(u3["userName"], "u03");
    assert_eq!(u3["name"]["givenName"], "First03");
    assert_eq!(u3["title"], "Clerk");
    assert_eq!(u3["active"], true);
    let boss = ours(&users, "user00@acme.example").unwrap();
    let ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    if u3[ent]["manager"]["value"] != boss["id"] {
        // user00 may have been pushed after user03 in the first batch: the next update sets it.
        assert!(u3[ent].get("manager").is_none(), "{u3}");
    }

    // user09 leaves the file: acme deactivates the missing; so does the application.
    env.import("acme", &users_csv(0, 9)).await;
    wait_users(&scim, "the deactivation was pushed", |u| {
        ours(u, "user09@acme.example").is_some_and(|x| x["active"] == json!(false))
    })
    .await;
    let status = env.get("/api/tenants/acme/scim-push").await;
    assert_eq!(status.status, 200, "{}", status.text);
    assert_eq!(status.json["backlog"], 0, "{}", status.text);
    assert!(
        status.json["position"].as_u64().unwrap() >= 11,
        "{}",
        status.text
    );
    assert_eq!(status.json["failing"], json!([]));
    assert!(status.json["last_success"].is_string());

    // Drift behind Roster's back: user05 deleted in the application.
    let id = ours(&scim.users(), "user05@acme.example").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    scim.delete(&id);
    let cli = env.cli_config();
    let dry = tokio::process::Command::new(BIN)
        .args([
            "-c",
            cli.to_str().unwrap(),
            "scim-push",
            "acme",
            "--reconcile",
            "--dry-run",
        ])
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&dry.stdout).to_string();
    assert!(
        dry.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        out.contains("create: 1") && out.contains("user05@acme.example"),
        "{out}"
    );
    assert!(
        out.contains("update: 0") && out.contains("deactivate: 0"),
        "{out}"
    );
    assert!(ours(&scim.users(), "user05@acme.example").is_none());
    let fix = tokio::process::Command::new(BIN)
        .args([
            "-c",
            cli.to_str().unwrap(),
            "scim-push",
            "acme",
            "--reconcile",
            "--json",
        ])
        .output()
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&fix.stdout).unwrap();
    assert_eq!(v["create"]["count"], 1, "{v}");
    assert_eq!(v["errors"], json!([]));
    assert!(ours(&scim.users(), "user05@acme.example").is_some());
    let status = tokio::process::Command::new(BIN)
        .args(["-c", cli.to_str().unwrap(), "scim-push", "acme"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        text.contains("backlog 0") && text.contains("failing users: 0"),
        "{text}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_without_scim_push_is_a_404() {
    let mut env = Env::start().await;
    let a = env.get("/api/tenants/acme/scim-push").await;
    assert_eq!(a.status, 404);
    assert!(
        a.json["error"].as_str().unwrap().contains("scim_push"),
        "{}",
        a.text
    );
    env.stop().await;
}

/// A `roster serve` process on its own config (so it can be killed with SIGKILL).
struct ServeProcess {
    child: std::process::Child,
}

impl ServeProcess {
    fn start(config: &std::path::Path) -> ServeProcess {
        let child = std::process::Command::new(BIN)
            .arg("-c")
            .arg(config)
            .arg("serve")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        ServeProcess { child }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn roster_blocking(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_push_killed_with_sigkill_resumes_without_duplicates() {
    const N: usize = 400;
    let scim = ScimServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let hash = {
        use std::io::Write;
        let mut c = std::process::Command::new(BIN)
            .arg("hash-password")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(b"pw-kill-test").unwrap();
        String::from_utf8(c.wait_with_output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string()
    };
    let config = dir.path().join("roster.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:{sftp}"
host_keys = "{d}/host_keys"
data_dir = "{d}/data"
[admin]
listen = "127.0.0.1:{admin}"
token = "kill-test-admin-token-0123456789"
[[tenants]]
id = "k9"
password_hash = "{hash}"
[tenants.import]
file = "users.csv"
report = "never"
[tenants.scim_push]
url = "{url}"
"#,
            sftp = free_port(),
            admin = free_port(),
            url = scim.base
        ),
    )
    .unwrap();
    let home = dir.path().join("data/tenants/k9");
    std::fs::create_dir_all(&home).unwrap();
    let mut csv = String::from("email,first_name,last_name\n");
    for i in 0..N {
        csv.push_str(&format!("p{i:04}@k9.example,F{i},L{i}\n"));
    }
    std::fs::write(home.join("users.csv"), csv).unwrap();

    let mut serve = ServeProcess::start(&config);
    let until = Instant::now() + Duration::from_secs(30);
    while !roster_blocking(&config, &["nodes"]).status.success() {
        assert!(Instant::now() < until, "roster serve did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = roster_blocking(&config, &["run-now", "k9", "--json"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // Kill it mid-push: some users are in the application, not all.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let n = scim.users().len();
        if n >= 20 {
            assert!(n < N, "the push finished before the kill ({n})");
            break;
        }
        assert!(Instant::now() < until, "the push did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    serve.kill9();
    let at_kill = scim.users().len();
    let _serve = ServeProcess::start(&config);
    let until = Instant::now() + Duration::from_secs(120);
    let users = loop {
        let users = scim.users();
        if users.len() >= N {
            break users;
        }
        assert!(
            Instant::now() < until,
            "not resumed: {} of {N}",
            users.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut ext: Vec<&str> = users
        .iter()
        .filter_map(|u| u["externalId"].as_str())
        .collect();
    ext.sort_unstable();
    ext.dedup();
    assert_eq!(
        (users.len(), ext.len()),
        (N, N),
        "killed at {at_kill}: no duplicates, none lost"
    );
}
