//! Shared pieces of the integration tests.

pub mod history;
pub mod server_store;
pub mod sftp;
pub mod smtp_sink;
