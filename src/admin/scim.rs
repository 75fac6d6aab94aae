//! The read-only SCIM 2.0 API (RFC 7643/7644) under `/scim/v2`, one directory per tenant.
//!
//! A request enters with a tenant's SCIM token (`auth::scim_tenant` finds the tenant by the
//! token's SHA-256; there is no tenant in the URL) and a query (`filter`, `startIndex`,
//! `count`); users are read from the [`Store`] and leave as core User resources with the
//! enterprise extension, in a ListResponse or alone. Deactivated users appear with
//! `active: false`; soft-deleted users do not appear at all (a 404 by id). `/Users/{id}` finds
//! exactly the `id` (case-exact, as `filter=id eq` does; an id holding NUL is a 404 without
//! asking the store). `attributes` / `excludedAttributes` decide only whether the manager is
//! looked up and shown ([`wants`]); every other attribute is always returned.
//!
//! Mapping: `id` = the match key; `userName` = username, else email, else the key;
//! `externalId` and `employeeNumber` = mapping code; `department` = org unit; `manager` =
//! `{displayName: manager_email}`, plus `value`/`$ref` when the tenant matches by email and the
//! manager is a listed user of the tenant. Writes to users (POST, PUT, PATCH, DELETE, Bulk,
//! .search) answer 501, and so does `/Me` (a token stands for a tenant, not a user); the discovery endpoints (`/ServiceProviderConfig`, `/ResourceTypes`,
//! `/Schemas`, in `scim_discovery`) answer any method but GET/HEAD with 405 and `Allow: GET, HEAD` (RFC 7644 §4);
//! other methods 405; bad filters 400 `invalidFilter`; bad numbers 400 `invalidValue`. Every
//! error uses the SCIM Error schema.
//!
//! `/Users` pages without loading the directory: the store filters and pages
//! (`Users::users_matching`: SQL over indexed columns on PostgreSQL, one bucket at a time on
//! sled, only the page kept). `/Groups` (read-only) lives in `scim_groups`. At most
//! `heavy::HEAVY_REQUESTS` listings (SCIM, the admin API's `/users` and the console together)
//! run at once, at most half of them one tenant's; up to 64 more wait (10 s at most, 16 of
//! them per tenant), beyond that a request is answered 503 with `Retry-After: 1`.

// Handlers return ready SCIM error responses through Result; their size does not matter here.
#![allow(clippy::result_large_err)]

use super::filter;
use super::schemas::{self, ENTERPRISE_SCHEMA, ERROR_SCHEMA, LIST_SCHEMA, USER_SCHEMA};
use super::{auth, scim_discovery, AppState};
use crate::config::MatchBy;
use crate::model::UserFilter;
use crate::model::{User, UserStatus};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Characters escaped in an `id` inside a URL path.
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

/// `key` (a user's key or a group's name) as one segment of a URL path: percent-encoded, and `.` or `..` spelled `%2E` and
/// `%2E%2E`, which a browser or client would otherwise take for "this" or "the parent" folder
/// (a user whose key is `..` had a link to the wrong page; review of 2026-11-30, console F4).
pub(crate) fn key_segment(key: &str) -> String {
    match key {
        "." => "%2E".to_string(),
        ".." => "%2E%2E".to_string(),
        _ => utf8_percent_encode(key, PATH_SEGMENT).to_string(),
    }
}

/// Page size when the client gives no `count`.
pub(super) const DEFAULT_COUNT: usize = 100;

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/scim/v2/Users", any(users))
        .route("/scim/v2/Users/{id}", any(user))
        .route("/scim/v2/Groups", any(super::scim_groups::groups))
        .route("/scim/v2/Groups/{id}", any(super::scim_groups::group))
        .route(
            "/scim/v2/ServiceProviderConfig",
            any(scim_discovery::service_provider_config),
        )
        .route(
            "/scim/v2/ResourceTypes",
            any(scim_discovery::resource_types),
        )
        .route(
            "/scim/v2/ResourceTypes/{id}",
            any(scim_discovery::resource_type),
        )
        .route("/scim/v2/Schemas", any(scim_discovery::schemas_list))
        .route("/scim/v2/Schemas/{id}", any(scim_discovery::schema))
        .route("/scim/v2/Me", any(me))
        .route("/scim/v2", any(not_found))
        // A base URL written with a trailing slash, or without the version: a SCIM answer, not
        // the admin API's 404 (review s21).
        .route("/scim/v2/", any(not_found))
        .route("/scim", any(not_found))
        .route("/scim/", any(not_found))
        .route("/scim/v2/{*rest}", any(not_found))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::scim_throttle,
        ))
        .with_state(state)
}

