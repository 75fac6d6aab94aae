//! The console's run pages (issue 13) in real headless Chromium against a real running Roster
//! with real SFTP uploads: the overview, a tenant's history and its chart, one run with its
//! skipped rows and downloads, a held run and Approve, today's file and Run now; and, over
//! plain HTTP with the session's cookie, the downloaded bytes, the portal's isolation and the
//! CSRF checks of the forms.
//!
//! With `ROSTER_SCREENSHOTS=DIR` the tests save PNGs of the main pages there (for docs/).

#[path = "admin_support/mod.rs"]
mod admin_support;
#[path = "support/browser.rs"]
mod browser;
mod console_support;
mod support;

use admin_support::users_csv;
use browser::Browser;
use console_support::{
    operator_session, request, sign_in_operator, sign_in_tenant, tenant_session,
    ACME_PORTAL_PASSWORD,
};
use roster::model::{ImportRecord, ImportStatus};

/// The browser's session cookie as a `Cookie` header value.
async fn browser_cookie(b: &Browser) -> String {
    let c = b.client.get_named_cookie("roster_session").await.unwrap();
    format!("roster_session={}", c.value())
}

/// GET `path` with `cookies`; the answer's status and raw bytes.
async fn get_bytes(base: &str, path: &str, cookies: &str) -> (u16, Vec<u8>, String) {
    let url = format!("{base}{path}");
    let cookies = cookies.to_string();
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .build(),
        );
        let mut resp = agent
            .get(&url)
            .header("Cookie", &cookies)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let disposition = resp
            .headers()
            .get("content-disposition")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp.body_mut().read_to_vec().unwrap_or_default();
        (resp.status().as_u16(), bytes, disposition)
    })
    .await
    .unwrap()
}

/// Users 0..10 of acme and two rows that are skipped: an email that is not one, and a row
/// with a cell too many.
fn csv_with_two_bad_rows() -> String {
    let mut csv = users_csv(0, 10);
    csv.push_str("not-an-email,Bad,Email,E900,bad1,,Clerk,HQ,\n");
    csv.push_str("user95@acme.example,Too,Many,E901,u95,,Clerk,HQ,,extra cell\n");
    csv
}

