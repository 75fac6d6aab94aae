//! Changes the push never read: the change log's retention sweep trims old entries whether or
//! not the SCIM push has pushed them, so a push that was stopped or held for long can find its
//! next change far past its cursor (audit F15). The users of the missing changes may differ in
//! the application until a reconcile.
//!
//! Data enters as the cursor and the first change read after it; it leaves as a warning in the
//! log, the note `gap` in the cursor's `state` (durable, shown by `GET .../scim-push` and
//! `roster scim-push` on every node, replaced by a later gap) and in the pusher's status.

use super::Pusher;
use crate::model::changelog::Cursor;
use chrono::{DateTime, Utc};
use serde_json::json;

impl Pusher {
    /// Notes a gap when `first_seq`, the first change read, is not the one after `cursor`.
    pub(super) fn note_gap(&self, cursor: &mut Cursor, first_seq: u64, now: DateTime<Utc>) {
        let missing = first_seq.saturating_sub(cursor.position.saturating_add(1));
        if missing == 0 {
            return;
        }
        let note = format!(
            "gap: {missing} changes (after {}) were removed by retention before they were pushed; run `roster scim-push {} --reconcile`",
            cursor.position, self.tenant
        );
        tracing::warn!(tenant = %self.tenant, "SCIM push: {note}");
        let gap = json!({
            "changes": missing,
            "after": cursor.position,
            "at": now,
            "note": note,
        });
        cursor.set_state("gap", gap);
        self.status().gap = Some(note);
    }
}
