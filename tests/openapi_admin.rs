//! The OpenAPI document of the admin API is served at `/api/openapi.json` (behind the token)
//! and is true: every route of the document is called on a real server, and each status and
//! body is checked against the document by an independent validator (openapi-core, from pip:
//! tests/openapi/install.sh, run by this test when missing; tests/openapi/check.py). Routes the
//! document describes but this build does not serve yet are skipped by name, never silently.

#[path = "admin_support/mod.rs"]
mod admin_support;
mod support;

use admin_support::{users_csv, Env, TOKEN};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// Routes other helpers of issue 12 add; until merged they may be missing from this build.
const LATER: &[&str] = &[
    "/api/tenants/{tenant}/changes",
    "/api/tenants/{tenant}/users/{key}/changes",
    "/api/tenants/{tenant}/webhooks",
    "/api/tenants/{tenant}/scim-push",
    "/api/tenants/{tenant}/scim-push/reconcile",
];

/// One call: (method, path template of the document, path, query, body).
type Call = (&'static str, &'static str, String, String, Option<Vec<u8>>);

/// Every call the test makes.
fn calls(import_id: &str) -> Vec<Call> {
    let csv = users_csv(0, 3).into_bytes();
    let mut v = Vec::new();
    let mut call = |m, t, p: &str, q: &str, b: Option<Vec<u8>>| {
        v.push((m, t, p.to_string(), q.to_string(), b))
    };
    call("GET", "/health", "/health", "", None);
    call("GET", "/metrics", "/metrics", "", None);
    call("GET", "/api/openapi.json", "/api/openapi.json", "", None);
    call("GET", "/api/tenants", "/api/tenants", "", None);
    call("GET", "/api/progress", "/api/progress", "", None);
    call("GET", "/api/nodes", "/api/nodes", "", None);
    call(
        "GET",
        "/api/login-blocks",
        "/api/login-blocks",
        "limit=5",
        None,
    );
    call(
        "GET",
        "/api/login-blocks",
        "/api/login-blocks",
        "limit=x",
        None,
    );
    let lift = "/api/login-blocks/{scope}/{subject}/lift";
    call(
        "POST",
        lift,
        "/api/login-blocks/address/127.0.0.1/lift",
        "",
        None,
    );
    call("POST", lift, "/api/login-blocks/tenant/acme/lift", "", None);
    call("POST", lift, "/api/login-blocks/planet/acme/lift", "", None);
    call(
        "POST",
        lift,
        "/api/login-blocks/address/not-an-address/lift",
        "",
        None,
    );
    let imports = "/api/tenants/{tenant}/imports";
    call("GET", imports, "/api/tenants/acme/imports", "limit=5", None);
    call("GET", imports, "/api/tenants/acme/imports", "limit=x", None);
    call("GET", imports, "/api/tenants/nobody/imports", "", None);
    let one = "/api/tenants/{tenant}/imports/{id}";
    call(
        "GET",
        one,
        &format!("/api/tenants/acme/imports/{import_id}"),
        "",
        None,
    );
    call("GET", one, "/api/tenants/acme/imports/nope", "", None);
    let approve = "/api/tenants/{tenant}/imports/{id}/approve";
    let approve_path = format!("/api/tenants/acme/imports/{import_id}/approve");
    call("POST", approve, &approve_path, "", None);
    call("POST", approve, &approve_path, "", Some(b"[1]".to_vec()));
    let run_now = "/api/tenants/{tenant}/run-now";
    call(
        "POST",
        run_now,
        "/api/tenants/acme/run-now",
        "",
        Some(b"{}".to_vec()),
    );
    call(
        "GET",
        "/api/tenants/{tenant}/today",
        "/api/tenants/sched/today",
        "",
        None,
    );
    let preview = "/api/tenants/{tenant}/preview";
    call(
        "POST",
        preview,
        "/api/tenants/acme/preview",
        "file=x.csv",
        Some(csv),
    );
    call(
        "POST",
        preview,
        "/api/tenants/acme/preview",
        "",
        Some(b"\xff\xfe\x00".to_vec()),
    );
    let progress = "/api/tenants/{tenant}/progress";
    call("GET", progress, "/api/tenants/acme/progress", "", None);
    let users = "/api/tenants/{tenant}/users";
    call("GET", users, "/api/tenants/acme/users", "", None);
    call(
        "GET",
        users,
        "/api/tenants/beta/users",
        "status=deleted",
        None,
    );
    call(
        "GET",
        users,
        "/api/tenants/acme/users",
        "status=bogus",
        None,
    );
    let user = "/api/tenants/{tenant}/users/{key}";
    call(
        "GET",
        user,
        "/api/tenants/acme/users/user01@acme.example",
        "",
        None,
    );
    call("GET", user, "/api/tenants/acme/users/nobody", "", None);
    let restore = "/api/tenants/{tenant}/users/{key}/restore";
    call(
        "POST",
        restore,
        "/api/tenants/beta/users/B3/restore",
        "",
        None,
    );
    call(
        "POST",
        restore,
        "/api/tenants/acme/users/nobody/restore",
        "",
        None,
    );
    let changes = "/api/tenants/{tenant}/changes";
    call(
        "GET",
        changes,
        "/api/tenants/acme/changes",
        "after=0&limit=10",
        None,
    );
    let user_changes = "/api/tenants/{tenant}/users/{key}/changes";
    call(
        "GET",
        user_changes,
        "/api/tenants/acme/users/user01@acme.example/changes",
        "",
        None,
    );
    call(
        "GET",
        "/api/tenants/{tenant}/webhooks",
        "/api/tenants/acme/webhooks",
        "",
        None,
    );
    let enable = "/api/tenants/{tenant}/webhooks/{index}/enable";
    call(
        "POST",
        enable,
        "/api/tenants/acme/webhooks/0/enable",
        "",
        None,
    );
    call(
        "POST",
        enable,
        "/api/tenants/nobody/webhooks/0/enable",
        "",
        None,
    );
    call(
        "GET",
        "/api/tenants/{tenant}/scim-push",
        "/api/tenants/acme/scim-push",
        "",
        None,
    );
    let reconcile = "/api/tenants/{tenant}/scim-push/reconcile";
    call(
        "POST",
        reconcile,
        "/api/tenants/acme/scim-push/reconcile",
        "dry_run=true",
        None,
    );
    v
}

