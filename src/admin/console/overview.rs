//! The operators' overview: every tenant with its last run, paged and filtered by id.
//!
//! `GET /tenants?q=TEXT&page=N` (operators only). The tenant list comes from the config in
//! force; only the tenants on the page are looked up in the store, so the page costs the same
//! with 5 or 5,000 tenants.

use super::{blocking, page, Chrome, PageError, Viewer};
use crate::admin::AppState;
use crate::model::ImportRecord;
use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

/// Tenants per page.
const PAGE_SIZE: usize = 50;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/tenants", get(overview))
}

#[derive(Deserialize, Default)]
struct OverviewQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<usize>,
}

struct TenantRow {
    id: String,
    last: Option<ImportRecord>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    q: String,
    rows: Vec<TenantRow>,
    page: usize,
    pages: usize,
    total: usize,
}

async fn overview(
    State(st): State<AppState>,
    viewer: Viewer,
    Query(query): Query<OverviewQuery>,
) -> Result<Response, PageError> {
    viewer.operator_only()?;
    let config = st.config.current();
    let q = query.q.trim().to_ascii_lowercase();
    let ids: Vec<String> = config
        .tenants
        .iter()
        .filter(|t| q.is_empty() || t.id.contains(&q))
        .map(|t| t.id.clone())
        .collect();
    let total = ids.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page_no = query.page.unwrap_or(1).clamp(1, pages);
    let shown: Vec<String> = ids
        .into_iter()
        .skip((page_no - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .collect();
    let store = st.store.clone();
    let rows = blocking("cannot read the import history", move || {
        let mut rows = Vec::with_capacity(shown.len());
        for id in shown {
            let last = store.history(&id, 1)?.into_iter().next();
            rows.push(TenantRow { id, last });
        }
        Ok(rows)
    })
    .await?;
    page(&OverviewPage {
        chrome: Chrome::new(&viewer, "Tenants", None),
        q: query.q,
        rows,
        page: page_no,
        pages,
        total,
    })
}
