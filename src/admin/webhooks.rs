//! `GET /api/tenants/{tenant}/webhooks` (behind the `[admin] token`): each endpoint of the
//! tenant's `[[tenants.webhooks]]` with its delivery state.
//!
//! Data enters as the tenant in the path; it leaves as `{"webhooks": [EndpointStatus]}` in
//! config order (url, events, position, backlog, last success, last error, attempts, next
//! attempt, disabled), read from the store through `deliver::webhook::endpoint_status`. The
//! secret is never shown. A tenant not in the config is a 404.

use super::{auth, ApiError, AppState};
use crate::deliver::webhook::endpoint_status;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/tenants/{tenant}/webhooks", get(webhooks))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ))
        .with_state(state)
}

async fn webhooks(State(st): State<AppState>, Path(tenant): Path<String>) -> Response {
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
