//! Review s30: what the delivery does when the relay itself misbehaves, against a scripted SMTP
//! server over real TCP (a refused AUTH or sender, a refusing greeting, a slow final reply, a
//! flood without newline, no SMTPUTF8), with the real sled outbox behind the worker; plus the
//! `smtp_url` rules of the config, the settling of a delivery when the outbox stumbles, and the
//! modes of `.eml` files.

#[path = "support/smtp_sink.rs"]
mod smtp_sink;

use chrono::{DateTime, Utc};
use roster::config::{Config, MailConfig};
use roster::mail::{
    compose_notice, deliver_with_timeout, DeliveryError, MailQueue, OutgoingMail, QueuedMail,
    Worker,
};
use roster::store::Store;
use smtp_sink::SmtpSink;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const FROM: &str = "Roster <roster@example.com>";
const WAIT: Duration = Duration::from_secs(5);

/// How the scripted relay answers.
#[derive(Clone)]
struct Script {
    greeting: &'static str,
    auth: &'static str,
    mail_from: &'static str,
    final_delay: Duration,
    /// After the greeting, sends this many bytes without a newline, then waits.
    flood: usize,
    smtputf8: bool,
    /// Answers 550 to this recipient.
    reject: &'static str,
    /// When not empty, the answer to every RCPT.
    rcpt: &'static str,
    /// Closes the connection after accepting a message.
    close_after_message: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            greeting: "220 relay.test ESMTP",
            auth: "235 2.7.0 Authentication successful",
            mail_from: "250 2.1.0 OK",
            final_delay: Duration::ZERO,
            flood: 0,
            smtputf8: true,
            reject: "",
            rcpt: "",
            close_after_message: false,
        }
    }
}

/// A scripted SMTP relay on 127.0.0.1; counts the messages it accepted and who they went to.
struct Relay {
    url: String,
    accepted: Arc<Mutex<Vec<Vec<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    async fn start(script: Script, user: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let acc = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (script, acc) = (script.clone(), acc.clone());
                tokio::spawn(async move {
                    let _ = session(stream, script, acc).await;
                });
            }
        });
        Relay {
            url: format!("smtp://{user}127.0.0.1:{}", addr.port()),
            accepted,
            task,
        }
    }

    fn accepted(&self) -> Vec<Vec<String>> {
        self.accepted.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

async fn session(
    stream: tokio::net::TcpStream,
    script: Script,
    accepted: Arc<Mutex<Vec<Vec<String>>>>,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    wr.write_all(format!("{}\r\n", script.greeting).as_bytes())
        .await?;
    if script.flood > 0 {
        wr.write_all(&vec![b'x'; script.flood]).await?;
        tokio::time::sleep(Duration::from_secs(60)).await;
        return Ok(());
    }
    let mut rcpts = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if rd.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") {
            let utf8 = if script.smtputf8 {
                "250-SMTPUTF8\r\n"
            } else {
                ""
            };
            format!("250-relay.test\r\n{utf8}250-8BITMIME\r\n250 AUTH PLAIN LOGIN")
        } else if upper.starts_with("AUTH") {
            script.auth.to_string()
        } else if upper.starts_with("MAIL FROM") {
            rcpts.clear();
            script.mail_from.to_string()
        } else if upper.starts_with("RCPT TO") {
            let rcpt = line[8..].trim().trim_matches(['<', '>']).to_string();
            if !script.rcpt.is_empty() {
                script.rcpt.to_string()
            } else if !script.reject.is_empty() && rcpt == script.reject {
                "550 5.1.1 No such user".into()
            } else {
                rcpts.push(rcpt);
                "250 2.1.5 OK".into()
            }
        } else if upper.starts_with("DATA") {
            wr.write_all(b"354 go ahead\r\n").await?;
            loop {
                line.clear();
                if rd.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" {
                    break;
                }
            }
            tokio::time::sleep(script.final_delay).await;
            if let Ok(mut a) = accepted.lock() {
                a.push(std::mem::take(&mut rcpts));
            }
            if script.close_after_message {
                wr.write_all(b"250 2.0.0 queued\r\n").await?;
                return Ok(());
            }
            "250 2.0.0 queued".into()
        } else if upper.starts_with("QUIT") {
            wr.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            "250 OK".into()
        };
        wr.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}

