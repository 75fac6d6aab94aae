//! The [`ChangeLog`] seam on PostgreSQL (issue 12; docs/delivery.md): the change log
//! (`roster.changes`), the event log (`roster.events`), delivery cursors (`roster.cursors`),
//! and the part of a commit that numbers and publishes them ([`publish`]).
//!
//! Changes enter staged with their bucket generation (`roster.staged_changes`, unlogged, one
//! row per generation holding its changes as arrays in the order staged (schema 10), tagged
//! with this node so a restart sweeps them); the commit's transaction, holding the tenant's
//! `tenant_state` row lock, numbers them from `tenant_state.change_seq` in one
//! `INSERT ... SELECT` (in the commit's bucket order, then the order staged: seq is the
//! counter plus the counts of the generations before plus the position in the arrays), writes
//! the events of `model::changelog::events_for` from `event_seq`, and advances both counters:
//! seq is per tenant, without gaps, and invisible until the commit.
//! Entries leave as `model::changelog` values.

use super::connections::Connections;
use super::partitions::{self, Partitioned};
use super::PostgresStore;
use crate::model::change::FieldChange;
use crate::model::changelog::{
    events_for, ChangeKind, Cursor, Event, EventType, LoggedChange, PendingChange,
};
use crate::model::ImportRecord;
use crate::store::ChangeLog;
use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Row, Transaction};

fn kind_str(kind: ChangeKind) -> Result<String> {
    match serde_json::to_value(kind)? {
        serde_json::Value::String(s) => Ok(s),
        other => Err(anyhow!("a change kind is not a name: {other}")),
    }
}

fn from_i64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| anyhow!("a stored {what} is negative"))
}

/// `after` of a read as the `bigint` it is compared with: a seq past `i64::MAX` is past every
/// stored one, so `seq > i64::MAX` (nothing) answers it, as sled answers (an empty page).
fn seq_bound(after: u64) -> i64 {
    i64::try_from(after).unwrap_or(i64::MAX)
}

fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| anyhow!("{v} is out of range for the store"))
}

/// The tenant's partition of the change log, as a transaction writes into it: made in that
/// transaction when the tenant has none yet, and attached (its indexes built in one pass each)
/// by [`LogTable::close`] after the transaction wrote its entries (`partitions`, module doc).
struct LogTable {
    name: String,
    made: bool,
}

impl LogTable {
    async fn open(tx: &Transaction<'_>, tenant: &str) -> Result<LogTable> {
        let (name, exists) = partitions::table_of(tx, Partitioned::Changes, tenant).await?;
        if !exists {
            partitions::create(tx, Partitioned::Changes, &name, tenant).await?;
        }
        Ok(LogTable {
            name,
            made: !exists,
        })
    }

    /// The statement that writes one entry (`$1`..`$7`: tenant, seq, at, import id, key, kind,
    /// fields) into this table.
    fn insert_one(&self) -> String {
        format!(
            "INSERT INTO roster.{} (tenant, seq, at, import_id, key, kind, fields) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            self.name
        )
    }

    async fn close(self, tx: &Transaction<'_>, tenant: &str) -> Result<()> {
        if self.made {
            partitions::attach(tx, Partitioned::Changes, &self.name, tenant).await?;
        }
        Ok(())
    }
}