/// The answer to a failed directory read: 503 when the store cannot be reached right now
/// (`store::Unavailable`: the client should retry), else 500.
pub(super) fn store_failed(tenant: &str, what: &str, e: &anyhow::Error) -> Response {
    super::log_failure("SCIM", &format!("tenant {tenant}: {what}"), e);
    if crate::store::is_unavailable(e) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "the directory cannot be read right now (its store is unavailable); retry shortly",
        );
    }
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        None,
        "the directory cannot be read",
    )
}

/// A SCIM error response (RFC 7644 §3.12).
pub(super) fn error(
    status: StatusCode,
    scim_type: Option<&str>,
    detail: impl Into<String>,
) -> Response {
    let mut body = json!({
        "schemas": [ERROR_SCHEMA],
        "status": status.as_u16().to_string(),
        "detail": super::bounded_message(detail.into()),
    });
    if let Some(t) = scim_type {
        body["scimType"] = json!(t);
    }
    let mut resp = scim_json(status, body);
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"roster-scim\""),
        );
    }
    resp
}

pub(super) fn scim_json(status: StatusCode, body: Value) -> Response {
    let text = serde_json::to_string(&body).unwrap_or_else(|_| "{}".into());
    (
        status,
        [(header::CONTENT_TYPE, "application/scim+json")],
        text,
    )
        .into_response()
}

/// Authenticates and checks the method: Ok(tenant) for a GET (or HEAD) with a valid token.
pub(super) fn gate(
    st: &AppState,
    headers: &HeaderMap,
    method: &Method,
) -> Result<String, Response> {
    let Some(tenant) = auth::scim_tenant(st, headers) else {
        let detail = if auth::bearer(headers).is_some() {
            "the bearer token is not the SCIM token of any tenant"
        } else {
            "SCIM requests need the header Authorization: Bearer <the tenant's SCIM token>"
        };
        return Err(error(StatusCode::UNAUTHORIZED, None, detail));
    };
    match *method {
        Method::GET | Method::HEAD => Ok(tenant),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => Err(error(
            StatusCode::NOT_IMPLEMENTED,
            None,
            "Roster's SCIM API is read-only: the directory is synced from the tenant's HR file",
        )),
        _ => {
            // RFC 9110 §15.5.6: a 405 says what is allowed (review s21: it did not).
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                None,
                format!("the method {method} is not allowed here"),
            );
            (r.headers_mut()).insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            Err(r)
        }
    }
}

/// `<scheme>://<Host>/scim/v2` for `meta.location` and `$ref`, or a relative base without a
/// usable Host. The scheme is `https` when `[admin] public_url` is an https address (the
/// server sits behind a TLS proxy), else `http`.
pub(super) fn base(st: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    let https = st
        .config
        .current()
        .admin
        .public_url
        .trim()
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    let scheme = if https { "https" } else { "http" };
    match host {
        Some(h) => format!("{scheme}://{h}/scim/v2"),
        None => "/scim/v2".into(),
    }
}

/// Whether a request's `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5) ask for the
/// attribute `name` (lower-case) of the schema `urn` (lower-case): `attributes`, when given,
/// overrides the defaults, so only what it names (the attribute, a sub-attribute of it, or the
/// whole schema) is wanted; else `excludedAttributes` leaves out the attribute it names. Names
/// compare case-insensitively, with or without the schema URN in front.
pub(super) fn wants(m: &HashMap<String, String>, urn: &str, name: &str) -> bool {
    let names = |key: &str| -> Option<Vec<String>> {
        let list = m.get(key)?;
        let own = |a: &str| {
            let a = a.trim().to_ascii_lowercase();
            match a.strip_prefix(urn).and_then(|rest| rest.strip_prefix(':')) {
                Some(rest) => rest.to_string(),
                None => a,
            }
        };
        Some(list.split(',').map(own).collect())
    };
    if let Some(asked) = names("attributes") {
        let sub = format!("{name}.");
        return asked
            .iter()
            .any(|a| a == name || a.starts_with(&sub) || a == urn);
    }
    !names("excludedAttributes").is_some_and(|left| left.iter().any(|a| a == name))
}

/// The enterprise extension's URN, lower-case, as [`wants`] takes it.
const ENTERPRISE_LOWER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user";

fn field<'a>(u: &'a User, name: &str) -> Option<&'a str> {
    u.fields.get(name).and_then(|v| v.as_str())
}

pub(super) fn user_name(u: &User) -> &str {
    u.username
        .as_deref()
        .or(u.email.as_deref())
        .unwrap_or(&u.key)
}

