//! The enterprise `manager` of a pushed user follows `manager_email` (review mgr 1, 2), against
//! `scim2-server` (tests/scim_push/) with PATCH and without (an update is then a merged PUT):
//! - emptied in the directory, it is removed from the application's user (it used to stay for
//!   ever: a PATCH `replace` does not touch it, the merged PUT kept the application's);
//! - changed to somebody the application does not have yet, the old one is removed, and the
//!   new one set once that user arrives;
//! - a manager deleted and re-created in the application has a new id: reports get that one,
//!   not the id the pusher remembered.

#[path = "scim_push/mem.rs"]
mod mem;
#[path = "scim_push/server.rs"]
mod server;

use mem::{config_for, create, drain, user, MemSource};

use roster::config::ScimOnMissing;
use roster::deliver::scim_push::{snapshot, Pusher};
use roster::model::changelog::ChangeKind;
use serde_json::{json, Value};
use server::ScimServer;

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// scim2-server, with PATCH or answering it 501 (updates are then PUTs).
fn server(patch: bool) -> ScimServer {
    match patch {
        true => ScimServer::start(&[]),
        false => ScimServer::start(&[
            "--service-provider-config",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/scim_push/no-patch-config.json"
            ),
        ]),
    }
}

/// The application's user of `key`, read by `GET /Users/{id}`.
fn app_user(s: &ScimServer, key: &str) -> Value {
    let id = s.by_external_id(key).unwrap()["id"].clone();
    s.user(id.as_str().unwrap()).unwrap()
}

fn manager_of(s: &ScimServer, key: &str) -> Value {
    app_user(s, key)
        .pointer(&format!("/{ENTERPRISE}/manager/value"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Imports `ann` with `manager_email` set to `manager` (None: emptied).
fn set_manager(src: &MemSource, manager: Option<&str>) {
    let mut a = src.get("ann");
    match manager {
        Some(m) => a.fields.insert("manager_email".into(), json!(m)),
        None => a.fields.remove("manager_email"),
    };
    src.apply(
        "ann",
        Some(a),
        ChangeKind::Updated,
        &[("manager_email", manager)],
    );
}

fn a_manager_follows_manager_email(patch: bool, tenant: &str) {
    let s = server(patch);
    let src = MemSource::default();
    let p = Pusher::new(tenant, &config_for(&s.base, ScimOnMissing::Deactivate)).unwrap();
    create(&src, "boss", "Boss");
    let mut ann = user("ann", "Ann");
    ann.fields
        .insert("manager_email".into(), json!("boss@acme.example"));
    src.apply("ann", Some(ann), ChangeKind::Created, &[]);
    drain(&p, &src);
    let boss_id = s.by_external_id("boss").unwrap()["id"].clone();
    assert_eq!(manager_of(&s, "ann"), boss_id, "{}", app_user(&s, "ann"));

    // HR clears Ann's manager.
    set_manager(&src, None);
    drain(&p, &src);
    assert!(
        snapshot(tenant).failing.is_empty(),
        "{:?}",
        snapshot(tenant).failing
    );
    assert_eq!(
        manager_of(&s, "ann"),
        Value::Null,
        "{}",
        app_user(&s, "ann")
    );
    assert_eq!(app_user(&s, "ann")["name"]["givenName"], "Ann");

    // Set again, then changed to somebody the application does not have yet: the old
    // manager is removed meanwhile, the new one set once that user arrives.
    set_manager(&src, Some("boss@acme.example"));
    drain(&p, &src);
    assert_eq!(manager_of(&s, "ann"), boss_id);
    set_manager(&src, Some("new.boss@acme.example"));
    drain(&p, &src);
    assert_eq!(
        manager_of(&s, "ann"),
        Value::Null,
        "{}",
        app_user(&s, "ann")
    );
    create(&src, "new.boss", "New");
    drain(&p, &src);
    let new_id = s.by_external_id("new.boss").unwrap()["id"].clone();
    assert_eq!(manager_of(&s, "ann"), new_id, "{}", app_user(&s, "ann"));
    assert!(
        snapshot(tenant).failing.is_empty(),
        "{:?}",
        snapshot(tenant).failing
    );
}

#[test]
fn an_emptied_or_changed_manager_is_removed_with_patch() {
    a_manager_follows_manager_email(true, "t-mgr-patch");
}

#[test]
fn an_emptied_or_changed_manager_is_removed_by_the_merged_put() {
    a_manager_follows_manager_email(false, "t-mgr-put");
}

/// Review mgr 2: the pusher remembered a manager's id for its whole life; one deleted and
/// re-created in the application has another id.
#[test]
fn a_manager_re_created_in_the_application_is_referenced_by_its_new_id() {
    let s = server(true);
    let src = MemSource::default();
    let p = Pusher::new(
        "t-mgr-new-id",
        &config_for(&s.base, ScimOnMissing::Deactivate),
    )
    .unwrap();
    create(&src, "boss", "Boss");
    let mut ann = user("ann", "Ann");
    ann.fields
        .insert("manager_email".into(), json!("boss@acme.example"));
    src.apply("ann", Some(ann), ChangeKind::Created, &[]);
    drain(&p, &src);
    let old_id = s.by_external_id("boss").unwrap()["id"].clone();
    assert_eq!(manager_of(&s, "ann"), old_id);

    // The application's admin deletes the boss; the next change to the boss re-creates it.
    s.delete(old_id.as_str().unwrap());
    let mut boss = src.get("boss");
    boss.first_name = Some("Bossy".into());
    src.apply(
        "boss",
        Some(boss),
        ChangeKind::Updated,
        &[("first_name", Some("Bossy"))],
    );
    drain(&p, &src);
    let new_id = s.by_external_id("boss").unwrap()["id"].clone();
    assert_ne!(new_id, old_id);

    let mut ann = src.get("ann");
    ann.first_name = Some("Anne".into());
    src.apply(
        "ann",
        Some(ann),
        ChangeKind::Updated,
        &[("first_name", Some("Anne"))],
    );
    drain(&p, &src);
    assert_eq!(manager_of(&s, "ann"), new_id, "{}", app_user(&s, "ann"));
}
