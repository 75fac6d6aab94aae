//! Reading a file: one scan for sha256 (skipped when the caller knows it), size and encoding; then a decoded UTF-8 stream, a
//! quote-aware delimiter guess, and a `csv` reader over it.
//!
//! Data enters as bytes in memory or a path (read in 1 MiB chunks, never whole) and leaves as
//! a [`Scan`] (facts about the file) and a `csv::Reader` over UTF-8 text without a BOM.

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
    fn open(&self) -> Result<Box<dyn Read + 'a>> {
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

/// The text encoding of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enc {
    Utf8,
    Utf8Bom,
    Utf16Le,
    Utf16Be,
    Windows1252,
}

impl Enc {
    pub fn name(self) -> &'static str {
        match self {
            Enc::Utf8 => "utf-8",
            Enc::Utf8Bom => "utf-8-bom",
            Enc::Utf16Le => "utf-16le",
            Enc::Utf16Be => "utf-16be",
            Enc::Windows1252 => "windows-1252",
        }
    }
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
/// and a file only archived do not), and decides its encoding (BOM, else valid UTF-8, else
/// Windows-1252).
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
        utf8.invalid += 1;
        utf8.first_bad_line.get_or_insert(utf8.lines + 1);
    }
    let utf8_ok = utf8.first_bad_line.is_none();
    let bom = if head.starts_with(&[0xEF, 0xBB, 0xBF]) {
        Some(Enc::Utf8Bom)
    } else if head.starts_with(&[0xFF, 0xFE]) {
        Some(Enc::Utf16Le)
    } else if head.starts_with(&[0xFE, 0xFF]) {
        Some(Enc::Utf16Be)
    } else {
        None
    };
    let binary = || {
        Err("the file contains binary data (NUL bytes), so it is not a CSV text file (a UTF-16 file needs its byte order mark: save it as UTF-8, or as UTF-16 with a BOM)".to_string())
    };
    let encoding = match setting {
        EncodingSetting::Auto => match bom {
            Some(e @ (Enc::Utf16Le | Enc::Utf16Be)) => Ok(e),
            Some(_) if utf8_ok && !nul => Ok(Enc::Utf8Bom),
            Some(_) => Err("the file starts with a UTF-8 byte order mark but is not valid UTF-8".into()),
            None if nul => binary(),
            None if utf8_ok => Ok(Enc::Utf8),
            None => match utf8.first_bad_line {
                Some(line) if utf8.multibyte >= utf8.invalid || utf8.proof > 0 => {
                    Err(mixed(line))
                }
                _ => Ok(Enc::Windows1252),
            },
        },
        EncodingSetting::Utf8 if nul => binary(),
        EncodingSetting::Utf8 if utf8_ok => Ok(if bom == Some(Enc::Utf8Bom) {
            Enc::Utf8Bom
        } else {
            Enc::Utf8
        }),
        EncodingSetting::Utf8 => Err(
            "the file is not valid UTF-8 (the tenant's encoding is \"utf-8\"; save it as UTF-8 or set encoding = \"auto\")"
                .into(),
        ),
        EncodingSetting::Windows1252 if nul => binary(),
        EncodingSetting::Windows1252 => Ok(Enc::Windows1252),
    };
    // A file decoded from UTF-16 or Windows-1252 is checked whole before it is used: broken
    // UTF-16 would become U+FFFD and a byte Windows-1252 leaves undefined a control
    // character, each stored as a user's value (review s16 F7).
    // A file stated as Windows-1252 is read so (the operator's call).
    let guessed = setting == EncodingSetting::Auto;
    let encoding = match encoding {
        Ok(e @ (Enc::Utf16Le | Enc::Utf16Be)) => undecodable(input, e)?.map_or(Ok(e), Err),
        Ok(Enc::Windows1252) if guessed => {
            undecodable(input, Enc::Windows1252)?.map_or(Ok(Enc::Windows1252), Err)
        }
        other => other,
    };
    let fallback = match bom {
        Some(e @ (Enc::Utf16Le | Enc::Utf16Be)) => e,
        Some(_) if utf8_ok => Enc::Utf8Bom,
        None if utf8_ok => Enc::Utf8,
        _ => Enc::Windows1252,
    };
    Ok(Scan {
        sha256: sha.map(|sha| hex::encode(sha.finalize())),
        bytes: total,
        encoding,
        fallback,
    })
}

/// What the scan learnt of the bytes as UTF-8.
#[derive(Default)]
struct Utf8Seen {
    /// Valid UTF-8 characters of more than one byte (an accented letter written as UTF-8).
    /// Windows-1252 text forms one only by chance (a capital accented letter followed by a
    /// symbol such as `™`), so as many of them as bytes that are not UTF-8 mean a UTF-8 file
    /// with bytes of another encoding in it.
    multibyte: u64,
    /// Valid UTF-8 characters that Windows-1252 text cannot form at all: those of three or
    /// four bytes (a lower-case accented letter followed by two symbols) and those holding a
    /// byte 1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D; `č` is C4 8D). One of them
    /// next to bytes that are not UTF-8 means a UTF-8 file with stray bytes, however few
    /// UTF-8 characters it has (review of 2026-11-30, third round).
    proof: u64,
    /// Sequences of bytes that are not UTF-8.
    invalid: u64,
    /// The line (from 1) of the first byte that is not UTF-8.
    first_bad_line: Option<u64>,
    /// Line breaks before the current chunk, while no bad byte was seen.
    lines: u64,
}

