//! A small real SMTP server for tests: a tokio `TcpListener` on 127.0.0.1 that speaks enough
//! SMTP (EHLO/HELO, MAIL FROM, RCPT TO, DATA with dot-unstuffing, RSET, NOOP, QUIT) for lettre,
//! and records every message it accepts.
//!
//! Data enters as SMTP over TCP from the code under test; it leaves through
//! [`SmtpSink::received`] / [`SmtpSink::wait_for`] as [`Received`] values (envelope + the raw
//! message bytes after dot-unstuffing). [`SmtpSink::reply_to_rcpt`] makes the sink answer
//! `451` (try later) or `550` (rejected) to chosen recipients, to drive retry and give-up paths.
//! Include it with `#[path = "support/smtp_sink.rs"] mod smtp_sink;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message as transmitted, with CRLF line endings, dot-unstuffed, without the final `.`.
    pub data: Vec<u8>,
}

/// How the sink answers `RCPT TO` for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptReply {
    Accept,
    /// `451 4.3.0` — a transient failure.
    TryLater,
    /// `550 5.1.1` — a permanent failure.
    Reject,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    rcpt: HashMap<String, RcptReply>,
    connections: usize,
}

pub struct SmtpSink {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl SmtpSink {
    /// Starts a sink on a free port of 127.0.0.1.
    pub async fn start() -> std::io::Result<SmtpSink> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?).await
    }

    /// Starts a sink on a given address (e.g. a port that was unreachable a moment ago).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<SmtpSink> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if let Ok(mut s) = st.lock() {
                    s.connections += 1;
                }
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    // A broken client connection only ends that session.
                    let _ = session(stream, st).await;
                });
            }
        });
        Ok(SmtpSink { addr, state, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `smtp://127.0.0.1:PORT` (plain SMTP, as lettre's `from_url` expects).
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Makes the sink answer `RCPT TO:<addr>` with `reply` from now on.
    pub fn reply_to_rcpt(&self, addr: &str, reply: RcptReply) {
        if let Ok(mut s) = self.state.lock() {
            s.rcpt.insert(addr.to_ascii_lowercase(), reply);
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state
            .lock()
            .map(|s| s.received.clone())
            .unwrap_or_default()
    }

    pub fn connections(&self) -> usize {
        self.state.lock().map(|s| s.connections).unwrap_or(0)
    }

    /// Waits until at least `n` messages were accepted, up to `limit`; returns what arrived.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops accepting connections (sessions already open run to their end).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Longest command or data line accepted (RFC 5321 says 1000 with CRLF; allow slack).
const MAX_LINE: usize = 64 * 1024;

async fn session(stream: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    wr.write_all(b"220 sink.test ESMTP test sink\r\n").await?;

    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if read_line(&mut rd, &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let upper = text.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("");
        match verb {
            "EHLO" => {
                wr.write_all(
                    b"250-sink.test greets you\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-PIPELINING\r\n250 SIZE 52428800\r\n",
                )
                .await?
            }
            "HELO" => wr.write_all(b"250 sink.test\r\n").await?,
            "MAIL" if upper.starts_with("MAIL FROM:") => {
                from = Some(angle_addr(&text[10..]));
                rcpts.clear();
                wr.write_all(b"250 2.1.0 OK\r\n").await?;
            }
            "RCPT" if upper.starts_with("RCPT TO:") => {
                if from.is_none() {
                    wr.write_all(b"503 5.5.1 MAIL first\r\n").await?;
                    continue;
                }
                let addr = angle_addr(&text[8..]);
                let reply = state
                    .lock()
                    .ok()
                    .and_then(|s| s.rcpt.get(&addr.to_ascii_lowercase()).copied())
                    .unwrap_or(RcptReply::Accept);
                match reply {
                    RcptReply::Accept => {
                        rcpts.push(addr);
                        wr.write_all(b"250 2.1.5 OK\r\n").await?;
                    }
                    RcptReply::TryLater => {
                        wr.write_all(b"451 4.3.0 Try again later\r\n").await?
                    }
                    RcptReply::Reject => {
                        wr.write_all(b"550 5.1.1 No such user here\r\n").await?
                    }
                }
            }
            "DATA" => {
                if from.is_none() || rcpts.is_empty() {
                    wr.write_all(b"503 5.5.1 No valid recipients\r\n").await?;
                    continue;
                }
                wr.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = Vec::new();
                loop {
                    line.clear();
                    if read_line(&mut rd, &mut line).await? == 0 {
                        return Ok(()); // client went away mid-message: nothing accepted
                    }
                    if line == b".\r\n" || line == b".\n" {
                        break;
                    }
                    // Dot-unstuffing: a leading ".." stands for ".".
                    let body = if line.starts_with(b"..") {
                        &line[1..]
                    } else {
                        &line[..]
                    };
                    data.extend_from_slice(body);
                }
                let msg = Received {
                    mail_from: from.take().unwrap_or_default(),
                    rcpt_to: std::mem::take(&mut rcpts),
                    data,
                };
                if let Ok(mut s) = state.lock() {
                    s.received.push(msg);
                }
                wr.write_all(b"250 2.0.0 OK queued\r\n").await?;
            }
            "RSET" => {
                from = None;
                rcpts.clear();
                wr.write_all(b"250 2.0.0 OK\r\n").await?;
            }
            "NOOP" => wr.write_all(b"250 2.0.0 OK\r\n").await?,
            "QUIT" => {
                wr.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => wr.write_all(b"502 5.5.2 Command not implemented\r\n").await?,
        }
    }
}

/// Reads one line (up to and including `\n`), refusing absurdly long ones.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    rd: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let n = rd.read_until(b'\n', buf).await?;
    if buf.len() > MAX_LINE {
        return Err(std::io::Error::other("line too long"));
    }
    Ok(n)
}

/// `<a@b> SIZE=1` → `a@b`.
fn angle_addr(s: &str) -> String {
    let s = s.trim();
    match (s.find('<'), s.find('>')) {
        (Some(a), Some(b)) if b > a => s[a + 1..b].to_string(),
        _ => s.split_whitespace().next().unwrap_or("").to_string(),
    }
}

/// True if `received` is `sent` as transmitted: lettre ends DATA with `CRLF . CRLF` even when
/// the message already ends in CRLF, so one extra empty line at the end is allowed.
pub fn same_message(received: &[u8], sent: &[u8]) -> bool {
    received == sent
        || (received.len() == sent.len() + 2
            && received.starts_with(sent)
            && received.ends_with(b"\r\n"))
}
