//! Semantic checks on a parsed [`Config`]: every problem, each naming the tenant and the key.

use super::authorized_keys::parse_authorized_key;
use super::{Config, ImportProfile, Tenant, Trigger};
use crate::model::fields::is_known_field;
use std::collections::HashSet;
use std::str::FromStr;

pub(super) fn problems(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let s = &config.server;
    if s.listen.parse::<std::net::SocketAddr>().is_err() {
        out.push(format!(
            "[server] listen {:?} is not an address like \"127.0.0.1:2222\"",
            s.listen
        ));
    }
    if s.max_upload_bytes == 0 {
        out.push("[server] max_upload_bytes must be greater than 0".into());
    }
    if s.max_handles_per_tenant == 0 {
        out.push("[server] max_handles_per_tenant must be at least 1".into());
    }
    if s.max_sessions_per_tenant == 0 {
        out.push("[server] max_sessions_per_tenant must be at least 1".into());
    }
    // 0 is refused rather than read as "off" (review s19 docs F4): `auth_block_secs = 0` or
    // `max_auth_failures = 0` silently turned password throttling off, a 0 cap meant no cap.
    for (key, value) in [
        ("idle_timeout_secs", s.idle_timeout_secs),
        ("auth_timeout_secs", s.auth_timeout_secs),
        ("auth_block_secs", s.auth_block_secs),
        ("max_auth_failures", s.max_auth_failures as u64),
        ("max_unauthenticated", s.max_unauthenticated as u64),
        (
            "max_unauthenticated_per_address",
            s.max_unauthenticated_per_address as u64,
        ),
    ] {
        if value == 0 {
            out.push(format!("[server] {key} must be at least 1"));
        }
    }
    duration_problems(config, &mut out);
    admin_problems(config, &mut out);
    out.extend(config.store.problems());
    out.extend(config.cluster.problems());
    let bounds_cut = |s: &str| s.chars().take(20).collect::<String>();
    if let Some(mail) = &config.mail {
        let scheme_ok = ["smtp://", "smtps://"]
            .iter()
            .any(|p| mail.smtp_url.starts_with(p));
        if !scheme_ok {
            // Only the scheme is shown: the rest may hold the relay's password.
            let scheme = mail.smtp_url.find("://").map(|i| &mail.smtp_url[..i + 3]);
            let got = scheme.map_or("no scheme".to_string(), |s| format!("{:?}", bounds_cut(s)));
            out.push(format!(
                "[mail] smtp_url must start with smtp:// or smtps:// (it starts with {got})"
            ));
        } else if let Err(why) = crate::mail::Relay::parse(&mail.smtp_url) {
            // Read as the mail worker will read it (review s27: only the scheme was checked),
            // with its refusals of a session that can be stripped of TLS or sends the password
            // in clear text (review s30). The URL itself is not shown: it may hold the password.
            out.push(format!(
                "[mail] smtp_url cannot be used to send mail: {why}"
            ));
        }
        if mail.from.parse::<lettre::message::Mailbox>().is_err() {
            out.push(format!(
                "[mail] from {:?} is not a mail address like \"Roster <roster@example.com>\"",
                mail.from
            ));
        }
    }
    let mut seen = HashSet::new();
    // A SCIM token names its tenant: one token for two tenants would read only the first's
    // directory, silently (a copied tenant block; review of 2026-11-30, console F3).
    let mut tokens = HashSet::new();
    // One application per tenant's SCIM push: its `externalId` is the bare user key, so two
    // tenants pushing to one application would take over each other's users of the same key
    // (reviewer s28).
    let mut push_urls: std::collections::HashMap<String, &str> = Default::default();
    for (i, t) in config.tenants.iter().enumerate() {
        if let Some(push) = &t.scim_push {
            let url = super::scim_push::same_application(&push.url);
            match push_urls.get(&url) {
                Some(first) => out.push(format!(
                    "tenant {:?}: scim_push.url {:?} is tenant {first:?}'s too; two tenants \
                     pushing to one application would share its users (their externalId is \
                     the user key alone)",
                    t.id,
                    super::webhooks::shown_url(&push.url)
                )),
                None => {
                    push_urls.insert(url, t.id.as_str());
                }
            }
        }
        if !seen.insert(t.id.as_str()) {
            out.push(format!(
                "tenant {:?}: id is used by more than one tenant",
                t.id
            ));
        }
        if let Some(tok) = &t.scim_token_sha256 {
            if !tokens.insert(tok.trim().to_ascii_lowercase()) {
                out.push(format!(
                    "tenant {:?}: scim_token_sha256 is another tenant's too; give each tenant \
                     a token of its own",
                    t.id
                ));
            }
        }
        tenant_problems(i, t, &mut out);
    }
    out
}

