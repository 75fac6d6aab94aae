//! The operators' overview: every tenant with its last run, its next scheduled run, whether
//! today's file is there, its held runs and its delivery backlog; the mail outbox once on top.
//!
//! `GET /tenants?q=TEXT&page=N` (operators only). The tenant list comes from the config in
//! force, filtered by id; only the [`PAGE_SIZE`] tenants on the page are looked up (their
//! newest runs, held plans, root folder, delivery cursors), so the page costs the same with 5
//! or 5,000 tenants. Each backlog is counted only up to [`BACKLOG_SHOWN`] ("more than").

use super::{blocking, page, Chrome, PageError, Viewer};
use crate::admin::today::today_file;
use crate::admin::AppState;
use crate::config::{Config, Tenant, Trigger};
use crate::model::ImportRecord;
use crate::store::Store;
use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::sync::Arc;

/// Tenants per page.
const PAGE_SIZE: usize = 50;
/// Newest runs read per tenant: the last run, and enough to tell whether today's file was
/// imported.
const RECENT_RUNS: usize = 10;
/// Pending SCIM push changes counted per tenant ("more than" beyond).
const BACKLOG_SHOWN: usize = 100;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/tenants", get(overview))
}

#[derive(Deserialize, Default)]
struct OverviewQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<String>,
}

/// A delivery backlog: how many wait (counted up to a bound) and whether the last attempt
/// failed.
struct Backlog {
    pending: u64,
    more: bool,
    failing: bool,
}

/// One tenant's line of the overview.
struct TenantRow {
    id: String,
    last: Option<ImportRecord>,
    /// The next tick of its schedule (tenants imported by schedule).
    next_run: Option<DateTime<Utc>>,
    /// Today's file: files waiting, and whether one was imported today.
    waiting_today: usize,
    imported_today: bool,
    /// Held runs waiting for approval, and the oldest of them (for the link).
    held: usize,
    first_held: Option<String>,
    /// None when the tenant has no webhooks / no SCIM push.
    webhooks: Option<Backlog>,
    scim_push: Option<Backlog>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    q: String,
    /// `q` for the search box (see `escape::form_value`).
    q_value: String,
    rows: Vec<TenantRow>,
    page: usize,
    pages: usize,
    total: usize,
    /// Messages in the (global) mail outbox.
    outbox: usize,
}

async fn overview(
    State(st): State<AppState>,
    viewer: Viewer,
    Query(query): Query<OverviewQuery>,
) -> Result<Response, PageError> {
    viewer.operator_only()?;
    let config = st.config.current();
    let q = query.q.trim().to_ascii_lowercase();
    let matching = config
        .tenants
        .iter()
        .filter(|t| q.is_empty() || t.id.contains(&q));
    let total = matching.clone().count();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page_no = super::history::page_number(query.page.as_deref()).clamp(1, pages);
    let shown: Vec<Tenant> = matching
        .skip((page_no - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .cloned()
        .collect();
    let store = st.store.clone();
    let (rows, outbox) = blocking("cannot read the tenants' state", move || {
        let now = Utc::now();
        let rows = shown
            .iter()
            .map(|t| tenant_row(&config, &store, t, now))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((rows, store.outbox_len()?))
    })
    .await?;
    page(&OverviewPage {
        chrome: Chrome::new(&viewer, "Tenants", None),
        q_value: super::escape::form_value(&query.q),
        q: query.q,
        rows,
        page: page_no,
        pages,
        total,
        outbox,
    })
}

/// The overview line of `t` (a few store reads and one listing of its root folder).
fn tenant_row(
    config: &Arc<Config>,
    store: &Store,
    t: &Tenant,
    now: DateTime<Utc>,
) -> anyhow::Result<TenantRow> {
    let recent = store.history(&t.id, RECENT_RUNS)?;
    let last = recent.first().cloned();
    let today = today_file(config, t, recent);
    let held = store.held_plans(&t.id)?;
    let next_run = t
        .import
        .schedule
        .as_deref()
        .filter(|_| t.import.trigger != Trigger::Upload)
        .and_then(|expr| crate::intake::next_fire(expr, &t.import.timezone, now));
    Ok(TenantRow {
        id: t.id.clone(),
        last,
        next_run,
        waiting_today: today.waiting.len(),
        imported_today: !today.imported.is_empty(),
        held: held.len(),
        first_held: held.into_iter().min(),
        webhooks: webhook_backlog(store, t)?,
        scim_push: scim_push_backlog(store, t)?,
    })
}

/// Events not yet delivered, summed over the tenant's webhook endpoints.
fn webhook_backlog(store: &Store, t: &Tenant) -> anyhow::Result<Option<Backlog>> {
    if t.webhooks.is_empty() {
        return Ok(None);
    }
    let mut sum = Backlog {
        pending: 0,
        more: false,
        failing: false,
    };
    for hook in &t.webhooks {
        let status = crate::deliver::webhook::endpoint_status(store, &t.id, hook)?;
        sum.pending += status.backlog;
        sum.failing |= (status.last_error.is_some() && status.attempts > 0) || status.disabled;
    }
    Ok(Some(sum))
}

/// Changes not yet pushed to the tenant's SCIM application (counted up to [`BACKLOG_SHOWN`]).
fn scim_push_backlog(store: &Store, t: &Tenant) -> anyhow::Result<Option<Backlog>> {
    if t.scim_push.is_none() {
        return Ok(None);
    }
    let (cursor, pending) =
        crate::deliver::scim_push::status::backlog(store, &t.id, BACKLOG_SHOWN)?;
    Ok(Some(Backlog {
        pending: pending.min(BACKLOG_SHOWN) as u64,
        more: pending > BACKLOG_SHOWN,
        failing: cursor.attempts > 0,
    }))
}
