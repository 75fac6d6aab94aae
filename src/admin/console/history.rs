//! A tenant's import history: its runs newest first, paged, each linking to its run page, and a
//! chart of inserted / updated / deactivated / skipped over the runs on the page.
//!
//! `GET /tenants/{tenant}?page=N`: for an operator any tenant, for a tenant only its own (404
//! otherwise). Reads the run log through the store (`history_from(tenant, offset, limit)`: a page
//! reads its own records; the retention of `retention_days` bounds a history, and
//! [`MAX_PAGES`] bounds the offset), under a turn of the heavy pages' share. The
//! chart leaves as inline SVG drawn here (no script), with a legend, a `<title>`/`<desc>` and
//! the table of the same numbers as its text alternative.

use super::{blocking, page, Chrome, PageError, Viewer};
use crate::admin::AppState;
use crate::model::ImportRecord;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

/// Runs per page.
const PAGE_SIZE: usize = 50;
/// The deepest page served (older runs are beyond what a page reader pages through).
const MAX_PAGES: usize = 200;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/tenants/{tenant}", get(history))
}

#[derive(Deserialize, Default)]
struct PageQuery {
    #[serde(default)]
    page: Option<String>,
}

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    chrome: Chrome,
    tenant: String,
    runs: Vec<ImportRecord>,
    chart: Option<Chart>,
    page: usize,
    has_next: bool,
}

async fn history(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(tenant): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Response, PageError> {
    let config = st.config.current();
    let t = viewer.tenant(&config, &tenant)?.clone();
    let page_no = page_number(query.page.as_deref()).clamp(1, MAX_PAGES);
    // A page of records (up to 52 messages each) is a heavy read like a run's report: it
    // takes a turn of the tenant's share (review s26).
    let Some(_turn) = st.heavy.turn(&t.id).await else {
        return Err(PageError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many heavy pages are being read; reload the page in a second",
        ));
    };
    let store = st.store.clone();
    let id = t.id.clone();
    let skip = (page_no - 1) * PAGE_SIZE;
    let mut runs = blocking("cannot read the import history", move || {
        store.history_from(&id, skip, PAGE_SIZE + 1)
    })
    .await?;
    let has_next = runs.len() > PAGE_SIZE && page_no < MAX_PAGES;
    runs.truncate(PAGE_SIZE);
    page(&HistoryPage {
        chrome: Chrome::new(&viewer, format!("Import history of {}", t.id), Some(&t.id)),
        tenant: t.id.clone(),
        chart: Chart::of(&runs),
        runs,
        page: page_no,
        has_next,
    })
}

/// The chart's drawing area, in SVG user units.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// One line of the chart.
pub(super) struct Series {
    pub name: &'static str,
    pub color: &'static str,
    /// `x,y x,y …` for the polyline.
    pub points: String,
    pub dots: Vec<(f64, f64)>,
}

/// A series' name, colour, and the count of a run it draws.
type SeriesOf = (&'static str, &'static str, fn(&ImportRecord) -> u64);

