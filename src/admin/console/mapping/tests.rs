//! Tests of the column mapping helper: suggestions, hidden password columns, the TOML.

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
        blank_passwords(&mut found, &s, &[]);
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
    blank_passwords(&mut found, &s, &[]);
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

/// Review s29 console F1: the tenant maps `password = "Startcode"`. A `Password` header before
/// it took the field, `Startcode` was offered as `custom.startcode` and its cells were shown;
/// with a zero-width space, soft hyphen or word joiner in the header (which a run trims) the
/// tenant's mapping did not match at all.
#[test]
fn the_tenants_own_password_column_is_hidden() {
    let t = Tenant::for_import(
        "acme",
        MatchBy::Email,
        OnMissing::Keep,
        &[
            ("email", "E-Mail"),
            ("first_name", "Vorname"),
            ("last_name", "Nachname"),
            ("password", "Startcode"),
        ],
    );
    for (head, row) in [
        (
            "E-Mail,Vorname,Nachname,Password,Startcode",
            "a@x.example,A,B,,PLAIN-1",
        ),
        (
            "E-Mail,Vorname,Nachname,Startcode\u{200B}",
            "a@x.example,A,B,PLAIN-1",
        ),
        (
            "E-Mail,Vorname,Nachname,Password,Startcode\u{200B}",
            "a@x.example,A,B,,PLAIN-1",
        ),
        (
            "E-Mail,Vorname,Nachname,Password,Startcode\u{00AD}",
            "a@x.example,A,B,,PLAIN-1",
        ),
        (
            "E-Mail,Vorname,Nachname,Password,\u{2060}Startcode",
            "a@x.example,A,B,,PLAIN-1",
        ),
        (
            "E-Mail,Vorname,Nachname,Startcode,Startcode",
            "a@x.example,A,B,PLAIN-1,PLAIN-2",
        ),
    ] {
        let bytes = format!("{head}\n{row}\n");
        let found = examine("s.csv".into(), bytes.as_bytes(), Some(t.clone()))
            .unwrap_or_else(|e| panic!("{head}: {e}"));
        let cells: Vec<&String> = found.sample.rows.iter().flatten().collect();
        assert!(
            !cells.iter().any(|c| c.contains("PLAIN")),
            "{head}: {cells:?}"
        );
        assert!(
            !found.toml.contains("custom.startcode"),
            "{head}: {}",
            found.toml
        );
        assert_eq!(found.sample.rows[0][0], "a@x.example", "{head}");
    }
    // The tenant's column takes `password`; the `Password` header is left out, not custom.
    let s = suggest(
        &headers(&["E-Mail", "Vorname", "Nachname", "Password", "Startcode"]),
        Some(&t),
    );
    assert_eq!(s[4].field.as_deref(), Some("password"));
    assert_eq!(s[4].why, "the tenant's columns");
    assert_eq!(
        (s[3].field.as_deref(), s[3].custom.as_deref()),
        (None, None)
    );
}

/// Review s29 console F2: the sample cuts rows to SAMPLE_COLUMNS, so a 250-column row with an
/// extra comma before the password looked as wide as the header after the cut.
#[test]
fn a_wide_sample_row_off_the_header_shows_no_cell() {
    let mut head: Vec<String> = (0..250).map(|i| format!("c{i}")).collect();
    head[0] = "E-Mail".into();
    head[1] = "First".into();
    head[2] = "Last".into();
    head[10] = "Password".into();
    let mut good: Vec<String> = (0..250).map(|i| format!("v{i}")).collect();
    good[0] = "u@x.example".into();
    good[10] = "PLAIN-1".into();
    let mut shifted = good.clone();
    shifted[0] = "w@x.example".into();
    shifted[10] = "PLAIN-2".into();
    shifted.insert(5, "extra".into());
    let bytes = format!(
        "{}\n{}\n{}\n",
        head.join(","),
        good.join(","),
        shifted.join(",")
    );
    let base = Tenant::for_import("sample", MatchBy::Email, OnMissing::Keep, &[]);
    let mut found = sample(bytes.as_bytes(), &base, SAMPLE_ROWS).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((found.headers.len(), found.more_columns), (200, 50));
    let s = suggest(&found.headers, None);
    blank_passwords(&mut found, &s, &[]);
    let cells: Vec<&String> = found.rows.iter().flatten().collect();
    assert!(!cells.iter().any(|c| c.contains("PLAIN")), "{cells:?}");
    assert_eq!(found.rows[0][0], "u@x.example");
    assert_eq!(found.rows[1][0], "", "the shifted row is blanked whole");
}
