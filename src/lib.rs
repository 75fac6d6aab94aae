//! Roster: an SFTP server for HR data drops.
//!
//! An upload travels `sftp` (CLOSE or RENAME) → `intake` (queue) → `import` (plan, apply via
//! `store`) → `intake` archives the file → `mail` delivers the report. Each module owns one
//! stage; see its doc comment for what enters and leaves it. Below them all, `model` holds the
//! shared types and rules (no I/O, no imports from the rest of Roster), and `store` the seams
//! to the database (one trait per consumer; `store::sled` is the only code that touches sled).

pub mod admin;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod descriptors;
pub mod import;
pub mod intake;
pub mod login;
pub mod logs;
pub mod mail;
pub mod metrics;
pub mod model;
pub mod private_files;
pub mod serve;
pub mod sftp;
pub mod store;
