//! Header mapping: which file column is which field.
//!
//! Data enters as the header row's cells (already cut to a bounded length) and the tenant's
//! profile; it leaves as a [`Mapping`] (the mapped columns, the match key, password and email
//! columns, notes about ignored headers, and the lookups and stored field names the row pass
//! and the merge use), or as the sentence saying why the header cannot be used (a required
//! column missing, a column given twice, an unknown field in the profile).

use super::fields::{self, FieldSpec};
use crate::config::{ImportProfile, Tenant};

/// One mapped column.
#[derive(Debug, Clone)]
pub struct Column {
    pub field: String,
    pub spec: FieldSpec,
    /// Index of the column in the file.
    pub index: usize,
    /// The header as written in the file (trimmed).
    pub header: String,
    /// A value is required (the match key, first and last name).
    pub required: bool,
    /// The field name as records store it (see `model::packed::put_name`), for row digests.
    pub stored_name: Vec<u8>,
}

/// Which columns of this file are which fields.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub cols: Vec<Column>,
    /// Index into `cols` of the match key.
    pub key: usize,
    pub password: Option<usize>,
    /// Index into `cols` of the `email` column.
    pub email: Option<usize>,
    /// Number of header cells.
    pub width: usize,
    /// The file's delimiter (a cell holding it after a line break was joined by a quote).
    pub delim: u8,
    /// Notes about the mapping (ignored headers, configured columns the file lacks), for the
    /// run's messages.
    pub notes: Vec<String>,
    /// Columns of the profile's `columns` map that the file does not have: the run is then
    /// `partial` (its fields were read for nobody, and the operator must hear of it).
    pub absent: usize,
    /// The tenant's lists, prepared for lookups.
    pub lookups: fields::Lookups,
    /// (index into `cols`, the stored form of its field name), sorted by field name: the order
    /// in which a new record's fields are written.
    pub by_name: Vec<(usize, Vec<u8>)>,
}

/// A header as the import compares it: unseen characters at either end trimmed (spaces, a
/// zero-width space, a soft hyphen, a BOM: `fields::is_unseen`), lower case. The console's
/// mapping helper uses it too, so it matches a header exactly when a run does.
pub(crate) fn norm_header(h: &str) -> String {
    h.trim_matches(fields::is_unseen).to_lowercase()
}

/// Every column of `headers` that is the header `profile` reads `field` from (its `columns`
/// entry, or with an empty map the field's own name), compared as [`map_columns`] compares.
/// Unlike [`map_columns`] it answers for a header row a run would refuse (a required column
/// missing, the header twice), so the mapping helper can hide such a file's password column.
pub(crate) fn columns_named(
    headers: &[String],
    profile: &ImportProfile,
    field: &str,
) -> Vec<usize> {
    let want = if profile.columns.is_empty() {
        norm_header(field)
    } else {
        match profile.columns.get(field) {
            Some(header) => norm_header(header),
            None => return Vec::new(),
        }
    };
    (headers.iter().enumerate())
        .filter(|(_, h)| norm_header(h) == want)
        .map(|(i, _)| i)
        .collect()
}

/// The file-level error for a mapped header that names several columns (1-based numbers).
fn twice(header: &str, normed: &[String], norm: &str) -> String {
    let at: Vec<u64> = (normed.iter().enumerate())
        .filter(|(_, h)| *h == norm)
        .map(|(i, _)| i as u64 + 1)
        .collect();
    let at = super::bounds::listed(at.into_iter());
    let header = super::bounds::cut(header.trim(), 100);
    format!("the header {header:?} appears in more than one column (columns {at}), so it is not clear which one to import; remove or rename all but one")
}

/// With an empty `columns` map: each header that is a field name is that field; the others
/// are ignored and named in a note.
fn columns_by_field_name(
    headers: &[String],
    normed: &[String],
    notes: &mut Vec<String>,
) -> Result<Vec<Column>, String> {
    let mut cols = Vec::new();
    let mut ignored = Vec::new();
    for (i, h) in normed.iter().enumerate() {
        match fields::spec(h) {
            Some(_) if cols.iter().any(|c: &Column| &c.field == h) => {
                return Err(twice(&headers[i], normed, h));
            }
            Some(spec) => cols.push(Column {
                field: h.clone(),
                spec,
                index: i,
                header: headers[i].trim().to_string(),
                required: false,
                stored_name: Vec::new(),
            }),
            _ if !h.is_empty() => ignored.push(headers[i].trim().to_string()),
            _ => {}
        }
    }
    if !ignored.is_empty() {
        let shown: Vec<&str> = ignored.iter().take(10).map(String::as_str).collect();
        notes.push(format!(
            "columns ignored because they are not field names (map them in [tenants.import.columns]): {}{}",
            shown.join(", "),
            if ignored.len() > 10 { ", …" } else { "" }
        ));
    }
    Ok(cols)
}

