//! The SMTP relay named by `[mail] smtp_url`: reading the URL, and one session with the relay
//! run step by step on lettre's lower-level [`AsyncSmtpConnection`] (review s30).
//!
//! Enters: the URL text (from the config, at validation and at each delivery), then envelopes
//! and message bytes. Leaves: a [`Relay`] or a sentence saying why the URL is refused, and for
//! each message a `Result<(), DeliveryError>` whose kind depends on the step that failed:
//! anything up to and including `MAIL FROM` (connect, greeting, EHLO, STARTTLS, AUTH, the
//! sender) is about the relay, not the message, and comes back as
//! [`DeliveryError::Unavailable`] whatever the reply code, so a wrong password (535) or a
//! refused sender (530, 550) leaves every queued message waiting instead of giving each up;
//! only the replies to `RCPT`, `DATA` and the end of the data are classified by their code (5xx
//! permanent, 4xx transient).
//!
//! Bounds: connecting and each step up to `DATA` share one deadline of twice the timeout; the
//! upload of the message and the relay's final reply get their own, longer one
//! ([`FINAL_REPLY_WAIT`]), since a content-scanning relay may take minutes to answer and an
//! answer given up on means the message is sent again. Whatever the relay sends between two
//! commands is capped at [`MAX_REPLY_BYTES`] ([`Bounded`]): lettre reads a reply line until its
//! newline without a bound of its own.

use super::deliver::DeliveryError;
use lettre::address::Address;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
#[allow(deprecated)]
use lettre::transport::smtp::client::AsyncNetworkStream;
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

/// The longest wait for the upload of a message and the relay's reply to its end (RFC 5321
/// §4.5.3.2.6 suggests 10 minutes for the reply). Three minutes, not ten: the outbox claim a
/// node holds on a message lasts five minutes from its last renewal, and the steps before the
/// data may take up to a minute; a longer wait would let another node send the message too.
pub const FINAL_REPLY_WAIT: Duration = Duration::from_secs(180);

/// The most the relay may send between two writes of ours (one reply, or the TLS handshake)
/// before the connection is dropped. lettre refuses a reply over 100 000 bytes only once a line
/// ends, so a server sending bytes without a newline grew its buffer until the timeout.
pub const MAX_REPLY_BYTES: usize = 256 * 1024;

/// How the session with the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// `smtp://` without `tls`: plain text.
    Plain,
    /// `smtp://…?tls=required`: STARTTLS, refusing a relay that does not offer it.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Implicit,
}

/// `[mail] smtp_url`, read.
#[derive(Clone)]
pub struct Relay {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("credentials", &self.credentials.is_some())
            .finish()
    }
}

const URL_FORMS: &str = "forms: smtp://host:port, smtp://user:password@host:port?tls=required, smtps://user:password@host:port";

