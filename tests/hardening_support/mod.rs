//! What the admin listener's hardening tests share: the server's log captured in-process, a
//! server with a password for beta, raw HTTP/1.1 over TCP from chosen loopback addresses.
//!
//! Include it with `#[path = "hardening_support/mod.rs"] mod hardening_support;` next to
//! `admin_support` and `support`.

#![allow(dead_code)]

use crate::admin_support::Env;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub const BETA_PASSWORD: &str = "beta-portal-and-sftp-5e1a";

pub use crate::support::log_capture::logs;

/// Log lines containing every one of `needles`.
pub fn log_lines_with(needles: &[&str]) -> usize {
    let text = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    text.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// A server whose tenant beta has a password (SFTP and portal), with `admin` lines added to
/// its `[admin]` table and `server` lines to its `[server]` table.
pub async fn start(server: &str, admin: &str) -> Env {
    logs();
    let hash = roster::login::hash_password(BETA_PASSWORD).unwrap();
    let (server, admin) = (server.to_string(), admin.to_string());
    Env::start_edited(
        crate::support::server_store::ServerStore::for_test(),
        move |text| {
            text.replacen("[server]\n", &format!("[server]\n{server}\n"), 1)
                .replacen("[admin]\n", &format!("[admin]\n{admin}\n"), 1)
                .replacen(
                    "id = \"beta\"\n",
                    &format!("id = \"beta\"\npassword_hash = \"{hash}\"\n"),
                    1,
                )
        },
    )
    .await
}

/// A TCP connection to `to` from the loopback address `from`.
pub async fn tcp_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// The status code of an HTTP/1.1 answer, its `Set-Cookie` values and its whole text.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub set_cookies: Vec<String>,
    pub text: String,
}

pub fn parse(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let set_cookies = head
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("set-cookie")
                .then(|| v.trim().to_string())
        })
        .collect();
    Answer {
        status,
        set_cookies,
        text,
    }
}

/// Reads until the server closes; None when it has not within `secs`.
pub async fn read_to_close(s: &mut TcpStream, secs: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(secs), read)
        .await
        .ok()?;
    Some(out)
}

/// One request (`Connection: close`) from `from`; the answer.
pub async fn request(from: IpAddr, to: SocketAddr, req: &str) -> Answer {
    let mut s = tcp_from(from, to).await;
    s.write_all(req.as_bytes()).await.unwrap();
    parse(
        &read_to_close(&mut s, 60)
            .await
            .expect("an answer within 60 s"),
    )
}

/// A portal sign-in request as beta: the double-submit token is the client's own choice.
pub fn tenant_sign_in(password: &str) -> String {
    let body = format!("csrf=t0k3n&tenant=beta&password={password}");
    format!(
        "POST /login/tenant HTTP/1.1\r\nHost: localhost\r\nCookie: roster_login=t0k3n\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

pub fn get(path: &str, cookie: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    )
}

pub fn session_cookie(a: &Answer) -> Option<String> {
    a.set_cookies.iter().find_map(|c| {
        let v = c.strip_prefix("roster_session=")?.split(';').next()?;
        (!v.is_empty()).then(|| format!("roster_session={v}"))
    })
}

/// True when the server closed `s` (EOF or reset) within 10 s without answering.
pub async fn closed_at_once(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}
