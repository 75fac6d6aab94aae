//! SCIM push against a real SCIM service provider (`scim2-server`, see tests/scim_push/): the
//! pusher walks hand-built change logs (a `ChangeSource` in memory) and the tests read the
//! provider's users back through its own SCIM API. Covers create, adoption by externalId and by
//! userName, update by PATCH and by PUT (a provider without PATCH), deactivate, restore,
//! delete, a refusal kept with the provider's detail, the cursor held while the provider is
//! down, a bearer token, `--reconcile`, and a report pushed before its manager getting the
//! manager once the manager arrives.

#[path = "scim_push/mem.rs"]
mod mem;
#[path = "scim_push/server.rs"]
mod server;

use mem::{config_for, create, drain, user, MemSource};

use chrono::Utc;
use roster::config::{ScimOnMissing, ScimPushConfig};
use roster::deliver::scim_push::{reconcile, snapshot, Batch, ChangeSource, Pusher};
use roster::model::changelog::{ChangeKind, Cursor};
use roster::model::UserStatus;
use serde_json::{json, Value};
use server::{RateLimiter, ScimServer};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn config(s: &ScimServer, on_missing: ScimOnMissing) -> ScimPushConfig {
    config_for(&s.base, on_missing)
}

#[test]
fn created_updated_deactivated_restored_and_deleted_users_reach_the_application() {
    let s = ScimServer::start(&[]);
    let src = MemSource::default();
    let p = Pusher::new("t-life", &config(&s, ScimOnMissing::Deactivate)).unwrap();
    for (k, n) in [("ann", "Ann"), ("bob", "Bob"), ("cy", "Cy")] {
        create(&src, k, n);
    }
    drain(&p, &src);
    assert_eq!(src.position(), 3);
    let ann = s.by_external_id("ann").unwrap();
    assert_eq!(ann["userName"], "ann@acme.example");
    assert_eq!(ann["name"]["givenName"], "Ann");
    assert_eq!(ann["emails"][0]["value"], "ann@acme.example");
    assert_eq!(ann["title"], "Clerk");
    assert_eq!(ann["active"], true);
    assert_eq!(ann[ENTERPRISE]["employeeNumber"], "E-ann");
    assert_eq!(ann[ENTERPRISE]["department"], "HQ");
    assert_eq!(s.users().len(), 3);

    // Updated (PATCH): a new first name; bob's title cleared.
    let mut a = src.get("ann");
    a.first_name = Some("Anne".into());
    src.apply(
        "ann",
        Some(a),
        ChangeKind::Updated,
        &[("first_name", Some("Anne"))],
    );
    let mut b = src.get("bob");
    b.fields.remove("job_title");
    src.apply("bob", Some(b), ChangeKind::Updated, &[("job_title", None)]);
    // Deactivated, then deleted from the directory.
    let mut c = src.get("cy");
    c.status = UserStatus::Inactive;
    src.apply("cy", Some(c), ChangeKind::Deactivated, &[]);
    drain(&p, &src);
    assert_eq!(
        s.by_external_id("ann").unwrap()["name"]["givenName"],
        "Anne"
    );
    assert!(s.by_external_id("bob").unwrap().get("title").is_none());
    assert_eq!(s.by_external_id("cy").unwrap()["active"], false);

    // Restored: active again with its fields.
    let mut c = src.get("cy");
    c.status = UserStatus::Active;
    c.first_name = Some("Cyril".into());
    src.apply(
        "cy",
        Some(c),
        ChangeKind::Restored,
        &[("first_name", Some("Cyril"))],
    );
    drain(&p, &src);
    let cy = s.by_external_id("cy").unwrap();
    assert_eq!(
        (cy["active"].clone(), cy["name"]["givenName"].clone()),
        (json!(true), json!("Cyril"))
    );

    // Deleted with on_missing = deactivate: kept, inactive.
    src.apply("bob", None, ChangeKind::Deleted, &[]);
    drain(&p, &src);
    assert_eq!(s.by_external_id("bob").unwrap()["active"], false);
    // With on_missing = delete: gone.
    let del = Pusher::new("t-life", &config(&s, ScimOnMissing::Delete)).unwrap();
    let mut gone = src.get("cy");
    gone.status = UserStatus::Deleted;
    src.apply("cy", Some(gone), ChangeKind::Deleted, &[]);
    drain(&del, &src);
    assert!(s.by_external_id("cy").is_none());
    assert_eq!(s.users().len(), 2, "no user was duplicated");
    assert_eq!(src.position(), src.log.lock().unwrap().len() as u64);
    assert!(snapshot("t-life").failing.is_empty());
}