/// The `[admin]` table: addresses, bounds, and a token long enough.
fn admin_problems(config: &Config, out: &mut Vec<String>) {
    if config.admin.listen.parse::<std::net::SocketAddr>().is_err() {
        out.push(format!(
            "[admin] listen {:?} is not an address like \"127.0.0.1:8022\"",
            config.admin.listen
        ));
    }
    let public = config.admin.public_url.trim();
    if !public.is_empty() && !public.starts_with("http://") && !public.starts_with("https://") {
        out.push(format!(
            "[admin] public_url {public:?} must start with http:// or https://"
        ));
    }
    if !(1..=24 * 60).contains(&config.admin.session_minutes) {
        out.push("[admin] session_minutes must be 1 to 1440".into());
    }
    if !(1..=512).contains(&config.admin.max_connections) {
        out.push(
            "[admin] max_connections must be 1 to 512 (the admin listener shares the 1024 \
             descriptors SFTP leaves to the rest of the server)"
                .into(),
        );
    }
    if config.admin.max_connections_per_address == 0 {
        out.push("[admin] max_connections_per_address must be at least 1".into());
    }
    if !(1..=3600).contains(&config.admin.client_timeout_secs) {
        out.push("[admin] client_timeout_secs must be 1 to 3600".into());
    }
    if !(1..=3600).contains(&config.admin.answer_timeout_secs) {
        out.push("[admin] answer_timeout_secs must be 1 to 3600".into());
    }
    // An empty [admin] token is fine: a random one is generated (config::admin_token). A set
    // one must be long enough that guessing it is hopeless: the API and SCIM answer wrong tokens
    // fast and block nobody (admin/auth.rs says why), so the length is the defence.
    if let Some(t) = super::admin_token::configured(config) {
        let n = t.chars().count();
        if n < MIN_ADMIN_TOKEN_CHARS {
            out.push(format!(
                "[admin] token is {n} characters; it must be at least {MIN_ADMIN_TOKEN_CHARS} \
                 (make one with `openssl rand -hex 32`), or leave it unset and the server \
                 generates one into <data_dir>/admin-token"
            ));
        }
    }
}

/// The shortest `[admin] token` accepted (`openssl rand -hex 32` makes 64 characters).
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

/// The longest wait any duration key may name: 30 days. Timers add these to the clock, and a
/// value near `i64::MAX` ("never") would overflow it in every connection.
pub const MAX_DURATION_SECS: u64 = 30 * 86_400;

/// Each duration key within [`MAX_DURATION_SECS`] (the lower bounds are checked apart).
fn duration_problems(config: &Config, out: &mut Vec<String>) {
    let s = &config.server;
    let days = MAX_DURATION_SECS / 86_400;
    for (key, secs) in [
        ("[server] idle_timeout_secs", s.idle_timeout_secs),
        ("[server] auth_block_secs", s.auth_block_secs),
        ("[server] auth_timeout_secs", s.auth_timeout_secs),
        ("[cluster] lease_secs", config.cluster.lease_secs),
    ] {
        if secs > MAX_DURATION_SECS {
            out.push(format!(
                "{key} {secs} is too long: at most {MAX_DURATION_SECS} ({days} days)"
            ));
        }
    }
    if s.settle_ms > MAX_DURATION_SECS * 1000 {
        out.push(format!(
            "[server] settle_ms {} is too long: at most {} ({days} days)",
            s.settle_ms,
            MAX_DURATION_SECS * 1000
        ));
    }
}

/// The longest `retention_days`: 100 years.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// True for a valid tenant id: `[a-z0-9_-]{1,64}`.
pub fn is_valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The problems of one tenant, each said as "tenant "acme": KEY MESSAGE".
struct TenantProblems<'a> {
    name: String,
    out: &'a mut Vec<String>,
}

impl TenantProblems<'_> {
    fn say(&mut self, key: &str, msg: String) {
        self.out.push(format!("{}: {key} {msg}", self.name));
    }
}

