//! The [`ChangeLog`] seam on sled (issue 12; docs/delivery.md): the change log, the event log
//! and the delivery cursors of each tenant, and the part of a commit that publishes them.
//!
//! Changes enter staged, one sealed chunk per staged bucket generation
//! ([`Directory::stage_changes`](crate::store::Directory::stage_changes)); a commit publishes a
//! chunk by giving it its first `seq` in an index entry, inside the commit's transaction
//! ([`publish`]), so a commit of a million changes writes about a thousand small index entries,
//! never a million values in one transaction. Events are written one value each by the same
//! transaction. Entries leave through [`ChangeLog`] in `seq` order; a chunk is read whole (one
//! bucket's changes) and cut to the caller's `after` and `limit`.
//!
//! Tree `changes` (tenant ids never contain `\0`):
//!
//! | key | value |
//! |---|---|
//! | `\x01<tenant>\0<bucket u16 BE><gen u64 BE>` | staging marker: the chunk's change count (u64 BE); removed by the commit |
//! | `<tenant>\0d<bucket u16 BE><gen u64 BE>` | a chunk: JSON list of `PendingChange`, sealed (`seal`) |
//! | `<tenant>\0s<first seq u64 BE>` | JSON [`ChunkRef`]: a published chunk and its `seq`s |
//! | `<tenant>\0k<bucket u16 BE><first seq u64 BE>` | empty: the published chunks of one bucket (one user's history) |
//! | `<tenant>\0e<seq u64 BE>` | JSON [`Event`] |
//! | `<tenant>\0n` | the last change `seq` then the last event `seq` (u64 BE each) |
//!
//! Cursors: tree `cursors`, key `<tenant>\0<consumer>`, JSON [`Cursor`].

use super::{seal, tkey, SledStore};
use crate::model::bucket::bucket_of;
use crate::model::changelog::{
    events_for, Cursor, Event, LoggedChange, PendingChange, PendingEvent,
};
use crate::model::ImportRecord;
use crate::store::ChangeLog;
use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

/// A published chunk: which staged chunk holds its changes, and when and by what it was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ChunkRef {
    bucket: u16,
    gen: u64,
    count: u64,
    at: DateTime<Utc>,
    import_id: Option<String>,
}

fn bucket_gen(tag: &[u8], bucket: u16, gen: u64) -> Vec<u8> {
    let mut rest = tag.to_vec();
    rest.extend_from_slice(&bucket.to_be_bytes());
    rest.extend_from_slice(&gen.to_be_bytes());
    rest
}

pub(super) fn marker_key(tenant: &str, bucket: u16, gen: u64) -> Vec<u8> {
    let mut k = vec![1u8];
    k.extend_from_slice(&tkey(tenant, &bucket_gen(b"", bucket, gen)));
    k
}

pub(super) fn chunk_key(tenant: &str, bucket: u16, gen: u64) -> Vec<u8> {
    tkey(tenant, &bucket_gen(b"d", bucket, gen))
}

fn seq_key(tenant: &str, tag: &[u8], seq: u64) -> Vec<u8> {
    let mut rest = tag.to_vec();
    rest.extend_from_slice(&seq.to_be_bytes());
    tkey(tenant, &rest)
}

fn by_bucket_key(tenant: &str, bucket: u16, seq: u64) -> Vec<u8> {
    tkey(tenant, &bucket_gen(b"k", bucket, seq))
}

fn counters_key(tenant: &str) -> Vec<u8> {
    tkey(tenant, b"n")
}

/// The u64 at the end of a key or value (big-endian); 0 when it is too short.
fn tail_u64(bytes: &[u8]) -> u64 {
    let Some(start) = bytes.len().checked_sub(8) else {
        return 0;
    };
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[start..]);
    u64::from_be_bytes(b)
}

/// The first key after every key that starts with `prefix` (prefixes here never end in 0xFF).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last = last.saturating_add(1);
    }
    end
}

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<anyhow::Error>>;

fn abort(e: impl std::fmt::Display) -> ConflictableTransactionError<anyhow::Error> {
    ConflictableTransactionError::Abort(anyhow!("{e}"))
}

