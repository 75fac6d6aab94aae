//! A tenant's users: the search page, one user's page with its change history, and Restore.
//!
//! - `GET /tenants/{tenant}/users?q=TEXT&status=S&page=N`: users whose key or mapping code is
//!   `q`, or whose email, user name, last or full name ("First Last") starts with `q` (any case), of
//!   status `S` (active, inactive, deleted, all), [`PAGE_SIZE`] a page. The search is a
//!   [`UserFilter`] done by the store (`Users::users_matching_status`: SQL on PostgreSQL, one
//!   bucket at a time on sled), so a page never loads the directory; listings share the admin
//!   API's and SCIM's concurrency cap (`heavy::HeavyTurns`, a share per tenant).
//! - `GET /tenants/{tenant}/users/{key}`: the user's fields (never a password hash: a `User`
//!   has none), status, dates, and its change-log entries, newest first.
//! - `POST /tenants/{tenant}/users/{key}/restore` (operators, CSRF): brings back a soft-deleted
//!   (or import-deactivated) user through `import::restore` on the tenant's queue
//!   (`Intake::restore`), as the admin API does, then shows
//!   the user's page with the result.
//!
//! Tenants see their own users read-only; any other tenant is a 404.

use super::session::{posted_csrf, CsrfForm};
use super::{blocking, page, Chrome, PageError, Viewer};
use crate::admin::AppState;
use crate::config::Tenant;
use crate::model::changelog::LoggedChange;
use crate::model::filter::{Attribute, Op, Operand};
use crate::model::{User, UserFilter, UserStatus};
use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

/// Users per page.
pub(super) const PAGE_SIZE: usize = 50;
/// The deepest page: the first [`crate::store::SEARCH_COUNT_CAP`] users of a listing, as far as
/// the store counts (a search narrows further). Deeper offsets cost the database a walk over
/// every row skipped (600 ms at 100,000 on PostgreSQL with 1,000,000 users).
const MAX_PAGE: usize = crate::store::SEARCH_COUNT_CAP as usize / PAGE_SIZE;
/// Change-log entries shown on a user's page.
const CHANGES_SHOWN: usize = 100;
/// Characters of a search kept.
const MAX_QUERY_CHARS: usize = 200;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/tenants/{tenant}/users", get(list))
        .route("/tenants/{tenant}/users/{key}", get(one))
        .route("/tenants/{tenant}/users/{key}/restore", post(restore))
}

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    /// A page number; anything else shows the first page.
    #[serde(default)]
    page: String,
}

/// The `status` choice of the search form; None for every status.
fn status_choice(s: &str) -> Result<Option<UserStatus>, PageError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "" | "all" => Ok(None),
        "active" => Ok(Some(UserStatus::Active)),
        "inactive" => Ok(Some(UserStatus::Inactive)),
        "deleted" => Ok(Some(UserStatus::Deleted)),
        other => Err(PageError::new(
            StatusCode::BAD_REQUEST,
            format!("status must be one of active, inactive, deleted, all; not {other:?}"),
        )),
    }
}

/// The filter of a search: everyone for an empty `q`; else the key or mapping code equal to
/// `q`, or the email, user name, last name or full name ("First Last", so also the first
/// name) starting with it. On PostgreSQL every branch has an index (migration 5).
pub(super) fn search_filter(q: &str) -> UserFilter {
    // No stored value holds a NUL, and PostgreSQL refuses one in a query (review s26).
    let q = q.replace('\0', "");
    let q = q.trim();
    if q.is_empty() {
        return UserFilter::Everyone;
    }
    let text = |a, op| UserFilter::Compare(a, op, Operand::Text(q.to_string()));
    [
        text(Attribute::MappingCode, Op::Eq),
        text(Attribute::Email, Op::Sw),
        text(Attribute::UserName, Op::Sw),
        text(Attribute::LastName, Op::Sw),
        text(Attribute::FullName, Op::Sw),
    ]
    .into_iter()
    .fold(text(Attribute::Key, Op::Eq), |all, f| {
        UserFilter::Or(Box::new(all), Box::new(f))
    })
}

/// One user as a row of the list.
struct UserRow {
    key: String,
    /// The key as a path segment (`scim::key_segment`).
    key_path: String,
    name: String,
    email: String,
    mapping_code: String,
    status: String,
    updated: String,
}

