//! Every fixture in ../shared/fixtures gives exactly the outcome its README describes.
//!
//! Runs on sled, or on PostgreSQL with `ROSTER_TEST_STORE=postgres` (tests/support/store.rs).

#[path = "support/store.rs"]
mod test_store;

use roster::config::{Activate, ImportProfile, MatchBy, NameCase, Reference, Tenant};
use roster::import::{run_bytes, ImportStatus, RunOptions};
use roster::model::UserStatus;
use roster::store::Store;
use std::collections::BTreeMap;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).expect("fixture readable")
}

fn tenant(profile: ImportProfile, reference: Reference) -> Tenant {
    let mut t = Tenant::for_import("acme", profile.match_by, profile.on_missing, &[]);
    t.import = profile;
    t.reference = reference;
    t
}

fn cols(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(f, h)| (f.to_string(), h.to_string()))
        .collect()
}

fn run(t: &Tenant, file: &str) -> (Store, roster::import::ImportOutcome, test_store::TempStore) {
    let (store, dir) = test_store::temp_store();
    let out = run_bytes(&store, t, file, &fixture(file), &RunOptions::default()).expect("run");
    (store, out, dir)
}

#[test]
fn smartarena() {
    let t = tenant(
        ImportProfile {
            match_by: MatchBy::MappingCode,
            activate: Activate::WithPassword,
            columns: cols(&[
                ("mapping_code", "Šifra"),
                ("first_name", "Ime"),
                ("last_name", "Prezime"),
                ("email", "E-mail"),
                ("date_of_birth", "Datum rođenja"),
                ("sex", "Spol"),
                ("language", "Jezik"),
                ("password", "Lozinka"),
                ("org_unit", "Org. jedinica"),
                ("location", "Lokacija"),
                ("workplace", "Radno mjesto"),
            ]),
            ..Default::default()
        },
        Reference {
            org_units: vec!["HQ".into(), "ZG-01".into()],
            locations: vec!["ZAGREB".into()],
            workplaces: vec!["DESK-1".into()],
        },
    );
    let (store, out, _d) = run(&t, "smartarena_users_2026_02_12.csv");
    let r = &out.record;
    assert_eq!(r.status, ImportStatus::Partial, "{:?}", r.messages);
    assert_eq!(
        (r.counts.rows, r.counts.inserted, r.counts.skipped),
        (6, 4, 2)
    );
    assert_eq!(r.encoding, "utf-8-bom");
    assert_eq!(r.delimiter, ";");
    let ana = store.user("acme", "00017").unwrap().expect("ana");
    assert_eq!(ana.status, UserStatus::Active);
    assert!(ana.has_password);
    assert_eq!(ana.fields["date_of_birth"], "1985-04-03");
    assert_eq!(ana.fields["sex"], "F");
    assert_eq!(ana.fields["language"], "hr");
    assert_eq!(ana.fields["org_unit"], "HQ");
    assert_eq!(ana.fields["location"], "ZAGREB");
    assert_eq!(ana.fields["workplace"], "DESK-1");
    let ivan = store.user("acme", "00018").unwrap().expect("ivan");
    assert_eq!(ivan.email.as_deref(), Some("ivan.kovacic@acme.example"));
    assert_eq!(ivan.fields["date_of_birth"], "1990-12-01");
    assert_eq!(ivan.fields["sex"], "M");
    assert_eq!(ivan.status, UserStatus::Inactive);
    assert!(!ivan.fields.contains_key("workplace"));
    let marija = store.user("acme", "00019").unwrap().expect("marija");
    assert!(!marija.fields.contains_key("org_unit"));
    assert!(
        r.messages.iter().any(|m| m.contains("NOPE")),
        "{:?}",
        r.messages
    );
    assert!(store.user("acme", "00020").unwrap().is_none());
    assert!(store.user("acme", "00021").unwrap().is_none());
    let josip = store.user("acme", "00022").unwrap().expect("josip");
    assert_eq!(josip.last_name.as_deref(), Some("Novak"));
    assert_eq!(josip.fields["date_of_birth"], "1975-03-07");
    assert_eq!(josip.status, UserStatus::Active);
    assert_eq!(josip.fields["org_unit"], "ZG-01");
    // The report names the problems and never holds a password.
    let report = String::from_utf8(out.report_csv.expect("report")).unwrap();
    assert!(report.starts_with('\u{feff}'));
    assert!(
        report.contains("E-mail \"\"luka.maric@\"\" is not a valid email address"),
        "{report}"
    );
    assert!(r.messages.iter().any(|m| m.starts_with("row 5: ")
        && m.contains("E-mail \"luka.maric@\" is not a valid email address")));
    assert!(report.contains("12.13.1980"));
    assert!(report.contains("Prezime is empty"));
    assert!(!report.contains("Tajna123!") && !report.contains("Lozinka9"));
    let archive = String::from_utf8(out.archive_copy.expect("archive")).unwrap();
    assert!(!archive.contains("Tajna123!") && !archive.contains("Lozinka9"));
    assert!(archive.contains("00017;Ana;Horvat"));
    // Nothing in the store holds the plaintext either.
    let json = serde_json::to_string(&store.users("acme", None).unwrap()).unwrap();
    assert!(!json.contains("Tajna123!") && !json.contains("argon2"));
}

