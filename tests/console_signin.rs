//! The web console's sign-in, sessions, CSRF and the tenant portal's isolation, in real headless
//! Chromium against a real running Roster (and, for what a browser will not send, forged HTTP
//! requests with cookies).

#[path = "admin_support/mod.rs"]
mod admin_support;
#[path = "support/browser.rs"]
mod browser;
mod console_support;
mod support;

use browser::Browser;
use console_support::{
    cookie_value, csrf_in, operator_session, request, sign_in_operator, sign_in_tenant,
    tenant_session, ACME_PORTAL_PASSWORD, BETA_PASSWORD,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_signs_in_sees_the_overview_and_signs_out() {
    let env = console_support::start().await;
    let b = Browser::start().await;
    let base = env.admin_url();

    b.open(&format!("{base}/")).await;
    assert_eq!(
        b.path().await,
        "/login",
        "without a session / goes to the sign-in page"
    );
    b.screenshot_for_docs("login").await;

    b.fill("#token", "not-the-token").await;
    b.click("#operator-submit").await;
    assert_eq!(b.path().await, "/login/operator");
    assert!(
        b.text("#login-error").await.contains("not the admin token"),
        "a wrong token is refused with a sentence"
    );

    sign_in_operator(&b, &env).await;
    let table = b.text("#tenants").await;
    for tenant in ["acme", "beta", "sched"] {
        assert!(
            table.contains(tenant),
            "the overview lists {tenant}: {table}"
        );
    }
    b.click("form.signout button").await;
    assert_eq!(
        b.path().await,
        "/login",
        "signing out lands on the sign-in page"
    );
    b.open(&format!("{base}/tenants")).await;
    assert_eq!(
        b.path().await,
        "/login",
        "after signing out the overview needs a session again"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_only_its_own_tenant() {
    let env = console_support::start().await;
    let b = Browser::start().await;
    let base = env.admin_url();

    sign_in_tenant(&b, &env, "beta", BETA_PASSWORD).await;
    assert!(b.page_text().await.contains("Import history of beta"));
    assert_eq!(
        b.count("header nav a[href='/tenants']").await,
        0,
        "no overview link"
    );
    for other in ["/tenants/acme", "/tenants/nosuch", "/tenants"] {
        b.open(&format!("{base}{other}")).await;
        let text = b.page_text().await;
        assert!(
            text.contains("404"),
            "{other} answers 404 to tenant beta: {text}"
        );
        assert!(
            !text.contains("Import history of acme"),
            "{other} shows nothing of acme"
        );
    }
    // The 404 for another tenant reads exactly like the one for a tenant that does not exist.
    b.open(&format!("{base}/tenants/acme")).await;
    let acme = b.text("main").await.replace("acme", "X");
    b.open(&format!("{base}/tenants/nosuch")).await;
    let nosuch = b.text("main").await.replace("nosuch", "X");
    assert_eq!(acme, nosuch);

    b.open(&format!("{base}/tenants/beta")).await;
    b.click("form.signout button").await;
    sign_in_tenant(&b, &env, "acme", ACME_PORTAL_PASSWORD).await;
    b.click("form.signout button").await;

    // sched has neither a password nor a portal password: no portal.
    b.fill("#tenant", "sched").await;
    b.fill("#password", "anything").await;
    b.click("#tenant-submit").await;
    assert!(b.text("#login-error").await.contains("wrong"));
    // acme's SFTP has keys only: its portal password is not an SFTP password (and beta's SFTP
    // password does not open acme's portal).
    b.fill("#tenant", "acme").await;
    b.fill("#password", BETA_PASSWORD).await;
    b.click("#tenant-submit").await;
    assert!(b.text("#login-error").await.contains("wrong"));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_the_csrf_token_are_refused() {
    let env = console_support::start().await;
    let base = env.admin_url();
    let (cookies, csrf) = operator_session(&base).await;

    for form in [vec![], vec![("csrf", "forged")]] {
        let answer = request(&base, "POST", "/logout", &cookies, Some(&form)).await;
        assert_eq!(
            answer.status, 403,
            "sign-out without the right token: {answer:?}"
        );
        assert!(answer.body.contains("CSRF"));
    }
    let still = request(&base, "GET", "/tenants", &cookies, None).await;
    assert_eq!(
        still.status, 200,
        "a refused form changed nothing: still signed in"
    );

    // The sign-in forms need the double-submit cookie.
    let login = request(&base, "GET", "/login", "", None).await;
    let pre = csrf_in(&login.body);
    let forged = request(
        &base,
        "POST",
        "/login/operator",
        "",
        Some(&[("csrf", &pre), ("token", admin_support::TOKEN)]),
    )
    .await;
    assert_eq!(forged.status, 403, "sign-in without its cookie: {forged:?}");
    assert!(cookie_value(&forged.set_cookies, "roster_session").is_none());

    let out = request(&base, "POST", "/logout", &cookies, Some(&[("csrf", &csrf)])).await;
    assert_eq!(out.status, 303);
    let after = request(&base, "GET", "/tenants", &cookies, None).await;
    assert_eq!(after.status, 303, "the ended session no longer opens pages");
    assert_eq!(after.location.as_deref(), Some("/login"));
    let post_after = request(&base, "POST", "/logout", &cookies, Some(&[("csrf", &csrf)])).await;
    assert_eq!(
        post_after.status, 403,
        "a POST without a session is refused"
    );
}

/// A request axum itself cannot take (a path that does not decode, a query with a field twice,
/// a method the page has not) gets the console's error page with a sentence, not plain text
/// or an empty body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_console_cannot_take_get_its_error_page() {
    let env = console_support::start().await;
    let base = env.admin_url();
    let (cookies, _) = operator_session(&base).await;
    for (method, path, status, says) in [
        ("GET", "/tenants/acme?page=1&page=2", 400, "duplicate field"),
        ("GET", "/tenants/%FF", 400, "Invalid URL"),
        ("DELETE", "/tenants", 405, "does not take that method"),
    ] {
        let answer = request(&base, method, path, &cookies, None).await;
        assert_eq!(answer.status, status, "{method} {path}: {answer:?}");
        assert!(
            answer.body.contains("<h1>") && answer.body.contains(says),
            "{method} {path}: {}",
            answer.body
        );
        if status == 405 {
            let allow = answer.allow.as_deref().unwrap_or_default();
            assert!(allow.contains("GET"), "405 without Allow: {answer:?}");
        }
    }
    // Pages that do exist still answer as before.
    let own = request(&base, "GET", "/tenants/acme?page=2", &cookies, None).await;
    assert_eq!(own.status, 200, "{own:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookies_are_http_only_and_strict() {
    let env = console_support::start().await;
    let base = env.admin_url();
    let login = request(&base, "GET", "/login", "", None).await;
    let pre = cookie_value(&login.set_cookies, "roster_login").unwrap();
    let signed = request(
        &base,
        "POST",
        "/login/tenant",
        &format!("roster_login={pre}"),
        Some(&[
            ("csrf", &csrf_in(&login.body)),
            ("tenant", "beta"),
            ("password", BETA_PASSWORD),
        ]),
    )
    .await;
    let session = signed
        .set_cookies
        .iter()
        .find(|c| c.starts_with("roster_session="))
        .expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attr), "{session} has {attr}");
    }
    assert!(
        !session.contains("Secure"),
        "no Secure flag without an https public_url"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_operator_sign_ins_block_the_address_for_ssh_too() {
    let env = console_support::start().await;
    let base = env.admin_url();
    // The server blocks after 4 failures (console_support sets max_auth_failures = 4).
    for _ in 0..4 {
        let login = request(&base, "GET", "/login", "", None).await;
        let pre = cookie_value(&login.set_cookies, "roster_login").unwrap();
        let wrong = request(
            &base,
            "POST",
            "/login/operator",
            &format!("roster_login={pre}"),
            Some(&[("csrf", &csrf_in(&login.body)), ("token", "guess")]),
        )
        .await;
        assert_eq!(wrong.status, 401);
    }
    let login = request(&base, "GET", "/login", "", None).await;
    let pre = cookie_value(&login.set_cookies, "roster_login").unwrap();
    let right = request(
        &base,
        "POST",
        "/login/operator",
        &format!("roster_login={pre}"),
        Some(&[
            ("csrf", &csrf_in(&login.body)),
            ("token", admin_support::TOKEN),
        ]),
    )
    .await;
    assert_eq!(
        right.status, 429,
        "the address is blocked, even with the right token"
    );
    assert!(right.body.contains("blocked"));
    // The same block holds at the SFTP door: beta's right password is refused from here.
    let ssh = support::sftp::Client::connect(
        env.server().sftp.addr,
        "beta",
        support::sftp::Login::Password(BETA_PASSWORD.to_string()),
    )
    .await;
    assert!(ssh.is_err(), "SSH from the blocked address is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_the_password_ends_the_portal_session() {
    let env = console_support::start().await;
    let base = env.admin_url();
    let (beta, _) = tenant_session(&base, "beta", BETA_PASSWORD).await;
    let (acme, _) = tenant_session(&base, "acme", ACME_PORTAL_PASSWORD).await;
    assert_eq!(
        request(&base, "GET", "/tenants/beta", &beta, None)
            .await
            .status,
        200
    );

    // A new SFTP password for beta (acme's portal password stays).
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let old = text
        .lines()
        .find(|l| l.starts_with("password_hash = "))
        .unwrap()
        .to_string();
    let new_hash = roster::login::hash_password("beta-new-password").unwrap();
    let text = text.replacen(&old, &format!("password_hash = \"{new_hash}\""), 1);
    std::fs::write(&env.config_path, text).unwrap();
    env.server().sftp.config.reload().unwrap();

    let after = request(&base, "GET", "/tenants/beta", &beta, None).await;
    assert_eq!(after.status, 303, "beta's session ended with its password");
    assert_eq!(after.location.as_deref(), Some("/login"));
    let other = request(&base, "GET", "/tenants/acme", &acme, None).await;
    assert_eq!(other.status, 200, "acme's session is untouched");
    tenant_session(&base, "beta", "beta-new-password").await;
}

/// Review s16 http, F3: a reload that removes a tenant, or rotates the admin token, ends the
/// sessions made with the old credential at once, not at their next request: when the old
/// config comes back, the unused sessions stay ended. beta's session (unchanged) lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_a_removed_tenant_or_old_token_do_not_come_back_with_the_old_config() {
    let env = console_support::start().await;
    let base = env.admin_url();
    let (acme, _) = tenant_session(&base, "acme", ACME_PORTAL_PASSWORD).await;
    let (beta, _) = tenant_session(&base, "beta", BETA_PASSWORD).await;
    let (operator, _) = operator_session(&base).await;
    let original = std::fs::read_to_string(&env.config_path).unwrap();

    // acme removed and the admin token rotated, in one reload; no session is used meanwhile.
    let acme_start = original.find("[[tenants]]\nid = \"acme\"").unwrap();
    let acme_end = acme_start
        + original[acme_start..]
            .find("[[tenants]]\nid = \"beta\"")
            .unwrap();
    let changed = format!("{}{}", &original[..acme_start], &original[acme_end..]).replacen(
        admin_support::TOKEN,
        "rotated-admin-token-0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        1,
    );
    std::fs::write(&env.config_path, changed).unwrap();
    env.server().sftp.config.reload().unwrap();
    // The sweep runs on its own task, right after the reload.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    // The old config returns. The file watcher may apply the first write late (it reads the
    // file twice, 300 ms apart, and a busy machine delays it): wait until the server runs the
    // original again, acme included.
    std::fs::write(&env.config_path, &original).unwrap();
    let mut seen = 0;
    for _ in 0..40 {
        env.server().sftp.config.reload().unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let current = env.server().sftp.config.current();
        seen = if current.tenants.iter().any(|t| t.id == "acme") {
            seen + 1
        } else {
            0
        };
        if seen == 2 {
            break;
        }
    }
    assert_eq!(seen, 2, "the original config never came back for good");

    let a = request(&base, "GET", "/tenants/acme", &acme, None).await;
    assert_eq!(a.status, 303, "acme's old session stays ended");
    let o = request(&base, "GET", "/tenants", &operator, None).await;
    assert_eq!(o.status, 303, "the operator's old session stays ended");
    let b = request(&base, "GET", "/tenants/beta", &beta, None).await;
    assert_eq!(b.status, 200, "beta's credential never changed");
    // Signing in again works as before.
    tenant_session(&base, "acme", ACME_PORTAL_PASSWORD).await;
    operator_session(&base).await;
}

/// An operator lifts a block from the console (`/login-blocks`): four wrong tokens block the
/// address; a session made before lists the block and lifts it with the page's form, and the
/// right token signs in again. The form wants the session's CSRF token; a tenant has no such
/// page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lifts_a_block_from_the_console() {
    let env = console_support::start().await;
    let base = env.admin_url();
    let (operator, csrf) = operator_session(&base).await;
    let (tenant, _) = tenant_session(&base, "acme", ACME_PORTAL_PASSWORD).await;
    let sign_in = |token: &'static str| {
        let base = base.clone();
        async move {
            let login = request(&base, "GET", "/login", "", None).await;
            let pre = cookie_value(&login.set_cookies, "roster_login").unwrap();
            request(
                &base,
                "POST",
                "/login/operator",
                &format!("roster_login={pre}"),
                Some(&[("csrf", &csrf_in(&login.body)), ("token", token)]),
            )
            .await
            .status
        }
    };
    let empty = request(&base, "GET", "/login-blocks", &operator, None).await;
    assert_eq!(empty.status, 200);
    assert!(
        empty.body.contains("No login is blocked."),
        "{}",
        empty.body
    );
    for _ in 0..4 {
        assert_eq!(sign_in("guess").await, 401);
    }
    assert_eq!(sign_in(admin_support::TOKEN).await, 429, "blocked");

    let listed = request(&base, "GET", "/login-blocks", &operator, None).await;
    assert_eq!(listed.status, 200);
    assert!(listed.body.contains(">127.0.0.1</th>"), "{}", listed.body);
    assert!(listed.body.contains("action=\"/login-blocks/lift\""));
    let forged = request(
        &base,
        "POST",
        "/login-blocks/lift",
        &operator,
        Some(&[("scope", "address"), ("subject", "127.0.0.1")]),
    )
    .await;
    assert_eq!(forged.status, 403, "no CSRF token: {}", forged.body);
    assert_eq!(sign_in(admin_support::TOKEN).await, 429, "still blocked");
    let as_tenant = request(&base, "GET", "/login-blocks", &tenant, None).await;
    assert_eq!(as_tenant.status, 404);

    let lifted = request(
        &base,
        "POST",
        "/login-blocks/lift",
        &operator,
        Some(&[
            ("csrf", &csrf),
            ("scope", "address"),
            ("subject", "127.0.0.1"),
        ]),
    )
    .await;
    assert_eq!(lifted.status, 200, "{}", lifted.body);
    assert!(
        lifted
            .body
            .contains("Lifted the block on address 127.0.0.1"),
        "{}",
        lifted.body
    );
    assert!(
        lifted.body.contains("No login is blocked."),
        "{}",
        lifted.body
    );
    assert_eq!(sign_in(admin_support::TOKEN).await, 303, "lifted: signs in");
    let bad = request(
        &base,
        "POST",
        "/login-blocks/lift",
        &operator,
        Some(&[("csrf", &csrf), ("scope", "planet"), ("subject", "x")]),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
}
