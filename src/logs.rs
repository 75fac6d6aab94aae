//! The log output: one line per event on stderr, human-readable or JSON, in which no value can
//! start a line of its own or drive the terminal.
//!
//! Data enters as `tracing` events and spans from every module; many fields carry text a tenant
//! chose (file names, paths, cells quoted in messages). It leaves as bytes on stderr. In the
//! human format every field value and the message go through [`EscapedFields`], which writes
//! control characters (C0 such as LF, CR, TAB and ESC; DEL; C1) and the Unicode line and
//! paragraph separators and bidi overrides as `\n`, `\r`, `\t` or `\u{..}` escapes, so a file
//! named `a\n2026-… ERROR fake` stays on its line and ANSI sequences are inert. In the JSON
//! format, serde_json already escapes C0 characters inside strings; [`JsonEscapingWriter`]
//! also writes DEL, C1 and the separators as `\u` escapes (they can only appear inside JSON
//! strings, so the line stays valid JSON).
//!
//! No value a client sent can make a line long: in the human format [`EscapedFields`] cuts each
//! field value to [`MAX_FIELD_CHARS`] and the message to [`MAX_MESSAGE_CHARS`] characters
//! (before escaping), saying how much was left out; callers that log client text in either
//! format (a login name, say) cut it first with [`cut`]. Floods of one kind of line go through
//! [`EverySecond`] (or [`SharedEverySecond`] from several tasks): one line a second, counted.

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, MakeWriter};

/// A warning logged at most once a second, counting what happened in between, so that a flood
/// (refused connections, failed accepts) does not flood the log.
#[derive(Debug, Default)]
pub struct EverySecond {
    last: Option<std::time::Instant>,
    count: u64,
}

impl EverySecond {
    /// Counts one; returns the count to log when a second has passed since the last line.
    pub fn hit(&mut self) -> Option<u64> {
        self.count += 1;
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < std::time::Duration::from_secs(1))
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

/// [`EverySecond`] behind a lock, for one kind of line logged from many tasks (sign-in refusals
/// of blocked addresses, say). Usable in a `static`.
#[derive(Debug, Default)]
pub struct SharedEverySecond(std::sync::Mutex<EverySecond>);

impl SharedEverySecond {
    pub const fn new() -> SharedEverySecond {
        SharedEverySecond(std::sync::Mutex::new(EverySecond {
            last: None,
            count: 0,
        }))
    }

    /// As [`EverySecond::hit`].
    pub fn hit(&self) -> Option<u64> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .hit()
    }
}

/// The most characters of one field value the human format writes (the rest is left out).
pub const MAX_FIELD_CHARS: usize = 512;
/// The most characters of a message the human format writes.
pub const MAX_MESSAGE_CHARS: usize = 2048;

/// `s` cut to at most `max` characters; a cut value ends with `…(+N bytes)`, N the bytes left
/// out. Escape the result (or log it through [`EscapedFields`]) as any other value.
pub fn cut(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(s),
        Some((at, _)) => std::borrow::Cow::Owned(format!("{}…(+{} bytes)", &s[..at], s.len() - at)),
    }
}

/// Whether a character must not reach a log line as it is.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every unsafe character escaped (see the module doc); a backslash stays as it is.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The human format's field formatter: the message first, then `name=value` pairs, every value
/// escaped.
#[derive(Debug, Default, Clone, Copy)]
pub struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = EscapingVisitor {
            out: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct EscapingVisitor<'a, 'w> {
    out: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_, '_> {
    fn put(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        let max = if field.name() == "message" {
            MAX_MESSAGE_CHARS
        } else {
            MAX_FIELD_CHARS
        };
        let cut = cut(value, max);
        let value = escape(&cut);
        self.result = match field.name() {
            "message" => write!(self.out, "{sep}{value}"),
            // `log` records bridged into tracing carry these; the formatter shows them itself.
            name if name.starts_with("log.") => Ok(()),
            name => write!(self.out, "{sep}{name}={value}"),
        };
    }
}

impl Visit for EscapingVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, &value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, &format!("{value:?}"));
    }
}

/// Writes JSON log lines to the inner writer with DEL, C1 characters and the Unicode line
/// separators and bidi overrides as `\uXXXX` escapes (see the module doc).
pub struct JsonEscapingWriter<W>(pub W);

