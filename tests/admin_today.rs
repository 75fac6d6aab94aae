//! `today` (admin API, CLI) tells an operator what lies in a tenant's folder that no import
//! takes as it is, and why: a name that differs only in case, a name that does not match, a
//! temporary upload name, an upload still being written, a folder; and with a `{date}`
//! pattern, a file dated yesterday that came today is not today's file (review s18 clients
//! F3, F4). Real SFTP uploads into a whole running Roster.

#[path = "admin_support/mod.rs"]
mod admin_support;
mod support;

use admin_support::{users_csv, Env};
use russh_sftp::protocol::OpenFlags;
use serde_json::Value;
use support::sftp::{Client, Login};

/// The reason `today` gives for `name`, or None when it does not list it.
fn reason<'a>(today: &'a Value, name: &str) -> Option<&'a str> {
    let listed = today["not_imported"].as_array()?;
    let entry = listed.iter().find(|f| f["name"] == name)?;
    entry["reason"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn today_names_what_no_import_takes_and_why() {
    let env = Env::start().await;
    let first = env.get("/api/tenants/sched/today").await;
    let date = first.json["date"].as_str().unwrap().to_string();
    assert_eq!(first.json["not_imported"], serde_json::json!([]));
    let day = chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").unwrap();
    let yesterday = (day - chrono::Days::new(1)).format("%Y-%m-%d").to_string();

    let csv = users_csv(0, 3);
    env.upload("sched", &format!("HR_{date}.csv"), csv.as_bytes())
        .await;
    env.upload(
        "sched",
        &format!("hr_{}.csv", date.replace('-', "_")),
        csv.as_bytes(),
    )
    .await;
    env.upload("sched", "hr.csv.filepart", csv.as_bytes()).await;
    std::fs::create_dir(env.home("sched").join("incoming")).unwrap();
    // An upload still being written: opened, written, not closed (the session stays open).
    let writer = Client::connect(
        env.server().sftp.addr,
        "sched",
        Login::Key(Box::new(env.key.clone())),
    )
    .await
    .unwrap();
    let unfinished = format!("hr_{date}.csv");
    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
    let h = writer.open(&unfinished, flags).await.unwrap();
    writer
        .sftp
        .write(&h, 0, csv.as_bytes()[..40].to_vec())
        .await
        .unwrap();

    let t = env.get("/api/tenants/sched/today").await.json;
    assert_eq!(t["present"], false, "{t}");
    assert_eq!(t["waiting"], serde_json::json!([]), "{t}");
    assert_eq!(t["not_imported_total"], 5, "{t}");
    let says = |name: &str, text: &str| {
        let r = reason(&t, name).unwrap_or_else(|| panic!("{name} is not listed: {t}"));
        assert!(r.contains(text), "{name}: {r}");
    };
    says(&format!("HR_{date}.csv"), "in upper and lower case only");
    says(
        &format!("hr_{}.csv", date.replace('-', "_")),
        "does not match hr_{date}.csv",
    );
    says("hr.csv.filepart", "temporary upload name");
    says("incoming", "a folder");
    says(&unfinished, "upload unfinished");

    // The CLI says the same under "no file for today yet".
    let text = roster_today(&env);
    assert!(text.contains("no file for today yet"), "{text}");
    assert!(
        text.contains("In the tenant folder but not imported:"),
        "{text}"
    );
    assert!(text.contains("upload unfinished"), "{text}");

    // Yesterday's file, imported today by run-now, is not today's file.
    writer.sftp.close(&h).await.unwrap();
    std::fs::remove_file(env.home("sched").join(&unfinished)).unwrap();
    env.upload("sched", &format!("hr_{yesterday}.csv"), csv.as_bytes())
        .await;
    let run = env.post("/api/tenants/sched/run-now", None).await;
    assert_eq!(run.status, 200, "{}", run.text);
    assert_eq!(
        run.json["imports"].as_array().map(Vec::len),
        Some(1),
        "{}",
        run.text
    );
    let t = env.get("/api/tenants/sched/today").await.json;
    assert_eq!(t["present"], false, "{t}");
    assert_eq!(t["imported"], serde_json::json!([]), "{t}");
    let history = env.server().store.history("sched", 10).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].file, format!("hr_{yesterday}.csv"));
}

/// `roster today sched` against the running server, as an operator runs it.
fn roster_today(env: &Env) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roster"))
        .arg("-c")
        .arg(&env.config_path)
        .args(["today", "sched", "--admin-url", &env.admin_url()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
