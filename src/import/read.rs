//! Reading a file: one scan for sha256 (skipped when the caller knows it), size and encoding; then a decoded UTF-8 stream, a
//! quote-aware delimiter guess, and a `csv` reader over it.
//!
//! Data enters as bytes in memory or a path (read in 1 MiB chunks, never whole) and leaves as
//! a [`Scan`] (facts about the file) and a `csv::Reader` over UTF-8 text without a BOM.

pub use super::encoding::Enc;
use super::encoding::{self, Utf8Seen};
use crate::config::{DelimiterSetting, EncodingSetting};
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::Path;

/// Where the bytes come from.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    Bytes(&'a [u8]),
    Path(&'a Path),
}

impl<'a> Input<'a> {
    pub(super) fn open(&self) -> Result<Box<dyn Read + 'a>> {
        match *self {
            Input::Bytes(b) => Ok(Box::new(Cursor::new(b))),
            Input::Path(p) => Ok(Box::new(BufReader::with_capacity(
                1 << 20,
                File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
            ))),
        }
    }
}

/// How a file whose header is mapped is read again (for the failure report, the archive copy
/// and a held run's kept copy): its input, encoding, delimiter and password column.
#[derive(Clone, Copy)]
pub struct Layout<'a> {
    pub input: Input<'a>,
    pub enc: Enc,
    pub delim: u8,
    /// File column of the password, if the file has one.
    pub password_col: Option<usize>,
}

/// Facts gathered by one pass over the bytes.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Hex sha256 of the bytes, when asked for.
    pub sha256: Option<String>,
    pub bytes: u64,
    /// The encoding to decode with, or a sentence saying why the file cannot be decoded.
    pub encoding: Result<Enc, String>,
    /// The encoding for a best-effort reading when `encoding` is an error (to blank the
    /// passwords of the archived copy): what `auto` would choose if NUL bytes were allowed. It
    /// decodes any bytes (UTF-8 only when they are valid UTF-8; malformed UTF-16 becomes U+FFFD).
    pub fallback: Enc,
}

/// Measures the file, hashes it when `hash` (a run hashes its file once: a held run's approval
/// and a file only archived do not), and decides its encoding (`encoding::decide`).
pub fn scan(input: Input<'_>, setting: EncodingSetting, hash: bool) -> Result<Scan> {
    let mut r = input.open()?;
    let mut sha = hash.then(Sha256::new);
    let mut buf = vec![0u8; 1 << 20];
    let mut head: Vec<u8> = Vec::new();
    // The start of a character split by the end of the previous read stays at the front of
    // `buf` (at most 3 bytes), so the UTF-8 check needs no copy of the file.
    let mut keep = 0usize;
    let mut utf8 = Utf8Seen::default();
    let mut nul = false;
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf[keep..]).context("cannot read the file")?;
        if n == 0 {
            break;
        }
        let chunk = &buf[keep..keep + n];
        if let Some(sha) = sha.as_mut() {
            sha.update(chunk);
        }
        total += n as u64;
        if head.len() < 4 {
            head.extend_from_slice(&chunk[..chunk.len().min(4 - head.len())]);
        }
        if !nul && memchr_nul(chunk) {
            nul = true;
        }
        let filled = keep + n;
        let tail = utf8.check(&buf[..filled]);
        buf.copy_within(filled - tail..filled, 0);
        keep = tail;
    }
    if keep > 0 {
        // The file ends inside a character.
        utf8.cut_off();
    }
    let (encoding, fallback) = encoding::decide(input, setting, &head, &utf8, nul)?;
    Ok(Scan {
        sha256: sha.map(|sha| hex::encode(sha.finalize())),
        bytes: total,
        encoding,
        fallback,
    })
}

fn memchr_nul(b: &[u8]) -> bool {
    b.contains(&0)
}

/// A reader that turns bytes in some encoding into UTF-8, streaming.
struct Decode<'a> {
    inner: Box<dyn Read + 'a>,
    dec: encoding_rs::Decoder,
    inbuf: Vec<u8>,
    in_start: usize,
    in_end: usize,
    out: Vec<u8>,
    out_start: usize,
    out_end: usize,
    eof: bool,
    done: bool,
}