impl<W: Write> Write for JsonEscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A line arrives whole; cut characters cannot occur at the ends of a valid UTF-8 line.
        match std::str::from_utf8(buf) {
            Ok(s) if s.chars().any(|c| c != '\n' && is_unsafe(c)) => {
                let mut out = String::with_capacity(s.len() + 16);
                for c in s.chars() {
                    if c != '\n' && is_unsafe(c) {
                        // Every such character is below U+10000: one \uXXXX escape each.
                        let _ = write!(out, "\\u{:04x}", c as u32);
                    } else {
                        out.push(c);
                    }
                }
                self.0.write_all(out.as_bytes())?;
            }
            _ => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// [`MakeWriter`] of [`JsonEscapingWriter`] around stderr.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonStderr;

impl<'a> MakeWriter<'a> for JsonStderr {
    type Writer = JsonEscapingWriter<io::Stderr>;
    fn make_writer(&'a self) -> Self::Writer {
        JsonEscapingWriter(io::stderr())
    }
}

/// russh writes one WARN line for every channel request of a type it does not know, before
/// Roster's handler could count it: a client sending them in a loop wrote 20,000 lines in
/// 0.2 s, and PuTTY-based clients (psftp, WinSCP, FileZilla) send one such request
/// (`simple@putty.projects.tartarus.org`) at every login (review s18 clients F6). Likewise an
/// INFO line for every key re-exchange a client starts (300 in 13 s from one paramiko loop).
/// So russh logs warnings only, and that module errors only, unless `ROSTER_LOG` names russh.
const QUIET_RUSSH: [&str; 2] = ["russh=warn", "russh::server::encrypted=error"];

/// ureq (SCIM push, webhooks, the CLI's admin client) and its protocol crate log every
/// request and answer at debug and trace, headers and bodies included: with `ROSTER_LOG=trace`
/// that put the SCIM bearer token and users' personal data in the log (audit F13). So they log
/// warnings only unless `ROSTER_LOG` names ureq.
const QUIET_UREQ: [&str; 2] = ["ureq=warn", "ureq_proto=warn"];

/// PostgreSQL's NOTICEs (`... already exists, skipping` of a migration) are informational
/// messages of the server, not Roster's, and the driver logs statements with their parameters
/// at debug: warnings only unless `ROSTER_LOG` names it.
const QUIET_POSTGRES: [&str; 1] = ["tokio_postgres=warn"];

/// The targets the directives of `asked` (`ROSTER_LOG`) name: `target=level`,
/// `target[span]=level` and a bare `target`; a bare level (`debug`, `off`) names none.
fn named_targets(asked: &str) -> Vec<&str> {
    let levels = ["trace", "debug", "info", "warn", "error", "off"];
    asked
        .split(',')
        .filter_map(|d| {
            let d = d.trim();
            let target = d.split(['=', '[']).next().unwrap_or_default().trim();
            let bare_level = !d.contains(['=', '['])
                && (levels.iter().any(|l| l.eq_ignore_ascii_case(target))
                    || target.chars().all(|c| c.is_ascii_digit()));
            (!target.is_empty() && !bare_level).then_some(target)
        })
        .collect()
}

/// The directives added to `ROSTER_LOG` (`asked`) to keep noisy or revealing crates quiet.
/// Each is added unless `asked` names its target or a path above it (`russh` for
/// `russh::server::encrypted=error`); a directive for a module within it
/// (`ureq::run=debug`) is more specific, so it applies to that module and the rest of the
/// crate stays quiet. Review s30: a substring test let `ureq::run=debug` lift `ureq_proto` too
/// (`trace` then logged SCIM push's Authorization header) and
/// `tokio_postgres::connection=info` lift the whole driver (query parameters at debug).
fn quieting(asked: &str) -> Vec<&'static str> {
    let named = named_targets(asked);
    let above = |quiet: &str| {
        let target = quiet.split('=').next().unwrap_or_default();
        named.iter().any(|n| {
            target == *n
                || target
                    .strip_prefix(n)
                    .is_some_and(|rest| rest.starts_with("::"))
        })
    };
    (QUIET_POSTGRES.iter().chain(&QUIET_RUSSH).chain(&QUIET_UREQ))
        .copied()
        .filter(|q| !above(q))
        .collect()
}