/// Error answers the document must describe too (review s16 http, F4): a `limit` that is not a
/// number, bodies over the 64 KiB JSON limit, a body that is not a JSON object, path segments
/// that are not UTF-8, and methods a route does not take (405, checked against
/// `components/responses/MethodNotAllowed`).
fn error_calls(import_id: &str) -> Vec<Call> {
    let big = || Some(vec![b'x'; 70 * 1024]);
    let approve = "/api/tenants/{tenant}/imports/{id}/approve";
    let restore = "/api/tenants/{tenant}/users/{key}/restore";
    let enable = "/api/tenants/{tenant}/webhooks/{index}/enable";
    let user_changes = "/api/tenants/{tenant}/users/{key}/changes";
    let mut v: Vec<Call> = Vec::new();
    let mut call =
        |m, t, p: &str, b: Option<Vec<u8>>| v.push((m, t, p.to_string(), String::new(), b));
    let approve_path = format!("/api/tenants/acme/imports/{import_id}/approve");
    call("POST", approve, &approve_path, big());
    call("POST", restore, "/api/tenants/beta/users/B3/restore", big());
    call(
        "POST",
        "/api/tenants/{tenant}/run-now",
        "/api/tenants/acme/run-now",
        big(),
    );
    call("POST", enable, "/api/tenants/acme/webhooks/0/enable", big());
    call(
        "POST",
        enable,
        "/api/tenants/acme/webhooks/0/enable",
        Some(b"[1]".to_vec()),
    );
    call("POST", enable, "/api/tenants/%FF/webhooks/0/enable", None);
    call(
        "POST",
        "/api/tenants/{tenant}/scim-push/reconcile",
        "/api/tenants/acme/scim-push/reconcile",
        Some(b"[1]".to_vec()),
    );
    call(
        "DELETE",
        "/api/tenants/{tenant}/webhooks",
        "/api/tenants/acme/webhooks",
        None,
    );
    call("GET", enable, "/api/tenants/acme/webhooks/0/enable", None);
    call(
        "DELETE",
        "/api/tenants/{tenant}/users",
        "/api/tenants/acme/users",
        None,
    );
    call("PUT", "/api/tenants", "/api/tenants", None);
    for (t, p) in [
        ("/api/tenants/{tenant}/today", "/api/tenants/%FF/today"),
        (
            "/api/tenants/{tenant}/imports/{id}",
            "/api/tenants/acme/imports/%FF",
        ),
        (
            "/api/tenants/{tenant}/progress",
            "/api/tenants/%FF/progress",
        ),
        (
            "/api/tenants/{tenant}/scim-push",
            "/api/tenants/%FF/scim-push",
        ),
        (
            "/api/tenants/{tenant}/users/{key}",
            "/api/tenants/acme/users/%FF",
        ),
        (
            "/api/tenants/{tenant}/webhooks",
            "/api/tenants/%FF/webhooks",
        ),
    ] {
        call("GET", t, p, None);
    }
    let user = "/api/tenants/acme/users/user01@acme.example/changes";
    v.push(("GET", user_changes, user.into(), "limit=abc".into(), None));
    v
}

