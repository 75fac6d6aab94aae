//! The row pass: the calling thread reads CSV records in batches; worker threads (one per core)
//! validate them and pack valid rows into their own per-bucket arenas.
//!
//! Data enters as a `csv::Reader` positioned after the header; it leaves as a [`RowPass`]: the
//! arenas (one set per worker, so nothing is copied), skip reasons and notes by row number,
//! and the file's emails for the uniqueness checks. Memory stays bounded by the packed rows
//! plus a few batches in flight.

use super::row::{self, Mapping, Parsed, Row, ROW_PRESENT_ONLY};
use crate::config::Tenant;
use crate::store::{fnv64, BUCKETS};
use std::collections::HashMap;
use std::io::Read;
use std::sync::mpsc;

const BATCH: usize = 2048;
/// Notes kept per worker (a million unknown references must not become a million strings).
pub const MAX_NOTES: usize = 100;

/// A hasher for keys that are already hashes (FNV-1a of an email): one multiply, no SipHash.
#[derive(Default, Clone, Copy)]
pub struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// email hash → (key hash, row).
pub type EmailMap = HashMap<u64, (u64, u64), std::hash::BuildHasherDefault<PreHashed>>;

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
    /// email hash → (key hash, row) of the first row giving that email (clashing ones removed).
    pub file_emails: EmailMap,
    /// Rows that give an email already given by another key in the file (row → reason).
    pub clashes: HashMap<u64, String>,
}

#[derive(Default)]
struct WorkerOut {
    arenas: Vec<Vec<u8>>,
    skips: Vec<(u64, String)>,
    notes: Vec<(u64, String)>,
    notes_dropped: u64,
    valid: u64,
    /// (email hash, key hash, row, offset and length of the email in `email_text`).
    emails: Vec<(u64, u64, u64, u32, u32)>,
    email_text: Vec<u8>,
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
        file_emails: EmailMap::default(),
        clashes: HashMap::new(),
    };
    let emails: usize = outs.iter().map(|o| o.emails.len()).sum();
    pass.file_emails.reserve(emails);
    let mut clash: HashMap<u64, (String, Vec<u64>)> = HashMap::new();
    for o in outs {
        pass.valid += o.valid;
        pass.skips.extend(o.skips);
        pass.notes.extend(o.notes);
        pass.notes_dropped += o.notes_dropped;
        for (eh, kh, line, off, len) in o.emails {
            match pass.file_emails.get(&eh) {
                Some(&(k0, l0)) if k0 != kh => {
                    let text = o
                        .email_text
                        .get(off as usize..(off + len) as usize)
                        .map(|b| String::from_utf8_lossy(b).to_string())
                        .unwrap_or_default();
                    let c = clash.entry(eh).or_insert_with(|| (text, vec![l0]));
                    c.1.push(line);
                }
                Some(_) => {}
                None => {
                    pass.file_emails.insert(eh, (kh, line));
                }
            }
        }
        let mut arenas = o.arenas;
        for a in &mut arenas {
            a.shrink_to_fit();
        }
        pass.arenas.push(arenas);
    }
    pass.notes.sort();
    let header = map
        .email
        .and_then(|i| map.cols.get(i))
        .map(|c| c.header.clone())
        .unwrap_or_default();
    for (eh, (email, mut lines)) in clash {
        pass.file_emails.remove(&eh);
        lines.sort_unstable();
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
    Ok(Ok(pass))
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
) {
    match row::parse_record(rec, line, map, tenant, notes) {
        Parsed::Valid(r) => {
            out.valid += 1;
            let fp = match &r.password {
                Some(pw) => row::password_fp(secret, pw),
                None => [0; 16],
            };
            let digest = row::row_digest(&r, map, &tenant.import, &fp);
            if let (true, Some(e)) = (check_emails, &r.email) {
                let off = out.email_text.len() as u32;
                out.email_text.extend_from_slice(e.as_bytes());
                out.emails.push((
                    fnv64(e.as_bytes()),
                    fnv64(r.key.as_bytes()),
                    line,
                    off,
                    e.len() as u32,
                ));
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
