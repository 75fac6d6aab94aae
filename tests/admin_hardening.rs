//! The admin/console listener and the sign-in under abuse, over real sockets against a whole
//! running Roster: a burst of concurrent wrong passwords (console and SFTP) gets no more
//! checks than `max_auth_failures`; half-sent requests, idle keep-alive connections and stalled
//! bodies are closed; connections over the caps are closed at once while SFTP still logs in;
//! a tenant signing in over and over does not sign the operator out; the session cookie lasts
//! what docs/console.md says; wrong bearer tokens block their address (and only it); every
//! answer carries the security headers.

#[path = "admin_support/mod.rs"]
mod admin_support;
#[path = "hardening_support/mod.rs"]
mod hardening_support;
mod support;

use admin_support::TOKEN;
use hardening_support::*;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use support::sftp::AnyHost;
use tokio::io::AsyncWriteExt;

/// 50 wrong portal passwords for beta from one address at once, on connections opened first:
/// only `max_auth_failures` (10, the default) are checked (401); the rest are refused unchecked
/// (429). The right password, sent once the first answer is back, does not get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_console_sign_ins_gets_at_most_max_auth_failures_checks() {
    let env = start("", "").await;
    let admin = env.server().admin.addr;
    let from = IpAddr::from([127, 0, 0, 21]);
    let mut conns = Vec::new();
    for _ in 0..50 {
        conns.push(tcp_from(from, admin).await);
    }
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let first_tx = Arc::new(Mutex::new(Some(first_tx)));
    let mut tasks = Vec::new();
    for (i, mut s) in conns.into_iter().enumerate() {
        let first_tx = first_tx.clone();
        tasks.push(tokio::spawn(async move {
            s.write_all(tenant_sign_in(&format!("guess-{i}")).as_bytes())
                .await
                .unwrap();
            let raw = read_to_close(&mut s, 120).await.expect("an answer");
            if let Some(tx) = first_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
            parse(&raw).status
        }));
    }
    first_rx.await.unwrap();
    let right = request(from, admin, &tenant_sign_in(BETA_PASSWORD)).await;
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        (1..=10).contains(&checked),
        "wrong passwords checked: {checked} (at most max_auth_failures = 10): {statuses:?}"
    );
    assert_eq!(checked + refused, 50, "{statuses:?}");
    assert_eq!(
        log_lines_with(&["console tenant sign-in failed", "127.0.0.21"]),
        checked,
        "every 401 is one check, and no other check was made"
    );
    assert_eq!(
        right.status, 429,
        "the right password in the same burst is refused unchecked: {}",
        right.text
    );
    assert!(session_cookie(&right).is_none());
}

/// A password login as `user` from `from`; true when accepted.
async fn sftp_password(from: IpAddr, to: SocketAddr, user: &str, password: &str) -> bool {
    let stream = tcp_from(from, to).await;
    let config = Arc::new(russh::client::Config::default());
    let Ok(mut ssh) = russh::client::connect_stream(config, stream, AnyHost).await else {
        return false;
    };
    ssh.authenticate_password(user, password)
        .await
        .is_ok_and(|r| r.success())
}

/// The same at the SFTP door: 30 concurrent wrong passwords for beta from one address get at
/// most `max_auth_failures` checks (counted in the server's log), and the right password
/// afterwards is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_sftp_password_logins_gets_at_most_max_auth_failures_checks() {
    let env = start("", "").await;
    let sftp = env.server().sftp.addr;
    let from = IpAddr::from([127, 0, 0, 22]);
    let mut tasks = Vec::new();
    for i in 0..30 {
        tasks.push(tokio::spawn(async move {
            sftp_password(from, sftp, "beta", &format!("guess-{i}")).await
        }));
    }
    for t in tasks {
        assert!(!t.await.unwrap(), "a wrong password was accepted");
    }
    let checked = log_lines_with(&["failed password login", "peer=127.0.0.22:"]);
    assert!(
        (1..=10).contains(&checked),
        "wrong SFTP passwords checked: {checked} (at most max_auth_failures = 10)"
    );
    assert!(
        !sftp_password(from, sftp, "beta", BETA_PASSWORD).await,
        "the address is blocked"
    );
    // Another address still logs in (the tenant saw at most 10 failures: blocked for
    // passwords, so with the key).
    let other = IpAddr::from([127, 0, 0, 23]);
    let stream = tcp_from(other, sftp).await;
    let mut ssh =
        russh::client::connect_stream(Arc::new(russh::client::Config::default()), stream, AnyHost)
            .await
            .unwrap();
    let key = russh::keys::PrivateKeyWithHashAlg::new(Arc::new(env.key.clone()), None);
    assert!(ssh
        .authenticate_publickey("beta", key)
        .await
        .unwrap()
        .success());
}

