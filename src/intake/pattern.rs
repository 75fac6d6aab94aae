//! Which file names a tenant's `file` setting selects: `{date}` in `date_format`, `*` for any
//! run of characters, everything else literal (compared case-sensitively, like the file system);
//! and the tenant's calendar ([`TenantCalendar`]): what "today" is in its `timezone`, the one
//! rule used by `only_today`, the `missing` record of a schedule and the admin API's `today`.

use crate::config::ImportProfile;
use chrono::{DateTime, NaiveDate, Utc};

/// A tenant's calendar: its `timezone` (UTC when the name does not parse; config validation
/// refuses such a name, so that only happens to a profile built in code).
#[derive(Debug, Clone, Copy)]
pub struct TenantCalendar {
    pub zone: chrono_tz::Tz,
}

impl TenantCalendar {
    pub fn of(profile: &ImportProfile) -> TenantCalendar {
        TenantCalendar {
            zone: profile.timezone.parse().unwrap_or(chrono_tz::UTC),
        }
    }

    /// The tenant's date at the instant `at`.
    pub fn date_of(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.zone).date_naive()
    }

    /// The tenant's date now.
    pub fn today(&self) -> NaiveDate {
        self.date_of(Utc::now())
    }
}

/// A compiled `file` pattern.
#[derive(Debug, Clone)]
pub struct FilePattern {
    parts: Vec<Part>,
    date_format: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Star,
    Date,
}

/// A name that matched, with the date it carries (when the pattern has `{date}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub date: Option<NaiveDate>,
}

impl FilePattern {
    pub fn new(profile: &ImportProfile) -> FilePattern {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = profile.file.as_str();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("{date}") {
                if !lit.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut lit)));
                }
                parts.push(Part::Date);
                rest = after;
            } else if let Some(after) = rest.strip_prefix('*') {
                if !lit.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut lit)));
                }
                parts.push(Part::Star);
                rest = after;
            } else {
                let mut chars = rest.chars();
                if let Some(c) = chars.next() {
                    lit.push(c);
                }
                rest = chars.as_str();
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        FilePattern {
            parts,
            date_format: profile.date_format.clone(),
        }
    }

    pub fn has_date(&self) -> bool {
        self.parts.contains(&Part::Date)
    }

    /// Matches a bare file name (no folders).
    pub fn matches(&self, name: &str) -> Option<Matched> {
        self.match_from(0, name, None)
    }

    fn match_from(&self, i: usize, rest: &str, date: Option<NaiveDate>) -> Option<Matched> {
        let Some(part) = self.parts.get(i) else {
            return rest.is_empty().then_some(Matched { date });
        };
        match part {
            Part::Literal(l) => {
                let after = rest.strip_prefix(l.as_str())?;
                self.match_from(i + 1, after, date)
            }
            Part::Star => (0..=rest.len())
                .filter(|&k| rest.is_char_boundary(k))
                .find_map(|k| self.match_from(i + 1, &rest[k..], date)),
            Part::Date => {
                // Try every prefix that parses as a date in the configured format.
                (1..=rest.len().min(40))
                    .filter(|&k| rest.is_char_boundary(k))
                    .find_map(|k| {
                        let d = NaiveDate::parse_from_str(&rest[..k], &self.date_format).ok()?;
                        self.match_from(i + 1, &rest[k..], Some(d))
                    })
            }
        }
    }

    /// The name expected for `date` (for messages such as "expected users_2026_11_21.csv").
    pub fn name_for(&self, date: NaiveDate) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.clone(),
                Part::Star => "*".to_string(),
                Part::Date => date.format(&self.date_format).to_string(),
            })
            .collect()
    }
}

