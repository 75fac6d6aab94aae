//! The [`MailOutbox`] seam on sled: messages wait in the `outbox` tree until delivered, across
//! restarts. The mail module pushes a composed message (bytes + recipients), lists what is due,
//! and either removes a delivered one or defers it. Each value is framed (`store::frame`): the
//! JSON header (recipients, attempts, next attempt, last error), then the message bytes.

use super::SledStore;
use crate::store::{frame, unframe, Backend, MailOutbox, OutboxItem};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// At most this many messages are handed out at once; the rest wait for the next pass.
const DUE_BATCH: usize = 100;

#[derive(Serialize, Deserialize)]
struct Header {
    recipients: Vec<String>,
    attempts: u32,
    next_attempt: DateTime<Utc>,
    last_error: Option<String>,
}

fn decode(id: u64, v: &[u8]) -> Result<OutboxItem> {
    let (h, message): (Header, &[u8]) =
        unframe(v).with_context(|| format!("outbox message {id} is damaged"))?;
    Ok(item(id, h, message))
}

fn item(id: u64, h: Header, message: &[u8]) -> OutboxItem {
    OutboxItem {
        id,
        recipients: h.recipients,
        message: message.to_vec(),
        attempts: h.attempts,
        next_attempt: h.next_attempt,
        last_error: h.last_error,
    }
}

impl SledStore {
    /// The outbox key and value of `mail`, due now: for a transaction that writes it with
    /// other trees (a commit, a record).
    pub(super) fn outbox_entry(
        &self,
        mail: &crate::store::OutboxMail,
    ) -> Result<([u8; 8], Vec<u8>)> {
        self.framed_message(&mail.recipients, &mail.message)
    }

    /// A new message id and the framed value of a message due now.
    fn framed_message(&self, recipients: &[String], message: &[u8]) -> Result<([u8; 8], Vec<u8>)> {
        let id = self.inner.db.generate_id()?;
        let h = Header {
            recipients: recipients.to_vec(),
            attempts: 0,
            next_attempt: Utc::now(),
            last_error: None,
        };
        Ok((id.to_be_bytes(), frame(&h, message)?))
    }

    /// Calls `each` with every queued message, oldest first, whatever its next attempt
    /// (`roster migrate-store`). A damaged message is an error: copying around it would lose
    /// it.
    pub fn outbox_each(&self, mut each: impl FnMut(OutboxItem) -> Result<()>) -> Result<()> {
        for kv in self.inner.outbox.iter() {
            let (k, v) = kv?;
            let idb: [u8; 8] = k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .context("an outbox key is not a message id")?;
            each(decode(u64::from_be_bytes(idb), &v)?)?;
        }
        Ok(())
    }
}

impl MailOutbox for SledStore {
    /// Queues a message for delivery now; returns its id. Flushed on return.
    fn outbox_push(&self, recipients: &[String], message: &[u8]) -> Result<u64> {
        let (key, value) = self.framed_message(recipients, message)?;
        self.inner
            .outbox
            .insert(key, value)
            .context("cannot write the mail outbox")?;
        self.flush()?;
        Ok(u64::from_be_bytes(key))
    }

