//! SCIM push to a provider without PATCH (`scim2-server` with tests/scim_push/no-patch*.json):
//! an update is a PUT, which replaces the whole user (RFC 7644 §3.5.1), so it must carry what
//! the application keeps on its user besides Roster's attributes (the PUT used to carry
//! Roster's alone and wiped them: a lost update). Covered for the push, for `--reconcile`'s
//! fixes, and for a provider that versions its users (ETag, `If-Match`).

#[path = "scim_push/mem.rs"]
mod mem;
#[path = "scim_push/server.rs"]
mod server;

use mem::{config_for, create, drain, user, MemSource};

use roster::config::ScimOnMissing;
use roster::deliver::scim_push::{reconcile, snapshot, Pusher};
use roster::model::changelog::ChangeKind;
use serde_json::{json, Value};
use server::ScimServer;

/// scim2-server answering PATCH with 501 (`etag`: also versioning its users).
fn no_patch_server(etag: bool) -> ScimServer {
    let cfg = match etag {
        false => concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/scim_push/no-patch-config.json"
        ),
        true => concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/scim_push/no-patch-etag-config.json"
        ),
    };
    ScimServer::start(&["--service-provider-config", cfg])
}

/// The application's own admin adds what Roster does not map to `key`'s user, by a PUT of
/// the user as it is with those attributes (the provider takes no PATCH).
fn add_the_application_s_own(s: &ScimServer, key: &str) {
    let mut app = s.by_external_id(key).unwrap();
    let id = app["id"].as_str().unwrap().to_string();
    let o = app.as_object_mut().unwrap();
    o.remove("meta");
    o.insert("nickName".into(), json!("Annie"));
    o.insert(
        "addresses".into(),
        json!([{"type": "home", "locality": "Lyon", "country": "FR"}]),
    );
    o.insert("roles".into(), json!([{"value": "approver"}]));
    o["emails"]
        .as_array_mut()
        .unwrap()
        .push(json!({"value": "annie@home.example", "type": "home"}));
    s.replace(&id, &app);
}

/// Asserts the application's attributes of [`add_the_application_s_own`] are all there.
fn assert_the_application_s_own_kept(ann: &Value) {
    assert_eq!(ann["nickName"], "Annie", "{ann}");
    assert_eq!(ann["addresses"][0]["locality"], "Lyon", "{ann}");
    assert_eq!(ann["roles"][0]["value"], "approver", "{ann}");
    let emails: Vec<&str> = (ann["emails"].as_array().unwrap().iter())
        .filter_map(|e| e["value"].as_str())
        .collect();
    assert!(emails.contains(&"annie@home.example"), "{ann}");
}

/// Pushes ann, lets the application add its own attributes, then imports a change to ann.
fn an_update_keeps_what_the_application_keeps(s: &ScimServer, tenant: &str) {
    let src = MemSource::default();
    let p = Pusher::new(tenant, &config_for(&s.base, ScimOnMissing::Deactivate)).unwrap();
    create(&src, "ann", "Ann");
    drain(&p, &src);
    add_the_application_s_own(s, "ann");

    // Imported: a new first name and email; the job title emptied.
    let mut a = src.get("ann");
    a.first_name = Some("Anne".into());
    a.email = Some("anne@acme.example".into());
    a.fields.remove("job_title");
    src.apply(
        "ann",
        Some(a),
        ChangeKind::Updated,
        &[
            ("first_name", Some("Anne")),
            ("email", Some("anne@acme.example")),
            ("job_title", None),
        ],
    );
    drain(&p, &src);
    assert!(
        snapshot(tenant).failing.is_empty(),
        "{:?}",
        snapshot(tenant).failing
    );
    let ann = s.by_external_id("ann").unwrap();
    assert_eq!(
        ann["name"]["givenName"], "Anne",
        "Roster's new value: {ann}"
    );
    assert!(
        ann.get("title").is_none(),
        "the cleared title is gone: {ann}"
    );
    assert_the_application_s_own_kept(&ann);
    let work: Vec<&Value> = (ann["emails"].as_array().unwrap().iter())
        .filter(|e| e["type"] == "work")
        .collect();
    assert_eq!(work.len(), 1, "Roster's work email replaced: {ann}");
    assert_eq!(work[0]["value"], "anne@acme.example");
    assert_eq!(src.position(), 2, "the cursor moved past every change");
}

#[test]
fn a_put_update_keeps_the_application_s_own_attributes() {
    let s = no_patch_server(false);
    an_update_keeps_what_the_application_keeps(&s, "t-put-keep");
}

#[test]
fn a_put_update_to_a_provider_with_etags_sends_if_match_and_keeps_the_rest() {
    let s = no_patch_server(true);
    // The provider versions its users: an If-Match it does not match is a 412.
    let app = s.create(
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "probe"}),
    );
    assert!(app["meta"]["version"].is_string(), "{app}");
    an_update_keeps_what_the_application_keeps(&s, "t-put-etag");
}

#[test]
fn a_reconcile_fix_by_put_keeps_the_application_s_own_attributes() {
    let s = no_patch_server(false);
    let p = Pusher::new("t-put-rec", &config_for(&s.base, ScimOnMissing::Deactivate)).unwrap();
    let ann = user("ann", "Ann");
    p.sync_user("ann", Some(&ann), &Default::default()).unwrap();
    add_the_application_s_own(&s, "ann");
    let mut anne = ann.clone();
    anne.last_name = Some("Lee-Smith".into());
    let directory = vec![anne];
    let now = |k: &str| Ok(directory.iter().find(|u| u.key == k).cloned());
    let fixed = reconcile(&p, &directory, &now, ScimOnMissing::Deactivate, false).unwrap();
    assert_eq!(fixed.update.keys, ["ann"]);
    assert!(fixed.errors.is_empty(), "{:?}", fixed.errors);
    let ann = s.by_external_id("ann").unwrap();
    assert_eq!(ann["name"]["familyName"], "Lee-Smith", "{ann}");
    assert_the_application_s_own_kept(&ann);
    // The application's home email is not drift: nothing left to fix.
    let again = reconcile(&p, &directory, &now, ScimOnMissing::Deactivate, true).unwrap();
    assert_eq!(again.update.count, 0, "{again:?}");
}
