//! Edge cases of the SCIM read API and the change log over real HTTP (on sled, or PostgreSQL
//! with `ROSTER_TEST_STORE=postgres`), from the review of 2026-11-30 (SCIM F3, F4, F6, F9,
//! F10, F11): NUL in values and paths, `attributes=`, value paths on users without the
//! attribute, `after` past `i64::MAX`, `/Groups` filter spacing, exact `/Users/{id}`.

#[path = "admin_support/mod.rs"]
mod admin_support;
mod support;

use admin_support::{Env, SCIM_ACME, SCIM_BETA};
use serde_json::Value;

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn ids(list: &Value) -> Vec<String> {
    let Some(items) = list["Resources"].as_array() else {
        panic!("no Resources: {list}");
    };
    items
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// acme (by email): user00 in Sales and Ops, user01 in Sales with user00 as manager, user02 in
/// no group. beta (by mapping code): B1 with an email, B2 without.
async fn populated() -> Env {
    let env = Env::start().await;
    let acme = "email,first_name,last_name,mapping_code,username,job_title,manager_email,groups\n\
        user00@acme.example,First00,Last00,E000,u00,Clerk,,Sales;Ops\n\
        user01@acme.example,First01,Last01,E001,u01,Clerk,user00@acme.example,Sales\n\
        user02@acme.example,First02,Last02,E002,u02,Clerk,,\n";
    let r = env.import("acme", acme).await;
    assert_eq!(r.counts.inserted, 3, "{:?}", r.messages);
    let beta = "mapping_code,first_name,last_name,email\nB1,Ana,One,ana@beta.example\nB2,Bo,Two,\n";
    let r = env.import("beta", beta).await;
    assert_eq!(r.counts.inserted, 2, "{:?}", r.messages);
    env
}

/// F3: NUL is never a stored value; PostgreSQL cannot be asked for one (it answered 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_is_a_400_in_a_filter_and_a_404_in_a_path() {
    let env = populated().await;
    for f in [
        r#"userName eq "a\u0000b""#,
        r#"title co "\u0000""#,
        r#"id eq "\u0000""#,
        r#"externalId sw "\u0000""#,
        r#"groups eq "Sales\u0000""#,
    ] {
        let a = env
            .scim(&format!("/scim/v2/Users?filter={}", enc(f)), SCIM_ACME)
            .await;
        assert_eq!(a.status, 400, "{f}: {}", a.text);
        assert_eq!(a.json["scimType"], "invalidFilter", "{f}");
        assert!(a.text.contains("NUL"), "{f}: {}", a.text);
    }
    let f = enc(r#"displayName eq "a\u0000""#);
    let a = env
        .scim(&format!("/scim/v2/Groups?filter={f}"), SCIM_ACME)
        .await;
    assert_eq!(
        (a.status, a.json["scimType"].as_str()),
        (400, Some("invalidFilter")),
        "{}",
        a.text
    );
    for path in [
        "/scim/v2/Users/a%00b",
        "/scim/v2/Groups/a%00b",
        "/scim/v2/Groups/Sales%00",
    ] {
        let a = env.scim(path, SCIM_ACME).await;
        assert_eq!(a.status, 404, "{path}: {}", a.text);
    }
    for path in [
        "/api/tenants/acme/users/a%00b/changes",
        "/api/tenants/acme/users/user00@acme.example%00/changes",
        "/api/tenants/acme/users/a%00b",
    ] {
        let a = env.get(path).await;
        assert_eq!(a.status, 404, "{path}: {}", a.text);
    }
    let a = env
        .scim("/scim/v2/Users/user00@acme.example", SCIM_ACME)
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
}

/// F4: RFC 7644 §3.4.2.5, `attributes` overrides the defaults: members (and the manager's
/// lookup) only when named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_that_do_not_name_members_leave_them_out() {
    let env = populated().await;
    let list = env
        .scim("/scim/v2/Groups?attributes=displayName", SCIM_ACME)
        .await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(ids(&list.json), ["Ops", "Sales"]);
    for g in list.json["Resources"].as_array().unwrap() {
        assert!(g.get("members").is_none(), "{g}");
        assert!(g["displayName"].is_string(), "{g}");
    }
    let one = env
        .scim("/scim/v2/Groups/Sales?attributes=id,displayName", SCIM_ACME)
        .await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert!(one.json.get("members").is_none(), "{}", one.text);
    for asked in [
        "members",
        "displayName,MEMBERS.value",
        "urn:ietf:params:scim:schemas:core:2.0:Group:members",
    ] {
        let one = env
            .scim(
                &format!("/scim/v2/Groups/Sales?attributes={}", enc(asked)),
                SCIM_ACME,
            )
            .await;
        assert_eq!(
            one.json["members"].as_array().map(Vec::len),
            Some(2),
            "{asked}: {}",
            one.text
        );
    }

    let manager = |u: &Value| u[ENTERPRISE]["manager"].clone();
    let path = "/scim/v2/Users/user01@acme.example";
    let full = env.scim(path, SCIM_ACME).await;
    assert_eq!(
        manager(&full.json)["value"],
        "user00@acme.example",
        "{}",
        full.text
    );
    let bare = env
        .scim(&format!("{path}?attributes=userName"), SCIM_ACME)
        .await;
    assert_eq!(bare.status, 200, "{}", bare.text);
    assert!(manager(&bare.json).is_null(), "{}", bare.text);
    let asked = enc(&format!("{ENTERPRISE}:manager"));
    let list = env
        .scim(&format!("/scim/v2/Users?attributes={asked}"), SCIM_ACME)
        .await;
    let u01 = &list.json["Resources"][1];
    assert_eq!(
        manager(u01)["value"],
        "user00@acme.example",
        "{}",
        list.text
    );
    let list = env
        .scim("/scim/v2/Users?excludedAttributes=manager", SCIM_ACME)
        .await;
    assert!(
        manager(&list.json["Resources"][1]).is_null(),
        "{}",
        list.text
    );
}

