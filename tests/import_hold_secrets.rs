//! A held run's plan keeps no secret of the tenant (review s30, F3): the plan stored for
//! `approve` holds the import profile, not the tenant's login hashes, webhook secrets or SCIM
//! push token; approving it still applies the file.
//!
//! Runs on sled, or on PostgreSQL with `ROSTER_TEST_STORE=postgres` (tests/support/store.rs).

#[path = "support/sync_files.rs"]
mod sync_files;
#[path = "support/store.rs"]
mod test_store;

use roster::config::{MatchBy, OnMissing, ScimPushConfig, WebhookConfig};
use roster::import::{approve, ImportStatus};
use sync_files::{file, go, open, tenant, users};

const SECRETS: [&str; 6] = [
    "$argon2id$v=19$m=19456,t=2,p=1$c2Z0cHNhbHQ$sftp-login-hash",
    "$argon2id$v=19$m=19456,t=2,p=1$cG9ydGFsc2FsdA$portal-hash",
    "whsec_Y3VycmVudC13ZWJob29rLXNlY3JldC1ieXRlcw==",
    "whsec_cHJldmlvdXMtd2ViaG9vay1zZWNyZXQtYnl0ZXM=",
    "scim-push-bearer-token-7f3a9c2e",
    "scim-token-sha256-5b1d",
];

#[test]
fn a_held_plan_keeps_no_tenant_secret_and_still_approves() {
    let (store, _d) = open();
    let mut t = tenant(OnMissing::Deactivate, MatchBy::MappingCode);
    t.password_hash = Some(SECRETS[0].into());
    t.portal_password_hash = Some(SECRETS[1].into());
    t.scim_token_sha256 = Some(SECRETS[5].into());
    t.webhooks = vec![WebhookConfig {
        url: "https://hooks.example/roster".into(),
        secret: SECRETS[2].into(),
        previous_secret: Some(SECRETS[3].into()),
        events: None,
    }];
    t.scim_push = Some(
        toml::from_str::<ScimPushConfig>(&format!(
            "url = \"https://app.example/scim/v2\"\ntoken = \"{}\"",
            SECRETS[4]
        ))
        .unwrap(),
    );
    go(&store, &t, &file(&users(50)));
    let held = go(&store, &t, &file(&users(10))).record;
    assert_eq!(held.status, ImportStatus::Held, "{:?}", held.messages);
    let plan = store.held_plan("t1", &held.id).unwrap().unwrap().to_vec();
    for secret in SECRETS {
        assert!(
            !plan.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} is in the stored plan"
        );
    }
    let applied = approve(&store, &t, &held.id).unwrap().record;
    assert_eq!(
        applied.status,
        ImportStatus::Success,
        "{:?}",
        applied.messages
    );
    assert_eq!(applied.counts.deactivated, 40);
}

/// A profile that maps no password column and a file with a column headed like one: the held
/// plan keeps that column blank, as the report and the archive do, and approving applies the
/// mapped columns as held (review s30).
#[test]
fn a_held_plan_keeps_no_unmapped_password_column() {
    let (store, _d) = open();
    let columns = [
        ("mapping_code", "Code"),
        ("first_name", "First"),
        ("last_name", "Last"),
        ("email", "Email"),
        ("job_title", "Title"),
    ];
    let t = roster::config::Tenant::for_import(
        "t1",
        MatchBy::MappingCode,
        OnMissing::Deactivate,
        &columns,
    );
    let rows = |n: u32, title: &str| {
        let mut s = String::from("Code;First;Last;Email;Title;Passwort\n");
        for i in 0..n {
            s.push_str(&format!(
                "C{i:03};First{i};Last{i};user{i}@x.example;{title};Geheim-{i:03}-x\n"
            ));
        }
        s.into_bytes()
    };
    go(&store, &t, &rows(50, "Engineer"));
    let held = go(&store, &t, &rows(10, "Chief")).record;
    assert_eq!(held.status, ImportStatus::Held, "{:?}", held.messages);
    let plan = store.held_plan("t1", &held.id).unwrap().unwrap().to_vec();
    assert!(
        !plan.windows(7).any(|w| w == b"Geheim-"),
        "a password is in the stored plan"
    );
    let applied = approve(&store, &t, &held.id).unwrap().record;
    assert_eq!(
        applied.status,
        ImportStatus::Success,
        "{:?}",
        applied.messages
    );
    assert_eq!(
        (applied.counts.deactivated, applied.counts.updated),
        (40, 10)
    );
}
