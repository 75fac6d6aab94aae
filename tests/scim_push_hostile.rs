//! SCIM push against applications that misbehave (review s15): a `url` that redirects, a
//! provider whose paging never moves on, an application user that another source provisioned.
//! The application is `scim2-server` (tests/scim_push/), or, for what it cannot do, a small
//! HTTP server in front of it or on its own (tests/scim_push/hostile.rs).

#[path = "scim_push/hostile.rs"]
mod hostile;
#[path = "scim_push/mem.rs"]
mod mem;
#[path = "scim_push/server.rs"]
mod server;

use chrono::Utc;
use hostile::{Answer, Hostile};
use mem::{config_for, create, MemSource};
use roster::config::ScimOnMissing;
use roster::deliver::scim_push::{Batch, ChangeSource, Pusher};
use server::ScimServer;

/// Review s15 F3: a redirect is not followed (ureq would turn the POST into a GET that
/// "succeeds" and drop the token); the push holds with an error naming the Location.
#[test]
fn a_redirect_is_a_failure_naming_its_location_and_nothing_counts_as_done() {
    let s = ScimServer::start(&[]);
    let target = s.base.clone();
    let moved = Hostile::start(move |_, path| Answer {
        status: 301,
        headers: vec![("Location".into(), format!("{target}{path}"))],
        body: String::new(),
    });
    let src = MemSource::default();
    create(&src, "ann", "Ann");
    let p = Pusher::new(
        "t-redirect",
        &config_for(&moved.base, ScimOnMissing::Deactivate),
    )
    .unwrap();
    let b = p.run_batch(&src, Utc::now()).unwrap();
    assert!(
        matches!(
            b,
            Batch::Pushed {
                pushed: 0,
                position: 0,
                ..
            }
        ),
        "{b:?}"
    );
    let c = src.cursor().unwrap();
    let err = c.last_error.unwrap_or_default();
    assert!(
        err.contains(&format!("redirected to {}/Users", s.base)) && err.contains("fix `url`"),
        "{err}"
    );
    assert!(c.next_attempt.is_some(), "the push waits and tries again");
    assert!(s.users().is_empty(), "{:?}", s.users());
    assert!(moved.seen().iter().all(|r| r.starts_with("GET ")));
}

/// A page of 100 users `u<from>..`, each carrying `pad` bytes, with `totalResults` ten million.
fn page(from: usize, start_index: Option<usize>, pad: usize) -> Answer {
    let users: Vec<serde_json::Value> = (from..from + 100)
        .map(|i| {
            serde_json::json!({"id": format!("id-{i}"), "userName": format!("u{i}"),
                "externalId": format!("foreign-{i}"), "active": true, "title": "x".repeat(pad),
                "x-unrelated": "y".repeat(pad)})
        })
        .collect();
    let mut body = serde_json::json!({"totalResults": 10_000_000, "itemsPerPage": 100,
        "Resources": users});
    if let Some(s) = start_index {
        body["startIndex"] = serde_json::json!(s);
    }
    Answer::json(200, &body)
}

