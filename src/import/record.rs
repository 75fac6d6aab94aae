//! From CSV records to normalised rows: mapping headers to fields, validating each cell through
//! the field table, and packing valid rows compactly into per-bucket arenas.
//!
//! Data enters as the header record and then one `csv::ByteRecord` at a time; it leaves as a
//! [`Mapping`] (which column is which field) and, per row, either a packed row in its bucket's
//! arena or a skip reason (with the key when it could be read, so the user still counts as
//! present).

use super::fields::{self, FieldSpec, Kind, Norm};
use crate::config::{EmptyCells, ImportProfile, Tenant};
use crate::model::packed::varint_len;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// Longest cell accepted, in bytes.
pub const MAX_CELL: usize = 4096;

/// One mapped column.
#[derive(Debug, Clone)]
pub struct Column {
    pub field: String,
    pub spec: FieldSpec,
    /// Index of the column in the file.
    pub index: usize,
    /// The header as written in the file (trimmed).
    pub header: String,
    /// A value is required (the match key, first and last name).
    pub required: bool,
    /// The field name as records store it (see `model::packed::put_name`), for row digests.
    pub stored_name: Vec<u8>,
}

/// Which columns of this file are which fields.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub cols: Vec<Column>,
    /// Index into `cols` of the match key.
    pub key: usize,
    pub password: Option<usize>,
    /// Index into `cols` of the `email` column.
    pub email: Option<usize>,
    /// Number of header cells.
    pub width: usize,
    /// Notes about the mapping (ignored headers), for the run's messages.
    pub notes: Vec<String>,
    /// The tenant's lists, prepared for lookups.
    pub lookups: fields::Lookups,
    /// (index into `cols`, the stored form of its field name), sorted by field name: the order
    /// in which a new record's fields are written.
    pub by_name: Vec<(usize, Vec<u8>)>,
}

fn norm_header(h: &str) -> String {
    h.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
        .to_lowercase()
}

/// The file-level error for a mapped header that names several columns (1-based numbers).
fn twice(header: &str, normed: &[String], norm: &str) -> String {
    let at: Vec<String> = (normed.iter().enumerate())
        .filter(|(_, h)| *h == norm)
        .map(|(i, _)| (i + 1).to_string())
        .collect();
    let header = super::bounds::cut(header.trim(), 100);
    format!("the header {header:?} appears in more than one column (columns {}), so it is not clear which one to import; remove or rename all but one", at.join(", "))
}

/// Maps the header row to fields. An empty `columns` map takes each header as a field name.
pub fn map_columns(headers: &[String], tenant: &Tenant) -> Result<Mapping, String> {
    let profile = &tenant.import;
    let normed: Vec<String> = headers.iter().map(|h| norm_header(h)).collect();
    let find = |want: &str| normed.iter().position(|h| h == &norm_header(want));
    let mut cols = Vec::new();
    let mut notes = Vec::new();
    if profile.columns.is_empty() {
        let mut ignored = Vec::new();
        for (i, h) in normed.iter().enumerate() {
            match fields::spec(h) {
                Some(_) if cols.iter().any(|c: &Column| &c.field == h) => {
                    return Err(twice(&headers[i], &normed, h));
                }
                Some(spec) => cols.push(Column {
                    field: h.clone(),
                    spec,
                    index: i,
                    header: headers[i].trim().to_string(),
                    required: false,
                    stored_name: Vec::new(),
                }),
                _ if !h.is_empty() => ignored.push(headers[i].trim().to_string()),
                _ => {}
            }
        }
        if !ignored.is_empty() {
            let shown: Vec<&str> = ignored.iter().take(10).map(String::as_str).collect();
            notes.push(format!(
                "columns ignored because they are not field names (map them in [tenants.import.columns]): {}{}",
                shown.join(", "),
                if ignored.len() > 10 { ", …" } else { "" }
            ));
        }
    } else {
        for (field, header) in &profile.columns {
            let Some(spec) = fields::spec(field) else {
                return Err(format!("the profile maps the unknown field {field:?}"));
            };
            if let Some(i) = find(header) {
                if normed.iter().filter(|h| **h == normed[i]).count() > 1 {
                    return Err(twice(&headers[i], &normed, &normed[i]));
                }
                cols.push(Column {
                    field: field.clone(),
                    spec,
                    index: i,
                    header: headers[i].trim().to_string(),
                    required: false,
                    stored_name: Vec::new(),
                });
            }
        }
    }
    cols.sort_by_key(|c| c.index);
    let key_field = profile.match_by.field();
    for c in &mut cols {
        c.required = [key_field, "first_name", "last_name"].contains(&c.field.as_str());
        crate::model::packed::put_name(&mut c.stored_name, &c.field);
    }
    let mut missing = Vec::new();
    for required in [key_field, "first_name", "last_name"] {
        if !cols.iter().any(|c| c.field == required) {
            let header = profile
                .columns
                .get(required)
                .cloned()
                .unwrap_or_else(|| required.to_string());
            missing.push(format!("{header:?} (for {required})"));
        }
    }
    if !missing.is_empty() {
        let found: Vec<&str> = headers.iter().take(12).map(|h| h.trim()).collect();
        let more = if headers.len() > 12 { ", …" } else { "" };
        return Err(format!(
            "the file has no column {} — its header row is: {}{more}. Check the column names and the delimiter",
            missing.join(" and no column "),
            found.join(" | ")
        ));
    }
    let pos = |f: &str| cols.iter().position(|c| c.field == f);
    Ok(Mapping {
        cols: cols.clone(),
        key: pos(key_field).unwrap_or(0),
        password: pos("password"),
        email: pos("email"),
        width: headers.len(),
        notes,
        lookups: fields::Lookups::new(profile, &tenant.reference),
        by_name: {
            let mut v: Vec<(usize, &str)> = cols
                .iter()
                .enumerate()
                .map(|(i, c)| (i, c.field.as_str()))
                .collect();
            v.sort_by(|a, b| a.1.cmp(b.1));
            v.into_iter()
                .map(|(i, name)| {
                    let mut enc = Vec::new();
                    crate::model::packed::put_name(&mut enc, name);
                    (i, enc)
                })
                .collect()
        },
    })
}

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
    Skipped { key: Option<String>, reason: String },
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
    if rec.len() != map.width {
        let hint = if rec.iter().any(|c| c.contains(&b'\n')) {
            " (an unbalanced quote may have joined lines)"
        } else {
            ""
        };
        return Parsed::Skipped {
            key,
            reason: format!(
                "row {line}: has {} cells but the header has {}{hint}; check the delimiter and quotes",
                rec.len(),
                map.width
            ),
        };
    }
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
            Ok(Norm::Active(b)) => row.active = Some(b),
            Ok(Norm::UnknownReference) => {
                notes.push(format!(
                    "row {line}: {} {:?} is not in the tenant's reference list, so the user was imported without it",
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
pub type GivenPasswords = std::collections::HashMap<u64, GivenPassword>;

/// A password's keyed fingerprint and, when one must be stored, its argon2id hash.
pub type GivenPassword = ([u8; 16], Option<String>);

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
