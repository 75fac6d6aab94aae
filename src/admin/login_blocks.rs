//! `GET /api/login-blocks` and `POST /api/login-blocks/{scope}/{subject}/lift` (behind the
//! `[admin] token`): the login blocks in force, and an operator lifting one (docs/operators.md,
//! "Lifting a block").
//!
//! Data enters as an optional `limit` (1..=1000, default 100), or a scope (`address`,
//! `tenant`) and subject (an IP address, a tenant id, or `(invalid name)`, the key every login
//! name that is no valid tenant id counts under) in the path. It leaves as
//! `{"node", "blocks": [{scope, subject, failures, blocked_until, source}]}`, where `source` is
//! `shared` (the counters several nodes share, PostgreSQL) or `node` (this node's memory; a
//! block already listed as shared is not listed again), or as `{scope, subject, lifted}`:
//! lifted is true when a block was in force here or in the shared counters. A lift clears the
//! subject's failures too; with a shared store it is recorded there, and every other node
//! forgets the subject at its next heartbeat (a third of `[cluster] lease_secs`). The shared
//! lift comes first: when the store cannot be reached the answer is 503 and nothing changed.

use super::api::{blocking_ok, json_ok, method_not_allowed, number_param, optional_json};
use super::api::{params, path, ApiResult, Params};
use super::{auth, ApiError, AppState};
use crate::store::LoginScope;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use std::net::IpAddr;

/// Blocks listed when the request names no `limit` (and by the console's page).
pub(crate) const DEFAULT_LIMIT: usize = 100;

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/login-blocks", get(list))
        .route("/api/login-blocks/{scope}/{subject}/lift", post(lift))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ))
        .with_state(state)
}

/// A block in force as the API and the console show it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct BlockRow {
    pub scope: &'static str,
    pub subject: String,
    pub failures: u32,
    pub blocked_until: chrono::DateTime<chrono::Utc>,
    /// `shared` (the counters the nodes share) or `node` (this node's memory).
    pub source: &'static str,
}

/// The blocks in force, at most `limit`: the shared ones, then this node's own that the
/// shared counters do not list.
pub(crate) async fn blocks_in_force(
    st: &AppState,
    limit: usize,
) -> Result<Vec<BlockRow>, ApiError> {
    let store = st.store.clone();
    let shared = blocking_ok("cannot read the login blocks", move || {
        store.login_blocks(limit)
    })
    .await?;
    let mut rows: Vec<BlockRow> = shared
        .iter()
        .map(|b| BlockRow {
            scope: b.scope.as_str(),
            subject: b.subject.clone(),
            failures: b.failures,
            blocked_until: b.blocked_until,
            source: "shared",
        })
        .collect();
    let now = chrono::Utc::now();
    for b in st.throttle.local_blocks(limit) {
        if rows.len() >= limit {
            break;
        }
        if shared
            .iter()
            .any(|s| s.scope == b.scope && s.subject == b.subject)
        {
            continue;
        }
        rows.push(BlockRow {
            scope: b.scope.as_str(),
            subject: b.subject,
            failures: b.failures,
            blocked_until: chrono::Duration::from_std(b.remaining)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .unwrap_or(now),
            source: "node",
        });
    }
    Ok(rows)
}

/// Lifts the block on `scope` `subject` (as the path or form gave them, checked here): in the
/// shared counters first, then in this node's memory. Returns the subject as the counters
/// key it, and whether a block was in force.
pub(crate) async fn lift_block(
    st: &AppState,
    scope: &str,
    subject: &str,
) -> Result<(LoginScope, String, bool), ApiError> {
    let given = subject.parse::<IpAddr>().map(|a| a.to_string()).ok();
    let (scope, subject) = subject_of(scope, subject)?;
    let store = st.store.clone();
    let key = subject.clone();
    let shared = blocking_ok("cannot lift the login block", move || {
        let mut lifted = store.lift_login_block(scope, &key)?;
        // A shared row keyed as a node before version 14 wrote it (`::ffff:203.0.113.9`, a
        // whole IPv6 address) is listed as it is: lifting it lifts that row too.
        if let Some(given) = given.filter(|g| scope == LoginScope::Address && *g != key) {
            lifted |= store.lift_login_block(scope, &given)?;
        }
        Ok(lifted)
    })
    .await?;
    let here = st.throttle.lift(scope, &subject);
    tracing::warn!(
        scope = scope.as_str(),
        subject = %subject,
        was_blocked = shared || here,
        "an operator lifted the login block (failures forgotten on every node)"
    );
    Ok((scope, subject, shared || here))
}

async fn list(State(st): State<AppState>, q: Params) -> ApiResult {
    let limit = number_param(&params(q)?, "limit", DEFAULT_LIMIT, 1, 1000)?;
    let blocks = blocks_in_force(&st, limit).await?;
    json_ok(json!({ "node": st.store.node_id(), "blocks": blocks }))
}

async fn lift(
    State(st): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let (scope, subject) = path(p)?;
    optional_json(&headers, body).await?;
    let (scope, subject, lifted) = lift_block(&st, &scope, &subject).await?;
    json_ok(json!({ "scope": scope.as_str(), "subject": subject, "lifted": lifted }))
}

/// The scope and subject of a lift, checked: an address is keyed as the throttle keys it
/// (`login::address_group`: `::ffff:203.0.113.9` is `203.0.113.9`, any address of
/// `2001:db8:1:2::/64` is `2001:db8:1:2::`), a tenant is a tenant id or the key of invalid
/// names.
fn subject_of(scope: &str, subject: &str) -> Result<(LoginScope, String), ApiError> {
    match LoginScope::parse(scope) {
        Some(LoginScope::Address) => subject
            .parse::<IpAddr>()
            .map(|a| {
                (
                    LoginScope::Address,
                    crate::login::address_group(a).to_string(),
                )
            })
            .map_err(|_| ApiError::bad_request(format!("{subject:?} is not an IP address"))),
        Some(LoginScope::Tenant) => {
            if crate::login::throttle_name(subject) == subject {
                Ok((LoginScope::Tenant, subject.to_string()))
            } else {
                Err(ApiError::bad_request(format!(
                    "{subject:?} is not a tenant id (nor {:?})",
                    crate::login::INVALID_NAME
                )))
            }
        }
        None => Err(ApiError::bad_request(format!(
            "the scope must be address or tenant, not {scope:?}"
        ))),
    }
}
