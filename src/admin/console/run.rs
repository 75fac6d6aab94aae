//! One run of a tenant: its counts, messages, the skipped rows with their reasons (read from its failure report), and downloads of the report and the archived file.
//!
//! (Not built yet: the route table is empty.)

use crate::admin::AppState;
use axum::Router;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
