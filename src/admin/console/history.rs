//! A tenant's import history: its runs, newest first.
//!
//! `GET /tenants/{tenant}`: for an operator any tenant, for a tenant only its own (404
//! otherwise). Reads the run log through the store.

use super::{blocking, page, Chrome, PageError, Viewer};
use crate::admin::AppState;
use crate::model::ImportRecord;
use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

/// Runs shown.
const SHOWN: usize = 50;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/tenants/{tenant}", get(history))
}

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    chrome: Chrome,
    runs: Vec<ImportRecord>,
}

async fn history(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(tenant): Path<String>,
) -> Result<Response, PageError> {
    let config = st.config.current();
    let t = viewer.tenant(&config, &tenant)?.clone();
    let store = st.store.clone();
    let id = t.id.clone();
    let runs = blocking("cannot read the import history", move || {
        store.history(&id, SHOWN)
    })
    .await?;
    page(&HistoryPage {
        chrome: Chrome::new(&viewer, format!("Import history of {}", t.id), Some(&t.id)),
        runs,
    })
}
