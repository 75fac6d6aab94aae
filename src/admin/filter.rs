//! The subset of the SCIM filter language (RFC 7644 §3.4.2.2) that Roster answers.
//!
//! A `filter` query string enters [`parse`]; it leaves as a [`Filter`] (comparisons joined by
//! `and`) or a sentence saying exactly what is not supported, which the SCIM module sends as a
//! 400 `invalidFilter`. Supported: `userName`, `externalId`, `emails.value` (or `emails`),
//! `id` with `eq` and a JSON string; `active eq true|false`. Attribute names and operators are
//! case-insensitive and may carry the core User schema URN. Strings are JSON strings, so a
//! quote inside a value is data, never syntax; there is no query language underneath, so a
//! would-be injection is either a literal value that matches nobody or a 400.

/// Longest filter accepted.
pub const MAX_FILTER_LEN: usize = 1024;
const CORE_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:user:";

/// An attribute a filter can compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    Id,
    UserName,
    ExternalId,
    Email,
    Active,
}

/// One `attr eq value` comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    Text(Attr, String),
    Active(bool),
}

/// Comparisons that must all hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    pub all: Vec<Cond>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Open,
    Close,
}

fn tokens(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if c.is_ascii_whitespace() => i += 1,
            b'(' | b'[' => {
                out.push(Token::Open);
                i += 1;
            }
            b')' | b']' => {
                out.push(Token::Close);
                i += 1;
            }
            b'"' => {
                // Find the closing quote, honouring backslash escapes; JSON decodes the rest.
                let mut j = i + 1;
                let mut escaped = false;
                while j < b.len() {
                    match b[j] {
                        _ if escaped => escaped = false,
                        b'\\' => escaped = true,
                        b'"' => break,
                        _ => {}
                    }
                    j += 1;
                }
                if j >= b.len() {
                    return Err(format!(
                        "the string starting at character {} is not closed with a double quote",
                        i + 1
                    ));
                }
                let value: String = serde_json::from_str(&s[i..=j]).map_err(|e| {
                    format!(
                        "the string starting at character {} is not a valid JSON string: {e}",
                        i + 1
                    )
                })?;
                out.push(Token::Str(value));
                i = j + 1;
            }
            _ => {
                let start = i;
                while i < b.len()
                    && !b[i].is_ascii_whitespace()
                    && !matches!(b[i], b'(' | b')' | b'[' | b']' | b'"')
                {
                    i += 1;
                }
                out.push(Token::Word(s[start..i].to_string()));
            }
        }
    }
    Ok(out)
}

fn attr(word: &str) -> Result<Attr, String> {
    let lower = word.to_ascii_lowercase();
    let name = lower.strip_prefix(CORE_URN).unwrap_or(&lower);
    match name {
        "id" => Ok(Attr::Id),
        "username" => Ok(Attr::UserName),
        "externalid" => Ok(Attr::ExternalId),
        "emails" | "emails.value" => Ok(Attr::Email),
        "active" => Ok(Attr::Active),
        _ => Err(format!(
            "filtering on {word:?} is not supported; use userName, externalId, emails.value, id or active"
        )),
    }
}