/// The `startIndex` a `GET /Users?startIndex=N&count=..` asks for.
fn asked(path: &str) -> usize {
    path.split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("startIndex="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Review s15 F2: a provider that ignores `startIndex` (the same page again and again, under
/// a huge totalResults) stops the reconcile with an error after a page, instead of reading
/// twenty thousand copies of it.
#[test]
fn reconcile_stops_when_the_provider_pages_in_place() {
    // Says the startIndex it was asked for, but sends the first page again.
    let liar = Hostile::start(|_, path| page(1, Some(asked(path)), 10));
    // Says nothing of startIndex, and sends the first page again.
    let mute = Hostile::start(|_, _| page(1, None, 10));
    // Answers startIndex 1 whatever was asked.
    let stuck = Hostile::start(|_, _| page(1, Some(1), 10));
    for (app, what) in [
        (&liar, "repeated"),
        (&mute, "repeated"),
        (&stuck, "startIndex 1"),
    ] {
        let p = Pusher::new("t-paging", &config_for(&app.base, ScimOnMissing::Delete)).unwrap();
        let err = roster::deliver::scim_push::reconcile(
            &p,
            &[],
            &|_: &str| Ok(None),
            ScimOnMissing::Delete,
            true,
        )
        .expect_err("the paging is broken");
        assert!(err.to_string().contains(what), "{err}");
        assert_eq!(app.seen().len(), 2, "{:?}", app.seen());
    }
}

/// Each application user is cut to what reconcile compares; a provider that pages properly
/// is read to the end (here 300 users of about 20 KB each).
#[test]
fn reconcile_reads_a_provider_that_pages_properly_to_the_end() {
    let app = Hostile::start(|_, path| {
        let start = asked(path);
        if start > 300 {
            return Answer::json(
                200,
                &serde_json::json!({"totalResults": 300, "Resources": []}),
            );
        }
        let mut a = page(start, Some(start), 10_000);
        a.body = a.body.replace("10000000", "300");
        a
    });
    let p = Pusher::new("t-paging-ok", &config_for(&app.base, ScimOnMissing::Delete)).unwrap();
    let drift = roster::deliver::scim_push::reconcile(
        &p,
        &[],
        &|_: &str| Ok(None),
        ScimOnMissing::Delete,
        true,
    )
    .unwrap();
    assert_eq!(drift.application_users, 300);
    assert_eq!(drift.foreign.count, 300, "none of them is Roster's");
    assert_eq!(drift.delete.count, 0);
}

/// Audit s22 L: a provider that under-reports totalResults (100 here, for 300 users) is
/// still read to the end: full pages go on until one comes back empty.
#[test]
fn reconcile_reads_past_an_under_reported_total() {
    let app = Hostile::start(|_, path| {
        let start = asked(path);
        if start > 300 {
            return Answer::json(
                200,
                &serde_json::json!({"totalResults": 100, "Resources": []}),
            );
        }
        let mut a = page(start, Some(start), 10);
        a.body = a.body.replace("10000000", "100");
        a
    });
    let p = Pusher::new(
        "t-paging-low",
        &config_for(&app.base, ScimOnMissing::Delete),
    )
    .unwrap();
    let drift = roster::deliver::scim_push::reconcile(
        &p,
        &[],
        &|_: &str| Ok(None),
        ScimOnMissing::Delete,
        true,
    )
    .unwrap();
    assert_eq!(drift.application_users, 300);
    assert_eq!(app.seen().len(), 4, "three full pages and an empty one");
}

/// Review s15 F7: with `on_missing = "delete"`, reconcile deletes an application user only
/// when its externalId is a key of the tenant's directory (a deleted user here); one that
/// another source provisioned is listed as foreign and kept.
#[test]
fn reconcile_leaves_foreign_users_alone_and_deletes_only_roster_users() {
    let s = ScimServer::start(&[]);
    let p = Pusher::new("t-foreign", &config_for(&s.base, ScimOnMissing::Delete)).unwrap();
    let mut gone = mem::user("gone", "Gone");
    p.sync_user("gone", Some(&gone), &Default::default())
        .unwrap();
    gone.status = roster::model::UserStatus::Deleted;
    s.create(
        serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "user0002", "externalId": "someone-else@other.example"}),
    );
    let directory = vec![gone];
    let fixed = roster::deliver::scim_push::reconcile(
        &p,
        &directory,
        &|k: &str| Ok(directory.iter().find(|u| u.key == k).cloned()),
        ScimOnMissing::Delete,
        false,
    )
    .unwrap();
    assert_eq!(fixed.delete.keys, ["gone"]);
    assert_eq!(fixed.foreign.keys, ["someone-else@other.example"]);
    assert!(fixed.errors.is_empty(), "{:?}", fixed.errors);
    assert!(s.by_external_id("gone").is_none());
    assert!(s.by_external_id("someone-else@other.example").is_some());
}

/// A tenant in memory whose saves are recorded in order ("failures", "cursor N").
#[derive(Default)]
struct Recorded {
    mem: MemSource,
    saves: std::sync::Mutex<Vec<String>>,
}

impl ChangeSource for Recorded {
    fn changes(
        &self,
        after: u64,
        limit: usize,
    ) -> anyhow::Result<Vec<roster::model::changelog::LoggedChange>> {
        self.mem.changes(after, limit)
    }
    fn user(&self, key: &str) -> anyhow::Result<Option<roster::model::User>> {
        self.mem.user(key)
    }
    fn cursor(&self) -> anyhow::Result<roster::model::changelog::Cursor> {
        self.mem.cursor()
    }
    fn save_cursor(&self, c: &roster::model::changelog::Cursor) -> anyhow::Result<()> {
        let mut saves = self.saves.lock().unwrap();
        saves.push(format!("cursor {}", c.position));
        self.mem.save_cursor(c)
    }
    fn save_failures(
        &self,
        f: &[roster::deliver::scim_push::status::Failure],
    ) -> anyhow::Result<()> {
        let keys: Vec<&str> = f.iter().map(|f| f.key.as_str()).collect();
        let mut saves = self.saves.lock().unwrap();
        saves.push(format!("failures {}", keys.join(",")));
        Ok(())
    }
}

/// Audit F3: the cursor was saved past a refused user before the failing list that keeps
/// it, so a kill -9 between the two writes lost the user. The list is saved first.
#[test]
fn a_refused_user_is_saved_as_failing_before_the_cursor_moves_past_it() {
    let app = Hostile::start(|_, _| {
        Answer::json(
            409,
            &serde_json::json!({"status": "409", "detail": "userName taken"}),
        )
    });
    let src = Recorded::default();
    create(&src.mem, "ann", "Ann");
    let p = Pusher::new(
        "t-save-order",
        &config_for(&app.base, ScimOnMissing::Deactivate),
    )
    .unwrap();
    let b = p.run_batch(&src, Utc::now()).unwrap();
    assert!(
        matches!(
            b,
            Batch::Pushed {
                failed: 1,
                position: 1,
                ..
            }
        ),
        "{b:?}"
    );
    let saves = src.saves.lock().unwrap().clone();
    assert_eq!(saves, vec!["failures ann", "cursor 1"]);
}

/// Audit F9: a numeric `id` was read as none, and no id became "", so the PATCH (or a
/// DELETE) went to `/Users/`, the collection. A number is an id; a missing one is that user's
/// failure and nothing is sent for it.
#[test]
fn a_numeric_id_is_used_and_a_missing_one_sends_nothing() {
    let app = Hostile::start(|method, path| {
        let list = |u: serde_json::Value| {
            Answer::json(
                200,
                &serde_json::json!({"totalResults": 1, "Resources": [u]}),
            )
        };
        match method {
            "GET" if path.contains("%22ann%22") => list(
                serde_json::json!({"id": 123, "externalId": "ann", "userName": "ann@acme.example"}),
            ),
            "GET" if path.contains("%22bob%22") => {
                list(serde_json::json!({"externalId": "bob", "userName": "bob@acme.example"}))
            }
            "PATCH" if path == "/Users/123" => Answer::json(200, &serde_json::json!({})),
            _ => Answer::json(404, &serde_json::json!({"detail": "no such thing"})),
        }
    });
    let src = MemSource::default();
    create(&src, "ann", "Ann");
    create(&src, "bob", "Bob");
    let p = Pusher::new("t-ids", &config_for(&app.base, ScimOnMissing::Deactivate)).unwrap();
    let b = p.run_batch(&src, Utc::now()).unwrap();
    assert!(
        matches!(
            b,
            Batch::Pushed {
                pushed: 1,
                failed: 1,
                position: 2
            }
        ),
        "{b:?}"
    );
    let seen = app.seen();
    assert!(seen.contains(&"PATCH /Users/123".to_string()), "{seen:?}");
    let writes: Vec<&String> = seen.iter().filter(|l| !l.starts_with("GET ")).collect();
    assert_eq!(writes, vec!["PATCH /Users/123"], "nothing sent for bob");
    let st = roster::deliver::scim_push::snapshot("t-ids");
    let f = st.failing.get("bob").expect("bob kept as failing");
    assert!(f.detail.contains("no usable `id`"), "{f:?}");
}

/// Audit F2: one user the provider always answers 500 (here with a body over the 4 MiB read
/// limit, which once lost the status: read as "no answer") held the cursor before it for ever. After 5 batches in a row in
/// which the others went through, it is kept as failing and the push goes on.
#[test]
fn a_user_always_answered_500_stops_holding_the_tenant_after_five_tries() {
    let app = Hostile::start(|method, path| match method {
        "GET" if path.contains("%22bad%22") => Answer {
            status: 500,
            headers: vec![],
            body: "upstream exploded ".repeat(300_000),
        },
        "GET" => Answer::json(
            200,
            &serde_json::json!({"totalResults": 0, "Resources": []}),
        ),
        _ => Answer::json(201, &serde_json::json!({"id": "x"})),
    });
    let src = MemSource::default();
    for k in ["bad", "ann", "bob", "cy"] {
        create(&src, k, "X");
    }
    let p = Pusher::new(
        "t-strikes",
        &config_for(&app.base, ScimOnMissing::Deactivate),
    )
    .unwrap();
    let mut now = Utc::now();
    let mut batches = 0;
    while src.position() < 4 {
        batches += 1;
        assert!(batches <= 5, "still held: {:?}", src.cursor().unwrap());
        let b = p.run_batch(&src, now).unwrap();
        assert!(matches!(b, Batch::Pushed { pushed: 3, .. }), "{b:?}");
        let c = src.cursor().unwrap();
        if let Some(next) = c.next_attempt {
            assert!(c.last_error.unwrap_or_default().contains("HTTP 500"));
            now = next;
        }
    }
    assert_eq!(batches, 5);
    let st = roster::deliver::scim_push::snapshot("t-strikes");
    let f = st.failing.get("bad").expect("bad kept as failing");
    assert_eq!(f.status, Some(500), "{f:?}");
    assert!(f.detail.contains("in a row"), "{f:?}");
}

/// Review (mgr) 3: without PATCH an update is a PUT of the user read by `GET /Users/{id}`; a
/// provider or proxy answering that GET with another user (or a ListResponse) had that user's
/// attributes written into this one. The GET must be the user asked for: else nothing is sent
/// and the user is kept as failing.
#[test]
fn a_put_update_whose_get_answers_another_user_sends_nothing() {
    let app = Hostile::start(|method, path| {
        let json = |v: serde_json::Value| Answer::json(200, &v);
        let other = serde_json::json!({"id": "b2", "externalId": "bob",
            "userName": "bob@acme.example", "roles": [{"value": "admin"}]});
        match method {
            "GET" if path == "/ServiceProviderConfig" => {
                json(serde_json::json!({"patch": {"supported": false}}))
            }
            "GET" if path.contains("%22ann%22") => json(serde_json::json!({"totalResults": 1,
                "Resources": [{"id": "a1", "externalId": "ann", "userName": "ann@acme.example"}]})),
            "GET" if path.contains("%22cy%22") => json(serde_json::json!({"totalResults": 1,
                "Resources": [{"id": "c3", "externalId": "cy", "userName": "cy@acme.example"}]})),
            "GET" if path == "/Users/a1" => json(other),
            "GET" if path == "/Users/c3" => json(serde_json::json!({"totalResults": 1,
                "Resources": [{"id": "c3", "externalId": "cy"}]})),
            _ => Answer::json(404, &serde_json::json!({"detail": "no such thing"})),
        }
    });
    let src = MemSource::default();
    create(&src, "ann", "Ann");
    create(&src, "cy", "Cy");
    let p = Pusher::new(
        "t-get-other",
        &config_for(&app.base, ScimOnMissing::Deactivate),
    )
    .unwrap();
    let b = p.run_batch(&src, Utc::now()).unwrap();
    assert!(
        matches!(
            b,
            Batch::Pushed {
                pushed: 0,
                failed: 2,
                position: 2
            }
        ),
        "{b:?}"
    );
    let seen = app.seen();
    let writes: Vec<&String> = seen.iter().filter(|l| !l.starts_with("GET ")).collect();
    assert!(writes.is_empty(), "nothing sent: {seen:?}");
    let st = roster::deliver::scim_push::snapshot("t-get-other");
    let f = st.failing.get("ann").expect("ann kept as failing");
    assert!(
        f.detail.contains("another user") && f.detail.contains("b2"),
        "{f:?}"
    );
    let f = st.failing.get("cy").expect("cy kept as failing");
    assert!(f.detail.contains("no usable `id`"), "{f:?}");
}