fn notice(to: &[&str], subject: &str) -> OutgoingMail {
    let to: Vec<String> = to.iter().map(|s| s.to_string()).collect();
    compose_notice(FROM, &to, "acme", subject, "A run report.\n").expect("compose")
}

fn mail_config(url: &str) -> Option<MailConfig> {
    Some(MailConfig {
        smtp_url: url.to_string(),
        from: FROM.to_string(),
    })
}

/// A sled store with three queued messages.
fn store_with_three() -> (Arc<Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(dir.path()).expect("store"));
    for n in 1..=3 {
        let m = notice(&["it@acme.example"], &format!("report {n}"));
        store.outbox_push(&m.to, &m.bytes).expect("push");
    }
    (store, dir)
}

/// A relay problem at any step before the recipients (a wrong password, a refused sender, a
/// refusing greeting) gave every queued message up at its first attempt, deleting them all.
async fn relay_problem_keeps_every_message(script: Script, user: &str) {
    let (store, dir) = store_with_three();
    let bad = Relay::start(script, user).await;
    let worker = Worker::new(
        store.clone(),
        mail_config(&bad.url),
        dir.path().join("outbox"),
    )
    .smtp_timeout(Duration::from_secs(2));
    let report = worker.step(Utc::now()).await;
    assert_eq!(report.given_up, 0, "{report:?}");
    assert_eq!(report.deferred, 3, "{report:?}");
    assert!(bad.accepted().is_empty());
    let later = Utc::now() + chrono::Duration::hours(1);
    let left = store.outbox_due(later).expect("due");
    assert_eq!(left.len(), 3, "every message is kept");
    assert!(
        left.iter().all(|m| m.attempts == 1),
        "deferred with backoff"
    );

    // The relay is fixed (a reload of smtp_url): every message goes out.
    let good = Relay::start(Script::default(), user).await;
    let worker = Worker::new(
        store.clone(),
        mail_config(&good.url),
        dir.path().join("outbox"),
    );
    let report = worker.step(later).await;
    assert_eq!(report.sent, 3, "{report:?}");
    assert_eq!(good.accepted().len(), 3);
    assert!(store.outbox_due(later).expect("due").is_empty());
}

#[tokio::test]
async fn a_refused_password_keeps_every_queued_message() {
    let script = Script {
        auth: "535 5.7.8 Authentication credentials invalid",
        ..Script::default()
    };
    relay_problem_keeps_every_message(script, "roster:wrong@").await;
}

#[tokio::test]
async fn a_refused_sender_keeps_every_queued_message() {
    let script = Script {
        mail_from: "530 5.7.0 Must issue a STARTTLS command first",
        ..Script::default()
    };
    relay_problem_keeps_every_message(script, "").await;
}

#[tokio::test]
async fn a_refusing_greeting_keeps_every_queued_message() {
    let script = Script {
        greeting: "554 5.7.1 no service for you",
        ..Script::default()
    };
    relay_problem_keeps_every_message(script, "").await;
}

/// A relay that refuses every recipient for its own policy (it wants a login, or does not
/// relay for these addresses) is a relay setting too (review s30).
#[tokio::test]
async fn a_relay_refusing_to_relay_keeps_every_queued_message() {
    let script = Script {
        rcpt: "554 5.7.1 <it@acme.example>: Relay access denied",
        ..Script::default()
    };
    relay_problem_keeps_every_message(script, "").await;
}