/// Parses a filter; Err is the sentence for the 400 `invalidFilter` response.
pub fn parse(s: &str) -> Result<Filter, String> {
    if s.len() > MAX_FILTER_LEN {
        return Err(format!(
            "the filter is {} characters long; at most {MAX_FILTER_LEN} are accepted",
            s.len()
        ));
    }
    let toks = tokens(s)?;
    if toks.is_empty() {
        return Err("the filter is empty".into());
    }
    let mut filter = Filter::default();
    let mut it = toks.into_iter().peekable();
    loop {
        let a = match it.next() {
            Some(Token::Word(w)) => attr(&w)?,
            Some(Token::Open) | Some(Token::Close) => {
                return Err("grouping with parentheses or brackets is not supported".into())
            }
            Some(Token::Str(v)) => {
                return Err(format!(
                    "expected an attribute name, found the string {v:?}"
                ))
            }
            None => return Err("the filter ends after \"and\"".into()),
        };
        let op = match it.next() {
            Some(Token::Word(w)) => w.to_ascii_lowercase(),
            Some(Token::Open) => {
                return Err(
                    "value filters such as emails[type eq \"work\"] are not supported".into(),
                )
            }
            _ => return Err("expected an operator after the attribute name".into()),
        };
        if op != "eq" {
            return Err(match op.as_str() {
                "ne" | "co" | "sw" | "ew" | "pr" | "gt" | "ge" | "lt" | "le" => {
                    format!("the operator {op:?} is not supported; only \"eq\" is")
                }
                _ => format!("{op:?} is not a filter operator"),
            });
        }
        let cond = match (a, it.next()) {
            (Attr::Active, Some(Token::Word(w))) => match w.to_ascii_lowercase().as_str() {
                "true" => Cond::Active(true),
                "false" => Cond::Active(false),
                _ => return Err(format!("active compares with true or false, not {w:?}")),
            },
            (Attr::Active, _) => {
                return Err("active compares with true or false (without quotes)".into())
            }
            (a, Some(Token::Str(v))) => Cond::Text(a, v),
            (_, Some(Token::Word(w))) => {
                return Err(format!("the value {w:?} must be a string in double quotes"))
            }
            _ => return Err("expected a value after \"eq\"".into()),
        };
        filter.all.push(cond);
        match it.next() {
            None => return Ok(filter),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("and") => continue,
            Some(Token::Word(w))
                if w.eq_ignore_ascii_case("or") || w.eq_ignore_ascii_case("not") =>
            {
                return Err(format!(
                    "the logical operator {:?} is not supported; only \"and\" is",
                    w.to_ascii_lowercase()
                ))
            }
            Some(t) => {
                return Err(format!(
                    "unexpected {} after a complete comparison; join comparisons with \"and\"",
                    match t {
                        Token::Word(w) => format!("{w:?}"),
                        Token::Str(v) => format!("string {v:?}"),
                        Token::Open | Token::Close => "bracket".into(),
                    }
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_filters() {
        assert_eq!(
            parse(r#"userName eq "Ana@X.example""#).unwrap().all,
            vec![Cond::Text(Attr::UserName, "Ana@X.example".into())]
        );
        assert_eq!(
            parse(r#"EMAILS.VALUE Eq "a@b.c" and active eq FALSE"#)
                .unwrap()
                .all,
            vec![Cond::Text(Attr::Email, "a@b.c".into()), Cond::Active(false)]
        );
        assert_eq!(
            parse(r#"urn:ietf:params:scim:schemas:core:2.0:User:externalId eq "007""#)
                .unwrap()
                .all,
            vec![Cond::Text(Attr::ExternalId, "007".into())]
        );
        // A quote inside a JSON string is data.
        assert_eq!(
            parse(r#"userName eq "x\" or \"1\" eq \"1""#).unwrap().all,
            vec![Cond::Text(Attr::UserName, r#"x" or "1" eq "1"#.into())]
        );
    }

    #[test]
    fn unsupported_filters_say_why() {
        for (f, needle) in [
            ("", "empty"),
            (r#"userName co "a""#, "only \"eq\""),
            (r#"userName eq "a" or userName eq "b""#, "\"or\""),
            (r#"userName eq "a"; DROP TABLE users"#, "unexpected"),
            (r#"userName eq "a"#, "not closed"),
            ("userName eq a", "double quotes"),
            (r#"password eq "x""#, "not supported"),
            (r#"(userName eq "a")"#, "parentheses"),
            (r#"emails[type eq "work"]"#, "value filters"),
            ("active eq \"true\"", "without quotes"),
            ("userName eq", "expected a value"),
            (r#"userName eq "a" and"#, "ends after"),
            (r#"userName eq "\x""#, "JSON"),
        ] {
            let e = parse(f).unwrap_err();
            assert!(e.contains(needle), "{f:?}: {e}");
        }
        assert!(parse(&"a".repeat(5000)).unwrap_err().contains("at most"));
    }
}
