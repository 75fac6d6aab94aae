//! Text formatting for the CLI: aligned tables, local times, sizes, and the CSV export.
//!
//! Values enter as strings (or typed records), and leave as text for stdout. Text that came
//! from a tenant, a webhook or SCIM receiver or the server is passed through [`clean`] where it
//! enters a table cell or a line, so control characters (ESC, BEL, …) cannot drive the
//! operator's terminal; [`table`] cleans every cell itself.

use chrono::{DateTime, Local, Utc};

/// A column: header and whether it is right-aligned (numbers).
pub struct Col(pub &'static str, pub bool);

/// `s` safe to print on a terminal: control characters and bidirectional overrides escaped
/// (`\u{1b}`, `\n`) as the log does ([`crate::logs::escape`]); everything else as it is.
pub fn clean(s: &str) -> String {
    crate::logs::escape(s).into_owned()
}

/// Renders rows under headers, columns padded to their widest cell, two spaces apart. Every
/// cell is [`clean`]ed first.
pub fn table(cols: &[Col], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| clean(c)).collect())
        .collect();
    let mut widths: Vec<usize> = cols.iter().map(|c| c.0.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, ((cell, w), col)) in cells.iter().zip(&widths).zip(cols).enumerate() {
            let pad = w.saturating_sub(cell.chars().count());
            let last = i + 1 == cols.len();
            if col.1 {
                l.push_str(&" ".repeat(pad));
                l.push_str(cell);
            } else {
                l.push_str(cell);
                if !last {
                    l.push_str(&" ".repeat(pad));
                }
            }
            if !last {
                l.push_str("  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(cols.iter().map(|c| c.0).collect());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// A time in the local time zone, to the second.
pub fn local(t: &DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// An RFC 3339 string from the API in local time (as given when it does not parse).
pub fn local_str(s: &str) -> String {
    DateTime::parse_from_rfc3339(s)
        .map(|t| local(&t.with_timezone(&Utc)))
        .unwrap_or_else(|_| s.to_string())
}

/// A byte count for people: `812 B`, `12.3 kB`, `4.5 MB`, `1.2 GB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Cells that a spreadsheet would run as a formula get a leading `'`, by the failure report's own
/// rule ([`crate::import::safe_cell`]: `= + - @`, TAB, CR). One shape is kept: a phone number
/// written as `+`, digits and single spaces (`+385 1 555 0101`), which holds no operator a
/// spreadsheet could compute with. Numbers with `-`, `/`, `.` or a second `+` (`-2+3`, `+1+1`)
/// are prefixed: a spreadsheet would show their result, not the value.
pub fn csv_safe(cell: &str) -> String {
    let phone = cell.strip_prefix('+').is_some_and(|rest| {
        rest.starts_with(|c: char| c.is_ascii_digit())
            && !rest.contains("  ")
            && rest.chars().all(|c| c.is_ascii_digit() || c == ' ')
    });
    if phone {
        return cell.to_string();
    }
    String::from_utf8_lossy(&crate::import::safe_cell(cell.as_bytes())).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned() {
        let t = table(
            &[Col("NAME", false), Col("N", true), Col("NOTE", false)],
            &[
                vec!["a".into(), "10".into(), "x".into()],
                vec!["long name".into(), "2".into(), "".into()],
            ],
        );
        assert_eq!(t, "NAME        N  NOTE\na          10  x\nlong name   2\n");
    }

    /// Review s16 http, F1: a cell cannot carry a terminal control sequence.
    #[test]
    fn cells_are_cleaned() {
        let t = table(
            &[Col("NAME", false)],
            &[vec!["Esc\u{1b}[31mRED\u{1b}]0;pwned\u{7}".into()]],
        );
        assert_eq!(t, "NAME\nEsc\\u{1b}[31mRED\\u{1b}]0;pwned\\u{7}\n");
        assert_eq!(clean("a\nb\u{202e}c"), "a\\nb\\u{202e}c");
    }

    #[test]
    fn sizes_and_cells() {
        assert_eq!(size(999), "999 B");
        assert_eq!(size(12_345), "12.3 kB");
        assert_eq!(size(209_715_200), "209.7 MB");
        assert_eq!(csv_safe("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(csv_safe("+385 1 234 567"), "+385 1 234 567");
        assert_eq!(csv_safe("@cmd"), "'@cmd");
        assert_eq!(csv_safe("-"), "'-");
        assert_eq!(csv_safe("Ana"), "Ana");
    }

    /// Review of 2026-11-30, F8: `+1+1` and `-2+3` were kept as "numbers", and a spreadsheet
    /// shows them computed (2, 1).
    #[test]
    fn numbers_a_spreadsheet_would_compute_are_neutralised() {
        for cell in ["+1+1", "-2+3", "-12.5", "+1/2", "\t1", "\r1", "+ 1", "+1-1"] {
            assert_eq!(csv_safe(cell), format!("'{cell}"), "{cell:?}");
        }
        for cell in ["+385 1 555 0101", "+38515550101", "12", "385 1"] {
            assert_eq!(csv_safe(cell), cell, "{cell:?}");
        }
    }
}
