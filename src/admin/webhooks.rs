//! `GET /api/tenants/{tenant}/webhooks` and `POST /api/tenants/{tenant}/webhooks/{index}/enable`
//! (behind the `[admin] token`): each endpoint of the tenant's `[[tenants.webhooks]]` with its
//! delivery state, and re-enabling one that `410 Gone` disabled.
//!
//! Data enters as the tenant (and the endpoint's 0-based index in config order, as config
//! errors name it: `webhooks[0]`) in the path; it leaves as `{"webhooks": [EndpointStatus]}` in
//! config order (url, events, position, backlog, last success, last error, attempts, next
//! attempt, disabled), read from the store through `deliver::webhook::endpoint_status`, or as
//! `{"enabled": bool, "webhook": EndpointStatus}` after `deliver::webhook::enable` (enabled is
//! false when the endpoint was not disabled: nothing changed). The secret is never shown. A
//! tenant not in the config, or an index with no endpoint, is a 404. Errors follow the rest of
//! the API (`api`): JSON `{"error"}` always, 400 for a path that is not UTF-8, 405 for another
//! method, and the `enable` body optional but, when given, a JSON object.

use super::api::{method_not_allowed, optional_json, path};
use super::{auth, ApiError, AppState};
use crate::deliver::webhook::{enable, endpoint_status};
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/tenants/{tenant}/webhooks", get(webhooks))
        .route(
            "/api/tenants/{tenant}/webhooks/{index}/enable",
            post(enable_endpoint),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ))
        .with_state(state)
}

async fn webhooks(State(st): State<AppState>, p: Result<Path<String>, PathRejection>) -> Response {
    let tenant = match path(p) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let config = st.config.current();
    let Some(t) = config.tenant(&tenant).cloned() else {
        return ApiError::not_found(format!("there is no tenant {tenant:?} in the config"))
            .into_response();
    };
    let store = st.store.clone();
    let read = tokio::task::spawn_blocking(move || {
        t.webhooks
            .iter()
            .map(|hook| endpoint_status(&store, &t.id, hook))
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await;
    match read {
        Ok(Ok(list)) => Json(serde_json::json!({ "webhooks": list })).into_response(),
        Ok(Err(e)) => ApiError::internal("cannot read the webhook cursors", e).into_response(),
        Err(e) => ApiError::internal(
            "cannot read the webhook cursors",
            anyhow::anyhow!("the task failed: {e}"),
        )
        .into_response(),
    }
}

async fn enable_endpoint(
    State(st): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (tenant, index) = match path(p) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = optional_json(&headers, body).await {
        return e.into_response();
    }
    let config = st.config.current();
    let Some(t) = config.tenant(&tenant).cloned() else {
        return ApiError::not_found(format!("there is no tenant {tenant:?} in the config"))
            .into_response();
    };
    let Some(hook) = index
        .parse::<usize>()
        .ok()
        .and_then(|i| t.webhooks.get(i).cloned())
    else {
        return ApiError::not_found(format!(
            "tenant {tenant:?} has no webhook endpoint {index:?} (it has {}, numbered from 0)",
            t.webhooks.len()
        ))
        .into_response();
    };
    let store = st.store.clone();
    let done = tokio::task::spawn_blocking(move || {
        let enabled = enable(&store, &t.id, &hook)?;
        Ok::<_, anyhow::Error>((enabled, endpoint_status(&store, &t.id, &hook)?))
    })
    .await;
    match done {
        Ok(Ok((enabled, status))) => {
            Json(serde_json::json!({ "enabled": enabled, "webhook": status })).into_response()
        }
        Ok(Err(e)) => ApiError::internal("cannot enable the webhook endpoint", e).into_response(),
        Err(e) => ApiError::internal(
            "cannot enable the webhook endpoint",
            anyhow::anyhow!("the task failed: {e}"),
        )
        .into_response(),
    }
}
