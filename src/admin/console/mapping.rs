//! The column mapping helper (operators): upload a sample file, see how the import reads it,
//! and get the `[tenants.import.columns]` TOML to paste.
//!
//! `GET /mapping?tenant=ID` shows the form (a file input and an optional tenant id);
//! `POST /mapping` takes it as `multipart/form-data` (CSRF checked before the file part is
//! read, the file bounded by `server.max_upload_bytes`, one upload at a time with the
//! previews' permit). The file is read by `import::sample` exactly as a run reads it (with the
//! tenant's `encoding` and `delimiter` settings, else `auto`): the page shows the detected
//! encoding and delimiter, the headers and the first [`SAMPLE_ROWS`] rows. Each header gets a
//! suggested field ([`suggest`]): the tenant's own `columns` first (over the whole header row,
//! before any other rule), then a header that is a field name (the import's own rule for an empty `columns` map: trimmed, any case), then a
//! header that matches a field name or a common alias once case, spaces and punctuation are
//! ignored (`E-Mail`, `First Name`, `Surname`, `Employee ID`, ...). Headers left over are
//! listed as ignored, with a `custom.NAME` line to uncomment. The suggested map is checked by
//! the import's own header matching (`import::sample::check_header`): the page says whether a
//! run with it would find the match key and both names. Nothing is stored.
//!
//! Passwords: a header that is a password in one of the languages the aliases know
//! ([`PASSWORD_WORDS`]: `Passwort`, `Kennwort`, `Mot de passe`, `Contraseña`, `Wachtwoord`,
//! ...) is suggested as the field `password`; one that only contains such a word (`Old
//! password`, a second password column) is never offered as a custom field, which would store
//! it in plaintext. Neither is the column a run would read passwords from, with the tenant's
//! columns or the suggested ones, whatever its header says (`Startcode`): the import's own
//! header comparison finds it ([`examine`]). The sample's cells of every such column are
//! blanked before the page is made, as the reports and the archive blank them, and so is every
//! cell of a row whose cell count in the file is not the header's.

use super::upload::read_upload;
use super::{page, Chrome, PageError, Viewer};
use crate::admin::AppState;
use crate::config::{MatchBy, OnMissing, Tenant};
use crate::import::sample::{check_header, norm_header, password_columns, sample, Sample};
use crate::model::fields::{is_known_field, FIELD_NAMES};
use askama::Template;
use axum::extract::{DefaultBodyLimit, Multipart, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Data rows of the sample shown.
pub(super) const SAMPLE_ROWS: usize = 20;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(
        "/mapping",
        get(form).post(run).layer(DefaultBodyLimit::disable()),
    )
}

/// Common header names of each field, compacted (lower case, letters and digits only). A field
/// name's own compact form (`firstname`) matches without being listed.
const ALIASES: &[(&str, &str)] = &[
    ("email", "mail"),
    ("email", "emailaddress"),
    ("email", "workemail"),
    ("email", "businessemail"),
    ("first_name", "givenname"),
    ("first_name", "forename"),
    ("first_name", "vorname"),
    ("first_name", "ime"),
    ("first_name", "nombre"),
    ("last_name", "surname"),
    ("last_name", "familyname"),
    ("last_name", "nachname"),
    ("last_name", "prezime"),
    ("last_name", "apellido"),
    ("mapping_code", "employeeid"),
    ("mapping_code", "employeenumber"),
    ("mapping_code", "employeeno"),
    ("mapping_code", "personnelnumber"),
    ("mapping_code", "personalnummer"),
    ("mapping_code", "staffid"),
    ("mapping_code", "externalid"),
    ("username", "login"),
    ("username", "loginname"),
    ("username", "userid"),
    ("manager_email", "manager"),
    ("manager_email", "supervisoremail"),
    ("manager_email", "linemanager"),
    ("date_of_birth", "birthdate"),
    ("date_of_birth", "dob"),
    ("date_of_birth", "geburtsdatum"),
    ("start_date", "hiredate"),
    ("start_date", "entrydate"),
    ("start_date", "eintrittsdatum"),
    ("sex", "gender"),
    ("sex", "geschlecht"),
    ("sex", "spol"),
    ("language", "lang"),
    ("language", "sprache"),
    ("language", "jezik"),
    ("national_id", "oib"),
    ("national_id", "ssn"),
    ("phone", "mobile"),
    ("phone", "telephone"),
    ("phone", "phonenumber"),
    ("phone", "telefon"),
    ("job_title", "title"),
    ("job_title", "position"),
    ("timezone", "tz"),
    ("org_unit", "department"),
    ("org_unit", "dept"),
    ("org_unit", "abteilung"),
    ("org_unit", "organizationalunit"),
    ("location", "site"),
    ("location", "office"),
    ("location", "standort"),
    ("groups", "group"),
    ("teams", "team"),
    ("active", "enabled"),
    ("active", "isactive"),
    ("deactivate", "disabled"),
];