#[test]
fn an_existing_application_user_is_adopted_by_external_id_then_by_user_name() {
    let s = ScimServer::start(&[]);
    s.create(
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "old-name", "externalId": "ann", "name": {"givenName": "Old"}}),
    );
    s.create(
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "BOB@acme.example", "name": {"givenName": "Robert"}}),
    );
    let src = MemSource::default();
    let p = Pusher::new("t-adopt", &config(&s, ScimOnMissing::Deactivate)).unwrap();
    create(&src, "ann", "Ann");
    create(&src, "bob", "Bob");
    drain(&p, &src);
    let users = s.users();
    assert_eq!(users.len(), 2, "adopted, not duplicated: {users:?}");
    let ann = s.by_external_id("ann").unwrap();
    assert_eq!(
        (ann["userName"].clone(), ann["name"]["givenName"].clone()),
        (json!("ann@acme.example"), json!("Ann"))
    );
    let bob = s
        .by_external_id("bob")
        .expect("bob adopted by userName and given our externalId");
    assert_eq!(bob["name"]["givenName"], "Bob");
}

#[test]
fn a_provider_without_patch_gets_put() {
    let cfg = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scim_push/no-patch-config.json"
    );
    let s = ScimServer::start(&["--service-provider-config", cfg]);
    let src = MemSource::default();
    let p = Pusher::new("t-put", &config(&s, ScimOnMissing::Deactivate)).unwrap();
    create(&src, "ann", "Ann");
    create(&src, "bob", "Bob");
    drain(&p, &src);
    // Deleted with on_missing = deactivate: the provider answers a PATCH with 501, so the
    // deactivation goes as a PUT of its own representation with active false.
    src.apply("bob", None, ChangeKind::Deleted, &[]);
    let mut a = src.get("ann");
    a.first_name = Some("Anne".into());
    a.fields.insert("job_title".into(), json!("Boss"));
    src.apply(
        "ann",
        Some(a),
        ChangeKind::Updated,
        &[("first_name", Some("Anne"))],
    );
    let mut a = src.get("ann");
    a.status = UserStatus::Inactive;
    src.apply("ann", Some(a), ChangeKind::Deactivated, &[]);
    drain(&p, &src);
    let ann = s.by_external_id("ann").unwrap();
    assert_eq!(ann["name"]["givenName"], "Anne");
    assert_eq!(ann["title"], "Boss");
    assert_eq!(ann["active"], false);
    let bob = s.by_external_id("bob").expect("bob is kept, deactivated");
    assert_eq!(bob["active"], false);
    assert_eq!(
        bob["name"]["givenName"], "Bob",
        "the PUT kept bob's attributes"
    );
    assert_eq!(src.position(), 5, "the cursor moved past every change");
    assert!(
        snapshot("t-put").failing.is_empty(),
        "{:?}",
        snapshot("t-put").failing
    );
}

#[test]
fn a_refused_user_is_kept_with_the_provider_detail_and_the_others_go_on() {
    let s = ScimServer::start(&[]);
    // The application already has carol's userName under someone else's externalId.
    s.create(
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "carol@acme.example", "externalId": "someone-else"}),
    );
    let src = MemSource::default();
    let p = Pusher::new("t-refused", &config(&s, ScimOnMissing::Deactivate)).unwrap();
    create(&src, "ann", "Ann");
    create(&src, "carol", "Carol");
    create(&src, "dan", "Dan");
    drain(&p, &src);
    assert_eq!(src.position(), 3, "a refusal does not hold the cursor");
    assert!(s.by_external_id("ann").is_some() && s.by_external_id("dan").is_some());
    let st = snapshot("t-refused");
    let f = st.failing.get("carol").expect("carol is kept as failing");
    assert_eq!(f.status, Some(409));
    assert!(f.detail.contains("already in use"), "{}", f.detail);
    assert_eq!(f.kind, "created");
    assert_eq!(st.failing.len(), 1);
    assert!(s.users().iter().all(|u| u["externalId"] != "carol"));
}