/// The profile's `columns` map: each mapped field whose header the file has.
fn columns_from_profile(
    profile: &ImportProfile,
    headers: &[String],
    normed: &[String],
) -> Result<Vec<Column>, String> {
    let find = |want: &str| normed.iter().position(|h| h == &norm_header(want));
    let mut cols = Vec::new();
    for (field, header) in &profile.columns {
        let Some(spec) = fields::spec(field) else {
            return Err(format!("the profile maps the unknown field {field:?}"));
        };
        if let Some(i) = find(header) {
            if normed.iter().filter(|h| **h == normed[i]).count() > 1 {
                return Err(twice(&headers[i], normed, &normed[i]));
            }
            cols.push(Column {
                field: field.clone(),
                spec,
                index: i,
                header: headers[i].trim().to_string(),
                required: false,
                stored_name: Vec::new(),
            });
        }
    }
    Ok(cols)
}

/// Names, in a note, the columns of the profile's `columns` map that the file does not have
/// (a renamed `deactivate` column would otherwise leave leavers active without a word);
/// returns how many there are.
fn absent_columns(profile: &ImportProfile, cols: &[Column], notes: &mut Vec<String>) -> usize {
    let absent: Vec<String> = (profile.columns.iter())
        .filter(|(field, _)| !cols.iter().any(|c| &c.field == *field))
        .map(|(field, header)| format!("{:?} (for {field})", super::bounds::cut(header, 100)))
        .collect();
    if !absent.is_empty() {
        let shown: Vec<&str> = absent.iter().take(10).map(String::as_str).collect();
        notes.push(format!(
            "the file has no column {}{}, mapped in [tenants.import.columns]: those fields were read for nobody and keep their stored values",
            shown.join(", no column "),
            if absent.len() > 10 { ", …" } else { "" }
        ));
    }
    absent.len()
}

/// The error for a header row that lacks the required columns `missing`. The row's cells are
/// shown only when it looks like a header row ([`looks_like_header`]): a file without a header
/// row has a user's row there, perhaps with a plaintext password, and this sentence goes to the
/// history, the API, the console, the report mail and webhooks (review s30, F4).
fn missing_columns(missing: &[String], headers: &[String], profile: &ImportProfile) -> String {
    let missing = missing.join(" and no column ");
    if !looks_like_header(headers.iter().map(String::as_str), profile) {
        return format!(
            "the file has no column {missing} — its first row does not look like a header row (none of its {} cells is a field name or a header mapped in [tenants.import.columns]), so it is not shown here. The file must start with the header row: check it, the column names and the delimiter",
            headers.len()
        );
    }
    let found: Vec<&str> = headers.iter().take(12).map(|h| h.trim()).collect();
    let more = if headers.len() > 12 { ", …" } else { "" };
    format!(
        "the file has no column {missing} — its header row is: {}{more}. Check the column names and the delimiter",
        found.join(" | ")
    )
}

/// Whether a first row is a header row as far as Roster can tell: at least one cell, compared
/// as [`norm_header`] compares (NUL characters ignored, for UTF-16 read as single bytes), is a
/// field name or a header the profile's `columns` maps. A row of data (a file without its
/// header row) is not, and its cells are not echoed or archived (review s30, F4).
pub(crate) fn looks_like_header<'a>(
    cells: impl IntoIterator<Item = &'a str>,
    profile: &ImportProfile,
) -> bool {
    let mapped: Vec<String> = profile.columns.values().map(|h| norm_header(h)).collect();
    cells.into_iter().any(|c| {
        let h = norm_header(&c.replace('\0', ""));
        let h = h.trim_start_matches(['\u{ef}', '\u{bb}', '\u{bf}', '\u{ff}', '\u{fe}']);
        !h.is_empty() && (fields::spec(h).is_some() || mapped.iter().any(|m| m == h))
    })
}