/// Installs the global subscriber: `json` or human lines on stderr, verbosity from `ROSTER_LOG`
/// (else `default_level`), colours only on a terminal.
pub fn init(json: bool, default_level: &str) {
    use std::io::IsTerminal;
    let asked = std::env::var("ROSTER_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("ROSTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    for directive in quieting(&asked) {
        if let Ok(quiet) = directive.parse() {
            filter = filter.add_directive(quiet);
        }
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().with_writer(JsonStderr).init();
    } else {
        builder
            .with_ansi(io::stderr().is_terminal())
            .fmt_fields(EscapedFields)
            .with_writer(io::stderr)
            .init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ureq_russh_and_postgres_are_quiet_unless_named() {
        let all = quieting("trace");
        for d in [
            "ureq=warn",
            "ureq_proto=warn",
            "russh=warn",
            "tokio_postgres=warn",
        ] {
            assert!(all.contains(&d), "{d} in {all:?}");
        }
        for d in &all {
            assert!(
                d.parse::<tracing_subscriber::filter::Directive>().is_ok(),
                "{d}"
            );
        }
        let named = quieting("debug,ureq=trace");
        assert!(!named.contains(&"ureq=warn"), "{named:?}");
        assert!(named.contains(&"russh=warn"));
        let russh = quieting("info,russh=debug");
        assert!(russh.iter().all(|d| !d.starts_with("russh")), "{russh:?}");
    }

    /// Whether an event of `target` at `level` passes `ROSTER_LOG=asked` with the quieting.
    fn passes(asked: &str, target: &'static str, level: tracing::Level) -> bool {
        use tracing_subscriber::layer::SubscriberExt;
        let mut filter = tracing_subscriber::EnvFilter::new(asked);
        for d in quieting(asked) {
            filter = filter.add_directive(d.parse().unwrap());
        }
        let subscriber = tracing_subscriber::registry().with(filter);
        let meta = tracing::Metadata::new(
            "event",
            target,
            level,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CALLSITE)),
            tracing::metadata::Kind::EVENT,
        );
        tracing::Subscriber::enabled(&subscriber, &meta)
    }

    struct NoCallsite;
    impl tracing::callsite::Callsite for NoCallsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unimplemented!("only its identity is used")
        }
    }
    static CALLSITE: NoCallsite = NoCallsite;

    #[test]
    fn a_module_directive_lifts_that_module_only() {
        use tracing::Level;
        // Review s30: a substring test let these lift the whole crate and its neighbours.
        let asked = "trace,ureq::run=debug";
        assert!(!passes(asked, "ureq_proto::client", Level::TRACE));
        assert!(!passes(asked, "ureq::tls", Level::DEBUG));
        assert!(passes(asked, "ureq::run", Level::DEBUG));
        let asked = "debug,tokio_postgres::connection=info";
        assert!(!passes(asked, "tokio_postgres::query", Level::DEBUG));
        assert!(passes(asked, "tokio_postgres::connection", Level::INFO));
        // Named as a crate, it is the operator's choice; so is a bare target.
        assert!(passes(
            "info,ureq_proto=trace",
            "ureq_proto::client",
            Level::TRACE
        ));
        assert!(passes(
            "tokio_postgres",
            "tokio_postgres::query",
            Level::TRACE
        ));
        assert!(passes("trace", "roster::intake", Level::TRACE));
        assert!(!passes("trace", "russh::server", Level::INFO));
        assert_eq!(
            named_targets("debug, ureq::run=debug,x[s{a=1}]=info,3,tokio_postgres"),
            ["ureq::run", "x", "tokio_postgres"]
        );
    }

    #[test]
    fn escapes_controls_and_separators() {
        assert_eq!(escape("plain ü \\ ok"), "plain ü \\ ok");
        assert_eq!(
            escape("a\nb\r\tc\u{1b}[31md\u{7f}\u{85}\u{2028}\u{202e}"),
            "a\\nb\\r\\tc\\u{1b}[31md\\u{7f}\\u{85}\\u{2028}\\u{202e}"
        );
    }

    #[test]
    fn cut_keeps_whole_characters_and_says_what_is_left_out() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("üüüü", 2), "üü…(+4 bytes)");
        let long = "\u{1}".repeat(100_000);
        let shown = escape(&cut(&long, MAX_FIELD_CHARS)).into_owned();
        assert!(shown.len() < 6 * MAX_FIELD_CHARS, "{}", shown.len());
    }

    #[test]
    fn json_writer_keeps_lines_valid() {
        let mut w = JsonEscapingWriter(Vec::new());
        let line = "{\"f\":\"a\u{85}b\u{7f}\u{2028}\"}\n";
        w.write_all(line.as_bytes()).unwrap();
        let out = String::from_utf8(w.0).unwrap();
        assert_eq!(out, "{\"f\":\"a\\u0085b\\u007f\\u2028\"}\n");
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["f"], "a\u{85}b\u{7f}\u{2028}");
    }
}
