//! The SCIM filter language (RFC 7644 §3.4.2.2) for the User attributes Roster serves.
//!
//! A `filter` query string enters [`parse`] and leaves as a [`UserFilter`] (`model::filter`,
//! which also says how a user matches), or as a sentence saying exactly what is wrong, which
//! the SCIM module sends as a 400 `invalidFilter`.
//!
//! Supported: the operators `eq ne co sw ew gt ge lt le pr`; `and`, `or`, `not ( … )` and
//! parentheses, with `not` binding tightest, then `and`, then `or`; value paths such as
//! `emails[type eq "work" and value co "@example.com"]`; attribute names case-insensitive,
//! optionally behind the core or enterprise User schema URN. The attributes are those of the
//! User resource Roster serves (see [`attribute`]): `id`, `userName`, `externalId`,
//! `displayName`, `name.givenName|familyName|formatted`, `emails[.value|.type|.primary]`,
//! `phoneNumbers[.value|.type]`, `title`, `preferredLanguage`, `timezone`, `active`,
//! `meta.created`, `meta.lastModified`, and the enterprise `employeeNumber`, `department`,
//! `manager.displayName`, and `groups[.value|.display]` (the user's group names); the complex
//! `name` and `manager` take `pr` (and `eq`/`ne null`) only ([`complex_present`]). Strings are JSON strings, so a quote inside a value is data, never
//! syntax; there is no query language underneath. A string holding NUL (`\u0000`) is refused:
//! no stored value holds one (PostgreSQL cannot). A value path matches only a user that has
//! the attribute (RFC 7644 §3.4.2.2: some value of it satisfies the inner filter), so
//! `emails[value ne "x"]` never matches a user without an email; for `groups`, a list, the
//! inner filter is tested against the user's groups as a whole, not one group at a time.
//! `PATH eq null` is "PATH is absent" and `PATH ne null` "PATH is present" (RFC 7643 §2.5).
//! Input is bounded: at most [`MAX_FILTER_LEN`] characters and [`MAX_DEPTH`] nested groups.
//! [`equality`] reads the one form `/Groups` accepts (`ATTR eq "VALUE"`) with the same tokens.

use crate::model::filter::{Attribute, Op, Operand, UserFilter};
use fixed::{fixed_value, Fixed};

/// Longest filter accepted.
pub const MAX_FILTER_LEN: usize = 1024;
/// Deepest nesting of parentheses, `not` and value paths accepted.
pub const MAX_DEPTH: usize = 16;
const CORE_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:user:";
const ENTERPRISE_URN: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user:";

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Open,
    Close,
    OpenBracket,
    CloseBracket,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Word(w) => format!("{w:?}"),
            Token::Str(v) => format!("the string {v:?}"),
            Token::Open => "\"(\"".into(),
            Token::Close => "\")\"".into(),
            Token::OpenBracket => "\"[\"".into(),
            Token::CloseBracket => "\"]\"".into(),
        }
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self, Token::Word(x) if x.eq_ignore_ascii_case(w))
    }
}

