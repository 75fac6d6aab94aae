//! The change log and the event log (docs/delivery.md): what a commit tells applications.
//!
//! A [`LoggedChange`] is one user's change as committed, numbered per tenant (`seq`); an
//! [`Event`] is one webhook announcement, numbered per tenant in its own sequence, naming either
//! a range of change-log entries of one import (`directory.changed`, at most
//! [`EVENT_CHANGES_MAX`]) or an import record. A [`Cursor`] is how far one consumer (a webhook
//! endpoint, SCIM push) has delivered, and how its last attempt went.
//!
//! Data enters as packed records compared by [`between`] (the import engine, a restore) and as
//! the record a commit writes ([`events_for`]); it leaves through the store's `ChangeLog` seam
//! to the admin API, the CLI, and the delivery workers. Pure: no I/O.

use super::change::FieldChange;
use super::packed::{bucket_entries, UserRec, STATUS_ACTIVE, STATUS_DELETED, STATUS_INACTIVE};
use super::record::{ImportRecord, ImportStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// At most this many changes in one `directory.changed` event.
pub const EVENT_CHANGES_MAX: u64 = 500;

/// What happened to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Created,
    Updated,
    Deactivated,
    Deleted,
    Restored,
}

/// One change of one user, before the commit numbers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange {
    pub key: String,
    pub kind: ChangeKind,
    /// `updated`/`restored`: each changed field (`password` as "(changed)", never its value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
}

/// One entry of a tenant's change log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedChange {
    /// Strictly increasing per tenant, without gaps a reader could see fill later.
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// The import that made it; none for an operator's restore.
    pub import_id: Option<String>,
    pub key: String,
    pub kind: ChangeKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
}

/// The type of a webhook event (its `type` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "directory.changed")]
    DirectoryChanged,
    #[serde(rename = "import.finished")]
    ImportFinished,
    #[serde(rename = "import.held")]
    ImportHeld,
    #[serde(rename = "import.failed")]
    ImportFailed,
    #[serde(rename = "file.missing")]
    FileMissing,
}

impl EventType {
    /// The name on the wire and in `events = [...]`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::DirectoryChanged => "directory.changed",
            EventType::ImportFinished => "import.finished",
            EventType::ImportHeld => "import.held",
            EventType::ImportFailed => "import.failed",
            EventType::FileMissing => "file.missing",
        }
    }

    /// Every type, for config checks.
    pub const ALL: [EventType; 5] = [
        EventType::DirectoryChanged,
        EventType::ImportFinished,
        EventType::ImportHeld,
        EventType::ImportFailed,
        EventType::FileMissing,
    ];
}

/// An event before the commit numbers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEvent {
    pub kind: EventType,
    pub import_id: Option<String>,
    /// `directory.changed`: the first and last change-log `seq` it announces (inclusive).
    pub changes: Option<(u64, u64)>,
}

/// One entry of a tenant's event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub kind: EventType,
    pub import_id: Option<String>,
    pub changes: Option<(u64, u64)>,
}

/// How far one consumer of a tenant's logs has delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The last `seq` delivered (0: nothing yet).
    pub position: u64,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Failed attempts at the entry after `position`.
    pub attempts: u32,
    pub next_attempt: Option<DateTime<Utc>>,
    /// The consumer stopped (a webhook endpoint answered 410 Gone).
    pub disabled: bool,
    /// What a consumer keeps beside its position, durable like it (SCIM push: the users the
    /// application refused, so they survive a restart); None for most consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<serde_json::Value>,
}

impl Cursor {
    /// Sets the entry `name` of `state`, keeping its other entries (a state that is not an
    /// object is replaced by one).
    pub fn set_state(&mut self, name: &str, value: serde_json::Value) {
        let mut state = (self.state.take())
            .filter(serde_json::Value::is_object)
            .unwrap_or_else(|| serde_json::json!({}));
        state[name] = value;
        self.state = Some(state);
    }

    /// Removes the entry `name` of `state`; a state left empty becomes None.
    pub fn clear_state(&mut self, name: &str) {
        if let Some(entries) = self.state.as_mut().and_then(|s| s.as_object_mut()) {
            entries.remove(name);
            if entries.is_empty() {
                self.state = None;
            }
        }
    }
}

