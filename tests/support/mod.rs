//! Shared pieces of the integration tests.

pub mod history;
pub mod sftp;
pub mod smtp_sink;
