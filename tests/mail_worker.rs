//! The delivery worker end to end: an in-memory [`MailQueue`] (a stand-in for the sled outbox
//! only), a real SMTP listener over TCP, and `.eml` files on disk without `[mail]`.

#[path = "support/smtp_sink.rs"]
mod smtp_sink;

use chrono::{DateTime, Utc};
use mail_parser::MessageParser;
use roster::config::MailConfig;
use roster::mail::{compose_report, Backoff, MailQueue, QueuedMail, RunSummary, Worker};
use smtp_sink::{RcptReply, SmtpSink};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
enum State {
    Pending,
    Sent,
    GaveUp(String),
}

#[derive(Debug, Clone)]
struct Entry {
    item: QueuedMail,
    next_at: DateTime<Utc>,
    last_error: String,
    state: State,
}

/// Test double for the store's outbox: a Vec behind a mutex.
#[derive(Default)]
struct MemQueue {
    entries: Mutex<Vec<Entry>>,
}

impl MemQueue {
    fn push(&self, mail: roster::mail::OutgoingMail) -> u64 {
        let mut e = self.entries.lock().expect("lock");
        let id = e.len() as u64 + 1;
        e.push(Entry {
            item: QueuedMail {
                id,
                mail,
                attempts: 0,
            },
            next_at: Utc::now(),
            last_error: String::new(),
            state: State::Pending,
        });
        id
    }

    fn get(&self, id: u64) -> Entry {
        self.entries
            .lock()
            .expect("lock")
            .iter()
            .find(|e| e.item.id == id)
            .cloned()
            .expect("entry")
    }

    fn with<T>(&self, id: u64, f: impl FnOnce(&mut Entry) -> T) -> anyhow::Result<T> {
        let mut e = self
            .entries
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let entry = e
            .iter_mut()
            .find(|e| e.item.id == id)
            .ok_or_else(|| anyhow::anyhow!("no message {id}"))?;
        Ok(f(entry))
    }
}

impl MailQueue for MemQueue {
    fn due(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<QueuedMail>> {
        let e = self
            .entries
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        Ok(e.iter()
            .filter(|e| e.state == State::Pending && e.next_at <= now)
            .map(|e| e.item.clone())
            .collect())
    }
    fn still_ours(&self, id: u64) -> anyhow::Result<bool> {
        self.with(id, |e| e.state == State::Pending)
    }
    fn mark_sent(&self, id: u64) -> anyhow::Result<()> {
        self.with(id, |e| e.state = State::Sent)
    }
    fn defer(
        &self,
        id: u64,
        attempts: u32,
        next_at: DateTime<Utc>,
        last_error: &str,
    ) -> anyhow::Result<()> {
        self.with(id, |e| {
            e.item.attempts = attempts;
            e.next_at = next_at;
            e.last_error = last_error.to_string();
        })
    }
    fn give_up(&self, id: u64, reason: &str) -> anyhow::Result<()> {
        self.with(id, |e| e.state = State::GaveUp(reason.to_string()))
    }
    fn narrow(&self, id: u64, recipients: &[String]) -> anyhow::Result<()> {
        self.with(id, |e| e.item.mail.to = recipients.to_vec())
    }
}

fn mail_to(to: &str) -> roster::mail::OutgoingMail {
    let run = RunSummary {
        tenant: "acme".into(),
        file: "users.csv".into(),
        status: "held".into(),
        import_id: Some("9".into()),
        ..RunSummary::default()
    };
    compose_report("Roster <roster@example.com>", &[to.to_string()], &run).expect("compose")
}

fn smtp(url: String) -> Option<MailConfig> {
    Some(MailConfig {
        smtp_url: url,
        from: "Roster <roster@example.com>".into(),
    })
}

const FAST: Backoff = Backoff {
    first: Duration::from_millis(100),
    max: Duration::from_millis(300),
};

/// Runs the worker in the background; the returned sender stops it.
fn spawn(worker: Worker, wake: Arc<Notify>) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(worker.run(wake, async move {
        let _ = stopped.await;
    }));
    (stop, handle)
}

/// Polls `cond` until it holds or `WAIT` passes.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn smtp_down_then_up_defers_then_delivers() {
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        l.local_addr().expect("addr")
    }; // released: nothing listens there now
    let queue = Arc::new(MemQueue::default());
    let id = queue.push(mail_to("it@acme.example"));
    let wake = Arc::new(Notify::new());
    let worker = Worker::new(
        queue.clone(),
        smtp(format!("smtp://{addr}")),
        "unused".into(),
    )
    .backoff(FAST)
    .poll_interval(Duration::from_millis(100));
    let (stop, handle) = spawn(worker, wake.clone());

    eventually("two failed attempts while SMTP is down", || {
        queue.get(id).item.attempts >= 2
    })
    .await;
    let e = queue.get(id);
    assert_eq!(e.state, State::Pending, "still queued, not given up");
    assert!(e.last_error.contains("unavailable"), "{}", e.last_error);

    let sink = SmtpSink::start_on(addr)
        .await
        .expect("sink on the same port");
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "delivered once the server is up");
    assert_eq!(got[0].rcpt_to, ["it@acme.example"]);
    eventually("marked sent", || queue.get(id).state == State::Sent).await;
    let msg = MessageParser::default()
        .parse(&got[0].data)
        .expect("parses");
    assert_eq!(msg.subject(), Some("Roster: acme users.csv held"));

    let _ = stop.send(());
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("worker stops on shutdown")
        .expect("worker task");
    assert_eq!(sink.received().len(), 1, "sent exactly once");
}

