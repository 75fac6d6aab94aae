//! A tenant's file of today (waiting or imported) and the Run now form.
//!
//! (Not built yet: the route table is empty.)

use crate::admin::AppState;
use axum::Router;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
