//! The durable mail outbox: messages wait here until delivered, across restarts.
//!
//! The mail module pushes a composed message (bytes + recipients) with [`Store::outbox_push`],
//! lists what is due with [`Store::outbox_due`], and either removes a delivered one
//! ([`Store::outbox_mark_sent`]) or defers it ([`Store::outbox_defer`]).

use super::Store;
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: u64,
    pub recipients: Vec<String>,
    /// The complete RFC 5322 message.
    pub message: Vec<u8>,
    /// Delivery attempts so far.
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
    pub last_error: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    recipients: Vec<String>,
    attempts: u32,
    next_attempt: DateTime<Utc>,
    last_error: Option<String>,
}

fn encode(h: &Header, message: &[u8]) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(h)?;
    let mut out = Vec::with_capacity(4 + json.len() + message.len());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(message);
    Ok(out)
}

fn decode(id: u64, v: &[u8]) -> Result<OutboxItem> {
    let Some(len) = v.get(..4) else {
        bail!("outbox message {id} is damaged");
    };
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let Some(json) = v.get(4..4 + len) else {
        bail!("outbox message {id} is damaged");
    };
    let h: Header = serde_json::from_slice(json).context("an outbox header is damaged")?;
    Ok(OutboxItem {
        id,
        recipients: h.recipients,
        message: v[4 + len..].to_vec(),
        attempts: h.attempts,
        next_attempt: h.next_attempt,
        last_error: h.last_error,
    })
}

impl Store {
    /// Queues a message for delivery now; returns its id. Flushed on return.
    pub fn outbox_push(&self, recipients: &[String], message: &[u8]) -> Result<u64> {
        let id = self.inner.db.generate_id()?;
        let h = Header {
            recipients: recipients.to_vec(),
            attempts: 0,
            next_attempt: Utc::now(),
            last_error: None,
        };
        self.inner
            .outbox
            .insert(id.to_be_bytes(), encode(&h, message)?)
            .context("cannot write the mail outbox")?;
        self.flush()?;
        Ok(id)
    }

    /// Messages whose next attempt is at or before `now`, oldest first.
    pub fn outbox_due(&self, now: DateTime<Utc>) -> Result<Vec<OutboxItem>> {
        let mut out = Vec::new();
        for kv in self.inner.outbox.iter() {
            let (k, v) = kv?;
            let mut idb = [0u8; 8];
            idb.copy_from_slice(k.get(..8).unwrap_or(&[0; 8]));
            let item = decode(u64::from_be_bytes(idb), &v)?;
            if item.next_attempt <= now {
                out.push(item);
            }
        }
        Ok(out)
    }

    /// Every queued message.
    pub fn outbox_len(&self) -> usize {
        self.inner.outbox.len()
    }

    /// Removes a delivered message.
    pub fn outbox_mark_sent(&self, id: u64) -> Result<()> {
        self.inner.outbox.remove(id.to_be_bytes())?;
        self.flush()
    }

    /// Records a failed attempt: the message waits until `next_attempt`.
    pub fn outbox_defer(
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
            .insert(id.to_be_bytes(), encode(&h, &item.message)?)?;
        self.flush()
    }
}
