//! Any text as a SCIM filter (RFC 7644 §3.4.2.2): the parser answers with a filter or an
//! error sentence, never a panic, and a parsed filter can be tested against a user.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roster::model::user::{User, UserStatus};
use serde_json::json;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(filter) = roster::admin::filter::parse(text) {
        let _ = filter.matches(&user());
    }
});

fn user() -> User {
    let at = chrono::DateTime::UNIX_EPOCH;
    let mut fields = BTreeMap::new();
    fields.insert("groups".to_string(), json!(["Sales", "EMEA"]));
    fields.insert("job_title".to_string(), json!("Engineer 7"));
    fields.insert("language".to_string(), json!("hr"));
    User {
        key: "00017".to_string(),
        status: UserStatus::Active,
        email: Some("ana.horvat@acme.example".to_string()),
        username: Some("ana".to_string()),
        mapping_code: Some("00017".to_string()),
        first_name: Some("Ana".to_string()),
        last_name: Some("Horvat".to_string()),
        fields,
        attributes: BTreeMap::from([("upn".to_string(), "Ana@Corp.example".to_string())]),
        has_password: true,
        managed: true,
        created_at: at,
        updated_at: at,
        deleted_at: None,
    }
}
