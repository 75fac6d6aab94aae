//! Which text encoding a file is in: the byte order mark, else UTF-8 when every byte is, else a
//! legacy code page: Windows-1252 under `encoding = "auto"` when the code-page detector agrees
//! (a file it takes for another code page, such as Windows-1250 or Windows-1251, is refused,
//! naming a byte that would read differently), or the tenant's stated code page (design §3,
//! `encoding`; §5.1).
//!
//! A byte order mark that says another encoding than the stated one fails the run, and so does
//! a byte a stated code page has no character for (a C1 control among them).
//!
//! Data enters from `read::scan` (what one pass learnt of the bytes: its first bytes, a
//! [`Utf8Seen`], whether it holds NUL) and the file itself for a second pass when it is not
//! UTF-8; it leaves as the [`Enc`] to decode with, or the sentence that fails the run.

use super::read::Input;
use crate::config::EncodingSetting;
use anyhow::{Context, Result};
use encoding_rs::{Encoding, WINDOWS_1252};
use std::io::Read;

/// The text encoding of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enc {
    Utf8,
    Utf8Bom,
    Utf16Le,
    Utf16Be,
    /// A legacy code page (Windows-1252, or the one the tenant states).
    Legacy(&'static Encoding),
}

impl Enc {
    /// Windows-1252, the code page of Western European Windows and Excel.
    pub const WINDOWS_1252: Enc = Enc::Legacy(&encoding_rs::WINDOWS_1252_INIT);

    /// The name kept in the import record (`utf-8`, `windows-1252`, `windows-1250`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Enc::Utf8 => "utf-8",
            Enc::Utf8Bom => "utf-8-bom",
            Enc::Utf16Le => "utf-16le",
            Enc::Utf16Be => "utf-16be",
            Enc::Legacy(e) => e.name(),
        }
    }
}

/// The five bytes Windows-1252 assigns no character (decoders make C1 controls of them).
const UNDEFINED_IN_1252: [u8; 5] = [0x81, 0x8D, 0x8F, 0x90, 0x9D];

/// The encoding to decode with (or why the file cannot be decoded), and the one for a
/// best-effort reading when it cannot (what `auto` would choose if NUL bytes were allowed).
pub(super) fn decide(
    input: Input<'_>,
    setting: EncodingSetting,
    head: &[u8],
    utf8: &Utf8Seen,
    nul: bool,
) -> Result<(Result<Enc, String>, Enc)> {
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
    let fallback = match (bom, setting) {
        (Some(e @ (Enc::Utf16Le | Enc::Utf16Be)), _) => e,
        (Some(_), _) if utf8_ok => Enc::Utf8Bom,
        (None, _) if utf8_ok => Enc::Utf8,
        (_, EncodingSetting::Legacy(e)) => Enc::Legacy(e),
        _ => Enc::WINDOWS_1252,
    };
    if let Some(msg) = contradicting_bom(bom, setting) {
        return Ok((Err(msg), fallback));
    }
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
                _ => Ok(Enc::WINDOWS_1252),
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
        EncodingSetting::Legacy(_) if nul => binary(),
        EncodingSetting::Legacy(e) => Ok(Enc::Legacy(e)),
    };
    // A file decoded from UTF-16 or a code page is checked whole before it is used: broken
    // UTF-16 would become U+FFFD and a byte Windows-1252 leaves undefined a control
    // character, each stored as a user's value (review s16 F7). A file taken for
    // Windows-1252 under `auto` is also refused when the detector takes it for another code
    // page in which its letters read differently (review s18 clients F1). A stated code page
    // is read so (the operator's call), refused only for bytes it has no character for.
    let encoding = match encoding {
        Ok(e @ (Enc::Utf16Le | Enc::Utf16Be)) => malformed(input, e)?.map_or(Ok(e), Err),
        Ok(Enc::Legacy(_)) if setting == EncodingSetting::Auto => guessed_1252(input)?,
        Ok(e @ Enc::Legacy(_)) => malformed(input, e)?.map_or(Ok(e), Err),
        other => other,
    };
    Ok((encoding, fallback))
}

