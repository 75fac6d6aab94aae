//! Text formatting for the CLI: aligned tables, local times, sizes, and the CSV export.
//!
//! Values enter as strings (or typed records), and leave as text for stdout. Text that came
//! from a tenant, a webhook or SCIM receiver or the server is passed through [`clean`] where it
//! enters a table cell or a line, so control characters (ESC, BEL, …) cannot drive the
//! operator's terminal; [`table`] cleans every cell itself. JSON output goes through
//! [`json_text`], which writes the same characters as `\uXXXX` escapes (still the same JSON
//! values), and CSV cells through [`clean`] as well.

use chrono::{DateTime, Local, Utc};

/// A column: header and whether it is right-aligned (numbers).
pub struct Col(pub &'static str, pub bool);

/// `s` safe to print on a terminal: control characters and bidirectional overrides escaped
/// (`\u{1b}`, `\n`) as the log does ([`crate::logs::escape`]); everything else as it is.
pub fn clean(s: &str) -> String {
    crate::logs::escape(s).into_owned()
}

/// Whether `c` is one [`clean`] escapes: a control character (C0, DEL, C1), a line or
/// paragraph separator or a bidirectional override ([`crate::logs::escape`]'s rule).
fn is_unsafe(c: char) -> bool {
    let mut buf = [0u8; 4];
    matches!(
        crate::logs::escape(c.encode_utf8(&mut buf)),
        std::borrow::Cow::Owned(_)
    )
}

/// `v` as JSON text (indented when `pretty`, else one line), with every character [`clean`]
/// would escape written as `\uXXXX`: serde_json leaves DEL, the C1 controls (U+009B is a
/// terminal's CSI) and bidi overrides raw, and a tenant's first name could drive the
/// operator's terminal through `--json` (review s30).
pub fn json_text(v: &impl serde::Serialize, pretty: bool) -> anyhow::Result<String> {
    let mut out = Vec::new();
    if pretty {
        let f = SafeJson(serde_json::ser::PrettyFormatter::new());
        v.serialize(&mut serde_json::Serializer::with_formatter(&mut out, f))?;
    } else {
        let f = SafeJson(serde_json::ser::CompactFormatter);
        v.serialize(&mut serde_json::Serializer::with_formatter(&mut out, f))?;
    }
    Ok(String::from_utf8(out)?)
}

/// A serde_json formatter that escapes the characters of [`is_unsafe`] inside strings and
/// otherwise lays out as the one it wraps.
struct SafeJson<F>(F);

impl<F: serde_json::ser::Formatter> serde_json::ser::Formatter for SafeJson<F> {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if is_unsafe(c) {
                w.write_all(&fragment.as_bytes()[start..i])?;
                // Every such character is in the Basic Multilingual Plane: one \u escape.
                write!(w, "\\u{:04x}", c as u32)?;
                start = i + c.len_utf8();
            }
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(w)
    }
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

    /// Review s30: ESC, DEL, C1 (CSI) and a bidi override leave `--json` as `\u` escapes,
    /// and the text still parses to the same value.
    #[test]
    fn json_escapes_what_clean_escapes() {
        let name = "A\u{1b}[31m\u{7f}\u{9b}2J\u{202e}Ž\"\\";
        let v = serde_json::json!({ "first_name": name, "n": [1, 2] });
        for pretty in [true, false] {
            let text = json_text(&v, pretty).unwrap();
            assert!(text.chars().all(|c| !is_unsafe(c) || c == '\n'), "{text:?}");
            assert!(
                text.contains(r#"A\u001b[31m\u007f\u009b2J\u202eŽ\"\\"#),
                "{text}"
            );
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back, v);
        }
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