/// A stored user as a SCIM User resource. `manager` is None when the manager is not asked for
/// ([`wants`]), else its id when known.
fn resource(u: &User, base: &str, manager: Option<Option<&str>>) -> Value {
    let id_path = key_segment(&u.key);
    let given = u.first_name.clone().unwrap_or_default();
    let family = u.last_name.clone().unwrap_or_default();
    let formatted = format!("{given} {family}").trim().to_string();
    let mut r = json!({
        "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
        "id": u.key,
        "userName": user_name(u),
        "name": {"givenName": given, "familyName": family, "formatted": formatted},
        "displayName": formatted,
        "active": u.status == UserStatus::Active,
        "meta": {
            "resourceType": "User",
            "created": u.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "lastModified": u.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "location": format!("{base}/Users/{id_path}"),
        },
    });
    if let Some(code) = &u.mapping_code {
        r["externalId"] = json!(code);
    }
    if let Some(email) = &u.email {
        r["emails"] = json!([{"value": email, "type": "work", "primary": true}]);
    }
    if let Some(phone) = field(u, "phone") {
        r["phoneNumbers"] = json!([{"value": phone, "type": "work"}]);
    }
    for (scim, ours) in [
        ("title", "job_title"),
        ("preferredLanguage", "language"),
        ("timezone", "timezone"),
    ] {
        if let Some(v) = field(u, ours) {
            r[scim] = json!(v);
        }
    }
    if let Some(serde_json::Value::Array(names)) = u.fields.get("groups") {
        let groups: Vec<Value> = names
            .iter()
            .filter_map(|n| n.as_str())
            .filter(|n| !n.is_empty())
            .map(|n| {
                let path = key_segment(n);
                json!({"value": n, "display": n, "$ref": format!("{base}/Groups/{path}")})
            })
            .collect();
        if !groups.is_empty() {
            r["groups"] = Value::Array(groups);
        }
    }
    let mut ext = json!({});
    if let Some(code) = &u.mapping_code {
        ext["employeeNumber"] = json!(code);
    }
    if let Some(dept) = field(u, "org_unit") {
        ext["department"] = json!(dept);
    }
    if let (Some(mgr), Some(manager_id)) = (field(u, "manager_email"), manager) {
        let mut m = json!({"displayName": mgr});
        if let Some(id) = manager_id {
            m["value"] = json!(id);
            m["$ref"] = json!(format!("{base}/Users/{}", key_segment(id)));
        }
        ext["manager"] = m;
    }
    if ext.as_object().is_some_and(|o| !o.is_empty()) {
        r[ENTERPRISE_SCHEMA] = ext;
    } else {
        r["schemas"] = json!([USER_SCHEMA]);
    }
    r
}

/// What every SCIM listing (`/Users`, `/Groups`) reads before its own filter: the tenant of the
/// token, the query, and the paging (`startIndex`, 1-based, and `count`).
pub(super) struct ListRequest {
    pub tenant: String,
    pub query: HashMap<String, String>,
    pub start: usize,
    pub count: usize,
}

/// Checks the token and method and reads the query and the paging of a listing; Err is the
/// SCIM error response to send.
pub(super) fn list_request(
    st: &AppState,
    headers: &HeaderMap,
    method: &Method,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<ListRequest, Response> {
    let tenant = gate(st, headers, method)?;
    let Ok(Query(query)) = q else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
            "the query string is not valid",
        ));
    };
    let start = paging(&query, "startIndex", 1, 1, usize::MAX)?;
    let count = paging(&query, "count", DEFAULT_COUNT, 0, schemas::MAX_RESULTS)?;
    Ok(ListRequest {
        tenant,
        query,
        start,
        count,
    })
}

