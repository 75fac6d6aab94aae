//! Today's file of a tenant: waiting in its root, or already imported today, with a download of
//! a waiting file and (operators) "Run now".
//!
//! `GET /tenants/{t}/today` (an operator any tenant, a tenant its own) reads what the admin
//! API's `today` reads (`today::today_file`: the tenant's root folder and its newest runs),
//! under a turn of the tenant's share of heavy reads (`heavy::HeavyTurns`; a 503 page when
//! none is free).
//! `GET /tenants/{t}/today/files/{name}` serves a waiting file only when `name` is one of the
//! files the intake would import now (`intake::candidates`, compared exactly) and it lies
//! inside the tenant's folder (`run::tenant_file`). `POST /tenants/{t}/run-now` (operators,
//! CSRF) runs `intake.run_now` like the API and shows the runs it made.

use super::session::{posted_csrf, CsrfForm};
use super::{blocking, page, Chrome, PageError, Viewer};
use crate::admin::today::{today_file, TodayFile};
use crate::admin::AppState;
use crate::model::ImportRecord;
use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};

/// Newest runs read to find today's imports.
const RECENT_RUNS: usize = 50;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/tenants/{tenant}/today", get(today))
        .route(
            "/tenants/{tenant}/today/files/{name}",
            get(download_waiting),
        )
        .route("/tenants/{tenant}/run-now", post(run_now))
}

#[derive(Template)]
#[template(path = "today.html")]
struct TodayPage {
    chrome: Chrome,
    tenant: String,
    today: TodayFile,
}

#[derive(Template)]
#[template(path = "run_now.html")]
struct RunNowPage {
    chrome: Chrome,
    tenant: String,
    pattern: String,
    runs: Vec<ImportRecord>,
}

async fn today(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(tenant): Path<String>,
) -> Result<Response, PageError> {
    let config = st.config.current();
    let t = viewer.tenant(&config, &tenant)?.clone();
    // Lists the tenant's root twice (up to max_tenant_entries, 100,000, each) and stats every
    // entry: a heavy read like a run's report, under a turn of the tenant's share, so a
    // portal reloading it cannot keep the cores busy (review s29).
    let Some(_turn) = st.heavy.turn(&t.id).await else {
        return Err(PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many heavy pages are being read; reload the page in a second",
        ));
    };
    let store = st.store.clone();
    let tc = t.clone();
    let report = blocking("cannot look for today's file", move || {
        let recent = store.history(&tc.id, RECENT_RUNS)?;
        Ok(today_file(&config, &tc, recent))
    })
    .await?;
    page(&TodayPage {
        chrome: Chrome::new(&viewer, format!("Today's file of {}", t.id), Some(&t.id)),
        tenant: t.id.clone(),
        today: report,
    })
}

async fn download_waiting(
    State(st): State<AppState>,
    viewer: Viewer,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let config = st.config.current();
    let t = viewer.tenant(&config, &tenant)?.clone();
    let home = config.tenant_home(&t.id);
    let wanted = name.clone();
    let waiting = blocking("cannot look for today's file", move || {
        Ok(crate::intake::candidates(&config, &t)
            .into_iter()
            .any(|n| n == wanted))
    })
    .await?;
    if !waiting {
        return Err(PageError::not_found(format!(
            "{name:?} is not a file waiting to be imported"
        )));
    }
    super::run::send_file(home, name).await
}

async fn run_now(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(tenant): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, PageError> {
    // The role first: a tenant gets the 404 of a page it cannot have, whatever its token.
    viewer.operator_only()?;
    viewer.check_csrf(&posted_csrf(form)?)?;
    let config = st.config.current();
    let t = viewer.tenant(&config, &tenant)?.clone();
    crate::admin::api::store_answers(&st, &t.id).await?;
    let runs = (st.intake.run_now(&t.id).await)
        .map_err(|why| PageError::new(StatusCode::SERVICE_UNAVAILABLE, why))?;
    tracing::info!(tenant = %t.id, runs = runs.len(), "run now from the console");
    page(&RunNowPage {
        chrome: Chrome::new(&viewer, format!("Run now: {}", t.id), Some(&t.id)),
        tenant: t.id.clone(),
        pattern: t.import.file.clone(),
        runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::console::Role;

    /// Review s29 console F3: the today page lists the tenant's folder (up to 100,000 entries,
    /// twice) without a heavy turn, so a portal reloading it kept the cores busy.
    #[tokio::test]
    async fn the_today_page_takes_a_heavy_turn() {
        let dir = tempfile::tempdir().unwrap();
        let st = crate::admin::test_state::state(dir.path());
        let ask = |role: Role| {
            today(
                State(st.clone()),
                Viewer::for_test(role),
                Path("acme".to_string()),
            )
        };
        let held = st.heavy.take_share("acme");
        assert!(!held.is_empty());
        for role in [Role::Operator, Role::Tenant("acme".into())] {
            match ask(role).await {
                Err(e) => assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE, "{}", e.message),
                Ok(r) => panic!("answered {} without a turn", r.status()),
            }
        }
        drop(held);
        let page = ask(Role::Operator)
            .await
            .unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(page.status(), StatusCode::OK);
    }
}
