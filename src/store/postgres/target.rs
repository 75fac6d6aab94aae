//! Where a PostgreSQL store lives: a `postgres://` URL turned into connection settings.
//!
//! Data enters as the text of `[store] url` (or `ROSTER_STORE_URL`, applied by the config) and
//! leaves as a [`PostgresTarget`]: tokio-postgres's parsed settings with the password filled in
//! from the URL, `PGPASSWORD` or `~/.pgpass` (in that order; tokio-postgres itself reads
//! neither), plus the host, port and database for messages, or a sentence naming the key.
//!
//! TLS: `sslmode` is `disable` (the default when absent), `require` (encrypt, do not verify the
//! server's certificate, as libpq does) or `verify-full` (verify the chain and the host name);
//! `sslrootcert=PATH` (with `verify-full` only) names a PEM file of the CA certificates to trust
//! instead of the public roots. tokio-postgres knows neither `verify-full` nor `sslrootcert`, so
//! both are taken out of the URL here, kept in [`PostgresTarget::tls`], and the settings get
//! tokio-postgres's own `disable` or `require`; `tls.rs` makes the connector from them.
//! Anything else names the key. Nothing here connects or reads a file.

use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A PostgreSQL database to connect to, ready for `tokio_postgres::Config::connect`.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    /// Connection settings, the password already resolved.
    pub config: tokio_postgres::Config,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    /// How the connection is secured (`sslmode`, `sslrootcert`).
    pub tls: TlsMode,
}

/// `sslmode` (and `sslrootcert`) of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP (`sslmode=disable`, or no `sslmode`).
    Disable,
    /// TLS without checking the server's certificate (`sslmode=require`).
    Require,
    /// TLS with the certificate chain and host name verified (`sslmode=verify-full`), against
    /// the CA certificates of `sslrootcert` when given, else the public (webpki) roots.
    VerifyFull { root_cert: Option<PathBuf> },
}

impl PostgresTarget {
    /// `HOST:PORT/DB`, for messages (never the password).
    pub fn describe(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.dbname)
    }
}

/// Parses and checks a `postgres://` URL and resolves its password.
pub fn parse_url(url: &str) -> Result<PostgresTarget, String> {
    let key = "[store] url (or ROSTER_STORE_URL)";
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!(
            "{key} must look like \"postgres://USER@HOST:PORT/DB\" (it does not start with postgres://)"
        ));
    }
    let (url, tls) = take_tls_params(url, key)?;
    let mut config = tokio_postgres::Config::from_str(&url)
        .map_err(|e| format!("{key} is not a PostgreSQL URL: {e}"))?;
    config.ssl_mode(match tls {
        TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
        TlsMode::Require | TlsMode::VerifyFull { .. } => tokio_postgres::config::SslMode::Require,
    });
    let host = match config.get_hosts() {
        [tokio_postgres::config::Host::Tcp(h)] => h.clone(),
        [] => {
            return Err(format!(
                "{key} names no host (postgres://USER@HOST:PORT/DB)"
            ))
        }
        [_] => {
            return Err(format!(
                "{key} must name a TCP host, not a unix socket folder"
            ))
        }
        _ => return Err(format!("{key} must name exactly one host")),
    };
    let port = match config.get_ports() {
        [] => 5432,
        [p] => *p,
        _ => return Err(format!("{key} must name exactly one port")),
    };
    let user = config
        .get_user()
        .map(str::to_string)
        .ok_or_else(|| format!("{key} names no user (postgres://USER@HOST:PORT/DB)"))?;
    let dbname = config
        .get_dbname()
        .map(str::to_string)
        .ok_or_else(|| format!("{key} names no database (postgres://USER@HOST:PORT/DB)"))?;
    if config.get_password().is_none() {
        if let Some(pw) = password_from_env_or_pgpass(&host, port, &dbname, &user) {
            config.password(pw);
        }
    }
    notice_a_dead_host(&mut config);
    Ok(PostgresTarget {
        config,
        host,
        port,
        dbname,
        user,
        tls,
    })
}