impl UserRow {
    fn of(u: &User) -> UserRow {
        UserRow {
            key: u.key.clone(),
            key_path: crate::admin::scim::key_segment(&u.key),
            name: full_name(u),
            email: u.email.clone().unwrap_or_default(),
            mapping_code: u.mapping_code.clone().unwrap_or_default(),
            status: status_name(u.status).to_string(),
            updated: u.updated_at.format("%Y-%m-%d %H:%M").to_string(),
        }
    }
}

fn full_name(u: &User) -> String {
    let first = u.first_name.as_deref().unwrap_or("");
    let last = u.last_name.as_deref().unwrap_or("");
    format!("{first} {last}").trim().to_string()
}

fn status_name(s: UserStatus) -> &'static str {
    match s {
        UserStatus::Active => "active",
        UserStatus::Inactive => "inactive",
        UserStatus::Deleted => "deleted",
    }
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Chrome,
    tenant: String,
    q: String,
    /// `q` for the search box (see `escape::form_value`).
    q_value: String,
    status: String,
    rows: Vec<UserRow>,
    total: u64,
    /// More users match than the store counts (`SEARCH_COUNT_CAP`).
    more: bool,
    page: usize,
    pages: usize,
    has_next: bool,
}

async fn list(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(tenant): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, PageError> {
    let config = st.config.current();
    let t = viewer.tenant(&config, &tenant)?.clone();
    let status = status_choice(&query.status)?;
    let q: String = query.q.trim().chars().take(MAX_QUERY_CHARS).collect();
    let page_no = query
        .page
        .trim()
        .parse::<usize>()
        .unwrap_or(1)
        .clamp(1, MAX_PAGE);
    let Some(_turn) = st.heavy.turn(&tenant).await else {
        return Err(PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many directory listings are running or waiting; reload the page in a second",
        ));
    };
    let store = st.store.clone();
    let (id, filter) = (t.id.clone(), search_filter(&q));
    let found = blocking("cannot list the users", move || {
        store.users_matching_status(&id, &filter, status, (page_no - 1) * PAGE_SIZE, PAGE_SIZE)
    })
    .await?;
    // A search matching more than the store counts shows no page count, only "next".
    let more = found.total > crate::store::SEARCH_COUNT_CAP;
    let pages = (found.total as usize)
        .div_ceil(PAGE_SIZE)
        .clamp(1, MAX_PAGE);
    let has_next = page_no < MAX_PAGE
        && if more {
            found.users.len() == PAGE_SIZE
        } else {
            page_no < pages
        };
    page(&UsersPage {
        chrome: Chrome::new(&viewer, format!("Users of {}", t.id), Some(&t.id)),
        tenant: t.id.clone(),
        q_value: super::escape::form_value(&q),
        q,
        status: status.map(status_name).unwrap_or("all").to_string(),
        rows: found.users.iter().map(UserRow::of).collect(),
        total: found.total,
        more,
        page: page_no,
        pages,
        has_next,
    })
}

/// One change-log entry as the user's page shows it.
struct ChangeRow {
    at: String,
    kind: String,
    import_id: String,
    /// `field: old → new`, one per changed field.
    fields: Vec<(String, String, String)>,
}