/// With `client_timeout_secs = 2`: a half-sent request head, a silent connection, an idle
/// keep-alive connection and a stalled body are all closed (well within 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_closed() {
    let env = start("", "client_timeout_secs = 2").await;
    let admin = env.server().admin.addr;
    let from = IpAddr::from([127, 0, 0, 24]);

    let mut half = tcp_from(from, admin).await;
    half.write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut silent = tcp_from(from, admin).await;

    let mut kept_alive = tcp_from(from, admin).await;
    kept_alive
        .write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();

    let mut stalled = tcp_from(from, admin).await;
    stalled
        .write_all(
            b"POST /login/tenant HTTP/1.1\r\nHost: localhost\r\nCookie: roster_login=a\r\n\
              Content-Type: application/x-www-form-urlencoded\r\n\
              Content-Length: 1000\r\n\r\ncsrf=a&ten",
        )
        .await
        .unwrap();

    assert!(
        read_to_close(&mut half, 30).await.is_some(),
        "a half-sent request head must be closed"
    );
    assert!(
        read_to_close(&mut silent, 30).await.is_some(),
        "a silent connection must be closed"
    );
    let answered = read_to_close(&mut kept_alive, 30)
        .await
        .expect("an idle keep-alive connection must be closed after its answer");
    assert_eq!(
        parse(&answered).status,
        200,
        "the keep-alive request itself was answered"
    );
    let cut = read_to_close(&mut stalled, 30)
        .await
        .expect("a stalled request body must be cut off");
    let cut = parse(&cut);
    assert!(
        cut.status == 0 || cut.status >= 400,
        "a stalled body is not taken as a sign-in: {}",
        cut.text
    );

    // A normal request still works.
    let ok = request(from, admin, &get("/login", "")).await;
    assert_eq!(ok.status, 200);
}

/// With `max_connections = 8` and `max_connections_per_address = 4`: a fifth connection from
/// one address is closed at once; with 8 silent connections open, a ninth from another address
/// takes the place of the oldest silent one (closed) and is served; SFTP still logs in
/// meanwhile; the other admitted connections are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_caps_are_closed_and_sftp_still_logs_in() {
    let env = start(
        "",
        "max_connections = 8\nmax_connections_per_address = 4\nclient_timeout_secs = 60",
    )
    .await;
    let admin = env.server().admin.addr;
    let (a, b, c) = (
        IpAddr::from([127, 0, 0, 31]),
        IpAddr::from([127, 0, 0, 32]),
        IpAddr::from([127, 0, 0, 33]),
    );
    let mut kept = Vec::new();
    for _ in 0..4 {
        kept.push(tcp_from(a, admin).await);
    }
    let mut over = tcp_from(a, admin).await;
    assert!(
        closed_at_once(&mut over).await,
        "a fifth connection from one address is closed"
    );
    for _ in 0..4 {
        kept.push(tcp_from(b, admin).await);
    }
    let health = format!(
        "GET /health HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
         Connection: close\r\n\r\n"
    );
    let ninth = request(c, admin, &health).await;
    assert_eq!(
        ninth.status, 200,
        "a ninth connection is served: {}",
        ninth.text
    );
    let mut oldest = kept.remove(0);
    assert!(
        closed_at_once(&mut oldest).await,
        "the oldest silent connection gave its place"
    );

    // SFTP is not touched by the admin listener's connections.
    env.upload("acme", "hello.txt", b"hello").await;

    // The other admitted connections are served.
    let mut next = kept.remove(0);
    next.write_all(health.as_bytes()).await.unwrap();
    let answer = parse(&read_to_close(&mut next, 30).await.unwrap());
    assert_eq!(answer.status, 200, "{}", answer.text);
}

