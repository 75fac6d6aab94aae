//! Shared pieces of the web console's tests: a server with portal passwords, signing in through
//! a real browser, and a small cookie-carrying HTTP client for what a browser will not send
//! (forged forms, a missing CSRF token).
//!
//! The server is `admin_support::Env` (real `roster serve` parts on sled, or PostgreSQL with
//! `ROSTER_TEST_STORE=postgres`) with two additions to its config: acme (keys only for SFTP)
//! gets `portal_password_hash`, beta gets an SFTP `password_hash` that the portal accepts too.
//! sched has neither and cannot use the portal.

#![allow(dead_code)]

use crate::admin_support::{Env, TOKEN};
use crate::browser::Browser;

pub const ACME_PORTAL_PASSWORD: &str = "acme-portal-6d2f";
pub const BETA_PASSWORD: &str = "beta-sftp-91ce";

/// A running server whose tenants acme and beta can sign in to the portal.
pub async fn start() -> Env {
    let acme = roster::login::hash_password(ACME_PORTAL_PASSWORD).unwrap();
    let beta = roster::login::hash_password(BETA_PASSWORD).unwrap();
    Env::start_edited(
        crate::support::server_store::ServerStore::for_test(),
        move |text| {
            text.replacen("[server]\n", "[server]\nmax_auth_failures = 4\n", 1)
                .replacen(
                    "id = \"acme\"\n",
                    &format!("id = \"acme\"\nportal_password_hash = \"{acme}\"\n"),
                    1,
                )
                .replacen(
                    "id = \"beta\"\n",
                    &format!("id = \"beta\"\npassword_hash = \"{beta}\"\n"),
                    1,
                )
        },
    )
    .await
}

/// Signs in as the operator through the sign-in page; ends on the overview.
pub async fn sign_in_operator(b: &Browser, env: &Env) {
    b.open(&format!("{}/login", env.admin_url())).await;
    b.fill("#token", TOKEN).await;
    b.click("#operator-submit").await;
    assert_eq!(
        b.path().await,
        "/tenants",
        "the operator lands on the overview"
    );
}

/// Signs in to the portal as `tenant`; ends on its history.
pub async fn sign_in_tenant(b: &Browser, env: &Env, tenant: &str, password: &str) {
    b.open(&format!("{}/login", env.admin_url())).await;
    b.fill("#tenant", tenant).await;
    b.fill("#password", password).await;
    b.click("#tenant-submit").await;
    assert_eq!(
        b.path().await,
        format!("/tenants/{tenant}"),
        "tenant {tenant} lands on its history"
    );
}

/// An HTTP answer with its `Set-Cookie` headers.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub body: String,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    /// The `Allow` header (a 405 names the methods the page takes).
    pub allow: Option<String>,
}

/// One request carrying `cookies` (a `Cookie` header value), redirects not followed.
pub async fn request(
    base: &str,
    method: &str,
    path: &str,
    cookies: &str,
    form: Option<&[(&str, &str)]>,
) -> Page {
    let url = format!("{base}{path}");
    let method = method.to_string();
    let cookies = cookies.to_string();
    let body = form.map(|f| {
        f.iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&")
    });
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .build(),
        );
        let mut req = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(&url);
        if !cookies.is_empty() {
            req = req.header("Cookie", cookies);
        }
        let resp = match body {
            Some(b) => agent.run(
                req.header("Content-Type", "application/x-www-form-urlencoded")
                    .body(b.into_bytes())
                    .unwrap(),
            ),
            None => agent.run(req.body(()).unwrap()),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let header_values = |name: &str| -> Vec<String> {
            resp.headers()
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_string))
                .collect()
        };
        let set_cookies = header_values("set-cookie");
        let location = header_values("location").into_iter().next();
        let allow = header_values("allow").into_iter().next();
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        Page {
            status,
            body,
            location,
            set_cookies,
            allow,
        }
    })
    .await
    .unwrap()
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The value of cookie `name` among `Set-Cookie` headers.
pub fn cookie_value(set_cookies: &[String], name: &str) -> Option<String> {
    set_cookies.iter().find_map(|c| {
        let first = c.split(';').next()?;
        let (k, v) = first.split_once('=')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

/// The `value` of the first hidden input named `csrf` in a page.
pub fn csrf_in(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..].split('"').next().unwrap().to_string()
}

/// Signs in as the operator over plain HTTP; returns the `Cookie` header value of the session
/// and the session's CSRF token (read from the overview page).
pub async fn operator_session(base: &str) -> (String, String) {
    let login = request(base, "GET", "/login", "", None).await;
    let pre = cookie_value(&login.set_cookies, "roster_login").expect("a sign-in cookie");
    let csrf = csrf_in(&login.body);
    let signed = request(
        base,
        "POST",
        "/login/operator",
        &format!("roster_login={pre}"),
        Some(&[("csrf", &csrf), ("token", TOKEN)]),
    )
    .await;
    assert_eq!(signed.status, 303, "{signed:?}");
    let session = cookie_value(&signed.set_cookies, "roster_session").expect("a session cookie");
    let cookies = format!("roster_session={session}");
    let overview = request(base, "GET", "/tenants", &cookies, None).await;
    assert_eq!(overview.status, 200);
    (cookies, csrf_in(&overview.body))
}

/// Signs in to the portal over HTTP; the session's `Cookie` value and CSRF token.
pub async fn tenant_session(base: &str, tenant: &str, password: &str) -> (String, String) {
    let login = request(base, "GET", "/login", "", None).await;
    let pre = cookie_value(&login.set_cookies, "roster_login").unwrap();
    let signed = request(
        base,
        "POST",
        "/login/tenant",
        &format!("roster_login={pre}"),
        Some(&[
            ("csrf", &csrf_in(&login.body)),
            ("tenant", tenant),
            ("password", password),
        ]),
    )
    .await;
    assert_eq!(signed.status, 303, "{signed:?}");
    let cookies = format!(
        "roster_session={}",
        cookie_value(&signed.set_cookies, "roster_session").unwrap()
    );
    let own = request(base, "GET", &format!("/tenants/{tenant}"), &cookies, None).await;
    assert_eq!(own.status, 200);
    (cookies, csrf_in(&own.body))
}
