//! The failure report (design.md §6) and the archived copy with password cells blanked: the
//! one place either is built (the engine, the held plan and the intake all call here).
//!
//! A run that failed as a whole (not CSV, empty, undecodable, wrong date, too large) has no rows
//! to report; its report ([`for_failed_run`]) is one line per message of its record, so the
//! tenant still gets a file that says what to fix (each message neutralised like a cell, as
//! it may start with the tenant's file name or quote a header), with the file's delimiter when
//! the run found it, else `,`.
//!
//! For the rows, data enters as a second streaming pass over the same file (same encoding and
//! delimiter) and the skip reasons by row number; it leaves as bytes: the report CSV (a `row`
//! column, the original columns, a `reason` column; a row with more cells than the header has
//! them all before its reason; same delimiter; UTF-8 with BOM; cells
//! starting with `= + - @`, TAB or CR prefixed with `'` (OWASP's list), and a `'` after any
//! separator inside a cell that a formula follows ([`safe_cell`]); password cells blank)
//! and, when the file has a password column, the whole file re-written with that column blank
//! (UTF-8, same delimiter, blank lines kept). Rows are numbered as the row pass numbers them
//! (`rownum`); the copy keeps the blank lines so that it numbers its rows as the file does (a
//! held run keeps it, `approve` reads it again, and the run's passwords are kept by row).
//!
//! The archive copy of a run that ends early ([`archive_early`]; also of a file the intake
//! refuses unread by `only_today`, [`unread_copy`]) is a decision where the contract is silent
//! (design.md §4 and §6 say password plaintext is never archived, and the file must not be lost
//! otherwise): a run that stops before the header is mapped (undecodable file such as NUL
//! bytes, header unreadable, required column missing) or finds a duplicate still blanks
//! passwords when the profile could map a password column (`columns` has `password`, or
//! `columns` is empty and a header is literally `password`). The file is read best-effort (its
//! encoding, or when it cannot be decoded [`read::Scan::fallback`], which decodes any bytes),
//! the delimiter is set or guessed as for a run, and the column whose header matches loosely
//! ([`same_header`]: trimmed, case-insensitive, NULs ignored) is blanked in every row (rows
//! that do not line up with the header are blanked whole, see below). With no such column the
//! original bytes are archived (nothing to leak). Only when the file cannot be read at all is
//! the original archived unchecked, and the record says so.
//!
//! The report is bounded by the file: each cell is cut to `MAX_CELL_BYTES` and each
//! reason to `MAX_MESSAGE_CHARS` (ending in `…`), and once the report is larger than
//! twice the bytes read so far plus 1 MiB, further skipped rows are only counted, in a last row
//! that says how many were left out. The archive copy is never cut.
//!
//! The password column is given by index (the header was mapped) or by its header, looked up
//! loosely in the header row (a run that failed before mapping; see [`Want::password_header`]).
//! A row whose cells do not line up with the header (another cell count, or a cell that holds a
//! line break and the delimiter: lines joined by an unbalanced quote) may carry its password in
//! any cell, so in a file with a password column all its cells are blank in both outputs.

use super::bounds::{cut, cut_bytes, MAX_CELL_BYTES, MAX_MESSAGE_CHARS};
use super::mapping;
use super::read::{self, Enc, Input};
use super::rownum::{is_row_too_long, RowReader};
use super::{ImportRecord, ImportStatus};
use crate::config::Tenant;
use anyhow::{Context, Result};
use std::cell::RefCell;
use std::collections::HashMap;

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// Report bytes allowed beyond twice the bytes read (a header row and a few long reasons).
const REPORT_SLACK: u64 = 1 << 20;

/// Bytes a spreadsheet may split a CSV line on, whatever the report's own delimiter: `,` `;` TAB
/// `|` (the list separators of the locales Excel and LibreOffice use, and what their import
/// offers) and the line breaks.
const SEPARATORS: &[u8] = b",;\t|\r\n";
/// Bytes that start a formula (OWASP: `= + - @`).
const FORMULA: &[u8] = b"=+-@";

