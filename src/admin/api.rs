//! The admin API routes (all behind the `[admin] token`), and `/metrics`.
//!
//! Requests enter as paths under `/api/tenants/{tenant}/...` with small query strings and, for
//! `preview`, the raw bytes of a CSV file; they leave as JSON: import records and users in the
//! stable form of design.md §5 (the `Serialize` of [`ImportRecord`] and [`User`]), previews
//! as the record plus the planned changes. See `docs/operators.md` for the route table.
//!
//! Decisions: a tenant not in the current config is a 404 even if the store still has data for
//! it; `limit` is clamped to 1..=1000; a POST body is optional but, when given, must be a JSON
//! object (the API takes no options in bodies today, so anything else is a client bug worth a
//! 400); one preview runs at a time (each holds a whole file in memory).

use super::{auth, ApiError, AppState};
use crate::config::{Config, Tenant};
use crate::model::{ImportRecord, ImportStatus, User, UserStatus};
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;

pub(super) use super::request::{number_param, optional_json, params, path, read_body, Params};
pub(super) type ApiResult = Result<Response, ApiError>;

/// Most history records one request returns.
pub const MAX_LIMIT: usize = 1000;

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/tenants", get(tenants))
        .route("/api/progress", get(progress_all))
        .route("/api/nodes", get(nodes))
        .route("/api/openapi.json", get(super::openapi::document))
        .route("/api/tenants/{tenant}/imports", get(history))
        .route("/api/tenants/{tenant}/imports/{id}", get(one_import))
        .route("/api/tenants/{tenant}/imports/{id}/approve", post(approve))
        .route("/api/tenants/{tenant}/run-now", post(run_now))
        .route("/api/tenants/{tenant}/today", get(today))
        .route("/api/tenants/{tenant}/preview", post(preview))
        .route("/api/tenants/{tenant}/progress", get(progress_one))
        .route("/api/tenants/{tenant}/users", get(users))
        .route("/api/tenants/{tenant}/users/{key}", get(one_user))
        .route("/api/tenants/{tenant}/users/{key}/restore", post(restore))
        // SCIM push (issue 12)
        .route(
            "/api/tenants/{tenant}/scim-push",
            get(super::scim_push::status),
        )
        .route(
            "/api/tenants/{tenant}/scim-push/reconcile",
            post(super::scim_push::reconcile),
        )
        // issue 12: the change log (admin/changes.rs)
        .route(
            "/api/tenants/{tenant}/changes",
            get(super::changes::changes),
        )
        .route(
            "/api/tenants/{tenant}/users/{key}/changes",
            get(super::changes::user_changes),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ))
        .with_state(state)
}

/// 405 as JSON, for a known route asked with a method it does not take.
pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method",
    )
}

pub(super) fn json_ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

/// The tenant of a path, from the current config.
pub(super) fn tenant_of(config: &Config, id: &str) -> Result<Tenant, ApiError> {
    config
        .tenant(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("there is no tenant {id:?} in the config")))
}

/// Runs blocking store or import work off the async runtime.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<anyhow::Result<T>, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(what, anyhow::anyhow!("the task failed: {e}")))
}

/// [`blocking`] for the common case: any error is a 500 that says `what` failed.
pub(crate) async fn blocking_ok<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    blocking(what, f)
        .await?
        .map_err(|e| ApiError::internal(what, e))
}

/// Fails (503 with the store's sentence when it cannot be reached) unless the store answers a
/// read of the tenant's history now. A run asked for while the store is down would otherwise
/// wait on the tenant's queue for the outage to end (review s16 cluster F5); approve and
/// restore read the store before they queue anyway.
pub(crate) async fn store_answers(st: &AppState, tenant: &str) -> Result<(), ApiError> {
    let (store, tenant) = (st.store.clone(), tenant.to_string());
    blocking_ok("cannot run the import now", move || {
        store.history(&tenant, 1).map(|_| ())
    })
    .await
}

/// `GET /health`: 200 while the store writes (its last heartbeat was recorded), else 503
/// naming the store's first error (`store::health`).
async fn health(State(st): State<AppState>) -> ApiResult {
    let config = st.config.current();
    if let Some((failing, error)) = st.store.health().failing() {
        let body = json!({
            "status": "failing",
            "error": format!("the store cannot write (for {} s): {error}", failing.as_secs()),
            "version": env!("CARGO_PKG_VERSION"),
        });
        return Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response());
    }
    json_ok(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "tenants": config.tenants.len(),
        "imports_running": st.intake.progress().len(),
    }))
}