impl Relay {
    /// Reads `url` as the delivery worker uses it. Refused, with a sentence that never repeats
    /// the password: another scheme; a `tls` other than `required`; `tls=opportunistic` (a
    /// man in the middle can strip the STARTTLS offer, and the session then goes on in plain
    /// text); a user or password over plain `smtp://` to a host other than loopback (AUTH
    /// would cross the network in clear text). A loopback relay (`localhost`, `127.0.0.0/8`,
    /// `::1`) may be plain with credentials: nothing leaves the machine.
    pub fn parse(url: &str) -> Result<Relay, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("it has no scheme ({URL_FORMS})"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport)?;
        let mut tls = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("tls", v)) => tls = Some(v),
                _ => {
                    return Err(format!(
                        "the query may only say tls=required (it says {:?})",
                        cut(pair)
                    ))
                }
            }
        }
        let security = match (scheme, tls) {
            ("smtp", None) => Security::Plain,
            ("smtp", Some("required")) => Security::StartTls,
            ("smtp", Some("opportunistic")) => return Err("tls=opportunistic is refused: a man in the middle can remove the relay's STARTTLS offer and read the session, password included; use tls=required or smtps://".into()),
            ("smtps", None | Some("required")) => Security::Implicit,
            ("smtp" | "smtps", Some(other)) => {
                return Err(format!("tls={:?} is not known; the only value is tls=required", cut(other)))
            }
            (other, _) => {
                return Err(format!(
                    "the scheme must be smtp or smtps, not {:?} ({URL_FORMS})",
                    cut(other)
                ))
            }
        };
        let port = match port {
            Some(p) => p,
            None if security == Security::Implicit => 465,
            None if security == Security::StartTls => 587,
            None => 25,
        };
        // As lettre's `from_url`: AUTH only when the URL gives a password (`user:password@`).
        let credentials = userinfo
            .filter(|u| u.contains(':'))
            .map(credentials)
            .transpose()?;
        if credentials.is_some() && security == Security::Plain && !is_loopback(&host) {
            return Err(format!(
                "a user and password over plain smtp:// would cross the network in clear text; use smtp://…@{host}:{port}?tls=required (STARTTLS) or smtps:// (only a relay on this machine, localhost or 127.0.0.1, may be plain with a password)"
            ));
        }
        let hello = match path.trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_string()),
        };
        Ok(Relay {
            host,
            port,
            security,
            credentials,
            hello,
        })
    }

    /// Opens a session: TCP (and TLS for `smtps://`), the greeting and EHLO, STARTTLS when
    /// required, and AUTH when the URL has a user. Every failure here is the relay's.
    async fn connect(&self, deadline: Instant) -> Result<AsyncSmtpConnection, DeliveryError> {
        let relay_err = |step: &str, e: &dyn std::error::Error| {
            DeliveryError::Unavailable(format!(
                "{step} with the SMTP server {}:{} failed: {}",
                self.host,
                self.port,
                super::deliver::error_chain(e)
            ))
        };
        let tcp = within(
            deadline,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await?
        .map_err(|e| relay_err("connecting", &e))?;
        let peer = tcp.peer_addr().map_err(|e| relay_err("connecting", &e))?;
        let tls =
            || TlsParameters::new(self.host.clone()).map_err(|e| relay_err("setting up TLS", &e));
        let stream: Box<dyn AsyncTokioStream> = match self.security {
            Security::Implicit => {
                #[allow(deprecated)]
                let mut net = AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
                within(deadline, net.upgrade_tls(tls()?))
                    .await?
                    .map_err(|e| relay_err("the TLS handshake", &e))?;
                Box::new(Bounded::new(net.compat(), peer))
            }
            Security::Plain | Security::StartTls => Box::new(Bounded::new(tcp, peer)),
        };
        let mut conn = within(
            deadline,
            AsyncSmtpConnection::connect_with_transport(stream, &self.hello),
        )
        .await?
        .map_err(|e| relay_err("the greeting or EHLO", &e))?;
        if self.security == Security::StartTls {
            if !conn.can_starttls() {
                conn.abort().await;
                return Err(DeliveryError::Unavailable(format!(
                    "the SMTP server {}:{} does not offer STARTTLS, which tls=required asks for",
                    self.host, self.port
                )));
            }
            within(deadline, conn.starttls(tls()?, &self.hello))
                .await?
                .map_err(|e| relay_err("STARTTLS", &e))?;
        }
        if let Some(credentials) = &self.credentials {
            let authed = within(deadline, conn.auth(DEFAULT_MECHANISMS, credentials)).await?;
            if let Err(e) = authed {
                conn.abort().await;
                return Err(relay_err("AUTH (the user and password of smtp_url)", &e));
            }
        }
        Ok(conn)
    }
}

/// One session with the relay, opened at the first message and reused until a step fails.
pub struct Session<'a> {
    relay: &'a Relay,
    timeout: Duration,
    conn: Option<AsyncSmtpConnection>,
}

impl<'a> Session<'a> {
    pub fn new(relay: &'a Relay, timeout: Duration) -> Self {
        Session {
            relay,
            timeout,
            conn: None,
        }
    }