#[tokio::test]
async fn rejected_550_gives_up_and_others_still_go_out() {
    let sink = SmtpSink::start().await.expect("sink");
    sink.reply_to_rcpt("gone@acme.example", RcptReply::Reject);
    let queue = Arc::new(MemQueue::default());
    let bad = queue.push(mail_to("gone@acme.example"));
    let good = queue.push(mail_to("it@acme.example"));
    let worker = Worker::new(queue.clone(), smtp(sink.url()), "unused".into()).backoff(FAST);

    let report = worker.step(Utc::now()).await;
    assert_eq!((report.sent, report.deferred, report.given_up), (1, 0, 1));
    match queue.get(bad).state {
        State::GaveUp(reason) => assert!(reason.contains("550"), "{reason}"),
        other => panic!("expected give-up, got {other:?}"),
    }
    assert_eq!(queue.get(good).state, State::Sent);
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_to, ["it@acme.example"]);
    // Given up means never offered again.
    let again = worker.step(Utc::now()).await;
    assert_eq!((again.sent, again.deferred, again.given_up), (0, 0, 0));
}

#[tokio::test]
async fn a_451_is_deferred_with_backoff_and_counted() {
    let sink = SmtpSink::start().await.expect("sink");
    sink.reply_to_rcpt("busy@acme.example", RcptReply::TryLater);
    let queue = Arc::new(MemQueue::default());
    let id = queue.push(mail_to("busy@acme.example"));
    let worker = Worker::new(queue.clone(), smtp(sink.url()), "unused".into()).backoff(FAST);

    let before = Utc::now();
    let report = worker.step(before).await;
    assert_eq!((report.sent, report.deferred, report.given_up), (0, 1, 0));
    let e = queue.get(id);
    assert_eq!(e.item.attempts, 1);
    assert!(
        e.next_at >= before + chrono::Duration::milliseconds(100),
        "{:?}",
        e.next_at
    );
    assert!(e.last_error.contains("451"), "{}", e.last_error);
    assert_eq!(report.next_due, Some(e.next_at));

    sink.reply_to_rcpt("busy@acme.example", RcptReply::Accept);
    let report = worker.step(e.next_at).await;
    assert_eq!(report.sent, 1);
    assert_eq!(queue.get(id).state, State::Sent);
}

/// Review s15 (operator F1): a recipient that defers is retried alone; the one that accepted
/// gets the report once.
#[tokio::test]
async fn a_deferring_recipient_is_retried_alone() {
    let sink = SmtpSink::start().await.expect("sink");
    sink.reply_to_rcpt("busy@acme.example", RcptReply::TryLater);
    let queue = Arc::new(MemQueue::default());
    let run = RunSummary {
        tenant: "acme".into(),
        file: "users.csv".into(),
        status: "success".into(),
        ..RunSummary::default()
    };
    let to = [
        "busy@acme.example".to_string(),
        "it@acme.example".to_string(),
    ];
    let mail = compose_report("Roster <roster@example.com>", &to, &run).expect("compose");
    let id = queue.push(mail);
    let worker = Worker::new(queue.clone(), smtp(sink.url()), "unused".into()).backoff(FAST);
    let report = worker.step(Utc::now()).await;
    assert_eq!((report.sent, report.deferred), (0, 1));
    assert_eq!(queue.get(id).item.mail.to, ["busy@acme.example"]);
    sink.reply_to_rcpt("busy@acme.example", RcptReply::Accept);
    for _ in 0..3 {
        worker.step(queue.get(id).next_at).await;
    }
    assert_eq!(queue.get(id).state, State::Sent);
    let mut got: Vec<String> = (sink.received().iter())
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    got.sort();
    assert_eq!(got, ["busy@acme.example", "it@acme.example"], "each once");
}

