//! Preview: upload a CSV and see the inserts, updates (field: old -> new) and deactivations it would make; nothing changes.
//!
//! (Not built yet: the route table is empty.)

use crate::admin::AppState;
use axum::Router;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
