//! Row numbers: the one rule every pass over a file numbers its rows by (the row pass, the
//! failure report, the archive copy and a held run's kept copy, which `approve` numbers again).
//!
//! Rows are numbered as a spreadsheet shows them: the first line is row 1 (the header, unless
//! blank lines come before it); a blank line is a row although the `csv` crate skips it without
//! a record; a record whose quoted cell spans several lines is one row; a line break is LF,
//! CRLF or CR alone. So a record's number is one more than the line breaks before it, less the
//! line breaks inside the cells of the records before it.
//!
//! Data enters as the decoded text stream; it leaves as a [`RowReader`], a `csv` reader that
//! gives each record with its row number. Between the text and the `csv` reader a [`Breaks`]
//! counts the line breaks in what the `csv` reader has consumed. It keeps a copy of the last
//! chunk it passed on (at most the `csv` reader's buffer, 64 KiB): the `csv` reader asks for
//! more only when it has consumed all it was given, so its position is always in that chunk.

use super::{bounds, read};
use std::io::{self, Read};

/// Line breaks in `bytes` (CR, LF, CRLF counted once), given whether the byte before them was
/// a CR; and whether their last byte is a CR.
fn count_breaks(bytes: &[u8], after_cr: bool) -> (u64, bool) {
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return (0, after_cr);
    };
    let n = if !after_cr && !bytes.contains(&b'\r') {
        bytes.iter().filter(|&&b| b == b'\n').count() as u64
    } else {
        // A CR, or an LF not right after a CR, ends a line.
        let ends = |b: u8, before: u8| u64::from(b == b'\r' || (b == b'\n' && before != b'\r'));
        let before_first = if after_cr { b'\r' } else { 0 };
        let rest = bytes.iter().skip(1).zip(bytes);
        ends(first, before_first) + rest.map(|(&b, &a)| ends(b, a)).sum::<u64>()
    };
    (n, last == b'\r')
}

/// Line breaks inside the cells of a record (each cell on its own: a cell ending in CR and the
/// next starting with LF are two line breaks in the file too).
fn breaks_in(rec: &csv::ByteRecord) -> u64 {
    let all = rec.as_slice();
    if !all.contains(&b'\n') && !all.contains(&b'\r') {
        return 0;
    }
    rec.iter().map(|c| count_breaks(c, false).0).sum()
}

/// Where the stream is, as a CSV parser with `"` quotes sees it (the `csv` crate's rules: a
/// quote opens a quoted cell only at the start of a cell, `""` inside one is a quote, and
/// anything after the closing quote up to the delimiter is kept as it is). Tracked so that a
/// file cut off inside a quoted cell can be told from a whole one: the `csv` crate ends such a
/// record at the end of the file without a word (review s16 F6).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Quotes {
    CellStart,
    InCell,
    Quoted,
    QuoteInQuoted,
}

impl Quotes {
    fn after(self, bytes: &[u8], delim: u8) -> Quotes {
        let mut q = self;
        for &b in bytes {
            let ends_cell = b == delim || b == b'\n' || b == b'\r';
            q = match (q, b) {
                (Quotes::Quoted, b'"') => Quotes::QuoteInQuoted,
                (Quotes::Quoted, _) => Quotes::Quoted,
                (Quotes::QuoteInQuoted, b'"') => Quotes::Quoted,
                (Quotes::CellStart, b'"') => Quotes::Quoted,
                (_, _) if ends_cell => Quotes::CellStart,
                _ => Quotes::InCell,
            };
        }
        q
    }
}

/// The error of a row longer than [`bounds::MAX_ROW_BYTES`] (see [`is_row_too_long`]).
#[derive(Debug)]
pub struct RowTooLong;

impl std::fmt::Display for RowTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a row is longer than {} MiB: a quote that is never closed joins the lines after it \
             into one cell (check the quotes), or this is not a CSV file",
            bounds::MAX_ROW_BYTES >> 20
        )
    }
}

impl std::error::Error for RowTooLong {}

/// The reader stopped at a row longer than [`bounds::MAX_ROW_BYTES`].
pub fn is_row_too_long(e: &csv::Error) -> bool {
    match e.kind() {
        csv::ErrorKind::Io(io) => io.get_ref().is_some_and(|inner| inner.is::<RowTooLong>()),
        _ => false,
    }
}