/// Why a file whose byte order mark says another encoding than the stated one is not read:
/// a UTF-16 mark under `utf-8` or a code page, a UTF-8 mark under a code page (read as
/// Windows-1252 it would be `ï»¿` before the first header). A UTF-8 mark under `utf-8` is
/// taken off (`Enc::Utf8Bom`); under `auto` the mark decides.
fn contradicting_bom(bom: Option<Enc>, setting: EncodingSetting) -> Option<String> {
    let mark = match (bom?, setting) {
        (Enc::Utf16Le | Enc::Utf16Be, EncodingSetting::Utf8 | EncodingSetting::Legacy(_)) => {
            "UTF-16"
        }
        (Enc::Utf8Bom, EncodingSetting::Legacy(_)) => "UTF-8",
        _ => return None,
    };
    let name = setting.name();
    Some(format!(
        "the file starts with a {mark} byte order mark, which contradicts the tenant's encoding \"{name}\", so nothing was imported; save the file as {name} without the mark, or set encoding = \"auto\" to read it as the mark says"
    ))
}

/// Why a file that is partly UTF-8 is not read at all (design §3, `encoding`).
fn mixed(line: u64) -> String {
    format!(
        "the file mixes text encodings: it has characters written as UTF-8 and, from line {line} on, bytes that are not UTF-8 (text pasted from another program?); reading it as Windows-1252 would garble every accented letter, so nothing was imported. Save the whole file as UTF-8 (or set encoding = \"windows-1252\" if that is what it is)"
    )
}

/// A file that is not UTF-8, read again under `auto`: Windows-1252 unless it has a byte 1252
/// leaves undefined, or the detector takes it for another code page in which one of its bytes
/// is another letter (a byte that reads the same in both, as `é` does in Windows-1250 and
/// Windows-1252, changes nothing).
fn guessed_1252(input: Input<'_>) -> Result<Result<Enc, String>> {
    let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
    // The line (from 1) where each byte from 0x80 up first appears; 0 where it does not.
    let mut first_line = [0u64; 128];
    let mut r = input.open()?;
    let mut buf = vec![0u8; 1 << 16];
    let mut line = 1u64;
    loop {
        let n = r.read(&mut buf).context("cannot read the file")?;
        detector.feed(&buf[..n], n == 0);
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                line += 1;
            } else if UNDEFINED_IN_1252.contains(&b) {
                return Ok(Err(format!(
                    "the file is neither UTF-8 nor Windows-1252: line {line} has the byte 0x{b:02X}, which Windows-1252 has no character for; save the file as UTF-8"
                )));
            } else if b >= 0x80 && first_line[usize::from(b - 0x80)] == 0 {
                first_line[usize::from(b - 0x80)] = line;
            }
        }
    }
    let guess = detector.guess(None, chardetng::Utf8Detection::Deny);
    if guess == WINDOWS_1252 {
        return Ok(Ok(Enc::WINDOWS_1252));
    }
    let differing = (0x80u8..=0xFF)
        .filter(|&b| first_line[usize::from(b - 0x80)] > 0)
        .filter(|&b| letter(guess, b) != letter(WINDOWS_1252, b))
        .min_by_key(|&b| first_line[usize::from(b - 0x80)]);
    Ok(match differing {
        None => Ok(Enc::WINDOWS_1252),
        Some(b) => Err(other_code_page(guess, b, first_line[usize::from(b - 0x80)])),
    })
}

/// What byte `b` alone reads as in the single-byte code page `e` (None for a multi-byte
/// encoding, where a byte alone is no character).
fn letter(e: &'static Encoding, b: u8) -> Option<char> {
    if !e.is_single_byte() {
        return None;
    }
    let byte = [b];
    let (text, _) = e.decode_without_bom_handling(&byte);
    text.chars().next()
}