/// F6: a value path matches only a user that has a value of its attribute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_path_never_matches_a_user_without_the_attribute() {
    let env = populated().await;
    let users = |token: &'static str, f: &str| {
        let path = format!("/scim/v2/Users?filter={}", enc(f));
        let env = &env;
        async move {
            let a = env.scim(&path, token).await;
            assert_eq!(a.status, 200, "{path}: {}", a.text);
            ids(&a.json)
        }
    };
    for f in [
        r#"emails[value ne "x@y.example"]"#,
        r#"emails[not (value eq "x@y.example")]"#,
        r#"emails[type ne "home"]"#,
        r#"emails[value eq "ana@beta.example"]"#,
        r#"emails[value pr]"#,
    ] {
        assert_eq!(users(SCIM_BETA, f).await, ["B1"], "{f}");
    }
    // B2 has no email: ne and not outside a value path still match it.
    assert_eq!(
        users(SCIM_BETA, r#"not (emails.value eq "x@y.example")"#).await,
        ["B1", "B2"]
    );
    let some = users(SCIM_ACME, r#"groups[not (value eq "Ops")]"#).await;
    assert!(
        some.contains(&"user01@acme.example".to_string()),
        "{some:?}"
    );
    assert!(
        !some.contains(&"user02@acme.example".to_string()),
        "{some:?}"
    );
    let some = users(SCIM_ACME, r#"groups[value ne "Nope"]"#).await;
    assert!(
        !some.contains(&"user02@acme.example".to_string()),
        "{some:?}"
    );
}

/// F9: `after` past `i64::MAX` is past every entry, on every store (PostgreSQL answered 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_after_a_seq_past_i64_max_is_an_empty_page() {
    let env = populated().await;
    for after in [
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
    ] {
        let a = env
            .get(&format!("/api/tenants/acme/changes?after={after}"))
            .await;
        assert_eq!(a.status, 200, "{after}: {}", a.text);
        assert_eq!(a.json["changes"], serde_json::json!([]), "{after}");
        assert_eq!(a.json["next"].to_string(), after);
    }
    let a = env.get("/api/tenants/acme/changes?after=0").await;
    assert!(
        !a.json["changes"].as_array().unwrap().is_empty(),
        "{}",
        a.text
    );
}

/// F10: `/Groups` reads its filter as RFC 7644's grammar does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_groups_filter_accepts_any_spacing_and_a_schema_prefix_in_any_case() {
    let env = populated().await;
    for f in [
        r#"displayName  eq "Sales""#,
        r#"displayName eq"Sales""#,
        r#"urn:ietf:params:scim:schemas:core:2.0:group:displayName eq "Sales""#,
        r#"(id EQ "Sales")"#,
    ] {
        let a = env
            .scim(&format!("/scim/v2/Groups?filter={}", enc(f)), SCIM_ACME)
            .await;
        assert_eq!(a.status, 200, "{f}: {}", a.text);
        assert_eq!(ids(&a.json), ["Sales"], "{f}");
    }
    let a = env
        .scim(
            &format!("/scim/v2/Groups?filter={}", enc(r#"displayName co "S""#)),
            SCIM_ACME,
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
}

/// F11: `/Users/{id}` is exact, as `filter=id eq` is; the admin API keeps its forgiving lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_by_id_is_exact_like_id_eq() {
    let env = populated().await;
    for path in [
        "/scim/v2/Users/USER01@ACME.EXAMPLE",
        "/scim/v2/Users/%20user01@acme.example",
        "/scim/v2/Users/user01@acme.example%20",
    ] {
        let a = env.scim(path, SCIM_ACME).await;
        assert_eq!(a.status, 404, "{path}: {}", a.text);
    }
    let f = enc(r#"id eq "USER01@ACME.EXAMPLE""#);
    let a = env
        .scim(&format!("/scim/v2/Users?filter={f}"), SCIM_ACME)
        .await;
    assert_eq!(a.json["totalResults"], 0, "{}", a.text);
    let a = env
        .scim("/scim/v2/Users/user01@acme.example", SCIM_ACME)
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = env.get("/api/tenants/acme/users/USER01@ACME.EXAMPLE").await;
    assert_eq!(a.status, 200, "{}", a.text);
}
