//! The row pass: the calling thread reads CSV records in batches; worker threads (one per core)
//! validate them and pack valid rows into per-bucket arenas of their own, which they hand to
//! the run's [`BucketRows`] every few megabytes (kept in memory up to a budget, else spilled).
//!
//! Data enters as a [`RowReader`] positioned after the header (it numbers the rows: blank lines
//! count, see `rownum`); the packed rows leave into the
//! [`BucketRows`], everything else as a [`RowPass`]: skip reasons and notes by row number, the
//! file's emails for the uniqueness checks, and password fingerprints. Memory stays bounded by
//! the workers' arenas, the rows' budget and a few batches in flight, plus 24 bytes an email.

use super::bounds;
use super::mapping::Mapping;
use super::record::{self, GivenPasswords, Parsed, Row, RowFingerprint, RowSeal, ROW_PRESENT_ONLY};
use super::rownum::RowReader;
use super::spill::BucketRows;
use crate::config::Tenant;
use crate::model::bucket::{bucket_of, fnv64, BUCKETS};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::mpsc;

const BATCH: usize = 2048;
/// Bytes of records (their text and 8 bytes a cell) a batch holds before it is handed on
/// whatever its count: rows near `bounds::MAX_ROW_BYTES` must not make a batch of 2048 of them.
const BATCH_BYTES: usize = 4 << 20;
/// A record larger than this (bytes, or 8 bytes a cell) is not kept for reuse once checked,
/// so a batch slot does not keep the largest row it ever held.
const KEEP_RECORD_BYTES: usize = 64 << 10;
/// Notes kept per worker (a million unknown references must not become a million strings).
pub const MAX_NOTES: usize = 100;

/// The file's emails for the uniqueness checks, in 24 bytes an email: (email hash, key hash,
/// row), sorted by email hash, one entry per email (emails given to several keys are taken
/// out as clashes). Hashes are FNV-1a 64 of the normalised text; a false clash between two
/// different emails needs a 64-bit collision.
#[derive(Default)]
pub struct FileEmails(Vec<(u64, u64, u64)>);

