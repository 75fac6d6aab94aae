//! The domain model: the types and rules every other module shares, with no I/O and no imports
//! from the rest of Roster (everything else depends on it, it depends on nothing of Roster's).
//!
//! * [`record`]: the record of one import run ([`ImportRecord`] with its [`Counts`] and
//!   [`ImportStatus`]);
//! * [`change`]: a change to one user, as a preview lists it;
//! * [`changelog`]: the change log and event log a commit writes, and delivery cursors;
//! * [`filter`]: a filter over users ([`UserFilter`]) and whether a user matches it;
//! * [`record_view`]: a stored record read in place for a filter, without decoding it;
//! * [`user`]: a directory user as shown outside ([`User`], [`UserStatus`]) and the restore rule;
//! * [`fields`]: the field table (names, kinds, [`LIST_SEP`](fields::LIST_SEP));
//! * [`packed`]: the packed user record and bucket, the form the import engine plans on and
//!   the store keeps;
//! * [`bucket`]: which bucket a key belongs to, and FNV-1a.
//!
//! Values enter as plain Rust data (or packed bytes) and leave the same way.

pub mod argon;
pub mod bucket;
pub mod change;
pub mod changelog;
pub mod fields;
pub mod filter;
pub mod packed;
pub mod record;
pub mod record_view;
pub mod user;

pub use change::{Change, FieldChange};
pub use filter::UserFilter;
pub use record::{Counts, ImportRecord, ImportStatus};
pub use user::{User, UserPage, UserStatus};