/// Why a file the detector takes for code page `guess` is not read as Windows-1252.
fn other_code_page(guess: &'static Encoding, b: u8, line: u64) -> String {
    let label = guess.name().to_ascii_lowercase();
    let what = match label.as_str() {
        "windows-1250" | "iso-8859-2" => " (Central European)",
        "windows-1251" | "koi8-r" | "koi8-u" | "ibm866" | "iso-8859-5" => " (Cyrillic)",
        "windows-1253" | "iso-8859-7" => " (Greek)",
        "windows-1254" => " (Turkish)",
        "windows-1257" | "iso-8859-13" | "iso-8859-4" => " (Baltic)",
        _ => "",
    };
    let reads = match (letter(guess, b), letter(WINDOWS_1252, b)) {
        (Some(there), Some(here)) => format!(
            "line {line} has the byte 0x{b:02X}, \"{there}\" in {} but \"{here}\" in Windows-1252",
            guess.name()
        ),
        _ => format!("from line {line} on"),
    };
    format!(
        "the file is not UTF-8 and looks like {}{what}, not Windows-1252 ({reads}); reading it as Windows-1252 would garble its names, so nothing was imported. Save the file as UTF-8, or set encoding = \"{label}\" for this tenant (or \"windows-1252\" if that is what it is)",
        guess.name()
    )
}

/// Why the file cannot be decoded as `enc` (UTF-16 or a stated code page) without losing
/// text: a sentence naming the line, or None when it can. A byte a code page leaves undefined
/// is malformed, also where the decoder makes a C1 control (U+0080 to U+009F) of it, as
/// Windows-1252 does of 0x81: no HR file holds one, and it would be stored as a user's value.
fn malformed(input: Input<'_>, enc: Enc) -> Result<Option<String>> {
    let (mut dec, what) = match enc {
        Enc::Utf16Be => (encoding_rs::UTF_16BE.new_decoder_with_bom_removal(), None),
        Enc::Legacy(e) => (e.new_decoder_without_bom_handling(), Some(e.name())),
        _ => (encoding_rs::UTF_16LE.new_decoder_with_bom_removal(), None),
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
            let text = &out[..written];
            let lines_in = |t: &[u8]| t.iter().filter(|b| **b == b'\n').count() as u64;
            // U+0080..U+009F in UTF-8: C2 80..C2 9F (the decoder writes whole characters).
            let is_c1 = |w: &[u8]| w[0] == 0xC2 && (0x80..=0x9F).contains(&w[1]);
            let c1 = what.and_then(|_| text.windows(2).position(is_c1));
            if let Some(at) = c1 {
                return Ok(Some(broken(what, line + lines_in(&text[..at]))));
            }
            line += lines_in(text);
            start += read;
            match result {
                encoding_rs::DecoderResult::InputEmpty => break,
                encoding_rs::DecoderResult::OutputFull => {}
                encoding_rs::DecoderResult::Malformed(_, _) => return Ok(Some(broken(what, line))),
            }
        }
        if n == 0 {
            return Ok(None);
        }
    }
}

/// Why [`malformed`] refuses the file at `line`: `what` is the stated code page, `None` for
/// UTF-16.
fn broken(what: Option<&str>, line: u64) -> String {
    match what {
        Some(name) => format!("the file is not {name} (the tenant's encoding): line {line} has bytes {name} has no character for; save it as UTF-8"),
        None => format!("the file starts with a UTF-16 byte order mark but is not valid UTF-16 (a broken character on line {line}); save it again as UTF-8 or UTF-16"),
    }
}

