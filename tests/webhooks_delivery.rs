//! Webhook delivery against a real receiver (Python, verifying with the Standard Webhooks
//! reference library): order, signatures, message ids, retries with backoff and Retry-After,
//! 410 Gone and enabling again, timeouts, subscriptions, a new endpoint starting after the
//! newest event, and a secret rotation signed for receivers on either secret.
//!
//! The events come from a hand-built [`EventSource`] (the store writes none until the change
//! log lands); cursors and leases go through a real sled store.

#[path = "webhooks/hand_source.rs"]
#[allow(dead_code)] // each test file uses part of it
mod hand_source;
#[path = "scim_push/hostile.rs"]
mod hostile;
#[path = "webhooks/support.rs"]
mod webhooks;

use chrono::Utc;
use hand_source::{cursor, drain, endpoint, endpoint_with, pass, HandSource, TENANT};
use roster::config::WebhookConfig;
use roster::deliver::webhook::{send, EndpointDelivery, PassOutcome};
use roster::model::changelog::{ChangeKind, Cursor, EventType, LoggedChange};
use std::time::Duration;
use webhooks::{Receiver, OLD_SECRET, OTHER_SECRET, SECRET};

#[test]
fn events_arrive_in_order_signed_and_verified_with_their_data() {
    let rx = Receiver::start(SECRET);
    let src = HandSource::new();
    let hook = endpoint(&rx.url, None);
    // First sight with an empty log: it starts at the beginning.
    assert_eq!(pass(&hook, &src), PassOutcome::CaughtUp);
    src.import("imp-1", &["a@x.example", "b@x.example"]);
    src.push(EventType::FileMissing, Some("imp-2"), None);
    assert_eq!(pass(&hook, &src), PassOutcome::CaughtUp);
    let seen = rx.seen();
    let ids: Vec<&str> = seen.iter().map(|s| s.event.as_str()).collect();
    assert_eq!(ids, ["msg_acme_1", "msg_acme_2", "msg_acme_3"]);
    assert!(
        seen.iter().all(|s| s.verified && s.status == 200),
        "{seen:#?}"
    );
    let now = Utc::now().timestamp();
    assert!(seen.iter().all(|s| (now - s.timestamp).abs() < 60));
    let types: Vec<&str> = seen
        .iter()
        .map(|s| s.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["directory.changed", "import.finished", "file.missing"]
    );
    let changed = &seen[0].body["data"];
    assert_eq!(changed["tenant"], "acme");
    assert_eq!(changed["import_id"], "imp-1");
    let keys: Vec<&str> = changed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a@x.example", "b@x.example"]);
    assert_eq!(changed["changes"][0]["kind"], "created");
    assert_eq!(seen[1].body["data"]["id"], "imp-1");
    assert_eq!(seen[1].body["data"]["status"], "success");
    assert_eq!(seen[2].body["data"]["id"], "imp-2");
    assert!(seen[0].body["timestamp"].as_str().unwrap().ends_with('Z'));
    let c = cursor(&src, &rx.url);
    assert_eq!((c.position, c.attempts, c.disabled), (3, 0, false));
    assert!(c.last_success.is_some() && c.last_error.is_none());
}

#[test]
fn a_wrong_secret_fails_verification_at_the_receiver_and_is_retried() {
    let rx = Receiver::start(SECRET);
    let src = HandSource::new();
    let hook = WebhookConfig {
        url: rx.url.clone(),
        secret: "whsec_OTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTBmZWRjYmE=".into(),
        previous_secret: None,
        events: None,
    };
    let d = EndpointDelivery::new(TENANT, hook, send::agent(send::TIMEOUT)).unwrap();
    pass(&d, &src);
    src.import("imp-1", &["a@x.example"]);
    assert!(matches!(pass(&d, &src), PassOutcome::WaitUntil(_)));
    let seen = rx.seen();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].verified);
    let c = cursor(&src, &rx.url);
    assert_eq!((c.position, c.attempts), (0, 1));
    assert!(c.last_error.unwrap().contains("400"));
}