/// Neutralises a cell that a spreadsheet would run as a formula, also when the spreadsheet
/// splits the line on another separator than the file's (review s29, F1: a comma-delimited
/// report opened in a `;` locale split `Mgr;=WEBSERVICE(…)` and ran the second piece).
/// Decision: a `'` goes (1) before the cell when it starts with `= + - @`, TAB or CR (OWASP's
/// rule, kept), or when it starts with spaces or `"` and then `= + - @`; (2) right after every
/// separator ([`SEPARATORS`]) inside the cell that is followed, after spaces or `"`, by
/// `= + - @`: `Mgr;'=WEBSERVICE(…)`. So every piece of the written line, split on any separator,
/// starts (after spaces and quotes: a quote the writer adds or doubles is one of them) with
/// `'` or some other byte that is no formula. Fields are quoted only as the writer needs: the
/// rule holds without quoting, and the report stays as readable as the file. Cells that hold no
/// such sequence are kept as they are (no copy).
pub fn safe_cell(c: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    // From the end: `formula` is whether the first byte after this one that is no space and no
    // quote starts a formula (one pass, so a cell of many TABs costs no more than its length).
    let mut at = Vec::new();
    let mut formula = false;
    for (i, b) in c.iter().enumerate().rev() {
        if formula && SEPARATORS.contains(b) {
            at.push(i + 1);
        }
        if !b.is_ascii_whitespace() && *b != b'"' {
            formula = FORMULA.contains(b);
        }
    }
    if formula || matches!(c.first(), Some(b'\t' | b'\r')) {
        at.push(0);
    }
    if at.is_empty() {
        return std::borrow::Cow::Borrowed(c);
    }
    let mut v = Vec::with_capacity(c.len() + at.len());
    let mut from = 0;
    // `at` is in descending order.
    for &i in at.iter().rev() {
        v.extend_from_slice(&c[from..i]);
        v.push(b'\'');
        from = i;
    }
    v.extend_from_slice(&c[from..]);
    std::borrow::Cow::Owned(v)
}

/// What the second pass should produce.
pub struct Want<'a> {
    /// Skip reasons by row number; a report is made when not empty.
    pub skips: &'a HashMap<u64, String>,
    /// File column of the password, blanked everywhere; an archive copy is made when set.
    pub password_col: Option<usize>,
    /// When `password_col` is `None`: the header of the password column, found in the header
    /// row by [`same_header`]; an archive copy is made when the header row has it.
    pub password_header: Option<&'a str>,
    /// A file column kept even in a row that is blanked whole (the match key, in the copy a
    /// held run keeps: that row must still mark its user present when the run is approved).
    pub keep_col: Option<usize>,
    /// File columns also kept in a row of the header's width that is blanked because a cell
    /// holds a line break and the delimiter (the mapped columns, in the copy a held run keeps:
    /// approving must read such a row as the hold did, and the import stores those values
    /// anyway). Unmapped cells and the password are blanked still.
    pub keep_mapped: &'a [usize],
    /// Also blank every column whose header looks like a password
    /// ([`mapping::looks_like_password`]): for a profile that maps no password column, an
    /// unmapped `Password` column is not written in clear (review s30, F5).
    pub password_like: bool,
    /// For a run that stopped before its header was mapped: when no cell of the first row is a
    /// field name or a header of this profile ([`mapping::looks_like_header`]), the file has no
    /// header row and any cell may be a password, so every cell is blank in both outputs
    /// (review s30, F4).
    pub header_of: Option<&'a crate::config::ImportProfile>,
}

/// A header cell as text for [`mapping`]'s rules: lossy UTF-8 with NUL characters removed.
fn clean_header(cell: &[u8]) -> String {
    super::bounds::header_text(cell).replace('\0', "")
}

/// Whether a header cell names `want`: trimmed (of what `fields::is_unseen` says, a BOM among
/// them, and of a BOM read as Windows-1252 or
/// UTF-16 bytes read as single bytes), NUL characters ignored (UTF-16 read as single bytes),
/// case-insensitive. Allocates nothing, so a 50 MB header cell costs one scan.
pub fn same_header(cell: &[u8], want: &str) -> bool {
    let cell = String::from_utf8_lossy(cell);
    let junk = |c: char| super::fields::is_unseen(c) || c == '\0';
    let mut h = cell.trim_matches(junk);
    for bom in ["\u{ef}\u{bb}\u{bf}", "\u{ff}\u{fe}", "\u{fe}\u{ff}"] {
        h = h.strip_prefix(bom).unwrap_or(h).trim_matches(junk);
    }
    let want = want.trim_matches(super::fields::is_unseen);
    h.chars()
        .filter(|&c| c != '\0')
        .flat_map(char::to_lowercase)
        .eq(want.chars().flat_map(char::to_lowercase))
}