#[test]
fn smartfense() {
    let t = tenant(
        ImportProfile {
            match_by: MatchBy::Email,
            name_case: NameCase::Capitalize,
            languages: vec!["en-us".into(), "es-ar".into()],
            columns: cols(&[
                ("username", "Username"),
                ("first_name", "First Name"),
                ("last_name", "Last Name"),
                ("email", "Email"),
                ("groups", "Groups"),
                ("active", "Status"),
                ("role", "Role"),
                ("language", "Language"),
                ("mapping_code", "Employee ID"),
                ("phone", "Phone"),
                ("custom.upn", "UPN"),
                ("custom.functional_areas", "Functional Areas"),
            ]),
            ..Default::default()
        },
        Reference::default(),
    );
    let (store, out, _d) = run(&t, "smartfense_users.csv");
    let r = &out.record;
    assert_eq!(r.status, ImportStatus::Success, "{:?}", r.messages);
    assert_eq!(
        (r.counts.rows, r.counts.inserted, r.counts.skipped),
        (4, 4, 0)
    );
    assert_eq!(r.delimiter, ",");
    let john = store
        .user("acme", "john.doe@example.com")
        .unwrap()
        .expect("john");
    assert_eq!(john.first_name.as_deref(), Some("John"));
    assert_eq!(john.last_name.as_deref(), Some("Doe"));
    assert_eq!(john.fields["groups"], serde_json::json!(["Sales", "EMEA"]));
    assert_eq!(john.status, UserStatus::Active);
    assert_eq!(john.attributes["upn"], "John.Doe@corp.example");
    let mary = store
        .user("acme", "mary.smith@example.com")
        .unwrap()
        .expect("mary");
    assert_eq!(mary.status, UserStatus::Active);
    assert_eq!(mary.fields["language"], "es-ar");
    let paul = store
        .user("acme", "paul.jones@example.com")
        .unwrap()
        .expect("paul");
    assert_eq!(paul.status, UserStatus::Inactive);
    let zoe = store
        .user("acme", "zoe.zed@example.com")
        .unwrap()
        .expect("zoe");
    assert_eq!(zoe.username, None);
    assert_eq!(
        zoe.fields["groups"],
        serde_json::json!(["IT, Security", "Ops"])
    );
    assert_eq!(zoe.status, UserStatus::Active);
    assert!(out.report_csv.is_none() && out.archive_copy.is_none());
}

#[test]
fn opscom() {
    let t = tenant(
        ImportProfile {
            match_by: MatchBy::MappingCode,
            columns: cols(&[
                ("mapping_code", "unique_id"),
                ("first_name", "first_name"),
                ("last_name", "last_name"),
                ("username", "user_name"),
                ("email", "email"),
                ("phone", "phone_cell"),
                ("active", "active"),
                ("custom.login_source", "login_source"),
            ]),
            ..Default::default()
        },
        Reference::default(),
    );
    let (store, out, _d) = run(&t, "opscom_users.csv");
    let r = &out.record;
    assert_eq!(r.status, ImportStatus::Success, "{:?}", r.messages);
    assert_eq!((r.counts.rows, r.counts.inserted), (3, 3));
    let st = |k: &str| store.user("acme", k).unwrap().expect("user").status;
    assert_eq!(st("1001"), UserStatus::Active);
    assert_eq!(st("1002"), UserStatus::Inactive);
    assert_eq!(st("1003"), UserStatus::Active);
    let sam = store.user("acme", "1001").unwrap().unwrap();
    assert_eq!(sam.attributes["login_source"], "local");
    assert!(!sam.fields.contains_key("street"));
}

fn sync_profile(columns: BTreeMap<String, String>) -> ImportProfile {
    ImportProfile {
        match_by: MatchBy::Email,
        languages: vec!["en-gb".into(), "en-us".into(), "fr".into()],
        columns,
        ..Default::default()
    }
}

