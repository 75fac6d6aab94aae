//! The login blocks in force, for operators, with a Lift button each: the console's face of
//! `admin::login_blocks` (docs/operators.md, "Lifting a block").
//!
//! `GET /login-blocks` lists what `GET /api/login-blocks` lists (`blocks_in_force`: the
//! shared counters', then this node's own). `POST /login-blocks/lift` (operators, CSRF, form
//! fields `scope` and `subject`) lifts one through `lift_block`, as the API does, and shows the
//! list again with what was done. A tenant gets the 404 of a page it cannot have.

use super::session::posted_csrf;
use super::{page, Chrome, PageError, Viewer};
use crate::admin::login_blocks::{blocks_in_force, lift_block, BlockRow, DEFAULT_LIMIT};
use crate::admin::AppState;
use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/login-blocks", get(list))
        .route("/login-blocks/lift", post(lift))
}

#[derive(Template)]
#[template(path = "login_blocks.html")]
struct BlocksPage {
    chrome: Chrome,
    blocks: Vec<BlockRow>,
    /// What a lift just did, shown above the list.
    notice: Option<String>,
}

/// The lift form: the block's scope and subject, and the session's CSRF token.
#[derive(serde::Deserialize)]
struct LiftForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    subject: String,
}

async fn list(State(st): State<AppState>, viewer: Viewer) -> Result<Response, PageError> {
    viewer.operator_only()?;
    show(&st, &viewer, None).await
}

async fn lift(
    State(st): State<AppState>,
    viewer: Viewer,
    form: Result<Form<LiftForm>, FormRejection>,
) -> Result<Response, PageError> {
    // The role first: a tenant gets the 404 of a page it cannot have, whatever its token.
    viewer.operator_only()?;
    let form = match form {
        Ok(Form(f)) => f,
        Err(e) => {
            // Not the lift form: the CSRF check fails (or the body was too large).
            viewer.check_csrf(&posted_csrf(Err(e))?)?;
            return Err(PageError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "send the lift form",
            ));
        }
    };
    viewer.check_csrf(&form.csrf)?;
    let (scope, subject, lifted) = lift_block(&st, &form.scope, &form.subject).await?;
    let notice = if lifted {
        format!(
            "Lifted the block on {} {subject}; its failed logins are forgotten on every node.",
            scope.as_str()
        )
    } else {
        format!(
            "{} {subject} was not blocked; its failed logins are forgotten on every node.",
            scope.as_str()
        )
    };
    show(&st, &viewer, Some(notice)).await
}

async fn show(
    st: &AppState,
    viewer: &Viewer,
    notice: Option<String>,
) -> Result<Response, PageError> {
    let blocks = blocks_in_force(st, DEFAULT_LIMIT).await?;
    page(&BlocksPage {
        chrome: Chrome::new(viewer, "Login blocks", None),
        blocks,
        notice,
    })
}
