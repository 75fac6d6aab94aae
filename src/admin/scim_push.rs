//! The admin routes of SCIM push (issue 12): `GET /api/tenants/{t}/scim-push` (cursor, backlog,
//! last success, failing users with the provider's detail) and
//! `POST /api/tenants/{t}/scim-push/reconcile?dry_run=true|false` (what `roster scim-push
//! --reconcile` calls).
//!
//! Requests enter behind the admin token (the router's layer in `api`); the status is read from
//! the store's `scim-push` cursor and change log and from `deliver::scim_push::status`; a
//! reconcile runs on a blocking thread, one at a time in this process, and leaves as its
//! `Drift` report.

use super::{ApiError, AppState};
use crate::deliver::scim_push::{self, Pusher};
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// The backlog is counted up to this many changes ("at least" beyond).
pub const BACKLOG_COUNTED: usize = 10_000;

/// The tenant's `[tenants.scim_push]`, or a 404 naming what is missing.
fn push_config(
    st: &AppState,
    p: Result<Path<String>, PathRejection>,
) -> Result<(String, crate::config::ScimPushConfig), ApiError> {
    let Path(tenant) =
        p.map_err(|e| ApiError::bad_request(format!("the path is not valid: {}", e.body_text())))?;
    let config = st.config.current();
    let t = config.tenant(&tenant).ok_or_else(|| {
        ApiError::not_found(format!("there is no tenant {tenant:?} in the config"))
    })?;
    let push = t.scim_push.clone().ok_or_else(|| {
        ApiError::not_found(format!(
            "tenant {tenant:?} has no [tenants.scim_push] in the config"
        ))
    })?;
    Ok((tenant, push))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal("SCIM push", anyhow::anyhow!("the task failed: {e}")))?
}

/// `GET /api/tenants/{t}/scim-push`.
pub(super) async fn status(
    State(st): State<AppState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let (tenant, push) = push_config(&st, p)?;
    let store = st.store.clone();
    let t = tenant.clone();
    let (cursor, backlog, saved) = blocking(move || {
        let (cursor, backlog) = scim_push::status::backlog(&store, &t, BACKLOG_COUNTED)
            .map_err(|e| ApiError::internal("cannot read the SCIM push cursor", e))?;
        let source = scim_push::StoreSource {
            store,
            tenant: t,
            lease: None,
        };
        let saved = scim_push::ChangeSource::failures(&source)
            .map_err(|e| ApiError::internal("cannot read the SCIM push's failing users", e))?;
        Ok((cursor, backlog, saved))
    })
    .await?;
    let now = scim_push::snapshot(&tenant);
    // The store's list, saved by whichever node pushes this tenant after each batch that
    // changed it: the same answer from every node behind a load balancer.
    let failing = saved;
    Ok(Json(json!({
        "tenant": tenant,
        // Without userinfo and query, as webhook URLs are shown (s29: a token there was shown).
        "url": crate::deliver::webhook::shown_url(&push.url),
        "on_missing": push.on_missing,
        "position": cursor.position,
        "backlog": backlog.min(BACKLOG_COUNTED),
        "backlog_more": backlog > BACKLOG_COUNTED,
        "last_success": cursor.last_success,
        // Why the push does not run at all comes first: the cursor never hears of it.
        "last_error": now.stopped.clone().or(cursor.last_error),
        "stopped": now.stopped,
        // Changes retention removed before they were pushed (`scim_push::push` notes it).
        "gap": cursor.state.as_ref().and_then(|s| s.get("gap")).cloned(),
        "attempts": cursor.attempts,
        "next_attempt": cursor.next_attempt,
        "pushed": now.pushed,
        "failing": failing,
    }))
    .into_response())
}

/// One reconcile at a time in this process (each lists the application's users).
static RECONCILING: AtomicBool = AtomicBool::new(false);

/// `POST /api/tenants/{t}/scim-push/reconcile?dry_run=true|false` (default true).
pub(super) async fn reconcile(
    State(st): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (tenant, push) = push_config(&st, p)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    // Like every POST: a body, when given, is a JSON object (s29: it was never read).
    super::request::optional_json(&headers, body).await?;
    let dry_run = match q
        .get("dry_run")
        .map(|s| s.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dry_run must be true or false, not {other:?}"
            )))
        }
    };
    let Some(running) = Reconciling::start() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "a reconcile is already running; try again when it has finished",
        ));
    };
    let store = st.store.clone();
    let result = blocking(move || {
        // Cleared when the work ends, also when the client went away meanwhile (the request's
        // future is dropped, the blocking work is not).
        let _running = running;
        let pusher = Pusher::new(&tenant, &push).map_err(ApiError::bad_request)?;
        let users = store
            .users(&tenant, None)
            .map_err(|e| ApiError::internal("cannot read the directory", e))?;
        let now = |key: &str| store.user(&tenant, key);
        scim_push::reconcile(&pusher, &users, &now, push.on_missing, dry_run).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the application's SCIM API failed: {e}"),
            )
        })
    })
    .await;
    Ok(Json(result?).into_response())
}

/// The one reconcile running in this process; dropping it lets the next one start.
struct Reconciling;

impl Reconciling {
    fn start() -> Option<Reconciling> {
        (!RECONCILING.swap(true, Ordering::AcqRel)).then_some(Reconciling)
    }
}

impl Drop for Reconciling {
    fn drop(&mut self) {
        RECONCILING.store(false, Ordering::Release);
    }
}
