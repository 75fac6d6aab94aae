//! An import's staged rows on PostgreSQL (`roster.staged_rows`, unlogged): what
//! `Directory::stage_bucket` writes and the commit applies (`directory.rs` owns the seam).
//!
//! Data enters as a staged packed bucket and the bucket's committed rows, and leaves as rows of
//! `staged_rows` (one binary COPY per bucket: a changed or new row with its typed columns, a
//! removed key with `record` NULL, and the generation's marker row), which [`apply_staged`]
//! moves into `user_rows` inside the commit's transaction.
//!
//! **The bucket the engine just read.** The engine reads a bucket (`Directory::bucket`) and then
//! stages its new content from the same thread. [`remember_read`] keeps that read (the packed
//! bucket and its generation) in a one-slot thread-local, and `stage_bucket` takes it back
//! ([`take_read`]) instead of reading the bucket's rows again, when the bucket's generation in
//! `bucket_gens` is still the one read (every writer of a bucket's rows replaces its
//! generation, so an equal generation means equal rows). Memory: one bucket per thread that
//! read one, replaced by the next read.

use super::rows::{null_values, typed_column_types, TypedRow, TYPED_COLUMNS};
use crate::model::packed::{bucket_entries, UserRec};
use anyhow::{anyhow, Context, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Transaction;

/// The `status` of a staged generation's marker row (never a user's status).
pub(super) const MARKER: &str = "staged";

/// A row a staged bucket writes (`Some`: its projection and record) or removes (`None`).
pub(super) struct StagedRow {
    key: String,
    row: Option<TypedRow>,
}

/// One bucket as `Directory::bucket` read it on this thread.
struct LastRead {
    store: u64,
    tenant: String,
    bucket: u16,
    gen: u64,
    packed: Option<Vec<u8>>,
}

thread_local! {
    static LAST_READ: RefCell<Option<LastRead>> = const { RefCell::new(None) };
}

/// Keeps the bucket this thread just read (generation `gen`, `packed` None when empty) for the
/// `stage_bucket` that may follow; replaces what the thread kept before.
pub(super) fn remember_read(
    store: u64,
    tenant: &str,
    bucket: u16,
    gen: u64,
    packed: Option<&[u8]>,
) {
    LAST_READ.with(|slot| {
        *slot.borrow_mut() = Some(LastRead {
            store,
            tenant: tenant.to_string(),
            bucket,
            gen,
            packed: packed.map(<[u8]>::to_vec),
        });
    });
}

/// The bucket this thread last read, if it was `bucket` of `tenant` in `store`: (generation,
/// packed content). Empties the slot.
pub(super) fn take_read(store: u64, tenant: &str, bucket: u16) -> Option<(u64, Option<Vec<u8>>)> {
    LAST_READ.with(|slot| {
        let kept = slot.borrow_mut().take()?;
        (kept.store == store && kept.tenant == tenant && kept.bucket == bucket)
            .then_some((kept.gen, kept.packed))
    })
}

/// What differs between the staged bucket `entries` and the committed bucket `committed`
/// (packed): rows to write (new or changed, projected) and keys to remove.
pub(super) fn differences(
    tenant: &str,
    entries: Vec<(&[u8], &[u8])>,
    committed: Option<&[u8]>,
) -> Result<Vec<StagedRow>> {
    let mut old: HashMap<&[u8], &[u8]> = match committed {
        Some(blob) => bucket_entries(blob)
            .with_context(|| format!("a stored bucket of tenant {tenant} is damaged"))?
            .into_iter()
            .collect(),
        None => HashMap::new(),
    };
    let mut staged = Vec::new();
    for (k, v) in entries {
        let key = std::str::from_utf8(k)
            .map_err(|_| anyhow!("a staged user key of tenant {tenant} is not UTF-8"))?;
        if old.remove(k).is_some_and(|was| was == v) {
            continue;
        }
        let rec = UserRec::decode(v)?;
        staged.push(StagedRow {
            key: key.to_string(),
            row: Some(TypedRow::from_rec(&rec, v.to_vec())),
        });
    }
    for k in old.into_keys() {
        let key = std::str::from_utf8(k)
            .map_err(|_| anyhow!("a stored user key of tenant {tenant} is not UTF-8"))?;
        staged.push(StagedRow {
            key: key.to_string(),
            row: None,
        });
    }
    Ok(staged)
}

/// Writes the marker and `staged` into `staged_rows` under generation `gen` with one binary
/// COPY.
pub(super) async fn copy_staged(
    client: &tokio_postgres::Client,
    gen: i64,
    node: &str,
    tenant: &str,
    bucket: i16,
    staged: &[StagedRow],
) -> Result<()> {
    let statement = format!(
        "COPY roster.staged_rows (gen, node_id, tenant, key, bucket, {}) FROM STDIN (FORMAT binary)",
        TYPED_COLUMNS.join(", ")
    );
    let sink = client.copy_in(&statement).await?;
    let mut types = vec![Type::INT8, Type::TEXT, Type::TEXT, Type::TEXT, Type::INT2];
    types.extend(typed_column_types());
    let writer = BinaryCopyInWriter::new(sink, &types);
    tokio::pin!(writer);
    let nulls = null_values();
    let mut marker: Vec<&(dyn ToSql + Sync)> = vec![&gen, &node, &tenant, &"", &bucket, &MARKER];
    marker.extend(nulls.iter().skip(1).copied());
    writer.as_mut().write(&marker).await?;
    for s in staged {
        let mut values: Vec<&(dyn ToSql + Sync)> = vec![&gen, &node, &tenant, &s.key, &bucket];
        match &s.row {
            Some(row) => values.extend(row.values()),
            None => values.extend(nulls.iter().copied()),
        }
        writer.as_mut().write(&values).await?;
    }
    writer
        .finish()
        .await
        .context("cannot stage a bucket in the store")?;
    Ok(())
}

/// Writes the rows the staged generations `gens` hold into `user_rows`, removes the keys they
/// remove, and forgets them. A tenant without a partition gets one made from these rows
/// (`partitions::create_filled`, its indexes built in bulk). Into an existing partition the
/// rows go in in key order: the primary key and the indexes that follow the key (in files that
/// number their users) then grow at their right end, which measured a tenth faster than the
/// staging order.
pub(super) async fn apply_staged(tx: &Transaction<'_>, tenant: &str, gens: &[i64]) -> Result<u64> {
    if gens.is_empty() {
        return Ok(0);
    }
    let (table, exists) =
        super::partitions::table_of(tx, super::partitions::Partitioned::UserRows, tenant).await?;
    if !exists {
        let written = super::partitions::create_filled(tx, tenant, &table, gens).await?;
        forget_staged(tx, gens).await?;
        return Ok(written);
    }
    let columns = TYPED_COLUMNS.join(", ");
    let updates = TYPED_COLUMNS
        .iter()
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let upsert = format!(
        "INSERT INTO roster.user_rows (tenant, key, bucket, {columns}) \
         SELECT tenant, key, bucket, {columns} FROM roster.staged_rows \
         WHERE gen = ANY($1) AND tenant = $2 AND record IS NOT NULL ORDER BY key \
         ON CONFLICT (tenant, key) DO UPDATE SET bucket = EXCLUDED.bucket, {updates}"
    );
    let written = tx.execute(&upsert, &[&gens, &tenant]).await?;
    let removed = tx
        .execute(
            "DELETE FROM roster.user_rows u USING roster.staged_rows s \
             WHERE s.gen = ANY($1) AND s.tenant = $2 AND s.record IS NULL AND s.status IS NULL \
             AND u.tenant = s.tenant AND u.key = s.key",
            &[&gens, &tenant],
        )
        .await?;
    forget_staged(tx, gens).await?;
    Ok(written + removed)
}

/// Deletes the staged rows of the generations `gens` (applied by the caller's transaction).
async fn forget_staged(tx: &Transaction<'_>, gens: &[i64]) -> Result<()> {
    tx.execute(
        "DELETE FROM roster.staged_rows WHERE gen = ANY($1)",
        &[&gens],
    )
    .await?;
    Ok(())
}