fn tokens(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let single = match b[i] {
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'(' => Some(Token::Open),
            b')' => Some(Token::Close),
            b'[' => Some(Token::OpenBracket),
            b']' => Some(Token::CloseBracket),
            _ => None,
        };
        if let Some(t) = single {
            out.push(t);
            i += 1;
        } else if b[i] == b'"' {
            let (value, next) = string_at(s, i)?;
            out.push(Token::Str(value));
            i = next;
        } else {
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
    Ok(out)
}

/// The JSON string starting at byte `i` (a `"`), and the index after it.
fn string_at(s: &str, i: usize) -> Result<(String, usize), String> {
    let b = s.as_bytes();
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
    if value.contains('\0') {
        return Err(format!(
            "the string starting at character {} holds a NUL character (\\u0000), which no \
             attribute can hold",
            i + 1
        ));
    }
    Ok((value, j + 1))
}

/// A filter that is one equality, `ATTR eq "VALUE"` (any spacing, the operator in any case,
/// in parentheses or not): the attribute as written and the value; Ok(None) for any other
/// filter; Err when the filter cannot be read at all (the sentence for a 400).
pub fn equality(s: &str) -> Result<Option<(String, String)>, String> {
    if s.len() > MAX_FILTER_LEN {
        return Err(format!(
            "the filter is {} characters long; at most {MAX_FILTER_LEN} are accepted",
            s.len()
        ));
    }
    let mut toks = tokens(s)?;
    while toks.len() > 2 && toks.first() == Some(&Token::Open) && toks.last() == Some(&Token::Close)
    {
        toks.pop();
        toks.remove(0);
    }
    Ok(match toks.as_slice() {
        [Token::Word(attr), op, Token::Str(value)] if op.is_word("eq") => {
            Some((attr.clone(), value.clone()))
        }
        _ => None,
    })
}

/// What an attribute path resolves to.
#[derive(Debug, Clone, PartialEq)]
enum Resolved {
    /// An attribute of the user.
    Attr(Attribute),
    /// A sub-attribute Roster serves with a fixed value whenever the base attribute is there
    /// (`emails.type` is always "work", `emails.primary` always true).
    Fixed(Fixed, Attribute),
}

/// `path` without the core or enterprise User schema URN it may carry (lower-cased).
fn bare(path: &str) -> &str {
    path.strip_prefix(CORE_URN)
        .or_else(|| path.strip_prefix(ENTERPRISE_URN))
        .unwrap_or(path)
}

/// For a complex attribute Roster serves as one (`name`, the enterprise `manager`): who has
/// it, as RFC 7644 §3.4.2.2 gives `pr` on a complex attribute (a non-empty sub-attribute).
/// `name` has one when `givenName` or `familyName` does (`formatted` is built from them);
/// `manager` when the manager field (`manager.displayName`, the manager's email) does: its
/// `value` and `$ref` are shown only along with it.
fn complex_present(path: &str) -> Option<UserFilter> {
    let present = |a| Box::new(UserFilter::Present(a));
    match bare(path) {
        "name" => Some(UserFilter::Or(
            present(Attribute::FirstName),
            present(Attribute::LastName),
        )),
        "manager" => Some(UserFilter::Present(Attribute::Field("manager_email"))),
        _ => None,
    }
}

/// Resolves an attribute path (already joined with its value path's parent, lower-cased).
fn attribute(path: &str) -> Option<Resolved> {
    use Attribute as A;
    let path = bare(path);
    let attr = match path {
        "id" => A::Key,
        "username" => A::UserName,
        "externalid" | "employeenumber" => A::MappingCode,
        "displayname" | "name.formatted" => A::FullName,
        "name.givenname" => A::FirstName,
        "name.familyname" => A::LastName,
        "emails" | "emails.value" => A::Email,
        "emails.type" => return Some(Resolved::Fixed(Fixed::Text("work"), A::Email)),
        "emails.primary" => return Some(Resolved::Fixed(Fixed::Bool(true), A::Email)),
        "phonenumbers" | "phonenumbers.value" => A::Field("phone"),
        "phonenumbers.type" => {
            return Some(Resolved::Fixed(Fixed::Text("work"), A::Field("phone")))
        }
        "title" => A::Field("job_title"),
        "preferredlanguage" => A::Field("language"),
        "timezone" => A::Field("timezone"),
        "department" => A::Field("org_unit"),
        "manager.displayname" => A::Field("manager_email"),
        "groups" | "groups.value" | "groups.display" => A::Field("groups"),
        "active" => A::Active,
        "meta.created" => A::Created,
        "meta.lastmodified" => A::Modified,
        _ => return None,
    };
    Some(Resolved::Attr(attr))
}

/// Whether the filter compares the User attribute at `path` (any case, optionally behind a
/// schema URN) case-exactly; None when no filter takes it. The Schemas documents advertise
/// `caseExact` from this, so what they say cannot drift from what filters do.
pub fn case_exact(path: &str) -> Option<bool> {
    Some(match attribute(&path.to_ascii_lowercase())? {
        Resolved::Attr(a) => a.case_exact(),
        // Compared with the value Roster serves, case ignored (`fixed_value`).
        Resolved::Fixed(..) => false,
    })
}

fn operator(word: &str) -> Option<Op> {
    Some(match word.to_ascii_lowercase().as_str() {
        "eq" => Op::Eq,
        "ne" => Op::Ne,
        "co" => Op::Co,
        "sw" => Op::Sw,
        "ew" => Op::Ew,
        "gt" => Op::Gt,
        "ge" => Op::Ge,
        "lt" => Op::Lt,
        "le" => Op::Le,
        _ => return None,
    })
}

/// Parses a filter; Err is the sentence for the 400 `invalidFilter` response.
pub fn parse(s: &str) -> Result<UserFilter, String> {
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
    let mut p = Parser {
        toks,
        at: 0,
        depth: 0,
    };
    let f = p.or_expr(None)?;
    match p.peek() {
        None => Ok(f),
        Some(t) => Err(format!(
            "unexpected {} after a complete expression; join expressions with \"and\" or \"or\"",
            t.describe()
        )),
    }
}

struct Parser {
    toks: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    /// `and_expr ("or" and_expr)*`; `parent` is the attribute of an enclosing value path.
    fn or_expr(&mut self, parent: Option<&str>) -> Result<UserFilter, String> {
        let mut f = self.and_expr(parent)?;
        while self.peek().is_some_and(|t| t.is_word("or")) {
            self.at += 1;
            let rhs = self.and_expr(parent)?;
            f = UserFilter::Or(Box::new(f), Box::new(rhs));
        }
        Ok(f)
    }

    fn and_expr(&mut self, parent: Option<&str>) -> Result<UserFilter, String> {
        let mut f = self.unary(parent)?;
        while self.peek().is_some_and(|t| t.is_word("and")) {
            self.at += 1;
            let rhs = self.unary(parent)?;
            f = UserFilter::And(Box::new(f), Box::new(rhs));
        }
        Ok(f)
    }

    /// `not ( … )`, `( … )`, or a comparison / value path.
    fn unary(&mut self, parent: Option<&str>) -> Result<UserFilter, String> {
        match self.next() {
            Some(t) if t.is_word("not") => {
                if self.next() != Some(Token::Open) {
                    return Err("\"not\" must be followed by a parenthesised filter".into());
                }
                let inner = self.group(parent)?;
                Ok(UserFilter::Not(Box::new(inner)))
            }
            Some(Token::Open) => self.group(parent),
            Some(Token::Word(w)) => self.comparison(&w, parent),
            Some(t) => Err(format!(
                "expected an attribute name, found {}",
                t.describe()
            )),
            None => Err("the filter ends where an attribute name was expected".into()),
        }
    }

    /// The rest of a group after its `(`, through its `)`.
    fn group(&mut self, parent: Option<&str>) -> Result<UserFilter, String> {
        self.deeper()?;
        let f = self.or_expr(parent)?;
        self.depth -= 1;
        match self.next() {
            Some(Token::Close) => Ok(f),
            Some(t) => Err(format!("expected \")\", found {}", t.describe())),
            None => Err("a \"(\" is not closed".into()),
        }
    }

    fn deeper(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!(
                "the filter nests more than {MAX_DEPTH} groups deep"
            ));
        }
        Ok(())
    }

    /// `PATH pr`, `PATH OP VALUE` or `PATH [ … ]`.
    fn comparison(&mut self, word: &str, parent: Option<&str>) -> Result<UserFilter, String> {
        let path = match parent {
            Some(p) => format!("{p}.{}", word.to_ascii_lowercase()),
            None => word.to_ascii_lowercase(),
        };
        if self.peek() == Some(&Token::OpenBracket) {
            if parent.is_some() {
                return Err("a value path cannot hold another value path".into());
            }
            self.at += 1;
            self.deeper()?;
            let f = self.or_expr(Some(&path))?;
            self.depth -= 1;
            return match self.next() {
                Some(Token::CloseBracket) => Ok(value_path(&path, f)),
                Some(t) => Err(format!("expected \"]\", found {}", t.describe())),
                None => Err("a \"[\" is not closed".into()),
            };
        }
        if let Some(present) = complex_present(&path) {
            return self.complex(word, present);
        }
        let resolved = attribute(&path).ok_or_else(|| {
            format!(
                "filtering on {word:?} is not supported; use id, userName, externalId, \
                 displayName, name.givenName, name.familyName, emails, phoneNumbers, title, \
                 preferredLanguage, timezone, active, meta.created, meta.lastModified, \
                 employeeNumber, department or manager.displayName"
            )
        })?;
        let op_word = match self.next() {
            Some(Token::Word(w)) => w,
            Some(t) => {
                return Err(format!(
                    "expected an operator after {word:?}, found {}",
                    t.describe()
                ))
            }
            None => return Err(format!("expected an operator after {word:?}")),
        };
        if op_word.eq_ignore_ascii_case("pr") {
            return Ok(match resolved {
                Resolved::Attr(a) | Resolved::Fixed(_, a) => UserFilter::Present(a),
            });
        }
        let op =
            operator(&op_word).ok_or_else(|| format!("{op_word:?} is not a filter operator"))?;
        let value = self.next();
        if matches!(&value, Some(Token::Word(w)) if w.eq_ignore_ascii_case("null")) {
            return null_comparison(resolved, op);
        }
        match resolved {
            Resolved::Attr(a) => operand(&a, op, value).map(|v| UserFilter::Compare(a, op, v)),
            Resolved::Fixed(fixed, base) => fixed_value(fixed, base, op, value),
        }
    }
}

