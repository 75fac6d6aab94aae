//! `meta.created` / `meta.lastModified` compared with a time, in the SQL of a translated
//! filter (`users_query`): the bound is rounded to whole milliseconds here, by operator.
//!
//! Stored times are whole milliseconds, while a filter's time keeps what the client wrote
//! (nanoseconds) and PostgreSQL would keep microseconds of it, cutting the rest: on a user
//! updated at exactly 12:00:00.000, `lt "…12:00:00.0000005Z"` would be false on PostgreSQL
//! and true on sled (and by `UserFilter::matches`). So a time with a part below the
//! millisecond is replaced by the whole millisecond that gives the same answer for every
//! whole-millisecond value, as sled's `candidate_ranges` does: `gt`/`le` compare with the
//! millisecond at or before it (`floor`), `ge`/`lt` with the one after it (`floor + 1 ms`),
//! `eq` is false and `ne` true (no stored time equals it).

use super::{Builder, Param};
use crate::model::filter::{Attribute, Op};
use chrono::{DateTime, TimeDelta, Utc};

/// `floor` and `ceil` of `t` in whole milliseconds (equal when `t` is whole), or None when
/// they cannot be represented (a time at the end of chrono's range).
fn whole_millis(t: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let floor = DateTime::from_timestamp_millis(t.timestamp_millis())?;
    if floor == t {
        return Some((t, t));
    }
    Some((floor, floor.checked_add_signed(TimeDelta::milliseconds(1))?))
}

impl Builder {
    /// The SQL of `a op t` for a time attribute `a` (see the module doc).
    pub(super) fn time_compare(&mut self, a: &Attribute, op: Op, t: DateTime<Utc>) -> String {
        let column = if *a == Attribute::Created {
            "created_at"
        } else {
            "updated_at"
        };
        // Out of range: as given (no stored time comes near it).
        let (floor, ceil) = whole_millis(t).unwrap_or((t, t));
        let whole = floor == ceil;
        let (sign, bound) = match op {
            Op::Eq if !whole => return "false".into(),
            Op::Ne if !whole => return "true".into(),
            Op::Eq => ("=", floor),
            Op::Ne => ("<>", floor),
            Op::Gt => (">", floor),
            Op::Le => ("<=", floor),
            Op::Ge => (">=", ceil),
            Op::Lt => ("<", ceil),
            Op::Co | Op::Sw | Op::Ew => return "false".into(),
        };
        let p = self.bind(Param::Time(bound));
        format!("({column} {sign} {p})")
    }
}

#[cfg(test)]
mod tests {
    use super::super::condition;
    use super::*;
    use crate::model::filter::Operand;
    use crate::model::UserFilter;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_time_below_the_millisecond_is_rounded_by_operator() {
        let t = at("2026-06-01T12:00:00.0000005Z");
        let (floor, ceil) = (at("2026-06-01T12:00:00Z"), at("2026-06-01T12:00:00.001Z"));
        for (op, want) in [
            (Op::Gt, Some(("> ", floor))),
            (Op::Le, Some(("<= ", floor))),
            (Op::Ge, Some((">= ", ceil))),
            (Op::Lt, Some(("< ", ceil))),
            (Op::Eq, None),
            (Op::Ne, None),
        ] {
            let f = UserFilter::Compare(Attribute::Modified, op, Operand::Time(t));
            let c = condition(&f, 2).unwrap();
            match want {
                Some((sign, bound)) => {
                    assert!(c.sql.contains(sign), "{op:?}: {}", c.sql);
                    assert_eq!(c.params, vec![Param::Time(bound)], "{op:?}");
                }
                None => {
                    let fixed = if op == Op::Eq { "false" } else { "true" };
                    assert_eq!((c.sql.as_str(), c.params.len()), (fixed, 0), "{op:?}");
                }
            }
        }
        // A whole millisecond is bound as given.
        let f = UserFilter::Compare(Attribute::Created, Op::Eq, Operand::Time(ceil));
        let c = condition(&f, 2).unwrap();
        assert_eq!(c.params, vec![Param::Time(ceil)]);
    }
}