/// Whether the report has reached its bound for a file read up to byte `read`.
fn report_full(w: &csv::Writer<Vec<u8>>, read: u64) -> bool {
    // The writer's own buffer (a few KiB) is not counted: the bound is not that tight.
    w.get_ref().len() as u64 > read.saturating_mul(2) + REPORT_SLACK
}

/// Writes one report row: `first`, then the cells (None: blank; each cut to `MAX_CELL_BYTES`
/// and made formula-safe), blank ones up to `width` when fewer, then `last` (made
/// formula-safe). A row with more cells than the header keeps them all (the writer is
/// flexible): the cells that do not fit are what the tenant has to fix.
fn report_row<'c>(
    w: &mut csv::Writer<Vec<u8>>,
    first: &[u8],
    width: usize,
    cells: impl Iterator<Item = Option<&'c [u8]>>,
    last: &[u8],
) -> Result<()> {
    // Field by field: a row of a million cells is not copied into a record first.
    w.write_field(first)?;
    let mut n = 0;
    for c in cells {
        w.write_field(safe_cell(&cut_bytes(c.unwrap_or(b""), MAX_CELL_BYTES)))?;
        n += 1;
    }
    for _ in n..width {
        w.write_field(b"")?;
    }
    w.write_field(safe_cell(last))?;
    w.write_record(None::<&[u8]>)?;
    Ok(())
}

/// How far a run that ends early read the file.
#[derive(Clone, Copy)]
pub enum Reached {
    /// Only scanned: read it with this encoding, guess the delimiter.
    Scan(Enc),
    /// Decoded with this encoding and delimiter; the header is not mapped.
    Text(Enc, u8),
    /// The header is mapped; the file column of the password, if any.
    Header(Enc, u8, Option<usize>),
}

/// The password-blanked copy to archive in place of the original, for a run that ends early
/// (see the module doc); `None` archives the original bytes.
pub fn archive_early(
    tenant: &Tenant,
    input: Input<'_>,
    messages: &mut Vec<String>,
    reached: Reached,
) -> Option<Vec<u8>> {
    let profile = &tenant.import;
    let (enc, delim, col, mapped) = match reached {
        Reached::Header(e, d, c) => (e, Some(d), c, true),
        Reached::Text(e, d) => (e, Some(d), None, false),
        Reached::Scan(e) => (e, None, None, false),
    };
    let header = match (col, profile.columns.get("password")) {
        (None, Some(h)) if !mapped => Some(h.as_str()),
        (None, None) if !mapped && profile.columns.is_empty() => Some("password"),
        // Mapped, or the profile maps no password: only a password-like header is blanked.
        _ => None,
    };
    let mut copy = || -> Result<Option<Vec<u8>>> {
        let delim = match delim {
            Some(d) => d,
            None => read::with_delimiter(read::text(input, enc)?, profile.delimiter)?.1,
        };
        let empty = HashMap::new();
        let want = Want {
            skips: &empty,
            password_col: col,
            password_header: header,
            keep_col: None,
            keep_mapped: &[],
            password_like: col.is_none(),
            header_of: (!mapped).then_some(profile),
        };
        let ((_, copy), cut) = write_cut(input, enc, delim, &want)?;
        if let Some(row) = cut {
            messages.push(format!(
                "the archived copy ends after row {row}: the row after it is longer than {} MiB \
                 and could not be checked for passwords, so it and the rest of the file are left \
                 out",
                super::bounds::MAX_ROW_BYTES >> 20
            ));
        }
        Ok(copy)
    };
    match copy() {
        Ok(c) => c,
        Err(e) => {
            messages.push(format!(
                "the archived file could not be checked for passwords, so it is archived as uploaded: {e:#}"
            ));
            None
        }
    }
}

/// The copy to archive of a file that is not imported at all (see
/// [`crate::import::password_free_copy`]): scanned for its encoding only (not hashed).
pub fn unread_copy(
    tenant: &Tenant,
    input: Input<'_>,
    messages: &mut Vec<String>,
) -> Result<Option<Vec<u8>>> {
    let scan = read::scan(input, tenant.import.encoding, false)?;
    let enc = scan.encoding.clone().unwrap_or(scan.fallback);
    Ok(archive_early(tenant, input, messages, Reached::Scan(enc)))
}

