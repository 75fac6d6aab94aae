//! The column mapping helper: upload a sample file and see its encoding, delimiter, headers, first rows, a suggested mapping and the [tenants.import.columns] TOML to paste.
//!
//! (Not built yet: the route table is empty.)

use crate::admin::AppState;
use axum::Router;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