    /// Sends `bytes` from `from` to `to` in one transaction. The session is kept only after a
    /// success; after any failure the next message opens a new one.
    pub async fn send(
        &mut self,
        from: &Address,
        to: &[Address],
        bytes: &[u8],
    ) -> Result<(), DeliveryError> {
        let deadline = Instant::now() + self.timeout * 2;
        let kept = match self.conn.take() {
            // A kept session the relay has closed in the meantime would fail at MAIL FROM,
            // which reads as the relay refusing the sender: ask first (NOOP).
            Some(mut c) if !c.has_broken() => match within(deadline, c.test_connected()).await? {
                true => Some(c),
                false => None,
            },
            _ => None,
        };
        let mut conn = match kept {
            Some(c) => c,
            None => self.relay.connect(deadline).await?,
        };
        let res = transaction(&mut conn, from, to, bytes, deadline, self.timeout).await;
        match res {
            Ok(()) => self.conn = Some(conn),
            Err(_) => conn.abort().await,
        }
        res
    }

    /// QUIT, bounded; its outcome does not matter.
    pub async fn close(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = tokio::time::timeout(self.timeout, conn.quit()).await;
        }
    }
}

/// MAIL, RCPT for each of `to`, DATA and the message, on an open session.
async fn transaction(
    conn: &mut AsyncSmtpConnection,
    from: &Address,
    to: &[Address],
    bytes: &[u8],
    deadline: Instant,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let info = conn.server_info();
    let ascii = |a: &Address| AsRef::<str>::as_ref(a).is_ascii();
    let mut params = Vec::new();
    if !ascii(from) || !to.iter().all(ascii) {
        if !info.supports_feature(Extension::SmtpUtfEight) {
            if !ascii(from) {
                return Err(DeliveryError::Unavailable(format!(
                    "the sender {from} is not ASCII and the SMTP server does not offer SMTPUTF8"
                )));
            }
            // A recipient the relay cannot take is this message's problem, not an outage.
            let odd: Vec<_> = to.iter().filter(|a| !ascii(a)).collect();
            return Err(DeliveryError::Permanent(format!(
                "{}: an address that is not ASCII, and the SMTP server does not offer SMTPUTF8",
                odd.iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        params.push(MailParameter::SmtpUtfEight);
    }
    if !bytes.is_ascii() {
        if !info.supports_feature(Extension::EightBitMime) {
            return Err(DeliveryError::Permanent(
                "the message is not 7-bit and the SMTP server does not offer 8BITMIME".into(),
            ));
        }
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let sender = within(
        deadline,
        conn.command(Mail::new(Some(from.clone()), params)),
    )
    .await?;
    // A refused sender (530 "issue STARTTLS first", 550 "sender not allowed") refuses every
    // message alike: the relay's problem, whatever the code.
    sender.map_err(|e| {
        DeliveryError::Unavailable(format!(
            "the SMTP server refused the sender {from} (MAIL FROM): {}",
            super::deliver::error_chain(&e)
        ))
    })?;
    for rcpt in to {
        let reply = within(deadline, conn.command(Rcpt::new(rcpt.clone(), vec![]))).await?;
        reply.map_err(|e| refused_recipient(&e, rcpt))?;
    }
    within(deadline, conn.command(Data))
        .await?
        .map_err(|e| super::deliver::classify(&e))?;
    let wait = FINAL_REPLY_WAIT.max(timeout * 2);
    match tokio::time::timeout(wait, conn.message(bytes)).await {
        Err(_) => Err(DeliveryError::Unavailable(format!(
            "the SMTP server did not take the message and answer it within {} s",
            wait.as_secs()
        ))),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(super::deliver::classify(&e)),
    }
}

/// What a refused RCPT means. A refusal for the relay's own policy, an enhanced status
/// `5.7.x` ("relay access denied", "authentication required") or a 530, refuses every
/// recipient alike: a relay setting (a login it wants, an address it does not relay for),
/// deferred like an outage so that fixing the setting delivers the queue. Any other refusal
/// (`5.1.1` no such user) is about this recipient (review s30: a relay that wanted a login
/// answered every RCPT 554 5.7.1, and every queued report was given up).
fn refused_recipient(e: &lettre::transport::smtp::Error, rcpt: &Address) -> DeliveryError {
    let said = std::error::Error::source(e).map(|s| s.to_string());
    let policy = e.is_permanent()
        && (said
            .as_deref()
            .is_some_and(|s| s.trim_start().starts_with("5.7."))
            || e.status().is_some_and(|c| c.to_string() == "530"));
    if policy {
        return DeliveryError::Unavailable(format!(
            "the SMTP server refused to relay to {rcpt} for its own policy (a login it wants,              or an address it does not relay for?): {}",
            super::deliver::error_chain(e)
        ));
    }
    super::deliver::classify(e)
}

/// `fut` by `deadline`, or [`DeliveryError::Unavailable`].
async fn within<T>(
    deadline: Instant,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, DeliveryError> {
    tokio::time::timeout_at(deadline, fut)
        .await
        .map_err(|_| DeliveryError::Unavailable("the SMTP server did not answer in time".into()))
}

fn credentials(userinfo: &str) -> Result<Credentials, String> {
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| "the user or password is not UTF-8 once %-decoded".to_string())
    };
    Ok(Credentials::new(decode(user)?, decode(password)?))
}

fn split_host_port(hostport: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| "an IPv6 host lacks its closing ]".to_string())?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(format!("it names no host ({URL_FORMS})"));
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| format!("the port {:?} is not a number up to 65535", cut(p)))?,
        ),
    };
    Ok((host.to_string(), port))
}