#[test]
fn failures_retry_with_backoff_and_retry_after_keeping_the_message_id() {
    let rx = Receiver::start(SECRET);
    let src = HandSource::new();
    let hook = endpoint(&rx.url, None);
    pass(&hook, &src);
    src.import("imp-1", &["a@x.example"]);
    rx.answer("500,429:2,429date:2");
    let t0 = Utc::now();
    let PassOutcome::WaitUntil(at) = pass(&hook, &src) else {
        panic!("a 500 is retried")
    };
    let wait = (at - t0).num_milliseconds();
    assert!(
        (900..=1500).contains(&wait),
        "first retry after 1 s, not {wait} ms"
    );
    let c = cursor(&src, &rx.url);
    assert_eq!((c.position, c.attempts), (0, 1));
    assert!(c
        .last_error
        .as_deref()
        .unwrap()
        .contains(&format!("{}: answered 500", rx.seen()[0].id)));
    assert_eq!(c.next_attempt, Some(at));
    // Not due yet: nothing is sent.
    assert_eq!(pass(&hook, &src), PassOutcome::WaitUntil(at));
    assert_eq!(rx.seen().len(), 1);
    std::thread::sleep((at - Utc::now()).to_std().unwrap_or_default());
    let t1 = Utc::now();
    let PassOutcome::WaitUntil(at) = pass(&hook, &src) else {
        panic!("a 429 is retried")
    };
    let wait = (at - t1).num_milliseconds();
    assert!(
        (1900..=2600).contains(&wait),
        "Retry-After: 2 honoured, not {wait} ms"
    );
    assert_eq!(cursor(&src, &rx.url).attempts, 2);
    std::thread::sleep((at - Utc::now()).to_std().unwrap_or_default());
    let PassOutcome::WaitUntil(at) = pass(&hook, &src) else {
        panic!("a 429 with a date is retried")
    };
    let wait = (at - Utc::now()).num_milliseconds();
    assert!(
        (0..=3100).contains(&wait),
        "Retry-After as a date honoured, not {wait} ms"
    );
    assert_eq!(drain(&hook, &src, 10), PassOutcome::CaughtUp);
    let seen = rx.seen();
    let got: Vec<(&str, u16)> = seen.iter().map(|s| (s.event.as_str(), s.status)).collect();
    assert_eq!(
        got,
        [
            ("msg_acme_1", 500),
            ("msg_acme_1", 429),
            ("msg_acme_1", 429),
            ("msg_acme_1", 200),
            ("msg_acme_2", 200)
        ]
    );
    assert!(seen.iter().all(|s| s.verified));
    // Every attempt at the first message carried the very same id.
    assert!(seen[..4].iter().all(|s| s.id == seen[0].id), "{seen:#?}");
    let c = cursor(&src, &rx.url);
    assert_eq!((c.position, c.attempts, c.next_attempt), (2, 0, None));
    assert!(c.last_error.is_none());
}

