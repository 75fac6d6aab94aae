//! Any bytes as a tenant's user file: the whole import (encoding, delimiter, mapping, every
//! field's rules, the plan against a directory that already holds users, the failure report)
//! must end in a record, never a panic. Each input is previewed (planned, nothing committed)
//! for four tenants whose profiles differ in what they read and match by.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roster::config::{Config, Tenant};
use roster::import::{preview_bytes, run_bytes, RunOptions};
use roster::store::Store;
use std::sync::OnceLock;

const TENANTS: &str = r#"
[[tenants]]
id = "codes"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$gUIKVoKOUvj3MM4fCV+nuw$2MKB3ozL5xWTQ1A6bdxzFkkijVk6oSehZ5f5RJ1aT2I"
[tenants.import]
match_by = "mapping_code"
activate = "with_password"
on_missing = "deactivate"
date_format = "%d.%m.%Y"
[tenants.import.columns]
mapping_code = "Šifra"
first_name = "Ime"
last_name = "Prezime"
email = "E-mail"
date_of_birth = "Datum rođenja"
sex = "Spol"
language = "Jezik"
password = "Lozinka"
org_unit = "Org. jedinica"
location = "Lokacija"
workplace = "Radno mjesto"
[tenants.reference]
org_units = ["HQ", "ZG-01"]
locations = ["ZAGREB"]
workplaces = ["DESK-1"]

[[tenants]]
id = "emails"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$gUIKVoKOUvj3MM4fCV+nuw$2MKB3ozL5xWTQ1A6bdxzFkkijVk6oSehZ5f5RJ1aT2I"
[tenants.import]
match_by = "email"
name_case = "capitalize"
languages = ["en-us", "es-ar"]
on_missing = "delete"
empty_cells = "clear"
[tenants.import.columns]
username = "Username"
first_name = "First Name"
last_name = "Last Name"
email = "Email"
groups = "Groups"
active = "Status"
role = "Role"
language = "Language"
mapping_code = "Employee ID"
phone = "Phone"
"custom.upn" = "UPN"

[[tenants]]
id = "names"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$gUIKVoKOUvj3MM4fCV+nuw$2MKB3ozL5xWTQ1A6bdxzFkkijVk6oSehZ5f5RJ1aT2I"
[tenants.import]
match_by = "username"
on_missing = "deactivate"
list_separator = "|"
unknown_reference = "create"
delimiter = ";"

[[tenants]]
id = "latin"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$gUIKVoKOUvj3MM4fCV+nuw$2MKB3ozL5xWTQ1A6bdxzFkkijVk6oSehZ5f5RJ1aT2I"
[tenants.import]
match_by = "mapping_code"
encoding = "windows-1252"
unknown_reference = "skip_row"
[tenants.import.columns]
mapping_code = "Personalnummer"
first_name = "Vorname"
last_name = "Nachname"
email = "E-Mail"
date_of_birth = "Geburtsdatum"
start_date = "Eintritt"
teams = "Teams"
deactivate = "Inaktiv"
"#;

/// A directory that already holds users, so inputs plan updates, restores and removals too.
const SEEDS: [(&str, &str); 4] = [
    (
        "codes",
        "\u{feff}Šifra;Ime;Prezime;E-mail;Datum rođenja;Spol;Jezik;Lozinka;Org. jedinica;Lokacija;Radno mjesto\r\n\
         00017;Ana;Horvat;ana.horvat@acme.example;03.04.1985;F;hr;Tajna123!;HQ;ZAGREB;DESK-1\r\n\
         00018;Ivan;Kovač;ivan@acme.example;01.12.1990;M;hr;;ZG-01;ZAGREB;\r\n",
    ),
    (
        "emails",
        "Username,First Name,Last Name,Email,Groups,Status,Role,Language,Employee ID,Phone,UPN\n\
         jdoe,john,DOE,John.Doe@Example.com,\"Sales;EMEA\",Active,Admin,en-us,E-001,+385 1 555 0100,J@corp.example\n\
         msmith,mary,smith,mary@example.com,Ops,activo,User,es-ar,E-002,,\n",
    ),
    (
        "names",
        "username;first_name;last_name;email;groups;org_unit\nann;Ann;Lee;ann@x.example;A|B;HQ\nbo;Bo;Ng;bo@x.example;;\n",
    ),
    (
        "latin",
        "Personalnummer;Vorname;Nachname;E-Mail;Geburtsdatum;Eintritt;Teams;Inaktiv\n\
         4711;Jurgen;Muller;j@firma.example;01.02.1970;2020-01-01;Blau;nein\n",
    ),
];

struct Directory {
    _dir: tempfile::TempDir,
    store: Store,
    tenants: Vec<Tenant>,
}

fn directory() -> &'static Directory {
    static DIRECTORY: OnceLock<Directory> = OnceLock::new();
    DIRECTORY.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let store = Store::open(dir.path()).expect("the sled store opens");
        let config = Config::parse(TENANTS).expect("the fuzz tenants parse");
        for (id, csv) in SEEDS {
            let tenant = config.tenant(id).expect("a seeded tenant");
            run_bytes(
                &store,
                tenant,
                "users.csv",
                csv.as_bytes(),
                &RunOptions::default(),
            )
            .expect("the seed file imports");
        }
        Directory {
            _dir: dir,
            store,
            tenants: config.tenants,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let d = directory();
    for tenant in &d.tenants {
        // An `Err` is the store failing, not the file: the file's own faults end in the record.
        if let Ok(preview) = preview_bytes(&d.store, tenant, "users.csv", data) {
            // Each data row is applied once at most.
            let c = &preview.record.counts;
            assert!(c.inserted + c.updated + c.unchanged <= c.rows, "{c:?}");
        }
    }
});