/// `GET /metrics`. The outbox is counted on a blocking thread, as every store read is, so the
/// answer deadline holds while the store is frozen; when the store cannot count it, the gauge
/// is left out rather than shown as 0 (s29: it was counted on the request's task, and a down
/// PostgreSQL read as an empty outbox).
async fn metrics(State(st): State<AppState>) -> Response {
    let store = st.store.clone();
    let depth = match blocking("cannot count the mail outbox", move || store.outbox_len()).await {
        Ok(Ok(n)) => Some(n),
        Ok(Err(e)) => {
            super::log_failure("admin API", "/metrics", &e);
            None
        }
        Err(_) => None,
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(depth),
    )
        .into_response()
}

async fn tenants(State(st): State<AppState>) -> ApiResult {
    let config = st.config.current();
    let store = st.store.clone();
    let ids: Vec<String> = config.tenants.iter().map(|t| t.id.clone()).collect();
    let rows = blocking_ok("cannot list the tenants", move || {
        let mut out = Vec::new();
        for id in ids {
            let (active, inactive, deleted) = store.user_counts(&id)?;
            let last = store.history(&id, 1)?.into_iter().next();
            out.push(json!({
                "id": id,
                "users": {"active": active, "inactive": inactive, "deleted": deleted},
                "last_import": last,
                "held": store.held_plans(&id)?,
            }));
        }
        Ok(out)
    })
    .await?;
    json_ok(rows)
}

async fn history(
    State(st): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    q: Params,
) -> ApiResult {
    let tenant = path(p)?;
    let t = tenant_of(&st.config.current(), &tenant)?;
    let limit = number_param(&params(q)?, "limit", 20, 1, MAX_LIMIT)?;
    let store = st.store.clone();
    let (records, held) = blocking_ok("cannot read the import history", move || {
        Ok((store.history(&t.id, limit)?, store.held_plans(&t.id)?))
    })
    .await?;
    let answer: Vec<serde_json::Value> = records.iter().map(|r| with_approval(r, &held)).collect();
    json_ok(answer)
}

/// A record as the API shows it: a `held` one also says whether it still waits for approval
/// (`awaiting_approval`), since a newer file of the tenant sets a held plan aside and its record
/// keeps the status `held` it was committed with (review s19 docs F1).
pub(crate) fn with_approval(record: &ImportRecord, held: &[String]) -> serde_json::Value {
    let mut v = serde_json::to_value(record).unwrap_or(serde_json::Value::Null);
    if record.status == ImportStatus::Held {
        if let Some(fields) = v.as_object_mut() {
            let waiting = held.contains(&record.id);
            fields.insert("awaiting_approval".into(), waiting.into());
        }
    }
    v
}

async fn find_import(st: &AppState, tenant: &str, id: &str) -> Result<ImportRecord, ApiError> {
    let store = st.store.clone();
    let (t, i) = (tenant.to_string(), id.to_string());
    blocking_ok("cannot read the import history", move || {
        store.import_record(&t, &i)
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("tenant {tenant} has no import {id:?}")))
}

async fn one_import(
    State(st): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let (tenant, id) = path(p)?;
    tenant_of(&st.config.current(), &tenant)?;
    let record = find_import(&st, &tenant, &id).await?;
    let (store, t) = (st.store.clone(), tenant.clone());
    let held = blocking_ok("cannot read the held plans", move || store.held_plans(&t)).await?;
    json_ok(with_approval(&record, &held))
}

async fn approve(
    State(st): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let (tenant, id) = path(p)?;
    let t = tenant_of(&st.config.current(), &tenant)?;
    optional_json(&headers, body).await?;
    json_ok(approve_held(&st, &t, &id).await?)
}

async fn run_now(
    State(st): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let tenant = path(p)?;
    let t = tenant_of(&st.config.current(), &tenant)?;
    optional_json(&headers, body).await?;
    store_answers(&st, &t.id).await?;
    let records = (st.intake.run_now(&t.id).await)
        .map_err(|why| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why))?;
    json_ok(json!({ "tenant": t.id, "file": t.import.file, "imports": records }))
}