/// What a commit publishes, inside its transaction `tx`, which must hold the tenant's
/// `tenant_state` row lock: the changes staged for `gens` (in that order), then `direct` (a
/// restore's change), numbered from `change_seq`; then the events of `record` and those
/// changes from `event_seq`; then both counters.
pub(super) async fn publish(
    tx: &Transaction<'_>,
    tenant: &str,
    gens: &[i64],
    direct: &[PendingChange],
    record: Option<&ImportRecord>,
) -> Result<()> {
    let at = Utc::now();
    let row = tx
        .query_one(
            "SELECT change_seq, event_seq FROM roster.tenant_state WHERE tenant = $1",
            &[&tenant],
        )
        .await?;
    let last_change = from_i64(row.try_get(0)?, "change seq")?;
    let mut last_event = from_i64(row.try_get(1)?, "event seq")?;
    let import_id = record.map(|r| r.id.clone());
    let next = log_changes(
        tx,
        tenant,
        gens,
        direct,
        last_change,
        at,
        import_id.as_deref(),
    )
    .await?;
    let range = (next > last_change).then_some((last_change + 1, next));
    let events = events_for(record, range);
    let (mut seqs, mut kinds, mut ids, mut firsts, mut lasts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for e in &events {
        last_event += 1;
        seqs.push(to_i64(last_event)?);
        kinds.push(e.kind.as_str());
        ids.push(e.import_id.clone());
        firsts.push(e.changes.map(|c| to_i64(c.0)).transpose()?);
        lasts.push(e.changes.map(|c| to_i64(c.1)).transpose()?);
    }
    if !events.is_empty() {
        tx.execute(
            "INSERT INTO roster.events (tenant, seq, at, kind, import_id, first_change, last_change) \
             SELECT $1, s, $2, k, i, f, l \
             FROM unnest($3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::bigint[]) AS u(s, k, i, f, l)",
            &[&tenant, &at, &seqs, &kinds, &ids, &firsts, &lasts],
        )
        .await
        .context("cannot write the event log")?;
    }
    tx.execute(
        "UPDATE roster.tenant_state SET change_seq = $2, event_seq = $3 WHERE tenant = $1",
        &[&tenant, &to_i64(next)?, &to_i64(last_event)?],
    )
    .await?;
    Ok(())
}

/// Writes the changes staged for `gens` (in that order), then `direct`, into the tenant's
/// change log numbered from `last + 1`; returns the last seq written (`last` when none).
async fn log_changes(
    tx: &Transaction<'_>,
    tenant: &str,
    gens: &[i64],
    direct: &[PendingChange],
    last: u64,
    at: DateTime<Utc>,
    import_id: Option<&str>,
) -> Result<u64> {
    if gens.is_empty() && direct.is_empty() {
        return Ok(last);
    }
    let log = LogTable::open(tx, tenant).await?;
    let mut next = last;
    if !gens.is_empty() {
        next += publish_staged(tx, tenant, &log.name, gens, next, at, import_id).await?;
    }
    let insert = log.insert_one();
    for change in direct {
        next += 1;
        tx.execute(
            &insert,
            &[
                &tenant,
                &to_i64(next)?,
                &at,
                &import_id,
                &change.key,
                &kind_str(change.kind)?,
                &serde_json::to_value(&change.fields)?,
            ],
        )
        .await
        .context("cannot write the change log")?;
    }
    log.close(tx, tenant).await?;
    Ok(next)
}

/// Moves the changes staged for `gens` into the tenant's change-log `table`, numbered from
/// `last + 1` in the order of `gens`, then the order staged; returns how many. A change's seq
/// is `last`, plus the count of the generations before its own, plus its position in its
/// generation's arrays (`stage_change_rows`): no sort of the whole set, and the entries go in
/// in seq order (which keeps the inserts into the primary key at its right end).
async fn publish_staged(
    tx: &Transaction<'_>,
    tenant: &str,
    table: &str,
    gens: &[i64],
    last: u64,
    at: DateTime<Utc>,
    import_id: Option<&str>,
) -> Result<u64> {
    let counts = tx
        .query(
            "SELECT gen, cardinality(keys)::bigint FROM roster.staged_changes \
             WHERE gen = ANY($1) AND tenant = $2",
            &[&gens, &tenant],
        )
        .await?;
    let mut count_of = std::collections::HashMap::with_capacity(counts.len());
    for r in &counts {
        count_of.insert(r.try_get::<_, i64>(0)?, r.try_get::<_, i64>(1)?);
    }
    let (mut offsets, mut total) = (Vec::with_capacity(gens.len()), 0i64);
    for g in gens {
        offsets.push(total);
        total += count_of.get(g).copied().unwrap_or(0);
    }
    if total == 0 {
        return Ok(0);
    }
    tx.execute(
        &format!(
            "INSERT INTO roster.{table} (tenant, seq, at, import_id, key, kind, fields) \
             SELECT $1, $2 + o.offset_ + s.ord, $5, $6, s.key, s.kind, s.fields \
             FROM unnest($3::bigint[], $4::bigint[]) AS o(gen, offset_) \
             JOIN roster.staged_changes c ON c.gen = o.gen AND c.tenant = $1 \
             CROSS JOIN LATERAL unnest(c.keys, c.kinds, c.fields) \
                 WITH ORDINALITY AS s(key, kind, fields, ord)"
        ),
        &[&tenant, &to_i64(last)?, &gens, &offsets, &at, &import_id],
    )
    .await
    .context("cannot write the change log")?;
    tx.execute(
        "DELETE FROM roster.staged_changes WHERE gen = ANY($1)",
        &[&gens],
    )
    .await?;
    from_i64(total, "change count")
}

fn change_from_row(r: &Row) -> Result<LoggedChange> {
    let kind: String = r.try_get(4)?;
    let fields: serde_json::Value = r.try_get(5)?;
    Ok(LoggedChange {
        seq: from_i64(r.try_get(0)?, "change seq")?,
        at: r.try_get(1)?,
        import_id: r.try_get(2)?,
        key: r.try_get(3)?,
        kind: serde_json::from_value(serde_json::Value::String(kind))
            .context("a change-log entry has an unknown kind")?,
        fields: serde_json::from_value::<Vec<FieldChange>>(fields)
            .context("a change-log entry's fields are damaged")?,
    })
}

fn event_from_row(r: &Row) -> Result<Event> {
    let kind: String = r.try_get(2)?;
    let kind = EventType::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)
        .ok_or_else(|| anyhow!("an event has an unknown type {kind:?}"))?;
    let first: Option<i64> = r.try_get(4)?;
    let last: Option<i64> = r.try_get(5)?;
    let changes = match (first, last) {
        (Some(f), Some(l)) => Some((from_i64(f, "event range")?, from_i64(l, "event range")?)),
        _ => None,
    };
    Ok(Event {
        seq: from_i64(r.try_get(0)?, "event seq")?,
        at: r.try_get(1)?,
        kind,
        import_id: r.try_get(3)?,
        changes,
    })
}

