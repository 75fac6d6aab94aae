//! Shared pieces of the integration tests.

pub mod history;
pub mod log_capture;
pub mod pipeline;
pub mod process;
pub mod server_store;
pub mod sftp;
pub mod smtp_sink;
