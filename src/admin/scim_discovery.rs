//! SCIM's discovery endpoints (RFC 7644 §4): `/ServiceProviderConfig`, `/ResourceTypes` and
//! `/Schemas`, read-only by definition.
//!
//! A request enters with a tenant's SCIM token (checked by `scim::gate`, like every SCIM
//! route); the documents come from `schemas` with this server's base URL and leave as SCIM
//! JSON. Any method but GET/HEAD answers 405 with `Allow: GET, HEAD`.

// Handlers return ready SCIM error responses through Result; their size does not matter here.
#![allow(clippy::result_large_err)]

use super::schemas::{self, ENTERPRISE_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};
use super::scim::{base, error, gate, scim_json};
use super::AppState;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;

/// [`gate`] for the discovery endpoints, which are read-only by definition (RFC 7644 §4):
/// any other method than GET/HEAD is 405 with `Allow: GET, HEAD`.
fn gate_discovery(st: &AppState, headers: &HeaderMap, method: &Method) -> Result<(), Response> {
    gate(st, headers, &Method::GET)?;
    if matches!(*method, Method::GET | Method::HEAD) {
        return Ok(());
    }
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        format!("the method {method} is not allowed here: discovery endpoints are read-only"),
    );
    resp.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    Err(resp)
}

pub(super) async fn service_provider_config(
    State(st): State<AppState>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate_discovery(&st, &headers, &method) {
        return r;
    }
    scim_json(
        StatusCode::OK,
        schemas::service_provider_config(&base(&st, &headers)),
    )
}

pub(super) async fn resource_types(
    State(st): State<AppState>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate_discovery(&st, &headers, &method) {
        return r;
    }
    scim_json(
        StatusCode::OK,
        schemas::list(vec![
            schemas::user_resource_type(&base(&st, &headers)),
            schemas::group_resource_type(&base(&st, &headers)),
        ]),
    )
}

pub(super) async fn resource_type(
    State(st): State<AppState>,
    method: Method,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
) -> Response {
    if let Err(r) = gate_discovery(&st, &headers, &method) {
        return r;
    }
    match p {
        Ok(Path(id)) if id == "User" => scim_json(
            StatusCode::OK,
            schemas::user_resource_type(&base(&st, &headers)),
        ),
        Ok(Path(id)) if id == "Group" => scim_json(
            StatusCode::OK,
            schemas::group_resource_type(&base(&st, &headers)),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            None,
            "the resource types are User and Group",
        ),
    }
}

pub(super) async fn schemas_list(
    State(st): State<AppState>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate_discovery(&st, &headers, &method) {
        return r;
    }
    let b = base(&st, &headers);
    scim_json(
        StatusCode::OK,
        schemas::list(vec![
            schemas::user_schema(&b),
            schemas::enterprise_schema(&b),
            schemas::group_schema(&b),
        ]),
    )
}

pub(super) async fn schema(
    State(st): State<AppState>,
    method: Method,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
) -> Response {
    if let Err(r) = gate_discovery(&st, &headers, &method) {
        return r;
    }
    let b = base(&st, &headers);
    match p {
        Ok(Path(id)) if id == USER_SCHEMA => scim_json(StatusCode::OK, schemas::user_schema(&b)),
        Ok(Path(id)) if id == ENTERPRISE_SCHEMA => {
            scim_json(StatusCode::OK, schemas::enterprise_schema(&b))
        }
        Ok(Path(id)) if id == GROUP_SCHEMA => scim_json(StatusCode::OK, schemas::group_schema(&b)),
        _ => error(
            StatusCode::NOT_FOUND,
            None,
            "no such schema; see /scim/v2/Schemas",
        ),
    }
}