/// A reader that counts the line breaks in what its consumer has consumed (see the module doc).
pub struct Breaks<R> {
    inner: R,
    /// The last chunk passed on, and its offset in the stream.
    chunk: Vec<u8>,
    start: u64,
    /// Bytes of `chunk` counted so far.
    cursor: usize,
    /// Line breaks before `start + cursor`, and whether the byte before it is a CR.
    counted: u64,
    after_cr: bool,
    /// The stream has ended.
    eof: bool,
    /// The last byte of the stream so far (`None` before the first).
    last: Option<u8>,
    /// The quoting state after everything read so far, and the delimiter it needs.
    quotes: Quotes,
    delim: u8,
    /// Where the record being read begins in the stream: the end of the last one read, moved
    /// past whole chunks of nothing but line breaks (blank lines are not part of a row).
    record_start: u64,
    /// Everything from `record_start` to the end of the last chunk is line breaks.
    blank_since_record: bool,
}

/// Bytes of the stream one record may span before [`Breaks`] stops the reader early: twice
/// [`bounds::MAX_ROW_BYTES`] (a cell of quotes doubles them) and two chunks of blank lines
/// before it. A record within the limit never reaches this, so whether a row passes never
/// depends on where the chunks fall: [`RowReader::read_row`] measures the record itself.
const EARLY_STOP_BYTES: u64 = 2 * bounds::MAX_ROW_BYTES + (128 << 10);

impl<R: Read> Breaks<R> {
    fn new(inner: R, delim: u8) -> Self {
        Breaks {
            inner,
            chunk: Vec::new(),
            start: 0,
            cursor: 0,
            counted: 0,
            after_cr: false,
            eof: false,
            last: None,
            quotes: Quotes::CellStart,
            delim,
            record_start: 0,
            blank_since_record: true,
        }
    }

    /// Line breaks before byte `at` of the stream (`at` never goes back, and is in the last
    /// chunk; an earlier one gives the count at the start of the last chunk).
    fn before(&mut self, at: u64) -> u64 {
        let end = usize::try_from(at.saturating_sub(self.start))
            .unwrap_or(usize::MAX)
            .min(self.chunk.len());
        if end > self.cursor {
            let (n, cr) = count_breaks(&self.chunk[self.cursor..end], self.after_cr);
            self.counted += n;
            self.after_cr = cr;
            self.cursor = end;
        }
        self.counted
    }
}

impl<R: Read> Read for Breaks<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The consumer consumed all it was given, inside one record so far.
        let passed = self.start + self.chunk.len() as u64;
        if self.blank_since_record {
            let from = usize::try_from(self.record_start.saturating_sub(self.start))
                .unwrap_or(usize::MAX)
                .min(self.chunk.len());
            if self.chunk[from..]
                .iter()
                .all(|b| *b == b'\n' || *b == b'\r')
            {
                self.record_start = passed;
            } else {
                self.blank_since_record = false;
            }
        }
        if passed.saturating_sub(self.record_start) > EARLY_STOP_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, RowTooLong));
        }
        let n = self.inner.read(buf)?;
        // The consumer asks for more once it consumed the last chunk: count all of it.
        self.before(self.start + self.chunk.len() as u64);
        self.start += self.chunk.len() as u64;
        self.chunk.clear();
        self.chunk.extend_from_slice(&buf[..n]);
        self.quotes = self.quotes.after(&buf[..n], self.delim);
        self.cursor = 0;
        self.eof = n == 0;
        if n > 0 {
            self.last = Some(buf[n - 1]);
        }
        Ok(n)
    }
}

/// A `csv` reader (see [`read::csv_reader`]) that numbers its records as rows.
pub struct RowReader<R> {
    csv: csv::Reader<Breaks<R>>,
    /// Line breaks inside the cells of the records read so far.
    inside: u64,
    /// The row number of the last record read (0 before the first).
    row: u64,
}

impl<R: Read> RowReader<R> {
    pub fn new(text: R, delim: u8) -> Self {
        RowReader {
            csv: read::csv_reader(Breaks::new(text, delim), delim),
            inside: 0,
            row: 0,
        }
    }