/// 503 with `Retry-After: 1` when no heavy turn is free (`heavy::HeavyTurns`).
fn listings_busy() -> Response {
    let mut busy = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many directory listings are running or waiting; retry in a second",
    )
    .into_response();
    busy.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    busy
}

async fn today(State(st): State<AppState>, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let tenant = path(p)?;
    let config = st.config.current();
    let t = tenant_of(&config, &tenant)?;
    // Lists the tenant's root twice (up to max_tenant_entries each), like the console's
    // today page: a heavy read that takes a turn of the tenant's share (review s29).
    let Some(_turn) = st.heavy.turn(&t.id).await else {
        return Ok(listings_busy());
    };
    let store = st.store.clone();
    let report = blocking_ok("cannot look for today's file", move || {
        today_report(&config, &t, &store)
    })
    .await?;
    json_ok(report)
}

/// Today's file of a tenant: waiting in the root, or already imported today (history).
fn today_report(config: &Config, t: &Tenant, store: &crate::store::Store) -> anyhow::Result<Value> {
    let recent = store.history(&t.id, 50)?;
    let held = store.held_plans(&t.id)?;
    let file = super::today::today_file(config, t, recent);
    let imported: Vec<Value> = file
        .imported
        .iter()
        .map(|r| with_approval(r, &held))
        .collect();
    let mut answer = serde_json::to_value(file)?;
    answer["imported"] = Value::Array(imported);
    Ok(answer)
}

// --- shared with the web console (h-console-runs) ---

/// Approves the held run `id` of `t` through the intake (the API's and the console's
/// Approve): 404 when there is no such run, 409 when it is not held or was not applied.
pub(crate) async fn approve_held(
    st: &AppState,
    t: &Tenant,
    id: &str,
) -> Result<ImportRecord, ApiError> {
    let tenant = t.id.as_str();
    let record = find_import(st, tenant, id).await?;
    let store = st.store.clone();
    let tid = tenant.to_string();
    let held = blocking_ok("cannot read the held plans", move || store.held_plans(&tid)).await?;
    if record.status == ImportStatus::Held && !held.iter().any(|h| h == id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "import {id} of tenant {tenant} was set aside: a newer file was read after it was held (see the history), so it can no longer be approved; upload the file again if it is still meant"
            ),
        ));
    }
    if record.status != ImportStatus::Held {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "import {id} of tenant {tenant} is not held (its status is {}), so there is nothing to approve",
                record.status
            ),
        ));
    }
    // Like every import, through the tenant's queue (one run per tenant at a time).
    // Not taken (the server is stopping): 503, as for a store outage, so a client tries again
    // (review s30: it was a 500).
    let applied = st.intake.approve(tenant, id).await.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot approve the import: the intake is stopping or the tenant was removed; nothing was applied",
        )
    })?;
    applied.map_err(|e| {
        ApiError::refusal("cannot approve the import", e, StatusCode::CONFLICT, |e| {
            tracing::warn!(%tenant, import_id = %id, "approve refused: {e:#}");
            // The engine's refusals name the run already (review s19 docs F14: said twice).
            let said = format!("{e:#}");
            let named = format!("import {id} of tenant {tenant} ");
            match said.starts_with(&named) {
                true => said,
                false => format!("import {id} of tenant {tenant} was not applied: {said}"),
            }
        })
    })
}

// --- end shared with the web console ---

async fn preview(
    State(st): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    q: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let tenant = path(p)?;
    let config = st.config.current();
    let t = tenant_of(&config, &tenant)?;
    let m = params(q)?;
    let file = m
        .get("file")
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "preview.csv".to_string());
    let Some(_file_turn) = st.preview_file_turn().await else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            super::PREVIEW_FILE_BUSY.to_string(),
        ));
    };
    let bytes = read_body(&headers, body, config.server.max_upload_bytes).await?;
    let _permit = st
        .previews
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ApiError::internal("cannot start the preview", anyhow::anyhow!("{e}")))?;
    let store = st.store.clone();
    let name = file.clone();
    let preview = blocking("cannot preview the file", move || {
        crate::import::preview_bytes(&store, &t, &name, &bytes)
    })
    .await?
    .map_err(|e| {
        // The preview reads the tenant's directory first.
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        ApiError::refusal("cannot preview the file", e, status, |e| {
            format!("cannot preview {file}: {e:#}")
        })
    })?;
    json_ok(json!({
        "tenant": tenant,
        "file": file,
        "dry_run": true,
        "record": preview.record,
        "changes": preview.changes,
        "truncated": preview.truncated,
    }))
}