#[tokio::test]
async fn a_refused_password_is_a_relay_problem_not_the_messages() {
    let relay = Relay::start(
        Script {
            auth: "535 5.7.8 Authentication credentials invalid",
            ..Script::default()
        },
        "roster:wrong@",
    )
    .await;
    let err = deliver_with_timeout(&relay.url, &notice(&["it@acme.example"], "x"), WAIT)
        .await
        .expect_err("535");
    assert!(matches!(err, DeliveryError::Unavailable(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("AUTH") && text.contains("535"), "{text}");
    assert!(!text.contains("wrong"), "the password is not shown: {text}");
}

#[tokio::test]
async fn a_slow_final_reply_is_waited_for() {
    // One limit covered the upload and the final reply: a relay scanning the message for
    // longer got it again at every retry.
    let relay = Relay::start(
        Script {
            final_delay: Duration::from_millis(1500),
            ..Script::default()
        },
        "",
    )
    .await;
    let timeout = Duration::from_millis(300);
    deliver_with_timeout(&relay.url, &notice(&["it@acme.example"], "x"), timeout)
        .await
        .expect("the final reply came within FINAL_REPLY_WAIT");
    assert_eq!(relay.accepted().len(), 1);
}

#[tokio::test]
async fn a_reply_without_end_is_cut_off_long_before_the_timeout() {
    // lettre reads a reply line until its newline: this grew memory until the send timeout.
    let relay = Relay::start(
        Script {
            flood: 4 << 20,
            ..Script::default()
        },
        "",
    )
    .await;
    let started = Instant::now();
    let err = deliver_with_timeout(
        &relay.url,
        &notice(&["it@acme.example"], "x"),
        Duration::from_secs(8),
    )
    .await
    .expect_err("flood");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("KiB"), "{err}");
}

#[tokio::test]
async fn a_non_ascii_address_without_smtputf8_is_refused_for_that_recipient_only() {
    // It was an outage: retried for three days, holding the others' mail in each pass.
    let relay = Relay::start(
        Script {
            smtputf8: false,
            ..Script::default()
        },
        "",
    )
    .await;
    let alone = notice(&["it@müller.example"], "x");
    let err = deliver_with_timeout(&relay.url, &alone, WAIT)
        .await
        .expect_err("no SMTPUTF8");
    assert!(matches!(err, DeliveryError::Permanent(_)), "{err:?}");
    assert!(err.to_string().contains("SMTPUTF8"), "{err}");

    let both = notice(&["it@müller.example", "hr@acme.example"], "y");
    deliver_with_timeout(&relay.url, &both, WAIT)
        .await
        .expect("the ASCII recipient has it");
    assert_eq!(relay.accepted(), [vec!["hr@acme.example".to_string()]]);
}

#[tokio::test]
async fn a_session_the_relay_closed_is_not_taken_for_a_refused_sender() {
    // The session is kept between recipients tried one by one; a relay that hangs up after
    // each message made the next MAIL FROM fail, which reads as a relay problem.
    let relay = Relay::start(
        Script {
            reject: "gone@acme.example",
            close_after_message: true,
            ..Script::default()
        },
        "",
    )
    .await;
    let mail = notice(
        &["it@acme.example", "gone@acme.example", "hr@acme.example"],
        "x",
    );
    deliver_with_timeout(&relay.url, &mail, WAIT)
        .await
        .expect("delivered to the two that exist");
    let mut got: Vec<String> = relay.accepted().into_iter().flatten().collect();
    got.sort();
    assert_eq!(got, ["hr@acme.example", "it@acme.example"]);
}

/// Review s30: a relay session that can be stripped of TLS, or a password sent in clear text
/// over the network, is refused when the config is read.
#[test]
fn smtp_urls_that_expose_the_session_are_refused() {
    let problems = |url: &str| {
        let text = format!(
            "[mail]\nsmtp_url = \"{url}\"\nfrom = \"{FROM}\"\n[[tenants]]\nid = \"acme\"\n\
             password_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0XSsfOIUbEVJFH1EkHwIqJ5NV+nZFzs1OHp9Fk1dcWs\"\n"
        );
        Config::parse(&text).err().unwrap_or_default()
    };
    let p = problems("smtp://relay.example:587?tls=opportunistic");
    assert!(
        p.iter().any(|p| p.contains("tls=opportunistic is refused")),
        "{p:?}"
    );
    let p = problems("smtp://roster:S3cret@relay.example:25");
    assert!(p.iter().any(|p| p.contains("clear text")), "{p:?}");
    assert!(p.iter().all(|p| !p.contains("S3cret")), "{p:?}");
    for fine in [
        "smtp://roster:S3cret@relay.example:587?tls=required",
        "smtps://roster:S3cret@relay.example",
        "smtp://roster:S3cret@127.0.0.1:2525",
        "smtp://roster:S3cret@localhost:25",
        "smtp://relay.example:25",
    ] {
        assert_eq!(problems(fine), Vec::<String>::new(), "{fine}");
    }
}

/// The real outbox, with `mark_sent` and `narrow` failing the first `fail` times each.
struct Stumbling {
    store: Arc<Store>,
    fail: AtomicUsize,
    narrow_fail: AtomicUsize,
    deferred: AtomicUsize,
}

impl MailQueue for Stumbling {
    fn due(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<QueuedMail>> {
        self.store.due(now)
    }
    fn still_ours(&self, id: u64) -> anyhow::Result<bool> {
        self.store.still_ours(id)
    }
    fn mark_sent(&self, id: u64) -> anyhow::Result<()> {
        if self.fail.load(Ordering::SeqCst) > 0 {
            self.fail.fetch_sub(1, Ordering::SeqCst);
            anyhow::bail!("the store did not answer");
        }
        MailQueue::mark_sent(self.store.as_ref(), id)
    }
    fn defer(&self, id: u64, a: u32, next: DateTime<Utc>, why: &str) -> anyhow::Result<()> {
        self.deferred.fetch_add(1, Ordering::SeqCst);
        self.store.defer(id, a, next, why)
    }
    fn give_up(&self, id: u64, reason: &str) -> anyhow::Result<()> {
        self.store.give_up(id, reason)
    }
    fn narrow(&self, id: u64, recipients: &[String]) -> anyhow::Result<()> {
        if self.narrow_fail.load(Ordering::SeqCst) > 0 {
            self.narrow_fail.fetch_sub(1, Ordering::SeqCst);
            anyhow::bail!("the store did not answer");
        }
        self.store.narrow(id, recipients)
    }
}

#[tokio::test]
async fn a_failed_sent_mark_is_tried_again() {
    // It was only logged: the message went out again once the claim ended.
    let (store, dir) = store_with_three();
    let queue = Arc::new(Stumbling {
        store: store.clone(),
        fail: AtomicUsize::new(2),
        narrow_fail: AtomicUsize::new(0),
        deferred: AtomicUsize::new(0),
    });
    let sink = SmtpSink::start().await.expect("sink");
    let worker = Worker::new(queue, mail_config(&sink.url()), dir.path().join("outbox"));
    let report = worker.step(Utc::now()).await;
    assert_eq!(report.sent, 3, "{report:?}");
    assert_eq!(sink.wait_for(3, WAIT).await.len(), 3);
    let later = Utc::now() + chrono::Duration::days(1);
    assert!(
        store.outbox_due(later).expect("due").is_empty(),
        "every delivered message is marked sent"
    );
}

#[tokio::test]
async fn a_narrow_that_fails_for_good_is_not_followed_by_a_defer() {
    // Deferring the whole envelope sent the message again to the recipients that had it.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(dir.path()).expect("store"));
    let m = notice(&["it@acme.example", "full@acme.example"], "r");
    store.outbox_push(&m.to, &m.bytes).expect("push");
    let sink = SmtpSink::start().await.expect("sink");
    sink.reply_to_rcpt("full@acme.example", smtp_sink::RcptReply::TryLater);
    let queue = Arc::new(Stumbling {
        store: store.clone(),
        fail: AtomicUsize::new(0),
        narrow_fail: AtomicUsize::new(100),
        deferred: AtomicUsize::new(0),
    });
    let worker = Worker::new(
        queue.clone(),
        mail_config(&sink.url()),
        dir.path().join("outbox"),
    );
    worker.step(Utc::now()).await;
    assert_eq!(sink.wait_for(1, WAIT).await.len(), 1);
    assert_eq!(queue.deferred.load(Ordering::SeqCst), 0, "not deferred");
}

#[test]
fn eml_files_and_their_folder_are_the_owners_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = dir.path().join("outbox");
    std::fs::create_dir(&outbox).expect("mkdir");
    std::fs::set_permissions(&outbox, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path =
        roster::mail::write_eml(&outbox, &notice(&["it@acme.example"], "x"), 1).expect("write");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&outbox), 0o700);
    let fresh = dir.path().join("new/outbox");
    roster::mail::write_eml(&fresh, &notice(&["it@acme.example"], "x"), 2).expect("write");
    assert_eq!(mode(&fresh), 0o700);
}
