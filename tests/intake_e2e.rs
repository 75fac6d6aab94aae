//! The whole pipeline end to end: a real SFTP client uploads, the real server imports, files
//! the upload away, records the run and sends mail to a real SMTP listener.

mod support;

use roster::model::ImportStatus;
use russh::keys::PrivateKey;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use std::path::Path;
use std::time::Duration;
use support::pipeline::Pipeline as Env;
use support::sftp::eventually;
use support::smtp_sink::SmtpSink;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join(name)).unwrap()
}

fn config(dir: &Path, key: &PrivateKey, smtp_url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
host_keys = "{dir}/host_keys"
data_dir = "{dir}/data"
settle_ms = 200

[admin]
listen = "127.0.0.1:0"

[mail]
smtp_url = "{smtp_url}"
from = "Roster <roster@test.example>"

[[tenants]]
id = "cdp"
authorized_keys = ["{key}"]
notify = ["it@cdp.example"]
[tenants.import]
file = "userdata_*.csv"
match_by = "mapping_code"
[tenants.import.columns]
mapping_code = "userId"
first_name = "name"
last_name = "lastName"
email = "email"
"custom.city" = "city"

[[tenants]]
id = "sched"
authorized_keys = ["{key}"]
notify = ["hr@sched.example"]
[tenants.import]
file = "hr_{{date}}.csv"
trigger = "schedule"
schedule = "*/2 * * * * *"

[[tenants]]
id = "today"
authorized_keys = ["{key}"]
notify = ["hr@today.example"]
[tenants.import]
file = "users_{{date}}.csv"
date_format = "%Y-%m-%d"
only_today = true
"#,
        dir = dir.display(),
        key = key.public_key().to_openssh().unwrap(),
    )
}

