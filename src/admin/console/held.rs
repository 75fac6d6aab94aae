//! A held run: who it would deactivate or delete (a paged list from a dry run of the held file) and the Approve form.
//!
//! (Not built yet: the route table is empty.)

use crate::admin::AppState;
use axum::Router;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