/// A numeric paging parameter (RFC 7644 §3.4.2.4), clamped to `min..=max`; Err on non-numbers.
pub(super) fn paging(
    m: &HashMap<String, String>,
    name: &str,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, Response> {
    super::api::number_param(m, name, default, min, max)
        .map_err(|e| error(StatusCode::BAD_REQUEST, Some("invalidValue"), e.message))
}

async fn users(
    State(st): State<AppState>,
    method: Method,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let ListRequest {
        tenant,
        query: m,
        start,
        count,
    } = match list_request(&st, &headers, &method, q) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let filter = match m.get("filter").map(|f| filter::parse(f)) {
        None => UserFilter::Everyone,
        Some(Ok(f)) => f,
        Some(Err(why)) => return error(StatusCode::BAD_REQUEST, Some("invalidFilter"), why),
    };
    let config = st.config.current();
    let by_email = config
        .tenant(&tenant)
        .is_some_and(|t| t.import.match_by == MatchBy::Email);
    let with_manager = wants(&m, ENTERPRISE_LOWER, "manager");
    let Some(_turn) = st.heavy.turn(&tenant).await else {
        return busy();
    };
    let store = st.store.clone();
    let t = tenant.clone();
    let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let page = store.users_matching(&t, &filter, start.saturating_sub(1), count)?;
        // Managers are looked up one by one: a page holds at most MAX_RESULTS users.
        let mut managers = Vec::with_capacity(page.users.len());
        for u in &page.users {
            let mut id = None;
            if let (true, true, Some(m)) = (with_manager, by_email, field(u, "manager_email")) {
                id = store
                    .user(&t, m)?
                    .filter(|x| x.status != UserStatus::Deleted)
                    .map(|x| x.key);
            }
            managers.push(id);
        }
        Ok((page, managers))
    })
    .await;
    let (page, managers) = match loaded {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            return store_failed(&tenant, "cannot list users", &e);
        }
        Err(e) => {
            tracing::error!(%tenant, "SCIM: the listing task failed: {e}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "the directory cannot be read",
            );
        }
    };
    let base = base(&st, &headers);
    let resources: Vec<Value> = page
        .users
        .iter()
        .zip(&managers)
        .map(|(u, mgr)| resource(u, &base, with_manager.then_some(mgr.as_deref())))
        .collect();
    scim_json(
        StatusCode::OK,
        json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": page.total,
            "itemsPerPage": resources.len(),
            "startIndex": start,
            "Resources": resources,
        }),
    )
}

/// 503 with `Retry-After` when too many listings are running and waiting (`heavy::HeavyTurns`).
pub(super) fn busy() -> Response {
    let mut resp = error(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "too many directory listings are running or waiting; retry in a second",
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    resp
}

async fn user(
    State(st): State<AppState>,
    method: Method,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    p: Result<Path<String>, PathRejection>,
) -> Response {
    let tenant = match gate(&st, &headers, &method) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (Ok(Path(id)), Ok(Query(m))) = (p, q) else {
        return error(
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
            "the user id in the path or the query string is not valid",
        );
    };
    let no_user = || {
        error(
            StatusCode::NOT_FOUND,
            None,
            format!("there is no user with id {id:?}"),
        )
    };
    if id.contains('\0') {
        return no_user();
    }
    let with_manager = wants(&m, ENTERPRISE_LOWER, "manager");
    let by_email = st
        .config
        .current()
        .tenant(&tenant)
        .is_some_and(|t| t.import.match_by == MatchBy::Email);
    let store = st.store.clone();
    let (t, key) = (tenant.clone(), id.clone());
    let found = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        // The store's lookup forgives case and spaces (the admin CLI's keys); an id is exact.
        let Some(u) = store.user(&t, &key)?.filter(|u| u.key == key) else {
            return Ok(None);
        };
        let mut mgr = None;
        if let (true, true, Some(m)) = (with_manager, by_email, field(&u, "manager_email")) {
            mgr = store
                .user(&t, m)?
                .filter(|x| x.status != UserStatus::Deleted)
                .map(|x| x.key);
        }
        Ok(Some((u, mgr)))
    })
    .await;
    match found {
        Ok(Ok(Some((u, mgr)))) if u.status != UserStatus::Deleted => scim_json(
            StatusCode::OK,
            resource(
                &u,
                &base(&st, &headers),
                with_manager.then_some(mgr.as_deref()),
            ),
        ),
        Ok(Ok(_)) => no_user(),
        Ok(Err(e)) => store_failed(&tenant, "cannot read a user", &e),
        Err(e) => {
            tracing::error!(%tenant, "SCIM: the lookup task failed: {e}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "the directory cannot be read",
            )
        }
    }
}

/// `/Me` (RFC 7644 §3.11): a SCIM token stands for a tenant, not a user, so there is no "me";
/// the RFC's answer for a service provider without it is 501.
async fn me(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = gate(&st, &headers, &Method::GET) {
        return r;
    }
    error(
        StatusCode::NOT_IMPLEMENTED,
        None,
        "/Me is not supported: a SCIM token stands for a tenant, not for one of its users",
    )
}

async fn not_found(State(st): State<AppState>, method: Method, headers: HeaderMap) -> Response {
    let writes = [Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
    if let Err(r) = gate(&st, &headers, &Method::GET) {
        return r;
    }
    if writes.contains(&method) {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            None,
            "Roster's SCIM API is read-only (no Bulk, no .search, no writes)",
        );
    }
    error(
        StatusCode::NOT_FOUND,
        None,
        "Roster serves /Users, /Groups, /ServiceProviderConfig, /ResourceTypes and /Schemas",
    )
}