const CHANGE_COLUMNS: &str = "seq, at, import_id, key, kind, fields";

impl PostgresStore {
    /// Stages the changes of a staged bucket generation (see the module doc).
    pub(super) fn stage_change_rows(
        &self,
        tenant: &str,
        _bucket: u16,
        gen: u64,
        changes: &[PendingChange],
    ) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut keys = Vec::with_capacity(changes.len());
        let mut kinds = Vec::with_capacity(changes.len());
        let mut fields = Vec::with_capacity(changes.len());
        for c in changes {
            keys.push(c.key.clone());
            kinds.push(kind_str(c.kind)?);
            fields.push(serde_json::to_value(&c.fields)?);
        }
        let (tenant, node, gen) = (tenant.to_string(), self.node_id.clone(), to_i64(gen)?);
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            client
                .execute(
                    "INSERT INTO roster.staged_changes (gen, node_id, tenant, keys, kinds, fields) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[&gen, &node, &tenant, &keys, &kinds, &fields],
                )
                .await
                .context("cannot stage the change log")?;
            Ok(())
        })
    }

    /// Removes the staged changes of abandoned generations.
    pub(super) async fn discard_change_rows(
        client: &impl GenericClient,
        tenant: &str,
        gens: &[i64],
    ) -> Result<()> {
        client
            .execute(
                "DELETE FROM roster.staged_changes WHERE tenant = $1 AND gen = ANY($2)",
                &[&tenant, &gens],
            )
            .await?;
        Ok(())
    }
}