impl Parser {
    /// The rest of a comparison on complex attribute `word`, whom `present` matches: `pr`
    /// (and `eq null` / `ne null`, as for any attribute); anything else names the problem.
    fn complex(&mut self, word: &str, present: UserFilter) -> Result<UserFilter, String> {
        let op = match self.next() {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("pr") => return Ok(present),
            Some(Token::Word(w)) => operator(&w),
            _ => None,
        };
        let null = matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("null"));
        match op {
            Some(Op::Eq) if null => {
                self.at += 1;
                Ok(UserFilter::Not(Box::new(present)))
            }
            Some(Op::Ne) if null => {
                self.at += 1;
                Ok(present)
            }
            _ => Err(format!(
                "{word:?} is a complex attribute: test it with \"pr\", or compare one of its \
                 sub-attributes (such as {word}.{})",
                if bare(&word.to_ascii_lowercase()) == "name" {
                    "givenName"
                } else {
                    "displayName"
                }
            )),
        }
    }
}

/// A value path `path[f]`: `f` for a user that has `path` (RFC 7644 §3.4.2.2: some value of
/// the attribute satisfies `f`; a user without one has none that could). The guard is left
/// out where `f` already implies it, so the common `emails[value eq "…"]` stays a comparison
/// the stores' indexes serve.
fn value_path(path: &str, f: UserFilter) -> UserFilter {
    let base = match attribute(path) {
        Some(Resolved::Attr(a)) if !matches!(a, Attribute::Active) && !a.is_time() => a,
        // Not a multi-valued attribute (`name[givenName eq "x"]`): nothing to guard.
        _ => return f,
    };
    if implies_present(&f, &base) {
        return f;
    }
    UserFilter::And(Box::new(UserFilter::Present(base)), Box::new(f))
}