#[test]
fn the_cursor_holds_while_the_provider_is_down_and_moves_when_it_is_back() {
    let mut s = ScimServer::start(&[]);
    let src = MemSource::default();
    let p = Pusher::new("t-down", &config(&s, ScimOnMissing::Deactivate)).unwrap();
    create(&src, "ann", "Ann");
    drain(&p, &src);
    s.kill();
    create(&src, "bob", "Bob");
    let now = Utc::now();
    let b = p.run_batch(&src, now).unwrap();
    assert!(
        matches!(
            b,
            Batch::Pushed {
                pushed: 0,
                position: 1,
                ..
            }
        ),
        "{b:?}"
    );
    let c = src.cursor().unwrap();
    assert_eq!((c.position, c.attempts), (1, 1));
    assert!(c.last_error.is_some());
    let wake = c.next_attempt.expect("a backoff");
    assert!(wake > now);
    assert_eq!(p.run_batch(&src, now).unwrap(), Batch::Waiting(wake));
    s.restart(); // an empty provider on the same address
    let b = p.run_batch(&src, wake).unwrap();
    assert!(
        matches!(
            b,
            Batch::Pushed {
                pushed: 1,
                position: 2,
                ..
            }
        ),
        "{b:?}"
    );
    assert!(s.by_external_id("bob").is_some());
    let c = src.cursor().unwrap();
    assert_eq!((c.attempts, c.next_attempt, c.last_error), (0, None, None));
}

#[test]
fn a_bearer_token_is_sent() {
    let s = ScimServer::start(&["--bearer-token", "s3cret-push"]);
    let src = MemSource::default();
    create(&src, "ann", "Ann");
    let mut wrong = config(&s, ScimOnMissing::Deactivate);
    wrong.token = Some("wrong".into());
    let p = Pusher::new("t-token-wrong", &wrong).unwrap();
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
    let held = src.cursor().unwrap();
    assert!(
        held.last_error.unwrap().contains("401"),
        "a refused token holds the cursor"
    );
    src.save_cursor(&Cursor::default()).unwrap(); // the operator fixed the token: no wait
    let mut right = config(&s, ScimOnMissing::Deactivate);
    right.token_env = Some("ROSTER_TEST_SCIM_PUSH_TOKEN".into());
    std::env::set_var("ROSTER_TEST_SCIM_PUSH_TOKEN", "s3cret-push");
    let p = Pusher::new("t-token", &right).unwrap();
    let b = p.run_batch(&src, Utc::now()).unwrap();
    assert!(matches!(b, Batch::Pushed { pushed: 1, .. }), "{b:?}");
    assert!(s.by_external_id("ann").is_some());
}

/// A fix pushes the user as the directory holds it when the fix is made, not the copy read
/// when the reconcile began (reviewer s28: an import that deactivated bob while a long
/// listing ran was pushed by the worker, then undone by reconcile's old copy).
#[test]
fn reconcile_fixes_with_the_user_as_he_is_now() {
    let s = ScimServer::start(&[]);
    let p = Pusher::new("t-rec-now", &config(&s, ScimOnMissing::Deactivate)).unwrap();
    let bob = user("bob", "Bob");
    let mut old_bob = bob.clone();
    old_bob.first_name = Some("Robert".into());
    p.sync_user("bob", Some(&old_bob), &Default::default())
        .unwrap();
    // Read at the start: bob active as "Bob"; since then, an import deactivated him.
    let directory = vec![bob.clone()];
    let mut inactive = bob.clone();
    inactive.status = UserStatus::Inactive;
    let now = |k: &str| Ok((k == "bob").then(|| inactive.clone()));
    let fixed = reconcile(&p, &directory, &now, ScimOnMissing::Deactivate, false).unwrap();
    assert!(fixed.errors.is_empty(), "{:?}", fixed.errors);
    assert_eq!(fixed.update.keys, ["bob"]);
    let app = s.by_external_id("bob").unwrap();
    assert_eq!(app["active"], false, "the old copy was pushed: {app}");
}