impl ChangeRow {
    fn of(c: &LoggedChange) -> ChangeRow {
        let kind = serde_json::to_value(c.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        ChangeRow {
            at: c.at.format("%Y-%m-%d %H:%M").to_string(),
            kind,
            import_id: c.import_id.clone().unwrap_or_default(),
            fields: c
                .fields
                .iter()
                .map(|f| {
                    let shown = |v: &Option<String>| {
                        v.as_deref()
                            .map(|s| s.replace('\u{1f}', ", "))
                            .unwrap_or_else(|| "(none)".into())
                    };
                    (f.field.clone(), shown(&f.old), shown(&f.new))
                })
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "user.html")]
struct UserPage {
    chrome: Chrome,
    tenant: String,
    user: User,
    /// The user's key as a path segment (`scim::key_segment`).
    key_path: String,
    name: String,
    status: String,
    /// (field, value) of every other field, custom fields as `custom.NAME`.
    fields: Vec<(String, String)>,
    changes: Vec<ChangeRow>,
    restorable: bool,
    restored: bool,
}

#[derive(Deserialize, Default)]
struct OneQuery {
    #[serde(default)]
    restored: Option<String>,
}

/// Every field of `u` not shown on its own line, as text.
fn other_fields(u: &User) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = u
        .fields
        .iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .filter_map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect();
    out.extend(
        u.attributes
            .iter()
            .map(|(k, v)| (format!("custom.{k}"), v.clone())),
    );
    out
}

/// The tenant's user `key` names ([`MatchBy::names`](crate::config::MatchBy::names)).
async fn find_user(st: &AppState, tenant: &Tenant, key: &str) -> Result<User, PageError> {
    let store = st.store.clone();
    let (t, k) = (tenant.clone(), key.to_string());
    blocking("cannot read the user", move || {
        crate::import::named_user(&*store, &t, &k)
    })
    .await?
    .ok_or_else(|| PageError::not_found(format!("tenant {} has no user {key:?}", tenant.id)))
}

async fn one(
    State(st): State<AppState>,
    viewer: Viewer,
    Path((tenant, key)): Path<(String, String)>,
    Query(query): Query<OneQuery>,
) -> Result<Response, PageError> {
    let config = st.config.current();
    let t = viewer.tenant(&config, &tenant)?.clone();
    let user = find_user(&st, &t, &key).await?;
    let store = st.store.clone();
    let (id, k) = (t.id.clone(), user.key.clone());
    let changes = blocking("cannot read the user's change history", move || {
        store.user_changes(&id, &k, CHANGES_SHOWN)
    })
    .await?;
    let restorable = viewer.is_operator() && user.status != UserStatus::Active;
    page(&UserPage {
        chrome: Chrome::new(&viewer, format!("User {}", user.key), Some(&t.id)),
        tenant: t.id.clone(),
        key_path: crate::admin::scim::key_segment(&user.key),
        name: full_name(&user),
        status: status_name(user.status).to_string(),
        fields: other_fields(&user),
        changes: changes.iter().map(ChangeRow::of).collect(),
        restorable,
        // Only when the newest change really is a restore: a crafted `?restored=1` link
        // shows no banner (audit s22 console L3).
        restored: query.restored.is_some()
            && changes
                .first()
                .is_some_and(|c| c.kind == crate::model::changelog::ChangeKind::Restored),
        user,
    })
}

async fn restore(
    State(st): State<AppState>,
    viewer: Viewer,
    Path((tenant, key)): Path<(String, String)>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, PageError> {
    // The role first: a tenant gets the 404 of a page it cannot have, whatever its token.
    viewer.operator_only()?;
    viewer.check_csrf(&posted_csrf(form)?)?;
    let config = st.config.current();
    let t = viewer.tenant(&config, &tenant)?.clone();
    find_user(&st, &t, &key).await?;
    // Like approve, through the tenant's queue: never in the middle of one of its imports.
    let restored = st.intake.restore(&t.id, &key).await.ok_or_else(|| {
        PageError::internal(
            "cannot restore the user",
            anyhow::anyhow!("the intake is stopping or the tenant was removed"),
        )
    })?;
    let user = match restored {
        Ok(u) => u,
        Err(e) if crate::store::is_unavailable(&e) => {
            return Err(PageError::internal("cannot restore the user", e))
        }
        Err(e) => return Err(PageError::new(StatusCode::CONFLICT, format!("{e:#}"))),
    };
    tracing::info!(tenant = %t.id, key = %user.key, "user restored through the console");
    let path = format!(
        "/tenants/{}/users/{}?restored=1",
        t.id,
        crate::admin::scim::key_segment(&user.key)
    );
    Ok(Redirect::to(&path).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::UserStatus;
    use chrono::Utc;
    use std::collections::BTreeMap;

    fn user(key: &str, first: &str, last: &str, code: &str) -> User {
        User {
            key: key.into(),
            status: UserStatus::Active,
            email: Some(key.into()),
            username: None,
            mapping_code: Some(code.into()),
            first_name: Some(first.into()),
            last_name: Some(last.into()),
            fields: BTreeMap::new(),
            attributes: BTreeMap::new(),
            has_password: false,
            managed: true,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            deleted_at: None,
        }
    }

    #[test]
    fn a_search_finds_by_key_code_email_and_names() {
        let ann = user("ann.lee@x.example", "Ann", "Lee", "E007");
        for q in [
            "ann.lee@x.example",
            "ANN.L",
            "E007",
            "ann",
            "lee",
            "Ann Lee",
            "",
        ] {
            assert!(search_filter(q).matches(&ann), "{q:?} finds Ann");
        }
        for q in ["e007", "nn", "x.example", "Lee Ann"] {
            assert!(!search_filter(q).matches(&ann), "{q:?} does not find Ann");
        }
    }
}
