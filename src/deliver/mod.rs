//! Delivery of directory changes to applications (docs/delivery.md): each submodule is one
//! consumer of the store's change log or event log, with its own cursor.

pub mod scim_push;
