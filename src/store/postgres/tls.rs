//! TLS to PostgreSQL (`sslmode=require|verify-full`) with rustls.
//!
//! Data enters as a [`PostgresTarget`] and leaves as the connector its connections use, or
//! `None` for a plain connection (`sslmode=disable`, the only mode `target.rs` accepts so far).

use super::PostgresTarget;
use anyhow::Result;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The TLS connector for `target`, or `None` when it connects in plain text.
pub fn connector(_target: &PostgresTarget) -> Result<Option<MakeRustlsConnect>> {
    Ok(None)
}
