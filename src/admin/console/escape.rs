//! The console's HTML escaper (`askama.toml` names it for every `.html` template): askama's
//! own HTML escaping, plus the Unicode direction controls written as visible text.
//!
//! Text enters as any value a template prints (names, e-mails, file names, error messages:
//! much of it written by a tenant's HR system or SFTP client) and leaves as HTML text. A right-
//! to-left override (U+202E) or isolate inside such text makes a browser show what follows it
//! reversed or moved: `inv\u{202E}vsc.exe` reads as `invexe.csv`, and a name could pass for
//! another. Each such control is shown as `[U+202E]` instead, so what the operator reads is
//! what is stored. The controls: ALM (U+061C), LRM and RLM (U+200E, U+200F), the embeddings
//! and overrides U+202A–U+202E, the isolates U+2066–U+2069.

use askama::filters::{Escaper, Html};
use std::fmt::{self, Write};

/// askama's [`Html`] escaping, with direction controls made visible.
#[derive(Debug, Clone, Copy, Default)]
pub struct VisibleHtml;

/// True for a Unicode control that changes the direction of the text around it.
pub fn is_direction_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

impl Escaper for VisibleHtml {
    fn write_escaped_str<W: Write>(&self, mut dest: W, string: &str) -> fmt::Result {
        let mut rest = string;
        while let Some(at) = rest.find(is_direction_control) {
            Html.write_escaped_str(&mut dest, &rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(dest, "[U+{:04X}]", u32::from(c))?;
            rest = &rest[at + c.len_utf8()..];
        }
        Html.write_escaped_str(dest, rest)
    }

    fn write_escaped_char<W: Write>(&self, mut dest: W, c: char) -> fmt::Result {
        if is_direction_control(c) {
            write!(dest, "[U+{:04X}]", u32::from(c))
        } else {
            Html.write_escaped_char(dest, c)
        }
    }
}

/// `s` escaped for a form field's `value="…"` that the operator submits again (a search box):
/// direction controls as character references, which the browser turns back into the
/// characters, so a search for a name holding an RLM finds it again; written in a template as
/// `{{ field|safe }}`. A field's value is shown inside its box, apart from the page's text.
pub fn form_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(is_direction_control) {
        let _ = Html.write_escaped_str(&mut out, &rest[..at]);
        let c = rest[at..].chars().next().unwrap_or_default();
        let _ = write!(out, "&#x{:X};", u32::from(c));
        rest = &rest[at + c.len_utf8()..];
    }
    let _ = Html.write_escaped_str(&mut out, rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_value_keeps_direction_controls_as_references() {
        assert_eq!(
            form_value("\u{200F}عربي \"<x>\""),
            "&#x200F;عربي &#34;&#60;x&#62;&#34;"
        );
        assert_eq!(form_value("plain"), "plain");
    }

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        VisibleHtml.write_escaped_str(&mut out, s).unwrap();
        out
    }

    #[test]
    fn direction_controls_are_shown_and_html_is_escaped() {
        assert_eq!(escaped("inv\u{202E}vsc.exe"), "inv[U+202E]vsc.exe");
        assert_eq!(
            escaped("\u{2067}<b>\u{2069} & \u{200F}"),
            "[U+2067]&#60;b&#62;[U+2069] &#38; [U+200F]"
        );
        assert_eq!(escaped("Šime Ćosić, عربي"), "Šime Ćosić, عربي");
        assert_eq!(escaped(""), "");
        let mut one = String::new();
        VisibleHtml
            .write_escaped_char(&mut one, '\u{061C}')
            .unwrap();
        VisibleHtml.write_escaped_char(&mut one, '"').unwrap();
        assert_eq!(one, "[U+061C]&#34;");
    }
}