impl Utf8Seen {
    /// Checks `bytes` (a chunk, after the previous chunk's unfinished character); returns how
    /// many bytes at its end start a character the next chunk finishes.
    fn check(&mut self, bytes: &[u8]) -> usize {
        let mut rest = bytes;
        loop {
            let (valid, error) = match std::str::from_utf8(rest) {
                Ok(_) => (rest.len(), None),
                Err(e) => (e.valid_up_to(), Some(e.error_len())),
            };
            let text = &rest[..valid];
            if !text.is_ascii() {
                self.multibyte += text.iter().filter(|&&b| b >= 0xC0).count() as u64;
                self.proof += text
                    .iter()
                    .filter(|&&b| b >= 0xE0 || matches!(b, 0x81 | 0x8D | 0x8F | 0x90 | 0x9D))
                    .count() as u64;
            }
            let at = bytes.len() - rest.len() + valid;
            match error {
                None => break,
                Some(None) => {
                    self.count_lines(&bytes[..at]);
                    return rest.len() - valid;
                }
                Some(Some(len)) => {
                    self.invalid += 1;
                    if self.first_bad_line.is_none() {
                        self.count_lines(&bytes[..at]);
                        self.first_bad_line = Some(self.lines + 1);
                    }
                    rest = &rest[valid + len..];
                }
            }
        }
        self.count_lines(bytes);
        0
    }

    fn count_lines(&mut self, bytes: &[u8]) {
        if self.first_bad_line.is_none() {
            self.lines += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        }
    }
}

/// Why a file that is partly UTF-8 is not read at all (design §3, `encoding`).
fn mixed(line: u64) -> String {
    format!(
        "the file mixes text encodings: it has characters written as UTF-8 and, from line {line} on, bytes that are not UTF-8 (text pasted from another program?); reading it as Windows-1252 would garble every accented letter, so nothing was imported. Save the whole file as UTF-8 (or set encoding = \"windows-1252\" if that is what it is)"
    )
}

/// Why the file cannot be decoded as `enc` (UTF-16 or Windows-1252) without losing text: a
/// sentence naming the line, or None when it can.
fn undecodable(input: Input<'_>, enc: Enc) -> Result<Option<String>> {
    if enc == Enc::Windows1252 {
        // The five bytes Windows-1252 assigns no character (decoders make C1 controls of them).
        let mut r = input.open()?;
        let mut buf = vec![0u8; 1 << 16];
        let mut line = 1u64;
        loop {
            let n = r.read(&mut buf).context("cannot read the file")?;
            if n == 0 {
                return Ok(None);
            }
            for &b in &buf[..n] {
                match b {
                    b'\n' => line += 1,
                    0x81 | 0x8D | 0x8F | 0x90 | 0x9D => {
                        return Ok(Some(format!(
                            "the file is neither UTF-8 nor Windows-1252: line {line} has the byte 0x{b:02X}, which Windows-1252 has no character for; save the file as UTF-8"
                        )))
                    }
                    _ => {}
                }
            }
        }
    }
    let mut dec = match enc {
        Enc::Utf16Be => encoding_rs::UTF_16BE.new_decoder_with_bom_removal(),
        _ => encoding_rs::UTF_16LE.new_decoder_with_bom_removal(),
    };
    let mut r = input.open()?;
    let (mut inbuf, mut out) = (vec![0u8; 1 << 16], vec![0u8; 3 << 16]);
    let mut line = 1u64;
    loop {
        let n = r.read(&mut inbuf).context("cannot read the file")?;
        let mut start = 0;
        loop {
            let (result, read, written) =
                dec.decode_to_utf8_without_replacement(&inbuf[start..n], &mut out, n == 0);
            line += out[..written].iter().filter(|b| **b == b'\n').count() as u64;
            start += read;
            match result {
                encoding_rs::DecoderResult::InputEmpty => break,
                encoding_rs::DecoderResult::OutputFull => {}
                encoding_rs::DecoderResult::Malformed(_, _) => {
                    return Ok(Some(format!(
                        "the file starts with a UTF-16 byte order mark but is not valid UTF-16 (a broken character on line {line}); save it again as UTF-8 or UTF-16"
                    )))
                }
            }
        }
        if n == 0 {
            return Ok(None);
        }
    }
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
        Enc::Windows1252 => encoding_rs::WINDOWS_1252.new_decoder_without_bom_handling(),
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
        assert_eq!(scan.encoding, Ok(Enc::Windows1252));
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
            Some(Ok(Enc::Windows1252))
        );
        // A Windows-1252 file in which one pair of letters happens to be valid UTF-8 (É then
        // ©, 0xC9 0xA9) is still Windows-1252.
        assert_eq!(
            encoding(b"n;t\nJ\xfcrgen;\xc9\xa9\n\xe9t\xe9;l\xe0\n"),
            Some(Ok(Enc::Windows1252))
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
        assert_eq!(s.map(|s| s.encoding), Some(Ok(Enc::Windows1252)));
        let mut out = String::new();
        let r = text(Input::Bytes(b"J\xfcrgen"), Enc::Windows1252);
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
