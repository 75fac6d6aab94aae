//! The column mapping helper (operators): upload a sample file, see how the import reads it,
//! and get the `[tenants.import.columns]` TOML to paste.
//!
//! `GET /mapping?tenant=ID` shows the form (a file input and an optional tenant id);
//! `POST /mapping` takes it as `multipart/form-data` (CSRF checked before the file part is
//! read, the file bounded by `server.max_upload_bytes`, one upload at a time with the
//! previews' permit). The file is read by `import::sample` exactly as a run reads it (with the
//! tenant's `encoding` and `delimiter` settings, else `auto`): the page shows the detected
//! encoding and delimiter, the headers and the first [`SAMPLE_ROWS`] rows. Each header gets a
//! suggested field ([`suggest`]): the tenant's own `columns` first, then a header that is a
//! field name (the import's own rule for an empty `columns` map: trimmed, any case), then a
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
//! it in plaintext. The sample's cells of every such column are blanked before the page is
//! made, as the reports and the archive blank them.

use super::upload::read_upload;
use super::{page, Chrome, PageError, Viewer};
use crate::admin::AppState;
use crate::config::{MatchBy, OnMissing, Tenant};
use crate::import::sample::{check_header, sample, Sample};
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

/// The suggested field of each header (each field given to one header at most, the first).
pub(super) fn suggest(headers: &[String], tenant: Option<&Tenant>) -> Vec<Suggestion> {
    let norm = |h: &str| h.trim().to_lowercase();
    let mut taken: Vec<String> = Vec::new();
    let mut out = Vec::with_capacity(headers.len());
    for h in headers {
        let from_profile = tenant.and_then(|t| {
            t.import
                .columns
                .iter()
                .find(|(_, header)| norm(header) == norm(h))
                .map(|(field, _)| (field.clone(), "the tenant's columns"))
        });
        let by_name = || is_known_field(&norm(h)).then(|| (norm(h), "field name"));
        let similar = || {
            let c = compact(h);
            let field = FIELD_NAMES
                .iter()
                .find(|f| compact(f) == c)
                .copied()
                .or_else(|| ALIASES.iter().find(|(_, a)| *a == c).map(|(f, _)| *f))
                .or_else(|| is_password_name(h).then_some("password"))?;
            Some((field.to_string(), "similar name"))
        };
        let found = from_profile
            .or_else(by_name)
            .or_else(similar)
            .filter(|(f, _)| !taken.contains(f));
        match found {
            Some((field, why)) => {
                taken.push(field.clone());
                out.push(Suggestion {
                    header: h.clone(),
                    field: Some(field),
                    why,
                    custom: None,
                });
            }
            None => out.push(Suggestion {
                header: h.clone(),
                field: None,
                why: "",
                // A password kept as a custom field would be stored and shown in plaintext.
                custom: (!looks_like_password(h)).then(|| custom_for(h)).flatten(),
            }),
        }
    }
    out
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
/// tenant) as `password`, and every header that looks like one.
fn blank_passwords(sample: &mut Sample, suggestions: &[Suggestion]) {
    let hidden: Vec<usize> = suggestions
        .iter()
        .enumerate()
        .filter(|(_, s)| s.field.as_deref() == Some("password") || looks_like_password(&s.header))
        .map(|(i, _)| i)
        .collect();
    if hidden.is_empty() {
        return;
    }
    let width = sample.headers.len();
    for row in &mut sample.rows {
        // A row that does not line up with the header may hold the password in another
        // column: every cell of it is blanked, as the report and the archive do.
        if row.len() != width {
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
fn examine(file: String, bytes: &[u8], tenant: Option<Tenant>) -> Result<Found, String> {
    let has_tenant = tenant.is_some();
    let base = tenant
        .unwrap_or_else(|| Tenant::for_import("sample", MatchBy::Email, OnMissing::Keep, &[]));
    let mut sample = sample(bytes, &base, SAMPLE_ROWS)?;
    let suggestions = suggest(&sample.headers, has_tenant.then_some(&base));
    blank_passwords(&mut sample, &suggestions);
    let toml = columns_toml(&suggestions);
    let mut proposed = base.clone();
    proposed.import.columns = suggestions
        .iter()
        .filter_map(|s| Some((s.field.clone()?, s.header.clone())))
        .collect::<BTreeMap<_, _>>();
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
mod tests {
    use super::*;

    fn headers(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn suggests_fields_by_name_alias_and_profile() {
        let h = headers(&[
            "E-Mail",
            "First Name",
            "Surname",
            "Cost Center",
            "email",
            "custom.x",
            "Personal-Nr",
        ]);
        let t = Tenant::for_import(
            "t",
            MatchBy::Email,
            OnMissing::Keep,
            &[("mapping_code", "personal-nr")],
        );
        let s = suggest(&h, Some(&t));
        let fields: Vec<Option<&str>> = s.iter().map(|s| s.field.as_deref()).collect();
        assert_eq!(
            fields,
            vec![
                Some("email"),
                Some("first_name"),
                Some("last_name"),
                None,
                None,
                Some("custom.x"),
                Some("mapping_code")
            ]
        );
        assert_eq!(s[3].custom.as_deref(), Some("custom.cost_center"));
        assert_eq!(s[6].why, "the tenant's columns");
    }

    /// Review s16 http, F5: password headers of other languages are the field `password`; a
    /// second or "old" password column is never offered as a custom field.
    #[test]
    fn passwords_are_never_custom_fields() {
        for h in [
            "Passwort",
            "Kennwort",
            "Mot de passe",
            "Contraseña",
            "Wachtwoord",
            "PWD",
        ] {
            let s = suggest(&headers(&["E-Mail", h]), None);
            assert_eq!(s[1].field.as_deref(), Some("password"), "{h}");
        }
        let s = suggest(&headers(&["Password", "Old Password", "Passwort"]), None);
        assert_eq!(s[0].field.as_deref(), Some("password"));
        for x in &s[1..] {
            assert_eq!(
                (x.field.as_deref(), x.custom.as_deref()),
                (None, None),
                "{}",
                x.header
            );
        }
        assert!(
            !columns_toml(&s).contains("custom."),
            "{}",
            columns_toml(&s)
        );
        let s = suggest(&headers(&["Passport number"]), None);
        assert_eq!(s[0].custom.as_deref(), Some("custom.passport_number"));
    }

    /// Audit s22 console M1: password and secret headers the list did not know showed their
    /// cells in "First rows" and were offered as custom fields.
    #[test]
    fn secret_headers_of_other_words_are_hidden() {
        for h in [
            "Пароль",
            "Лозинка",
            "Passphrase",
            "Passcode",
            "Initial PW",
            "UserPwd",
            "PIN",
            "Pin 2",
            "Secret",
            "Şifre",
            "密码",
        ] {
            let s = suggest(&headers(&["E-Mail", h]), None);
            assert_eq!(s[1].custom, None, "{h} is offered as a custom field");
            let bytes = format!("E-Mail,{h}\nu@x.example,PLAIN-1\n");
            let base = Tenant::for_import("sample", MatchBy::Email, OnMissing::Keep, &[]);
            let mut found =
                sample(bytes.as_bytes(), &base, SAMPLE_ROWS).unwrap_or_else(|e| panic!("{e}"));
            blank_passwords(&mut found, &s);
            let cells: Vec<&String> = found.rows.iter().flatten().collect();
            assert!(!cells.iter().any(|c| c.contains("PLAIN")), "{h}: {cells:?}");
        }
        let s = suggest(&headers(&["PIN", "Pinterest", "Shipping"]), None);
        assert_eq!(s[0].field, None, "a PIN is not offered as the password");
        assert_eq!(s[1].custom.as_deref(), Some("custom.pinterest"));
        assert_eq!(s[2].custom.as_deref(), Some("custom.shipping"));
    }

    #[test]
    fn a_sample_row_off_the_header_shows_no_cell() {
        let bytes = b"E-Mail,First,Last,Password\nu@x.example,Ana,Smith,PLAIN-1\nv@x.example,Bo,Smith, Jr.,PLAIN-2\n";
        let base = Tenant::for_import("sample", MatchBy::Email, OnMissing::Keep, &[]);
        let mut found = sample(bytes, &base, SAMPLE_ROWS).unwrap_or_else(|e| panic!("{e}"));
        let s = suggest(&found.headers, None);
        blank_passwords(&mut found, &s);
        let cells: Vec<&String> = found.rows.iter().flatten().collect();
        assert!(!cells.iter().any(|c| c.contains("PLAIN")), "{cells:?}");
        assert_eq!(found.rows[0][0], "u@x.example");
    }

    #[test]
    fn the_toml_quotes_what_it_must() {
        let h = headers(&["E-Mail", "Vorname", "Nachname", "Kosten \"Stelle\""]);
        let toml = columns_toml(&suggest(&h, None));
        assert!(
            toml.starts_with("[tenants.import.columns]\nemail = \"E-Mail\"\n"),
            "{toml}"
        );
        let uncommented = toml.replace("# \"custom.", "\"custom.");
        let parsed: toml::Value = toml::from_str(&uncommented).unwrap();
        let columns = &parsed["tenants"]["import"]["columns"];
        assert_eq!(columns["last_name"].as_str(), Some("Nachname"));
        assert_eq!(
            columns["custom.kosten_stelle"].as_str(),
            Some("Kosten \"Stelle\"")
        );
    }
}