/// A field the directory emptied whose change was never pushed (the gap a retention trim
/// leaves) is drift: reconcile removes it from the application (reviewer s28: it compared
/// only what Roster sends and left the stale `title`).
#[test]
fn reconcile_removes_what_the_directory_emptied() {
    let s = ScimServer::start(&[]);
    let p = Pusher::new("t-rec-empty", &config(&s, ScimOnMissing::Deactivate)).unwrap();
    let mut bob = user("bob", "Bob");
    bob.fields.insert("job_title".into(), json!("Engineer"));
    p.sync_user("bob", Some(&bob), &Default::default()).unwrap();
    assert_eq!(s.by_external_id("bob").unwrap()["title"], "Engineer");
    bob.fields.remove("job_title");
    let directory = vec![bob];
    let now = |k: &str| Ok(directory.iter().find(|u| u.key == k).cloned());
    let dry = reconcile(&p, &directory, &now, ScimOnMissing::Deactivate, true).unwrap();
    assert_eq!(dry.update.keys, ["bob"]);
    let fixed = reconcile(&p, &directory, &now, ScimOnMissing::Deactivate, false).unwrap();
    assert!(fixed.errors.is_empty(), "{:?}", fixed.errors);
    let app = s.by_external_id("bob").unwrap();
    assert!(app.get("title").is_none_or(|t| t.is_null()), "{app}");
    let again = reconcile(&p, &directory, &now, ScimOnMissing::Deactivate, true).unwrap();
    assert_eq!(again.update.count, 0, "{again:?}");
}

#[test]
fn reconcile_reports_the_drift_then_fixes_it() {
    let s = ScimServer::start(&[]);
    let p = Pusher::new("t-rec", &config(&s, ScimOnMissing::Deactivate)).unwrap();
    let ann = user("ann", "Ann");
    let bob = user("bob", "Bob");
    let mut cy = user("cy", "Cy");
    // In the application: ann as she is, bob with an old name, an extra that carries an
    // externalId, and someone without one (not Roster's: left alone).
    p.sync_user("ann", Some(&ann), &Default::default()).unwrap();
    let mut old_bob = bob.clone();
    old_bob.first_name = Some("Robert".into());
    p.sync_user("bob", Some(&old_bob), &Default::default())
        .unwrap();
    p.sync_user("gone", Some(&user("gone", "Gone")), &Default::default())
        .unwrap();
    s.create(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "local-admin"}));
    cy.status = UserStatus::Active;
    // gone: deleted in the directory (Roster's: deactivated); another source's user: foreign.
    let mut gone = user("gone", "Gone");
    gone.status = UserStatus::Deleted;
    s.create(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "other", "externalId": "other-idp-7"}));
    let directory = vec![ann, bob, cy, gone];
    let now = |k: &str| Ok(directory.iter().find(|u| u.key == k).cloned());
    let dry = reconcile(&p, &directory, &now, ScimOnMissing::Deactivate, true).unwrap();
    assert_eq!(dry.application_users, 5);
    assert_eq!(dry.create.keys, ["cy"]);
    assert_eq!(dry.update.keys, ["bob"]);
    assert_eq!(dry.deactivate.keys, ["gone"]);
    assert_eq!(dry.foreign.keys, ["other-idp-7"]);
    assert!(
        s.by_external_id("cy").is_none(),
        "a dry run changes nothing"
    );
    let fixed = reconcile(&p, &directory, &now, ScimOnMissing::Deactivate, false).unwrap();
    assert!(fixed.errors.is_empty(), "{:?}", fixed.errors);
    assert_eq!(s.by_external_id("bob").unwrap()["name"]["givenName"], "Bob");
    assert_eq!(s.by_external_id("gone").unwrap()["active"], false);
    assert_ne!(s.by_external_id("other-idp-7").unwrap()["active"], false);
    assert!(s.by_external_id("cy").is_some());
    let again = reconcile(&p, &directory, &now, ScimOnMissing::Deactivate, true).unwrap();
    let nothing = |f: &roster::deliver::scim_push::reconcile::Fixes| f.count == 0;
    assert!(
        nothing(&again.create) && nothing(&again.update) && nothing(&again.deactivate),
        "{again:?}"
    );
    let local: Vec<Value> = s
        .users()
        .into_iter()
        .filter(|u| u["userName"] == "local-admin")
        .collect();
    assert_eq!(local.len(), 1);
}