/// The change from `old` to `new` of the user `key`, as the change log records it; None when
/// nothing a reader sees changed (only bookkeeping such as the row digest or `updated_at`).
/// `old` None is a user created; `new` None a user removed from the directory.
pub fn between(key: &str, old: Option<&UserRec>, new: Option<&UserRec>) -> Option<PendingChange> {
    let change = |kind, fields| {
        Some(PendingChange {
            key: key.to_string(),
            kind,
            fields,
        })
    };
    let (old, new) = match (old, new) {
        (None, None) => return None,
        (None, Some(_)) => return change(ChangeKind::Created, Vec::new()),
        (Some(_), None) => return change(ChangeKind::Deleted, Vec::new()),
        (Some(o), Some(n)) => (o, n),
    };
    let mut fields = field_changes(old, new);
    let kind = kind_of(old.status, new.status, !fields.is_empty())?;
    if old.status != new.status {
        fields.push(FieldChange {
            field: "status".into(),
            old: Some(status_name(old.status).into()),
            new: Some(status_name(new.status).into()),
        });
    }
    change(kind, fields)
}

/// What a stored user's change is, from its status before and after and whether a field
/// changed; None when neither did. One rule for the change log and the import record's counts:
/// leaving `deleted` (to any status) or going from inactive to active is `restored`, active to
/// inactive `deactivated`, anything to deleted `deleted`, the rest `updated`.
pub fn kind_of(old: u8, new: u8, fields_changed: bool) -> Option<ChangeKind> {
    match (old, new) {
        (o, STATUS_DELETED) if o != STATUS_DELETED => Some(ChangeKind::Deleted),
        (STATUS_DELETED, n) if n != STATUS_DELETED => Some(ChangeKind::Restored),
        (STATUS_INACTIVE, STATUS_ACTIVE) => Some(ChangeKind::Restored),
        (STATUS_ACTIVE, STATUS_INACTIVE) => Some(ChangeKind::Deactivated),
        _ if fields_changed => Some(ChangeKind::Updated),
        _ => None,
    }
}

/// A status as the directory names it.
pub fn status_name(s: u8) -> &'static str {
    match s {
        STATUS_ACTIVE => "active",
        STATUS_DELETED => "deleted",
        _ => "inactive",
    }
}

/// A stored value as a reader sees it: list items (`groups`, `teams`) joined by `"; "` instead
/// of the record's inner separator.
pub fn shown_value(value: &str) -> String {
    value.replace(super::fields::LIST_SEP, "; ")
}

