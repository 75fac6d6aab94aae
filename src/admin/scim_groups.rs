//! The read-only SCIM `/Groups` endpoint (RFC 7643 §4.2) under `/scim/v2`.
//!
//! A request enters like `/Users` (a tenant's SCIM token; `filter`, `startIndex`, `count`,
//! `attributes`, `excludedAttributes`) and leaves as Group resources in a ListResponse or alone. Groups are
//! not stored: a group is a name found in the `groups` field of at least one user that is not
//! deleted (`Users::groups_page`); `id` = `displayName` = the name, exactly as in the HR file
//! (case-exact). `members` lists every user that is not deleted and lists the group (inactive
//! users too: they are `active: false` in `/Users`), as `{value: user id, display, $ref, type}`,
//! in key order (`Users::group_members`).
//!
//! Bounded: the members of one response are at most [`MAX_MEMBERS`] in total. A page whose
//! groups have more is answered 400 `tooMany`; ask with `excludedAttributes=members` (the
//! member counts are then not read at all beyond the page's groups) and page through a large
//! group's members with `/Users?filter=groups eq "<name>"`. `attributes` that does not name
//! `members` leaves them out as well (RFC 7644 §3.4.2.5; `id` and `displayName` are always
//! returned). Filters: `displayName eq "…"` or `id eq "…"` only, read with `admin::filter`'s
//! tokens (any spacing; the attribute in any case, optionally behind the Group schema URN);
//! 400 `invalidFilter` otherwise. An id holding NUL is a 404 without asking the store.

// Handlers return ready SCIM error responses through Result; their size does not matter here.
#![allow(clippy::result_large_err)]

use super::schemas::{GROUP_SCHEMA, LIST_SCHEMA};
use super::scim::{base, busy, error, gate, list_request, scim_json, store_failed, ListRequest};
use super::scim::{key_segment, user_name, wants};
use super::AppState;
use crate::model::User;
use crate::store::{GroupSummary, Store};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Most members one response carries, over all its groups.
pub const MAX_MEMBERS: u64 = 10_000;

/// A group with the members a response shows (None: `members` excluded).
type Shown = (GroupSummary, Option<Vec<User>>);

/// The name a `filter` asks for: `displayName eq "…"` or `id eq "…"`; Err is the 400 detail.
fn name_filter(f: &str) -> Result<String, String> {
    const HOW: &str =
        "Roster filters groups only with displayName eq \"<name>\" or id eq \"<name>\"";
    let Some((attr, name)) = super::filter::equality(f)? else {
        return Err(format!("{HOW}, the name a JSON string in double quotes"));
    };
    let attr = attr.to_ascii_lowercase();
    let attr = attr
        .strip_prefix(GROUP_LOWER)
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or(&attr);
    if !["displayname", "id"].contains(&attr) {
        return Err(HOW.into());
    }
    Ok(name)
}

/// The Group schema's URN, lower-case (attribute names compare without case).
const GROUP_LOWER: &str = "urn:ietf:params:scim:schemas:core:2.0:group";

fn resource(g: &GroupSummary, members: Option<&[User]>, base: &str) -> Value {
    let id_path = key_segment(&g.name);
    let mut r = json!({
        "schemas": [GROUP_SCHEMA],
        "id": g.name,
        "displayName": g.name,
        "meta": {"resourceType": "Group", "location": format!("{base}/Groups/{id_path}")},
    });
    if let Some(users) = members {
        let list: Vec<Value> = users
            .iter()
            .map(|u| {
                let full = format!(
                    "{} {}",
                    u.first_name.as_deref().unwrap_or(""),
                    u.last_name.as_deref().unwrap_or("")
                );
                let display = match full.trim() {
                    "" => user_name(u).to_string(),
                    f => f.to_string(),
                };
                json!({
                    "value": u.key,
                    "display": display,
                    "type": "User",
                    "$ref": format!("{base}/Users/{}", key_segment(&u.key)),
                })
            })
            .collect();
        r["members"] = Value::Array(list);
    }
    r
}