    /// Messages whose next attempt is at or before `now`, oldest first: at most [`DUE_BATCH`],
    /// and none after those holding `OUTBOX_DUE_BYTES` of bodies (reviewer s28), each body
    /// copied only when it is due; a damaged entry is logged and left out.
    fn outbox_due(&self, now: DateTime<Utc>) -> Result<Vec<OutboxItem>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for kv in self.inner.outbox.iter() {
            let (k, v) = kv?;
            let mut idb = [0u8; 8];
            idb.copy_from_slice(k.get(..8).unwrap_or(&[0; 8]));
            let id = u64::from_be_bytes(idb);
            match unframe::<Header>(&v) {
                Ok((h, _)) if h.next_attempt > now => continue,
                Ok((h, message)) => {
                    bytes = bytes.saturating_add(message.len());
                    out.push(item(id, h, message));
                }
                Err(e) => {
                    tracing::error!(id, "outbox message {id} is damaged and is not sent: {e:#}");
                    continue;
                }
            }
            if out.len() >= DUE_BATCH || bytes >= crate::store::OUTBOX_DUE_BYTES {
                break;
            }
        }
        Ok(out)
    }

    /// One node: the message is this node's while it is in the outbox.
    fn outbox_renew_claim(&self, id: u64) -> Result<bool> {
        Ok(self.inner.outbox.contains_key(id.to_be_bytes())?)
    }

    /// Every queued message.
    fn outbox_len(&self) -> Result<usize> {
        Ok(self.inner.outbox.len())
    }

    /// Removes a delivered message.
    fn outbox_mark_sent(&self, id: u64) -> Result<()> {
        self.inner.outbox.remove(id.to_be_bytes())?;
        self.flush()
    }

    /// Records a failed attempt: the message waits until `next_attempt`.
    fn outbox_narrow(&self, id: u64, recipients: &[String]) -> Result<()> {
        let Some(v) = self.inner.outbox.get(id.to_be_bytes())? else {
            bail!("outbox message {id} does not exist");
        };
        let item = decode(id, &v)?;
        let h = Header {
            recipients: recipients.to_vec(),
            attempts: item.attempts,
            next_attempt: item.next_attempt,
            last_error: item.last_error,
        };
        self.inner
            .outbox
            .insert(id.to_be_bytes(), frame(&h, &item.message)?)?;
        self.flush()
    }

    fn outbox_defer(
        &self,
        id: u64,
        next_attempt: DateTime<Utc>,
        attempts: u32,
        error: &str,
    ) -> Result<()> {
        let Some(v) = self.inner.outbox.get(id.to_be_bytes())? else {
            bail!("outbox message {id} does not exist");
        };
        let item = decode(id, &v)?;
        let h = Header {
            recipients: item.recipients,
            attempts,
            next_attempt,
            last_error: Some(error.to_string()),
        };
        self.inner
            .outbox
            .insert(id.to_be_bytes(), frame(&h, &item.message)?)?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_narrowed_message_goes_on_to_the_remaining_recipients_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let to = ["a@x.example".to_string(), "b@x.example".to_string()];
        let id = store.outbox_push(&to, b"body").unwrap();
        store.outbox_narrow(id, &to[1..]).unwrap();
        let due = store.outbox_due(Utc::now()).unwrap();
        assert_eq!(due[0].recipients, ["b@x.example"]);
        assert_eq!(due[0].message, b"body");
    }

    #[test]
    fn a_pass_takes_a_bounded_batch_and_steps_over_a_damaged_message() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let to = ["it@x.example".to_string()];
        let first = store.outbox_push(&to, b"first").unwrap();
        // A damaged entry between the others (its frame cannot be read).
        let bad = store.inner.db.generate_id().unwrap();
        store
            .inner
            .outbox
            .insert(bad.to_be_bytes(), b"\xff\xff".to_vec())
            .unwrap();
        for i in 0..150 {
            store.outbox_push(&to, format!("m{i}").as_bytes()).unwrap();
        }
        let due = store.outbox_due(Utc::now()).unwrap();
        assert_eq!(due.len(), DUE_BATCH);
        assert_eq!(
            (due[0].id, due[0].message.as_slice()),
            (first, b"first".as_slice())
        );
        assert!(due.iter().all(|m| m.id != bad));
        // Not due yet: left out without a copy of its body.
        store
            .outbox_defer(first, Utc::now() + chrono::Duration::hours(1), 1, "busy")
            .unwrap();
        assert!(store
            .outbox_due(Utc::now())
            .unwrap()
            .iter()
            .all(|m| m.id != first));
        assert!(store.outbox_renew_claim(first).unwrap());
        store.outbox_mark_sent(first).unwrap();
        assert!(!store.outbox_renew_claim(first).unwrap());
    }
}