/// Signs in as the operator over HTTP; the session's `Cookie` value.
async fn operator_session(from: IpAddr, admin: SocketAddr) -> String {
    let body = format!("csrf=t0k3n&token={TOKEN}");
    let req = format!(
        "POST /login/operator HTTP/1.1\r\nHost: localhost\r\nCookie: roster_login=t0k3n\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let a = request(from, admin, &req).await;
    assert_eq!(a.status, 303, "{}", a.text);
    session_cookie(&a).expect("a session cookie")
}

/// A tenant signing in 40 times (more than its 32 sessions) ends only its own oldest
/// session; the operator stays signed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_signing_in_over_and_over_keeps_the_operator_signed_in() {
    let env = start("", "").await;
    let admin = env.server().admin.addr;
    let from = IpAddr::from([127, 0, 0, 41]);
    let operator = operator_session(from, admin).await;
    let mut beta = Vec::new();
    for _ in 0..40 {
        let a = request(from, admin, &tenant_sign_in(BETA_PASSWORD)).await;
        assert_eq!(a.status, 303, "{}", a.text);
        beta.push(session_cookie(&a).unwrap());
    }
    let overview = request(from, admin, &get("/tenants", &operator)).await;
    assert_eq!(overview.status, 200, "the operator is still signed in");
    let newest = request(from, admin, &get("/tenants/beta", beta.last().unwrap())).await;
    assert_eq!(newest.status, 200);
    let oldest = request(from, admin, &get("/tenants/beta", &beta[0])).await;
    assert_eq!(
        oldest.status, 303,
        "beta's own oldest session made room for its newest"
    );
}

/// The session cookie lasts the 12-hour absolute lifetime (the server ends idle sessions), as
/// docs/console.md says: a browser does not drop an active session `session_minutes` after
/// sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_lasts_what_the_docs_say() {
    let env = start("", "session_minutes = 1").await;
    let admin = env.server().admin.addr;
    let from = IpAddr::from([127, 0, 0, 42]);
    let a = request(from, admin, &tenant_sign_in(BETA_PASSWORD)).await;
    assert_eq!(a.status, 303);
    let cookie = a
        .set_cookies
        .iter()
        .find(|c| c.starts_with("roster_session="))
        .unwrap();
    assert!(
        cookie.contains("Max-Age=43200"),
        "the cookie lasts 12 hours, not session_minutes: {cookie}"
    );
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/console.md")).unwrap();
    assert!(
        docs.contains("`Max-Age=43200`"),
        "docs/console.md states the cookie's Max-Age"
    );
}

/// A GET of `path` from `from` with `Authorization: Bearer <token>`.
async fn bearer_get(from: IpAddr, admin: SocketAddr, path: &str, token: &str) -> Answer {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    request(from, admin, &req).await
}

/// Review s16 http, F2, as the re-read settled it: wrong admin and SCIM bearer tokens are
/// logged once a second, counted, and answered 401; they block nobody. Clients behind one proxy
/// share an address, so a block would let one client with an old token shut out everyone's
/// right tokens, `/health` and the console. Many requests with the right token are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bearer_tokens_are_logged_and_shut_nobody_out() {
    let env = start("max_auth_failures = 4", "").await;
    let admin = env.server().admin.addr;
    let shared = IpAddr::from([127, 0, 0, 51]);
    let scim_acme = admin_support::SCIM_ACME;
    for i in 0..8 {
        let a = bearer_get(shared, admin, "/api/tenants", &format!("guess-{i}")).await;
        assert_eq!(a.status, 401, "{}", a.text);
        let a = bearer_get(shared, admin, "/scim/v2/Users", &format!("old-{i}")).await;
        assert_eq!(a.status, 401, "{}", a.text);
    }
    // The same address, right tokens, many at once: every one answered.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (path, token) = match i % 3 {
            0 => ("/scim/v2/Users", scim_acme),
            1 => ("/health", TOKEN),
            _ => ("/api/tenants", TOKEN),
        };
        tasks.push(tokio::spawn(bearer_get(shared, admin, path, token)));
    }
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(a.status, 200, "{}", a.text);
    }
    let body = format!("csrf=t0k3n&token={TOKEN}");
    let form = format!(
        "POST /login/operator HTTP/1.1\r\nHost: localhost\r\nCookie: roster_login=t0k3n\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(request(shared, admin, &form).await.status, 303);
    let failed = log_lines_with(&["wrong bearer token", "failed="]);
    assert!(
        (1..=4).contains(&failed),
        "16 wrong tokens, logged once a second: {failed}"
    );
}