impl Read for Decode<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.out_start < self.out_end {
                let n = buf.len().min(self.out_end - self.out_start);
                buf[..n].copy_from_slice(&self.out[self.out_start..self.out_start + n]);
                self.out_start += n;
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            if self.in_start == self.in_end && !self.eof {
                let n = self.inner.read(&mut self.inbuf)?;
                self.in_start = 0;
                self.in_end = n;
                self.eof = n == 0;
            }
            let (result, read, written, _) = self.dec.decode_to_utf8(
                &self.inbuf[self.in_start..self.in_end],
                &mut self.out,
                self.eof,
            );
            self.in_start += read;
            self.out_start = 0;
            self.out_end = written;
            // The last call (at end of input) that consumed everything finishes the decoder:
            // it must not be called again, even when that call still wrote output (say, a
            // replacement character for an odd trailing byte).
            if self.eof && result == encoding_rs::CoderResult::InputEmpty {
                self.done = true;
            }
        }
    }
}

/// The file as a UTF-8 stream without a BOM.
pub fn text<'a>(input: Input<'a>, enc: Enc) -> Result<Box<dyn Read + 'a>> {
    let mut r = input.open()?;
    let dec = match enc {
        Enc::Utf8 => return Ok(r),
        Enc::Utf8Bom => {
            let mut bom = [0u8; 3];
            r.read_exact(&mut bom).context("cannot read the file")?;
            return Ok(r);
        }
        Enc::Utf16Le => encoding_rs::UTF_16LE.new_decoder_with_bom_removal(),
        Enc::Utf16Be => encoding_rs::UTF_16BE.new_decoder_with_bom_removal(),
        Enc::Legacy(e) => e.new_decoder_without_bom_handling(),
    };
    Ok(Box::new(Decode {
        inner: r,
        dec,
        inbuf: vec![0; 1 << 16],
        in_start: 0,
        in_end: 0,
        out: vec![0; 3 << 16],
        out_start: 0,
        out_end: 0,
        eof: false,
        done: false,
    }))
}

/// How many leading bytes of text the delimiter guess looks at.
const SNIFF_BYTES: usize = 64 * 1024;

/// Reads the head of the stream, guesses the delimiter, and returns a stream that still
/// starts at the beginning.
pub fn with_delimiter<'a>(
    mut r: Box<dyn Read + 'a>,
    setting: DelimiterSetting,
) -> Result<(Box<dyn Read + 'a>, u8)> {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    (&mut r)
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .context("cannot read the file")?;
    let delim = match setting {
        DelimiterSetting::Fixed(d) => d,
        DelimiterSetting::Auto => sniff(&head),
    };
    Ok((Box::new(Cursor::new(head).chain(r)), delim))
}

/// Quote-aware delimiter guess among `;` `,` tab `|` over the first lines: the candidate that
/// appears outside quotes on the header and the same number of times on most following lines.
pub fn sniff(head: &[u8]) -> u8 {
    const CANDIDATES: [u8; 4] = [b';', b',', b'\t', b'|'];
    let mut best = (b',', 0usize, 0usize);
    for &d in &CANDIDATES {
        let counts = counts_per_line(head, d, 20);
        let Some(&first) = counts.first() else {
            continue;
        };
        if first == 0 {
            continue;
        }
        let consistent = counts[1..].iter().filter(|&&c| c == first).count();
        if (consistent, first) > (best.1, best.2) {
            best = (d, consistent, first);
        }
    }
    best.0
}

fn counts_per_line(head: &[u8], d: u8, max_lines: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut count = 0;
    let mut line_has_text = false;
    for &b in head {
        if b == b'"' {
            in_quotes = !in_quotes;
        } else if !in_quotes && (b == b'\n' || b == b'\r') {
            if line_has_text {
                out.push(count);
                if out.len() >= max_lines {
                    return out;
                }
            }
            count = 0;
            line_has_text = false;
            continue;
        } else if !in_quotes && b == d {
            count += 1;
        }
        line_has_text = true;
    }
    if line_has_text && out.len() < max_lines {
        // The last line may be cut by the sniff window: count it only if it is the only one.
        if out.is_empty() {
            out.push(count);
        }
    }
    out
}

/// A csv reader over UTF-8 text: no header handling (the engine maps headers itself), rows may
/// differ in length (the engine reports it). A run reads through [`super::rownum::RowReader`],
/// which numbers the rows.
pub fn csv_reader<R: Read>(r: R, delim: u8) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delim)
        .buffer_capacity(1 << 16)
        .from_reader(r)
}