fn tenant_problems(index: usize, t: &Tenant, out: &mut Vec<String>) {
    let name = if t.id.is_empty() {
        format!("tenant #{}", index + 1)
    } else {
        format!("tenant {:?}", t.id)
    };
    let mut problems = TenantProblems { name, out };
    login_problems(t, &mut problems);
    import_problems(&t.import, &mut problems);
    column_problems(&t.import, &mut problems);
    if let Some(push) = &t.scim_push {
        for (key, msg) in push.problems() {
            problems.say(&key, msg);
        }
    }
    webhook_problems(t, &mut problems);
}

/// Each `[[tenants.webhooks]]` endpoint's keys, and one URL per endpoint.
fn webhook_problems(t: &Tenant, problems: &mut TenantProblems<'_>) {
    let mut urls = HashSet::new();
    for (n, hook) in t.webhooks.iter().enumerate() {
        let at = format!("webhooks[{n}]");
        for (key, msg) in hook.problems(&at) {
            problems.say(&key, msg);
        }
        if !urls.insert(hook.url.as_str()) {
            problems.say(
                &format!("{at}.url"),
                format!(
                    "{:?} is listed twice; one endpoint per URL",
                    super::webhooks::shown_url(&hook.url)
                ),
            );
        }
    }
}

/// The id, the login methods, the notify list and the SCIM token.
fn login_problems(t: &Tenant, problems: &mut TenantProblems<'_>) {
    let mut say = |key: &str, msg: String| problems.say(key, msg);
    if !is_valid_tenant_id(&t.id) {
        say(
            "id",
            format!("{:?} must be 1 to 64 characters of a-z, 0-9, _ or -", t.id),
        );
    }
    if t.password_hash.is_none() && t.authorized_keys.is_empty() {
        say(
            "password_hash/authorized_keys",
            "are both missing: give a password hash, keys, or both".into(),
        );
    }
    // The rule every login check applies (`model::argon::checkable`), so a hash accepted here
    // can verify, and no accepted hash holds a checking thread for minutes (review s29).
    for (key, hash) in [
        ("password_hash", &t.password_hash),
        ("portal_password_hash", &t.portal_password_hash),
    ] {
        if let Some(Err(why)) = hash.as_deref().map(crate::model::argon::checkable) {
            say(key, format!("{why}; make one with `roster hash-password`"));
        }
    }
    for (n, k) in t.authorized_keys.iter().enumerate() {
        if parse_authorized_key(k).is_err() {
            say(
                &format!("authorized_keys[{n}]"),
                format!("{:?} is not an OpenSSH public key line", short(k)),
            );
        }
    }
    for addr in &t.notify {
        if addr.parse::<lettre::Address>().is_err() {
            say("notify", format!("{addr:?} is not a mail address"));
        }
    }
    if let Some(tok) = &t.scim_token_sha256 {
        if tok.len() != 64 || !tok.bytes().all(|b| b.is_ascii_hexdigit()) {
            say(
                "scim_token_sha256",
                "must be 64 hex digits (the SHA-256 of the token)".into(),
            );
        }
    }
}

/// Why a `date_format` that formats a day cannot serve in a file name, if it cannot: the
/// name made for a date must read back as that very date (a format without the day, such as
/// `%Y-%m`, never does), and must not hold a folder separator (`%Y/%m/%d`, `%D`), or no
/// uploaded file could ever match the pattern (review s27).
fn unreadable_date_format(format: &str) -> Option<&'static str> {
    use std::fmt::Write;
    // Two dates whose day, month and year all differ, the day above 12.
    let probes = [(2026, 1, 31), (2027, 12, 14)];
    for (y, m, d) in probes {
        let date = chrono::NaiveDate::from_ymd_opt(y, m, d)?;
        let mut name = String::new();
        if write!(name, "{}", date.format(format)).is_err() {
            return Some("is not a valid strftime format of a date");
        }
        if name.contains('/') || name.contains('\\') {
            return Some("makes a name with a folder separator (/ or \\); a file name cannot hold one, so use - or _ between the fields");
        }
        if chrono::NaiveDate::parse_from_str(&name, format).ok() != Some(date) {
            return Some("does not name one day (a date written with it cannot be read back): use the year, the month and the day, such as %Y-%m-%d or %Y%m%d");
        }
    }
    None
}

