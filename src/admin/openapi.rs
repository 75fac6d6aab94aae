//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the admin API (`openapi.json` beside
//! this file, compiled in), behind the `[admin] token` like every `/api` route.
//!
//! Nothing enters but the request; the document leaves byte for byte as compiled. It is kept
//! true by `tests/openapi_admin.rs`, which calls every route of a running server and checks
//! each status and body against it with an independent validator (openapi-core).

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

pub(crate) async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}