impl FileEmails {
    /// (key hash, row) of the row that gives the email with this hash.
    pub fn get(&self, email_hash: u64) -> Option<(u64, u64)> {
        self.0
            .binary_search_by_key(&email_hash, |e| e.0)
            .ok()
            .map(|i| (self.0[i].1, self.0[i].2))
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the row pass found.
pub struct RowPass {
    pub skips: HashMap<u64, String>,
    /// Non-fatal notes, sorted by row (at most [`MAX_NOTES`] per worker).
    pub notes: Vec<(u64, String)>,
    /// Notes left out to bound memory.
    pub notes_dropped: u64,
    /// Data rows read (blank lines and lines whose cells are all blank are not data rows).
    pub rows: u64,
    pub valid: u64,
    /// Rows whose cell count is not the header's ([`Parsed::Misshapen`]).
    pub misshapen: u64,
    /// The file ends without a line break after its last row, which may have been cut short
    /// (see [`RowReader::ends_unbroken`]; a file ending inside a quoted cell is `misshapen`).
    pub unterminated: bool,
    /// The first row giving each email (clashing ones removed).
    pub file_emails: FileEmails,
    /// Rows that give an email already given by another key in the file (row → reason).
    pub clashes: HashMap<u64, String>,
    /// (row, password fingerprint) of every valid row that gives a password (kept for a run
    /// that is held: see [`GivenPasswords`]).
    pub fingerprints: Vec<RowFingerprint>,
}

/// What every row of the pass is checked and packed with.
pub struct RowContext<'a> {
    pub map: &'a Mapping,
    pub tenant: &'a Tenant,
    /// The key of password fingerprints.
    pub secret: &'a [u8; 32],
    /// Collect the rows' emails for the uniqueness checks.
    pub check_emails: bool,
    /// Approving a held run: the passwords it kept.
    pub given: Option<&'a GivenPasswords>,
    pub seal: &'a RowSeal,
    /// The run's budget of skip reasons: the workers share its limit, and the reasons of
    /// email clashes are charged to it too.
    pub budget: &'a bounds::SkipBudget,
}

#[derive(Default)]
struct WorkerOut {
    /// Per bucket: rows packed since the last hand-over to the `BucketRows`.
    arenas: Vec<Vec<u8>>,
    /// Bytes in `arenas`.
    held: usize,
    /// The first failure to hand rows over (writing the temporary file).
    failed: Option<anyhow::Error>,
    skips: Vec<(u64, String)>,
    /// What `skips` holds in memory, as `bounds::MAX_SKIP_BYTES` counts it.
    skip_bytes: usize,
    /// `skip_bytes` passed this worker's share of `bounds::MAX_SKIP_BYTES`: it stopped.
    too_many_skips: bool,
    notes: Vec<(u64, String)>,
    notes_dropped: u64,
    valid: u64,
    misshapen: u64,
    /// (email hash, key hash, row).
    emails: Vec<(u64, u64, u64)>,
    /// Reused by `row_digest`.
    scratch: Vec<u8>,
    fingerprints: Vec<RowFingerprint>,
}

impl WorkerOut {
    /// Keeps a skipped row's reason, counted against the worker's share of the skip budget.
    fn skip(&mut self, line: u64, reason: String) {
        self.skip_bytes += reason.len() + bounds::SKIP_OVERHEAD;
        self.skips.push((line, reason));
    }
}

/// Bytes of packed rows a worker holds before handing them to the `BucketRows`.
const WORKER_HOLD: usize = 8 << 20;

/// Runs the row pass, packing rows into `rows`. `Err(sentence)` is a file-level problem (the
/// file cannot be read on).
pub fn row_pass<R: Read>(
    rdr: &mut RowReader<R>,
    cx: &RowContext<'_>,
    rows_out: &BucketRows,
    progress: Option<&(dyn Fn(u64) + Send + Sync)>,
) -> anyhow::Result<Result<RowPass, String>> {
    let workers = crate::store::cores().clamp(1, 8);
    // Each arena starts with a little more than its share of a hand-over, so it rarely grows.
    let reserve = WORKER_HOLD / BUCKETS * 5 / 4;
    let mut rows = 0u64;
    let mut read_error = None;
    let mut cut: Option<(u64, String)> = None;
    let mut outs: Vec<WorkerOut> = std::thread::scope(|s| {
        let (back_tx, back_rx) = mpsc::channel::<Vec<(u64, csv::ByteRecord)>>();
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = mpsc::sync_channel::<Vec<(u64, csv::ByteRecord)>>(2);
            senders.push(tx);
            let back = back_tx.clone();
            let batches = Batches { rx, back };
            let skip_share = cx.budget.limit() / workers;
            handles.push(s.spawn(move || worker(batches, cx, rows_out, reserve, skip_share)));
        }
        drop(back_tx);
        let mut next = 0usize;
        let mut batch: Vec<(u64, csv::ByteRecord)> = Vec::with_capacity(BATCH);
        let (mut fill, mut batch_bytes) = (0usize, 0usize);
        loop {
            if fill == batch.len() {
                batch.push((0, csv::ByteRecord::new()));
            }
            let slot = &mut batch[fill];
            let line = match rdr.read_row(&mut slot.1) {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => {
                    let after = rdr.row();
                    read_error = Some(format!("cannot read the file after row {after}: {e}"));
                    break;
                }
            };
            if rdr.cut_in_quote() {
                // The last record ends inside a quoted cell: misshapen (review s16 F6), also
                // when what arrived of it is blank (cut right after its opening quote).
                rows += 1;
                cut = Some((line, format!("row {line}: unbalanced quote: the file ends inside a quoted cell of this row, so it looks cut off (or a quote was never closed); check the quotes")));
                continue;
            }
            if slot.1.iter().all(|c| c.iter().all(u8::is_ascii_whitespace)) {
                continue;
            }
            slot.0 = line;
            batch_bytes += record_bytes(&slot.1);
            rows += 1;
            fill += 1;
            if let Some(p) = progress {
                if rows.is_multiple_of(8192) {
                    p(rows);
                }
            }
            if fill == BATCH || batch_bytes >= BATCH_BYTES {
                let mut full =
                    std::mem::replace(&mut batch, back_rx.try_recv().unwrap_or_default());
                full.truncate(fill);
                if senders[next % workers].send(full).is_err() {
                    break; // a worker stopped: too many skips
                }
                next += 1;
                (fill, batch_bytes) = (0, 0);
            }
        }
        batch.truncate(fill);
        if !batch.is_empty() {
            let _ = senders[next % workers].send(batch);
        }
        drop(senders);
        handles
            .into_iter()
            .map(|h| {
                // A worker that panicked lost rows: the run fails rather than import part.
                h.join().unwrap_or_else(|_| WorkerOut {
                    failed: Some(anyhow::anyhow!("a row pass worker failed")),
                    ..Default::default()
                })
            })
            .collect()
    });
    let skipped = outs.iter().map(|o| o.skips.len() as u64).sum();
    let charged = cx
        .budget
        .charge_rows(skipped, outs.iter().map(|o| o.skip_bytes).sum());
    if outs.iter().any(|o| o.too_many_skips) || charged.is_err() {
        let too_many = bounds::TooManySkips::new(skipped, cx.budget.limit());
        return Ok(Err(too_many.to_string()));
    }
    if let Some(e) = read_error {
        return Ok(Err(e));
    }
    if let Some(e) = outs.iter_mut().find_map(|o| o.failed.take()) {
        if e.is::<super::spill::BucketFull>() {
            return Ok(Err(e.to_string()));
        }
        return Err(e);
    }
    let unterminated = cut.is_none() && rdr.ends_unbroken();
    if let Some(skip) = cut {
        outs.push(WorkerOut {
            misshapen: 1,
            skips: vec![skip],
            ..Default::default()
        });
    }
    combine(outs, rows, rows_out, cx)
        .map(|pass| RowPass {
            unterminated,
            ..pass
        })
        .map(Ok)
        .or_else(file_level)
}