/// Reads the page's groups and, unless excluded, their members (Err(None): over the budget).
fn load(
    store: &Store,
    tenant: &str,
    name: Option<&str>,
    skip: usize,
    take: usize,
    with_members: bool,
) -> anyhow::Result<Result<(u64, Vec<Shown>), u64>> {
    let page = store.groups_page(tenant, name, skip, take)?;
    let wanted: u64 = page.groups.iter().map(|g| g.members).sum();
    if with_members && wanted > MAX_MEMBERS {
        return Ok(Err(wanted));
    }
    if !with_members {
        let out = page.groups.into_iter().map(|g| (g, None)).collect();
        return Ok(Ok((page.total, out)));
    }
    // Read with the budget left after the groups before (`groups_members`): a commit since
    // the counts were read cannot take the response past MAX_MEMBERS. When it added members
    // past the budget, the answer is the same 400 the counts would have given, not a page
    // with a group's members cut short.
    let budget = usize::try_from(MAX_MEMBERS).unwrap_or(usize::MAX);
    let names: Vec<&str> = page.groups.iter().map(|g| g.name.as_str()).collect();
    let members = store.groups_members(tenant, &names, budget)?;
    let now: u64 = members.iter().map(|m| m.total).sum();
    if now > MAX_MEMBERS {
        return Ok(Err(now));
    }
    let out = page
        .groups
        .into_iter()
        .zip(members)
        .map(|(g, m)| (g, Some(m.users)))
        .collect();
    Ok(Ok((page.total, out)))
}

/// Runs [`load`] off the async threads; a ready error response on failure.
async fn load_blocking(
    st: &AppState,
    tenant: &str,
    name: Option<String>,
    skip: usize,
    take: usize,
    with_members: bool,
) -> Result<(u64, Vec<Shown>), Response> {
    let store = st.store.clone();
    let t = tenant.to_string();
    let done = tokio::task::spawn_blocking(move || {
        load(&store, &t, name.as_deref(), skip, take, with_members)
    })
    .await;
    match done {
        Ok(Ok(Ok(page))) => Ok(page),
        Ok(Ok(Err(wanted))) => Err(error(
            StatusCode::BAD_REQUEST,
            Some("tooMany"),
            format!(
                "these groups have {wanted} members, more than the {MAX_MEMBERS} one response \
                 carries: ask with excludedAttributes=members (or a smaller count), and page \
                 through members with /Users?filter=groups eq \"<name>\""
            ),
        )),
        Ok(Err(e)) => Err(store_failed(tenant, "cannot list groups", &e)),
        Err(e) => {
            tracing::error!(%tenant, "SCIM: the group listing task failed: {e}");
            Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "the directory cannot be read",
            ))
        }
    }
}

pub(super) async fn groups(
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
    let name = match m.get("filter").map(|f| name_filter(f)) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(why)) => return error(StatusCode::BAD_REQUEST, Some("invalidFilter"), why),
    };
    let Some(_turn) = st.heavy.turn(&tenant).await else {
        return busy();
    };
    let with_members = wants(&m, GROUP_LOWER, "members");
    let skip = start.saturating_sub(1);
    let (total, page) = match load_blocking(&st, &tenant, name, skip, count, with_members).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let base = base(&st, &headers);
    let resources: Vec<Value> = page
        .iter()
        .map(|(g, members)| resource(g, members.as_deref(), &base))
        .collect();
    scim_json(
        StatusCode::OK,
        json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": total,
            "itemsPerPage": resources.len(),
            "startIndex": start,
            "Resources": resources,
        }),
    )
}

pub(super) async fn group(
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
            "the group id or the query string is not valid",
        );
    };
    if id.contains('\0') {
        return error(
            StatusCode::NOT_FOUND,
            None,
            format!("there is no group with id {id:?}"),
        );
    }
    let with_members = wants(&m, GROUP_LOWER, "members");
    let Some(_turn) = st.heavy.turn(&tenant).await else {
        return busy();
    };
    let page = load_blocking(&st, &tenant, Some(id.clone()), 0, 1, with_members).await;
    match page {
        Ok((_, page)) => match page.first() {
            Some((g, members)) => scim_json(
                StatusCode::OK,
                resource(g, members.as_deref(), &base(&st, &headers)),
            ),
            None => error(
                StatusCode::NOT_FOUND,
                None,
                format!("there is no group with id {id:?}"),
            ),
        },
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_name_equality_filters_are_accepted() {
        assert_eq!(
            name_filter("displayName eq \"Sales EMEA\""),
            Ok("Sales EMEA".into())
        );
        assert_eq!(name_filter(" id EQ \"a\\\"b\" "), Ok("a\"b".into()));
        assert!(name_filter("displayName co \"x\"").is_err());
        assert!(name_filter("members eq \"x\"").is_err());
        assert!(name_filter("displayName eq x").is_err());
        assert!(name_filter("").is_err());
        // Review 2026-11-30 SCIM F10: what RFC 7644's grammar allows.
        for f in [
            "displayName  eq \"Sales\"",
            "displayName eq\"Sales\"",
            "urn:ietf:params:scim:schemas:core:2.0:group:displayName eq \"Sales\"",
            "URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:Group:ID eq \"Sales\"",
        ] {
            assert_eq!(name_filter(f), Ok("Sales".into()), "{f}");
        }
        assert!(name_filter("urn:x:displayName eq \"Sales\"").is_err());
    }
}
