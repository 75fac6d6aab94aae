//! From CSV records to normalised rows: validating each cell through the field table, and
//! packing valid rows compactly into per-bucket arenas (and reading them back).
//!
//! Data enters as one `csv::ByteRecord` at a time with the header's [`Mapping`] (see
//! `mapping`); it leaves, per row, as either a packed row in its bucket's arena or a skip
//! reason (with the key when it could be read, so the user still counts as present). The
//! merge reads packed rows back as [`PackedRow`]s.

use super::fields::{self, Kind, Norm};
use super::mapping::Mapping;
use crate::config::{EmptyCells, ImportProfile, Tenant};
use crate::model::packed::varint_len;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// Longest cell accepted, in bytes.
pub const MAX_CELL: usize = 4096;

/// A row that passed validation, before packing.
#[derive(Debug, Default)]
pub struct Row<'a> {
    pub line: u64,
    pub key: String,
    /// (index into `Mapping::cols`, value or None for an empty cell) — passwords and the
    /// active/deactivate columns are not in here.
    pub values: Vec<(u16, Option<Cow<'a, str>>)>,
    pub password: Option<Cow<'a, str>>,
    pub active: Option<bool>,
    pub email: Option<Cow<'a, str>>,
}

/// What one record became.
pub enum Parsed<'a> {
    Valid(Row<'a>),
    Skipped {
        key: Option<String>,
        reason: String,
    },
    /// A row whose cell count is not the header's: a delimiter too many or too few, or an
    /// unbalanced quote that joined lines. Which cell is the key is unknown, so it names no
    /// user, and the run applies `on_missing` to nobody (design §5.2).
    Misshapen {
        reason: String,
    },
}

/// Normalises a match key for storage and comparison.
pub fn key_of(field: &str, value: &str) -> String {
    match field {
        "email" | "username" => value.to_lowercase(),
        _ => value.to_string(),
    }
}

fn show(v: &str) -> String {
    if v.chars().count() > 60 {
        format!("{}…", v.chars().take(60).collect::<String>())
    } else {
        v.to_string()
    }
}

/// Validates one record. `notes` collects non-fatal remarks (unknown references).
pub fn parse_record<'a>(
    rec: &'a csv::ByteRecord,
    line: u64,
    map: &'a Mapping,
    tenant: &Tenant,
    notes: &mut Vec<String>,
) -> Parsed<'a> {
    let _ = tenant;
    if rec.len() != map.width {
        return wrong_width(rec, line, map.width);
    }
    if let Some(cell) = joined_cell(rec, map) {
        let header = map.cols.iter().find(|c| c.index == cell).map_or_else(
            || format!("column {}", cell + 1),
            |c| format!("{:?}", c.header),
        );
        return joined(line, &header);
    }
    let lk = &map.lookups;
    let mut problems: Vec<String> = Vec::new();
    // One UTF-8 check for the whole record (the decoded stream is UTF-8, and cells split at
    // ASCII delimiters, so every cell is a char-boundary slice of it); cell by cell only when
    // that fails, to name the bad cell.
    let whole = std::str::from_utf8(rec.as_slice()).ok();
    let cell = |i: usize| -> Result<&'a str, ()> {
        if let Some(c) = whole.zip(rec.range(i)).and_then(|(w, r)| w.get(r)) {
            return Ok(c);
        }
        std::str::from_utf8(rec.get(i).unwrap_or(b"")).map_err(|_| ())
    };
    // The key first, so that a skipped row can still count as present.
    let key_col = &map.cols[map.key];
    let mut key = match cell(key_col.index) {
        Ok(raw) => match fields::normalise(key_col.spec, raw, lk) {
            Ok(Norm::Value(v)) => Some(key_of(&key_col.field, &v)),
            _ => None,
        },
        Err(()) => None,
    };
    let mut row = Row {
        line,
        values: Vec::with_capacity(map.cols.len()),
        ..Default::default()
    };
    for (ci, col) in map.cols.iter().enumerate() {
        let raw = match cell(col.index) {
            Ok(s) => s,
            Err(()) => {
                problems.push(format!("{} is not valid text", col.header));
                continue;
            }
        };
        if raw.len() > MAX_CELL {
            problems.push(format!(
                "{} is longer than {MAX_CELL} characters",
                col.header
            ));
            continue;
        }
        let required = col.required;
        match fields::normalise(col.spec, raw, lk) {
            Err(p) => problems.push(format!("{} {:?} {p}", col.header, show(raw.trim()))),
            Ok(Norm::Empty) if required => problems.push(format!(
                "{} is empty, but {} is required",
                col.header, col.field
            )),
            Ok(Norm::Empty) => match col.spec.kind {
                Kind::Secret | Kind::Bool { .. } => {}
                _ => row.values.push((ci as u16, None)),
            },
            // `active` and `deactivate` both mapped and disagreeing: the row's state is unknown.
            Ok(Norm::Active(b)) if row.active.is_some_and(|a| a != b) => problems.push(format!(
                "{} {:?} contradicts the row's other active/deactivate column",
                col.header,
                show(raw.trim())
            )),
            Ok(Norm::Active(b)) => row.active = Some(b),
            Ok(Norm::UnknownReference) => {
                notes.push(format!(
                    "row {line}: {} {:?} is not in the tenant's reference list, so it was not applied (a new user gets none; an existing user keeps its stored value)",
                    col.header,
                    show(raw.trim())
                ));
            }
            Ok(Norm::Value(v)) => {
                if ci == map.key {
                    row.key = key.take().unwrap_or_else(|| key_of(&col.field, &v));
                }
                if Some(ci) == map.email {
                    row.email = Some(v.clone());
                }
                match col.spec.kind {
                    Kind::Secret => row.password = Some(v),
                    _ => row.values.push((ci as u16, Some(v))),
                }
            }
        }
    }
    if problems.is_empty() {
        Parsed::Valid(row)
    } else {
        // The key moved into the row when its cell was read.
        let key = key.or_else(|| (!row.key.is_empty()).then_some(row.key));
        Parsed::Skipped {
            key,
            reason: format!("row {line}: {}", problems.join("; ")),
        }
    }
}