/// `[tenants.import]` apart from its columns.
fn import_problems(p: &ImportProfile, problems: &mut TenantProblems<'_>) {
    let mut say = |key: &str, msg: String| problems.say(key, msg);
    if p.file.trim().is_empty() || p.file.contains('/') || p.file.contains('\\') {
        say(
            "import.file",
            format!("{:?} must be a file name without folders", p.file),
        );
    }
    if p.file.contains("{date}") {
        let probe = chrono::NaiveDate::from_ymd_opt(2026, 1, 31)
            .map(|d| {
                use std::fmt::Write;
                let mut s = String::new();
                write!(s, "{}", d.format(&p.date_format)).is_ok()
            })
            .unwrap_or(false);
        if !probe || p.date_format.is_empty() {
            // A time field (%H, %M, …) is valid strftime, but `{date}` names a day (review
            // s19 docs F9: the message said "not a valid strftime format").
            let with_time = chrono::NaiveDate::from_ymd_opt(2026, 1, 31)
                .and_then(|d| d.and_hms_opt(7, 30, 0))
                .is_some_and(|t| {
                    use std::fmt::Write;
                    let mut s = String::new();
                    write!(s, "{}", t.format(&p.date_format)).is_ok()
                });
            let why = if with_time && !p.date_format.is_empty() {
                "has a time field (%H, %M, %S, …); {date} is a day, so use date fields only \
                 (%Y, %m, %d, %y, %b, %j, …)"
            } else {
                "is not a valid strftime format of a date (%Y, %m, %d, %y, %b, %j, …)"
            };
            say("import.date_format", format!("{:?} {why}", p.date_format));
        } else if let Some(why) = unreadable_date_format(&p.date_format) {
            say("import.date_format", format!("{:?} {why}", p.date_format));
        }
    }
    if chrono_tz::Tz::from_str(&p.timezone).is_err() {
        say(
            "import.timezone",
            format!(
                "{:?} is not an IANA time zone like \"Europe/Zagreb\"",
                p.timezone
            ),
        );
    }
    match (&p.schedule, p.trigger) {
        (None, Trigger::Schedule | Trigger::Both) => say(
            "import.schedule",
            "is required when trigger is \"schedule\" or \"both\"".into(),
        ),
        (Some(expr), _) => match croner::Cron::from_str(expr) {
            Err(e) => say(
                "import.schedule",
                format!("{expr:?} is not a cron expression: {e}"),
            ),
            // A valid expression can name a day that never comes (`0 0 30 2 *`): the
            // schedule would never fire and no `missing` record would ever say so (review s27).
            Ok(cron)
                if cron
                    .find_next_occurrence(&chrono::Utc::now(), false)
                    .is_err() =>
            {
                say(
                    "import.schedule",
                    format!(
                        "{expr:?} never fires (no date matches it); check the day and month fields"
                    ),
                )
            }
            Ok(_) => {}
        },
        _ => {}
    }
    if !(0.0..=100.0).contains(&p.max_missing_percent) {
        say(
            "import.max_missing_percent",
            format!("{} must be between 0 and 100", p.max_missing_percent),
        );
    }
    if p.list_separator.chars().count() != 1 {
        say(
            "import.list_separator",
            format!("{:?} must be exactly one character", p.list_separator),
        );
    }
    if p.languages.is_empty() {
        say("import.languages", "must list at least one code".into());
    }
    if !(1..=MAX_RETENTION_DAYS).contains(&p.retention_days) {
        say(
            "import.retention_days",
            format!(
                "{} must be 1 to {MAX_RETENTION_DAYS}: archived files, reports and change-log \
                 entries older than this many days are deleted (0 would delete them all at \
                 every start; there is no \"keep forever\")",
                p.retention_days
            ),
        );
    }
}

/// `[tenants.import.columns]`: the required fields are mapped, each to one header.
fn column_problems(p: &ImportProfile, problems: &mut TenantProblems<'_>) {
    let mut say = |key: &str, msg: String| problems.say(key, msg);
    let key = p.match_by.field();
    if !p.columns.is_empty() {
        for required in [key, "first_name", "last_name"] {
            if !p.columns.contains_key(required) {
                say(
                    "import.columns",
                    format!("must map {required:?} (the match key and both names are required)"),
                );
            }
        }
    }
    let mut headers = HashSet::new();
    for (field, header) in &p.columns {
        if !is_known_field(field) {
            say(
                "import.columns",
                format!("names an unknown field {field:?}"),
            );
        }
        if header.trim().is_empty() {
            say(
                &format!("import.columns.{field}"),
                "must name a CSV header".into(),
            );
        }
        if !headers.insert(header.trim().to_lowercase()) {
            say(
                &format!("import.columns.{field}"),
                format!("header {header:?} is mapped to more than one field"),
            );
        }
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests;
