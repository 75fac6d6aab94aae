//! The console's users, preview and column mapping pages (issue 13), in real headless Chromium
//! against a real running Roster (sled, or PostgreSQL with `ROSTER_TEST_STORE=postgres`), with
//! real SFTP uploads making the directory; forged HTTP requests for what a browser will not
//! send (a missing CSRF token, a tenant's POST).
//!
//! With `ROSTER_SCREENSHOTS=DIR` the browser tests save `users.png`, `user.png`, `preview.png`
//! and `mapping.png` there.

#[path = "admin_support/mod.rs"]
mod admin_support;
#[path = "support/browser.rs"]
mod browser;
mod console_support;
mod support;

use admin_support::{users_csv, Env};
use browser::Browser;
use console_support::{
    operator_session, request, sign_in_operator, sign_in_tenant, tenant_session, Page,
    BETA_PASSWORD,
};
use roster::model::UserStatus;

/// The keys in the first column of the users table.
async fn listed_keys(b: &Browser) -> Vec<String> {
    let n = b.count("#users tbody td:first-child a").await;
    let mut keys = Vec::new();
    for i in 1..=n {
        keys.push(
            b.text(&format!("#users tbody tr:nth-child({i}) td:first-child a"))
                .await,
        );
    }
    keys
}

/// `users_csv(from, to)` with user `i`'s job title changed to `title`.
fn with_title(from: usize, to: usize, i: usize, title: &str) -> String {
    let line = format!(
        "user{i:02}@acme.example,First{i:02},Last{i:02},E{i:03},u{i:02},+385 1 555 {i:04},Clerk,"
    );
    let changed = line.replace(",Clerk,", &format!(",{title},"));
    let csv = users_csv(from, to);
    assert!(csv.contains(&line));
    csv.replace(&line, &changed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_searches_filters_and_pages_users_and_sees_a_change_history() {
    let env = console_support::start().await;
    env.import("acme", &users_csv(0, 130)).await;
    // user03 gets a new title; users 125..129 are missing, so deactivated (acme's on_missing).
    let second = env.import("acme", &with_title(0, 125, 3, "Manager")).await;
    assert_eq!(
        (second.counts.updated, second.counts.deactivated),
        (1, 5),
        "{second:?}"
    );
    let b = Browser::start().await;
    let base = env.admin_url();
    sign_in_operator(&b, &env).await;

    b.open(&format!("{base}/tenants/acme/users")).await;
    assert!(b.text("#users-summary").await.contains("130 users"));
    let page1 = listed_keys(&b).await;
    assert_eq!(page1.len(), 50, "50 users a page");
    b.screenshot_for_docs("users").await;
    b.click("#next-page").await;
    assert!(b.path().await.contains("page=2"), "{}", b.path().await);
    let page2 = listed_keys(&b).await;
    assert_eq!(page2.len(), 50);
    assert!(
        page1.last() < page2.first(),
        "page 2 goes on after page 1: {:?} then {:?}",
        page1.last(),
        page2.first()
    );
    b.click("#next-page").await;
    let page3 = listed_keys(&b).await;
    assert_eq!(page3.len(), 30, "the last page has the rest");
    assert_eq!(b.count("#next-page").await, 0, "no page after the last");
    let mut all: Vec<String> = [page1, page2, page3].concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 130, "every user exactly once over the pages");

    // Search by email, then by name, through the form.
    b.open(&format!("{base}/tenants/acme/users")).await;
    b.fill("#q", "user07@acme.example").await;
    b.click("#search-submit").await;
    assert_eq!(listed_keys(&b).await, vec!["user07@acme.example"]);
    b.fill("#q", "last42").await;
    b.click("#search-submit").await;
    assert_eq!(listed_keys(&b).await, vec!["user42@acme.example"]);
    b.fill("#q", "First05 Last05").await;
    b.click("#search-submit").await;
    assert_eq!(listed_keys(&b).await, vec!["user05@acme.example"]);
    b.fill("#q", "nobody-like-this").await;
    b.click("#search-submit").await;
    assert!(listed_keys(&b).await.is_empty());

    // The status filter.
    b.open(&format!("{base}/tenants/acme/users?status=inactive"))
        .await;
    let inactive = listed_keys(&b).await;
    let want: Vec<String> = (125..130)
        .map(|i| format!("user{i:02}@acme.example"))
        .collect();
    assert_eq!(inactive, want, "the deactivated users, and only they");
    b.open(&format!("{base}/tenants/acme/users?status=active&q=user12"))
        .await;
    let active = listed_keys(&b).await;
    assert!(active.contains(&"user12@acme.example".to_string()));
    assert!(active.iter().all(|k| !want.contains(k)), "{active:?}");
    assert!(
        b.text("#users-summary").await.contains("6 users"),
        "user12 and user120..124"
    );
    b.open(&format!("{base}/tenants/acme/users?status=deleted"))
        .await;
    assert!(listed_keys(&b).await.is_empty(), "acme deletes nobody");

    // One user: its fields and its change history, newest first.
    b.open(&format!(
        "{base}/tenants/acme/users?q=user03%40acme.example"
    ))
    .await;
    b.click("#users tbody a").await;
    // `@` may stand in a path segment as it is (RFC 3986 pchar; `scim::key_segment`).
    assert_eq!(b.path().await, "/tenants/acme/users/user03@acme.example");
    let fields = b.text("#user-fields").await;
    for want in [
        "user03@acme.example",
        "First03 Last03",
        "E003",
        "Manager",
        "active",
    ] {
        assert!(
            fields.contains(want),
            "the user's fields show {want}: {fields}"
        );
    }
    assert!(
        !b.page_text().await.contains("argon2"),
        "never a password hash"
    );
    assert_eq!(
        b.count("#changes tbody tr").await,
        2,
        "created, then updated"
    );
    let newest = b.text("#changes tbody tr:first-child").await;
    assert!(
        newest.contains("updated") && newest.contains("job_title: Clerk → Manager"),
        "the newest change first, field old → new: {newest}"
    );
    assert!(b
        .text("#changes tbody tr:last-child")
        .await
        .contains("created"));
    assert_eq!(
        b.count("#restore").await,
        0,
        "an active user has nothing to restore"
    );
    b.screenshot_for_docs("user").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_brings_back_a_deleted_user_and_tenants_only_read() {
    let env = console_support::start().await;
    // beta matches by mapping code and deletes the missing (softly).
    env.import("beta", &users_csv(0, 10)).await;
    let second = env.import("beta", &users_csv(0, 9)).await;
    assert_eq!(second.counts.deleted, 1, "{second:?}");
    let store = &env.server().store;
    assert_eq!(
        store.user("beta", "E009").unwrap().map(|u| u.status),
        Some(UserStatus::Deleted)
    );
    let base = env.admin_url();

    // The tenant sees its users, read-only, and nothing of acme's.
    let b = Browser::start().await;
    sign_in_tenant(&b, &env, "beta", BETA_PASSWORD).await;
    b.click("header nav a[href='/tenants/beta/users']").await;
    assert_eq!(
        listed_keys(&b).await.len(),
        10,
        "deleted users are listed too"
    );
    b.open(&format!("{base}/tenants/beta/users/E009")).await;
    assert!(b.text("#user-status").await.contains("deleted"));
    assert_eq!(b.count("#restore").await, 0, "no Restore for a tenant");
    for other in [
        "/tenants/acme/users",
        "/tenants/acme/users/E009",
        "/tenants/beta/preview",
        "/mapping",
    ] {
        b.open(&format!("{base}{other}")).await;
        assert!(
            b.text("main").await.contains("404"),
            "{other} is a 404 for tenant beta"
        );
    }
    b.open(&format!("{base}/tenants/beta/users")).await;
    b.click("form.signout button").await;
    let (cookies, csrf) = tenant_session(&base, "beta", BETA_PASSWORD).await;
    let refused = request(
        &base,
        "POST",
        "/tenants/beta/users/E009/restore",
        &cookies,
        Some(&[("csrf", &csrf)]),
    )
    .await;
    assert_eq!(refused.status, 404, "a tenant cannot restore: {refused:?}");
    // With a wrong token too: the role is checked first (audit s22 console L4).
    for path in ["/tenants/beta/users/E009/restore", "/tenants/beta/run-now"] {
        let p = request(&base, "POST", path, &cookies, Some(&[("csrf", "wrong")])).await;
        assert_eq!(p.status, 404, "POST {path} by a tenant, wrong token: {p:?}");
    }
    for path in ["/tenants/beta/preview", "/mapping"] {
        let p = request(&base, "POST", path, &cookies, Some(&[("csrf", &csrf)])).await;
        assert_eq!(p.status, 404, "POST {path} by a tenant: {p:?}");
    }
    assert_eq!(
        store.user("beta", "E009").unwrap().map(|u| u.status),
        Some(UserStatus::Deleted),
        "nothing was restored"
    );

    // The operator restores it; a crafted link saying it was restored shows no banner.
    sign_in_operator(&b, &env).await;
    b.open(&format!("{base}/tenants/beta/users/E009?restored=1"))
        .await;
    assert_eq!(
        b.count("#restore-result").await,
        0,
        "no false Restored banner"
    );
    b.open(&format!("{base}/tenants/beta/users?status=deleted"))
        .await;
    assert_eq!(listed_keys(&b).await, vec!["E009"]);
    b.click("#users tbody a").await;
    b.click("#restore").await;
    assert!(
        b.text("#restore-result").await.contains("Restored"),
        "the page shows the result"
    );
    assert!(b.text("#user-status").await.contains("active"));
    assert!(b
        .text("#changes tbody tr:first-child")
        .await
        .contains("restored"));
    assert_eq!(
        store.user("beta", "E009").unwrap().map(|u| u.status),
        Some(UserStatus::Active),
        "the store has it active again"
    );
    b.stop().await;
}

/// The directory of `tenant` as (key, status, updated) triples, and its run count.
fn snapshot(env: &Env, tenant: &str) -> (Vec<String>, usize) {
    let store = &env.server().store;
    let users = store
        .users(tenant, None)
        .unwrap()
        .iter()
        .map(|u| format!("{} {:?} {:?} {}", u.key, u.status, u.fields, u.updated_at))
        .collect();
    (users, store.history(tenant, 1000).unwrap().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_shows_inserts_updates_and_deactivations_and_changes_nothing() {
    let env = console_support::start().await;
    env.import("acme", &users_csv(0, 10)).await;
    let before = snapshot(&env, "acme");
    // user03's title changes, user09 is missing, user10 is new.
    let mut csv = with_title(0, 9, 3, "Manager");
    csv.push_str(users_csv(10, 11).lines().nth(1).unwrap());
    csv.push('\n');
    let file = env.dir.path().join("preview-me.csv");
    std::fs::write(&file, &csv).unwrap();

    let b = Browser::start().await;
    sign_in_operator(&b, &env).await;
    b.open(&format!("{}/tenants/acme/preview", env.admin_url()))
        .await;
    b.choose_file("#file", &file).await;
    b.click("#preview-submit").await;
    let counts = b.text("#preview-counts tbody").await;
    assert!(counts.starts_with("10 1 1 8 0 1 0 0"), "{counts}");
    assert!(b
        .text("#preview-inserts")
        .await
        .contains("user10@acme.example"));
    let updates = b.text("#preview-updates tbody").await;
    assert!(
        updates.contains("user03@acme.example") && updates.contains("job_title: Clerk → Manager"),
        "{updates}"
    );
    assert_eq!(
        b.text("#preview-deactivations").await,
        "user09@acme.example"
    );
    assert!(b
        .text("#preview-status")
        .await
        .contains("nothing was changed"));
    b.screenshot_for_docs("preview").await;
    b.stop().await;
    assert_eq!(
        snapshot(&env, "acme"),
        before,
        "the directory and history are as before"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_helper_reads_a_semicolon_windows_1252_sample() {
    let env = console_support::start().await;
    let sample: &[u8] = b"E-Mail;Vorname;Nachname;Personal-Nr;Kostenstelle\r\n\
        juergen@x.example;J\xfcrgen;M\xfcller;0042;K-1\r\n\
        ana@x.example;Ana;Garc\xeda;0043;K-2\r\n";
    let file = env.dir.path().join("sample.csv");
    std::fs::write(&file, sample).unwrap();

    let b = Browser::start().await;
    sign_in_operator(&b, &env).await;
    b.click("header nav a[href='/mapping']").await;
    b.choose_file("#file", &file).await;
    b.click("#mapping-submit").await;
    assert_eq!(b.text("#sample-encoding").await, "windows-1252");
    assert_eq!(b.text("#sample-delimiter").await, ";");
    let headers = b.text("#sample-rows thead").await;
    assert_eq!(headers, "E-Mail Vorname Nachname Personal-Nr Kostenstelle");
    let rows = b.text("#sample-rows tbody").await;
    assert!(
        rows.contains("Jürgen") && rows.contains("García"),
        "decoded: {rows}"
    );
    let toml = b.text("#columns-toml").await;
    for line in [
        "[tenants.import.columns]",
        "email = \"E-Mail\"",
        "first_name = \"Vorname\"",
        "last_name = \"Nachname\"",
        "# \"custom.kostenstelle\" = \"Kostenstelle\"",
    ] {
        assert!(toml.contains(line), "the TOML has {line}: {toml}");
    }
    assert!(
        b.text("#mapping-check").await.contains("finds"),
        "the mapping would work"
    );
    b.screenshot_for_docs("mapping").await;

    // For beta (match key mapping_code), with the tenant's own profile.
    b.open(&format!("{}/mapping?tenant=beta", env.admin_url()))
        .await;
    assert_eq!(b.attr("#tenant", "value").await.as_deref(), Some("beta"));
    b.choose_file("#file", &file).await;
    b.click("#mapping-submit").await;
    let check = b.text("#mapping-check").await;
    assert!(
        check.contains("would fail") && check.contains("mapping_code"),
        "beta needs its match key, which no header suggests: {check}"
    );
    b.stop().await;
}

/// A multipart POST of `fields` then a file part, with `cookies`.
async fn multipart(
    base: &str,
    path: &str,
    cookies: &str,
    fields: &[(&str, &str)],
    file: &[u8],
) -> Page {
    let boundary = "roster-test-boundary-5f1c";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"u.csv\"\r\nContent-Type: text/csv\r\n\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (url, cookies) = (format!("{base}{path}"), cookies.to_string());
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .build(),
        );
        let req = ureq::http::Request::builder()
            .method("POST")
            .uri(&url)
            .header("Cookie", cookies)
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .unwrap();
        let mut resp = agent.run(req).unwrap();
        Page {
            status: resp.status().as_u16(),
            body: resp.body_mut().read_to_string().unwrap_or_default(),
            location: None,
            set_cookies: Vec::new(),
            allow: None,
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_without_the_csrf_token_are_refused() {
    let env = console_support::start().await;
    env.import("beta", &users_csv(0, 10)).await;
    env.import("beta", &users_csv(0, 9)).await;
    let base = env.admin_url();
    let (cookies, csrf) = operator_session(&base).await;
    let csv = users_csv(0, 3);

    for form in [vec![], vec![("csrf", "forged")]] {
        let r = request(
            &base,
            "POST",
            "/tenants/beta/users/E009/restore",
            &cookies,
            Some(&form),
        )
        .await;
        assert_eq!(r.status, 403, "restore with {form:?}: {r:?}");
        assert!(r.body.contains("CSRF"));
        for path in ["/tenants/acme/preview", "/mapping"] {
            let m = multipart(&base, path, &cookies, &form, csv.as_bytes()).await;
            assert_eq!(m.status, 403, "{path} with {form:?}: {}", m.body);
            let plain = request(&base, "POST", path, &cookies, Some(&form)).await;
            assert_eq!(plain.status, 403, "{path} as a plain form: {plain:?}");
        }
    }
    // A file part before the token is refused too: the token must come first.
    let late = multipart(&base, "/mapping", &cookies, &[], csv.as_bytes()).await;
    assert_eq!(late.status, 403);
    assert_eq!(
        env.server()
            .store
            .user("beta", "E009")
            .unwrap()
            .map(|u| u.status),
        Some(UserStatus::Deleted),
        "nothing was restored"
    );
    // With the token, the same requests work.
    let m = multipart(
        &base,
        "/mapping",
        &cookies,
        &[("csrf", &csrf)],
        csv.as_bytes(),
    )
    .await;
    assert_eq!(m.status, 200, "{}", m.body);
    assert!(m.body.contains("tenants.import.columns"));
    let p = multipart(
        &base,
        "/tenants/acme/preview",
        &cookies,
        &[("csrf", &csrf)],
        csv.as_bytes(),
    )
    .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("user02@acme.example"));
    let r = request(
        &base,
        "POST",
        "/tenants/beta/users/E009/restore",
        &cookies,
        Some(&[("csrf", &csrf)]),
    )
    .await;
    assert_eq!(r.status, 303, "{r:?}");
    // Bigger than max_upload_bytes: 413, nothing kept.
    let big = vec![b'x'; admin_support::MAX_UPLOAD as usize + 10];
    let m = multipart(&base, "/mapping", &cookies, &[("csrf", &csrf)], &big).await;
    assert_eq!(m.status, 413, "{}", m.body);
}

/// Review s16 http, F5: the mapping helper's first rows never show a password: the column it
/// maps to `password` and every other password-looking column are blank, and German, French,
/// Spanish and Dutch password headers are mapped to `password`, never offered as custom fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mapping_helper_hides_passwords_in_any_language() {
    let env = console_support::start().await;
    let base = env.admin_url();
    let (cookies, csrf) = operator_session(&base).await;
    for header in [
        "Password",
        "Passwort",
        "Kennwort",
        "Mot de passe",
        "Contraseña",
        "Wachtwoord",
    ] {
        let csv = format!(
            "E-Mail,Vorname,Nachname,{header},Old Password\nu0@acme.example,Ana0,Changed0,PLAIN-C,PLAIN-OLD\n"
        );
        let m = multipart(
            &base,
            "/mapping",
            &cookies,
            &[("csrf", &csrf)],
            csv.as_bytes(),
        )
        .await;
        assert_eq!(m.status, 200, "{header}: {}", m.body);
        assert!(m.body.contains("Ana0"), "{header}: the sample is shown");
        assert!(
            !m.body.contains("PLAIN-C") && !m.body.contains("PLAIN-OLD"),
            "{header}: a password cell is shown"
        );
        assert!(
            m.body.contains("password = "),
            "{header}: mapped to password"
        );
        assert!(
            !m.body.contains("custom.passw"),
            "{header}: offered as a custom field"
        );
        assert!(!m.body.contains("custom.old_password"), "{header}");
        for lower in [
            "passwort",
            "kennwort",
            "mot_de_passe",
            "contrase",
            "wachtwoord",
        ] {
            assert!(!m.body.contains(&format!("custom.{lower}")), "{header}");
        }
    }
}

/// Review s23: a right-to-left override in stored text reversed what followed it on the page
/// (`inv\u{202E}vsc.exe` reads as `invexe.csv`). Direction controls are shown as `[U+202E]`,
/// in the users list and on the user's page alike, and never sent as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direction_controls_in_stored_text_are_shown_not_applied() {
    let env = console_support::start().await;
    let csv = users_csv(0, 3)
        .replace("First01", "Ev\u{202E}nil")
        .replace("Last01", "Ad\u{2067}ams\u{2069}x");
    let record = env.import("acme", &csv).await;
    assert_eq!(record.counts.inserted, 3, "{record:?}");
    let stored = env
        .server()
        .store
        .user("acme", "user01@acme.example")
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.first_name.as_deref(),
        Some("Ev\u{202E}nil"),
        "stored as uploaded"
    );
    let base = env.admin_url();
    let (cookies, _) = operator_session(&base).await;
    for path in [
        "/tenants/acme/users/user01@acme.example",
        "/tenants/acme/users?q=user01",
    ] {
        let page = request(&base, "GET", path, &cookies, None).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(page.body.contains("Ev[U+202E]nil"), "{path}: {}", page.body);
        assert!(page.body.contains("Ad[U+2067]ams[U+2069]x"), "{path}");
        assert!(
            !page.body.contains(['\u{202E}', '\u{2067}', '\u{2069}']),
            "{path} sent a direction control as it is"
        );
    }
    // A search for text holding one finds it, and its box holds the same text to search again
    // (review s25: the box held "[U+202E]", which matched nothing when submitted).
    let page = request(
        &base,
        "GET",
        "/tenants/acme/users?q=Ev%E2%80%AEnil",
        &cookies,
        None,
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(r#"value="Ev&#x202E;nil""#),
        "{}",
        page.body
    );
    assert!(page.body.contains("user01@acme.example"), "{}", page.body);
}