/// (row, reason) of each data row of a failure report on disk.
fn report_rows(path: &std::path::Path) -> Vec<(String, String)> {
    let bytes = std::fs::read(path).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let text = text.trim_start_matches('\u{feff}');
    let mut r = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (
                rec.get(0).unwrap().to_string(),
                rec.get(rec.len() - 1).unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_history_chart_run_page_and_downloads() {
    let env = console_support::start().await;
    let base = env.admin_url();
    let first = env.import("acme", &users_csv(0, 10)).await;
    assert_eq!(first.status, ImportStatus::Success);
    let second = env.import("acme", &csv_with_two_bad_rows()).await;
    assert_eq!(second.status, ImportStatus::Partial, "{second:?}");
    assert_eq!(second.counts.skipped, 2);
    let report_rel = second
        .report
        .clone()
        .expect("a partial run has a failure report");
    let archived_rel = second.archived_as.clone().expect("the file was archived");

    let b = Browser::start().await;
    sign_in_operator(&b, &env).await;
    let acme = b.text("#tenant-acme").await;
    assert!(
        acme.contains("partial"),
        "the overview shows acme's last run: {acme}"
    );
    assert!(
        acme.contains("imported"),
        "today's file of acme was imported: {acme}"
    );
    assert!(
        b.text("#tenant-sched").await.contains("01-01 00:00"),
        "sched's next scheduled run (0 0 1 1 *) is shown"
    );
    assert!(b.text("#tenant-beta").await.contains("no run yet"));
    assert!(b.text("#outbox").await.contains("Mail outbox"));
    b.screenshot_for_docs("overview").await;
    // The filter narrows the list.
    b.fill("#q", "bet").await;
    b.click("form[role=search] button").await;
    assert_eq!(b.count("#tenants tbody tr").await, 1);
    assert!(b.text("#tenants").await.contains("beta"));

    b.open(&format!("{base}/tenants")).await;
    b.click("#tenant-acme th a").await;
    assert_eq!(b.path().await, "/tenants/acme");
    assert_eq!(b.count("#runs tbody tr").await, 2, "both runs are listed");
    let runs = b.text("#runs").await;
    assert!(
        runs.contains("partial") && runs.contains("success"),
        "{runs}"
    );
    assert_eq!(b.count("svg#history-chart g.series").await, 4, "four lines");
    assert_eq!(
        b.count("svg#history-chart circle").await,
        8,
        "a dot per run per line"
    );
    assert!(b.text("#chart-legend").await.contains("Skipped"));
    let desc = b.client.source().await.unwrap();
    assert!(
        desc.contains("in each of 2 runs"),
        "the chart's text alternative"
    );
    b.screenshot_for_docs("history").await;

    // The newest run (the partial one) first.
    b.click("#runs tbody tr:first-child th a").await;
    assert_eq!(b.path().await, format!("/tenants/acme/runs/{}", second.id));
    assert_eq!(b.text("#run-status").await, "partial");
    assert_eq!(b.text("#run-delimiter").await, ",");
    let skipped = b.text("#skipped").await;
    let on_disk = report_rows(&env.home("acme").join(&report_rel));
    assert_eq!(on_disk.len(), 2, "{on_disk:?}");
    for (row, reason) in &on_disk {
        assert!(
            skipped.contains(row.as_str()) && skipped.contains(reason.as_str()),
            "row {row} and its reason {reason:?} are shown: {skipped}"
        );
    }
    assert!(skipped.contains("not a valid email address"), "{skipped}");
    b.screenshot_for_docs("run").await;

    // The downloads are exactly the files on disk, for the browser's session.
    let cookies = browser_cookie(&b).await;
    let href = b.attr("#download-report", "href").await.unwrap();
    let (status, bytes, disposition) = get_bytes(&base, &path_of(&href), &cookies).await;
    assert_eq!(status, 200);
    assert_eq!(
        bytes,
        std::fs::read(env.home("acme").join(&report_rel)).unwrap()
    );
    assert!(disposition.starts_with("attachment"), "{disposition}");
    let href = b.attr("#download-file", "href").await.unwrap();
    let (status, bytes, _) = get_bytes(&base, &path_of(&href), &cookies).await;
    assert_eq!(status, 200);
    assert_eq!(
        bytes,
        std::fs::read(env.home("acme").join(&archived_rel)).unwrap()
    );
    // Without a session: the sign-in page, not the file.
    let (status, bytes, _) = get_bytes(&base, &path_of(&href), "").await;
    assert_eq!(status, 303);
    assert!(bytes.is_empty());
    // A page past the last one shown is the last one (review s21: any page number read the
    // whole report on every request).
    let deep = format!("/tenants/acme/runs/{}?page=99999999999", second.id);
    let (status, bytes, _) = get_bytes(&base, &deep, &cookies).await;
    assert_eq!(status, 200);
    let html = String::from_utf8_lossy(&bytes);
    assert!(html.contains("page 200"), "{html}");
    assert!(!html.contains("rel=\"next\""), "{html}");
    // A run that does not exist.
    let (status, _, _) = get_bytes(&base, "/tenants/acme/runs/nosuch/report", &cookies).await;
    assert_eq!(status, 404);
    b.stop().await;
}

/// The path and query of an absolute or relative URL.
fn path_of(href: &str) -> String {
    match href.find("://") {
        Some(at) => {
            let rest = &href[at + 3..];
            rest[rest.find('/').unwrap_or(rest.len())..].to_string()
        }
        None => href.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_run_lists_who_would_go_and_approve_applies_it() {
    let env = console_support::start().await;
    let base = env.admin_url();
    env.import("acme", &users_csv(0, 10)).await;
    let held = env.import("acme", &users_csv(0, 2)).await;
    assert_eq!(held.status, ImportStatus::Held);

    // Forms without the CSRF token change nothing.
    let (cookies, csrf) = operator_session(&base).await;
    let approve = format!("/tenants/acme/runs/{}/approve", held.id);
    for form in [vec![], vec![("csrf", "forged")]] {
        let answer = request(&base, "POST", &approve, &cookies, Some(&form)).await;
        assert_eq!(answer.status, 403, "approve without its token: {answer:?}");
        let answer = request(
            &base,
            "POST",
            "/tenants/sched/run-now",
            &cookies,
            Some(&form),
        )
        .await;
        assert_eq!(answer.status, 403, "run now without its token: {answer:?}");
    }
    let still = env
        .server()
        .store
        .import_record("acme", &held.id)
        .unwrap()
        .unwrap();
    assert_eq!(
        still.status,
        ImportStatus::Held,
        "a refused form applied nothing"
    );
    assert!(!csrf.is_empty());

    let b = Browser::start().await;
    sign_in_operator(&b, &env).await;
    assert!(b.text("#tenant-acme .held").await.contains("1 waiting"));
    b.click("#tenant-acme .held a").await;
    assert_eq!(
        b.path().await,
        format!("/tenants/acme/runs/{}/held", held.id)
    );
    // A slow dry run shows "planning" and reloads itself until the list is there.
    b.wait_for("#removals").await;
    assert_eq!(b.count("#removals tbody tr").await, 8);
    let removals = b.text("#removals").await;
    for i in 2..10 {
        assert!(
            removals.contains(&format!("user{i:02}@acme.example")),
            "user{i:02} would be deactivated: {removals}"
        );
    }
    assert!(!removals.contains("user00@acme.example"), "user00 stays");
    assert!(removals.contains("deactivated"));
    b.screenshot_for_docs("held").await;

    b.click("#approve").await;
    assert!(
        b.text("#approved").await.contains("success"),
        "{}",
        b.page_text().await
    );
    b.click("#to-history").await;
    let first = b.text("#runs tbody tr:first-child").await;
    assert!(
        first.contains("success"),
        "the held run is now completed: {first}"
    );
    let done = env
        .server()
        .store
        .import_record("acme", &held.id)
        .unwrap()
        .unwrap();
    assert_eq!(done.status, ImportStatus::Success);
    assert_eq!(done.counts.deactivated, 8);
    assert!(env.server().store.held_plans("acme").unwrap().is_empty());

    // Approving again: not held any more.
    let again = request(&base, "POST", &approve, &cookies, Some(&[("csrf", &csrf)])).await;
    assert_eq!(again.status, 409, "{again:?}");
    assert!(again.body.contains("not held"));
    let page = request(
        &base,
        "GET",
        &format!("/tenants/acme/runs/{}/held", held.id),
        &cookies,
        None,
    )
    .await;
    assert_eq!(
        page.status, 409,
        "an approved run has no held page: {page:?}"
    );

    // A held run a newer file set aside says so, and offers no approve (review s19 docs F1).
    env.import("acme", &users_csv(0, 10)).await;
    let older = env.import("acme", &users_csv(0, 2)).await;
    let newer = env.import("acme", &users_csv(0, 3)).await;
    assert_eq!(
        (older.status, newer.status),
        (ImportStatus::Held, ImportStatus::Held)
    );
    let run_page = |id: &str| format!("/tenants/acme/runs/{id}");
    let aside = request(&base, "GET", &run_page(&older.id), &cookies, None).await;
    assert!(aside.body.contains("set-aside-notice"), "{}", aside.body);
    assert!(
        !aside.body.contains("See who would be removed"),
        "{}",
        aside.body
    );
    let waiting = request(&base, "GET", &run_page(&newer.id), &cookies, None).await;
    assert!(
        waiting.body.contains("See who would be removed"),
        "{}",
        waiting.body
    );
    assert!(!waiting.body.contains("set-aside-notice"));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_imports_the_waiting_file_of_today() {
    let env = console_support::start().await;
    let base = env.admin_url();
    let today = env.get("/api/tenants/sched/today").await.json["date"]
        .as_str()
        .unwrap()
        .to_string();
    let name = format!("hr_{today}.csv");
    let csv = users_csv(0, 3);
    env.upload("sched", &name, csv.as_bytes()).await;
    // A near miss waits beside it, named with the reason (review s18 clients F3).
    let near_miss = format!("HR_{today}.csv");
    env.upload("sched", &near_miss, csv.as_bytes()).await;

    let b = Browser::start().await;
    sign_in_operator(&b, &env).await;
    b.open(&format!("{base}/tenants/sched/today")).await;
    assert_eq!(b.text("#expected").await, name);
    assert!(b.text("#waiting").await.contains(&name));
    let not_imported = b.text("#not-imported").await;
    assert!(
        not_imported.contains(&near_miss) && not_imported.contains("upper and lower case only"),
        "{not_imported}"
    );
    let href = b.attr("#waiting a", "href").await.unwrap();
    let cookies = browser_cookie(&b).await;
    let (status, bytes, _) = get_bytes(&base, &path_of(&href), &cookies).await;
    assert_eq!(status, 200);
    assert_eq!(
        bytes,
        csv.as_bytes(),
        "the waiting file downloads as uploaded"
    );
    let (status, _, _) = get_bytes(&base, "/tenants/sched/today/files/roster.toml", &cookies).await;
    assert_eq!(status, 404, "only a waiting file is served");
    let (status, _, _) = get_bytes(
        &base,
        "/tenants/sched/today/files/..%2F..%2Froster.toml",
        &cookies,
    )
    .await;
    assert_eq!(status, 404, "never a path from the URL");
    b.screenshot_for_docs("today").await;

    b.click("#run-now").await;
    assert!(b.text("#run-now-result").await.contains("1 run made"));
    let runs = b.text("#runs").await;
    assert!(runs.contains(&name) && runs.contains("success"), "{runs}");
    assert_eq!(
        b.text("#runs tbody td:nth-child(3)").await,
        "3",
        "3 inserted"
    );
    let history = env.server().store.history("sched", 10).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].counts.inserted, 3);

    b.open(&format!("{base}/tenants/sched/today")).await;
    assert!(b
        .text("#waiting")
        .await
        .contains("No file of today is waiting"));
    assert!(b.text("#imported").await.contains(&name));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_its_own_runs_and_downloads_and_nothing_else() {
    let env = console_support::start().await;
    let base = env.admin_url();
    let own: ImportRecord = env.import("acme", &csv_with_two_bad_rows()).await;
    assert_eq!(own.status, ImportStatus::Partial);
    let held_base = env.import("beta", &users_csv(0, 10)).await;
    let other = env.import("beta", &users_csv(0, 2)).await;
    assert_eq!(
        other.status,
        ImportStatus::Held,
        "{other:?} after {held_base:?}"
    );

    let b = Browser::start().await;
    sign_in_tenant(&b, &env, "acme", ACME_PORTAL_PASSWORD).await;
    b.click("#runs tbody tr:first-child th a").await;
    assert_eq!(b.path().await, format!("/tenants/acme/runs/{}", own.id));
    assert!(b
        .text("#skipped")
        .await
        .contains("not a valid email address"));
    let cookies = browser_cookie(&b).await;
    let report = path_of(&b.attr("#download-report", "href").await.unwrap());
    let (status, bytes, _) = get_bytes(&base, &report, &cookies).await;
    assert_eq!(status, 200);
    assert_eq!(
        bytes,
        std::fs::read(env.home("acme").join(own.report.as_ref().unwrap())).unwrap()
    );
    b.open(&format!("{base}/tenants/acme/today")).await;
    assert_eq!(b.count("#run-now").await, 0, "no Run now in the portal");

    // Another tenant's run, its downloads and its held page: the 404 of nothing there.
    for path in [
        format!("/tenants/beta/runs/{}", other.id),
        format!("/tenants/beta/runs/{}/report", other.id),
        format!("/tenants/beta/runs/{}/file", other.id),
        format!("/tenants/beta/runs/{}/held", other.id),
        "/tenants/beta/today".to_string(),
        format!("/tenants/acme/runs/{}/held", own.id),
    ] {
        let (status, bytes, _) = get_bytes(&base, &path, &cookies).await;
        assert_eq!(status, 404, "{path} answers 404 to tenant acme");
        assert!(!String::from_utf8_lossy(&bytes).contains("user02"));
    }
    b.open(&format!("{base}/tenants/beta/runs/{}", other.id))
        .await;
    assert!(b.page_text().await.contains("404"));

    // Approve and Run now are the operator's, even with the tenant's own valid token.
    let (cookies, csrf) = tenant_session(&base, "acme", ACME_PORTAL_PASSWORD).await;
    for path in [
        format!("/tenants/beta/runs/{}/approve", other.id),
        format!("/tenants/acme/runs/{}/approve", own.id),
        "/tenants/acme/run-now".to_string(),
        "/tenants/beta/run-now".to_string(),
    ] {
        let answer = request(&base, "POST", &path, &cookies, Some(&[("csrf", &csrf)])).await;
        assert_eq!(answer.status, 404, "{path}: {answer:?}");
    }
    let still = env
        .server()
        .store
        .import_record("beta", &other.id)
        .unwrap()
        .unwrap();
    assert_eq!(still.status, ImportStatus::Held, "nothing was approved");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_the_delivery_backlog_of_a_failing_receiver() {
    // Nothing listens on this port: every webhook and SCIM push attempt fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let anchor = "org_units = [\"HQ\", \"R&D\"]\n";
    let env = admin_support::Env::start_edited(
        support::server_store::ServerStore::for_test(),
        |text| {
            text.replacen(
                anchor,
                &format!(
                    "{anchor}[tenants.scim_push]\nurl = \"{dead}/scim/v2\"\ntoken = \"push-token\"\n\
                     [[tenants.webhooks]]\nurl = \"{dead}/hooks\"\n\
                     secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
                ),
                1,
            )
        },
    )
    .await;
    let base = env.admin_url();
    env.import("acme", &users_csv(0, 10)).await;
    let (cookies, _) = operator_session(&base).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let row = loop {
        let page = request(&base, "GET", "/tenants", &cookies, None).await;
        assert_eq!(page.status, 200);
        let at = page.body.find("id=\"tenant-acme\"").unwrap();
        let row = page.body[at..page.body[at..].find("</tr>").unwrap() + at].to_string();
        if row.matches("failing").count() == 2 {
            break row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the failing deliveries never showed: {row}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        row.contains("10 changes"),
        "10 users wait to be pushed: {row}"
    );
    let events = row
        .split("<td>")
        .find(|cell| cell.contains(" event"))
        .unwrap_or_else(|| panic!("a webhook backlog cell: {row}"));
    let pending: u64 = events.trim().split(' ').next().unwrap().parse().unwrap();
    assert!(pending >= 1, "events wait for the webhook: {row}");
    let beta = request(&base, "GET", "/tenants?q=beta", &cookies, None).await;
    assert!(beta.body.contains("no webhooks") && beta.body.contains("no SCIM push"));
}