/// Compact names of a password column (see [`compact`]): English and the languages of
/// [`ALIASES`], and a few neighbours. A header that is one of them is the field `password`; a
/// header that contains one is treated as a password column all the same (never a custom
/// field, cells not shown).
const PASSWORD_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passwort",
    "kennwort",
    "motdepasse",
    "contraseña",
    "contrasena",
    "wachtwoord",
    "lozinka",
    "zaporka",
    "geslo",
    "heslo",
    "hasło",
    "haslo",
    "jelszó",
    "jelszo",
    "senha",
    "parola",
    "salasana",
    "lösenord",
    "losenord",
    "adgangskode",
    "kodeord",
    "passord",
    "parool",
    "slaptažodis",
    "slaptazodis",
    "şifre",
    "sifre",
    "katasandi",
    "katalaluan",
    "mậtkhẩu",
    "passphrase",
    "passcode",
    "пароль",
    "парола",
    "лозинка",
    "κωδικός",
    "סיסמה",
    "كلمةالمرور",
    "كلمةالسر",
    "密码",
    "密碼",
    "パスワード",
    "비밀번호",
];

/// Short names that are a password column only when they are the whole header.
const PASSWORD_SHORT: &[&str] = &["pw", "pwd", "pass"];

/// Whole headers of other secrets: never suggested as the password, but their cells are not
/// shown and they are never offered as custom fields.
const SECRET_SHORT: &[&str] = &["pin", "secret", "otp", "totp"];

/// The header names a password column, exactly (after [`compact`]).
fn is_password_name(header: &str) -> bool {
    let c = compact(header);
    PASSWORD_WORDS.contains(&c.as_str()) || PASSWORD_SHORT.contains(&c.as_str())
}

/// The header names, or contains the name of, a password column; or ends in `pw`/`pwd`
/// (`Initial PW`, `UserPwd`), or is a short name with a number (`PIN1`, `PW 2`).
fn looks_like_password(header: &str) -> bool {
    let c = compact(header);
    let bare = c.trim_end_matches(|ch: char| ch.is_ascii_digit());
    is_password_name(header)
        || PASSWORD_WORDS.iter().any(|w| c.contains(w))
        || PASSWORD_SHORT.contains(&bare)
        || SECRET_SHORT.contains(&bare)
        || bare.ends_with("pw")
        || bare.ends_with("pwd")
}

/// Lower case, letters and digits only: `First Name` → `firstname`.
fn compact(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// A `custom.NAME` for a header: lower case, runs of other characters as one `_`; None when
/// nothing is left.
fn custom_for(header: &str) -> Option<String> {
    let mut name = String::new();
    for c in header.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else if !name.ends_with('_') && !name.is_empty() {
            name.push('_');
        }
    }
    let name = name.trim_end_matches('_').to_string();
    (!name.is_empty()).then(|| format!("custom.{name}"))
}

/// One header and the field suggested for it.
pub(super) struct Suggestion {
    pub header: String,
    /// The field, or None when the header is left out.
    pub field: Option<String>,
    /// Why: "the tenant's columns", "field name", "similar name".
    pub why: &'static str,
    /// For a header left out: the `custom.NAME` it could be kept as.
    pub custom: Option<String>,
}

/// The field the tenant's own `columns` give header `h`, compared as a run compares
/// (`norm_header`: case and unseen characters such as a zero-width space ignored).
fn profile_field(h: &str, tenant: Option<&Tenant>) -> Option<String> {
    let h = norm_header(h);
    let columns = &tenant?.import.columns;
    let (field, _) = columns
        .iter()
        .find(|(_, header)| norm_header(header) == h)?;
    Some(field.clone())
}

/// The field a header's name suggests: a field name (the import's rule for an empty `columns`
/// map), else a field name or alias once case, spaces and punctuation are ignored.
fn named_field(h: &str) -> Option<(String, &'static str)> {
    let normed = norm_header(h);
    if is_known_field(&normed) {
        return Some((normed, "field name"));
    }
    let c = compact(h);
    let field = FIELD_NAMES
        .iter()
        .find(|f| compact(f) == c)
        .copied()
        .or_else(|| ALIASES.iter().find(|(_, a)| *a == c).map(|(f, _)| *f))
        .or_else(|| is_password_name(h).then_some("password"))?;
    Some((field.to_string(), "similar name"))
}

