//! SCIM push per tenant inside real `roster serve` processes (review s15): a slow application
//! delays only its own tenant (F1); SIGTERM stops a push held up by a slow application within
//! a bounded time (F5); a push that cannot start because its `token_env` is unset says why in
//! the status and `roster scim-push`, logs it once, and `check-config` warns (F6).

#[path = "scim_push/hostile.rs"]
mod hostile;
#[path = "scim_push/server.rs"]
mod server;
mod support;

use hostile::{Answer, Hostile};
use serde_json::{json, Value};
use server::ScimServer;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::process::{free_port, wait_until, KillOnDrop};

const BIN: &str = env!("CARGO_BIN_EXE_roster");

fn roster(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// A config with one tenant per `(id, scim_push block)` under `dir`, each with a home.
fn config(dir: &Path, tenants: &[(&str, String)]) -> PathBuf {
    let d = dir.display();
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nhost_keys = \"{d}/host_keys\"\ndata_dir = \"{d}/data\"\n\
         [admin]\nlisten = \"127.0.0.1:{}\"\ntoken = \"tenants-test-admin-token-0123456789\"\n",
        free_port(),
        free_port()
    );
    for (id, push) in tenants {
        std::fs::create_dir_all(dir.join("data/tenants").join(id)).unwrap();
        text.push_str(&format!(
            "[[tenants]]\nid = \"{id}\"\nauthorized_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDzq2Cb+8N6l3G7MxJm9sc5k1sYSdW0YGSTkLx+lw8/9 t\"]\n\
             [tenants.import]\nfile = \"users.csv\"\nreport = \"never\"\n[tenants.scim_push]\n{push}\n"
        ));
    }
    let path = dir.join("roster.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `roster serve` (its log in `dir/serve.log`) and waits for its admin API.
fn serve(config: &Path, dir: &Path) -> KillOnDrop {
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let child = Command::new(BIN)
        .arg("-c")
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let serve = KillOnDrop(child);
    assert!(
        wait_until(Duration::from_secs(30), || roster(config, &["nodes"])
            .status
            .success()),
        "roster serve did not start"
    );
    serve
}

/// Writes `n` users `<prefix><i>@<tenant>.example` to the tenant's file and imports it now.
fn import(config: &Path, dir: &Path, tenant: &str, prefix: &str, n: usize) {
    let mut csv = String::from("email,first_name,last_name\n");
    for i in 0..n {
        csv.push_str(&format!("{prefix}{i:03}@{tenant}.example,F{i},L{i}\n"));
    }
    std::fs::write(dir.join("data/tenants").join(tenant).join("users.csv"), csv).unwrap();
    let run = roster(config, &["run-now", tenant, "--json"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// A correct SCIM application that answers every request after `delay`.
fn slow_application(delay: Duration) -> Hostile {
    Hostile::start(move |method, path| {
        std::thread::sleep(delay);
        match (method, path) {
            ("GET", p) if p.starts_with("/ServiceProviderConfig") => {
                Answer::json(200, &json!({"patch": {"supported": true}}))
            }
            ("GET", _) => Answer::json(200, &json!({"totalResults": 0, "Resources": []})),
            ("POST", _) => Answer::json(201, &json!({"id": format!("{:x}", rand_id())})),
            _ => Answer::json(200, &json!({})),
        }
    })
}

fn rand_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

fn has(scim: &ScimServer, key: &str) -> bool {
    scim.users().iter().any(|u| u["externalId"] == json!(key))
}

#[test]
fn a_slow_application_delays_only_its_tenant_and_sigterm_stops_its_push_soon() {
    let slow = slow_application(Duration::from_secs(3));
    let fast = ScimServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &[
            ("slowco", format!("url = \"{}\"", slow.base)),
            ("fastco", format!("url = \"{}\"", fast.base)),
        ],
    );
    let mut serve = serve(&config, dir.path());
    // slowco's backlog: 40 users, three requests each, 3 s per request, 4 at once (~90 s).
    import(&config, dir.path(), "slowco", "s", 40);
    assert!(
        wait_until(Duration::from_secs(30), || !slow.seen().is_empty()),
        "slowco's push did not start"
    );
    let started = Instant::now();
    import(&config, dir.path(), "fastco", "f", 1);
    assert!(
        wait_until(Duration::from_secs(20), || has(
            &fast,
            "f000@fastco.example"
        )),
        "fastco's user waited for slowco's application ({:?})",
        started.elapsed()
    );

    // SIGTERM while slowco's push is still far from done: it stops within the bound.
    let sent = Instant::now();
    // SAFETY: signals our own child process.
    unsafe { libc::kill(serve.0.id() as libc::pid_t, libc::SIGTERM) };
    let exited = wait_until(Duration::from_secs(40), || {
        serve.0.try_wait().ok().flatten().is_some()
    });
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert!(
        exited,
        "roster serve still running {:?} after SIGTERM:\n{log}",
        sent.elapsed()
    );
    assert!(
        slow.seen().len() < 120,
        "the push went on to the end before stopping"
    );
}

#[test]
fn an_unset_token_env_is_shown_in_the_status_logged_once_and_warned_by_check_config() {
    let var = "ROSTER_TEST_S15_UNSET_TOKEN";
    std::env::remove_var(var);
    let app = ScimServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &[(
            "acme",
            format!("url = \"{}\"\ntoken_env = \"{var}\"", app.base),
        )],
    );
    let check = roster(&config, &["check-config"]);
    let said = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(check.status.success(), "a warning, not a failure: {said}");
    assert!(
        said.contains("warning: acme") && said.contains(var),
        "{said}"
    );

    let _serve = serve(&config, dir.path());
    import(&config, dir.path(), "acme", "u", 3);
    let mut status = Value::Null;
    let shown = wait_until(Duration::from_secs(20), || {
        let out = roster(&config, &["scim-push", "acme", "--json"]);
        status = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(var))
    });
    assert!(shown, "{status}");
    let text = String::from_utf8_lossy(&roster(&config, &["scim-push", "acme"]).stdout).to_string();
    assert!(
        text.contains("last error SCIM push stopped") && text.contains(var),
        "{text}"
    );
    std::thread::sleep(Duration::from_secs(3)); // six worker rounds
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    let lines = log
        .lines()
        .filter(|l| l.contains("SCIM push stopped"))
        .count();
    assert_eq!(lines, 1, "{log}");
    assert!(app.users().is_empty());
}