/// A run's skip budget passed ([`bounds::TooManySkips`]) is a file-level problem: its sentence
/// fails the run. Other errors stay errors.
fn file_level<T>(e: anyhow::Error) -> anyhow::Result<Result<T, String>> {
    match e.downcast_ref::<bounds::TooManySkips>() {
        Some(too_many) => Ok(Err(too_many.to_string())),
        None => Err(e),
    }
}

/// A worker's ends of the batch channels: full batches in, emptied batches back for reuse.
struct Batches {
    rx: mpsc::Receiver<Vec<(u64, csv::ByteRecord)>>,
    back: mpsc::Sender<Vec<(u64, csv::ByteRecord)>>,
}

/// One worker of the row pass: checks and packs every row of the batches it receives, handing
/// packed rows over to `rows_out` whenever it holds more than [`WORKER_HOLD`] bytes; it stops
/// once its skip reasons pass `skip_share` bytes.
fn worker(
    batches: Batches,
    cx: &RowContext<'_>,
    rows_out: &BucketRows,
    reserve: usize,
    skip_share: usize,
) -> WorkerOut {
    let mut out = WorkerOut {
        arenas: (0..BUCKETS).map(|_| Vec::with_capacity(reserve)).collect(),
        ..Default::default()
    };
    let mut notes = Vec::new();
    for mut batch in batches.rx {
        for (line, rec) in &mut batch {
            work(&mut out, &mut notes, rec, *line, cx);
            if record_bytes(rec) > KEEP_RECORD_BYTES {
                *rec = csv::ByteRecord::new();
            }
        }
        let _ = batches.back.send(batch);
        if out.skip_bytes > skip_share {
            out.too_many_skips = true;
            break; // the reader stops when it next hands this worker a batch
        }
        if out.held > WORKER_HOLD {
            hand_over(&mut out, rows_out, reserve);
        }
        if out.failed.is_some() {
            break; // the run fails: the reader stops when it next hands this worker a batch
        }
    }
    hand_over(&mut out, rows_out, 0);
    out
}