/// `{"nodes": [...]}`: every node of the cluster with its addresses and last heartbeat (with
/// sled, this node alone).
async fn nodes(State(st): State<AppState>) -> ApiResult {
    let store = st.store.clone();
    let nodes = blocking_ok("cannot list the nodes", move || store.nodes()).await?;
    json_ok(json!({ "nodes": nodes }))
}

async fn progress_all(State(st): State<AppState>) -> ApiResult {
    json_ok(st.intake.progress())
}

async fn progress_one(
    State(st): State<AppState>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let tenant = path(p)?;
    tenant_of(&st.config.current(), &tenant)?;
    json_ok(json!({ "tenant": tenant, "running": st.intake.progress().remove(&tenant) }))
}

/// `status` query value → filter (None = every status).
fn status_param(m: &HashMap<String, String>) -> Result<Option<UserStatus>, ApiError> {
    match m
        .get("status")
        .map(|s| s.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("all") => Ok(None),
        Some("active") => Ok(Some(UserStatus::Active)),
        Some("inactive") => Ok(Some(UserStatus::Inactive)),
        Some("deleted") => Ok(Some(UserStatus::Deleted)),
        Some(other) => Err(ApiError::bad_request(format!(
            "status must be one of active, inactive, deleted, all; not {other:?}"
        ))),
    }
}

async fn users(
    State(st): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    q: Params,
) -> ApiResult {
    let tenant = path(p)?;
    let t = tenant_of(&st.config.current(), &tenant)?;
    let status = status_param(&params(q)?)?;
    let Some(_turn) = st.heavy.turn(&tenant).await else {
        return Ok(listings_busy());
    };
    let store = st.store.clone();
    let list = blocking_ok("cannot list the users", move || store.users(&t.id, status)).await?;
    json_ok(list)
}

async fn one_user(
    State(st): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let (tenant, key) = path(p)?;
    let t = tenant_of(&st.config.current(), &tenant)?;
    json_ok(find_user(&st, &t, &key).await?)
}

/// The tenant's user `key` names ([`MatchBy::names`](crate::config::MatchBy::names)); 404
/// when none.
async fn find_user(st: &AppState, tenant: &Tenant, key: &str) -> Result<User, ApiError> {
    let store = st.store.clone();
    let (t, k) = (tenant.clone(), key.to_string());
    blocking_ok("cannot read the user", move || {
        crate::import::named_user(&*store, &t, &k)
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("tenant {} has no user {key:?}", tenant.id)))
}

async fn restore(
    State(st): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let (tenant, key) = path(p)?;
    let t = tenant_of(&st.config.current(), &tenant)?;
    optional_json(&headers, body).await?;
    find_user(&st, &t, &key).await?;
    // Like approve, through the tenant's queue: never in the middle of one of its imports.
    let restored = st.intake.restore(&t.id, &key).await.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot restore the user: the intake is stopping or the tenant was removed; nothing was changed",
        )
    })?;
    let user = restored.map_err(|e| {
        ApiError::refusal("cannot restore the user", e, StatusCode::CONFLICT, |e| {
            format!("{e:#}")
        })
    })?;
    tracing::info!(%tenant, key = %user.key, "user restored through the admin API");
    json_ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review s29 console F3: `today` lists the tenant's folder like the console's page, under
    /// a turn of the tenant's heavy share.
    #[tokio::test]
    async fn today_takes_a_heavy_turn() {
        let dir = tempfile::tempdir().unwrap();
        let st = super::super::test_state::state(dir.path());
        let held = st.heavy.take_share("acme");
        let busy = today(State(st.clone()), Ok(Path("acme".to_string())))
            .await
            .unwrap_or_else(|e| e.into_response());
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        drop(held);
        let ok = today(State(st), Ok(Path("acme".to_string())))
            .await
            .unwrap_or_else(|e| e.into_response());
        assert_eq!(ok.status(), StatusCode::OK);
    }
}
