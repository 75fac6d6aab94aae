//! A held run: who approving it would deactivate or delete, and the Approve form.
//!
//! `GET /tenants/{t}/runs/{id}/held?page=N` (operators only) makes a dry run of the held plan
//! (`import::preview_held`: the stored file and profile against the directory as it is now),
//! one at a time with the API's previews (`AppState::previews`), and lists the deactivations
//! and deletions it plans, [`PER_PAGE`] a page (the dry run lists at most
//! `import::PREVIEW_LIMIT` changes; the counts are always whole). `POST
//! /tenants/{t}/runs/{id}/approve` (operators only, CSRF) approves through the intake exactly
//! as the admin API does (`api::approve_held`) and shows the record it completed.

use super::session::{posted_csrf, CsrfForm};
use super::{blocking, page, Chrome, PageError, Viewer};
use crate::admin::AppState;
use crate::model::{Change, ImportRecord, ImportStatus};
use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Users listed per page.
const PER_PAGE: usize = 50;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/tenants/{tenant}/runs/{id}/held", get(held_page))
        .route("/tenants/{tenant}/runs/{id}/approve", post(approve))
}

#[derive(Deserialize, Default)]
struct PageQuery {
    #[serde(default)]
    page: Option<String>,
}

/// One user approving would remove.
#[derive(Clone)]
struct Removal {
    key: String,
    /// "deactivated" or "deleted".
    action: &'static str,
}

#[derive(Template)]
#[template(path = "held.html")]
struct HeldPage {
    chrome: Chrome,
    tenant: String,
    record: ImportRecord,
    removals: Vec<Removal>,
    /// Removals the dry run listed in all (all pages).
    listed: usize,
    /// The dry run stopped listing changes at its limit.
    truncated: bool,
    page: usize,
    pages: usize,
}

#[derive(Template)]
#[template(path = "approved.html")]
struct ApprovedPage {
    chrome: Chrome,
    tenant: String,
    record: ImportRecord,
}

async fn held_page(
    State(st): State<AppState>,
    viewer: Viewer,
    Path((tenant, id)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Result<Response, PageError> {
    viewer.operator_only()?;
    let (t, record) = super::run::find_run(&st, &viewer, &tenant, &id).await?;
    if record.status != ImportStatus::Held {
        return Err(not_held(&t.id, &record));
    }
    let planning = tokio::spawn({
        let (st, t, record) = (st.clone(), t.clone(), record.clone());
        async move {
            let planned = removals_of(&st, &t, &record).await;
            if let Err(e) = &planned {
                tracing::warn!(tenant = %t.id, import_id = %record.id, "cannot plan the held run: {}", e.message);
            }
            planned
        }
    });
    let planned = match tokio::time::timeout(PLAN_WAIT, planning).await {
        Ok(Ok(planned)) => planned?,
        Ok(Err(e)) => {
            return Err(PageError::internal(
                "cannot plan the held run",
                anyhow::anyhow!("the task failed: {e}"),
            ))
        }
        // Still planning (a big file): it goes on and keeps its result; the page says so and
        // reloads itself.
        Err(_) => return planning_page(&viewer, &t.id, record),
    };
    let Some((all, truncated)) = planned else {
        return Err(not_held(&t.id, &record));
    };
    let listed = all.len();
    let pages = listed.div_ceil(PER_PAGE).max(1);
    let page_no = super::history::page_number(query.page.as_deref()).clamp(1, pages);
    let removals = all
        .iter()
        .skip((page_no - 1) * PER_PAGE)
        .take(PER_PAGE)
        .cloned()
        .collect();
    page(&HeldPage {
        chrome: Chrome::new(
            &viewer,
            format!("Held run {} of {}", record.id, t.id),
            Some(&t.id),
        ),
        tenant: t.id.clone(),
        record,
        removals,
        listed,
        truncated,
        page: page_no,
        pages,
    })
}

/// A held run's planned removals, kept for the few runs planned last so that paging through a
/// long list does not plan the run again for every page (a dry run of a 1,000,000-user file
/// takes seconds). An entry holds for the directory version it was planned against: any commit
/// to the tenant makes it stale.
struct PlannedRemovals {
    tenant: String,
    id: String,
    version: u64,
    all: Arc<Vec<Removal>>,
    truncated: bool,
}

/// Held runs whose removals are kept (each at most `import::PREVIEW_LIMIT` keys).
const PLANS_KEPT: usize = 4;
/// How long the held page waits for a dry run before it answers "planning" and reloads.
const PLAN_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Template)]
#[template(path = "held_planning.html")]
struct PlanningPage {
    chrome: Chrome,
    tenant: String,
    record: ImportRecord,
}

