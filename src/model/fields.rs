//! The field table (design.md §4): every field a tenant may map a column to, with how its cells
//! are read ([`Kind`]), and the names records store. The import engine normalises cells by it
//! (`import::fields`), the config checks `columns` against it, the packed record numbers
//! built-in names by their place in [`FIELD_NAMES`], and [`User`](super::User) shows fields by it.
//!
//! Pure data: nothing enters or leaves but names and specs.

/// Separator of list items inside a stored value.
pub const LIST_SEP: char = '\u{1f}';

/// The fields whose kind is [`Kind::List`]: the only ones whose stored value is split on
/// [`LIST_SEP`] into items (a `User` shows them as arrays; filters test each item on both
/// stores). Any other text, even one holding U+001F, is one value.
pub const LIST_FIELDS: [&str; 2] = ["groups", "teams"];

/// True for a field of [`LIST_FIELDS`] (two comparisons: a scan asks it for every record).
pub fn is_list(name: &str) -> bool {
    LIST_FIELDS.contains(&name)
}

/// Prefix of tenant-defined fields: `custom.NAME`.
pub const CUSTOM_PREFIX: &str = "custom.";

/// The built-in fields a [`User`](super::User) shows as its own members (the rest are shown in
/// its `fields` map, `custom.*` in `attributes`).
pub const EMAIL: &str = "email";
pub const USERNAME: &str = "username";
pub const MAPPING_CODE: &str = "mapping_code";
pub const FIRST_NAME: &str = "first_name";
pub const LAST_NAME: &str = "last_name";
/// All five, for a reader that must leave them out of the `fields` map as a `User` does.
pub const MEMBER_FIELDS: [&str; 5] = [EMAIL, USERNAME, MAPPING_CODE, FIRST_NAME, LAST_NAME];

/// How a field's cells are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Trimmed, lower-cased, must have a domain with a dot.
    Email,
    /// Trimmed, kept as text (leading zeros stay).
    Id,
    /// Trimmed.
    Text,
    /// Trimmed, inner whitespace collapsed, optionally capitalised.
    Name,
    /// `YYYY-MM-DD`, `DD.MM.YYYY` or `D.M.YYYY`; stored ISO.
    Date,
    /// `M` or `F`.
    Sex,
    /// One of the tenant's `languages`; stored lower-case.
    Language,
    /// A password: hashed, never stored as given.
    Secret,
    /// Must be in `[tenants.reference]` (which list: see [`RefList`]).
    Reference(RefList),
    /// Split on the tenant's `list_separator`.
    List,
    /// `1/0`, `true/false`, ... ; `invert` for `deactivate`.
    Bool { invert: bool },
}

/// Which reference list a reference field is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefList {
    OrgUnits,
    Locations,
    Workplaces,
}

/// One row of the field table.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub name: &'static str,
    pub kind: Kind,
}

/// The field table. `custom.NAME` fields use [`CUSTOM`].
pub const FIELDS: &[FieldSpec] = &[
    FieldSpec {
        name: EMAIL,
        kind: Kind::Email,
    },
    FieldSpec {
        name: "manager_email",
        kind: Kind::Email,
    },
    FieldSpec {
        name: MAPPING_CODE,
        kind: Kind::Id,
    },
    FieldSpec {
        name: USERNAME,
        kind: Kind::Text,
    },
    FieldSpec {
        name: FIRST_NAME,
        kind: Kind::Name,
    },
    FieldSpec {
        name: LAST_NAME,
        kind: Kind::Name,
    },
    FieldSpec {
        name: "date_of_birth",
        kind: Kind::Date,
    },
    FieldSpec {
        name: "start_date",
        kind: Kind::Date,
    },
    FieldSpec {
        name: "sex",
        kind: Kind::Sex,
    },
    FieldSpec {
        name: "language",
        kind: Kind::Language,
    },
    FieldSpec {
        name: "national_id",
        kind: Kind::Text,
    },
    FieldSpec {
        name: "phone",
        kind: Kind::Text,
    },
    FieldSpec {
        name: "job_title",
        kind: Kind::Text,
    },
    FieldSpec {
        name: "role",
        kind: Kind::Text,
    },
    FieldSpec {
        name: "timezone",
        kind: Kind::Text,
    },
    FieldSpec {
        name: "password",
        kind: Kind::Secret,
    },
    FieldSpec {
        name: "org_unit",
        kind: Kind::Reference(RefList::OrgUnits),
    },
    FieldSpec {
        name: "location",
        kind: Kind::Reference(RefList::Locations),
    },
    FieldSpec {
        name: "workplace",
        kind: Kind::Reference(RefList::Workplaces),
    },
    FieldSpec {
        name: "groups",
        kind: Kind::List,
    },
    FieldSpec {
        name: "teams",
        kind: Kind::List,
    },
    FieldSpec {
        name: "active",
        kind: Kind::Bool { invert: false },
    },
    FieldSpec {
        name: "deactivate",
        kind: Kind::Bool { invert: true },
    },
];

/// The spec of every `custom.NAME` field.
pub const CUSTOM: FieldSpec = FieldSpec {
    name: "custom",
    kind: Kind::Text,
};

/// Names of the built-in fields; `custom.NAME` is accepted too.
pub const FIELD_NAMES: &[&str] = &[
    EMAIL,
    "manager_email",
    MAPPING_CODE,
    USERNAME,
    FIRST_NAME,
    LAST_NAME,
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
    spec(name).is_some()
}

/// The spec of a field name (built-in or `custom.NAME`).
pub fn spec(name: &str) -> Option<FieldSpec> {
    if let Some(s) = FIELDS.iter().find(|s| s.name == name) {
        return Some(*s);
    }
    custom_name(name).map(|_| CUSTOM)
}

/// NAME of a `custom.NAME` field (None for built-in names and a bare `custom.`).
pub fn custom_name(name: &str) -> Option<&str> {
    name.strip_prefix(CUSTOM_PREFIX)
        .filter(|rest| !rest.is_empty())
}
