//! SCIM push (docs/delivery.md, "SCIM push"): Roster as a SCIM 2.0 client that provisions each
//! change of a tenant's directory to an application, as Entra and Okta do.
//!
//! Data enters as the tenant's change log after the `scim-push` cursor and its users (through
//! the store, or any [`ChangeSource`]) and `[tenants.scim_push]`; it leaves as HTTP requests to
//! the application (`client`), the cursor written back to the store, and a [`PushStatus`] the
//! admin API shows. `resource` maps users to SCIM resources (pure); `push` walks the log
//! (`push::merge`: an update by PUT, the application's own user with Roster's attributes over it);
//! `managers` remembers reports pushed before their manager, to push them again after it;
//! `worker` runs it inside `roster serve`; `reconcile` compares the application with the
//! directory for `roster scim-push --reconcile`.

pub mod client;
pub mod managers;
pub mod push;
pub mod reconcile;
pub mod resource;
pub mod status;
pub mod worker;

pub use client::{ScimClient, ScimError};
pub use push::{Action, Batch, ChangeSource, LeaseFence, Pusher, StoreSource, CONSUMER};
pub use reconcile::{reconcile, Drift};
pub use status::{snapshot, PushStatus};
pub use worker::Worker;