/// A row whose cell count is not the header's: skipped without a key (the cell at the key's
/// position may belong to another column), with a hint when a quote may have joined lines.
#[cold]
fn wrong_width<'a>(rec: &csv::ByteRecord, line: u64, width: usize) -> Parsed<'a> {
    let hint = if rec.iter().any(|c| c.contains(&b'\n')) {
        " (an unbalanced quote may have joined lines)"
    } else {
        ""
    };
    Parsed::Misshapen {
        reason: format!(
            "row {line}: has {} cells but the header has {width}{hint}; check the delimiter and quotes",
            rec.len(),
        ),
    }
}

/// The first cell of `rec` that holds lines a quote joined: a line break and, after it, the
/// delimiter (or any line break when the file has one column, whose cells never hold one).
/// A quote that opens in the last column, or that a later quote closes, joins the lines after
/// it into one cell while the record keeps the header's cell count (review of 2026-11-30,
/// third round). A real multi-line cell with the delimiter on a later line is taken for one
/// too: that row is skipped with a sentence that says why, which is safe, where a joined row
/// taken as good would make the users on the joined lines look missing.
fn joined_cell(rec: &csv::ByteRecord, map: &Mapping) -> Option<usize> {
    // Nearly every record holds no line break at all: one scan of its bytes says so.
    memchr::memchr2(b'\n', b'\r', rec.as_slice())?;
    rec.iter()
        .position(|c| holds_joined_lines(c, map.delim, map.width))
}

/// Whether `cell` holds lines a quote joined: a line break and, after it, the delimiter (or any
/// line break when the file has `width` 1: its cells never hold one). The one test, for the
/// run and for the copy a held run keeps (`report`), so approving reads a row as the hold did
/// (review s21: the copy's own looser test turned a real two-line note into a broken row).
pub fn holds_joined_lines(cell: &[u8], delim: u8, width: usize) -> bool {
    cell.iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .is_some_and(|at| width == 1 || cell[at..].contains(&delim))
}

/// A row one of whose cells (under `header`) holds lines a quote joined: misshapen, like a row
/// of the wrong width (its key may not be its own, and the users on the joined lines are not
/// missing).
#[cold]
fn joined<'a>(line: u64, header: &str) -> Parsed<'a> {
    Parsed::Misshapen {
        reason: format!(
            "row {line}: the cell under {header} runs over several lines that look like rows of their own: a quote was opened and not closed where it should be; check the quotes"
        ),
    }
}