/// What a commit publishes: inside its transaction on tree `changes`, numbers the chunks staged
/// for `buckets` (in that order) and writes the events of `record` and those changes.
pub(super) fn publish(
    tx: &TransactionalTree,
    tenant: &str,
    buckets: &[(u16, u64)],
    record: Option<&ImportRecord>,
    at: DateTime<Utc>,
) -> TxResult<()> {
    // Microseconds, as PostgreSQL keeps times: both backends (and a copy) agree.
    let at = at.trunc_subsecs(6);
    let ckey = counters_key(tenant);
    let (mut last_change, mut last_event) = match tx.get(&ckey)? {
        Some(v) if v.len() == 16 => (tail_u64(&v[..8]), tail_u64(&v)),
        Some(_) => {
            return Err(abort(format!(
                "the log counters of tenant {tenant} are damaged"
            )))
        }
        None => (0, 0),
    };
    let first = last_change + 1;
    for &(bucket, gen) in buckets {
        if gen == 0 {
            continue;
        }
        let Some(count) = tx.remove(marker_key(tenant, bucket, gen))? else {
            continue;
        };
        let count = tail_u64(&count);
        let seq = last_change + 1;
        let chunk = ChunkRef {
            bucket,
            gen,
            count,
            at,
            import_id: record.map(|r| r.id.clone()),
        };
        tx.insert(
            seq_key(tenant, b"s", seq),
            serde_json::to_vec(&chunk).map_err(abort)?,
        )?;
        tx.insert(by_bucket_key(tenant, bucket, seq), &[][..])?;
        last_change += count;
    }
    let range = (last_change >= first).then_some((first, last_change));
    for PendingEvent {
        kind,
        import_id,
        changes,
    } in events_for(record, range)
    {
        last_event += 1;
        let event = Event {
            seq: last_event,
            at,
            kind,
            import_id,
            changes,
        };
        let json = serde_json::to_vec(&event).map_err(abort)?;
        tx.insert(seq_key(tenant, b"e", last_event), json)?;
    }
    let mut counters = last_change.to_be_bytes().to_vec();
    counters.extend_from_slice(&last_event.to_be_bytes());
    tx.insert(ckey, counters)?;
    Ok(())
}

impl SledStore {
    /// Writes a staged chunk (marker first, so a crash never leaves a chunk unmarked).
    pub(super) fn stage_chunk(
        &self,
        tenant: &str,
        bucket: u16,
        gen: u64,
        changes: &[PendingChange],
    ) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let json = serde_json::to_vec(changes)?;
        let tree = &self.inner.changes;
        tree.insert(
            marker_key(tenant, bucket, gen),
            &(changes.len() as u64).to_be_bytes()[..],
        )
        .context("cannot write to the store")?;
        tree.insert(chunk_key(tenant, bucket, gen), seal::seal_bucket(&json))
            .context("cannot write to the store")?;
        Ok(())
    }

    /// Removes the staged chunk of a bucket generation, if any.
    pub(super) fn discard_chunk(&self, tenant: &str, bucket: u16, gen: u64) -> Result<()> {
        if self
            .inner
            .changes
            .remove(marker_key(tenant, bucket, gen))?
            .is_some()
        {
            self.inner.changes.remove(chunk_key(tenant, bucket, gen))?;
        }
        Ok(())
    }

    /// Removes every staged chunk left by a run that never committed (called at open).
    pub(super) fn sweep_staged_chunks(&self) -> Result<usize> {
        let mut doomed = Vec::new();
        for kv in self.inner.changes.scan_prefix([1u8]) {
            let (k, _) = kv?;
            let mut data = k[1..].to_vec();
            let Some(sep) = data.iter().position(|&b| b == 0) else {
                continue;
            };
            data.insert(sep + 1, b'd');
            doomed.push(k.to_vec());
            doomed.push(data);
        }
        for k in &doomed {
            self.inner.changes.remove(k)?;
        }
        Ok(doomed.len() / 2)
    }

    /// The changes of a published chunk whose first `seq` is `first`.
    fn chunk_changes(
        &self,
        tenant: &str,
        first: u64,
        chunk: &ChunkRef,
    ) -> Result<Vec<LoggedChange>> {
        let Some(sealed) = self
            .inner
            .changes
            .get(chunk_key(tenant, chunk.bucket, chunk.gen))?
        else {
            return Ok(Vec::new()); // trimmed meanwhile
        };
        let json = seal::unseal_bucket(&sealed)
            .with_context(|| format!("a change-log chunk of tenant {tenant} is damaged"))?;
        let pending: Vec<PendingChange> = serde_json::from_slice(&json)
            .with_context(|| format!("a change-log chunk of tenant {tenant} is damaged"))?;
        Ok(pending
            .into_iter()
            .zip(first..)
            .map(|(p, seq)| LoggedChange {
                seq,
                at: chunk.at,
                import_id: chunk.import_id.clone(),
                key: p.key,
                kind: p.kind,
                fields: p.fields,
            })
            .collect())
    }

    fn chunk_ref(tenant: &str, value: &[u8]) -> Result<ChunkRef> {
        serde_json::from_slice(value)
            .with_context(|| format!("a change-log entry of tenant {tenant} is damaged"))
    }
}

/// Read-only listings for `roster migrate-store`, which copies the logs whole.
impl SledStore {
    /// The tenant's last change-log and event-log `seq` (0, 0 when nothing was logged).
    pub fn log_counters(&self, tenant: &str) -> Result<(u64, u64)> {
        match self.inner.changes.get(counters_key(tenant))? {
            Some(v) if v.len() == 16 => Ok((tail_u64(&v[..8]), tail_u64(&v))),
            Some(_) => Err(anyhow!("the log counters of tenant {tenant} are damaged")),
            None => Ok((0, 0)),
        }
    }
}