/// The held page while its dry run is still going: the run, Approve, and a reload in 2 s.
fn planning_page(
    viewer: &Viewer,
    tenant: &str,
    record: ImportRecord,
) -> Result<Response, PageError> {
    page(&PlanningPage {
        chrome: Chrome::new(
            viewer,
            format!("Held run {} of {tenant}", record.id),
            Some(tenant),
        ),
        tenant: tenant.to_string(),
        record,
    })
}

/// The removals of the last [`PLANS_KEPT`] held runs planned on this node (in `AppState`, so
/// each server, and each test server in one process, keeps its own).
#[derive(Clone, Default)]
pub(crate) struct HeldPlans(Arc<Mutex<VecDeque<PlannedRemovals>>>);

impl HeldPlans {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<PlannedRemovals>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Who approving `record` would remove, sorted by key, and whether the dry run stopped
/// listing at its limit; None when the run is no longer held.
async fn removals_of(
    st: &AppState,
    t: &crate::config::Tenant,
    record: &ImportRecord,
) -> Result<Option<(Arc<Vec<Removal>>, bool)>, PageError> {
    let store = st.store.clone();
    let tid = t.id.clone();
    let version = blocking("cannot read the directory", move || {
        Ok(store.tenant_state(&tid)?.version)
    })
    .await?;
    let kept = |list: &VecDeque<PlannedRemovals>| {
        list.iter()
            .find(|p| p.tenant == t.id && p.id == record.id && p.version == version)
            .map(|p| (p.all.clone(), p.truncated))
    };
    if let Some(found) = kept(&st.held_plans.lock()) {
        return Ok(Some(found));
    }
    let _turn = st
        .previews
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| PageError::internal("cannot start the dry run", anyhow::anyhow!("{e}")))?;
    // Another request may have planned it while this one waited for its turn.
    if let Some(found) = kept(&st.held_plans.lock()) {
        return Ok(Some(found));
    }
    let store = st.store.clone();
    let (held_tenant, iid) = (t.clone(), record.id.clone());
    let planned = blocking("cannot plan the held run", move || {
        if !store.held_plans(&held_tenant.id)?.contains(&iid) {
            return Ok(None);
        }
        crate::import::preview_held(&store, &held_tenant, &iid).map(Some)
    })
    .await?;
    let Some(preview) = planned else {
        return Ok(None);
    };
    let mut all: Vec<Removal> = preview
        .changes
        .into_iter()
        .filter_map(|c| match c {
            Change::Deactivate { key } => Some(Removal {
                key,
                action: "deactivated",
            }),
            Change::Delete { key } => Some(Removal {
                key,
                action: "deleted",
            }),
            _ => None,
        })
        .collect();
    all.sort_by(|a, b| a.key.cmp(&b.key));
    let all = Arc::new(all);
    let mut list = st.held_plans.lock();
    list.retain(|p| !(p.tenant == t.id && p.id == record.id));
    if list.len() >= PLANS_KEPT {
        list.pop_front();
    }
    list.push_back(PlannedRemovals {
        tenant: t.id.clone(),
        id: record.id.clone(),
        version,
        all: all.clone(),
        truncated: preview.truncated,
    });
    Ok(Some((all, preview.truncated)))
}

fn not_held(tenant: &str, record: &ImportRecord) -> PageError {
    PageError::new(
        StatusCode::CONFLICT,
        format!(
            "run {} of tenant {tenant} is not held (its status is {}), so there is nothing to approve",
            record.id, record.status
        ),
    )
}

async fn approve(
    State(st): State<AppState>,
    viewer: Viewer,
    Path((tenant, id)): Path<(String, String)>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, PageError> {
    // The role first: a tenant gets the 404 of a page it cannot have, whatever its token.
    viewer.operator_only()?;
    viewer.check_csrf(&posted_csrf(form)?)?;
    let config = st.config.current();
    let t = viewer.tenant(&config, &tenant)?.clone();
    let record = crate::admin::api::approve_held(&st, &t, &id).await?;
    tracing::info!(tenant = %t.id, import_id = %id, status = %record.status, "held run approved in the console");
    page(&ApprovedPage {
        chrome: Chrome::new(
            &viewer,
            format!("Run {} of {} approved", record.id, t.id),
            Some(&t.id),
        ),
        tenant: t.id.clone(),
        record,
    })
}