/// The pass's result from the workers' outputs: skips, notes and fingerprints together, the
/// file's email index, and the rows whose email another key of the file also gives (their
/// reasons charged to the run's skip budget: [`bounds::TooManySkips`] past it).
fn combine(
    outs: Vec<WorkerOut>,
    rows: u64,
    rows_out: &BucketRows,
    cx: &RowContext<'_>,
) -> anyhow::Result<RowPass> {
    let mut pass = RowPass {
        skips: HashMap::new(),
        notes: Vec::new(),
        notes_dropped: 0,
        rows,
        valid: 0,
        misshapen: 0,
        unterminated: false,
        file_emails: FileEmails::default(),
        clashes: HashMap::new(),
        fingerprints: Vec::new(),
    };
    let mut emails = Vec::with_capacity(outs.iter().map(|o| o.emails.len()).sum());
    for mut o in outs {
        pass.valid += o.valid;
        pass.misshapen += o.misshapen;
        pass.skips.extend(o.skips);
        pass.notes.extend(o.notes);
        pass.notes_dropped += o.notes_dropped;
        emails.append(&mut o.emails);
        pass.fingerprints.append(&mut o.fingerprints);
    }
    pass.notes.sort();
    let (file_emails, clash) = email_index(emails);
    pass.file_emails = file_emails;
    if !clash.is_empty() {
        let wanted: HashSet<u64> = clash.iter().map(|c| c.0).collect();
        let texts = email_texts(rows_out, cx.map, &wanted)?;
        let header = cx
            .map
            .email
            .and_then(|i| cx.map.cols.get(i))
            .map(|c| c.header.clone())
            .unwrap_or_default();
        for (first, lines) in clash {
            let email = texts.get(&first).map(String::as_str).unwrap_or_default();
            let list = super::bounds::listed(lines.iter().copied());
            for l in &lines {
                let reason = format!(
                    "row {l}: {header} {email:?} is given to more than one user in this file (rows {list})"
                );
                cx.budget.charge(&reason)?;
                pass.clashes.insert(*l, reason);
            }
        }
    }
    Ok(pass)
}

/// Sorts the rows' emails and splits them into the index (one row per email) and the clashes:
/// (first row, the rows in order) of an email given by more than one key. Works in place, so the
/// index costs no second copy.
fn email_index(mut all: Vec<(u64, u64, u64)>) -> (FileEmails, Vec<(u64, Vec<u64>)>) {
    all.sort_unstable_by_key(|e| (e.0, e.2));
    let mut clash = Vec::new();
    let (mut kept, mut i) = (0, 0);
    while i < all.len() {
        let (eh, k0, _) = all[i];
        let run = all[i..].iter().take_while(|e| e.0 == eh).count();
        let group = &all[i..i + run];
        if group.iter().any(|e| e.1 != k0) {
            // The first row, and every row of another key, give the email to more than one user.
            let lines: Vec<u64> = group
                .iter()
                .enumerate()
                .filter(|(n, e)| *n == 0 || e.1 != k0)
                .map(|(_, e)| e.2)
                .collect();
            clash.push((group[0].2, lines));
        } else {
            all[kept] = group[0];
            kept += 1;
        }
        i += run;
    }
    all.truncate(kept);
    all.shrink_to_fit();
    (FileEmails(all), clash)
}

/// The email text of the given rows, read back from the packed rows (only for messages).
fn email_texts(
    rows: &BucketRows,
    map: &Mapping,
    wanted: &HashSet<u64>,
) -> anyhow::Result<HashMap<u64, String>> {
    let mut out = HashMap::new();
    let Some(col) = map.email else {
        return Ok(out);
    };
    for b in 0..BUCKETS {
        for part in rows.read(b)? {
            for r in record::unpack(&part)? {
                if !wanted.contains(&r.line) || r.present_only() {
                    continue;
                }
                if let Some((_, Some(v))) = r.values()?.into_iter().find(|(c, _)| *c == col) {
                    out.insert(r.line, v.to_string());
                }
            }
        }
    }
    Ok(out)
}