/// Review s16 http, F6: every answer of the admin listener carries the console's security
/// headers: the HTML 404 of a path no route serves, JSON of the API (200 and errors), SCIM,
/// `/health`, and the console's own pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_security_headers() {
    let env = start("", "").await;
    let addr = env.server().admin.addr;
    let from = IpAddr::from([127, 0, 0, 61]);
    let bearer = |t: &str| format!("Authorization: Bearer {t}\r\n");
    let cases = [
        (
            "GET /nope",
            "Accept: text/html\r\n".to_string(),
            "404",
            "text/html",
        ),
        // Outside the JSON APIs every client gets the 404 page; under /api JSON.
        ("GET /nope", String::new(), "404", "text/html"),
        ("GET /api/nope", String::new(), "404", "application/json"),
        ("GET /api/tenants", bearer(TOKEN), "200", "application/json"),
        ("GET /api/tenants", String::new(), "401", "application/json"),
        (
            "DELETE /api/tenants",
            bearer(TOKEN),
            "405",
            "application/json",
        ),
        ("GET /health", bearer(TOKEN), "200", "application/json"),
        (
            "GET /scim/v2/Users",
            bearer(admin_support::SCIM_ACME),
            "200",
            "application/scim+json",
        ),
        ("GET /login", String::new(), "200", "text/html"),
    ];
    for (line, extra, status, ctype) in cases {
        let answer = request(
            from,
            addr,
            &format!("{line} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n"),
        )
        .await
        .text;
        let head = answer
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        assert!(
            head.starts_with(&format!("http/1.1 {status}")),
            "{line}: {head}"
        );
        assert!(
            head.contains(&format!("content-type: {ctype}")),
            "{line}: {head}"
        );
        for wanted in [
            "x-content-type-options: nosniff",
            "cache-control: no-store",
            "referrer-policy: same-origin",
            "content-security-policy: default-src 'none';",
        ] {
            assert!(head.contains(wanted), "{line}: no {wanted:?} in\n{head}");
        }
    }
}

/// Review s26: a listener on loopback answers only requests addressed to a loopback name (or
/// `[admin] public_url`'s host): a page that rebinds its own name to 127.0.0.1 gets 421, with
/// the security headers, and cannot sign in wrongly until the operator's address is blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_another_host_name_is_refused() {
    let env = start("", "").await;
    let addr = env.server().admin.addr;
    let from = IpAddr::from([127, 0, 0, 62]);
    let get = |host: String, path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
        )
    };
    for host in [
        "rebound.example".to_string(),
        format!("rebound.example:{}", addr.port()),
    ] {
        let answer = request(from, addr, &get(host.clone(), "/login")).await.text;
        let head = answer.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 421"), "{host}: {answer}");
        assert!(head.contains("content-security-policy"), "{host}: {answer}");
        assert!(answer.contains("public_url"), "{host}: {answer}");
    }
    // A Host that is not ASCII, and a request naming no host (s29: both were passed on).
    for asked in [
        get("rébound.example".to_string(), "/login"),
        "GET /login HTTP/1.0\r\nAccept: text/html\r\n\r\n".to_string(),
    ] {
        let answer = request(from, addr, &asked).await.text;
        let head = answer.to_ascii_lowercase();
        assert!(head.starts_with("http/1."), "{asked}: {answer}");
        assert!(head[..12].contains(" 421"), "{asked}: {answer}");
    }
    // Wrong sign-ins sent under the rebound name are never checked: the right password,
    // sent under the real name afterwards, still gets in.
    for i in 0..12 {
        let wrong = tenant_sign_in(&format!("guess-{i}"))
            .replace("Host: localhost", "Host: rebound.example");
        let answer = request(from, addr, &wrong).await;
        assert_eq!(answer.status, 421, "{}", answer.text);
    }
    let right = request(from, addr, &tenant_sign_in(BETA_PASSWORD)).await;
    assert_eq!(right.status, 303, "{}", right.text);
    for host in [
        "localhost".to_string(),
        addr.to_string(),
        format!("[::1]:{}", addr.port()),
    ] {
        let answer = request(from, addr, &get(host.clone(), "/login")).await;
        assert_eq!(answer.status, 200, "{host}: {}", answer.text);
    }
}
