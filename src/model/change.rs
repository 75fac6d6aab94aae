//! A change to one user of a directory, as a preview lists it: inserted, updated (which fields,
//! from what to what), restored, deactivated, deleted. The import engine's planner makes them;
//! the admin API and `roster preview` show them (JSON tagged by `action`). Pure data.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One change of a plan, as a preview shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    Insert {
        key: String,
        fields: BTreeMap<String, String>,
    },
    Update {
        key: String,
        changes: Vec<FieldChange>,
    },
    Restore {
        key: String,
        changes: Vec<FieldChange>,
    },
    Deactivate {
        key: String,
    },
    Delete {
        key: String,
    },
}

/// `field: old → new` (passwords appear as `(changed)`, never their value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Option<String>,
    pub new: Option<String>,
}