/// The report of a run that failed as a whole (see the module doc): `row` and `reason` and one
/// line per message, UTF-8 with BOM, CRLF, with the file's delimiter when the run found it (the
/// record's `delimiter`; a run that failed before, such as a file that is no CSV or that the
/// intake refused unread, has none, and its report uses `,`). `None` unless the record is an
/// `error` with messages.
pub fn for_failed_run(record: &ImportRecord) -> Option<Vec<u8>> {
    if record.status != ImportStatus::Error || record.messages.is_empty() {
        return None;
    }
    let delim = match record.delimiter.as_str() {
        "\\t" => b'\t',
        ";" => b';',
        "|" => b'|',
        _ => b',',
    };
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .delimiter(delim)
        .from_writer(BOM.to_vec());
    w.write_record(["row", "reason"]).ok()?;
    for m in &record.messages {
        // The messages quote the tenant's file name and header cells, which may start with
        // `=` or hold a separator and a `=` (see `safe_cell`).
        w.write_record([b"".as_slice(), &safe_cell(m.as_bytes())])
            .ok()?;
    }
    w.into_inner().ok()
}

/// (failure report, archive copy).
pub type ReportAndArchive = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The archive copy's bytes: the sink of its `csv` writer, which blank lines are also written
/// to (see [`blank_lines`]).
#[derive(Default)]
struct Sink(RefCell<Vec<u8>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.get_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes `n` blank lines to the archive copy (a `csv` writer cannot: it writes `""`), so the
/// copy numbers its rows as the file does: `approve` numbers a held run's kept copy again, and
/// the run's passwords are kept by row.
fn blank_lines(w: &mut csv::Writer<Sink>, n: u64) -> Result<()> {
    if n > 0 {
        w.flush()?;
        let mut bytes = w.get_ref().0.borrow_mut();
        bytes.extend(std::iter::repeat_n(b'\n', usize::try_from(n)?));
    }
    Ok(())
}

/// The second pass as it goes: its outputs and what the header row told.
struct Second<'w> {
    want: &'w Want<'w>,
    delim: u8,
    report: Option<csv::Writer<Vec<u8>>>,
    archive: Option<csv::Writer<Sink>>,
    /// File columns of the password, sorted: the one given by index, and every column whose
    /// header names it (the password header given, or the header of the column given): a
    /// header that repeats the password column has each of its cells blanked.
    cols: Vec<usize>,
    /// Cells in the header row.
    width: usize,
    /// What a blanked cell of a misshapen row holds when it must not be blank (see `row`): a
    /// line break and the delimiter, and a `-` after them when the delimiter is a TAB, which
    /// the row pass takes for blank like the line break (a line of blank cells is no row).
    marker: Vec<u8>,
    /// Row number of the record before (0 before the header).
    last_row: u64,
    /// Skipped rows left out of the report to bound it.
    left_out: u64,
    /// The first row is no header row (`Want::header_of`): every cell is blank.
    blank_all: bool,
}

impl<'w> Second<'w> {
    fn new(want: &'w Want<'w>, enc: Enc, delim: u8) -> Self {
        let builder = || {
            let mut b = csv::WriterBuilder::new();
            b.delimiter(delim).flexible(true);
            b
        };
        let report = (!want.skips.is_empty()).then(|| builder().from_writer(BOM.to_vec()));
        let archive_start = if matches!(enc, Enc::Utf8) {
            Vec::new()
        } else {
            BOM.to_vec()
        };
        let archive = (want.password_col.is_some()
            || want.password_header.is_some()
            || want.password_like
            || want.header_of.is_some())
        .then(|| builder().from_writer(Sink(RefCell::new(archive_start))));
        Second {
            want,
            delim,
            report,
            archive,
            cols: want.password_col.into_iter().collect(),
            width: 0,
            marker: match delim.is_ascii_whitespace() {
                true => vec![b'\n', delim, b'-'],
                false => vec![b'\n', delim],
            },
            last_row: 0,
            left_out: 0,
            blank_all: false,
        }
    }