#[test]
fn gone_disables_the_endpoint_until_enabled_and_then_nothing_is_lost() {
    let rx = Receiver::start(SECRET);
    let src = HandSource::new();
    let d = endpoint(&rx.url, None);
    pass(&d, &src);
    src.import("imp-1", &["a@x.example"]);
    rx.answer("410");
    assert_eq!(pass(&d, &src), PassOutcome::Disabled);
    assert_eq!(pass(&d, &src), PassOutcome::Disabled);
    assert_eq!(rx.seen().len(), 1);
    let c = cursor(&src, &rx.url);
    assert!(c.disabled);
    assert_eq!(c.position, 0);
    assert!(c.last_error.unwrap().contains("410"));
    // More events wait while it is disabled.
    src.import("imp-2", &["b@x.example"]);
    assert_eq!(pass(&d, &src), PassOutcome::Disabled);
    assert_eq!(rx.seen().len(), 1);

    let enabled = roster::deliver::webhook::enable(&src, TENANT, &d.hook).unwrap();
    assert!(enabled);
    let c = cursor(&src, &rx.url);
    assert_eq!((c.disabled, c.attempts, c.position), (false, 0, 0));
    // Enabling an endpoint that is not disabled changes nothing.
    assert!(!roster::deliver::webhook::enable(&src, TENANT, &d.hook).unwrap());
    assert_eq!(cursor(&src, &rx.url), c);

    assert_eq!(pass(&d, &src), PassOutcome::CaughtUp);
    let seen = rx.seen();
    let got: Vec<(&str, u16)> = seen.iter().map(|s| (s.event.as_str(), s.status)).collect();
    assert_eq!(
        got,
        [
            ("msg_acme_1", 410),
            ("msg_acme_1", 200),
            ("msg_acme_2", 200),
            ("msg_acme_3", 200),
            ("msg_acme_4", 200)
        ]
    );
    assert!(seen.iter().all(|s| s.verified));
    assert_eq!(
        seen[0].body, seen[1].body,
        "the refused message is sent again as it was"
    );
    let c = cursor(&src, &rx.url);
    assert_eq!((c.position, c.disabled), (4, false));
    assert!(c.last_error.is_none());
    // An endpoint never seen has nothing to enable.
    let never = WebhookConfig {
        url: "http://127.0.0.1:9/never".into(),
        secret: SECRET.into(),
        previous_secret: None,
        events: None,
    };
    assert!(!roster::deliver::webhook::enable(&src, TENANT, &never).unwrap());
    assert_eq!(cursor(&src, &never.url), Cursor::default());
}

/// An endpoint with `secret` and `previous_secret`, and one with `secret` alone.
fn rotating(url: &str, previous: Option<&str>) -> EndpointDelivery {
    let hook = WebhookConfig {
        url: url.into(),
        secret: SECRET.into(),
        previous_secret: previous.map(str::to_string),
        events: None,
    };
    EndpointDelivery::new(TENANT, hook, send::agent(send::TIMEOUT)).unwrap()
}

#[test]
fn during_a_rotation_receivers_on_either_secret_verify_every_message() {
    // Three real receivers: one already on the new secret, one still on the old one, one on
    // a secret neither side uses (it must refuse, or verification proves nothing).
    let (on_new, on_old, on_other) = (
        Receiver::start(SECRET),
        Receiver::start(OLD_SECRET),
        Receiver::start(OTHER_SECRET),
    );
    let src = HandSource::new();
    let hooks: Vec<EndpointDelivery> = [&on_new, &on_old, &on_other]
        .iter()
        .map(|rx| rotating(&rx.url, Some(OLD_SECRET)))
        .collect();
    for d in &hooks {
        pass(d, &src);
    }
    src.import("imp-1", &["a@x.example", "b@x.example"]);
    assert_eq!(pass(&hooks[0], &src), PassOutcome::CaughtUp);
    assert_eq!(pass(&hooks[1], &src), PassOutcome::CaughtUp);
    assert!(matches!(pass(&hooks[2], &src), PassOutcome::WaitUntil(_)));
    for rx in [&on_new, &on_old] {
        let seen = rx.seen();
        let ids: Vec<&str> = seen.iter().map(|s| s.event.as_str()).collect();
        assert_eq!(ids, ["msg_acme_1", "msg_acme_2"]);
        assert!(
            seen.iter().all(|s| s.verified && s.status == 200),
            "{seen:#?}"
        );
        for s in &seen {
            let sigs: Vec<&str> = s.signature.split(' ').collect();
            assert_eq!(sigs.len(), 2, "{}", s.signature);
            assert!(sigs.iter().all(|g| g.starts_with("v1,")));
        }
    }
    let refused = on_other.seen();
    assert_eq!(refused.len(), 1);
    assert!(!refused[0].verified && refused[0].status == 400);

    // The rotation ends (previous_secret removed): the old secret no longer verifies.
    let after = [rotating(&on_new.url, None), rotating(&on_old.url, None)];
    src.import("imp-2", &["c@x.example"]);
    assert_eq!(pass(&after[0], &src), PassOutcome::CaughtUp);
    assert!(matches!(pass(&after[1], &src), PassOutcome::WaitUntil(_)));
    let last = on_new.seen().pop().unwrap();
    assert!(last.verified && !last.signature.contains(' '));
    let last = on_old.seen().pop().unwrap();
    assert!(!last.verified && last.status == 400);
    assert_eq!(cursor(&src, &on_old.url).position, 2);
}

