//! The read-only SCIM 2.0 API over real HTTP: tenant tokens, filters, pagination, single
//! users, discovery documents, and error responses in the shapes of RFC 7644 §3.12.

#[path = "admin_support/mod.rs"]
mod admin_support;
mod support;

use admin_support::{users_csv, Env, SCIM_ACME, SCIM_BETA, TOKEN};
use serde_json::Value;

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// `/scim/v2/Users?filter=<f>` with the filter percent-encoded.
fn filter_path(f: &str) -> String {
    let enc: String = f
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("/scim/v2/Users?filter={enc}")
}

fn ids(list: &Value) -> Vec<String> {
    list["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn assert_scim_error(a: &admin_support::Answer, status: u16, scim_type: Option<&str>) {
    assert_eq!(a.status, status, "{}", a.text);
    assert_eq!(a.json["schemas"][0], ERROR, "{}", a.text);
    assert_eq!(a.json["status"], status.to_string(), "{}", a.text);
    assert!(!a.json["detail"].as_str().unwrap_or("").is_empty());
    if let Some(t) = scim_type {
        assert_eq!(a.json["scimType"], t, "{}", a.text);
    }
}

/// acme: 12 users (user03 inactive by its column); beta: 3 users, then one soft-deleted.
/// Wrong tokens count toward the address's login block (review s16 http, F2; tested in
/// admin_hardening): these tests send many of them on purpose, so the limit is high.
async fn populated() -> Env {
    let env = Env::start_edited(support::server_store::ServerStore::for_test(), |text| {
        text.replacen("[server]\n", "[server]\nmax_auth_failures = 1000\n", 1)
    })
    .await;
    let csv = users_csv(0, 12).replace(
        "email,first_name,last_name,mapping_code,username,phone,job_title,org_unit,manager_email\n",
        "email,first_name,last_name,mapping_code,username,phone,job_title,org_unit,manager_email,active\n",
    );
    let csv: String = csv
        .lines()
        .enumerate()
        .map(|(i, l)| match i {
            0 => format!("{l}\n"),
            4 => format!("{l},0\n"),
            _ => format!("{l},1\n"),
        })
        .collect();
    let r = env.import("acme", &csv).await;
    assert_eq!(r.counts.inserted, 12, "{:?}", r.messages);
    let beta = "mapping_code,first_name,last_name,email\nB1,Ana,One,ana@beta.example\nB2,Bo,Two,bo@beta.example\nB3,Cy,Three,cy@beta.example\n";
    env.import("beta", beta).await;
    let r = env
        .import("beta", &beta.replace("B3,Cy,Three,cy@beta.example\n", ""))
        .await;
    assert_eq!(r.counts.deleted, 1, "{r:?}");
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_needs_a_tenant_token_and_shows_only_that_tenant() {
    let env = populated().await;
    for path in [
        "/scim/v2/Users",
        "/scim/v2/Users/user01@acme.example",
        "/scim/v2/ServiceProviderConfig",
        "/scim/v2/ResourceTypes",
        "/scim/v2/ResourceTypes/User",
        "/scim/v2/Schemas",
        "/scim/v2/Bulk",
    ] {
        for token in [None, Some("wrong"), Some(TOKEN)] {
            let a = env.http("GET", path, token, None).await;
            assert_scim_error(&a, 401, None);
        }
        let a = env.http("POST", path, None, Some(b"{}".to_vec())).await;
        assert_scim_error(&a, 401, None);
    }
    let acme = env.scim("/scim/v2/Users", SCIM_ACME).await;
    assert_eq!(acme.json["totalResults"], 12);
    let beta = env.scim("/scim/v2/Users", SCIM_BETA).await;
    assert_eq!(
        beta.json["totalResults"], 2,
        "the soft-deleted user is not listed"
    );
    assert_eq!(ids(&beta.json), ["B1", "B2"]);
    // A tenant cannot read another's user by id.
    let cross = env.scim("/scim/v2/Users/B1", SCIM_ACME).await;
    assert_scim_error(&cross, 404, None);
    let deleted = env.scim("/scim/v2/Users/B3", SCIM_BETA).await;
    assert_scim_error(&deleted, 404, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_users_filters_pagination_and_mapping() {
    let env = populated().await;
    let all = env.scim("/scim/v2/Users", SCIM_ACME).await;
    assert_eq!(all.status, 200);
    assert!(all.content_type.starts_with("application/scim+json"));
    assert_eq!(all.json["schemas"][0], LIST);
    assert_eq!(all.json["startIndex"], 1);
    assert_eq!(all.json["itemsPerPage"], 12);

    // One resource in full.
    let u = env
        .scim("/scim/v2/Users/user01@acme.example", SCIM_ACME)
        .await;
    assert_eq!(u.status, 200, "{}", u.text);
    let r = &u.json;
    assert_eq!(r["schemas"], serde_json::json!([USER, ENTERPRISE]));
    assert_eq!(r["id"], "user01@acme.example");
    assert_eq!(r["userName"], "u01");
    assert_eq!(r["externalId"], "E001");
    assert_eq!(r["name"]["givenName"], "First01");
    assert_eq!(r["name"]["familyName"], "Last01");
    assert_eq!(r["emails"][0]["value"], "user01@acme.example");
    assert_eq!(r["phoneNumbers"][0]["value"], "+385 1 555 0001");
    assert_eq!(r["title"], "Clerk");
    assert_eq!(r["active"], true);
    assert_eq!(r[ENTERPRISE]["employeeNumber"], "E001");
    assert_eq!(r[ENTERPRISE]["department"], "HQ");
    assert_eq!(r[ENTERPRISE]["manager"]["value"], "user00@acme.example");
    assert_eq!(r["meta"]["resourceType"], "User");
    assert!(r["meta"]["location"]
        .as_str()
        .unwrap()
        .ends_with("/scim/v2/Users/user01@acme.example"));
    assert!(r.get("password").is_none());

    for (f, want) in [
        (r#"userName eq "U07""#, vec!["user07@acme.example"]),
        (r#"externalId eq "E004""#, vec!["user04@acme.example"]),
        (r#"externalId eq "e004""#, vec![]),
        (
            r#"emails.value eq "USER09@acme.example""#,
            vec!["user09@acme.example"],
        ),
        (
            r#"emails eq "user09@acme.example""#,
            vec!["user09@acme.example"],
        ),
        ("active eq false", vec!["user03@acme.example"]),
        (r#"active eq true and userName eq "u03""#, vec![]),
        (
            r#"id eq "user02@acme.example""#,
            vec!["user02@acme.example"],
        ),
        (r#"userName eq "x\" or \"1\" eq \"1""#, vec![]),
        // The full grammar (RFC 7644 §3.4.2.2): operators, or, not, groups, value paths.
        (
            r#"userName sw "u1""#,
            vec!["user10@acme.example", "user11@acme.example"],
        ),
        (
            r#"userName eq "u01" or userName eq "u02""#,
            vec!["user01@acme.example", "user02@acme.example"],
        ),
        (
            r#"not (active eq true) or (externalId ew "11" and title pr)"#,
            vec!["user03@acme.example", "user11@acme.example"],
        ),
        (
            r#"emails[type eq "work" and value co "R10@ACME"]"#,
            vec!["user10@acme.example"],
        ),
        (r#"emails[type eq "home"]"#, vec![]),
        (
            r#"name.familyName gt "Last09" and phoneNumbers pr"#,
            vec!["user10@acme.example", "user11@acme.example"],
        ),
        (r#"meta.lastModified lt "2000-01-01T00:00:00Z""#, vec![]),
        // null is absent (RFC 7643 §2.5): every user here has a title.
        ("title eq null", vec![]),
        (
            r#"userName eq "u01" and title ne null"#,
            vec!["user01@acme.example"],
        ),
    ] {
        let a = env.scim(&filter_path(f), SCIM_ACME).await;
        assert_eq!(a.status, 200, "{f}: {}", a.text);
        assert_eq!(ids(&a.json), want, "{f}");
        assert_eq!(a.json["totalResults"], want.len(), "{f}");
    }
    let inactive = env
        .scim("/scim/v2/Users/user03@acme.example", SCIM_ACME)
        .await;
    assert_eq!(inactive.json["active"], false);
    let active = env.scim(&filter_path("active eq true"), SCIM_ACME).await;
    assert_eq!(active.json["totalResults"], 11);

    // Pagination: 1-based startIndex, count, totalResults of the whole result.
    let page = env
        .scim("/scim/v2/Users?startIndex=3&count=4", SCIM_ACME)
        .await;
    assert_eq!(page.json["totalResults"], 12);
    assert_eq!(page.json["startIndex"], 3);
    assert_eq!(page.json["itemsPerPage"], 4);
    assert_eq!(
        ids(&page.json),
        (2..6)
            .map(|i| format!("user{i:02}@acme.example"))
            .collect::<Vec<_>>()
    );
    let tail = env
        .scim("/scim/v2/Users?startIndex=11&count=10", SCIM_ACME)
        .await;
    assert_eq!(tail.json["itemsPerPage"], 2);
    let past = env.scim("/scim/v2/Users?startIndex=500", SCIM_ACME).await;
    assert_eq!(
        (
            past.json["itemsPerPage"].as_u64(),
            past.json["totalResults"].as_u64()
        ),
        (Some(0), Some(12))
    );
    for (q, items, start) in [
        ("count=0", 0, 1),
        ("count=-3", 0, 1),
        ("startIndex=0&count=2", 2, 1),
        ("startIndex=-9&count=2", 2, 1),
        ("count=99999999999999999999999999999999", 12, 1),
        ("count=1000000", 12, 1),
    ] {
        let a = env.scim(&format!("/scim/v2/Users?{q}"), SCIM_ACME).await;
        assert_eq!(a.status, 200, "{q}: {}", a.text);
        assert_eq!(a.json["itemsPerPage"], items, "{q}");
        assert_eq!(a.json["startIndex"], start, "{q}");
        assert_eq!(a.json["totalResults"], 12, "{q}");
    }
    for q in ["count=ten", "startIndex=1.5"] {
        let a = env.scim(&format!("/scim/v2/Users?{q}"), SCIM_ACME).await;
        assert_scim_error(&a, 400, Some("invalidValue"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_discovery_documents() {
    let env = Env::start().await;
    let spc = env.scim("/scim/v2/ServiceProviderConfig", SCIM_ACME).await;
    assert_eq!(spc.status, 200);
    assert_eq!(
        spc.json["schemas"][0],
        "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
    );
    assert_eq!(spc.json["filter"]["supported"], true);
    assert!(spc.json["filter"]["maxResults"].as_u64().unwrap() >= 100);
    for feature in ["patch", "bulk", "changePassword", "sort", "etag"] {
        assert_eq!(spc.json[feature]["supported"], false, "{feature}");
    }
    assert_eq!(
        spc.json["authenticationSchemes"][0]["type"],
        "oauthbearertoken"
    );

    let rts = env.scim("/scim/v2/ResourceTypes", SCIM_ACME).await;
    assert_eq!(rts.json["schemas"][0], LIST);
    assert_eq!(rts.json["totalResults"], 2, "User and Group");
    let rt = &rts.json["Resources"][0];
    assert_eq!(
        (rt["id"].as_str(), rt["endpoint"].as_str()),
        (Some("User"), Some("/Users"))
    );
    assert_eq!(rt["schema"], USER);
    assert_eq!(rt["schemaExtensions"][0]["schema"], ENTERPRISE);
    let one = env.scim("/scim/v2/ResourceTypes/User", SCIM_ACME).await;
    assert_eq!(one.json["id"], "User");
    assert_scim_error(
        &env.scim("/scim/v2/ResourceTypes/Nope", SCIM_ACME).await,
        404,
        None,
    );

    let schemas = env.scim("/scim/v2/Schemas", SCIM_ACME).await;
    let mut ids: Vec<String> = schemas.json["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let group = "urn:ietf:params:scim:schemas:core:2.0:Group";
    assert_eq!(ids, [group, USER, ENTERPRISE]);
    for id in [USER, ENTERPRISE, group] {
        let s = env.scim(&format!("/scim/v2/Schemas/{id}"), SCIM_ACME).await;
        assert_eq!(s.status, 200);
        assert!(!s.json["attributes"].as_array().unwrap().is_empty());
    }
    assert_scim_error(
        &env.scim("/scim/v2/Schemas/urn:nope", SCIM_ACME).await,
        404,
        None,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_errors_are_scim_shaped_and_never_500() {
    let env = populated().await;
    for f in [
        r#"userName zz "u0""#,
        r#"userName eq "u01"; DROP TABLE users; --"#,
        r#"userName eq "u01" ) or ( 1 eq 1"#,
        r#"not active eq false"#,
        r#"meta.lastModified gt "yesterday""#,
        r#"((((((((((((((((((userName pr))))))))))))))))))"#,
        r#"userName eq 'u01'"#,
        r#"userName eq "u01"#,
        r#"password eq "secret""#,
        r#"emails[type eq "work"].value eq "x""#,
        "userName eq \"\\u0000\\\"",
        "active eq 1",
        "userName",
        "' OR 1=1 --",
        "${jndi:ldap://x}",
    ] {
        let a = env.scim(&filter_path(f), SCIM_ACME).await;
        assert_scim_error(&a, 400, Some("invalidFilter"));
    }
    let long = format!(r#"userName eq "{}""#, "a".repeat(5000));
    assert_scim_error(
        &env.scim(&filter_path(&long), SCIM_ACME).await,
        400,
        Some("invalidFilter"),
    );

    let body = br#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x"}"#;
    for (method, path) in [
        ("POST", "/scim/v2/Users"),
        ("PUT", "/scim/v2/Users/user01@acme.example"),
        ("PATCH", "/scim/v2/Users/user01@acme.example"),
        ("DELETE", "/scim/v2/Users/user01@acme.example"),
        ("POST", "/scim/v2/Bulk"),
        ("POST", "/scim/v2/Users/.search"),
    ] {
        let b = (method != "DELETE").then(|| body.to_vec());
        let a = env.http(method, path, Some(SCIM_ACME), b).await;
        assert_scim_error(&a, 501, None);
    }
    let malformed = env
        .http(
            "POST",
            "/scim/v2/Users",
            Some(SCIM_ACME),
            Some(b"{not json".to_vec()),
        )
        .await;
    assert_scim_error(&malformed, 501, None);
    let options = env
        .http("OPTIONS", "/scim/v2/Users", Some(SCIM_ACME), None)
        .await;
    assert_scim_error(&options, 405, None);
    assert_eq!(options.allow, "GET, HEAD", "a 405 says what is allowed");
    assert_scim_error(&env.scim("/scim/v2/Nope", SCIM_ACME).await, 404, None);
    // A base URL with a trailing slash is SCIM's, token first (review s21: the admin API's 404).
    assert_scim_error(&env.scim("/scim/v2/", SCIM_ACME).await, 404, None);
    assert_scim_error(&env.http("GET", "/scim/v2/", None, None).await, 401, None);
    // So is a base URL without the version.
    for base in ["/scim", "/scim/"] {
        assert_scim_error(&env.scim(base, SCIM_ACME).await, 404, None);
        assert_scim_error(&env.http("GET", base, None, None).await, 401, None);
    }
    // RFC 7644 §3.11: a service provider without /Me answers 501; the token comes first.
    let me = env.scim("/scim/v2/Me", SCIM_ACME).await;
    assert_scim_error(&me, 501, None);
    assert!(me.text.contains("/Me is not supported"), "{}", me.text);
    assert_scim_error(&env.http("GET", "/scim/v2/Me", None, None).await, 401, None);
    assert_scim_error(
        &env.scim("/scim/v2/Users/nobody", SCIM_ACME).await,
        404,
        None,
    );

    // The user was not changed, and the API still answers.
    let u = env
        .scim("/scim/v2/Users/user01@acme.example", SCIM_ACME)
        .await;
    assert_eq!((u.status, u.json["userName"].as_str()), (200, Some("u01")));
}

/// RFC 7644 §4: the discovery endpoints are read-only; a write method is 405 (with `Allow`),
/// not 501, and a read still works afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_discovery_endpoints_answer_writes_with_405() {
    let env = populated().await;
    let body = br#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"]}"#;
    for path in [
        "/scim/v2/ServiceProviderConfig",
        "/scim/v2/ResourceTypes",
        "/scim/v2/ResourceTypes/User",
        "/scim/v2/Schemas",
        "/scim/v2/Schemas/urn:ietf:params:scim:schemas:core:2.0:User",
    ] {
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            let b = (method != "DELETE").then(|| body.to_vec());
            let a = env.http(method, path, Some(SCIM_ACME), b).await;
            assert_scim_error(&a, 405, None);
            assert!(a.text.contains("read-only"), "{method} {path}: {}", a.text);
        }
        // Without a token it is still 401 first.
        let a = env.http("POST", path, None, Some(body.to_vec())).await;
        assert_scim_error(&a, 401, None);
        assert_eq!(env.scim(path, SCIM_ACME).await.status, 200, "{path}");
    }
}

/// A user whose key is `.` or `..` has a `meta.location` that leads to it: the segment is
/// spelled `%2E` / `%2E%2E`, which no client takes for "this" or "the parent" folder (review
/// of 2026-11-30, console F4: the location and the console's links went to another page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_dots_has_a_location_that_leads_to_it() {
    let env = Env::start().await;
    let beta = "mapping_code,first_name,last_name,email\n..,Dot,Dot,dots@beta.example\n.,One,Dot,dot@beta.example\n";
    let r = env.import("beta", beta).await;
    assert_eq!(r.counts.inserted, 2, "{:?}", r.messages);
    let list = env.scim("/scim/v2/Users", SCIM_BETA).await;
    assert_eq!(list.status, 200, "{}", list.text);
    for (key, segment) in [("..", "%2E%2E"), (".", "%2E")] {
        let user = list.json["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == key)
            .unwrap_or_else(|| panic!("{key}: {}", list.text));
        let location = user["meta"]["location"].as_str().unwrap();
        assert!(
            location.ends_with(&format!("/scim/v2/Users/{segment}")),
            "{location}"
        );
        let path = &location[location.find("/scim/v2/").unwrap()..];
        let one = env.scim(path, SCIM_BETA).await;
        assert_eq!(one.status, 200, "{path}: {}", one.text);
        assert_eq!(one.json["id"], key, "{path}");
    }
}

/// With an https `[admin] public_url` (a TLS proxy in front), `meta.location` and every `$ref`
/// say `https://`, not `http://` (review s16 http, F10); without one they stay `http://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_take_the_scheme_of_public_url() {
    let env = Env::start_edited(support::server_store::ServerStore::for_test(), |text| {
        text.replacen(
            "[admin]\n",
            "[admin]\npublic_url = \"https://roster.example.com\"\n",
            1,
        )
    })
    .await;
    let csv = users_csv(0, 3)
        .replacen("manager_email\n", "manager_email,groups\n", 1)
        .replace("@acme.example\n", "@acme.example,Staff\n");
    let r = env.import("acme", &csv).await;
    assert_eq!(r.counts.inserted, 3, "{:?}", r.messages);
    let list = env.scim("/scim/v2/Users", SCIM_ACME).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let host = env.admin_url().replace("http://", "https://");
    let mut seen = 0;
    for u in list.json["Resources"].as_array().unwrap() {
        let location = u["meta"]["location"].as_str().unwrap();
        assert!(
            location.starts_with(&format!("{host}/scim/v2/Users/")),
            "{location}"
        );
        for g in u["groups"].as_array().into_iter().flatten() {
            assert!(g["$ref"].as_str().unwrap().starts_with("https://"), "{g}");
            seen += 1;
        }
        if let Some(r) = u[ENTERPRISE]["manager"]["$ref"].as_str() {
            assert!(r.starts_with("https://"), "{r}");
            seen += 1;
        }
    }
    assert!(seen > 0, "groups or a manager with a $ref: {}", list.text);
    let groups = env.scim("/scim/v2/Groups", SCIM_ACME).await;
    let g = &groups.json["Resources"][0];
    assert!(
        g["meta"]["location"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{}",
        groups.text
    );
    assert!(
        g["members"][0]["$ref"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{}",
        groups.text
    );
    let spc = env.scim("/scim/v2/ServiceProviderConfig", SCIM_ACME).await;
    assert!(
        spc.json["meta"]["location"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{}",
        spc.text
    );
    // Without public_url: plain http, as before.
    let plain = Env::start().await;
    plain.import("acme", &users_csv(0, 1)).await;
    let list = plain.scim("/scim/v2/Users", SCIM_ACME).await;
    let location = list.json["Resources"][0]["meta"]["location"]
        .as_str()
        .unwrap();
    assert!(location.starts_with("http://127.0.0.1:"), "{location}");
}
