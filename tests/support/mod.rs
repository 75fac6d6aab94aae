//! Shared pieces of the integration tests.

pub mod sftp;
pub mod smtp_sink;