#[test]
fn timeouts_and_refused_connections_are_retried() {
    let rx = Receiver::start(SECRET);
    let src = HandSource::new();
    let hook = endpoint_with(&rx.url, None, Duration::from_secs(1));
    pass(&hook, &src);
    src.import("imp-1", &["a@x.example"]);
    rx.answer("sleep:3");
    assert!(matches!(pass(&hook, &src), PassOutcome::WaitUntil(_)));
    let c = cursor(&src, &rx.url);
    assert_eq!((c.position, c.attempts), (0, 1));
    assert!(c.last_error.unwrap().contains("no answer"));
    // Nobody listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let refused = endpoint(&url, None);
    let src2 = HandSource::new();
    pass(&refused, &src2);
    src2.import("imp-1", &["a@x.example"]);
    assert!(matches!(pass(&refused, &src2), PassOutcome::WaitUntil(_)));
    let c = cursor(&src2, &url);
    assert_eq!((c.position, c.attempts), (0, 1));
    // The first receiver is delivered to once it answers again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(drain(&hook, &src, 10), PassOutcome::CaughtUp);
    assert_eq!(cursor(&src, &rx.url).position, 2);
}

/// Audit s22: a redirect was kept as "answered 307: " with nothing to act on. It is not
/// followed (the signed message is for this URL) and the error names where it points, and
/// that pointing `url` there skips the undelivered messages (audit F6).
#[test]
fn a_redirect_is_retried_and_its_error_names_the_target() {
    let moved = hostile::Hostile::start(|_, _| hostile::Answer {
        status: 307,
        headers: vec![("Location".into(), "https://new.example/hook".into())],
        body: String::new(),
    });
    let url = format!("{}/hook", moved.base);
    let hook = endpoint(&url, None);
    let src = HandSource::new();
    pass(&hook, &src);
    src.import("imp-1", &["a@x.example"]);
    assert!(matches!(pass(&hook, &src), PassOutcome::WaitUntil(_)));
    let c = cursor(&src, &url);
    assert_eq!((c.position, c.attempts), (0, 1));
    let error = c.last_error.unwrap_or_default();
    assert!(
        error.contains("307") && error.contains("https://new.example/hook"),
        "{error}"
    );
    // Audit F6: changing `url` skips what is undelivered; the error says so, not "set url".
    assert!(
        error.contains("starts after the newest event") && error.contains("not sent to it"),
        "{error}"
    );
    assert_eq!(moved.seen().len(), 1, "not followed: {:?}", moved.seen());
}

#[test]
fn unsubscribed_types_are_passed_over_and_a_new_endpoint_starts_after_the_newest() {
    let rx = Receiver::start(SECRET);
    let src = HandSource::new();
    let hook = endpoint(&rx.url, Some(&["import.finished"]));
    pass(&hook, &src);
    src.import("imp-1", &["a@x.example"]);
    src.import("imp-2", &["b@x.example"]);
    assert_eq!(pass(&hook, &src), PassOutcome::CaughtUp);
    let ids: Vec<String> = rx.seen().into_iter().map(|s| s.event).collect();
    assert_eq!(ids, ["msg_acme_2", "msg_acme_4"]);
    assert_eq!(cursor(&src, &rx.url).position, 4);
    // Another endpoint, first seen now, gets only what comes after.
    let rx2 = Receiver::start(SECRET);
    let late = endpoint(&rx2.url, None);
    assert_eq!(pass(&late, &src), PassOutcome::CaughtUp);
    assert!(rx2.seen().is_empty());
    assert_eq!(cursor(&src, &rx2.url).position, 4);
    src.import("imp-3", &["c@x.example"]);
    assert_eq!(pass(&late, &src), PassOutcome::CaughtUp);
    let ids: Vec<String> = rx2.seen().into_iter().map(|s| s.event).collect();
    assert_eq!(ids, ["msg_acme_5", "msg_acme_6"]);
}