/// What `roster migrate-store` writes beyond the traits: a tenant's logs as the old store had
/// them (the events `record_import` made while the history was copied are replaced).
impl PostgresStore {
    /// Forgets the tenant's events and change-log entries (before the copied ones go in).
    pub fn clear_logs(&self, tenant: &str) -> Result<()> {
        let tenant = tenant.to_string();
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            for table in ["changes", "events"] {
                client
                    .execute(
                        &format!("DELETE FROM roster.{table} WHERE tenant = $1"),
                        &[&tenant],
                    )
                    .await?;
            }
            Ok(())
        })
    }

    /// Writes copied change-log entries and events as they are (their `seq`s kept).
    pub fn put_logs(&self, tenant: &str, changes: &[LoggedChange], events: &[Event]) -> Result<()> {
        let tenant = tenant.to_string();
        let mut rows = Vec::with_capacity(changes.len());
        for c in changes {
            let fields = serde_json::to_value(&c.fields)?;
            rows.push((
                to_i64(c.seq)?,
                c.at,
                c.import_id.clone(),
                c.key.clone(),
                kind_str(c.kind)?,
                fields,
            ));
        }
        let mut evs = Vec::with_capacity(events.len());
        for e in events {
            let first = e.changes.map(|c| to_i64(c.0)).transpose()?;
            let last = e.changes.map(|c| to_i64(c.1)).transpose()?;
            evs.push((
                to_i64(e.seq)?,
                e.at,
                e.kind.as_str(),
                e.import_id.clone(),
                first,
                last,
            ));
        }
        self.db.run(move |pool| async move {
            let mut client = Connections::client(&pool).await?;
            let tx = client.transaction().await?;
            let log = LogTable::open(&tx, &tenant).await?;
            let insert = log.insert_one();
            for (seq, at, import_id, key, kind, fields) in &rows {
                tx.execute(&insert, &[&tenant, seq, at, import_id, key, kind, fields])
                    .await
                    .context("cannot copy the change log")?;
            }
            log.close(&tx, &tenant).await?;
            for (seq, at, kind, import_id, first, last) in &evs {
                tx.execute(
                    "INSERT INTO roster.events (tenant, seq, at, kind, import_id, first_change, last_change) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[&tenant, seq, at, kind, import_id, first, last],
                )
                .await
                .context("cannot copy the event log")?;
            }
            tx.commit().await.context("cannot copy the logs")
        })
    }

    /// Sets the tenant's last change-log and event-log `seq`.
    pub fn set_log_counters(&self, tenant: &str, change_seq: u64, event_seq: u64) -> Result<()> {
        let (tenant, c, e) = (tenant.to_string(), to_i64(change_seq)?, to_i64(event_seq)?);
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            client
                .execute(
                    "INSERT INTO roster.tenant_state (tenant, change_seq, event_seq) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant) DO UPDATE SET change_seq = EXCLUDED.change_seq, \
                     event_seq = EXCLUDED.event_seq",
                    &[&tenant, &c, &e],
                )
                .await
                .context("cannot write the log counters")?;
            Ok(())
        })
    }
}

