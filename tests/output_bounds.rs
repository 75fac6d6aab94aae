//! What a run writes is bounded by what it read, over a real server and a real SFTP upload: the
//! history record (and the admin API that shows it), the failure report, the report mail.
//! Also the report's formula escaping (TAB, CR) and a header that names two columns.

mod support;

use roster::model::{ImportRecord, ImportStatus};
use roster::serve::RunningServer;
use russh::keys::PrivateKey;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::sftp::{eventually, Client, Login};

const TOKEN: &str = "output-bounds-token-5d1c8e2a7f0b4d6c9e3a";

struct Env {
    dir: tempfile::TempDir,
    key: PrivateKey,
    server: Option<RunningServer>,
}

impl Env {
    /// One tenant `acme` (key login, default profile, every run mailed to the outbox folder).
    async fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519).unwrap();
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
host_keys = "{d}/host_keys"
data_dir = "{d}/data"
settle_ms = 100

[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[[tenants]]
id = "acme"
authorized_keys = ["{key}"]
notify = ["hr@acme.example"]
[tenants.import]
file = "users.csv"
report = "always"
"#,
            d = dir.path().display(),
            key = key.public_key().to_openssh().unwrap(),
        );
        let config_path = dir.path().join("roster.toml");
        std::fs::write(&config_path, text).unwrap();
        let server = Some(roster::serve::start(&config_path).await.unwrap());
        Env { dir, key, server }
    }

    fn server(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("data/tenants/acme")
    }

    /// Uploads `bytes` as users.csv and waits until the run is recorded and filed.
    async fn import(&self, bytes: &[u8]) -> ImportRecord {
        let store = &self.server().store;
        let before = store.history("acme", 1000).unwrap().len();
        let c = Client::connect(
            self.server().sftp.addr,
            "acme",
            Login::Key(Box::new(self.key.clone())),
        )
        .await
        .unwrap();
        c.put("users.csv", bytes).await.unwrap();
        let filed = support::history::wait_filed(store, "acme", before + 1, 120).await;
        assert!(filed, "the run was not filed in time");
        store.history("acme", 1).unwrap().remove(0)
    }

    /// The report files in errors/ and processed/, largest first.
    fn reports(&self) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        for folder in ["errors", "processed"] {
            let Ok(rd) = std::fs::read_dir(self.home().join(folder)) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with(".report.csv") {
                    out.push((e.path(), e.metadata().unwrap().len()));
                }
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.1));
        out
    }

    /// Waits for the `n`-th report mail in the outbox folder; returns the mails' bytes.
    async fn mails(&self, n: usize) -> Vec<Vec<u8>> {
        let dir = self.dir.path().join("data/outbox");
        let ok = eventually(30, || {
            let dir = dir.clone();
            async move { eml_files(&dir).len() >= n }
        })
        .await;
        assert!(ok, "{n} mail(s) did not arrive in {}", dir.display());
        eml_files(&dir)
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    }

    /// GET on the admin API with the token: (status, body length).
    async fn history_api_len(&self) -> (u16, usize) {
        let url = format!(
            "http://{}/api/tenants/acme/imports",
            self.server().admin.addr
        );
        tokio::task::spawn_blocking(move || {
            let mut resp = ureq::get(&url)
                .header("Authorization", format!("Bearer {TOKEN}"))
                .call()
                .unwrap();
            let status = resp.status().as_u16();
            let body = resp
                .body_mut()
                .with_config()
                .limit(1 << 30)
                .read_to_vec()
                .unwrap();
            (status, body.len())
        })
        .await
        .unwrap()
    }

    async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop(Duration::from_secs(10)).await;
        }
    }
}

fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The text of a mail with its base64 attachment decoded.
fn mail_text(bytes: &[u8]) -> String {
    let msg = mail_parser::MessageParser::default().parse(bytes).unwrap();
    let mut s = msg.body_text(0).map(|t| t.to_string()).unwrap_or_default();
    for a in msg.attachments() {
        s.push_str(&String::from_utf8_lossy(a.contents()));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_header_line_gives_a_small_record_report_and_mail() {
    let env = Env::start().await;
    // One 8 MB header cell (no delimiter), then a row.
    let mut csv = vec![b'h'; 8 << 20];
    csv.extend_from_slice(b"\nana@acme.example\n");
    let rec = env.import(&csv).await;
    assert_eq!(rec.status, ImportStatus::Error, "{:?}", rec.messages);
    let longest = rec.messages.iter().map(|m| m.chars().count()).max();
    assert!(
        longest.unwrap_or(0) <= 1001,
        "a message of {longest:?} chars"
    );
    assert!(
        rec.messages
            .iter()
            .any(|m| m.contains("a row is longer than 1 MiB")),
        "{:?}",
        rec.messages
    );
    let json = serde_json::to_vec(&rec).unwrap();
    assert!(
        json.len() < 16 << 10,
        "history record of {} bytes",
        json.len()
    );
    let (status, api_len) = env.history_api_len().await;
    assert_eq!(status, 200);
    assert!(api_len < 16 << 10, "history API answered {api_len} bytes");
    for (path, len) in env.reports() {
        assert!(len < 16 << 10, "{} is {len} bytes", path.display());
    }
    let mails = env.mails(1).await;
    assert!(
        mails[0].len() < 64 << 10,
        "a mail of {} bytes",
        mails[0].len()
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_grows_at_most_twice_the_file() {
    let env = Env::start().await;
    // 1 MB of short rows, each skipped with a reason longer than the row.
    let mut csv = b"email,first_name,last_name\n".to_vec();
    while csv.len() < 1 << 20 {
        csv.extend_from_slice(b"\"a\"b\n");
    }
    let rec = env.import(&csv).await;
    assert_eq!(rec.status, ImportStatus::Error, "{:?}", rec.messages);
    assert!(rec.counts.skipped > 100_000, "{rec:?}");
    let reports = env.reports();
    let (path, len) = reports.first().expect("a failure report");
    let bound = 2 * csv.len() as u64 + (1 << 20) + 4096;
    assert!(
        *len <= bound,
        "{} is {len} bytes for a {} byte file",
        path.display(),
        csv.len()
    );
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains("more skipped rows, not listed"),
        "the cut is said"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_too_large_to_mail_stays_in_errors_and_the_mail_says_so() {
    let env = Env::start().await;
    // About 5 MB of rows with a bad email and a long (but not cut) cell: the report is larger
    // than the 4 MiB attachment limit.
    let mut csv = b"email,first_name,last_name\n".to_vec();
    let long = "n".repeat(900);
    let mut i = 0;
    while csv.len() < 5 << 20 {
        csv.extend_from_slice(format!("not-an-email-{i},{long},Last\n").as_bytes());
        i += 1;
    }
    let rec = env.import(&csv).await;
    assert_eq!(rec.status, ImportStatus::Error, "{:?}", rec.messages);
    let reports = env.reports();
    let (path, len) = reports.first().expect("a failure report");
    assert!(
        path.starts_with(env.home().join("errors")),
        "{}",
        path.display()
    );
    assert!(*len > 4 << 20, "the report is {len} bytes");
    let mails = env.mails(1).await;
    assert!(
        mails[0].len() < 64 << 10,
        "a mail of {} bytes",
        mails[0].len()
    );
    let text = mail_text(&mails[0]);
    assert!(text.contains("too large to attach"), "{text}");
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    assert!(text.contains(&name), "the mail names {name}: {text}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_cells_starting_with_tab_or_cr_are_neutralised() {
    let env = Env::start().await;
    let csv = "email,first_name,last_name\n\
               ok@acme.example,Ok,Fine\n\
               \"\t=HYPERLINK(1)\",Tab,Row\n\
               \"\r=cmd|'/c calc'!A1\",Cr,Row\n\
               bad-email,\"\t@SUM(1)\",\"\r-2\"\n";
    let rec = env.import(csv.as_bytes()).await;
    assert_eq!(rec.status, ImportStatus::Partial, "{:?}", rec.messages);
    assert_eq!(rec.counts.skipped, 3, "{:?}", rec.messages);
    let reports = env.reports();
    let (path, _) = reports.first().expect("a failure report");
    let bytes = std::fs::read(path).unwrap();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(&bytes[3..]);
    let mut cells = Vec::new();
    for r in rdr.records() {
        let r = r.unwrap();
        cells.extend((1..r.len() - 1).map(|i| r[i].to_string()));
    }
    let risky: Vec<&String> = cells
        .iter()
        .filter(|c| c.starts_with(['\t', '\r', '=', '+', '-', '@']))
        .collect();
    assert!(risky.is_empty(), "cells a spreadsheet would run: {risky:?}");
    // TAB and CR are separators too (review s29, F1): a `'` after them as well, so a
    // spreadsheet splitting on either sees no formula.
    assert!(
        cells.iter().any(|c| c.starts_with("'\t'=HYPERLINK")),
        "{cells:?}"
    );
    assert!(cells.iter().any(|c| c.starts_with("'\r'=cmd")), "{cells:?}");
    assert!(cells.iter().any(|c| c == "'\r'-2"), "{cells:?}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_columns_with_the_same_header_are_a_file_level_error() {
    let env = Env::start().await;
    let rec = env
        .import(b"email,first_name,last_name\nana@acme.example,Ana,Horvat\n")
        .await;
    assert_eq!(rec.counts.inserted, 1);
    let csv = "email,first_name,last_name,Email\nana@acme.example,Ana,Kovac,ana.k@acme.example\nbo@acme.example,Bo,Ban,bo2@acme.example\n";
    let rec = env.import(csv.as_bytes()).await;
    assert_eq!(rec.status, ImportStatus::Error, "{:?}", rec.messages);
    assert_eq!(rec.counts.inserted + rec.counts.updated, 0, "{rec:?}");
    let first = &rec.messages[0];
    assert!(
        first.contains("\"Email\"") && first.contains("columns 1, 4"),
        "{first}"
    );
    let users = env.server().store.users("acme", None).unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].last_name.as_deref(), Some("Horvat"), "unchanged");
    env.stop().await;
}