#[test]
fn a_long_backlog_goes_out_in_batches() {
    let rx = Receiver::start(SECRET);
    let src = HandSource::new();
    let hook = endpoint(&rx.url, Some(&["import.finished"]));
    pass(&hook, &src);
    for i in 0..130 {
        src.import(&format!("imp-{i}"), &["a@x.example"]);
    }
    // 260 events, 130 sent: batches of 100 events.
    assert_eq!(pass(&hook, &src), PassOutcome::More);
    assert_eq!(pass(&hook, &src), PassOutcome::More);
    assert_eq!(pass(&hook, &src), PassOutcome::CaughtUp);
    assert_eq!(rx.seen().len(), 130);
    assert_eq!(cursor(&src, &rx.url).position, 260);
    let status = roster::deliver::webhook::endpoint_status(
        &src,
        TENANT,
        &WebhookConfig {
            url: rx.url.clone(),
            secret: SECRET.into(),
            previous_secret: None,
            events: None,
        },
    )
    .unwrap();
    assert_eq!((status.position, status.backlog), (Some(260), 0));
    src.import("imp-x", &["z@x.example"]);
    assert_eq!(
        roster::deliver::webhook::newest_event(&src, TENANT).unwrap(),
        262
    );
}

/// Throughput of one endpoint: a first import of `WEBHOOK_BENCH_USERS` users (default 100,000)
/// delivered to the verifying receiver. Run by hand:
/// `cargo test --test webhooks_delivery -- --ignored --nocapture bench`.
#[test]
#[ignore = "a benchmark: run by hand"]
fn bench_a_first_import_delivered() {
    let users: usize = std::env::var("WEBHOOK_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rx = Receiver::start(SECRET);
    let src = HandSource::new();
    let hook = endpoint(&rx.url, None);
    pass(&hook, &src);
    let keys: Vec<String> = (0..users).map(|i| format!("user{i}@x.example")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    // One import: directory.changed per 500 changes, then import.finished.
    {
        let mut changes = src.changes.lock().unwrap();
        for (i, key) in refs.iter().enumerate() {
            changes.push(LoggedChange {
                seq: i as u64 + 1,
                at: Utc::now(),
                import_id: Some("imp-1".into()),
                key: key.to_string(),
                kind: ChangeKind::Created,
                fields: Vec::new(),
            });
        }
    }
    let mut from = 1u64;
    while from <= users as u64 {
        let to = (from + 499).min(users as u64);
        src.push(EventType::DirectoryChanged, Some("imp-1"), Some((from, to)));
        from = to + 1;
    }
    src.push(EventType::ImportFinished, Some("imp-1"), None);
    let messages = src.events.lock().unwrap().len();
    let t0 = std::time::Instant::now();
    assert_eq!(drain(&hook, &src, 1_000_000), PassOutcome::CaughtUp);
    let took = t0.elapsed();
    let seen = rx.seen();
    assert_eq!(seen.len(), messages);
    assert!(seen.iter().all(|s| s.verified));
    println!(
        "webhooks bench: {users} users, {messages} messages in {:.2} s ({:.0} messages/s, {:.0} changes/s)",
        took.as_secs_f64(),
        messages as f64 / took.as_secs_f64(),
        users as f64 / took.as_secs_f64()
    );
}
