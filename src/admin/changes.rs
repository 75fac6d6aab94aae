//! The admin API's change-log routes (issue 12, docs/delivery.md):
//! `GET /api/tenants/{t}/changes?after=SEQ&limit=N` and `GET /api/tenants/{t}/users/{key}/changes`.
//!
//! Requests enter as a path and a small query string; entries leave as JSON
//! [`LoggedChange`](crate::model::changelog::LoggedChange)s read from the store's `ChangeLog`:
//! `{"changes": [...], "next": SEQ}` in `seq` order (`next` is the last `seq` returned, or
//! `after` when there is none, so a client passes it back as `after`), and one user's history
//! newest first. `limit` defaults to 100 and is clamped to 1..=1000. `after` is any whole
//! number up to `u64::MAX` on every store (past the last `seq`: an empty page); a key holding
//! NUL is a 404 without asking the store (no key holds one).

use super::api::{blocking_ok, json_ok, number_param, params, path, tenant_of, ApiResult, Params};
use super::{ApiError, AppState};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use serde_json::json;

/// Entries one request returns when it does not say.
const DEFAULT_LIMIT: usize = 100;
/// Most entries one request returns.
const MAX_LIMIT: usize = 1000;

/// `after`: a change-log `seq` (absent: 0, from the start).
fn after_param(m: &std::collections::HashMap<String, String>) -> Result<u64, ApiError> {
    match m.get("after").map(|s| s.trim()) {
        None | Some("") => Ok(0),
        Some(raw) => raw.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "after must be a change seq (a whole number ≥ 0), not {raw:?}"
            ))
        }),
    }
}

/// `GET /api/tenants/{tenant}/changes?after=SEQ&limit=N`.
pub(super) async fn changes(
    State(st): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    q: Params,
) -> ApiResult {
    let tenant = path(p)?;
    let t = tenant_of(&st.config.current(), &tenant)?;
    let m = params(q)?;
    let after = after_param(&m)?;
    let limit = number_param(&m, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?;
    let store = st.store.clone();
    let list = blocking_ok("cannot read the change log", move || {
        store.changes(&t.id, after, limit)
    })
    .await?;
    let next = list.last().map_or(after, |c| c.seq);
    json_ok(json!({ "tenant": tenant, "changes": list, "next": next }))
}

/// `GET /api/tenants/{tenant}/users/{key}/changes?limit=N`: newest first. The key is tried as
/// the user's stored key (as given, then lower-cased); 404 when there is no such user and no
/// entry under the key as given.
pub(super) async fn user_changes(
    State(st): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Params,
) -> ApiResult {
    let (tenant, key) = path(p)?;
    let t = tenant_of(&st.config.current(), &tenant)?;
    let no_user = || ApiError::not_found(format!("tenant {tenant} has no user {key:?}"));
    if key.contains('\0') {
        return Err(no_user());
    }
    let limit = number_param(&params(q)?, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?;
    let store = st.store.clone();
    let asked = key.clone();
    let (found, list) = blocking_ok("cannot read the change log", move || {
        let user = crate::import::named_user(&*store, &t, &asked)?;
        let stored = user.as_ref().map_or(asked.clone(), |u| u.key.clone());
        Ok((user.is_some(), store.user_changes(&t.id, &stored, limit)?))
    })
    .await?;
    if !found && list.is_empty() {
        return Err(no_user());
    }
    json_ok(json!({ "tenant": tenant, "key": key, "changes": list }))
}