fn check_sync(store: &Store) {
    let st = |k: &str| store.user("acme", k).unwrap().expect("user").status;
    assert_eq!(st("emma.white@learn.example"), UserStatus::Inactive);
    assert_eq!(st("noah.green@learn.example"), UserStatus::Active);
    assert_eq!(st("olivia.brown@learn.example"), UserStatus::Active);
}

#[test]
fn sync_users_mapped() {
    let t = tenant(
        sync_profile(cols(&[
            ("first_name", "first_name"),
            ("last_name", "last_name"),
            ("email", "email"),
            ("job_title", "job_title"),
            ("manager_email", "manager_email"),
            ("teams", "team"),
            ("custom.secondary_teams", "secondary_teams"),
            ("role", "role"),
            ("language", "language"),
            ("start_date", "start_date"),
            ("deactivate", "deactivate"),
        ])),
        Reference::default(),
    );
    let (store, out, _d) = run(&t, "sync_users.csv");
    let r = &out.record;
    assert_eq!(r.status, ImportStatus::Success, "{:?}", r.messages);
    assert_eq!((r.counts.rows, r.counts.inserted), (3, 3));
    check_sync(&store);
    let noah = store
        .user("acme", "noah.green@learn.example")
        .unwrap()
        .unwrap();
    assert_eq!(noah.fields["manager_email"], "olivia.brown@learn.example");
    assert_eq!(noah.fields["teams"], serde_json::json!(["Engineering"]));
    let olivia = store
        .user("acme", "olivia.brown@learn.example")
        .unwrap()
        .unwrap();
    assert_eq!(olivia.attributes["secondary_teams"], "Sales;Board");
}

#[test]
fn sync_users_headers_as_field_names() {
    let t = tenant(sync_profile(BTreeMap::new()), Reference::default());
    let (store, out, _d) = run(&t, "sync_users.csv");
    let r = &out.record;
    assert_eq!(r.status, ImportStatus::Success, "{:?}", r.messages);
    assert_eq!((r.counts.rows, r.counts.inserted), (3, 3));
    check_sync(&store);
    assert!(
        r.messages.iter().any(|m| m.contains("team")),
        "{:?}",
        r.messages
    );
}

#[test]
fn windows_1252() {
    let t = tenant(
        ImportProfile {
            match_by: MatchBy::MappingCode,
            columns: cols(&[
                ("mapping_code", "Personalnummer"),
                ("first_name", "Vorname"),
                ("last_name", "Nachname"),
                ("email", "E-Mail"),
                ("date_of_birth", "Geburtsdatum"),
            ]),
            ..Default::default()
        },
        Reference::default(),
    );
    let (store, out, _d) = run(&t, "users_windows1252.csv");
    let r = &out.record;
    assert_eq!(r.status, ImportStatus::Success, "{:?}", r.messages);
    assert_eq!(r.counts.inserted, 3);
    assert_eq!(r.encoding, "windows-1252");
    assert_eq!(r.delimiter, ";");
    let name = |k: &str| {
        let u = store.user("acme", k).unwrap().unwrap();
        format!("{} {}", u.first_name.unwrap(), u.last_name.unwrap())
    };
    assert_eq!(name("4711"), "Jürgen Müller");
    assert_eq!(name("4712"), "Chloé Lefèvre");
    assert_eq!(name("4713"), "Øystein Sørensen");
}

#[test]
fn userdata() {
    let t = tenant(
        ImportProfile {
            file: "userdata_*.csv".into(),
            match_by: MatchBy::MappingCode,
            columns: cols(&[
                ("mapping_code", "userId"),
                ("first_name", "name"),
                ("last_name", "lastName"),
                ("email", "email"),
                ("custom.city", "city"),
            ]),
            ..Default::default()
        },
        Reference::default(),
    );
    let (store, out, _d) = run(&t, "userdata_2026-11-21.csv");
    let r = &out.record;
    assert_eq!(r.status, ImportStatus::Partial, "{:?}", r.messages);
    assert_eq!(
        (r.counts.rows, r.counts.inserted, r.counts.skipped),
        (4, 1, 3)
    );
    assert!(store.user("acme", "u-1").unwrap().is_some());
    assert!(store.user("acme", "u-2").unwrap().is_none());
    let report = String::from_utf8(out.report_csv.expect("report")).unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 4, "{report}");
    assert!(lines[0].starts_with("\u{feff}row,userId,name,lastName,email,city,reason"));
    assert!(report.contains("'=HYPERLINK"), "{report}");
    assert!(report.contains("not-an-email"));
    assert!(report.contains("more than one row"));
}