    /// The header row (row `row`: blank lines may come before it).
    fn header(&mut self, row: u64, rec: &csv::ByteRecord) -> Result<()> {
        self.width = rec.len();
        let header = match (self.want.password_header, self.want.password_col) {
            (Some(h), _) => Some(h.to_string()),
            (None, Some(c)) => rec.get(c).map(super::bounds::header_text),
            (None, None) => None,
        };
        if let Some(h) = header.filter(|h| !h.trim_matches(super::fields::is_unseen).is_empty()) {
            let named = rec.iter().enumerate().filter(|(_, c)| same_header(c, &h));
            self.cols.extend(named.map(|(i, _)| i));
        }
        if self.want.password_like {
            let named = rec.iter().enumerate();
            // A mapped column is never blanked by its looks: the run reads it.
            let like = named.filter(|(i, c)| {
                !self.want.keep_mapped.contains(i) && mapping::looks_like_password(&clean_header(c))
            });
            self.cols.extend(like.map(|(i, _)| i));
        }
        self.cols.sort_unstable();
        self.cols.dedup();
        self.blank_all = self.want.header_of.is_some_and(|p| {
            let cells: Vec<String> = rec.iter().map(clean_header).collect();
            !mapping::looks_like_header(cells.iter().map(String::as_str), p)
        });
        if self.cols.is_empty() && !self.blank_all {
            self.archive = None;
        }
        let blank_all = self.blank_all;
        let shown = |c| if blank_all { b"".as_slice() } else { c };
        if let Some(w) = self.report.as_mut() {
            let cells = rec.iter().map(|c| Some(shown(c)));
            report_row(w, b"row", self.width, cells, b"reason")?;
        }
        if let Some(w) = self.archive.as_mut() {
            blank_lines(w, row.saturating_sub(1))?;
            w.write_byte_record(&rec.iter().map(shown).collect::<csv::ByteRecord>())?;
        }
        self.last_row = row;
        Ok(())
    }

    /// A row after the header, the file read up to byte `read`; the file may end inside a
    /// quoted cell of this row (`cut_off`).
    fn row(&mut self, row: u64, rec: &csv::ByteRecord, read: u64, cut_off: bool) -> Result<()> {
        let (want, width) = (self.want, self.width);
        let password = |i: usize| self.blank_all || self.cols.binary_search(&i).is_ok();
        // Every cell of a row that does not line up with the header, or the password cell.
        let joined = |c: &[u8]| super::record::holds_joined_lines(c, self.delim, width);
        let all =
            !self.cols.is_empty() && (cut_off || rec.len() != width || rec.iter().any(joined));
        let mapped_kept = |i: usize| rec.len() == width && want.keep_mapped.contains(&i);
        let blank = |i: usize| (all && want.keep_col != Some(i) && !mapped_kept(i)) || password(i);
        let mark_at = match all {
            true => self.mark_at(rec, &blank, cut_off),
            false => None,
        };
        if let Some(w) = self.archive.as_mut() {
            blank_lines(w, row.saturating_sub(self.last_row + 1))?;
            let mut out = csv::ByteRecord::new();
            let marker = self.marker.as_slice();
            for (i, c) in rec.iter().enumerate() {
                out.push_field(match blank(i) {
                    // A cell that held lines a quote joined (the password's or an unmapped
                    // one) is blanked, but not to nothing: a line break and the delimiter keep
                    // the row misshapen, as the run saw it, so approving does not take it for
                    // a good row and the users on the joined lines for missing (review s21).
                    true if all && joined(c) || mark_at == Some(i) => marker,
                    true => b"",
                    false => c,
                });
            }
            if cut_off {
                // Written out, the cut cell would be closed and the row read as whole when a
                // held run is approved: one cell more keeps it misshapen, as the run saw it.
                out.push_field(b"");
            }
            w.write_byte_record(&out)?;
        }
        self.last_row = row;
        if let (Some(w), Some(reason)) = (self.report.as_mut(), want.skips.get(&row)) {
            if report_full(w, read) {
                self.left_out += 1;
                return Ok(());
            }
            let cells =
                (0..rec.len().max(width)).map(|i| (!blank(i)).then(|| rec.get(i).unwrap_or(b"")));
            let reason = cut(reason, MAX_MESSAGE_CHARS);
            report_row(
                w,
                row.to_string().as_bytes(),
                width,
                cells,
                reason.as_bytes(),
            )?;
        }
        Ok(())
    }