/// `localhost`, `127.0.0.0/8` or `::1`.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn cut(s: &str) -> String {
    s.chars().take(20).collect()
}

/// A stream that fails a read once the other side has sent [`MAX_REPLY_BYTES`] since our last
/// write: SMTP answers each command, so nothing honest sends that much unasked.
#[derive(Debug)]
struct Bounded<S> {
    inner: S,
    peer: SocketAddr,
    read_since_write: usize,
}

impl<S> Bounded<S> {
    fn new(inner: S, peer: SocketAddr) -> Self {
        Bounded {
            inner,
            peer,
            read_since_write: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.read_since_write >= MAX_REPLY_BYTES {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "the SMTP server sent more than {} KiB without being asked",
                MAX_REPLY_BYTES / 1024
            ))));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let got = buf.filled().len().saturating_sub(before);
        self.read_since_write = self.read_since_write.saturating_add(got);
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.read_since_write = 0;
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Bounded<tokio::net::TcpStream> {
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

#[allow(deprecated)]
impl AsyncTokioStream for Bounded<Compat<AsyncNetworkStream>> {
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_read_and_refused() {
        let ok = |u: &str| Relay::parse(u).map(|r| (r.host, r.port, r.security));
        assert_eq!(
            ok("smtp://127.0.0.1:2525"),
            Ok(("127.0.0.1".into(), 2525, Security::Plain))
        );
        assert_eq!(
            ok("smtp://u:p@mail.example?tls=required"),
            Ok(("mail.example".into(), 587, Security::StartTls))
        );
        assert_eq!(
            ok("smtps://u:p%40x@[2001:db8::1]"),
            Ok(("2001:db8::1".into(), 465, Security::Implicit))
        );
        assert!(ok("smtp://u:p@localhost:25").is_ok());
        let no_password = Relay::parse("smtp://user@relay.example:25").expect("as lettre: no AUTH");
        assert!(no_password.credentials.is_none());
        assert!(ok("smtp://u:p@127.0.0.1:25").is_ok());
        assert!(ok("smtp://u:p@[::1]:25").is_ok());
        for bad in [
            "smtp://mail.example?tls=opportunistic",
            "smtp://u:secret@mail.example:25",
            "smtp://mail.example?tls=maybe",
            "ftp://mail.example",
            "smtp://:25",
            "smtp://mail.example:99999",
            "mail.example",
        ] {
            let why = Relay::parse(bad).expect_err(bad);
            assert!(!why.contains("secret"), "{why}");
        }
        let r = Relay::parse("smtps://a%20b:p%40ss@mail.example/roster.example").expect("ok");
        let c = r.credentials.expect("credentials");
        assert_eq!(
            c,
            Credentials::new("a b".into(), "p@ss".into()),
            "percent-decoded"
        );
        assert_eq!(r.hello, ClientId::Domain("roster.example".into()));
    }
}
