//! The row pass: the calling thread reads CSV records in batches; worker threads (one per core)
//! validate them and pack valid rows into their own per-bucket arenas.
//!
//! Data enters as a `csv::Reader` positioned after the header; it leaves as a [`RowPass`]: the
//! arenas (one set per worker, so nothing is copied), skip reasons and notes by row number,
//! and the file's emails for the uniqueness checks. Memory stays bounded by the packed rows
//! plus a few batches in flight.

use super::row::{self, GivenPasswords, Mapping, Parsed, Row, ROW_PRESENT_ONLY};
use crate::config::Tenant;
use crate::store::{fnv64, BUCKETS};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::mpsc;

const BATCH: usize = 2048;
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
    /// `arenas[worker][bucket]`: packed rows.
    pub arenas: Vec<Vec<Vec<u8>>>,
    pub skips: HashMap<u64, String>,
    /// Non-fatal notes, sorted by row (at most [`MAX_NOTES`] per worker).
    pub notes: Vec<(u64, String)>,
    /// Notes left out to bound memory.
    pub notes_dropped: u64,
    /// Data rows read (blank lines not counted).
    pub rows: u64,
    pub valid: u64,
    /// The first row giving each email (clashing ones removed).
    pub file_emails: FileEmails,
    /// Rows that give an email already given by another key in the file (row → reason).
    pub clashes: HashMap<u64, String>,
    /// (row, password fingerprint) of every valid row that gives a password (kept for a run
    /// that is held: see [`GivenPasswords`]).
    pub fingerprints: Vec<(u64, [u8; 16])>,
}

#[derive(Default)]
struct WorkerOut {
    arenas: Vec<Vec<u8>>,
    skips: Vec<(u64, String)>,
    notes: Vec<(u64, String)>,
    notes_dropped: u64,
    valid: u64,
    /// (email hash, key hash, row).
    emails: Vec<(u64, u64, u64)>,
    /// Reused by `row_digest`.
    scratch: Vec<u8>,
    fingerprints: Vec<(u64, [u8; 16])>,
}

/// Most bytes reserved up front for one arena (see `file_bytes` in [`row_pass`]).
const MAX_ARENA_RESERVE: usize = 4 << 20;

