//! A tenant's users: search by key, email or name, filter by status, paging done by the store; one user's fields and change history; the Restore form.
//!
//! (Not built yet: the route table is empty.)

use crate::admin::AppState;
use axum::Router;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