#[test]
fn a_429_with_retry_after_makes_the_push_wait_that_long_then_finish() {
    let s = ScimServer::start(&[]);
    // nginx limit_req: bursts of 4, then 2 requests/s; the excess answered 429, Retry-After: 3.
    let limiter = RateLimiter::start(&s, 2, 3);
    let mut cfg = config(&s, ScimOnMissing::Deactivate);
    cfg.url = limiter.base.clone();
    let p = Pusher::new("t-429", &cfg).unwrap();
    let src = MemSource::default();
    for k in ["a1", "a2", "a3", "a4", "a5", "a6"] {
        create(&src, k, "A");
    }
    let mut waits = 0;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while src.position() < 6 {
        assert!(
            std::time::Instant::now() < until,
            "not drained: {:?}",
            src.cursor().unwrap()
        );
        let now = Utc::now();
        match p.run_batch(&src, now).unwrap() {
            Batch::Waiting(t) => std::thread::sleep((t - Utc::now()).to_std().unwrap_or_default()),
            Batch::Pushed { .. } => {
                let c = src.cursor().unwrap();
                if let Some(next) = c.next_attempt {
                    waits += 1;
                    assert!(
                        c.last_error.as_deref().unwrap_or("").contains("429"),
                        "{c:?}"
                    );
                    let wait = (next - now).num_milliseconds();
                    assert!(
                        (2900..=3100).contains(&wait),
                        "Retry-After 3 honoured: {wait} ms"
                    );
                }
            }
            Batch::Idle => panic!("idle before the end: {:?}", src.cursor().unwrap()),
        }
    }
    assert!(waits >= 1, "the limiter never answered 429");
    for k in ["a1", "a2", "a3", "a4", "a5", "a6"] {
        assert!(s.by_external_id(k).is_some(), "{k}");
    }
    assert_eq!(s.users().len(), 6, "a retried batch duplicates nobody");
}

#[test]
fn the_manager_is_the_application_id_of_the_user_with_that_email() {
    let s = ScimServer::start(&[]);
    let src = MemSource::default();
    let p = Pusher::new("t-manager", &config(&s, ScimOnMissing::Deactivate)).unwrap();
    create(&src, "boss", "Boss");
    drain(&p, &src);
    let mut emp = user("emp", "Emp");
    emp.fields
        .insert("manager_email".into(), json!("BOSS@acme.example"));
    src.apply("emp", Some(emp), ChangeKind::Created, &[]);
    drain(&p, &src);
    let boss_id = s.by_external_id("boss").unwrap()["id"].clone();
    let emp = s.by_external_id("emp").unwrap();
    assert_eq!(emp[ENTERPRISE]["manager"]["value"], boss_id, "{emp}");
}

#[test]
fn a_report_pushed_before_its_manager_gets_the_manager_once_the_manager_arrives() {
    let s = ScimServer::start(&[]);
    let src = MemSource::default();
    let p = Pusher::new("t-manager-late", &config(&s, ScimOnMissing::Deactivate)).unwrap();
    // One import, the report's change first, then (past one batch of the first push) the boss.
    let mut emp = user("emp", "Emp");
    emp.fields
        .insert("manager_email".into(), json!("Late.Boss@acme.example"));
    src.apply("emp", Some(emp), ChangeKind::Created, &[]);
    for i in 0..300 {
        create(&src, &format!("filler{i:03}"), "Filler");
    }
    let mut boss = user("late.boss", "Boss");
    boss.email = Some("late.boss@acme.example".into());
    src.apply("late.boss", Some(boss), ChangeKind::Created, &[]);
    drain(&p, &src);
    assert_eq!(src.position(), 302);
    let boss_id = s.by_external_id("late.boss").unwrap()["id"].clone();
    let emp = s.by_external_id("emp").unwrap();
    assert_eq!(emp[ENTERPRISE]["manager"]["value"], boss_id, "{emp}");
    assert!(snapshot("t-manager-late").failing.is_empty());
    // A manager the application never gets leaves the report without one, and nothing fails.
    let mut orphan = user("orphan", "Orphan");
    orphan
        .fields
        .insert("manager_email".into(), json!("nobody@acme.example"));
    src.apply("orphan", Some(orphan), ChangeKind::Created, &[]);
    drain(&p, &src);
    let orphan = s.by_external_id("orphan").unwrap();
    assert!(orphan[ENTERPRISE].get("manager").is_none(), "{orphan}");
    assert!(snapshot("t-manager-late").failing.is_empty());
}

