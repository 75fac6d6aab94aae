//! The sub-attributes Roster serves with one fixed value whenever their base attribute is
//! there (`emails.type` and `phoneNumbers.type` "work", `emails.primary` true): a comparison
//! on one is decided while the filter is parsed (`admin::filter`), and leaves as "the base is
//! there", "it is not", "everyone" or "nobody".

use super::Token;
use crate::model::filter::{Attribute, Op, UserFilter};

/// The fixed value of a sub-attribute (see `Resolved::Fixed`), with its SCIM type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Fixed {
    /// A string (`emails.type`, `phoneNumbers.type`), compared case-insensitively.
    Text(&'static str),
    /// A boolean (`emails.primary`): `eq`/`ne` with `true` or `false` only.
    Bool(bool),
}

/// A comparison on a sub-attribute Roster serves with one fixed value: decided now, so it
/// becomes "the base attribute is there", "it is not", "everyone" or "nobody". A boolean
/// (`emails.primary`) takes `eq`/`ne` with `true`/`false` only, as `active` does (RFC 7644
/// §3.4.2.2: `gt`/`ge`/`lt`/`le` on a boolean are an `invalidFilter`; a quoted "true" is a
/// string, not a boolean). A user without the base attribute has no value to compare, so
/// like every other comparison on a missing value (`model::filter`) it matches `ne` only:
/// `emails.type ne "home"` matches a user without an email, as `emails.value ne "x"` does.
pub(super) fn fixed_value(
    fixed: Fixed,
    base: Attribute,
    op: Op,
    value: Option<Token>,
) -> Result<UserFilter, String> {
    let holds = match fixed {
        Fixed::Bool(have) => {
            let want = match value {
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => true,
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => false,
                _ => {
                    return Err(
                        "emails.primary compares with true or false (without quotes)".into(),
                    )
                }
            };
            match op {
                Op::Eq => have == want,
                Op::Ne => have != want,
                _ => {
                    return Err(
                        "emails.primary is a boolean: only \"eq\" and \"ne\" compare it".into(),
                    )
                }
            }
        }
        Fixed::Text(have) => {
            let want = match value {
                Some(Token::Str(v)) => v.to_lowercase(),
                Some(Token::Word(w)) => {
                    return Err(format!("the value {w:?} must be a string in double quotes"))
                }
                _ => return Err("expected a value after the operator".into()),
            };
            let have = have.to_string();
            match op {
                Op::Eq => have == want,
                Op::Ne => have != want,
                Op::Co => have.contains(&want),
                Op::Sw => have.starts_with(&want),
                Op::Ew => have.ends_with(&want),
                Op::Gt => have > want,
                Op::Ge => have >= want,
                Op::Lt => have < want,
                Op::Le => have <= want,
            }
        }
    };
    let present = || UserFilter::Present(base.clone());
    Ok(match (holds, op == Op::Ne) {
        (true, false) => present(),
        (false, false) => UserFilter::Not(Box::new(UserFilter::Everyone)),
        (true, true) => UserFilter::Everyone,
        (false, true) => UserFilter::Not(Box::new(present())),
    })
}