impl ChangeLog for SledStore {
    fn changes(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<LoggedChange>> {
        let tree = &self.inner.changes;
        let prefix = tkey(tenant, b"s");
        let want = seq_key(tenant, b"s", after.saturating_add(1));
        // The chunk holding `after + 1` starts at or before it.
        let start = match tree.range(prefix.clone()..=want.clone()).next_back() {
            Some(kv) => kv?.0.to_vec(),
            None => want,
        };
        let mut out = Vec::new();
        for kv in tree.range(start..prefix_end(&prefix)) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            let first = tail_u64(&k);
            let chunk = Self::chunk_ref(tenant, &v)?;
            if first.saturating_add(chunk.count) <= after.saturating_add(1) {
                continue;
            }
            let rest = limit - out.len();
            out.extend(
                self.chunk_changes(tenant, first, &chunk)?
                    .into_iter()
                    .filter(|c| c.seq > after)
                    .take(rest),
            );
        }
        Ok(out)
    }

    fn user_changes(&self, tenant: &str, key: &str, limit: usize) -> Result<Vec<LoggedChange>> {
        let bucket = bucket_of(key.as_bytes());
        let [hi, lo] = bucket.to_be_bytes();
        let prefix = tkey(tenant, &[b'k', hi, lo]);
        let mut out = Vec::new();
        for kv in self.inner.changes.scan_prefix(&prefix).rev() {
            if out.len() >= limit {
                break;
            }
            let (k, _) = kv?;
            let first = tail_u64(&k);
            let Some(v) = self.inner.changes.get(seq_key(tenant, b"s", first))? else {
                continue; // trimmed meanwhile
            };
            let chunk = Self::chunk_ref(tenant, &v)?;
            let mine = self.chunk_changes(tenant, first, &chunk)?;
            let rest = limit - out.len();
            out.extend(mine.into_iter().rev().filter(|c| c.key == key).take(rest));
        }
        Ok(out)
    }

    fn events(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<Event>> {
        let prefix = tkey(tenant, b"e");
        let start = seq_key(tenant, b"e", after.saturating_add(1));
        let mut out = Vec::new();
        for kv in self.inner.changes.range(start..prefix_end(&prefix)) {
            if out.len() >= limit {
                break;
            }
            let (_, v) = kv?;
            out.push(
                serde_json::from_slice(&v)
                    .with_context(|| format!("an event of tenant {tenant} is damaged"))?,
            );
        }
        Ok(out)
    }

    fn cursor(&self, tenant: &str, consumer: &str) -> Result<Cursor> {
        match self.inner.cursors.get(tkey(tenant, consumer.as_bytes()))? {
            None => Ok(Cursor::default()),
            Some(v) => serde_json::from_slice(&v)
                .with_context(|| format!("the cursor of {consumer} (tenant {tenant}) is damaged")),
        }
    }

    fn cursors(&self, tenant: &str) -> Result<Vec<(String, Cursor)>> {
        let prefix = tkey(tenant, b"");
        let mut out = Vec::new();
        for kv in self.inner.cursors.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let consumer = String::from_utf8_lossy(&k[prefix.len()..]).to_string();
            let cursor = serde_json::from_slice(&v).with_context(|| {
                format!("the cursor of {consumer} (tenant {tenant}) is damaged")
            })?;
            out.push((consumer, cursor));
        }
        Ok(out)
    }

    fn save_cursor(&self, tenant: &str, consumer: &str, cursor: &Cursor) -> Result<()> {
        let json = serde_json::to_vec(cursor)?;
        self.inner
            .cursors
            .insert(tkey(tenant, consumer.as_bytes()), json)?;
        self.inner
            .cursors
            .flush()
            .context("cannot flush the store")?;
        Ok(())
    }

    /// One process owns a sled store (sled locks its folder), and its leases are all this
    /// process's under fencing number 1 (`sled/cluster.rs`): any other number is a hold this
    /// store never gave.
    fn save_cursor_leased(
        &self,
        tenant: &str,
        consumer: &str,
        cursor: &Cursor,
        (_lease, fencing): (&str, u64),
    ) -> Result<bool> {
        if fencing != 1 {
            return Ok(false);
        }
        self.save_cursor(tenant, consumer, cursor)?;
        Ok(true)
    }

    /// Removes published chunks and events made before `before`, oldest first; the counters
    /// stay, so `seq` keeps growing.
    fn trim_changes(&self, tenant: &str, before: DateTime<Utc>) -> Result<u64> {
        let tree = &self.inner.changes;
        let mut removed = 0;
        for kv in tree.scan_prefix(tkey(tenant, b"s")) {
            let (k, v) = kv?;
            let chunk = Self::chunk_ref(tenant, &v)?;
            if chunk.at >= before {
                break;
            }
            let first = tail_u64(&k);
            tree.remove(&k)?;
            tree.remove(by_bucket_key(tenant, chunk.bucket, first))?;
            tree.remove(chunk_key(tenant, chunk.bucket, chunk.gen))?;
            removed += chunk.count;
        }
        for kv in tree.scan_prefix(tkey(tenant, b"e")) {
            let (k, v) = kv?;
            let event: Event = serde_json::from_slice(&v)
                .with_context(|| format!("an event of tenant {tenant} is damaged"))?;
            if event.at >= before {
                break;
            }
            tree.remove(&k)?;
            removed += 1;
        }
        tree.flush().context("cannot flush the store")?;
        Ok(removed)
    }
}