/// What a record holds in memory, roughly: its text and 8 bytes a cell.
fn record_bytes(rec: &csv::ByteRecord) -> usize {
    rec.as_slice().len() + 8 * rec.len()
}

/// Hands the worker's arenas to the run's rows; new arenas start with `reserve` bytes.
fn hand_over(out: &mut WorkerOut, rows: &BucketRows, reserve: usize) {
    for (b, arena) in out.arenas.iter_mut().enumerate() {
        if arena.is_empty() {
            continue;
        }
        let mut part = std::mem::replace(arena, Vec::with_capacity(reserve));
        part.shrink_to_fit();
        if let Err(e) = rows.add(b, part) {
            out.failed.get_or_insert(e);
        }
    }
    out.held = 0;
}

fn work(
    out: &mut WorkerOut,
    notes: &mut Vec<String>,
    rec: &csv::ByteRecord,
    line: u64,
    cx: &RowContext<'_>,
) {
    let (map, tenant) = (cx.map, cx.tenant);
    match record::parse_record(rec, line, map, tenant, notes) {
        Parsed::Valid(mut r) => {
            out.valid += 1;
            let fp = match (cx.given.and_then(|g| g.get(&line)), &r.password) {
                // Approving a held run: its copy has the cell blank; the table has the rest.
                (Some(given), _) => {
                    r.password = Some(std::borrow::Cow::Borrowed(""));
                    given.fp
                }
                (None, Some(pw)) => record::password_fp(cx.secret, pw),
                (None, None) => [0; 16],
            };
            if r.password.is_some() {
                out.fingerprints.push(RowFingerprint { row: line, fp });
            }
            let digest = record::row_digest(&r, map, &tenant.import, &fp, &mut out.scratch);
            if let (true, Some(e)) = (cx.check_emails, &r.email) {
                out.emails
                    .push((fnv64(e.as_bytes()), fnv64(r.key.as_bytes()), line));
            }
            let arena = &mut out.arenas[bucket_of(r.key.as_bytes()) as usize];
            let before = arena.len();
            record::pack(arena, &r, 0, &digest, cx.seal);
            out.held += arena.len() - before;
        }
        Parsed::Skipped { key, reason } => {
            if let Some(key) = key {
                let r = Row {
                    line,
                    key,
                    ..Default::default()
                };
                let arena = &mut out.arenas[bucket_of(r.key.as_bytes()) as usize];
                let before = arena.len();
                record::pack(arena, &r, ROW_PRESENT_ONLY, &[0; 16], cx.seal);
                out.held += arena.len() - before;
            }
            out.skip(line, reason);
        }
        Parsed::Misshapen { reason } => {
            out.misshapen += 1;
            out.skip(line, reason);
        }
    }
    for n in notes.drain(..) {
        if out.notes.len() < MAX_NOTES {
            out.notes.push((line, n));
        } else {
            out.notes_dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::email_index;

    #[test]
    fn email_index_keeps_one_row_per_email_and_lists_clashes_in_row_order() {
        // (email hash, key hash, row): email 1 twice by key 10 (rows 2 and 5) and once by key
        // 20 (row 7); email 2 once; email 3 twice by the same key.
        let rows = vec![
            (1, 20, 7),
            (2, 30, 3),
            (1, 10, 5),
            (3, 40, 9),
            (1, 10, 2),
            (3, 40, 4),
        ];
        let (index, clash) = email_index(rows);
        assert_eq!(clash, vec![(2, vec![2, 7])]);
        assert_eq!(index.get(1), None);
        assert_eq!(index.get(2), Some((30, 3)));
        assert_eq!(index.get(3), Some((40, 4)));
        assert!(!index.is_empty());
    }
}