/// The pipeline with this file's config (`config`), on sled or the test's own PostgreSQL.
async fn start(smtp_url: &str) -> Env {
    Env::start(|dir, key| config(dir, key, smtp_url)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixture_upload_is_imported_filed_and_mailed() {
    let smtp = SmtpSink::start().await.unwrap();
    let env = start(&smtp.url()).await;
    let c = env.client("cdp").await;
    c.put(
        "userdata_2026-11-21.csv",
        &fixture("userdata_2026-11-21.csv"),
    )
    .await
    .unwrap();
    // paramiko/WinSCP STAT right after CLOSE: the file is still there during the settle time.
    assert!(c.sftp.stat("userdata_2026-11-21.csv").await.is_ok());

    let h = env.history_len("cdp", 1, 20).await;
    assert_eq!(h.len(), 1);
    let r = &h[0];
    assert_eq!(r.status, ImportStatus::Partial);
    assert_eq!((r.counts.inserted, r.counts.skipped), (1, 3));
    let archived = r.archived_as.clone().unwrap();
    assert!(
        archived.starts_with("processed/userdata_2026-11-21."),
        "{archived}"
    );
    assert_eq!(
        std::fs::read(env.home("cdp").join(&archived)).unwrap(),
        fixture("userdata_2026-11-21.csv")
    );
    let report = r.report.clone().unwrap();
    assert!(
        report.starts_with("errors/") && report.ends_with(".report.csv"),
        "{report}"
    );
    let report_text =
        String::from_utf8(std::fs::read(env.home("cdp").join(&report)).unwrap()).unwrap();
    assert!(report_text.contains("'=HYPERLINK"), "{report_text}");
    // The upload left the root, and the tenant can read the archive.
    assert!(!env.home("cdp").join("userdata_2026-11-21.csv").exists());
    assert!(c.get(&format!("/{archived}")).await.is_ok());

    // The schedule tenant reports its file missing too, by a mail of its own: look for ours.
    let to_cdp = || {
        let got = smtp.received().into_iter();
        got.filter(|m| m.rcpt_to == ["it@cdp.example"])
            .collect::<Vec<_>>()
    };
    let arrived = eventually(20, || {
        let n = to_cdp().len();
        async move { n >= 1 }
    })
    .await;
    assert!(arrived, "no mail to the tenant: {:?}", smtp.received());
    let ours = to_cdp();
    assert_eq!(ours.len(), 1, "one mail to the tenant");
    let msg = mail_parser::MessageParser::default()
        .parse(&ours[0].data)
        .unwrap();
    assert_eq!(
        msg.subject(),
        Some("Roster: cdp userdata_2026-11-21.csv partial")
    );
    let att = msg
        .attachments()
        .next()
        .expect("the failure report is attached");
    assert_eq!(
        att.contents(),
        std::fs::read(env.home("cdp").join(&report))
            .unwrap()
            .as_slice()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn winscp_filepart_imports_once_after_the_rename() {
    let smtp = SmtpSink::start().await.unwrap();
    let env = start(&smtp.url()).await;
    let c = env.client("cdp").await;
    c.put(
        "userdata_x.csv.filepart",
        &fixture("userdata_2026-11-21.csv"),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(env.server().store.history("cdp", 10).unwrap().is_empty());
    c.sftp
        .rename("userdata_x.csv.filepart", "userdata_x.csv")
        .await
        .unwrap();
    c.sftp
        .setstat(
            "userdata_x.csv",
            FileAttributes {
                mtime: Some(1_700_000_000),
                atime: Some(1_700_000_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let h = env.history_len("cdp", 1, 20).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let h2 = env.server().store.history("cdp", 10).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h2.len(), 1, "imported more than once: {h2:?}");
    assert_eq!(h2[0].file, "userdata_x.csv");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_is_never_imported_also_after_restart() {
    let smtp = SmtpSink::start().await.unwrap();
    let mut env = start(&smtp.url()).await;
    {
        let c = env.client("cdp").await;
        let h = c
            .sftp
            .open(
                "userdata_big.csv",
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                FileAttributes::default(),
            )
            .await
            .unwrap()
            .handle;
        c.sftp
            .write(
                &h,
                0,
                b"userId,name,lastName,email\nu-1,A,B,a@b.example\n".to_vec(),
            )
            .await
            .unwrap();
        c.ssh
            .disconnect(russh::Disconnect::ByApplication, "killed", "en")
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(env.server().store.history("cdp", 10).unwrap().is_empty());
    env.restart().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(env.server().store.history("cdp", 10).unwrap().is_empty());
    assert!(
        env.home("cdp").join("userdata_big.csv").exists(),
        "the partial file is kept for a resume"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_copied_in_or_waiting_at_start_are_imported() {
    let smtp = SmtpSink::start().await.unwrap();
    let mut env = start(&smtp.url()).await;
    // Copied in locally while running: the folder watcher sees it.
    std::fs::write(
        env.home("cdp").join("userdata_local.csv"),
        "userId,name,lastName,email,city\nu-9,Ana,Horvat,ana@cdp.example,Split\n",
    )
    .unwrap();
    let h = env.history_len("cdp", 1, 20).await;
    assert_eq!(h[0].file, "userdata_local.csv");
    assert_eq!(h[0].status, ImportStatus::Success);
    // Left in the folder while stopped: imported at start.
    env.server
        .take()
        .unwrap()
        .stop(Duration::from_secs(10))
        .await;
    std::fs::write(
        env.home("cdp").join("userdata_offline.csv"),
        "userId,name,lastName,email,city\nu-10,Ivo,Ivić,ivo@cdp.example,Pula\n",
    )
    .unwrap();
    env.restart().await;
    let h = env.history_len("cdp", 2, 20).await;
    assert!(h.iter().any(|r| r.file == "userdata_offline.csv"), "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_with_no_file_records_missing_and_mails() {
    let smtp = SmtpSink::start().await.unwrap();
    let env = start(&smtp.url()).await;
    let h = env.history_len("sched", 1, 20).await;
    assert_eq!(h[0].status, ImportStatus::Missing);
    assert!(h[0].messages[0].contains("hr_"), "{:?}", h[0].messages);
    let mails = smtp.wait_for(1, Duration::from_secs(20)).await;
    let msg = mail_parser::MessageParser::default()
        .parse(&mails[0].data)
        .unwrap();
    assert!(
        msg.subject().unwrap().ends_with(" missing"),
        "{:?}",
        msg.subject()
    );
    assert_eq!(mails[0].rcpt_to, vec!["hr@sched.example".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_today_refuses_yesterdays_file_naming_the_expected_date() {
    let smtp = SmtpSink::start().await.unwrap();
    let env = start(&smtp.url()).await;
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let c = env.client("today").await;
    let name = format!("users_{yesterday}.csv");
    c.put(
        &name,
        b"email,first_name,last_name,password\na@b.example,A,B,Sup3rSecret!\n",
    )
    .await
    .unwrap();
    let h = env.history_len("today", 1, 20).await;
    assert_eq!(h[0].status, ImportStatus::Error);
    assert!(
        h[0].messages[0].contains(&format!("users_{today}.csv")),
        "{:?}",
        h[0].messages
    );
    let archived = h[0].archived_as.as_deref().unwrap();
    assert!(archived.starts_with("errors/"));
    // Not imported, yet archived like any file: without its passwords.
    let copy = std::fs::read_to_string(env.home("today").join(archived)).unwrap();
    assert!(
        copy.contains("a@b.example") && !copy.contains("Sup3rSecret!"),
        "{copy}"
    );
    assert!(env.server().store.users("today", None).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_waits_while_smtp_is_down_and_arrives_later() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let env = start(&format!("smtp://{port}")).await;
    let c = env.client("cdp").await;
    c.put("userdata_bad.csv", b"\x00\x01\x02 not a csv at all")
        .await
        .unwrap();
    let h = env.history_len("cdp", 1, 20).await;
    assert_eq!(h[0].status, ImportStatus::Error);
    assert!(env
        .files("cdp", "errors")
        .iter()
        .any(|f| f.starts_with("userdata_bad.")));
    // A file-level error has a report too: one line saying what is wrong.
    let report = h[0].report.clone().expect("an error run has a report");
    let text = std::fs::read_to_string(env.home("cdp").join(&report)).unwrap();
    assert!(text.starts_with("\u{feff}row,reason"), "{text}");
    assert!(text.lines().count() >= 2, "{text}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        env.server().store.outbox_len().unwrap() >= 1,
        "the mail waits in the outbox"
    );
    let smtp = SmtpSink::start_on(port).await.unwrap();
    // The schedule tenant mails too; look for ours.
    let ours = eventually(40, || {
        let got = smtp.received();
        async move {
            got.iter().any(|m| {
                let msg = mail_parser::MessageParser::default()
                    .parse(&m.data)
                    .unwrap();
                msg.subject() == Some("Roster: cdp userdata_bad.csv error")
            })
        }
    })
    .await;
    assert!(ours, "the error mail never arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_archive_folder_is_retried_and_nothing_is_lost() {
    let smtp = SmtpSink::start().await.unwrap();
    let env = start(&smtp.url()).await;
    // `processed` is a plain file: the archive folder cannot be created.
    std::fs::write(env.home("cdp").join("processed"), b"in the way").unwrap();
    let c = env.client("cdp").await;
    c.put(
        "userdata_retry.csv",
        b"userId,name,lastName,email\nu-1,Ana,Horvat,ana@cdp.example\n",
    )
    .await
    .unwrap();
    // The import committed, the filing failed: the file waits in its claim, not lost.
    let store = env.server().store.clone();
    let committed = eventually(20, || {
        let store = store.clone();
        async move {
            store
                .history("cdp", 10)
                .map(|h| h.len() == 1)
                .unwrap_or(false)
        }
    })
    .await;
    assert!(committed);
    let work = env.dir.path().join("data/work/cdp");
    assert!(
        claimed_still(&work, "userdata_retry.csv"),
        "the upload must wait in its claim folder"
    );
    // Let the first filing attempt fail for sure, then make the folder writable again. The
    // record was committed complete, naming where the file goes; it is not there yet.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let planned = env.server().store.history("cdp", 10).unwrap()[0]
        .archived_as
        .clone()
        .expect("the committed record names the archive");
    assert!(
        planned.starts_with("processed/userdata_retry."),
        "{planned}"
    );
    assert!(!env.home("cdp").join(&planned).exists());
    assert!(
        claimed_still(&work, "userdata_retry.csv"),
        "still waiting in its claim"
    );
    std::fs::remove_file(env.home("cdp").join("processed")).unwrap();
    let h = env.history_len("cdp", 1, 30).await;
    assert_eq!(h.len(), 1, "imported once: {h:?}");
    assert_eq!(h[0].archived_as.as_deref(), Some(planned.as_str()));
    assert!(
        env.home("cdp").join(&planned).is_file(),
        "filed exactly where the record said"
    );
    assert_eq!(env.server().store.users("cdp", None).unwrap().len(), 1);
}

/// Whether `name` waits in a claim folder under `work`.
fn claimed_still(work: &std::path::Path, name: &str) -> bool {
    std::fs::read_dir(work)
        .map(|rd| rd.flatten().any(|d| d.path().join(name).exists()))
        .unwrap_or(false)
}
