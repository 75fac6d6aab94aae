//! Delivery of what the store committed to applications (docs/delivery.md): each submodule is
//! one consumer of the store's change log or event log, with its own cursor.
//!
//! Data enters from the store's `ChangeLog` seam (the event log, the change log, each
//! consumer's cursor) and leaves over HTTP to the applications; the only state kept is the
//! cursor, written back through the same seam after each outcome: signed webhooks
//! ([`webhook`]) and SCIM push ([`scim_push`]).

pub mod scim_push;
pub mod webhook;