/// Whether every user `f` matches has a value of `base` (false when unsure).
fn implies_present(f: &UserFilter, base: &Attribute) -> bool {
    match f {
        UserFilter::Present(a) => a == base,
        UserFilter::Compare(a, op, _) => a == base && *op != Op::Ne,
        UserFilter::And(x, y) => implies_present(x, base) || implies_present(y, base),
        UserFilter::Or(x, y) => implies_present(x, base) && implies_present(y, base),
        UserFilter::Not(x) => **x == UserFilter::Everyone,
        UserFilter::Everyone => false,
    }
}

/// `PATH eq null` / `PATH ne null`: RFC 7643 §2.5 holds an attribute that is null the same as
/// one that is not there, so these are `not (PATH pr)` and `PATH pr`.
fn null_comparison(resolved: Resolved, op: Op) -> Result<UserFilter, String> {
    let (Resolved::Attr(a) | Resolved::Fixed(_, a)) = resolved;
    match op {
        Op::Eq => Ok(UserFilter::Not(Box::new(UserFilter::Present(a)))),
        Op::Ne => Ok(UserFilter::Present(a)),
        _ => Err("null compares only with \"eq\" and \"ne\" (absent, present)".into()),
    }
}

/// The operand of a comparison on `a`, checked against what `a` can be compared with.
fn operand(a: &Attribute, op: Op, value: Option<Token>) -> Result<Operand, String> {
    if *a == Attribute::Active {
        let b = match value {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => true,
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => false,
            _ => return Err("active compares with true or false (without quotes)".into()),
        };
        if !matches!(op, Op::Eq | Op::Ne) {
            return Err("active is a boolean: only \"eq\" and \"ne\" compare it".into());
        }
        return Ok(Operand::Bool(b));
    }
    let text = match value {
        Some(Token::Str(v)) => v,
        Some(Token::Word(w)) => {
            return Err(format!("the value {w:?} must be a string in double quotes"))
        }
        _ => return Err("expected a value after the operator".into()),
    };
    if a.is_time() {
        if matches!(op, Op::Co | Op::Sw | Op::Ew) {
            return Err(
                "meta.created and meta.lastModified compare with eq, ne, gt, ge, lt or le".into(),
            );
        }
        let t = chrono::DateTime::parse_from_rfc3339(&text).map_err(|_| {
            format!("{text:?} is not a date-time such as \"2026-11-01T00:00:00Z\" (RFC 3339)")
        })?;
        return Ok(Operand::Time(t.with_timezone(&chrono::Utc)));
    }
    Ok(Operand::Text(text))
}

mod fixed;

#[cfg(test)]
mod tests;