/// The changes from the bucket `old` (none: empty) to the bucket `new`, both packed and
/// sorted by key (`model::packed`), in key order. A user whose stored bytes are identical is
/// not decoded. Memory: the two buckets and the changes of one bucket.
pub fn bucket_changes(old: Option<&[u8]>, new: &[u8]) -> anyhow::Result<Vec<PendingChange>> {
    let old = match old {
        Some(b) => bucket_entries(b)?,
        None => Vec::new(),
    };
    let new = bucket_entries(new)?;
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < old.len() || j < new.len() {
        let (o, n) = (old.get(i), new.get(j));
        let order = match (o, n) {
            (Some(o), Some(n)) => o.0.cmp(n.0),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let (key, before, after) = match (order, o, n) {
            (std::cmp::Ordering::Less, Some(o), _) => {
                i += 1;
                (o.0, Some(o.1), None)
            }
            (std::cmp::Ordering::Greater, _, Some(n)) => {
                j += 1;
                (n.0, None, Some(n.1))
            }
            (_, Some(o), Some(n)) => {
                i += 1;
                j += 1;
                if o.1 == n.1 {
                    continue;
                }
                (o.0, Some(o.1), Some(n.1))
            }
            _ => break,
        };
        let before = before.map(UserRec::decode).transpose()?;
        let after = after.map(UserRec::decode).transpose()?;
        let key = String::from_utf8_lossy(key);
        out.extend(between(&key, before.as_ref(), after.as_ref()));
    }
    Ok(out)
}

/// Every field whose value differs, in name order, then `password` when it changed.
fn field_changes(old: &UserRec, new: &UserRec) -> Vec<FieldChange> {
    let mut names: Vec<&str> = old
        .fields
        .iter()
        .chain(new.fields.iter())
        .map(|(n, _)| n.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut out: Vec<FieldChange> = names
        .into_iter()
        .filter(|n| old.get(n) != new.get(n))
        .map(|n| FieldChange {
            field: n.to_string(),
            old: old.get(n).map(shown_value),
            new: new.get(n).map(shown_value),
        })
        .collect();
    if old.pw_fp != new.pw_fp || old.pw_hash != new.pw_hash {
        out.push(FieldChange {
            field: "password".into(),
            old: None,
            new: Some("(changed)".into()),
        });
    }
    out
}

/// The events a commit announces: `directory.changed` for the changes `first..=last` it
/// numbered (in chunks of [`EVENT_CHANGES_MAX`]), then one event for its record, if any.
pub fn events_for(record: Option<&ImportRecord>, changes: Option<(u64, u64)>) -> Vec<PendingEvent> {
    let import_id = record.map(|r| r.id.clone());
    let mut out = Vec::new();
    if let Some((first, last)) = changes {
        let mut from = first;
        while from <= last {
            let to = last.min(from + EVENT_CHANGES_MAX - 1);
            out.push(PendingEvent {
                kind: EventType::DirectoryChanged,
                import_id: import_id.clone(),
                changes: Some((from, to)),
            });
            from = to + 1;
        }
    }
    if let Some(r) = record {
        let kind = match r.status {
            ImportStatus::Success | ImportStatus::Partial | ImportStatus::Duplicate => {
                EventType::ImportFinished
            }
            ImportStatus::Held => EventType::ImportHeld,
            ImportStatus::Error => EventType::ImportFailed,
            ImportStatus::Missing => EventType::FileMissing,
        };
        out.push(PendingEvent {
            kind,
            import_id,
            changes: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(status: u8, fields: &[(&str, &str)]) -> UserRec {
        UserRec {
            status,
            fields: fields
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..UserRec::default()
        }
    }

    #[test]
    fn between_names_the_kind_and_the_changed_fields() {
        let a = rec(
            STATUS_ACTIVE,
            &[("email", "a@x.example"), ("first_name", "Ann")],
        );
        let created = between("k", None, Some(&a)).unwrap();
        assert_eq!(
            (created.kind, created.fields.len()),
            (ChangeKind::Created, 0)
        );
        let mut b = rec(
            STATUS_ACTIVE,
            &[("email", "a@x.example"), ("last_name", "Lee")],
        );
        b.pw_fp = [1; 16];
        let up = between("k", Some(&a), Some(&b)).unwrap();
        assert_eq!(up.kind, ChangeKind::Updated);
        let names: Vec<_> = up.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(names, ["first_name", "last_name", "password"]);
        assert_eq!(up.fields[2].new.as_deref(), Some("(changed)"));
        let mut gone = a.clone();
        gone.status = STATUS_INACTIVE;
        assert_eq!(
            between("k", Some(&a), Some(&gone)).unwrap().kind,
            ChangeKind::Deactivated
        );
        assert_eq!(
            between("k", Some(&gone), Some(&a)).unwrap().kind,
            ChangeKind::Restored
        );
        gone.status = STATUS_DELETED;
        assert_eq!(
            between("k", Some(&a), Some(&gone)).unwrap().kind,
            ChangeKind::Deleted
        );
        let mut touched = a.clone();
        touched.updated_at = 99;
        assert_eq!(between("k", Some(&a), Some(&touched)), None);
    }

    #[test]
    fn a_large_import_is_announced_in_chunks_then_its_record() {
        let r = ImportRecord::begun(
            "i1".into(),
            "acme",
            "users.csv",
            ImportStatus::Success,
            Utc::now(),
            Utc::now(),
        );
        let ev = events_for(Some(&r), Some((11, 1210)));
        let ranges: Vec<_> = ev.iter().filter_map(|e| e.changes).collect();
        assert_eq!(ranges, vec![(11, 510), (511, 1010), (1011, 1210)]);
        assert_eq!(ev.last().map(|e| e.kind), Some(EventType::ImportFinished));
        assert!(ev.iter().all(|e| e.import_id.as_deref() == Some("i1")));
        // A restore: changes without a record.
        let ev = events_for(None, Some((5, 5)));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventType::DirectoryChanged);
        assert_eq!(ev[0].import_id, None);
    }
    #[test]
    fn bucket_changes_walks_both_buckets_in_key_order() {
        use crate::model::packed::bucket_push;
        let pack = |users: &[(&str, &UserRec)]| {
            let mut out = Vec::new();
            for (k, r) in users {
                let mut enc = Vec::new();
                r.encode_into(&mut enc);
                bucket_push(&mut out, k.as_bytes(), &enc);
            }
            out
        };
        let a = rec(STATUS_ACTIVE, &[("email", "a@x.example")]);
        let b = rec(STATUS_ACTIVE, &[("email", "b@x.example")]);
        let b2 = rec(STATUS_ACTIVE, &[("email", "b2@x.example")]);
        let old = pack(&[("a", &a), ("b", &b), ("c", &a)]);
        let new = pack(&[("a", &a), ("b", &b2), ("d", &b)]);
        let got = bucket_changes(Some(&old), &new).unwrap();
        let summary: Vec<_> = got.iter().map(|c| (c.key.as_str(), c.kind)).collect();
        assert_eq!(
            summary,
            [
                ("b", ChangeKind::Updated),
                ("c", ChangeKind::Deleted),
                ("d", ChangeKind::Created)
            ]
        );
        assert_eq!(got[0].fields[0].new.as_deref(), Some("b2@x.example"));
        assert_eq!(bucket_changes(None, &new).unwrap().len(), 3);
        assert!(bucket_changes(Some(&new), &new).unwrap().is_empty());
    }
}