/// A line chart of the four counts over runs (oldest left), drawn on the server.
pub(super) struct Chart {
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub right_edge: f64,
    pub bottom_edge: f64,
    pub series: Vec<Series>,
    /// (y, label) of the horizontal grid lines.
    pub y_ticks: Vec<(f64, u64)>,
    /// (x, label, text-anchor) under the first and the last run.
    pub x_labels: Vec<(f64, String, &'static str)>,
    /// One sentence for screen readers.
    pub summary: String,
}

impl Chart {
    /// The chart of `runs` (newest first, as the history lists them); None without runs.
    pub fn of(runs: &[ImportRecord]) -> Option<Chart> {
        if runs.is_empty() {
            return None;
        }
        let chrono: Vec<&ImportRecord> = runs.iter().rev().collect();
        let pick: [SeriesOf; 4] = [
            ("inserted", "#1a7f37", |r| r.counts.inserted),
            ("updated", "#0b5cad", |r| r.counts.updated),
            ("deactivated", "#9a6700", |r| {
                r.counts.deactivated + r.counts.deleted
            }),
            ("skipped", "#b42318", |r| r.counts.skipped),
        ];
        let max = chrono
            .iter()
            .flat_map(|r| pick.iter().map(move |(_, _, f)| f(r)))
            .max()
            .unwrap_or(0)
            .max(1);
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let n = chrono.len();
        let x = |i: usize| {
            if n == 1 {
                LEFT + plot_w / 2.0
            } else {
                LEFT + plot_w * i as f64 / (n - 1) as f64
            }
        };
        let y = |v: u64| TOP + plot_h * (1.0 - v as f64 / max as f64);
        let series = pick
            .iter()
            .map(|(name, color, f)| {
                let dots: Vec<(f64, f64)> = chrono
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (round(x(i)), round(y(f(r)))))
                    .collect();
                let points = dots
                    .iter()
                    .map(|(a, b)| format!("{a},{b}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                Series {
                    name,
                    color,
                    points,
                    dots,
                }
            })
            .collect();
        let mut tick_values = vec![0, max / 2, max];
        tick_values.dedup();
        let y_ticks = tick_values.into_iter().map(|v| (round(y(v)), v)).collect();
        let label = |r: &ImportRecord| r.received_at.format("%Y-%m-%d %H:%M").to_string();
        let mut x_labels = vec![(round(x(0)), label(chrono[0]), "start")];
        if n > 1 {
            x_labels.push((round(x(n - 1)), label(chrono[n - 1]), "end"));
        } else {
            x_labels[0].2 = "middle";
        }
        let summary = format!(
            "Rows inserted, updated, deactivated or deleted, and skipped in each of {n} run{} from {} to {} (UTC); the largest count is {max}. The table below lists the same numbers.",
            if n == 1 { "" } else { "s" },
            label(chrono[0]),
            label(chrono[n - 1]),
        );
        Some(Chart {
            width: WIDTH,
            height: HEIGHT,
            left: LEFT,
            right_edge: WIDTH - RIGHT,
            bottom_edge: HEIGHT - BOTTOM,
            series,
            y_ticks,
            x_labels,
            summary,
        })
    }
}

/// A `page` query value as a page number: 1 when absent or not a number (a bad link
/// shows the first page rather than an error).
pub(super) fn page_number(raw: Option<&str>) -> usize {
    raw.and_then(|p| p.trim().parse().ok()).unwrap_or(1).max(1)
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ImportStatus;
    use chrono::{TimeZone, Utc};

    fn run(i: u32, inserted: u64, skipped: u64) -> ImportRecord {
        let at = Utc.with_ymd_and_hms(2026, 11, i, 7, 30, 0).unwrap();
        let mut r = ImportRecord::begun(
            format!("r{i}"),
            "acme",
            "users.csv",
            ImportStatus::Success,
            at,
            at,
        );
        r.counts.inserted = inserted;
        r.counts.skipped = skipped;
        r
    }

    #[test]
    fn the_chart_puts_the_oldest_run_left_and_the_largest_count_on_top() {
        // Newest first, as the history lists them.
        let runs = [run(3, 0, 2), run(2, 4, 0), run(1, 10, 0)];
        let chart = Chart::of(&runs).unwrap();
        let inserted = &chart.series[0];
        assert_eq!(inserted.name, "inserted");
        assert_eq!(inserted.dots.len(), 3);
        // The oldest run (10 inserted, the maximum) is leftmost and at the top of the plot.
        assert_eq!(inserted.dots[0], (LEFT, TOP));
        // The newest (0 inserted) is rightmost on the base line.
        assert_eq!(inserted.dots[2], (WIDTH - RIGHT, HEIGHT - BOTTOM));
        assert!(chart
            .summary
            .contains("3 runs from 2026-11-01 07:30 to 2026-11-03 07:30"));
        assert_eq!(chart.y_ticks.last().map(|t| t.1), Some(10));
    }

    #[test]
    fn a_bad_page_number_is_the_first_page() {
        assert_eq!(page_number(None), 1);
        assert_eq!(page_number(Some("3")), 3);
        assert_eq!(page_number(Some("0")), 1);
        assert_eq!(page_number(Some("-2")), 1);
        assert_eq!(page_number(Some("abc")), 1);
        assert_eq!(page_number(Some("99999999999999999999999")), 1);
    }

    #[test]
    fn no_runs_no_chart_and_one_run_is_centred() {
        assert!(Chart::of(&[]).is_none());
        let one = Chart::of(&[run(1, 0, 0)]).unwrap();
        assert_eq!(
            one.series[0].dots[0].0,
            round(LEFT + (WIDTH - LEFT - RIGHT) / 2.0)
        );
        assert_eq!(one.x_labels.len(), 1);
    }
}
