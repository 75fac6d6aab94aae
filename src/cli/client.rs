//! The CLI's HTTP client for the admin API of a running `roster serve`.
//!
//! The address and token enter from the config file (`[admin] listen`, `[admin] token`, or
//! when that is unset the server's generated `<data_dir>/admin-token`) or `--admin-url`; requests leave as blocking HTTP calls (ureq), and responses come back as
//! JSON values or an error sentence: "the server is not running", "the token was refused", or
//! the server's own `{"error": ...}` message (its control characters escaped). An answer that
//! is not a success is an [`ApiStatus`] (so a caller can tell a refused token from a passing
//! failure); a failed connection is a plain error.

use crate::config::Config;
use anyhow::Context;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
        let resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .call();
        self.finish(resp)
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
        self.finish(resp)
    }

    fn finish(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Value> {
        let mut resp = resp.map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_string()
            .map_err(|e| self.transport_error(e))?;
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

    /// One sentence for a failed connection.
    fn transport_error(&self, e: ureq::Error) -> anyhow::Error {
        let refused = match &e {
            ureq::Error::Io(io) => matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::NotConnected
            ),
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
            _ => false,
        };
        if refused {
            let from = match self.url_given {
                true => "the address given by --admin-url or ROSTER_ADMIN_URL".to_string(),
                false => format!("the admin address from {}", self.config_path.display()),
            };
            anyhow::anyhow!(
                "the Roster server is not running: nothing answers at {} ({from}); start it with `roster serve -c {}`",
                self.base,
                self.config_path.display()
            )
        } else {
            anyhow::anyhow!("cannot talk to the admin API at {}: {e}", self.base)
        }
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
    }
}