/// Whether a header names a password column although the profile does not map it, by a small
/// rule (review s30, F5): the header lower-cased, with everything but letters and digits
/// removed, contains `password`, `passwort`, `passwd`, `pwd`, `kennwort`, `motdepasse`,
/// `wachtwoord` or `contrasena`/`contraseña`, or is `pw` or `pass`. Such a column is blanked in
/// the failure report and the archived copy like a mapped password column.
pub(crate) fn looks_like_password(header: &str) -> bool {
    let h: String = (header.chars())
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    const PARTS: [&str; 9] = [
        "password",
        "passwort",
        "passwd",
        "pwd",
        "kennwort",
        "motdepasse",
        "wachtwoord",
        "contrasena",
        "contraseña",
    ];
    PARTS.iter().any(|p| h.contains(p)) || h == "pw" || h == "pass"
}

/// Maps the header row of a file with delimiter `delim` to fields. An empty `columns` map takes
/// each header as a field name.
pub fn map_columns(headers: &[String], tenant: &Tenant, delim: u8) -> Result<Mapping, String> {
    let profile = &tenant.import;
    let normed: Vec<String> = headers.iter().map(|h| norm_header(h)).collect();
    let mut notes = Vec::new();
    let mut cols = if profile.columns.is_empty() {
        columns_by_field_name(headers, &normed, &mut notes)?
    } else {
        columns_from_profile(profile, headers, &normed)?
    };
    cols.sort_by_key(|c| c.index);
    let key_field = profile.match_by.field();
    for c in &mut cols {
        c.required = [key_field, "first_name", "last_name"].contains(&c.field.as_str());
        crate::model::packed::put_name(&mut c.stored_name, &c.field);
    }
    let mut missing = Vec::new();
    for required in [key_field, "first_name", "last_name"] {
        if !cols.iter().any(|c| c.field == required) {
            let header = profile
                .columns
                .get(required)
                .cloned()
                .unwrap_or_else(|| required.to_string());
            missing.push(format!("{header:?} (for {required})"));
        }
    }
    if !missing.is_empty() {
        // Excel writes a first line `sep=;` when asked to name the delimiter (review s18
        // clients F7): say so, rather than show it as the header.
        if headers
            .first()
            .is_some_and(|h| h.trim().to_ascii_lowercase().starts_with("sep="))
        {
            return Err("the file's first line is Excel's delimiter hint (sep=…), not the header row: remove that line (Roster finds the delimiter itself) and upload the file again".to_string());
        }
        return Err(missing_columns(&missing, headers, profile));
    }
    let absent = absent_columns(profile, &cols, &mut notes);
    let pos = |f: &str| cols.iter().position(|c| c.field == f);
    Ok(Mapping {
        cols: cols.clone(),
        key: pos(key_field).unwrap_or(0),
        password: pos("password"),
        email: pos("email"),
        width: headers.len(),
        delim,
        notes,
        absent,
        lookups: fields::Lookups::new(profile, &tenant.reference),
        by_name: {
            let mut v: Vec<(usize, &str)> = cols
                .iter()
                .enumerate()
                .map(|(i, c)| (i, c.field.as_str()))
                .collect();
            v.sort_by(|a, b| a.1.cmp(b.1));
            v.into_iter()
                .map(|(i, name)| {
                    let mut enc = Vec::new();
                    crate::model::packed::put_name(&mut enc, name);
                    (i, enc)
                })
                .collect()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MatchBy, OnMissing};

    #[test]
    fn a_first_row_of_data_is_not_echoed_in_the_error() {
        let t = Tenant::for_import("t", MatchBy::Email, OnMissing::Keep, &[]);
        let row: Vec<String> = ["ann@x.example", "Ann", "Lee", "Sup3rSecret!"]
            .map(String::from)
            .to_vec();
        let e = map_columns(&row, &t, b',').unwrap_err();
        assert!(!e.contains("Sup3rSecret!") && !e.contains("ann@x"), "{e}");
        assert!(e.contains("does not look like a header row"), "{e}");
        // A header row that only lacks a column is still shown.
        let header: Vec<String> = ["email", "first_name", "Nachname"]
            .map(String::from)
            .to_vec();
        let e = map_columns(&header, &t, b',').unwrap_err();
        assert!(e.contains("email | first_name | Nachname"), "{e}");
    }

    #[test]
    fn password_like_headers() {
        for h in [
            "Password",
            "Passwort",
            "Initial password",
            "pwd",
            "Kennwort",
            "PW",
            "user_passwd",
        ] {
            assert!(looks_like_password(h), "{h}");
        }
        for h in ["email", "Passport number", "first_name", "department"] {
            assert!(!looks_like_password(h), "{h}");
        }
    }
}
