//! The CLI's HTTP client for the admin API of a running `roster serve`.
//!
//! The address and token enter from the config file (`[admin] listen`, `[admin] token`, or
//! when that is unset the server's generated `<data_dir>/admin-token`) or `--admin-url`; requests leave as blocking HTTP calls (ureq), and responses come back as
//! JSON values or an error sentence: "the server is not running", "the token was refused", or
//! the server's own `{"error": ...}` message (its control characters escaped). An answer that
//! is not a success is an [`ApiStatus`] (so a caller can tell a refused token from a passing
//! failure); a failed connection is a plain error.
//!
//! The agent ignores `HTTP_PROXY`, `ALL_PROXY` and the like: the admin token goes to the
//! address configured and nowhere else (review s30: a proxy in the environment received it,
//! even for 127.0.0.1). A GET waits at most [`READ_TIMEOUT`] for each read from the server, so
//! a frozen server ends `changes --follow` with an error instead of holding it forever; a POST
//! waits as long as the server works on it (run-now and approve answer when the import is
//! done, preview when its plan is). No answer is read past [`MAX_BODY`].

use crate::config::Config;
use anyhow::Context;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest a GET waits for each read from the server (the answer, or a piece of its body).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest answer read (256 MiB): far above a page of users or changes.
pub const MAX_BODY: u64 = 256 << 20;

/// Characters left as they are in a path segment (everything else is %-encoded).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'@');

/// Encodes one path segment (a user key, an import id, a tenant id).
pub fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// The admin API answered, but not with a success: its status and the sentence to show.
#[derive(Debug)]
pub struct ApiStatus {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for ApiStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiStatus {}

/// Talks to one server.
pub struct Client {
    base: String,
    token: String,
    config_path: PathBuf,
    /// The address came from `--admin-url` (or `ROSTER_ADMIN_URL`), not from the config.
    url_given: bool,
    agent: ureq::Agent,
    /// `max_upload_bytes` of the config: the largest body a preview may send.
    pub max_upload_bytes: u64,
}

impl Client {
    /// Reads the admin address and token from the config at `config_path`; `admin_url`
    /// (`--admin-url`) overrides the address.
    pub fn from_config(config_path: &Path, admin_url: Option<&str>) -> anyhow::Result<Client> {
        let config = Config::load(config_path)?;
        let base = match admin_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => base_url(&config.admin.listen).with_context(|| {
                format!(
                    "[admin] listen in {} cannot be used by the CLI",
                    config_path.display()
                )
            })?,
        };
        let agent_config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build();
        Ok(Client {
            base,
            token: crate::config::admin_token::for_cli(&config)?,
            config_path: config_path.to_path_buf(),
            url_given: admin_url.is_some(),
            agent: ureq::Agent::new_with_config(agent_config),
            max_upload_bytes: config.server.max_upload_bytes,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// GET `path` (starting with `/`), the body as JSON.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.get_within(path, READ_TIMEOUT)
    }

    /// GET `path`, waiting at most `wait` for each read from the server.
    pub fn get_within(&self, path: &str, wait: Duration) -> anyhow::Result<Value> {
        let resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .config()
            .timeout_per_read(Some(wait))
            .build()
            .header("Authorization", format!("Bearer {}", self.token))
            .call();
        self.finish(resp, Some(wait))
    }

    /// POST `path` with `body` (raw bytes read from a reader, or nothing).
    pub fn post(&self, path: &str, body: Option<&mut dyn Read>) -> anyhow::Result<Value> {
        let req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token));
        let resp = match body {
            Some(r) => req
                .header("Content-Type", "text/csv")
                .send(ureq::SendBody::from_reader(r)),
            None => req.send_empty(),
        };
        self.finish(resp, None)
    }