/// How a delimiter is written in records and messages.
pub fn delimiter_name(d: u8) -> String {
    match d {
        b'\t' => "\\t".into(),
        other => (other as char).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_by_a_read_is_still_utf8() {
        use crate::config::EncodingSetting;
        let mut bytes = vec![b'a'; (1 << 20) - 1];
        bytes.extend_from_slice("é;b\n".as_bytes());
        let scan = super::scan(Input::Bytes(&bytes), EncodingSetting::Auto, true).unwrap();
        assert_eq!(scan.encoding, Ok(Enc::Utf8));
        // A character cut off at the very end is not UTF-8.
        bytes.truncate(bytes.len() - 4);
        assert_eq!(bytes.last(), Some(&0xC3));
        let scan = super::scan(Input::Bytes(&bytes), EncodingSetting::Auto, true).unwrap();
        // (A lone 0xC3 after a megabyte of ASCII is too little for the code-page detector,
        // which takes it for Windows-1250's "Ă": either way, not UTF-8.)
        assert_ne!(scan.encoding, Ok(Enc::Utf8));
    }

    #[test]
    fn utf8_with_a_stray_byte_is_refused_not_read_as_windows_1252() {
        use crate::config::EncodingSetting::Auto;
        let encoding = |b: &[u8]| scan(Input::Bytes(b), Auto, false).map(|s| s.encoding).ok();
        let refused_at = |b: &[u8], line: &str| {
            let e = encoding(b);
            assert!(matches!(&e, Some(Err(m)) if m.contains(line)), "{e:?}");
        };
        // An en dash pasted as Windows-1252 (0x96) into a UTF-8 file, after or before the
        // UTF-8 letters: refused, naming the line of the stray byte.
        refused_at(
            &["n;t\nKovačić;a\nB;".as_bytes(), b"\x96\n"].concat(),
            "from line 3 on",
        );
        refused_at(
            &[b"n;t\nB;\x96\n".as_slice(), "Müller;a\n".as_bytes()].concat(),
            "from line 2 on",
        );
        // Across the 1 MiB reads, the line is still counted right.
        let mut long = b"n;t\n".repeat(300_000);
        long.extend_from_slice("é;a\n".as_bytes());
        long.extend_from_slice(b"x;\xE9\n");
        refused_at(&long, "from line 300002 on");
        // Windows-1252 letters alone (none of them valid UTF-8) are Windows-1252.
        assert_eq!(
            encoding(b"n;t\nJ\xfcrgen;Fran\xe7ois\n\xc9mile;x\n"),
            Some(Ok(Enc::WINDOWS_1252))
        );
        // A Windows-1252 file in which one pair of letters happens to be valid UTF-8 (É then
        // ©, 0xC9 0xA9) is still Windows-1252.
        assert_eq!(
            encoding(b"n;t\nJ\xfcrgen;\xc9\xa9\n\xe9t\xe9;l\xe0\n"),
            Some(Ok(Enc::WINDOWS_1252))
        );
        // A whole UTF-8 file is UTF-8.
        assert_eq!(
            encoding("n;t\nKovačić;Müller\n".as_bytes()),
            Some(Ok(Enc::Utf8))
        );
    }

    #[test]
    fn sniffs_quoted_delimiters() {
        assert_eq!(sniff(b"a;b;c\n1;\"x,y\";3\n"), b';');
        assert_eq!(sniff(b"a,b,c\n1,\"x;y;z\",3\n4,5,6\n"), b',');
        assert_eq!(sniff(b"a\tb\n1\t2\n"), b'\t');
        assert_eq!(sniff(b"a|b\r\n1|2\r\n"), b'|');
        assert_eq!(sniff(b"single\n1\n"), b',');
    }

    #[test]
    fn decodes_windows_1252_and_utf16() {
        let s = scan(Input::Bytes(b"J\xfcrgen;x\n"), EncodingSetting::Auto, true).ok();
        assert_eq!(s.map(|s| s.encoding), Some(Ok(Enc::WINDOWS_1252)));
        let mut out = String::new();
        let r = text(Input::Bytes(b"J\xfcrgen"), Enc::WINDOWS_1252);
        assert!(r.is_ok_and(|mut r| r.read_to_string(&mut out).is_ok()));
        assert_eq!(out, "Jürgen");
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("a\tb\n".encode_utf16().flat_map(|u| u.to_le_bytes()))
            .collect();
        let s = scan(Input::Bytes(&utf16), EncodingSetting::Auto, true).ok();
        assert_eq!(s.map(|s| s.encoding), Some(Ok(Enc::Utf16Le)));
        let mut out = String::new();
        let r = text(Input::Bytes(&utf16), Enc::Utf16Le);
        assert!(r.is_ok_and(|mut r| r.read_to_string(&mut out).is_ok()));
        assert_eq!(out, "a\tb\n");
    }
}
