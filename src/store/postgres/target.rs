//! Where a PostgreSQL store lives: a `postgres://` URL turned into connection settings.
//!
//! Data enters as the text of `[store] url` (or `ROSTER_STORE_URL`, applied by the config) and
//! leaves as a [`PostgresTarget`]: tokio-postgres's parsed settings with the password filled in
//! from the URL, `PGPASSWORD` or `~/.pgpass` (in that order; tokio-postgres itself reads
//! neither), plus the host, port and database for messages, or a sentence naming the key.
//!
//! TLS is not built yet: `sslmode=disable` (or no `sslmode`) is accepted, `require` and
//! `verify-full` are refused with a sentence saying so, anything else names the key.
//! Nothing here connects.

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
    check_sslmode(url, key)?;
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| format!("{key} is not a PostgreSQL URL: {e}"))?;
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
    Ok(PostgresTarget {
        config,
        host,
        port,
        dbname,
        user,
    })
}

/// Accepts no `sslmode` or `sslmode=disable`; refuses `require`/`verify-full` until TLS is built.
fn check_sslmode(url: &str, key: &str) -> Result<(), String> {
    let Some((_, query)) = url.split_once('?') else {
        return Ok(());
    };
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "sslmode" {
            continue;
        }
        match value {
            "disable" => {}
            "require" | "verify-full" => {
                return Err(format!(
                    "{key}: sslmode={value} is not supported yet (TLS to PostgreSQL comes in a \
                     later version); use sslmode=disable on a trusted network"
                ))
            }
            other => {
                return Err(format!(
                    "{key}: sslmode={other:?} is not one of disable, require, verify-full"
                ))
            }
        }
    }
    Ok(())
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
    fn bad_urls_name_the_key() {
        for (url, says) in [
            ("mysql://a@b/c", "does not start with postgres://"),
            ("postgres://a@b/c?sslmode=require", "not supported yet"),
            ("postgres://a@b/c?sslmode=verify-full", "not supported yet"),
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