/// `GET /api/tenants` with the token, addressed to `Host: rebound.example`, as an exchange.
async fn misdirected(env: &Env) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(env.server().admin.addr)
        .await
        .unwrap();
    let ask = format!(
        "GET /api/tenants HTTP/1.1\r\nHost: rebound.example\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(ask.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    json!({
        "method": "GET", "template": "/api/tenants", "path": "/api/tenants", "query": "",
        "status": status, "content_type": content_type, "body": body,
    })
}

fn install_validator() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/install.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_the_document_says() {
    install_validator();
    let env = Env::start().await;
    let first = env.import("acme", &users_csv(0, 5)).await;
    let beta = "mapping_code,first_name,last_name,email\nB1,Ana,One,a@b.example\nB3,Cy,Three,c@b.example\n";
    env.import("beta", beta).await;
    env.import(
        "beta",
        "mapping_code,first_name,last_name,email\nB1,Ana,One,a@b.example\n",
    )
    .await;

    // The document needs the token like every /api route, and is the compiled-in file.
    let anonymous = env.http("GET", "/api/openapi.json", None, None).await;
    assert_eq!(anonymous.status, 401);
    let served = env.get("/api/openapi.json").await;
    assert_eq!(served.status, 200);
    assert!(served.content_type.starts_with("application/json"));
    assert_eq!(served.json["openapi"], "3.1.0");

    let mut exchanges = Vec::new();
    let mut asked = calls(&first.id);
    asked.extend(error_calls(&first.id));
    for (method, template, path, query, body) in asked {
        let full = if query.is_empty() {
            path.clone()
        } else {
            format!("{path}?{query}")
        };
        let a = env.http(method, &full, Some(TOKEN), body).await;
        if a.status >= 400 {
            assert!(
                a.content_type.starts_with("application/json") && a.json["error"].is_string(),
                "{method} {full}: an error is JSON {{\"error\"}}: {} {:?} {}",
                a.status,
                a.content_type,
                a.text
            );
        }
        exchanges.push(json!({
            "method": method, "template": template, "path": path, "query": query,
            "status": a.status, "content_type": a.content_type, "body": a.text,
        }));
    }
    // A request addressed to another host name is a documented 421 (the rebinding defence).
    let misdirected = misdirected(&env).await;
    assert_eq!(misdirected["status"], 421, "{misdirected}");
    exchanges.push(misdirected);
    // A call without the token is a documented 401.
    let a = env.http("GET", "/api/tenants", None, None).await;
    exchanges.push(json!({
        "method": "GET", "template": "/api/tenants", "path": "/api/tenants", "query": "",
        "status": a.status, "content_type": a.content_type, "body": a.text,
    }));

    let dir = tempfile::tempdir().unwrap();
    let (doc, xs) = (
        dir.path().join("openapi.json"),
        dir.path().join("exchanges.json"),
    );
    std::fs::write(&doc, &served.text).unwrap();
    std::fs::write(&xs, serde_json::to_vec(&exchanges).unwrap()).unwrap();
    let check = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/check.py");
    let out = Command::new("python3")
        .arg(&check)
        .arg(&doc)
        .arg(&xs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the OpenAPI check failed:\n{stdout}");
    let summary: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    let skipped: Vec<&str> = summary["skipped"]
        .as_array()
        .expect("a summary line")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for s in &skipped {
        assert!(
            LATER.contains(s),
            "{s} is missing from the server but not expected to be"
        );
    }
    eprintln!("routes skipped (not in this build): {skipped:?}");
}