#[test]
fn a_field_emptied_in_a_refused_push_is_removed_once_the_user_goes_through() {
    let s = ScimServer::start(&[]);
    let src = MemSource::default();
    let p = Pusher::new("t-cleared", &config(&s, ScimOnMissing::Deactivate)).unwrap();
    create(&src, "ann", "Ann");
    drain(&p, &src);
    assert_eq!(s.by_external_id("ann").unwrap()["title"], "Clerk");
    // One change empties ann's title and gives her a userName someone else has in the
    // application: the PATCH is refused (409) and the cursor moves on.
    let other = s.create(
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "taken@acme.example", "externalId": "someone-else"}),
    );
    let mut a = src.get("ann");
    a.fields.remove("job_title");
    a.username = Some("taken@acme.example".into());
    let fields = [
        ("job_title", None),
        ("username", Some("taken@acme.example")),
    ];
    src.apply("ann", Some(a), ChangeKind::Updated, &fields);
    drain(&p, &src);
    let st = snapshot("t-cleared");
    let f = st.failing.get("ann").expect("ann refused");
    assert_eq!(f.status, Some(409), "{f:?}");
    assert!(f.cleared.contains("job_title"), "{f:?}");
    assert_eq!(s.by_external_id("ann").unwrap()["title"], "Clerk");
    // The operator frees the userName; the retry takes the title away too.
    s.delete(other["id"].as_str().unwrap());
    let later = Utc::now() + chrono::Duration::days(1);
    p.run_batch(&src, later).unwrap();
    let ann = s.by_external_id("ann").unwrap();
    assert_eq!(ann["userName"], "taken@acme.example");
    assert!(ann.get("title").is_none(), "{ann}");
    assert!(snapshot("t-cleared").failing.is_empty());
}

#[test]
fn a_wrong_url_holds_the_cursor_and_the_users_arrive_once_it_is_fixed() {
    let s = ScimServer::start(&[]);
    let src = MemSource::default();
    let keys: Vec<String> = (0..8).map(|i| format!("w{i}")).collect();
    for k in &keys {
        create(&src, k, "W");
    }
    // A wrong path: the provider answers 404 to every GET /Users?filter= (and POST /Users).
    let mut wrong = config(&s, ScimOnMissing::Deactivate);
    wrong.url = format!("{}/wrong", s.base);
    let p = Pusher::new("t-wrong-url", &wrong).unwrap();
    let now = Utc::now();
    let b = p.run_batch(&src, now).unwrap();
    assert!(
        matches!(
            b,
            Batch::Pushed {
                pushed: 0,
                failed: 0,
                position: 0
            }
        ),
        "{b:?}"
    );
    let c = src.cursor().unwrap();
    assert_eq!(c.position, 0, "the cursor did not move past the users");
    assert!(
        c.last_error.as_deref().unwrap_or("").contains("404"),
        "{c:?}"
    );
    let st = snapshot("t-wrong-url");
    assert!(st.failing.is_empty(), "nobody refused: {:?}", st.failing);
    assert!(st.last_error.unwrap_or_default().contains("url"));
    // The operator fixes `url` (a reload makes a new pusher); once the wait is over, all arrive.
    let right = Pusher::new("t-wrong-url", &config(&s, ScimOnMissing::Deactivate)).unwrap();
    let wake = c.next_attempt.expect("a backoff");
    let b = right.run_batch(&src, wake).unwrap();
    assert!(matches!(b, Batch::Pushed { pushed: 8, .. }), "{b:?}");
    assert_eq!(src.position(), 8);
    for k in &keys {
        assert!(s.by_external_id(k).is_some(), "{k}");
    }
}

/// Audit F15: retention trimmed changes the push had not read; it went on without a word.
#[test]
fn changes_removed_before_they_were_pushed_are_noted_as_a_gap() {
    let s = ScimServer::start(&[]);
    let src = MemSource::default();
    for k in ["g1", "g2", "g3", "g4"] {
        create(&src, k, "G");
    }
    src.log.lock().unwrap().drain(..3); // the retention sweep: seq 1-3 are gone
    let p = Pusher::new("t-gap", &config(&s, ScimOnMissing::Deactivate)).unwrap();
    drain(&p, &src);
    let c = src.cursor().unwrap();
    assert_eq!(c.position, 4);
    let gap = c.state.expect("the cursor keeps the gap")["gap"].clone();
    assert_eq!(
        (gap["changes"].clone(), gap["after"].clone()),
        (json!(3), json!(0))
    );
    let note = gap["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("removed by retention") && note.contains("--reconcile"),
        "{note}"
    );
    assert_eq!(snapshot("t-gap").gap.as_deref(), Some(note));
    // Nothing new: the note stays as it was.
    assert_eq!(drain(&p, &src), Batch::Idle);
    let kept = src.cursor().unwrap().state.unwrap()["gap"].clone();
    assert_eq!(kept, gap);
}