    /// Reads the next record into `rec`; its row number, or `None` at the end of the file.
    pub fn read_row(&mut self, rec: &mut csv::ByteRecord) -> csv::Result<Option<u64>> {
        if !self.csv.read_byte_record(rec)? {
            return Ok(None);
        }
        // The row itself, measured the same however the stream was cut into chunks: its text
        // and a byte a cell (a delimiter, or the line break after the last).
        if rec.as_slice().len() + rec.len() > bounds::MAX_ROW_BYTES as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidData, RowTooLong).into());
        }
        self.inside += breaks_in(rec);
        let end = self.csv.position().byte();
        let breaks = self.csv.get_mut();
        breaks.blank_since_record = true;
        // The line breaks up to the record's end are those before it, those inside the cells
        // so far, and the one that ends it (none when the file ends without one: the `csv`
        // reader then had to ask for more and found the end).
        let ended = u64::from(!breaks.eof);
        breaks.record_start = end;
        let row = (breaks.before(end) + 1).saturating_sub(self.inside + ended);
        // Never the same number twice, whatever the input.
        self.row = row.max(self.row + 1);
        Ok(Some(self.row))
    }

    /// The last record read ends where the file ends, inside a quoted cell: the file was cut
    /// off there, or a quote was never closed.
    pub fn cut_in_quote(&self) -> bool {
        let breaks = self.csv.get_ref();
        breaks.eof && breaks.quotes == Quotes::Quoted
    }

    /// The file has been read to its end, and its last byte is no line break: its last row
    /// may have been cut short (an upload stopped early, and its client still closed the file).
    pub fn ends_unbroken(&self) -> bool {
        let breaks = self.csv.get_ref();
        breaks.eof && breaks.last.is_some_and(|b| b != b'\n' && b != b'\r')
    }

    /// The row number of the last record read (0 before the first).
    pub fn row(&self) -> u64 {
        self.row
    }

    /// Where the reader is in the decoded text.
    pub fn position(&self) -> &csv::Position {
        self.csv.position()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands its bytes out at most `.1` at a time.
    struct Chunks<'a>(&'a [u8], usize);
    impl Read for Chunks<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// (first cell, row number) of every record of `text`, read in chunks of `chunk` bytes.
    fn rows(text: &[u8], chunk: usize) -> Vec<(String, u64)> {
        let mut r = RowReader::new(Chunks(text, chunk), b',');
        let mut rec = csv::ByteRecord::new();
        let mut out = Vec::new();
        while let Some(row) = r.read_row(&mut rec).unwrap() {
            let first = String::from_utf8_lossy(rec.get(0).unwrap_or_default()).into_owned();
            out.push((first, row));
        }
        out
    }

    fn check(text: &str, want: &[(&str, u64)]) {
        let want: Vec<(String, u64)> = want.iter().map(|(c, r)| (c.to_string(), *r)).collect();
        for chunk in [1, 2, 3, 7, 1 << 16] {
            assert_eq!(
                rows(text.as_bytes(), chunk),
                want,
                "{text:?} in chunks of {chunk}"
            );
        }
    }

    /// A row past `MAX_ROW_BYTES` is an error (a cell per byte would cost the `csv` reader 8
    /// bytes each); a file of many shorter rows, larger in all, reads on (review s25).
    #[test]
    fn a_row_longer_than_the_limit_fails_and_many_short_rows_do_not() {
        let max = usize::try_from(bounds::MAX_ROW_BYTES).unwrap();
        let mut rows_text = b"h,x\n".to_vec();
        let line = format!("{},y\n", "a".repeat(997));
        while rows_text.len() < 3 * max {
            rows_text.extend_from_slice(line.as_bytes());
        }
        let n = rows(&rows_text, 1 << 16).len();
        assert_eq!(n, (rows_text.len() - 4) / 1000 + 1);

        // Blank lines are no row's: megabytes of them pass.
        let blank = format!(
            "h,x\n{}a,b\n{}",
            "\n".repeat(3 * max),
            "\r\n".repeat(2 * max)
        );
        assert_eq!(rows(blank.as_bytes(), 1 << 16).len(), 2);
        // At the limit, whatever the chunks: a row of exactly the limit passes, one byte more
        // does not (a row of `max - 1` bytes and its line break).
        let at = format!("h\n{}\nb\n", "a".repeat(max - 1));
        let over = format!("h\n{}\nb\n", "a".repeat(max));
        for chunk in [1000, 4096, 1 << 16, 1 << 20] {
            assert_eq!(rows(at.as_bytes(), chunk).len(), 3, "chunks of {chunk}");
            let mut r = RowReader::new(Chunks(over.as_bytes(), chunk), b',');
            let mut rec = csv::ByteRecord::new();
            assert_eq!(r.read_row(&mut rec).unwrap(), Some(1));
            let e = r.read_row(&mut rec).unwrap_err();
            assert!(is_row_too_long(&e), "chunks of {chunk}: {e}");
            assert_eq!(r.row(), 1, "the last good row");
        }

        for long in [
            format!("h,x\na,b\n{}\nc,d\n", ",".repeat(2 * max)),
            format!("h,x\n\"{}", "z\n".repeat(max)),
            format!("h,x\n\"{}\"\n", "\"\"".repeat(max)),
        ] {
            let mut r = RowReader::new(Chunks(long.as_bytes(), 1 << 16), b',');
            let mut rec = csv::ByteRecord::new();
            assert_eq!(r.read_row(&mut rec).unwrap(), Some(1));
            let err = loop {
                match r.read_row(&mut rec) {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("the long row was read"),
                    Err(e) => {
                        assert!(is_row_too_long(&e), "{e}");
                        break e.to_string();
                    }
                }
            };
            assert!(err.contains("a row is longer than 1 MiB"), "{err}");
        }
    }

    #[test]
    fn blank_lines_are_rows_in_every_line_ending() {
        let want = [("h", 1), ("a", 2), ("b", 4), ("c", 5), ("d", 8)];
        for nl in ["\n", "\r\n", "\r"] {
            let text = ["h", "a", "", "b", "c", "", "", "d", "", ""].join(nl);
            check(&text, &want);
            check(&(text + nl), &want);
        }
        // Mixed endings: LF CR is two line breaks, CR LF one.
        check(
            "h\n\ra\r\n\nb\r\rc",
            &[("h", 1), ("a", 3), ("b", 5), ("c", 7)],
        );
    }

    #[test]
    fn blank_lines_before_the_header_are_rows() {
        check("\n\nh\na", &[("h", 3), ("a", 4)]);
        check("\r\n\r\nh\r\na\r\n", &[("h", 3), ("a", 4)]);
        check("\r\rh\ra\r", &[("h", 3), ("a", 4)]);
    }

    #[test]
    fn lines_of_delimiters_are_rows() {
        check(
            "h,x\n,\na\n ,\n\nb",
            &[("h", 1), ("", 2), ("a", 3), (" ", 4), ("b", 6)],
        );
    }

    #[test]
    fn a_record_over_several_lines_is_one_row() {
        for nl in ["\n", "\r\n", "\r"] {
            let text = format!("h,x{nl}\"a{nl}{nl}a\",\"1{nl}2\"{nl}{nl}b,\"{nl}\"{nl}c");
            let cell = format!("a{nl}{nl}a");
            check(&text, &[("h", 1), (cell.as_str(), 2), ("b", 4), ("c", 5)]);
        }
        // A cell ending in CR and the next starting with LF: two line breaks, still one row.
        check("h\n\"a\r\",\"\nb\"\n\nc", &[("h", 1), ("a\r", 2), ("c", 4)]);
        // Escaped quotes next to line breaks.
        check("h\n\"a\r\"\"\n\"\nc", &[("h", 1), ("a\r\"\n", 2), ("c", 3)]);
    }

    #[test]
    fn an_unbalanced_quote_to_the_end_is_one_row() {
        check("h\n\na\n\"b\n\nc\n", &[("h", 1), ("a", 3), ("b\n\nc\n", 4)]);
        check("h\r\"b\r", &[("h", 1), ("b\r", 2)]);
    }

    /// Whether the last record of `text`, read in chunks of `chunk`, is cut inside a quote.
    fn cut(text: &str, chunk: usize) -> bool {
        let mut r = RowReader::new(Chunks(text.as_bytes(), chunk), b',');
        let mut rec = csv::ByteRecord::new();
        let mut last = false;
        while r.read_row(&mut rec).unwrap_or(None).is_some() {
            last = r.cut_in_quote();
        }
        last
    }

    #[test]
    fn a_file_ending_inside_a_quoted_cell_is_cut() {
        for chunk in [1, 2, 3, 1 << 16] {
            assert!(cut("h,x\na,\"C", chunk));
            assert!(cut("h,x\na,\"C\"\"d", chunk));
            assert!(cut("h,x\n\"a\nb", chunk));
            assert!(cut("h,x\na,b\n\"", chunk));
            for whole in [
                "h,x\na,\"C\"",
                "h,x\na,\"C\"\n",
                "h,x\na,b\"c",
                "h,x\na,\"C\"\"\"",
                "h,x\na,\"C\" d",
                "h,x\na,\"\"",
                "h,x\n\"a\nb\",c\r\n",
            ] {
                assert!(!cut(whole, chunk), "{whole:?}");
            }
        }
    }

    #[test]
    fn count_breaks_counts_crlf_once() {
        assert_eq!(count_breaks(b"a\r\nb\n\rc\r", false), (4, true));
        assert_eq!(count_breaks(b"\nx", true), (0, false));
        assert_eq!(count_breaks(b"", true), (0, true));
    }
}
