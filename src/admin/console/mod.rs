//! The web console: HTML pages for operators (every tenant) and the tenant portal (one tenant,
//! read-only), served by `roster serve` on the admin listener beside the JSON API.
//!
//! Requests enter as browser GETs and form POSTs. `session` says who is signed in (a
//! [`Viewer`]: an operator or one tenant) and guards forms with CSRF tokens; `signin` makes and
//! ends sessions. Each page module reads the store, the config and the intake the way the JSON
//! API does (`crate::admin::api` has the same operations as JSON) and leaves as HTML rendered
//! from an askama template (`templates/`, compiled into the binary) inside the frame of
//! `base.html`, escaped by `escape` (HTML, and direction controls shown as text). Pages:
//! `overview` (all tenants), `history` (a tenant's runs and chart), `run` (one run: counts,
//! messages, skipped rows, downloads), `held` (who a held run would remove, and Approve),
//! `today` (today's file, Run now), `users` (search, one user, Restore), `preview` (a dry run
//! of an uploaded file), `mapping` (the column mapping helper) and `login_blocks` (the login
//! blocks in force, and Lift).
//!
//! Nothing here needs JavaScript or reaches the network: the stylesheet is embedded
//! (`assets/console.css`) and charts are SVG drawn on the server. Every answer carries a
//! Content-Security-Policy that allows only this origin (set for the whole admin listener by
//! `crate::admin::security_headers`). A page a viewer may not see answers 404, as if it did not
//! exist.

pub mod escape;
mod held;
mod history;
mod login_blocks;
mod mapping;
mod overview;
mod preview;
mod run;
pub(crate) mod session;
mod signin;
mod today;
// Uploaded files of the preview and the mapping helper (h-console-users).
mod upload;
mod users;

use crate::admin::AppState;
use askama::Template;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
pub(crate) use held::HeldPlans;
pub(crate) use session::{end_stale_on_reload, Role, Sessions, Viewer};

/// The console's routes (merged into the admin listener's router).
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/assets/console.css", get(stylesheet))
        .merge(signin::routes())
        .merge(overview::routes())
        .merge(history::routes())
        .merge(run::routes())
        .merge(held::routes())
        .merge(today::routes())
        .merge(users::routes())
        .merge(preview::routes())
        .merge(mapping::routes())
        .merge(login_blocks::routes())
        .layer(axum::middleware::map_response(page_for_plain_error))
        .with_state(state)
}

/// axum's own answers to a console request it could not take (a path or query that does not
/// parse, a form of the wrong type, a method the page has not) are plain text or empty; a
/// browser gets them as the console's error page, with axum's sentence when it gave one.
async fn page_for_plain_error(resp: Response) -> Response {
    let status = resp.status();
    let plain = match resp.headers().get(header::CONTENT_TYPE) {
        None => true,
        Some(v) => v.as_bytes().starts_with(b"text/plain"),
    };
    if !status.is_client_error() || !plain {
        return resp;
    }
    // A 405 names the methods the page takes (RFC 9110 §15.5.6): kept on the page.
    let allow = resp.headers().get(header::ALLOW).cloned();
    // axum's sentences are short; a longer body is cut, never buffered whole.
    let text = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match text.is_empty() {
        true => match status {
            StatusCode::METHOD_NOT_ALLOWED => "this page does not take that method".to_string(),
            _ => "the request cannot be answered".to_string(),
        },
        false => text,
    };
    let mut page = PageError::new(status, message).into_response();
    if let Some(allow) = allow {
        page.headers_mut().insert(header::ALLOW, allow);
    }
    page
}

/// `/`: an operator's overview, a tenant's own history, or the sign-in page.
async fn home(viewer: Result<Viewer, Response>) -> Redirect {
    match viewer.map(|v| v.role) {
        Ok(Role::Operator) => Redirect::to("/tenants"),
        Ok(Role::Tenant(id)) => Redirect::to(&format!("/tenants/{id}")),
        Err(_) => Redirect::to("/login"),
    }
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("assets/console.css"),
    )
        .into_response()
}

/// What the frame around every page (`base.html`) shows: the title, who is signed in, the
/// navigation for the tenant in view, and the CSRF token for the sign-out form.
pub(crate) struct Chrome {
    pub title: String,
    pub operator: bool,
    /// The tenant the page is about (its navigation: history, users, today's file).
    pub tenant: Option<String>,
    pub signed_in_as: String,
    pub csrf: String,
}

impl Chrome {
    pub fn new(viewer: &Viewer, title: impl Into<String>, tenant: Option<&str>) -> Chrome {
        Chrome {
            title: title.into(),
            operator: viewer.is_operator(),
            tenant: tenant.map(str::to_string),
            signed_in_as: match &viewer.role {
                Role::Operator => "operator".to_string(),
                Role::Tenant(id) => format!("tenant {id}"),
            },
            csrf: viewer.csrf.clone(),
        }
    }
}

/// A rendered page, or the error page.
pub(crate) fn page(t: &impl Template) -> Result<Response, PageError> {
    let body = t
        .render()
        .map_err(|e| PageError::internal("cannot render the page", anyhow::anyhow!("{e}")))?;
    Ok(Html(body).into_response())
}

/// A page that could not be shown: a status and one sentence, rendered as `error.html`.
#[derive(Debug)]
pub(crate) struct PageError {
    pub status: StatusCode,
    pub message: String,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: crate::admin::bounded_message(message.into()),
        }
    }
    pub fn not_found(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::NOT_FOUND, message)
    }
    pub fn forbidden(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::FORBIDDEN, message)
    }
    /// A failure inside Roster: 503 when the store cannot be reached, else 500 (logged).
    pub fn internal(what: &str, e: anyhow::Error) -> PageError {
        let api = crate::admin::ApiError::internal(what, e);
        PageError::new(api.status, api.message)
    }
}

impl From<crate::admin::ApiError> for PageError {
    fn from(e: crate::admin::ApiError) -> PageError {
        PageError::new(e.status, e.message)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("Error"),
            message: &self.message,
        };
        match page.render() {
            Ok(body) => (self.status, Html(body)).into_response(),
            Err(_) => (self.status, self.message).into_response(),
        }
    }
}

/// Runs a store call on a blocking thread (as the JSON API does); its error becomes a page error.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, PageError> {
    crate::admin::api::blocking_ok(what, f)
        .await
        .map_err(PageError::from)
}
