//! The read-only SCIM `/Groups` over real HTTP (on sled, or PostgreSQL with
//! `ROSTER_TEST_STORE=postgres`): groups built from the users' `groups` field, members (inactive
//! users included, deleted users never), `displayName eq` filters, paging, `excludedAttributes`,
//! single groups, discovery, and `/Users?filter=groups eq` for a group's members.

#[path = "admin_support/mod.rs"]
mod admin_support;
mod support;

use admin_support::{Env, SCIM_ACME, SCIM_BETA};
use serde_json::Value;

const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

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

fn csv(n: usize) -> String {
    let mut s = String::from("email,first_name,last_name,groups\n");
    for i in 0..n {
        let groups = match i % 3 {
            0 => "Sales;All Staff",
            1 => "All Staff",
            _ => "R&D/Ops;All Staff;sales",
        };
        s.push_str(&format!("u{i}@acme.example,F{i},L{i},{groups}\n"));
    }
    s
}

fn names(list: &Value) -> Vec<String> {
    list["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_string())
        .collect()
}

fn member_ids(group: &Value) -> Vec<String> {
    group["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_string())
        .collect()
}

/// acme: u0..u5, then u5 left out (deactivated); beta: B1, B2 in "Ops", then B2 deleted.
async fn populated() -> Env {
    let env = Env::start().await;
    env.import("acme", &csv(6)).await;
    let r = env.import("acme", &csv(5)).await;
    assert_eq!(r.counts.deactivated, 1, "{r:?}");
    let beta = "mapping_code,first_name,last_name,email,groups\nB1,Ana,One,a@b.example,Ops\nB2,Bo,Two,b@b.example,Ops\n";
    env.import("beta", beta).await;
    let r = env
        .import("beta", &beta.replace("B2,Bo,Two,b@b.example,Ops\n", ""))
        .await;
    assert_eq!(r.counts.deleted, 1, "{r:?}");
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_list_members_filters_and_pages() {
    let env = populated().await;
    let all = env.scim("/scim/v2/Groups", SCIM_ACME).await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert!(all.content_type.starts_with("application/scim+json"));
    assert_eq!(all.json["schemas"][0], LIST);
    // Byte order of the names; names are case-exact ("Sales" and "sales" are two groups).
    assert_eq!(names(&all.json), ["All Staff", "R&D/Ops", "Sales", "sales"]);
    assert_eq!(all.json["totalResults"], 4);
    let staff = &all.json["Resources"][0];
    assert_eq!(staff["schemas"][0], GROUP);
    assert_eq!(staff["displayName"], "All Staff");
    // The deactivated u5 is still a member; members are in key order.
    let want: Vec<String> = (0..6).map(|i| format!("u{i}@acme.example")).collect();
    assert_eq!(member_ids(staff), want);
    assert_eq!(staff["members"][0]["display"], "F0 L0");
    assert_eq!(staff["members"][0]["type"], "User");
    assert!(staff["members"][0]["$ref"]
        .as_str()
        .unwrap()
        .ends_with("/scim/v2/Users/u0@acme.example"));
    assert!(all.json["Resources"][1]["meta"]["location"]
        .as_str()
        .unwrap()
        .ends_with("/scim/v2/Groups/R&D%2FOps"));

    let page = env
        .scim("/scim/v2/Groups?startIndex=2&count=2", SCIM_ACME)
        .await;
    assert_eq!(names(&page.json), ["R&D/Ops", "Sales"]);
    assert_eq!(
        (
            page.json["totalResults"].as_u64(),
            page.json["itemsPerPage"].as_u64()
        ),
        (Some(4), Some(2))
    );

    let f = format!("/scim/v2/Groups?filter={}", enc("displayName eq \"Sales\""));
    let sales = env.scim(&f, SCIM_ACME).await;
    assert_eq!(names(&sales.json), ["Sales"]);
    assert_eq!(
        member_ids(&sales.json["Resources"][0]),
        ["u0@acme.example", "u3@acme.example"]
    );

    let slim = env
        .scim("/scim/v2/Groups?excludedAttributes=members", SCIM_ACME)
        .await;
    assert_eq!(slim.json["totalResults"], 4);
    assert!(
        slim.json["Resources"][0].get("members").is_none(),
        "{}",
        slim.text
    );

    let bad = env
        .scim(
            &format!("/scim/v2/Groups?filter={}", enc("displayName co \"a\"")),
            SCIM_ACME,
        )
        .await;
    assert_eq!(
        (bad.status, bad.json["scimType"].as_str()),
        (400, Some("invalidFilter"))
    );

    // A tenant sees only its own groups; a deleted user is never a member.
    let beta = env.scim("/scim/v2/Groups", SCIM_BETA).await;
    assert_eq!(names(&beta.json), ["Ops"]);
    assert_eq!(member_ids(&beta.json["Resources"][0]), ["B1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_group_discovery_and_members_through_users() {
    let env = populated().await;
    let one = env
        .scim(&format!("/scim/v2/Groups/{}", enc("R&D/Ops")), SCIM_ACME)
        .await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.json["id"], "R&D/Ops");
    assert_eq!(
        member_ids(&one.json),
        ["u2@acme.example", "u5@acme.example"]
    );
    let slim = env
        .scim(
            "/scim/v2/Groups/Sales?excludedAttributes=members",
            SCIM_ACME,
        )
        .await;
    assert!(slim.json.get("members").is_none());
    let missing = env.scim("/scim/v2/Groups/Nobody", SCIM_ACME).await;
    assert_eq!(missing.status, 404);
    let other_tenant = env.scim("/scim/v2/Groups/Ops", SCIM_ACME).await;
    assert_eq!(other_tenant.status, 404);
    let write = env
        .http(
            "POST",
            "/scim/v2/Groups",
            Some(SCIM_ACME),
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(write.status, 501);

    let types = env.scim("/scim/v2/ResourceTypes", SCIM_ACME).await;
    assert_eq!(names(&types.json), ["User", "Group"]);
    let rt = env.scim("/scim/v2/ResourceTypes/Group", SCIM_ACME).await;
    assert_eq!(
        (rt.status, rt.json["endpoint"].as_str()),
        (200, Some("/Groups"))
    );
    let schemas = env.scim("/scim/v2/Schemas", SCIM_ACME).await;
    assert!(names(&schemas.json).contains(&GROUP.to_string()));
    let schema = env
        .scim(&format!("/scim/v2/Schemas/{GROUP}"), SCIM_ACME)
        .await;
    assert_eq!(schema.status, 200);

    // A large group's members page through /Users; each user shows its groups.
    let f = format!(
        "/scim/v2/Users?filter={}&count=2",
        enc("groups eq \"all staff\"")
    );
    let members = env.scim(&f, SCIM_ACME).await;
    assert_eq!(members.status, 200, "{}", members.text);
    assert_eq!(members.json["totalResults"], 6);
    assert_eq!(members.json["itemsPerPage"], 2);
    let u2 = env.scim("/scim/v2/Users/u2@acme.example", SCIM_ACME).await;
    let groups: Vec<&str> = u2.json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["value"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["R&D/Ops", "All Staff", "sales"]);
}

/// The `totalResults` of `/Users?filter=groups eq "<name>"` for beta (on PostgreSQL, from the
/// group counts when one group has that name in any case).
async fn beta_members(env: &Env, name: &str) -> u64 {
    let f = format!(
        "/scim/v2/Users?filter={}&count=1",
        enc(&format!("groups eq \"{name}\""))
    );
    let r = env.scim(&f, SCIM_BETA).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["totalResults"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_follow_imports_deletions_and_restores() {
    let env = populated().await;
    // B2 was deleted by the second import: Ops has one member.
    assert_eq!(beta_members(&env, "ops").await, 1);
    let one = env.scim("/scim/v2/Groups/Ops", SCIM_BETA).await;
    assert_eq!(member_ids(&one.json), ["B1"]);

    // Restored through the admin API: a member again, counted at once.
    let r = env.post("/api/tenants/beta/users/B2/restore", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(beta_members(&env, "OPS").await, 2);
    let one = env.scim("/scim/v2/Groups/Ops", SCIM_BETA).await;
    assert_eq!(member_ids(&one.json), ["B1", "B2"]);

    // Groups changed by an import: a new group appears with its member.
    let head = "mapping_code,first_name,last_name,email,groups\n";
    let both = format!("{head}B1,Ana,One,a@b.example,Ops;New\nB2,Bo,Two,b@b.example,Ops\n");
    env.import("beta", &both).await;
    let all = env.scim("/scim/v2/Groups", SCIM_BETA).await;
    assert_eq!(names(&all.json), ["New", "Ops"]);
    assert_eq!(all.json["totalResults"], 2);
    assert_eq!(beta_members(&env, "new").await, 1);

    // B1 left out: deleted, so New has no member and is gone. B2 lists Ops and OPS: two
    // groups, but `groups eq "ops"` (any case) counts B2 once.
    env.import("beta", &format!("{head}B2,Bo,Two,b@b.example,Ops;OPS\n"))
        .await;
    let all = env.scim("/scim/v2/Groups", SCIM_BETA).await;
    assert_eq!(names(&all.json), ["OPS", "Ops"]);
    assert_eq!(env.scim("/scim/v2/Groups/New", SCIM_BETA).await.status, 404);
    assert_eq!(beta_members(&env, "New").await, 0);
    assert_eq!(beta_members(&env, "Ops").await, 1);

    // "Sales" and "sales" are two groups of acme with different members.
    let f = format!(
        "/scim/v2/Users?filter={}&count=1",
        enc("groups eq \"SALES\"")
    );
    let sales = env.scim(&f, SCIM_ACME).await;
    assert_eq!(sales.json["totalResults"], 4, "{}", sales.text);
}
