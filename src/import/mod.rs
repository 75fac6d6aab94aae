//! The import engine: CSV bytes → a validated, planned and applied sync of a tenant's directory.
//! (Being built; see issue 3.)

pub mod fields;
