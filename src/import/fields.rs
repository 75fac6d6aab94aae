//! The field table (design.md §4): one spec per field drives parsing, validation and storage.

/// Names of the built-in fields; `custom.NAME` is accepted too.
pub const FIELD_NAMES: &[&str] = &[
    "email",
    "manager_email",
    "mapping_code",
    "username",
    "first_name",
    "last_name",
    "date_of_birth",
    "start_date",
    "sex",
    "language",
    "national_id",
    "phone",
    "job_title",
    "role",
    "timezone",
    "password",
    "org_unit",
    "location",
    "workplace",
    "groups",
    "teams",
    "active",
    "deactivate",
];

/// True for a field a tenant may map a column to.
pub fn is_known_field(name: &str) -> bool {
    FIELD_NAMES.contains(&name)
        || name
            .strip_prefix("custom.")
            .is_some_and(|rest| !rest.is_empty())
}
