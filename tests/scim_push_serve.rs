//! SCIM push inside `roster serve`, end to end: a tenant's imports reach a real SCIM service
//! provider (`scim2-server`) through the change log and the push worker; the status route
//! shows the cursor; `roster scim-push --reconcile [--dry-run]` finds and fixes drift made in
//! the application behind Roster's back; a push killed with SIGKILL resumes without duplicates;
//! a refused user is still listed (and retried) after a restart. Needs the change log written
//! by commits (h-changes).

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
    push_acme_to_url(env, &scim.base).await
}

/// The same, for any base URL.
async fn push_acme_to_url(env: &Env, base: &str) {
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let anchor = "org_units = [\"HQ\", \"R&D\"]\n";
    assert!(text.contains(anchor));
    let block = format!("{anchor}[tenants.scim_push]\nurl = \"{base}\"\n");
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

/// A reconcile whose client went away (Ctrl-C, a proxy's timeout) still lets the next one run
/// once its work has ended (review of 2026-11-30, console F1: the flag stayed set for good,
/// and every later reconcile of every tenant was a 409).
#[tokio::test(flavor = "multi_thread")]
async fn a_reconcile_whose_client_left_does_not_block_the_next() {
    use std::io::{Read, Write};
    // The application: accepts and says nothing until told to hang up.
    let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/scim/v2", app.local_addr().unwrap());
    let env = Env::start().await;
    push_acme_to_url(&env, &base).await;

    // A reconcile, and its client gives up while Roster waits on the application.
    let admin = env.server().admin.addr;
    let mut client = std::net::TcpStream::connect(admin).unwrap();
    write!(
        client,
        "POST /api/tenants/acme/scim-push/reconcile?dry_run=true HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nContent-Length: 0\r\n\r\n",
        admin_support::TOKEN
    )
    .unwrap();
    let (held, _) = app.accept().unwrap();
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The application hangs up on this and every later request: the reconcile fails.
    drop(held);
    std::thread::spawn(move || {
        for c in app.incoming() {
            let Ok(mut c) = c else { return };
            let mut buf = [0u8; 1024];
            let _ = c.set_read_timeout(Some(Duration::from_millis(100)));
            let _ = c.read(&mut buf);
        }
    });
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let next = env
            .post("/api/tenants/acme/scim-push/reconcile?dry_run=true", None)
            .await;
        if next.status != 409 {
            assert_eq!(next.status, 502, "{}", next.text);
            assert!(next.text.contains("SCIM"), "{}", next.text);
            break;
        }
        assert!(
            Instant::now() < until,
            "the abandoned reconcile still blocks: {}",
            next.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The status shows the application's URL without its user name, password and query, where
/// tokens travel (s29: it was shown whole, to anyone with the admin token).
#[tokio::test(flavor = "multi_thread")]
async fn the_status_hides_credentials_in_the_url() {
    let mut env = Env::start().await;
    push_acme_to_url(&env, "http://app:pw-SECRET@127.0.0.1:9/scim/v2?code=SECRET").await;
    let a = env.get("/api/tenants/acme/scim-push").await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(!a.text.contains("SECRET"), "{}", a.text);
    assert_eq!(
        a.json["url"], "http://***@127.0.0.1:9/scim/v2?***",
        "{}",
        a.text
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

/// Writes a config with tenant `k9` (password login, `users.csv`, `[tenants.scim_push]` at
/// `url`) under `dir`; returns its path.
fn k9_config(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let d = dir.display();
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
    let config = dir.join("roster.toml");
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
        ),
    )
    .unwrap();
    config
}

/// Starts `roster serve` on `config` and waits until its admin API answers.
fn serve_started(config: &std::path::Path) -> ServeProcess {
    let serve = ServeProcess::start(config);
    let until = Instant::now() + Duration::from_secs(30);
    while !roster_blocking(config, &["nodes"]).status.success() {
        assert!(Instant::now() < until, "roster serve did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    serve
}

#[test]
fn a_push_killed_with_sigkill_resumes_without_duplicates() {
    const N: usize = 400;
    let scim = ScimServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config = k9_config(dir.path(), &scim.base);
    let home = dir.path().join("data/tenants/k9");
    std::fs::create_dir_all(&home).unwrap();
    let mut csv = String::from("email,first_name,last_name\n");
    for i in 0..N {
        csv.push_str(&format!("p{i:04}@k9.example,F{i},L{i}\n"));
    }
    std::fs::write(home.join("users.csv"), csv).unwrap();

    let mut serve = serve_started(&config);
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

/// The failing users of `roster scim-push k9 --json` (their keys).
fn failing_keys(config: &std::path::Path) -> Vec<String> {
    let out = roster_blocking(config, &["scim-push", "k9", "--json"]);
    if !out.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["failing"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["key"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `ok` holds for the failing keys.
fn wait_failing(config: &std::path::Path, what: &str, ok: impl Fn(&[String]) -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let keys = failing_keys(config);
        if ok(&keys) {
            return;
        }
        assert!(Instant::now() < until, "{what}: {keys:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_refused_user_is_still_failing_after_a_restart_and_is_retried() {
    let scim = ScimServer::start(&[]);
    // The application already has someone else under the userName Roster will push: 409.
    let other = scim.create(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "taken@k9.example",
        "externalId": "somebody-else",
    }));
    let dir = tempfile::tempdir().unwrap();
    let config = k9_config(dir.path(), &scim.base);
    // On the store under test (ROSTER_TEST_STORE=postgres: a throwaway PostgreSQL).
    let store = support::server_store::ServerStore::for_test();
    let text = std::fs::read_to_string(&config).unwrap() + &store.config_section();
    std::fs::write(&config, text).unwrap();
    let home = dir.path().join("data/tenants/k9");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("users.csv"),
        "email,first_name,last_name\nfree@k9.example,Fay,Free\ntaken@k9.example,Tom,Taken\n",
    )
    .unwrap();
    let mut serve = serve_started(&config);
    assert!(roster_blocking(&config, &["run-now", "k9", "--json"])
        .status
        .success());
    wait_failing(&config, "the refusal is not shown", |k| {
        k == ["taken@k9.example"]
    });
    assert!(ours(&scim.users(), "free@k9.example").is_some());

    serve.kill9();
    let mut serve = serve_started(&config);
    // No new change reaches the tenant: the list comes back from the store.
    wait_failing(&config, "forgotten after the restart", |k| {
        k == ["taken@k9.example"]
    });
    // Once the application lets go of the name, the retry (with backoff) creates our user.
    scim.delete(other["id"].as_str().unwrap());
    wait_failing(&config, "still failing after the conflict went away", |k| {
        k.is_empty()
    });
    assert!(ours(&scim.users(), "taken@k9.example").is_some());
    // And the emptied list is what a further restart finds.
    serve.kill9();
    let _serve = serve_started(&config);
    std::thread::sleep(Duration::from_secs(3)); // a few worker rounds
    assert!(failing_keys(&config).is_empty());
}
