//! Delivery of what the store committed to applications (docs/delivery.md).
//!
//! Data enters from the store's `ChangeLog` seam (the event log, the change log, each
//! consumer's cursor) and leaves over HTTP to the applications; the only state kept is the
//! cursor, written back through the same seam after each outcome. Today: signed webhooks
//! ([`webhook`]).

pub mod webhook;