impl ChangeLog for PostgresStore {
    fn changes(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<LoggedChange>> {
        let (tenant, after) = (tenant.to_string(), seq_bound(after));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {CHANGE_COLUMNS} FROM roster.changes WHERE tenant = $1 AND seq > $2 \
                         ORDER BY seq LIMIT $3"
                    ),
                    &[&tenant, &after, &limit],
                )
                .await
                .context("cannot read the change log")?;
            rows.iter().map(change_from_row).collect()
        })
    }

    fn user_changes(&self, tenant: &str, key: &str, limit: usize) -> Result<Vec<LoggedChange>> {
        let (tenant, key) = (tenant.to_string(), key.to_string());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {CHANGE_COLUMNS} FROM roster.changes WHERE tenant = $1 AND key = $2 \
                         ORDER BY seq DESC LIMIT $3"
                    ),
                    &[&tenant, &key, &limit],
                )
                .await
                .context("cannot read the change log")?;
            rows.iter().map(change_from_row).collect()
        })
    }

    fn events(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<Event>> {
        let (tenant, after) = (tenant.to_string(), seq_bound(after));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let rows = client
                .query(
                    "SELECT seq, at, kind, import_id, first_change, last_change FROM roster.events \
                     WHERE tenant = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    &[&tenant, &after, &limit],
                )
                .await
                .context("cannot read the event log")?;
            rows.iter().map(event_from_row).collect()
        })
    }

    fn cursor(&self, tenant: &str, consumer: &str) -> Result<Cursor> {
        let (tenant, consumer) = (tenant.to_string(), consumer.to_string());
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let row = client
                .query_opt(
                    "SELECT cursor FROM roster.cursors WHERE tenant = $1 AND consumer = $2",
                    &[&tenant, &consumer],
                )
                .await
                .context("cannot read a delivery cursor")?;
            match row {
                None => Ok(Cursor::default()),
                Some(r) => serde_json::from_value(r.try_get(0)?).with_context(|| {
                    format!("the cursor of {consumer} (tenant {tenant}) is damaged")
                }),
            }
        })
    }

    fn cursors(&self, tenant: &str) -> Result<Vec<(String, Cursor)>> {
        let tenant = tenant.to_string();
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let rows = client
                .query(
                    "SELECT consumer, cursor FROM roster.cursors WHERE tenant = $1 \
                     ORDER BY consumer COLLATE \"C\"",
                    &[&tenant],
                )
                .await
                .context("cannot read the delivery cursors")?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let consumer: String = r.try_get(0)?;
                let cursor = serde_json::from_value(r.try_get(1)?).with_context(|| {
                    format!("the cursor of {consumer} (tenant {tenant}) is damaged")
                })?;
                out.push((consumer, cursor));
            }
            Ok(out)
        })
    }

    fn save_cursor(&self, tenant: &str, consumer: &str, cursor: &Cursor) -> Result<()> {
        let (tenant, consumer) = (tenant.to_string(), consumer.to_string());
        let json = serde_json::to_value(cursor)?;
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            client
                .execute(
                    "INSERT INTO roster.cursors (tenant, consumer, cursor) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant, consumer) DO UPDATE SET cursor = EXCLUDED.cursor",
                    &[&tenant, &consumer, &json],
                )
                .await
                .context("cannot write a delivery cursor")?;
            Ok(())
        })
    }

    fn save_cursor_leased(
        &self,
        tenant: &str,
        consumer: &str,
        cursor: &Cursor,
        (lease, fencing): (&str, u64),
    ) -> Result<bool> {
        let (tenant, consumer, lease) =
            (tenant.to_string(), consumer.to_string(), lease.to_string());
        let json = serde_json::to_value(cursor)?;
        let holder = self.lease_holder();
        let fencing = i64::try_from(fencing).unwrap_or(i64::MAX);
        self.db.run(move |pool| async move {
            let mut client = Connections::client(&pool).await?;
            let tx = client.transaction().await?;
            if !super::fencing::held_under(&tx, &lease, &holder, fencing).await? {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO roster.cursors (tenant, consumer, cursor) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant, consumer) DO UPDATE SET cursor = EXCLUDED.cursor",
                &[&tenant, &consumer, &json],
            )
            .await
            .context("cannot write a delivery cursor")?;
            tx.commit()
                .await
                .context("cannot write a delivery cursor")?;
            Ok(true)
        })
    }

    /// Removes change-log and event entries made before `before`; the counters stay. What goes
    /// is always a first run of `seq`: the entries before the first one made at or after
    /// `before`. Entries carry the time of the node that committed them, and nodes' clocks
    /// differ a little, so `at` need not grow with `seq`; deleting by `at` alone could remove
    /// N+1 and keep N, a gap a reader would see (review of 2026-11-30, PostgreSQL F6).
    fn trim_changes(&self, tenant: &str, before: DateTime<Utc>) -> Result<u64> {
        let tenant = tenant.to_string();
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let mut removed = 0;
            for table in ["changes", "events"] {
                removed += client
                    .execute(
                        &format!(
                            "DELETE FROM roster.{table} WHERE tenant = $1 AND seq < coalesce(\
                             (SELECT min(seq) FROM roster.{table} WHERE tenant = $1 AND at >= $2), \
                             (SELECT max(seq) + 1 FROM roster.{table} WHERE tenant = $1))"
                        ),
                        &[&tenant, &before],
                    )
                    .await
                    .context("cannot trim the change log")?;
            }
            Ok(removed)
        })
    }
}