/// tokio-postgres's keepalive idle time when the URL gives none: two hours.
const DRIVER_KEEPALIVES_IDLE: std::time::Duration = std::time::Duration::from_secs(2 * 60 * 60);

/// TCP keepalives that notice a database host gone without a word (power lost, a network
/// partition, a failover that moved the address) within about a minute: first probe after 30 s
/// of silence, then every 10 s, given up after 3 unanswered. With the driver's defaults (two
/// hours, then the system's) a statement waiting on such a host, and the pooled connection it
/// holds, waited for hours. A live server's kernel answers the probes however long a statement
/// runs, so long imports are not cut. The URL's own `keepalives`, `keepalives_idle`,
/// `keepalives_interval` and `keepalives_retries` win.
fn notice_a_dead_host(config: &mut tokio_postgres::Config) {
    if !config.get_keepalives() {
        return;
    }
    if config.get_keepalives_idle() == DRIVER_KEEPALIVES_IDLE {
        config.keepalives_idle(std::time::Duration::from_secs(30));
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(std::time::Duration::from_secs(10));
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(3);
    }
}

/// The URL without `sslmode` and `sslrootcert`, and the [`TlsMode`] they ask for.
fn take_tls_params(url: &str, key: &str) -> Result<(String, TlsMode), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), TlsMode::Disable));
    };
    let mut mode = None;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| format!("{key}: the value of {name} is not UTF-8"))?;
        match name {
            "sslmode" => mode = Some(value.to_string()),
            "sslrootcert" => root_cert = Some(PathBuf::from(value.as_ref())),
            _ => kept.push(pair),
        }
    }
    let tls = match (mode.as_deref(), root_cert) {
        (None | Some("disable"), None) => TlsMode::Disable,
        (Some("require"), None) => TlsMode::Require,
        (Some("verify-full"), root_cert) => TlsMode::VerifyFull { root_cert },
        (None | Some("disable" | "require"), Some(_)) => {
            return Err(format!(
                "{key}: sslrootcert is only used with sslmode=verify-full (add it, or remove \
                 sslrootcert)"
            ))
        }
        (Some(other), _) => {
            return Err(format!(
                "{key}: sslmode={other:?} is not one of disable, require, verify-full"
            ))
        }
    };
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, tls))
}

/// The password of `PGPASSWORD`, else the first matching line of the pgpass file
/// (`PGPASSFILE`, else `~/.pgpass`), as libpq reads them.
fn password_from_env_or_pgpass(host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    if let Ok(pw) = std::env::var("PGPASSWORD") {
        if !pw.is_empty() {
            return Some(pw);
        }
    }
    let file = match std::env::var_os("PGPASSFILE") {
        Some(f) => PathBuf::from(f),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
    };
    pgpass_lookup(&file, host, port, db, user)
}

/// Looks up `host:port:database:username:password` lines; `*` matches anything, `\` escapes
/// `:` and `\`. An unreadable file is no password (libpq does the same).
fn pgpass_lookup(file: &Path, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let port = port.to_string();
    let wanted = [host, port.as_str(), db, user];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass_line(line);
            if fields.len() != 5 {
                return None;
            }
            let matches = fields[..4]
                .iter()
                .zip(wanted)
                .all(|(f, w)| f == "*" || f == w);
            matches.then(|| fields[4].clone())
        })
}

fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(f)) = (chars.next(), fields.last_mut()) {
                    f.push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            _ => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gives_host_port_db_and_user() {
        let t = parse_url("postgres://app@db.example:6543/hr?application_name=roster").unwrap();
        assert_eq!(t.describe(), "db.example:6543/hr");
        assert_eq!(t.user, "app");
        assert_eq!(t.config.get_application_name(), Some("roster"));
        let t = parse_url("postgres://app:secret@db/hr?sslmode=disable").unwrap();
        assert_eq!(t.port, 5432);
        assert_eq!(t.config.get_password(), Some(&b"secret"[..]));
    }

    #[test]
    fn keepalives_notice_a_dead_host_within_a_minute_unless_the_url_says_otherwise() {
        use std::time::Duration;
        let t = parse_url("postgres://app@db/hr").unwrap();
        assert!(t.config.get_keepalives());
        assert_eq!(t.config.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(
            t.config.get_keepalives_interval(),
            Some(Duration::from_secs(10))
        );
        assert_eq!(t.config.get_keepalives_retries(), Some(3));
        let t = parse_url("postgres://app@db/hr?keepalives_idle=600&keepalives_retries=9").unwrap();
        assert_eq!(t.config.get_keepalives_idle(), Duration::from_secs(600));
        assert_eq!(
            t.config.get_keepalives_interval(),
            Some(Duration::from_secs(10))
        );
        assert_eq!(t.config.get_keepalives_retries(), Some(9));
        let t = parse_url("postgres://app@db/hr?keepalives=0").unwrap();
        assert!(!t.config.get_keepalives());
        assert_eq!(t.config.get_keepalives_retries(), None);
    }

    #[test]
    fn bad_urls_name_the_key() {
        for (url, says) in [
            ("mysql://a@b/c", "does not start with postgres://"),
            ("postgres://a@b/c?sslmode=verify-ca", "not one of disable"),
            (
                "postgres://a@b/c?sslrootcert=/ca.pem",
                "only used with sslmode=verify-full",
            ),
            (
                "postgres://a@b/c?sslmode=require&sslrootcert=x",
                "only used with",
            ),
            ("postgres://a@b/c?sslmode=maybe", "not one of disable"),
            ("postgres://a@b", "names no database"),
            ("postgres://b/c", "names no user"),
            ("postgres://a@b/c?bogus=1", "is not a PostgreSQL URL"),
        ] {
            let e = parse_url(url).unwrap_err();
            assert!(e.starts_with("[store] url"), "{url}: {e}");
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn sslmode_and_sslrootcert_become_the_tls_mode_and_leave_the_url() {
        use tokio_postgres::config::SslMode;
        let t = parse_url("postgres://a@b/c").unwrap();
        assert_eq!(
            (t.tls, t.config.get_ssl_mode()),
            (TlsMode::Disable, SslMode::Disable)
        );
        let t = parse_url("postgres://a@b/c?sslmode=disable&application_name=x").unwrap();
        assert_eq!(
            (t.tls, t.config.get_ssl_mode()),
            (TlsMode::Disable, SslMode::Disable)
        );
        assert_eq!(t.config.get_application_name(), Some("x"));
        let t = parse_url("postgres://a@b/c?sslmode=require").unwrap();
        assert_eq!(
            (t.tls, t.config.get_ssl_mode()),
            (TlsMode::Require, SslMode::Require)
        );
        let t = parse_url("postgres://a@b/c?application_name=y&sslmode=verify-full").unwrap();
        assert_eq!(t.tls, TlsMode::VerifyFull { root_cert: None });
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(t.config.get_application_name(), Some("y"));
        let t = parse_url("postgres://a@b/c?sslrootcert=%2Fetc%2Fca%20x.pem&sslmode=verify-full")
            .unwrap();
        assert_eq!(
            t.tls,
            TlsMode::VerifyFull {
                root_cert: Some(PathBuf::from("/etc/ca x.pem"))
            }
        );
    }

    #[test]
    fn pgpass_lines_match_with_wildcards_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pgpass");
        std::fs::write(
            &f,
            "# comment\nother:5432:hr:app:nope\ndb:*:hr:app:pa\\:ss\n*:*:*:*:fallback\n",
        )
        .unwrap();
        assert_eq!(
            pgpass_lookup(&f, "db", 5432, "hr", "app").as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            pgpass_lookup(&f, "x", 1, "y", "z").as_deref(),
            Some("fallback")
        );
        assert_eq!(
            pgpass_lookup(&dir.path().join("none"), "db", 1, "hr", "app"),
            None
        );
    }
}