/// HMAC-SHA256 (RFC 2104) with a 32-byte key.
pub fn hmac_sha256(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for i in 0..32 {
        ipad[i] ^= key[i];
        opad[i] ^= key[i];
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize();
    outer.into()
}

/// The keyed fingerprint of a password (first 16 bytes of its HMAC).
pub fn password_fp(secret: &[u8; 32], pw: &str) -> [u8; 16] {
    let mut fp = [0u8; 16];
    fp.copy_from_slice(&hmac_sha256(secret, pw.as_bytes())[..16]);
    fp
}

/// Passwords a held run already took from its file, by row: the keyed fingerprint, and the
/// argon2id hash when applying the run must store one. A held run keeps its file with the
/// password cells blank plus this table, so no plaintext password waits in the store for
/// `approve` (see `engine`).
/// The keyed fingerprint of the password a row gives (kept for a run that is held).
#[derive(Debug, Clone, Copy)]
pub struct RowFingerprint {
    pub row: u64,
    pub fp: [u8; 16],
}

pub type GivenPasswords = std::collections::HashMap<u64, GivenPassword>;

/// A password's keyed fingerprint and, when one must be stored, its argon2id hash.
#[derive(Debug, Clone)]
pub struct GivenPassword {
    /// The keyed fingerprint of the password.
    pub fp: [u8; 16],
    /// Its argon2id hash, where applying the run stores one.
    pub hash: Option<String>,
}

/// Row flag: the row was skipped but its key is known (it only marks the user present).
pub const ROW_PRESENT_ONLY: u8 = 1;
const ROW_HAS_ACTIVE: u8 = 2;
const ROW_ACTIVE: u8 = 4;
const ROW_HAS_PASSWORD: u8 = 8;
const ROW_HAS_EMAIL: u8 = 16;
/// Row flag: the row was found unchanged against its stored user (same digest) by the survey,
/// so only its line, key, flags and digest were kept; its values and password are gone.
const ROW_COMPACT: u8 = 32;

/// A packed row borrowed from an arena.
#[derive(Debug, Clone, Copy)]
pub struct PackedRow<'a> {
    pub line: u64,
    pub key: &'a [u8],
    pub flags: u8,
    pub digest: &'a [u8],
    pub password: Option<&'a [u8]>,
    values: &'a [u8],
    nvalues: u64,
    /// The whole packed row as it is in the arena.
    pub raw: &'a [u8],
}

impl<'a> PackedRow<'a> {
    /// Only line, key, flags and digest are left (see [`pack_compact`]).
    pub fn compact(&self) -> bool {
        self.flags & ROW_COMPACT != 0
    }
    pub fn present_only(&self) -> bool {
        self.flags & ROW_PRESENT_ONLY != 0
    }
    /// The row gives an email (a valid one: it passed validation).
    pub fn has_email(&self) -> bool {
        self.flags & ROW_HAS_EMAIL != 0
    }
    pub fn active(&self) -> Option<bool> {
        (self.flags & ROW_HAS_ACTIVE != 0).then_some(self.flags & ROW_ACTIVE != 0)
    }
    /// (column index, value or None for an empty cell).
    pub fn values(&self) -> anyhow::Result<Vec<(usize, Option<&'a str>)>> {
        let mut r = crate::model::packed::Cursor::new(self.values);
        let mut out = Vec::with_capacity(self.nvalues as usize);
        for _ in 0..self.nvalues {
            let col = r.varint()? as usize;
            let has = r.byte()?;
            let v = r.bytes()?;
            let v = if has == 1 {
                Some(std::str::from_utf8(v)?)
            } else {
                None
            };
            out.push((col, v));
        }
        Ok(out)
    }
}

/// The digest of a row as it would be applied (changes whenever any applied input changes):
/// XXH3-128 of the profile switches that shape the applied record, the password fingerprint
/// and each (field, value). It only tells "same as last time" apart from "different", for the
/// tenant's own rows, so a fast non-cryptographic hash is enough. `buf` is scratch space kept
/// by the caller.
pub fn row_digest(
    row: &Row<'_>,
    map: &Mapping,
    profile: &ImportProfile,
    pw_fp: &[u8; 16],
    buf: &mut Vec<u8>,
) -> [u8; 16] {
    buf.clear();
    buf.extend_from_slice(&[
        (profile.empty_cells == EmptyCells::Clear) as u8,
        profile.activate as u8,
        match row.active {
            None => 0,
            Some(true) => 1,
            Some(false) => 2,
        },
        row.password.is_some() as u8,
    ]);
    buf.extend_from_slice(pw_fp);
    for (ci, v) in &row.values {
        if let Some(c) = map.cols.get(*ci as usize) {
            buf.extend_from_slice(&c.stored_name);
        }
        match v {
            Some(v) => {
                buf.push(1);
                buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
                buf.extend_from_slice(v.as_bytes());
            }
            None => buf.push(0),
        }
    }
    xxhash_rust::xxh3::xxh3_128(buf).to_le_bytes()
}

/// Appends a packed row to an arena.
/// Seals the password cells of packed rows with ChaCha20 under a key made for one run and never
/// stored (the row number is the nonce): packed rows may be spilled to a temporary file
/// (`spill`), and no plaintext password may reach the disk. Sealing and opening are the same.
pub struct RowSeal([u8; 32]);