    /// The cell of row `rec` (blanked whole: misshapen) that gets the joined-lines marker
    /// although it held none, when the row would be written blank otherwise (`blank`: the cells
    /// blanked). A blank line is no row when a held run's copy is read again: approving would
    /// find nothing misshapen and apply `on_missing`, which the run left out for this row (a row
    /// of the wrong width whose key cell is empty; review finding 2). Not for a row the run did
    /// not count either (its cells all blank, and not cut off in a quote).
    fn mark_at(
        &self,
        rec: &csv::ByteRecord,
        blank: &dyn Fn(usize) -> bool,
        cut_off: bool,
    ) -> Option<usize> {
        let white = |c: &[u8]| c.iter().all(u8::is_ascii_whitespace);
        let joined = |c: &[u8]| super::record::holds_joined_lines(c, self.delim, self.width);
        let shows = |(i, c): (usize, &[u8])| match blank(i) {
            true => joined(c),
            false => !white(c),
        };
        let counted = cut_off || !rec.iter().all(white);
        if !counted || rec.iter().enumerate().any(shows) {
            return None;
        }
        (0..rec.len()).find(|&i| blank(i))
    }

    /// (report, archive copy).
    fn finish(mut self) -> Result<ReportAndArchive> {
        if let (Some(w), true) = (self.report.as_mut(), self.left_out > 0) {
            let why = format!(
                "… and {} more skipped rows, not listed: the report is kept below twice the size of the file (fix the rows above and upload again to see the rest)",
                self.left_out
            );
            report_row(w, b"", self.width, std::iter::empty(), why.as_bytes())?;
        }
        let report = match self.report {
            Some(w) => Some(w.into_inner().map_err(|e| finish_error(e.error()))?),
            None => None,
        };
        let archive = match self.archive {
            Some(w) => Some(
                w.into_inner()
                    .map_err(|e| finish_error(e.error()))?
                    .0
                    .into_inner(),
            ),
            None => None,
        };
        Ok((report, archive))
    }
}

fn finish_error(e: &std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot finish a CSV: {e}")
}

/// Runs the second pass; returns (report, archive copy). Rows are numbered as the row pass
/// numbers them ([`RowReader`]), and the archive copy keeps the file's blank lines (not those
/// after the last record), so it numbers its rows the same.
/// A row too long to read is an error here: the callers (a run's outputs, a held run's kept
/// copy) read a file whose rows all passed, and a copy cut short would make the users after
/// it look missing when approved.
pub fn write(input: Input<'_>, enc: Enc, delim: u8, want: &Want<'_>) -> Result<ReportAndArchive> {
    match write_cut(input, enc, delim, want)? {
        (written, None) => Ok(written),
        (_, Some(after)) => anyhow::bail!(
            "cannot read the file a second time: the row after row {after} is longer than {} MiB",
            super::bounds::MAX_ROW_BYTES >> 20
        ),
    }
}

/// [`write`], and the last row of the archive copy when the row after it is longer than
/// `bounds::MAX_ROW_BYTES` (a run that read it failed): that row could hold a password the
/// pass cannot find, so it and the rest of the file are left out of the copy, which is never
/// more than the rows before it (review s25).
pub fn write_cut(
    input: Input<'_>,
    enc: Enc,
    delim: u8,
    want: &Want<'_>,
) -> Result<(ReportAndArchive, Option<u64>)> {
    let blanks = want.password_col.is_some() || want.password_header.is_some();
    if want.skips.is_empty() && !blanks && !want.password_like && want.header_of.is_none() {
        return Ok(((None, None), None));
    }
    const AGAIN: &str = "cannot read the file a second time";
    let mut rdr = RowReader::new(read::text(input, enc)?, delim);
    let mut pass = Second::new(want, enc, delim);
    let mut rec = csv::ByteRecord::new();
    let mut cut = None;
    let mut next = |rdr: &mut RowReader<_>, rec: &mut csv::ByteRecord| match rdr.read_row(rec) {
        Err(e) if is_row_too_long(&e) => {
            cut = Some(rdr.row());
            Ok(None)
        }
        other => other.context(AGAIN),
    };
    if let Some(row) = next(&mut rdr, &mut rec)? {
        pass.header(row, &rec)?;
        if pass.report.is_none() && pass.archive.is_none() {
            // Nothing to blank (no password-like column) and no report: no second pass.
            return Ok(((None, None), cut));
        }
        // The header line can be as large as the file: do not keep its buffer for the rows.
        rec = csv::ByteRecord::new();
        while let Some(row) = next(&mut rdr, &mut rec)? {
            pass.row(row, &rec, rdr.position().byte(), rdr.cut_in_quote())?;
        }
    } else if cut.is_none() {
        // No header row: nothing to blank (and nothing that could hold a password).
        pass.archive = None;
    }
    Ok((pass.finish()?, cut))
}

#[cfg(test)]
mod tests;
