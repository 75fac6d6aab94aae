//! Tests of the config checks that span tenants or sections (`validate.rs`).
use super::super::Config;

const TENANT: &str = "[[tenants]]\nid = \"acme\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0XSsfOIUbEVJFH1EkHwIqJ5NV+nZFzs1OHp9Fk1dcWs\"\n";

fn problems(server: &str, import: &str) -> Vec<String> {
    let text = format!("[server]\n{server}\n{TENANT}[tenants.import]\n{import}\n");
    Config::parse(&text).err().unwrap_or_default()
}

/// Reviewer s28: two tenants pushing to one application took over each other's users of
/// the same key (the externalId is the key alone).
#[test]
fn two_tenants_cannot_push_to_one_application() {
    let hash = TENANT.lines().nth(2).unwrap_or_default();
    let tenant = |id: &str, url: &str| {
        format!("[[tenants]]\nid = \"{id}\"\n{hash}\n[tenants.scim_push]\nurl = \"{url}\"\ntoken = \"t\"\n")
    };
    let text = format!(
        "{}{}",
        tenant("a", "https://app.example/scim/v2"),
        tenant("b", "HTTPS://APP.example/scim/v2/")
    );
    let p = Config::parse(&text).err().unwrap_or_default();
    assert!(
        p.iter()
            .any(|p| p.contains("tenant \"b\": scim_push.url") && p.contains("tenant \"a\"'s too")),
        "{p:?}"
    );
    let apart = format!(
        "{}{}",
        tenant("a", "https://app.example/scim/v2"),
        tenant("b", "https://other.example/scim/v2")
    );
    assert!(Config::parse(&apart).is_ok());
}

/// Review s19 docs F9: a time field was called "not a valid strftime format".
#[test]
fn a_date_format_with_a_time_field_is_refused_for_what_it_is() {
    let timed = problems("", "file = \"u_{date}.csv\"\ndate_format = \"%Y-%m-%d %H\"");
    assert!(
        timed.iter().any(|p| p.contains("has a time field")),
        "{timed:?}"
    );
    let broken = problems("", "file = \"u_{date}.csv\"\ndate_format = \"%Y-%Q\"");
    let said = broken
        .iter()
        .any(|p| p.contains("is not a valid strftime format of a date"));
    assert!(said, "{broken:?}");
    assert!(problems("", "file = \"u_{date}.csv\"\ndate_format = \"%Y%m%d\"").is_empty());
}

/// Review s27: formats that can never match an uploaded name passed.
#[test]
fn a_date_format_must_name_one_day_without_folders() {
    let with = |f: &str| {
        problems(
            "",
            &format!("file = \"u_{{date}}.csv\"\ndate_format = \"{f}\""),
        )
    };
    for f in ["%Y-%m", "%m-%d", "%Y"] {
        let p = with(f);
        assert!(
            p.iter().any(|p| p.contains("does not name one day")),
            "{f}: {p:?}"
        );
    }
    for f in ["%Y/%m/%d", "%D"] {
        let p = with(f);
        assert!(
            p.iter().any(|p| p.contains("folder separator")),
            "{f}: {p:?}"
        );
    }
    for f in ["%Y-%m-%d", "%Y_%m_%d", "%d%m%y", "%d-%b-%Y", "%Y%j"] {
        assert!(with(f).is_empty(), "{f}: {:?}", with(f));
    }
}

/// Review s27: a cron naming a day that never comes was accepted and never fired.
#[test]
fn a_schedule_that_never_fires_is_refused() {
    let never = problems("", "trigger = \"schedule\"\nschedule = \"0 0 30 2 *\"");
    assert!(never.iter().any(|p| p.contains("never fires")), "{never:?}");
    assert!(problems("", "trigger = \"schedule\"\nschedule = \"0 6 * * 1-5\"").is_empty());
}

/// Review s27: only the scheme of smtp_url was checked; the mail worker then failed at
/// every try. The password in the URL is never echoed.
#[test]
fn smtp_url_is_read_as_the_mail_worker_reads_it() {
    let mail = |url: &str| {
        let text =
            format!("[mail]\nsmtp_url = \"{url}\"\nfrom = \"Roster <r@example.com>\"\n{TENANT}");
        Config::parse(&text).err().unwrap_or_default()
    };
    let bad = mail("smtp://user:s3cret@relay.example:notaport");
    assert!(
        bad.iter()
            .any(|p| p.starts_with("[mail] smtp_url cannot be used")),
        "{bad:?}"
    );
    assert!(bad.iter().all(|p| !p.contains("s3cret")), "{bad:?}");
    assert!(mail("smtp://127.0.0.1:2525").is_empty());
    assert!(mail("smtps://user:pw@relay.example").is_empty());
}

/// Review of 2026-11-30, F7: 0 passed and deleted every archived file at each start.
#[test]
fn retention_days_is_at_least_one() {
    let p = problems("", "retention_days = 0");
    assert!(
        p.iter()
            .any(|p| p.contains("\"acme\": import.retention_days 0 must be 1 to")),
        "{p:?}"
    );
    assert!(!problems("", "retention_days = 4294967295").is_empty());
    assert!(problems("", "retention_days = 1").is_empty());
    assert!(problems("", "retention_days = 36500").is_empty());
}

/// Review of 2026-11-30, F9: i64::MAX passed and every SSH connection panicked.
#[test]
fn each_duration_key_has_an_upper_bound() {
    for key in ["idle_timeout_secs", "auth_block_secs", "auth_timeout_secs"] {
        let p = problems(&format!("{key} = 9223372036854775807"), "");
        assert!(
            p.iter().any(|p| p.starts_with(&format!("[server] {key} "))
                && p.contains("at most 2592000 (30 days)")),
            "{key}: {p:?}"
        );
        assert!(
            problems(&format!("{key} = 2592000"), "").is_empty(),
            "{key}"
        );
    }
    assert!(!problems("settle_ms = 9223372036854775807", "").is_empty());
    let text = format!("[cluster]\nlease_secs = 9223372036854775807\n{TENANT}");
    let p = Config::parse(&text).err().unwrap_or_default();
    assert!(
        p.iter().any(|p| p.starts_with("[cluster] lease_secs")),
        "{p:?}"
    );
}
