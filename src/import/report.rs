//! The failure report (design.md §6) and the archived copy with password cells blanked.
//!
//! Data enters as a second streaming pass over the same file (same encoding and delimiter) and
//! the skip reasons by row number; it leaves as bytes: the report CSV (a `row` column, the
//! original columns, a `reason` column; same delimiter; UTF-8 with BOM; cells starting with
//! `= + - @` prefixed with `'`; password cells blank) and, when the file has a password column,
//! the whole file re-written with that column blank (UTF-8, same delimiter).

use super::read::{self, Enc, Input};
use anyhow::{Context, Result};
use std::collections::HashMap;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Neutralises a cell that a spreadsheet would run as a formula.
pub fn safe_cell(c: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    match c.first() {
        Some(b'=' | b'+' | b'-' | b'@') => {
            let mut v = Vec::with_capacity(c.len() + 1);
            v.push(b'\'');
            v.extend_from_slice(c);
            std::borrow::Cow::Owned(v)
        }
        _ => std::borrow::Cow::Borrowed(c),
    }
}

/// What the second pass should produce.
pub struct Want<'a> {
    /// Skip reasons by row number; a report is made when not empty.
    pub skips: &'a HashMap<u64, String>,
    /// File column of the password, blanked everywhere; an archive copy is made when set.
    pub password_col: Option<usize>,
}

/// (failure report, archive copy).
pub type ReportAndArchive = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Runs the second pass; returns (report, archive copy).
pub fn write(input: Input<'_>, enc: Enc, delim: u8, want: &Want<'_>) -> Result<ReportAndArchive> {
    if want.skips.is_empty() && want.password_col.is_none() {
        return Ok((None, None));
    }
    let text = read::text(input, enc)?;
    let mut rdr = read::csv_reader(text, delim);
    let builder = || {
        let mut b = csv::WriterBuilder::new();
        b.delimiter(delim).flexible(true);
        b
    };
    let mut report = (!want.skips.is_empty()).then(|| builder().from_writer(BOM.to_vec()));
    let archive_start = if matches!(enc, Enc::Utf8) {
        Vec::new()
    } else {
        BOM.to_vec()
    };
    let mut archive = want
        .password_col
        .map(|_| builder().from_writer(archive_start));
    let mut rec = csv::ByteRecord::new();
    let mut width = 0;
    let mut line = 0u64;
    let blank = |i: usize| want.password_col == Some(i);
    while rdr
        .read_byte_record(&mut rec)
        .context("cannot read the file a second time")?
    {
        line += 1;
        if line == 1 {
            width = rec.len();
            if let Some(w) = report.as_mut() {
                let mut out = csv::ByteRecord::new();
                out.push_field(b"row");
                for c in rec.iter() {
                    out.push_field(&safe_cell(c));
                }
                out.push_field(b"reason");
                w.write_byte_record(&out)?;
            }
            if let Some(w) = archive.as_mut() {
                w.write_byte_record(&rec)?;
            }
            continue;
        }
        if let Some(w) = archive.as_mut() {
            let mut out = csv::ByteRecord::new();
            for (i, c) in rec.iter().enumerate() {
                out.push_field(if blank(i) { b"" } else { c });
            }
            w.write_byte_record(&out)?;
        }
        if let (Some(w), Some(reason)) = (report.as_mut(), want.skips.get(&line)) {
            let mut out = csv::ByteRecord::new();
            out.push_field(line.to_string().as_bytes());
            for i in 0..width {
                let c = safe_cell(rec.get(i).unwrap_or(b""));
                out.push_field(if blank(i) { b"" } else { &c });
            }
            out.push_field(&safe_cell(reason.as_bytes()));
            w.write_byte_record(&out)?;
        }
    }
    let finish = |w: csv::Writer<Vec<u8>>| -> Result<Vec<u8>> {
        w.into_inner()
            .map_err(|e| anyhow::anyhow!("cannot finish a CSV: {}", e.error()))
    };
    Ok((
        report.map(finish).transpose()?,
        archive.map(finish).transpose()?,
    ))
}