/// Runs the row pass. `Err(sentence)` is a file-level problem (the file cannot be read on).
/// `file_bytes` (the file's size) sizes the arenas up front: packed rows take about 1.6 times
/// the text, so each arena reserves twice its share of the file; they are not grown by
/// doubling (which leaves the freed halves resident) and are trimmed at the end.
#[allow(clippy::too_many_arguments)]
pub fn row_pass<R: Read>(
    rdr: &mut csv::Reader<R>,
    map: &Mapping,
    tenant: &Tenant,
    secret: &[u8; 32],
    check_emails: bool,
    file_bytes: u64,
    given: Option<&GivenPasswords>,
    progress: Option<&(dyn Fn(u64) + Send + Sync)>,
) -> anyhow::Result<Result<RowPass, String>> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let reserve = usize::try_from(file_bytes)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        / (BUCKETS * workers);
    let reserve = reserve.min(MAX_ARENA_RESERVE);
    let mut rows = 0u64;
    let mut read_error = None;
    let outs: Vec<WorkerOut> = std::thread::scope(|s| {
        let (back_tx, back_rx) = mpsc::channel::<Vec<(u64, csv::ByteRecord)>>();
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = mpsc::sync_channel::<Vec<(u64, csv::ByteRecord)>>(2);
            senders.push(tx);
            let back = back_tx.clone();
            handles.push(s.spawn(move || {
                let mut out = WorkerOut {
                    arenas: (0..BUCKETS).map(|_| Vec::with_capacity(reserve)).collect(),
                    ..Default::default()
                };
                let mut notes = Vec::new();
                for batch in rx {
                    for (line, rec) in &batch {
                        work(
                            &mut out,
                            &mut notes,
                            rec,
                            *line,
                            map,
                            tenant,
                            secret,
                            check_emails,
                            given,
                        );
                    }
                    let _ = back.send(batch);
                }
                out
            }));
        }
        drop(back_tx);
        let mut line = 1u64;
        let mut next = 0usize;
        let mut batch: Vec<(u64, csv::ByteRecord)> = Vec::with_capacity(BATCH);
        let mut fill = 0usize;
        loop {
            if fill == batch.len() {
                batch.push((0, csv::ByteRecord::new()));
            }
            let slot = &mut batch[fill];
            match rdr.read_byte_record(&mut slot.1) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    read_error = Some(format!("cannot read the file after row {line}: {e}"));
                    break;
                }
            }
            line += 1;
            if slot.1.iter().all(|c| c.iter().all(u8::is_ascii_whitespace)) {
                continue;
            }
            slot.0 = line;
            fill += 1;
            rows += 1;
            if let Some(p) = progress {
                if rows.is_multiple_of(8192) {
                    p(rows);
                }
            }
            if fill == BATCH {
                let full = std::mem::replace(&mut batch, back_rx.try_recv().unwrap_or_default());
                if senders[next % workers].send(full).is_err() {
                    break;
                }
                next += 1;
                fill = 0;
            }
        }
        batch.truncate(fill);
        if !batch.is_empty() {
            let _ = senders[next % workers].send(batch);
        }
        drop(senders);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    if let Some(e) = read_error {
        return Ok(Err(e));
    }
    let mut pass = RowPass {
        arenas: Vec::with_capacity(outs.len()),
        skips: HashMap::new(),
        notes: Vec::new(),
        notes_dropped: 0,
        rows,
        valid: 0,
        file_emails: FileEmails::default(),
        clashes: HashMap::new(),
        fingerprints: Vec::new(),
    };
    let mut emails = Vec::with_capacity(outs.iter().map(|o| o.emails.len()).sum());
    for mut o in outs {
        pass.valid += o.valid;
        pass.skips.extend(o.skips);
        pass.notes.extend(o.notes);
        pass.notes_dropped += o.notes_dropped;
        emails.append(&mut o.emails);
        pass.fingerprints.append(&mut o.fingerprints);
        let mut arenas = o.arenas;
        for a in &mut arenas {
            a.shrink_to_fit();
        }
        pass.arenas.push(arenas);
    }
    pass.notes.sort();
    let (file_emails, clash) = email_index(emails);
    pass.file_emails = file_emails;
    if !clash.is_empty() {
        let wanted: HashSet<u64> = clash.iter().map(|c| c.0).collect();
        let texts = email_texts(&pass.arenas, map, &wanted)?;
        let header = map
            .email
            .and_then(|i| map.cols.get(i))
            .map(|c| c.header.clone())
            .unwrap_or_default();
        for (first, lines) in clash {
            let email = texts.get(&first).map(String::as_str).unwrap_or_default();
            let list: Vec<String> = lines.iter().map(u64::to_string).collect();
            for l in &lines {
                pass.clashes.insert(
                    *l,
                    format!(
                        "row {l}: {header} {email:?} is given to more than one user in this file (rows {})",
                        list.join(", ")
                    ),
                );
            }
        }
    }
    Ok(Ok(pass))
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
    arenas: &[Vec<Vec<u8>>],
    map: &Mapping,
    wanted: &HashSet<u64>,
) -> anyhow::Result<HashMap<u64, String>> {
    let mut out = HashMap::new();
    let Some(col) = map.email else {
        return Ok(out);
    };
    for arena in arenas.iter().flatten() {
        for r in row::unpack(arena)? {
            if !wanted.contains(&r.line) || r.present_only() {
                continue;
            }
            if let Some((_, Some(v))) = r.values()?.into_iter().find(|(c, _)| *c == col) {
                out.insert(r.line, v.to_string());
            }
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn work(
    out: &mut WorkerOut,
    notes: &mut Vec<String>,
    rec: &csv::ByteRecord,
    line: u64,
    map: &Mapping,
    tenant: &Tenant,
    secret: &[u8; 32],
    check_emails: bool,
    given: Option<&GivenPasswords>,
) {
    match row::parse_record(rec, line, map, tenant, notes) {
        Parsed::Valid(mut r) => {
            out.valid += 1;
            let fp = match (given.and_then(|g| g.get(&line)), &r.password) {
                // Approving a held run: its copy has the cell blank; the table has the rest.
                (Some((fp, _)), _) => {
                    r.password = Some(std::borrow::Cow::Borrowed(""));
                    *fp
                }
                (None, Some(pw)) => row::password_fp(secret, pw),
                (None, None) => [0; 16],
            };
            if r.password.is_some() {
                out.fingerprints.push((line, fp));
            }
            let digest = row::row_digest(&r, map, &tenant.import, &fp, &mut out.scratch);
            if let (true, Some(e)) = (check_emails, &r.email) {
                out.emails
                    .push((fnv64(e.as_bytes()), fnv64(r.key.as_bytes()), line));
            }
            row::pack(&mut out.arenas[row::bucket_of(&r.key)], &r, 0, &digest);
        }
        Parsed::Skipped { key, reason } => {
            if let Some(key) = key {
                let r = Row {
                    line,
                    key,
                    ..Default::default()
                };
                row::pack(
                    &mut out.arenas[row::bucket_of(&r.key)],
                    &r,
                    ROW_PRESENT_ONLY,
                    &[0; 16],
                );
            }
            out.skips.push((line, reason));
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