/// Why a file at `rel` (relative to the tenant home) is not imported as it is, in words for
/// the uploader's operator (the log line of a finished upload, `roster today`); None when its
/// name is one the intake takes (design §6: only files directly in `/` whose names match
/// `file`). Review s18 clients F3: a near miss (`Users.csv`, `users (1).csv`, a subfolder) was
/// dropped without a word.
pub fn why_not_imported(profile: &ImportProfile, rel: &str) -> Option<String> {
    let pattern = &profile.file;
    if rel.contains('/') {
        return Some(format!(
            "it is in a folder: only files directly in the tenant folder are imported (move it there as {pattern})"
        ));
    }
    if crate::sftp::is_temp_name(rel) {
        return Some(format!(
            "a temporary upload name: imported once the client renames it to a name matching {pattern}"
        ));
    }
    if FilePattern::new(profile).matches(rel).is_some() {
        return None;
    }
    let folded = ImportProfile {
        file: pattern.to_lowercase(),
        ..profile.clone()
    };
    if FilePattern::new(&folded)
        .matches(&rel.to_lowercase())
        .is_some()
    {
        return Some(format!(
            "its name differs from {pattern} in upper and lower case only, and names are matched exactly: rename it to import it"
        ));
    }
    Some(format!(
        "its name does not match {pattern}: rename it to import it"
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn near_misses_say_why_they_are_not_imported() {
        let mut p = ImportProfile {
            file: "users.csv".into(),
            ..ImportProfile::default()
        };
        let why = |p: &ImportProfile, rel: &str| why_not_imported(p, rel).unwrap_or_default();
        assert_eq!(why_not_imported(&p, "users.csv"), None);
        assert!(why(&p, "Users.CSV").contains("upper and lower case only"));
        assert!(why(&p, "users (1).csv").contains("does not match users.csv"));
        assert!(why(&p, "incoming/users.csv").contains("in a folder"));
        assert!(why(&p, "users.csv.filepart").contains("temporary upload name"));
        p.file = "users_{date}.csv".into();
        p.date_format = "%Y_%m_%d".into();
        assert_eq!(why_not_imported(&p, "users_2026_11_30.csv"), None);
        assert!(why(&p, "USERS_2026_11_30.csv").contains("upper and lower case only"));
        assert!(why(&p, "users_2026-11-30.csv").contains("does not match users_{date}.csv"));
    }

    use super::*;

    fn pattern(file: &str, fmt: &str) -> FilePattern {
        let p = ImportProfile {
            file: file.into(),
            date_format: fmt.into(),
            ..Default::default()
        };
        FilePattern::new(&p)
    }

    #[test]
    fn today_is_the_date_in_the_tenant_zone() {
        let p = ImportProfile {
            timezone: "Pacific/Kiritimati".into(),
            ..Default::default()
        };
        let at = DateTime::parse_from_rfc3339("2026-11-21T20:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        // UTC+14: already the 22nd there.
        assert_eq!(
            TenantCalendar::of(&p).date_of(at),
            NaiveDate::from_ymd_opt(2026, 11, 22).unwrap()
        );
        let bad = ImportProfile {
            timezone: "Nowhere/Else".into(),
            ..Default::default()
        };
        assert_eq!(
            TenantCalendar::of(&bad).date_of(at),
            NaiveDate::from_ymd_opt(2026, 11, 21).unwrap()
        );
    }

    #[test]
    fn literal_star_and_date() {
        let p = pattern("sync_users.csv", "%Y");
        assert!(p.matches("sync_users.csv").is_some());
        assert!(p.matches("sync_users.csv.filepart").is_none());

        let p = pattern("userdata_*.csv", "%Y");
        assert!(p.matches("userdata_2026-11-21.csv").is_some());
        assert!(p.matches("userdata_.csv").is_some());
        assert!(p.matches("users.csv").is_none());

        let p = pattern("smartarena_users_{date}.csv", "%Y_%m_%d");
        let m = p.matches("smartarena_users_2026_02_12.csv").unwrap();
        assert_eq!(m.date, NaiveDate::from_ymd_opt(2026, 2, 12));
        assert!(p.matches("smartarena_users_2026_02_30.csv").is_none());
        assert!(p.matches("smartarena_users_latest.csv").is_none());
        assert_eq!(
            p.name_for(NaiveDate::from_ymd_opt(2026, 11, 21).unwrap()),
            "smartarena_users_2026_11_21.csv"
        );
    }
}