    /// The answer as JSON, or the error to show; `wait` is the read timeout the call had.
    fn finish(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        wait: Option<Duration>,
    ) -> anyhow::Result<Value> {
        let mut resp = resp.map_err(|e| self.transport_error(e, wait))?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| self.transport_error(e, wait))?;
        if status.as_u16() == 401 {
            return Err(ApiStatus {
                status: 401,
                message: format!(
                    "the server refused the admin token: [admin] token in {} (or, when unset, the generated token in its data_dir) does not match the running server's",
                    self.config_path.display()
                ),
            }
            .into());
        }
        let value: Option<Value> = serde_json::from_str(&text).ok();
        if !status.is_success() {
            let msg = value
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(|e| e.as_str())
                .map(super::table::clean)
                .unwrap_or_else(|| format!("the admin API answered {status}"));
            return Err(ApiStatus {
                status: status.as_u16(),
                message: msg,
            }
            .into());
        }
        value.with_context(|| {
            format!(
                "the admin API at {} answered something that is not JSON",
                self.base
            )
        })
    }

    /// One sentence for a failed connection: nothing listening (refused) is "not running";
    /// a connection the server closed, a name that does not resolve, a read that timed out and
    /// an answer too large each say so (review s30: all of them read "not running").
    fn transport_error(&self, e: ureq::Error, wait: Option<Duration>) -> anyhow::Error {
        use std::io::ErrorKind;
        let io_kind = match &e {
            ureq::Error::Io(io) => Some(io.kind()),
            _ => None,
        };
        // std's getaddrinfo failure is an io::Error of no particular kind; its text says it.
        let unresolved = match &e {
            ureq::Error::HostNotFound | ureq::Error::Timeout(ureq::Timeout::Resolve) => true,
            ureq::Error::Io(io) => io.to_string().contains("failed to lookup address"),
            _ => false,
        };
        if unresolved {
            return anyhow::anyhow!("cannot resolve {}: {e}", host_of(&self.base));
        }
        match (&e, io_kind) {
            (_, Some(ErrorKind::ConnectionRefused)) => {
                let from = match self.url_given {
                    true => "the address given by --admin-url or ROSTER_ADMIN_URL".to_string(),
                    false => format!("the admin address from {}", self.config_path.display()),
                };
                anyhow::anyhow!(
                    "the Roster server is not running: nothing answers at {} ({from}); start it with `roster serve -c {}`",
                    self.base,
                    self.config_path.display()
                )
            }
            (
                _,
                Some(
                    ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::NotConnected
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof,
                ),
            ) => anyhow::anyhow!(
                "the server at {} closed the connection (busy?); try again: {e}",
                self.base
            ),
            (ureq::Error::Timeout(ureq::Timeout::Connect), _) => {
                anyhow::anyhow!("nothing accepted a connection at {} within 5 s", self.base)
            }
            (ureq::Error::Timeout(_), _)
            | (_, Some(ErrorKind::TimedOut | ErrorKind::WouldBlock)) => {
                anyhow::anyhow!(
                    "the admin API at {} did not answer within {} s (a frozen or overloaded server?)",
                    self.base,
                    wait.unwrap_or(READ_TIMEOUT).as_secs()
                )
            }
            (ureq::Error::BodyExceedsLimit(_), _) => anyhow::anyhow!(
                "the admin API at {} sent an answer larger than {} MiB; not read",
                self.base,
                MAX_BODY >> 20
            ),
            _ => anyhow::anyhow!("cannot talk to the admin API at {}: {e}", self.base),
        }
    }
}

/// The host of `http://host:port/...`.
fn host_of(base: &str) -> &str {
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// `http://host:port` for a listen address; an unspecified IP (0.0.0.0, ::) means loopback.
pub fn base_url(listen: &str) -> anyhow::Result<String> {
    let listen = listen.trim();
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        anyhow::ensure!(
            addr.port() != 0,
            "{listen} lets the system pick a port, so the CLI cannot know it; pass --admin-url"
        );
        let ip = match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            std::net::IpAddr::V4(ip) => ip.to_string(),
        };
        return Ok(format!("http://{ip}:{}", addr.port()));
    }
    anyhow::ensure!(
        listen.contains(':') && !listen.contains('/'),
        "{listen:?} is not host:port"
    );
    Ok(format!("http://{listen}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(base_url("127.0.0.1:8022").unwrap(), "http://127.0.0.1:8022");
        assert_eq!(base_url("0.0.0.0:8022").unwrap(), "http://127.0.0.1:8022");
        assert_eq!(base_url("[::]:8022").unwrap(), "http://[::1]:8022");
        assert_eq!(base_url("localhost:8022").unwrap(), "http://localhost:8022");
        assert!(base_url("127.0.0.1:0").is_err());
        assert_eq!(seg("a b/c@d.e"), "a%20b%2Fc@d.e");
        assert_eq!(host_of("http://admin.invalid:8022"), "admin.invalid");
        assert_eq!(host_of("http://[::1]:8022/x"), "[::1]");
    }
}
