//! The built `roster` binary's admin commands against a running server: `--json` output
//! parsed back into the records, `users --csv`, human tables, one-sentence errors (server not
//! running, unknown import), and `serve --log-format json`.

#[path = "admin_support/mod.rs"]
mod admin_support;
mod support;

use admin_support::{users_csv, Env};
use roster::model::{ImportRecord, ImportStatus, User, UserStatus};
use std::path::Path;
use std::process::Output;

const BIN: &str = env!("CARGO_BIN_EXE_roster");

async fn roster(config: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("ROSTER_ADMIN_URL")
        .env("TZ", "UTC")
        .output()
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_json_csv_and_tables_against_a_running_server() {
    let env = Env::start().await;
    let cfg = env.cli_config();
    let first = env.import("acme", &users_csv(0, 10)).await;
    let held = env.import("acme", &users_csv(0, 2)).await;
    assert_eq!(held.status, ImportStatus::Held);

    // history --json: the stable import records, newest first.
    let o = roster(&cfg, &["history", "acme", "--json"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let records: Vec<ImportRecord> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        records.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        [held.id.clone(), first.id.clone()]
    );
    let o = roster(&cfg, &["history", "acme", "--limit", "1", "--json"]).await;
    assert_eq!(
        serde_json::from_slice::<Vec<ImportRecord>>(&o.stdout)
            .unwrap()
            .len(),
        1
    );

    // The human table: a header, one line per run, aligned, and the approve hint.
    let o = roster(&cfg, &["history", "acme"]).await;
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("ID "), "{text}");
    assert!(
        lines[0].contains("RECEIVED") && lines[0].contains("STATUS"),
        "{text}"
    );
    let status_col = lines[0].find("STATUS").unwrap();
    assert_eq!(&lines[1][status_col..status_col + 4], "held", "{text}");
    assert_eq!(&lines[2][status_col..status_col + 7], "success", "{text}");
    assert!(
        text.contains(&format!("roster approve acme {}", held.id)),
        "{text}"
    );
    let local = first.received_at.format("%Y-%m-%d %H:%M").to_string();
    assert!(
        text.contains(&local),
        "dates in local time (TZ=UTC here): {text}"
    );

    // preview --json of a file on disk: nothing changes.
    let file = env.dir.path().join("next.csv");
    std::fs::write(&file, users_csv(0, 10).replace("Last04", "Changed04")).unwrap();
    let o = roster(&cfg, &["preview", "acme", file.to_str().unwrap(), "--json"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["record"]["updated"], 1);
    assert_eq!(v["changes"][0]["changes"][0]["new"], "Changed04");
    let o = roster(&cfg, &["preview", "acme", file.to_str().unwrap()]).await;
    let text = stdout(&o);
    assert!(text.contains("nothing was changed"), "{text}");
    assert!(text.contains("last_name: Last04 → Changed04"), "{text}");

    // approve, then users --json / --csv / table.
    let o = roster(&cfg, &["approve", "acme", &held.id, "--json"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let approved: ImportRecord = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (approved.status, approved.counts.deactivated),
        (ImportStatus::Success, 8)
    );
    let o = roster(&cfg, &["users", "acme", "--status", "inactive", "--json"]).await;
    let users: Vec<User> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(users.len(), 8);
    assert!(users.iter().all(|u| u.status == UserStatus::Inactive));
    let o = roster(&cfg, &["users", "acme", "--csv"]).await;
    let mut rd = csv::Reader::from_reader(o.stdout.as_slice());
    let header: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(&header[..3], ["key", "status", "email"]);
    assert!(header.contains(&"phone".to_string()), "{header:?}");
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 10);
    let phone = header.iter().position(|h| h == "phone").unwrap();
    assert_eq!(
        &rows[0][phone], "+385 1 555 0000",
        "phone numbers are not mangled"
    );
    let o = roster(&cfg, &["users", "acme"]).await;
    assert!(stdout(&o).starts_with("KEY "), "{}", stdout(&o));
    assert!(stdout(&o).contains("10 user(s)"));

    // restore, run-now, today with --json.
    let o = roster(&cfg, &["restore", "acme", "user07@acme.example", "--json"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let u: User = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(u.status, UserStatus::Active);
    let o = roster(&cfg, &["run-now", "acme", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["imports"].as_array().unwrap().len(), 0);
    let o = roster(&cfg, &["today", "acme", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["present"], true);
    assert_eq!(v["imported"].as_array().unwrap().len(), 2);
    let o = roster(&cfg, &["today", "acme"]).await;
    assert!(
        stdout(&o).contains("today's file is there"),
        "{}",
        stdout(&o)
    );

    // --admin-url overrides the config; errors are one sentence with a non-zero exit.
    let o = roster(
        &env.config_path,
        &[
            "--admin-url",
            &env.admin_url(),
            "approve",
            "acme",
            "20990101T000000Z-0",
        ],
    )
    .await;
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no import"), "{err}");
    let o = roster(&cfg, &["users", "nosuch"]).await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no tenant \"nosuch\""),
        "{}",
        stderr(&o)
    );
    // A config whose admin port is 0 cannot be used without --admin-url.
    let o = roster(&env.config_path, &["history", "acme"]).await;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--admin-url"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_says_in_one_sentence_when_the_server_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let key = russh::keys::PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519)
        .unwrap();
    // A port that was free a moment ago, so nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("roster.toml");
    std::fs::write(
        &cfg,
        admin_support::config_text(dir.path(), &key, &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    for args in [
        vec!["history", "acme"],
        vec!["users", "acme", "--json"],
        vec!["run-now", "acme"],
    ] {
        let o = roster(&cfg, &args).await;
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("not running"), "{err}");
        assert!(err.contains("the admin address from"), "{err}");
        assert!(stdout(&o).is_empty());
    }
    // An address given on the command line is named as such, not as the config's (review s19
    // docs F8).
    let url = format!("http://127.0.0.1:{port}");
    let o = roster(&cfg, &["history", "acme", "--admin-url", &url]).await;
    let err = stderr(&o);
    assert!(
        err.contains("given by --admin-url or ROSTER_ADMIN_URL"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_writes_json_logs_with_log_format_json() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let key = russh::keys::PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519)
        .unwrap();
    let cfg = dir.path().join("roster.toml");
    std::fs::write(
        &cfg,
        admin_support::config_text(dir.path(), &key, "127.0.0.1:0"),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--log-format", "json", "-c"])
        .arg(&cfg)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen_admin = false;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !seen_admin {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("no admin log line in time")
            .unwrap()
            .expect("serve ended early");
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        seen_admin = v["fields"]["message"] == "admin API listening";
    }
    child.kill().await.unwrap();

    let o = tokio::process::Command::new(BIN)
        .args(["serve", "--log-format", "xml", "-c"])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("xml"), "{}", stderr(&o));
}

/// A tiny webhook receiver on loopback that answers every request 500 with `body`.
async fn failing_receiver(body: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ =
                    tokio::time::timeout(std::time::Duration::from_millis(300), s.read(&mut buf))
                        .await;
                let answer = format!(
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    url
}

/// Review s16 http, F1: a tenant's file and a webhook receiver cannot drive the operator's
/// terminal. A last name with ESC and BEL sequences, and a receiver whose error body clears
/// the screen, reach `roster users`, `roster preview` and `roster webhooks` escaped
/// (`\u{1b}`), never as raw control characters; `--json` stays JSON carrying the real value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_and_receiver_text_cannot_drive_the_terminal() {
    const EVIL: &str = "Esc\u{1b}[31mRED\u{1b}]0;pwned\u{7}\u{1b}[0m";
    const RECEIVER: &str = "\u{1b}]0;owned-title\u{7}\u{1b}[2J\u{1b}[31mRECEIVER SAYS HI";
    let hook = failing_receiver(RECEIVER).await;
    let env = Env::start_edited(support::server_store::ServerStore::for_test(), |text| {
        text.replacen(
            "[[tenants]]\nid = \"beta\"",
            &format!(
                "[[tenants.webhooks]]\nurl = \"{hook}\"\nsecret = \"whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n\n[[tenants]]\nid = \"beta\""
            ),
            1,
        )
    })
    .await;
    let cfg = env.cli_config();
    let csv = format!("email,first_name,last_name\nu0@acme.example,Ana,\"{EVIL}\"\n");
    let r = env.import("acme", &csv).await;
    assert_eq!(r.counts.inserted, 1, "{:?}", r.messages);
    let raw = |o: &Output| {
        assert!(o.status.success(), "{}", stderr(o));
        assert!(
            !o.stdout.iter().any(|b| *b == 0x1b || *b == 0x07),
            "raw control characters reach the terminal: {:?}",
            stdout(o)
        );
        stdout(o)
    };

    let text = raw(&roster(&cfg, &["users", "acme"]).await);
    assert!(
        text.contains("Esc\\u{1b}[31mRED\\u{1b}]0;pwned\\u{7}"),
        "{text}"
    );
    let json = roster(&cfg, &["users", "acme", "--json"]).await;
    let users: Vec<User> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        users[0].last_name.as_deref(),
        Some(EVIL),
        "--json keeps the value"
    );

    let file = env.dir.path().join("next.csv");
    let next = format!(
        "email,first_name,last_name\nu0@acme.example,\"\u{1b}[2J\u{1b}[HCLEARED\",\"{EVIL}\"\n"
    );
    std::fs::write(&file, &next).unwrap();
    let text = raw(&roster(&cfg, &["preview", "acme", file.to_str().unwrap()]).await);
    assert!(
        text.contains("first_name: Ana → \\u{1b}[2J\\u{1b}[HCLEARED"),
        "{text}"
    );
    env.import("acme", &next).await;
    let text = raw(&roster(&cfg, &["changes", "acme"]).await);
    assert!(text.contains("\\u{1b}"), "{text}");

    // The receiver answers 500 with its text: it becomes the endpoint's last error.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let o = roster(&cfg, &["webhooks", "acme", "--json"]).await;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if v["webhooks"][0]["last_error"].is_string() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no delivery attempt: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let text = raw(&roster(&cfg, &["webhooks", "acme"]).await);
    assert!(text.contains("last error:"), "{text}");
    assert!(text.contains("\\u{1b}]0;owned-title\\u{7}"), "{text}");
}

/// The `seq` of the next JSON line the follower prints.
async fn next_seq(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> u64 {
    let line = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
        .await
        .expect("an entry in time")
        .unwrap()
        .expect("the follower ended");
    serde_json::from_str::<serde_json::Value>(&line).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

/// Review s16 http, F8: `roster changes --follow` keeps running while the server restarts: it
/// says so once on stderr, and after the restart prints the entries that came meanwhile, from
/// where it was. A refused token ends it at once (waiting would not fix it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_follow_outlives_a_server_restart_but_not_a_wrong_token() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut env = Env::start().await;
    let cfg = env.cli_config();
    let addr = env.server().admin.addr.to_string();
    env.import("acme", &users_csv(0, 2)).await;
    let mut follower = tokio::process::Command::new(BIN)
        .arg("-c")
        .arg(&cfg)
        .args(["changes", "acme", "--follow", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(follower.stdout.take().unwrap()).lines();
    assert_eq!(
        (next_seq(&mut lines).await, next_seq(&mut lines).await),
        (1, 2)
    );

    // The server goes away for a few polls, then comes back on the same address.
    env.stop().await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let text = admin_support::config_text(env.dir.path(), &env.key, &addr)
        + &env.store_under_test.config_section();
    std::fs::write(&env.config_path, text).unwrap();
    env.server = Some(roster::serve::start(&env.config_path).await.unwrap());
    env.import("acme", &users_csv(0, 3)).await;
    assert_eq!(
        next_seq(&mut lines).await,
        3,
        "the entry made after the restart, nothing twice"
    );
    assert!(follower.try_wait().unwrap().is_none(), "still following");
    follower.start_kill().unwrap();
    let _ = follower.wait().await;
    let mut err = String::new();
    follower
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert_eq!(
        err.matches("still following").count(),
        1,
        "reported once: {err}"
    );
    assert!(err.contains("not running"), "{err}");
    assert!(err.contains("answers again; following from seq 2"), "{err}");

    // A wrong token: the follower ends at once, with the reason.
    let wrong = env.dir.path().join("wrong.toml");
    let text = admin_support::config_text(env.dir.path(), &env.key, &addr).replace(
        admin_support::TOKEN,
        "not-the-token-of-this-server-0123456789abcdef",
    );
    std::fs::write(&wrong, text).unwrap();
    let o = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        roster(&wrong, &["changes", "acme", "--follow"]),
    )
    .await
    .expect("a refused token ends --follow");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("refused the admin token"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_run_a_newer_file_set_aside_is_not_shown_as_waiting() {
    // review s19 docs F1: the history kept offering `roster approve` for it.
    let env = Env::start().await;
    env.import("acme", &users_csv(0, 10)).await;
    let old = env.import("acme", &users_csv(0, 2)).await;
    let new = env.import("acme", &users_csv(0, 3)).await;
    assert_eq!(
        (old.status, new.status),
        (ImportStatus::Held, ImportStatus::Held)
    );

    let api = env.get("/api/tenants/acme/imports").await.json;
    let waiting = |id: &str| {
        let r = api.as_array().unwrap().iter().find(|r| r["id"] == id);
        r.unwrap()["awaiting_approval"].clone()
    };
    assert_eq!(waiting(&old.id), false);
    assert_eq!(waiting(&new.id), true);
    let one = env
        .get(&format!("/api/tenants/acme/imports/{}", old.id))
        .await;
    assert_eq!(one.json["awaiting_approval"], false, "{}", one.text);
    let applied = api.as_array().unwrap().last().unwrap();
    assert!(
        applied.get("awaiting_approval").is_none(),
        "only on held runs"
    );

    let cfg = env.cli_config();
    let text = stdout(&roster(&cfg, &["history", "acme"]).await);
    let line = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(id))
            .unwrap()
            .to_string()
    };
    assert!(line(&old.id).contains("set aside"), "{text}");
    assert!(line(&new.id).contains("held"), "{text}");
    assert!(
        text.contains(&format!("roster approve acme {}", new.id)),
        "{text}"
    );
    assert!(
        !text.contains(&format!("roster approve acme {}", old.id)),
        "{text}"
    );
    let today = stdout(&roster(&cfg, &["today", "acme"]).await);
    assert!(today.contains("set aside"), "{today}");
    let json = stdout(&roster(&cfg, &["history", "acme", "--json"]).await);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json[1]["id"], old.id.as_str());
    assert_eq!(json[1]["awaiting_approval"], false);
    assert_eq!(json[0]["awaiting_approval"], true);
}