/// The suggested field of each header (each field given to one header at most). The tenant's
/// own `columns` claim their fields first, over the whole row, and only then do names and
/// aliases take what is left, first header first. Decision (review s29): with one pass in
/// file order a `Password` header before the tenant's `password = "Startcode"` took the field,
/// and `Startcode`, the column a run reads passwords from, was offered as a custom field with
/// its cells shown. A header that is the tenant's password column is never offered as one.
pub(super) fn suggest(headers: &[String], tenant: Option<&Tenant>) -> Vec<Suggestion> {
    let mut taken: Vec<String> = Vec::new();
    let mut found: Vec<Option<(String, &'static str)>> = Vec::with_capacity(headers.len());
    for h in headers {
        let field = profile_field(h, tenant).filter(|f| !taken.contains(f));
        if let Some(f) = &field {
            taken.push(f.clone());
        }
        found.push(field.map(|f| (f, "the tenant's columns")));
    }
    for (h, slot) in headers.iter().zip(found.iter_mut()) {
        if slot.is_none() {
            *slot = named_field(h).filter(|(f, _)| !taken.contains(f));
            if let Some((f, _)) = slot {
                taken.push(f.clone());
            }
        }
    }
    let tenant_password = tenant
        .and_then(|t| t.import.columns.get("password"))
        .map(|h| norm_header(h));
    (headers.iter().zip(found))
        .map(|(h, found)| match found {
            Some((field, why)) => Suggestion {
                header: h.clone(),
                field: Some(field),
                why,
                custom: None,
            },
            None => {
                // A password kept as a custom field would be stored and shown in plaintext.
                let secret = looks_like_password(h)
                    || tenant_password.as_deref() == Some(norm_header(h).as_str());
                Suggestion {
                    header: h.clone(),
                    field: None,
                    why: "",
                    custom: (!secret).then(|| custom_for(h)).flatten(),
                }
            }
        })
        .collect()
}

/// A TOML key: bare when it can be, else a quoted string.
fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        toml_string(k)
    }
}

/// A TOML basic string (quotes, backslashes and control characters escaped).
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The `[tenants.import.columns]` block of the suggestions; headers left out as comments.
pub(super) fn columns_toml(suggestions: &[Suggestion]) -> String {
    let mut out = String::from("[tenants.import.columns]\n");
    for s in suggestions {
        if let Some(f) = &s.field {
            out.push_str(&format!("{} = {}\n", toml_key(f), toml_string(&s.header)));
        }
    }
    let left: Vec<&Suggestion> = suggestions
        .iter()
        .filter(|s| s.field.is_none() && s.custom.is_some())
        .collect();
    if !left.is_empty() {
        out.push_str("# Not imported; uncomment a line to keep the column as a custom field:\n");
        for s in left {
            let custom = s.custom.as_deref().unwrap_or_default();
            out.push_str(&format!(
                "# {} = {}\n",
                toml_key(custom),
                toml_string(&s.header)
            ));
        }
    }
    out
}

#[derive(Deserialize, Default)]
struct FormQuery {
    #[serde(default)]
    tenant: String,
}

/// What the helper found in a sample.
struct Found {
    file: String,
    sample: Sample,
    suggestions: Vec<Suggestion>,
    toml: String,
    /// The import's verdict on the suggested columns: mapped fields, or why a run would fail.
    check: Result<Vec<(String, String)>, String>,
    /// The match key the check required.
    key_field: String,
    /// With a tenant: what its current profile makes of the header.
    current: Option<Result<Vec<(String, String)>, String>>,
}

#[derive(Template)]
#[template(path = "mapping.html")]
struct MappingPage {
    chrome: Chrome,
    tenant: String,
    max_bytes: u64,
    found: Option<Found>,
    error: Option<String>,
}

async fn form(
    State(st): State<AppState>,
    viewer: Viewer,
    Query(q): Query<FormQuery>,
) -> Result<Response, PageError> {
    viewer.operator_only()?;
    let config = st.config.current();
    let tenant = q.tenant.trim().to_string();
    let context = config.tenant(&tenant).map(|t| t.id.as_str());
    page(&MappingPage {
        chrome: Chrome::new(&viewer, "Column mapping helper", context),
        tenant,
        max_bytes: config.server.max_upload_bytes,
        found: None,
        error: None,
    })
}