/// A message that keeps failing for a reason that may pass is given up after the last attempt
/// (review of 2026-11-30, config F5: it was retried for ever, the outbox growing without bound).
#[tokio::test]
async fn a_message_that_keeps_failing_is_given_up_after_the_last_attempt() {
    let sink = SmtpSink::start().await.expect("sink");
    sink.reply_to_rcpt("full@acme.example", RcptReply::TryLater);
    let queue = Arc::new(MemQueue::default());
    let id = queue.push(mail_to("full@acme.example"));
    let worker = Worker::new(queue.clone(), smtp(sink.url()), "unused".into())
        .backoff(FAST)
        .max_attempts(3);
    for attempt in 1..=2 {
        let next = queue.get(id).next_at;
        let report = worker.step(next).await;
        assert_eq!(
            (report.deferred, report.given_up),
            (1, 0),
            "attempt {attempt}"
        );
    }
    let report = worker.step(queue.get(id).next_at).await;
    assert_eq!((report.sent, report.deferred, report.given_up), (0, 0, 1));
    match queue.get(id).state {
        State::GaveUp(why) => {
            assert!(why.contains("after 3 attempts"), "{why}");
            assert!(why.contains("451"), "{why}");
        }
        other => panic!("not given up: {other:?}"),
    }
}

#[tokio::test]
async fn wake_sends_a_new_message_without_waiting_for_the_poll() {
    let sink = SmtpSink::start().await.expect("sink");
    let queue = Arc::new(MemQueue::default());
    let wake = Arc::new(Notify::new());
    let worker = Worker::new(queue.clone(), smtp(sink.url()), "unused".into())
        .poll_interval(Duration::from_secs(3600));
    let (stop, handle) = spawn(worker, wake.clone());
    // Let the first (empty) pass happen, then queue and wake.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let id = queue.push(mail_to("it@acme.example"));
    wake.notify_one();
    assert_eq!(sink.wait_for(1, WAIT).await.len(), 1);
    eventually("marked sent", || queue.get(id).state == State::Sent).await;
    let _ = stop.send(());
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("worker stops")
        .expect("worker task");
}

#[tokio::test]
async fn without_mail_config_an_eml_file_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = dir.path().join("data").join("outbox");
    let queue = Arc::new(MemQueue::default());
    let mail = mail_to("it@acme.example");
    let id = queue.push(mail.clone());
    let wake = Arc::new(Notify::new());
    let worker = Worker::new(queue.clone(), None, outbox.clone());
    let (stop, handle) = spawn(worker, wake);

    eventually("marked sent", || queue.get(id).state == State::Sent).await;
    let files: Vec<_> = std::fs::read_dir(&outbox)
        .expect("outbox exists")
        .map(|e| e.expect("dir entry").path())
        .collect();
    assert_eq!(files.len(), 1, "one file, no temporary left: {files:?}");
    let name = files[0]
        .file_name()
        .and_then(|n| n.to_str())
        .expect("utf-8 name")
        .to_string();
    assert!(name.ends_with(".eml") && name.contains("-acme-"), "{name}");
    let bytes = std::fs::read(&files[0]).expect("read eml");
    assert_eq!(bytes, mail.bytes);
    let msg = MessageParser::default().parse(&bytes).expect("parses");
    assert_eq!(msg.subject(), Some("Roster: acme users.csv held"));
    assert!(msg
        .body_text(0)
        .expect("body")
        .contains("`roster approve acme 9`"));

    let _ = stop.send(());
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("worker stops")
        .expect("worker task");
}

/// Two messages get two files; the same message written again (its "sent" mark lost to a
/// kill, so the worker tries again after a restart) keeps its one file (CI of s23: a kill
/// right after an .eml was written made a fourth mail for three runs).
#[test]
fn write_eml_names_files_uniquely_and_writes_a_message_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mail = mail_to("it@acme.example");
    let a = roster::mail::write_eml(dir.path(), &mail, 7).expect("first");
    let b = roster::mail::write_eml(dir.path(), &mail, 8).expect("second");
    assert_ne!(a, b);
    let again = roster::mail::write_eml(dir.path(), &mail, 7).expect("again");
    assert_eq!(again, a);
    assert_eq!(std::fs::read_dir(dir.path()).expect("read dir").count(), 2);
}

/// Outbox ids repeat after `migrate-store` or a store restored from a backup: another mail
/// under an id an older file has is written, not taken for that file (reviewer s28: it was
/// marked sent and never written).
#[test]
fn write_eml_writes_another_mail_under_a_repeated_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = mail_to("it@acme.example");
    let new = mail_to("hr@acme.example");
    assert_ne!(old.bytes, new.bytes);
    let a = roster::mail::write_eml(dir.path(), &old, 7).expect("old");
    let b = roster::mail::write_eml(dir.path(), &new, 7).expect("new");
    assert_ne!(a, b);
    assert_eq!(std::fs::read(&b).expect("read new"), new.bytes);
    assert_eq!(std::fs::read(&a).expect("read old"), old.bytes);
    // And the new one, written again, is still one file.
    let again = roster::mail::write_eml(dir.path(), &new, 7).expect("again");
    assert_eq!(again, b);
    assert_eq!(std::fs::read_dir(dir.path()).expect("read dir").count(), 2);
}