/// What the scan learnt of the bytes as UTF-8.
#[derive(Default)]
pub(super) struct Utf8Seen {
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
    pub(super) fn check(&mut self, bytes: &[u8]) -> usize {
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

    /// The file ended inside a character (`check` left bytes over).
    pub(super) fn cut_off(&mut self) {
        self.invalid += 1;
        self.first_bad_line.get_or_insert(self.lines + 1);
    }

    fn count_lines(&mut self, bytes: &[u8]) {
        if self.first_bad_line.is_none() {
            self.lines += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::read::{scan, text};

    fn auto(bytes: &[u8]) -> Result<Enc, String> {
        match scan(Input::Bytes(bytes), EncodingSetting::Auto, false) {
            Ok(s) => s.encoding,
            Err(e) => Err(format!("scan failed: {e:#}")),
        }
    }

    fn legacy(text: &str, e: &'static Encoding) -> Vec<u8> {
        let (bytes, _, unmappable) = e.encode(text);
        assert!(!unmappable, "{text} has no {} form", e.name());
        bytes.into_owned()
    }

    #[test]
    fn central_european_and_cyrillic_files_are_refused_not_read_as_windows_1252() {
        let croatian = "id;first;last\n1;Ivan;Kovačić\n2;Ana;Đukić\n3;Marko;Šimić\n";
        let e = auto(&legacy(croatian, encoding_rs::WINDOWS_1250));
        let m = e.expect_err("a Windows-1250 file is refused");
        assert!(
            m.contains("looks like windows-1250 (Central European)"),
            "{m}"
        );
        assert!(
            m.contains("line 2 has the byte 0xE6, \"ć\" in windows-1250 but \"æ\""),
            "{m}"
        );
        assert!(m.contains("set encoding = \"windows-1250\""), "{m}");
        let cyrillic = "id;first;last\n1;Милан;Петровић\n";
        let m = auto(&legacy(cyrillic, encoding_rs::WINDOWS_1251)).expect_err("refused");
        assert!(m.contains("looks like windows-1251 (Cyrillic)"), "{m}");
        assert!(m.contains("set encoding = \"windows-1251\""), "{m}");
    }

    #[test]
    fn western_files_stay_windows_1252() {
        for names in [
            "Jürgen;Müller\nGräfin;Strauß",
            "Hélène;Lefèvre",
            "René;Dupont",
            "José;Núñez",
            "João;Simões\nJOÃO;SIMÕES",
            "Søren;Kærgaard\nBjørn;Ødegård",
            "Niccolò;Mazzà",
            "Åsa;Öberg",
            "Seán;Ó Briain",
            "Acme™ Ltd – Sales;x",
        ] {
            let file = format!("first;last\n{names}\n");
            let bytes = legacy(&file, WINDOWS_1252);
            assert_eq!(auto(&bytes), Ok(Enc::WINDOWS_1252), "{names}");
        }
    }

    #[test]
    fn a_stated_code_page_is_read_as_stated() {
        let croatian = "id;last\n1;Kovačić\n2;Đukić\n";
        let bytes = legacy(croatian, encoding_rs::WINDOWS_1250);
        let setting = EncodingSetting::parse("cp1250").expect("a label");
        let s = scan(Input::Bytes(&bytes), setting, false).expect("scan");
        assert_eq!(s.encoding, Ok(Enc::Legacy(encoding_rs::WINDOWS_1250)));
        assert_eq!(
            Enc::Legacy(encoding_rs::WINDOWS_1250).name(),
            "windows-1250"
        );
        let mut out = String::new();
        let read = text(Input::Bytes(&bytes), Enc::Legacy(encoding_rs::WINDOWS_1250))
            .map(|mut r| r.read_to_string(&mut out));
        assert!(matches!(read, Ok(Ok(_))));
        assert_eq!(out, croatian);
        // A byte the stated code page has no character for fails the run, naming the line.
        let setting = EncodingSetting::parse("shift_jis").expect("a label");
        let s = scan(Input::Bytes(b"id;n\n1;x\n2;\x81\n"), setting, false).expect("scan");
        assert!(
            matches!(&s.encoding, Err(m) if m.contains("not Shift_JIS") && m.contains("line 3")),
            "{:?}",
            s.encoding
        );
    }

    #[test]
    fn encoding_settings_are_labels_of_code_pages() {
        let name = |l: &str| EncodingSetting::parse(l).map(EncodingSetting::name);
        assert_eq!(name("auto"), Ok("auto"));
        assert_eq!(name("UTF8"), Ok("utf-8"));
        assert_eq!(name("utf-8"), Ok("utf-8"));
        assert_eq!(name("cp1252"), Ok("windows-1252"));
        assert_eq!(name("latin1"), Ok("windows-1252"));
        assert_eq!(name(" Windows-1250 "), Ok("windows-1250"));
        assert_eq!(name("cp1251"), Ok("windows-1251"));
        assert_eq!(name("iso-8859-2"), Ok("ISO-8859-2"));
        for refused in [
            "utf-16",
            "utf-16be",
            "replacement",
            "iso-2022-jp",
            "x-user-defined",
            "klingon",
            "",
        ] {
            let e = name(refused).expect_err(refused);
            assert!(e.contains("is not \"auto\""), "{e}");
        }
    }

    /// Review finding 4: a byte a stated code page leaves undefined decodes to a C1 control
    /// (0x81 in Windows-1252 is U+0081), which was stored as a user's value.
    #[test]
    fn c1_controls_of_a_stated_code_page_are_malformed() {
        for (label, bad) in [
            ("windows-1252", 0x81u8),
            ("latin1", 0x9D),
            ("windows-1250", 0x83),
        ] {
            let setting = EncodingSetting::parse(label).expect("a label");
            let mut bytes = b"id;n\n1;Jos\xE9\n2;a".to_vec();
            bytes.extend([bad, b'b', b'\n']);
            let s = scan(Input::Bytes(&bytes), setting, false).expect("scan");
            let name = setting.name();
            assert!(
                matches!(&s.encoding, Err(m) if m.contains(&format!("the file is not {name} (the tenant's encoding): line 3 has bytes"))),
                "{label}: {:?}",
                s.encoding
            );
            // Without that byte the file reads as stated.
            let good = &bytes[..bytes.len() - 3];
            let s = scan(Input::Bytes(good), setting, false).expect("scan");
            assert!(matches!(s.encoding, Ok(Enc::Legacy(_))), "{label}");
        }
    }

    /// Review finding 5: a byte order mark was ignored when the encoding is stated. A UTF-8
    /// BOM in a file stated as UTF-8 is taken off; one that says another encoding than the
    /// stated one is refused, saying so.
    #[test]
    fn a_bom_that_contradicts_the_stated_encoding_is_refused() {
        let utf8 = EncodingSetting::parse("utf-8").expect("a label");
        let bytes = b"\xEF\xBB\xBFid;n\n1;x\n";
        let s = scan(Input::Bytes(bytes), utf8, false).expect("scan");
        assert_eq!(s.encoding, Ok(Enc::Utf8Bom));
        let mut out = String::new();
        let read = text(Input::Bytes(bytes), Enc::Utf8Bom).map(|mut r| r.read_to_string(&mut out));
        assert!(matches!(read, Ok(Ok(_))));
        assert_eq!(out, "id;n\n1;x\n");
        let utf16le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("id;n\n1;x\n".encode_utf16().flat_map(|u| u.to_le_bytes()))
            .collect();
        let utf16be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain("id;n\n1;x\n".encode_utf16().flat_map(|u| u.to_be_bytes()))
            .collect();
        let cases = [
            ("windows-1252", &bytes[..], "UTF-8"),
            ("windows-1250", &bytes[..], "UTF-8"),
            ("windows-1252", &utf16le[..], "UTF-16"),
            ("latin1", &utf16be[..], "UTF-16"),
            ("utf-8", &utf16le[..], "UTF-16"),
        ];
        for (label, file, bom) in cases {
            let setting = EncodingSetting::parse(label).expect("a label");
            let s = scan(Input::Bytes(file), setting, false).expect("scan");
            let name = setting.name();
            let said = format!("the file starts with a {bom} byte order mark, which contradicts the tenant's encoding \"{name}\"");
            assert!(
                matches!(&s.encoding, Err(m) if m.contains(&said)),
                "{label}, {bom}: {:?}",
                s.encoding
            );
        }
    }
}