async fn run(
    State(st): State<AppState>,
    viewer: Viewer,
    upload: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, PageError> {
    viewer.operator_only()?;
    let Ok(upload) = upload else {
        // Not a multipart form at all: it cannot carry the CSRF token either.
        viewer.check_csrf("")?;
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "send the mapping form",
        ));
    };
    let config = st.config.current();
    let Some(_file_turn) = st.preview_file_turn().await else {
        return Err(PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            crate::admin::PREVIEW_FILE_BUSY,
        ));
    };
    let file = read_upload(&viewer, upload, config.server.max_upload_bytes).await?;
    let _permit = st
        .previews
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| PageError::internal("cannot read the sample", anyhow::anyhow!("{e}")))?;
    let tenant_id = file.field("tenant").trim().to_string();
    let tenant = match tenant_id.as_str() {
        "" => None,
        id => Some(
            config
                .tenant(id)
                .cloned()
                .ok_or_else(|| PageError::not_found(format!("there is no tenant {id:?}")))?,
        ),
    };
    let file_name = file.file_name.clone();
    let for_blocking = tenant.clone();
    let result = tokio::task::spawn_blocking(move || examine(file_name, &file.bytes, for_blocking))
        .await
        .map_err(|e| PageError::internal("cannot read the sample", anyhow::anyhow!("{e}")))?;
    let (found, error) = match result {
        Ok(f) => (Some(f), None),
        Err(e) => (None, Some(e)),
    };
    let context = tenant.as_ref().map(|t| t.id.as_str());
    page(&MappingPage {
        chrome: Chrome::new(&viewer, "Column mapping helper", context),
        tenant: tenant_id,
        max_bytes: config.server.max_upload_bytes,
        found,
        error,
    })
}

/// Blanks the sample's cells of every password column: the one suggested (or mapped by the
/// tenant) as `password`, every header that looks like one, and the columns `mapped` (those
/// a run would read passwords from). A row whose cell count in the file differs from the
/// header's blanks whole.
fn blank_passwords(sample: &mut Sample, suggestions: &[Suggestion], mapped: &[usize]) {
    let mut hidden: Vec<usize> = suggestions
        .iter()
        .enumerate()
        .filter(|(_, s)| s.field.as_deref() == Some("password") || looks_like_password(&s.header))
        .map(|(i, _)| i)
        .collect();
    hidden.extend_from_slice(mapped);
    if hidden.is_empty() {
        return;
    }
    // The widths in the file, not after the cut to SAMPLE_COLUMNS (review s29).
    let width = sample.headers.len() + sample.more_columns;
    for (r, row) in sample.rows.iter_mut().enumerate() {
        // A row that does not line up with the header may hold the password in another
        // column: every cell of it is blanked, as the report and the archive do.
        if sample.row_widths.get(r) != Some(&width) {
            row.iter_mut().for_each(String::clear);
            continue;
        }
        for &i in &hidden {
            if let Some(cell) = row.get_mut(i) {
                cell.clear();
            }
        }
    }
}

/// Reads the sample and makes the suggestions; the error is the sentence to show.
///
/// Decision (review s29): besides the headers that look like passwords, the columns a run
/// would read passwords from, with the tenant's current columns (`base`) or with the
/// suggested ones (`proposed`), are hidden and never offered as custom fields. They are
/// found by the import's own header comparison (`sample::password_columns`, the column
/// `check_header` maps to `password`), so a header the helper's names do not know
/// (`Startcode`), or one with a zero-width space the import trims, is still hidden.
fn examine(file: String, bytes: &[u8], tenant: Option<Tenant>) -> Result<Found, String> {
    let has_tenant = tenant.is_some();
    let base = tenant
        .unwrap_or_else(|| Tenant::for_import("sample", MatchBy::Email, OnMissing::Keep, &[]));
    let mut sample = sample(bytes, &base, SAMPLE_ROWS)?;
    let mut suggestions = suggest(&sample.headers, has_tenant.then_some(&base));
    let mut proposed = base.clone();
    proposed.import.columns = suggestions
        .iter()
        .filter_map(|s| Some((s.field.clone()?, s.header.clone())))
        .collect::<BTreeMap<_, _>>();
    let mut mapped = password_columns(&sample.headers, &base);
    mapped.extend(password_columns(&sample.headers, &proposed));
    for &i in &mapped {
        if let Some(s) = suggestions.get_mut(i) {
            s.custom = None;
        }
    }
    blank_passwords(&mut sample, &suggestions, &mapped);
    let toml = columns_toml(&suggestions);
    let check = check_header(&sample.headers, &proposed);
    let current = has_tenant.then(|| check_header(&sample.headers, &base));
    Ok(Found {
        file,
        key_field: base.import.match_by.field().to_string(),
        sample,
        suggestions,
        toml,
        check,
        current,
    })
}

#[cfg(test)]
mod tests;