impl RowSeal {
    pub fn new() -> RowSeal {
        RowSeal(rand::random())
    }

    /// Seals (or opens) `bytes` of row `line` in place.
    pub fn apply(&self, line: u64, bytes: &mut [u8]) {
        use chacha20::cipher::{KeyIvInit, StreamCipher};
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&line.to_le_bytes());
        chacha20::ChaCha20::new(&self.0.into(), &nonce.into()).apply_keystream(bytes);
    }

    /// The plaintext of a sealed password of row `line`.
    pub fn open(&self, line: u64, sealed: &[u8]) -> Vec<u8> {
        let mut v = sealed.to_vec();
        self.apply(line, &mut v);
        v
    }
}

impl Default for RowSeal {
    fn default() -> Self {
        RowSeal::new()
    }
}

/// Appends a row to an arena; its password, if any, sealed with `seal`.
pub fn pack(arena: &mut Vec<u8>, row: &Row<'_>, flags: u8, digest: &[u8; 16], seal: &RowSeal) {
    use crate::model::packed::put_bytes as pb;
    use crate::model::packed::put_varint as pv;
    pv(arena, row.line);
    pb(arena, row.key.as_bytes());
    let mut f = flags;
    if let Some(a) = row.active {
        f |= ROW_HAS_ACTIVE | if a { ROW_ACTIVE } else { 0 };
    }
    if row.password.is_some() {
        f |= ROW_HAS_PASSWORD;
    }
    if row.email.is_some() {
        f |= ROW_HAS_EMAIL;
    }
    arena.push(f);
    arena.extend_from_slice(digest);
    let pw = row.password.as_deref().unwrap_or("").as_bytes();
    pb(arena, pw);
    let at = arena.len() - pw.len();
    seal.apply(row.line, &mut arena[at..]);
    // The values block is written in place after its length (computed first).
    let value_len = |v: &Option<Cow<'_, str>>| v.as_ref().map_or(0, |v| v.len());
    let vals_len: usize = row
        .values
        .iter()
        .map(|(ci, v)| {
            let n = value_len(v);
            varint_len(u64::from(*ci)) + 1 + varint_len(n as u64) + n
        })
        .sum();
    pv(arena, row.values.len() as u64);
    pv(arena, vals_len as u64);
    for (ci, v) in &row.values {
        pv(arena, u64::from(*ci));
        match v {
            Some(v) => {
                arena.push(1);
                pb(arena, v.as_bytes());
            }
            None => {
                arena.push(0);
                pb(arena, b"");
            }
        }
    }
}

/// Appends `row` without its values and password (for a row whose stored user already has
/// its digest: the planner only counts it as unchanged).
pub fn pack_compact(arena: &mut Vec<u8>, row: &PackedRow<'_>) {
    use crate::model::packed::put_bytes as pb;
    use crate::model::packed::put_varint as pv;
    pv(arena, row.line);
    pb(arena, row.key);
    arena.push((row.flags & !ROW_HAS_PASSWORD) | ROW_COMPACT);
    arena.extend_from_slice(row.digest);
    pb(arena, b"");
    pv(arena, 0);
    pb(arena, b"");
}

/// Unpacks every row of an arena (borrowing).
pub fn unpack(arena: &[u8]) -> anyhow::Result<Vec<PackedRow<'_>>> {
    let mut r = crate::model::packed::Cursor::new(arena);
    let mut out = Vec::new();
    while !r.at_end() {
        let start = r.pos();
        let line = r.varint()?;
        let key = r.bytes()?;
        let flags = r.byte()?;
        let digest = r.take(16)?;
        let pw = r.bytes()?;
        let nvalues = r.varint()?;
        let values = r.bytes()?;
        out.push(PackedRow {
            line,
            key,
            flags,
            digest,
            password: (flags & ROW_HAS_PASSWORD != 0).then_some(pw),
            values,
            nvalues,
            raw: arena.get(start..r.pos()).unwrap_or_default(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::RowSeal;

    #[test]
    fn sealed_passwords_differ_per_row_and_open_again() {
        let seal = RowSeal::new();
        let mut a = b"Sup3rSecret!".to_vec();
        seal.apply(7, &mut a);
        assert_ne!(a, b"Sup3rSecret!");
        let mut b = b"Sup3rSecret!".to_vec();
        seal.apply(8, &mut b);
        assert_ne!(a, b, "the row number is the nonce");
        assert_eq!(seal.open(7, &a), b"Sup3rSecret!");
        assert_ne!(
            RowSeal::new().open(7, &a),
            b"Sup3rSecret!",
            "the key is per run"
        );
    }
}
