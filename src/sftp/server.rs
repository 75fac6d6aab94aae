//! The SSH listener: accepts TCP connections under the caps of [`Admission`], runs russh on each
//! with a [`Connection`] handler (see `connection`), ends connections whose login deadline passed
//! or that stayed idle for `idle_timeout_secs`, and closes the sessions of tenants a config reload
//! removed or whose credential it withdrew.
//!
//! Connections enter from a `TcpListener`; a connection over a cap is closed at once, before any
//! byte is read. To end a connection from outside, the listener makes its socket I/O fail (see
//! [`KillSwitch`]) and ends its SFTP tasks: russh may be waiting inside its loop to hand a
//! message to one of their channels, reading nothing from the socket meanwhile, and ending the
//! task drops that channel's queue, which frees russh to see the failed socket. (russh runs each
//! session in a task of its own, which cannot be dropped from here; no other queue of a
//! connection is left unread, see `pending`.) Each login and each further SFTP channel holds a
//! slot in the per-tenant session count (see [`SessionSlots`]); finished uploads leave through
//! the [`UploadSink`].

use super::admission::{Admission, Caps, ConnectionTicket, KillSwitch, Killable};
use super::connection::Connection;
use super::events::UploadSink;
use super::handles::HandleBudget;
use super::hostkeys::HostKey;
use super::usage::UsageRegistry;
use crate::config::{Config, ConfigHandle};
use crate::login::{LoginThrottle, ThrottlePolicy};
use crate::logs::EverySecond;
use russh::keys::{Algorithm, HashAlg};
use russh::{MethodKind, MethodSet};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What every connection shares.
pub struct SftpServer {
    pub(super) config: ConfigHandle,
    host_keys: Vec<russh::keys::PrivateKey>,
    pub(crate) throttle: LoginThrottle,
    pub(super) slots: SessionSlots,
    pub(super) sink: Arc<dyn UploadSink>,
    /// Open SFTP handles per tenant across its sessions (`max_handles_per_tenant`).
    pub(super) handles: HandleBudget,
    /// Each tenant's share of the disk (`max_tenant_bytes`, `max_tenant_entries`).
    pub(super) usage: UsageRegistry,
    admission: Admission,
    /// Open connections allowed: the descriptor limit minus a reserve (see `serve`).
    max_connections: usize,
    pub(super) logins: LiveLogins,
}

impl SftpServer {
    /// `max_connections` bounds open SSH connections (authenticated or not) and `max_handles`
    /// open SFTP handles over all tenants, so that they never take the descriptors the rest of
    /// the server needs.
    pub fn new(
        config: ConfigHandle,
        host_keys: &[HostKey],
        sink: Arc<dyn UploadSink>,
        max_connections: usize,
        max_handles: usize,
    ) -> Arc<SftpServer> {
        Arc::new(SftpServer {
            config,
            host_keys: host_keys.iter().map(|k| k.key.clone()).collect(),
            throttle: LoginThrottle::default(),
            slots: SessionSlots::default(),
            sink,
            handles: HandleBudget::with_server_max(max_handles),
            usage: UsageRegistry::default(),
            admission: Admission::default(),
            max_connections,
            logins: LiveLogins::default(),
        })
    }

    /// The russh settings, from the config in force now.
    fn ssh_config(&self) -> russh::server::Config {
        let cfg = self.config.current();
        // Host-key signatures: Ed25519, then RSA with SHA-2 only (no SHA-1 `ssh-rsa`).
        let preferred = russh::Preferred {
            key: Cow::Owned(vec![
                Algorithm::Ed25519,
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
            ]),
            // russh's defaults plus aes128-gcm, which some clients are configured to insist on.
            cipher: Cow::Owned(vec![
                russh::cipher::CHACHA20_POLY1305,
                russh::cipher::AES_256_GCM,
                russh::cipher::AES_128_GCM,
                russh::cipher::AES_256_CTR,
                russh::cipher::AES_192_CTR,
                russh::cipher::AES_128_CTR,
            ]),
            ..Default::default()
        };
        russh::server::Config {
            server_id: russh::SshId::Standard(Cow::Borrowed("SSH-2.0-Roster")),
            methods: login_methods(),
            auth_rejection_time: Duration::from_millis(300),
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: self.host_keys.clone(),
            window_size: 16 * 1024 * 1024,
            maximum_packet_size: 65535,
            // Messages russh queues for a channel whose requests wait (64 KiB each at most): a
            // client that sends without reading its answers holds 4 MiB here, not 16 (review s25).
            channel_buffer_size: 64,
            event_buffer_size: 64,
            max_auth_attempts: 6,
            // Bounded again here: russh adds it to the clock, which must not overflow.
            inactivity_timeout: Some(Duration::from_secs(
                cfg.server
                    .idle_timeout_secs
                    .min(crate::config::MAX_DURATION_SECS),
            )),
            nodelay: true,
            preferred,
            ..Default::default()
        }
    }

    fn caps(&self) -> Caps {
        let cfg = self.config.current();
        Caps {
            max_connections: self.max_connections,
            max_unauthenticated: cfg.server.max_unauthenticated,
            max_unauthenticated_per_address: cfg.server.max_unauthenticated_per_address,
        }
    }

    /// Accepts connections until `shutdown` fires. Returns when no new sessions will start.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        tokio::spawn(self.clone().close_withdrawn_logins(shutdown.clone()));
        // A flood must not flood the log: each kind is logged at most once a second, counted.
        let (mut refused, mut failed) = (EverySecond::default(), EverySecond::default());
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    tracing::info!("SFTP listener stopped: no new sessions");
                    return;
                }
                accepted = listener.accept() => {
                    match accepted {
                        Ok((socket, peer)) => {
                            keep_alive(&socket);
                            let (stream, kill) = Killable::new(socket);
                            match self.admission.admit(peer.ip(), self.caps(), kill.clone()) {
                                Ok(ticket) => {
                                    let server = self.clone();
                                    tokio::spawn(server.connection(stream, kill, peer, ticket));
                                }
                                // Closed at once: nothing read or written, no descriptor kept.
                                Err(why) => {
                                    if let Some(n) = refused.hit() {
                                        tracing::warn!(%peer, refused = n, "connection refused: {why}");
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            // Out of descriptors (EMFILE/ENFILE) or a connection reset before
                            // accept: back off briefly rather than spin, then go on accepting.
                            if let Some(n) = failed.hit() {
                                tracing::warn!(errors = n, "accept failed: {e}");
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        }
    }

    async fn connection(
        self: Arc<Self>,
        stream: Killable<tokio::net::TcpStream>,
        kill: Arc<KillSwitch>,
        peer: SocketAddr,
        ticket: ConnectionTicket,
    ) {
        let _ = stream.get_ref().set_nodelay(true);
        let _open = crate::metrics::session_open();
        // Ends the connection's SFTP tasks when this returns, however the connection ended.
        let ended = CancellationToken::new();
        let _end_tasks = ended.clone().drop_guard();
        let handler = Connection::new(self.clone(), peer, ticket, kill.clone(), ended.clone());
        let authenticated = handler.authenticated_flag();
        let config = Arc::new(self.ssh_config());
        let limits = {
            let cfg = self.config.current();
            TimeLimits {
                login: Duration::from_secs(cfg.server.auth_timeout_secs.max(1)),
                idle: Duration::from_secs(cfg.server.idle_timeout_secs.max(1)),
            }
        };
        let run = async move {
            match russh::server::run_stream(config, stream, handler).await {
                Ok(session) => {
                    if let Err(e) = session.await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                }
                Err(e) => tracing::debug!(%peer, "SSH handshake failed: {e}"),
            }
        };
        tokio::pin!(run);
        let why = tokio::select! {
            () = &mut run => return,
            why = limits.overdue(&kill, &authenticated) => why,
        };
        match why {
            Overdue::Killed => tracing::debug!(%peer, "connection ended by the server"),
            Overdue::Login => {
                tracing::info!(%peer, secs = limits.login.as_secs(), "login deadline passed; connection closed")
            }
            Overdue::Idle => {
                tracing::info!(%peer, secs = limits.idle.as_secs(), "idle timeout; connection closed")
            }
        }
        kill.kill();
        ended.cancel();
        // russh's task now ends, and drops the socket and the handler with what it holds.
        if tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .is_err()
        {
            tracing::error!(%peer, "an SSH session did not end 10 s after its connection was closed");
        }
    }

    pub(super) fn policy(&self) -> ThrottlePolicy {
        let cfg = self.config.current();
        ThrottlePolicy {
            max_failures: cfg.server.max_auth_failures.max(1),
            block_for: Duration::from_secs(cfg.server.auth_block_secs),
        }
    }

    /// After each reload: end the connections of tenants that were removed or whose login
    /// credential (the password hash or the key used) is no longer in the config.
    async fn close_withdrawn_logins(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut reloads = self.config.subscribe();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                changed = reloads.changed() => if changed.is_err() { return },
            }
            let config = self.config.current();
            for (tenant, handle, kill) in self.logins.withdrawn(&config) {
                tracing::warn!(%tenant, "tenant or its credential was removed from the config; session closed");
                tokio::spawn(async move {
                    let bye = handle.disconnect(
                        russh::Disconnect::ByApplication,
                        "Roster: this login was withdrawn by the administrator".into(),
                        "en".into(),
                    );
                    let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
                    // Give the goodbye a moment to leave, then cut the socket whatever the client does.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    kill.kill();
                });
            }
        }
    }
}

/// The time limits of one connection, from the config in force when it was accepted.
struct TimeLimits {
    /// From accept to a login within the tenant's session limit; keep-alive traffic
    /// (SSH_MSG_IGNORE, ...) does not extend it.
    login: Duration,
    /// Without a byte moving on the socket either way (`idle_timeout_secs`).
    idle: Duration,
}

/// Why the listener ends a connection.
enum Overdue {
    /// Its [`KillSwitch`] was pulled (reload, or its pre-login slot was given to a newcomer).
    Killed,
    Login,
    Idle,
}

impl TimeLimits {
    /// Returns when the connection must end. russh's own inactivity timeout does this too, but
    /// only while its loop runs: it stops while russh waits on a full channel queue.
    async fn overdue(&self, kill: &KillSwitch, authenticated: &AtomicBool) -> Overdue {
        loop {
            let login_left = if authenticated.load(Ordering::SeqCst) {
                Duration::MAX
            } else {
                self.login.saturating_sub(kill.age())
            };
            let idle_left = self.idle.saturating_sub(kill.idle_for());
            if login_left.is_zero() {
                return Overdue::Login;
            }
            if idle_left.is_zero() {
                return Overdue::Idle;
            }
            // Then look again: a login, or bytes moving, push the limits back.
            tokio::select! {
                () = kill.pulled() => return Overdue::Killed,
                () = tokio::time::sleep(login_left.min(idle_left)) => {}
            }
        }
    }
}

/// The methods offered at every step: a wrong password must not take `password` off the list
/// (OpenSSH would stop asking); only a block does.
pub(super) fn login_methods() -> MethodSet {
    MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..])
}

/// What a connection logged in with, to check again after a reload.
pub(super) enum Credential {
    /// The PHC hash the password was verified against.
    Password(String),
    Key(russh::keys::PublicKey),
}

impl Credential {
    fn still_valid(&self, config: &Config, tenant: &str) -> bool {
        let Some(t) = config.tenant(tenant) else {
            return false;
        };
        match self {
            Credential::Password(hash) => t.password_hash.as_deref() == Some(hash.as_str()),
            Credential::Key(key) => crate::login::key_is_authorized(t, key),
        }
    }
}

struct LiveLogin {
    tenant: String,
    credential: Credential,
    handle: russh::server::Handle,
    kill: Arc<KillSwitch>,
}

/// The logged-in connections, so that a reload can end those it withdrew.
#[derive(Default)]
pub(super) struct LiveLogins {
    next: AtomicU64,
    live: Arc<Mutex<HashMap<u64, LiveLogin>>>,
}

impl LiveLogins {
    /// Registers a login until the returned entry is dropped; None (nothing registered) when
    /// the config in force now, read after the entry was added, no longer allows
    /// `credential`. The check was made against an earlier config; a reload that landed
    /// in between ran its sweep ([`LiveLogins::withdrawn`]) before this login was listed, so
    /// only this second look after listing it can refuse it (review s27). A reload after the
    /// look finds it listed.
    pub(super) fn register(
        &self,
        tenant: &str,
        credential: Credential,
        handle: russh::server::Handle,
        kill: Arc<KillSwitch>,
        config: &ConfigHandle,
    ) -> Option<LiveEntry> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let login = LiveLogin {
            tenant: tenant.to_string(),
            credential,
            handle,
            kill,
        };
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, login);
        let entry = LiveEntry {
            id,
            live: self.live.clone(),
        };
        let now = config.current();
        let allowed = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .is_some_and(|l| l.credential.still_valid(&now, tenant));
        // Dropping the entry unlists it.
        allowed.then_some(entry)
    }

    /// Removes and returns the logins that `config` no longer allows.
    fn withdrawn(&self, config: &Config) -> Vec<(String, russh::server::Handle, Arc<KillSwitch>)> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<u64> = live
            .iter()
            .filter(|(_, l)| !l.credential.still_valid(config, &l.tenant))
            .map(|(id, _)| *id)
            .collect();
        gone.iter()
            .filter_map(|id| live.remove(id))
            .map(|l| (l.tenant, l.handle, l.kill))
            .collect()
    }
}

/// A registered login; dropping it (the connection ended) unregisters it.
pub(super) struct LiveEntry {
    id: u64,
    live: Arc<Mutex<HashMap<u64, LiveLogin>>>,
}

impl Drop for LiveEntry {
    fn drop(&mut self) {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// How many sessions each tenant has open: its logged-in connections, plus the SFTP channels
/// open beside the first on one connection.
#[derive(Default)]
pub(super) struct SessionSlots {
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl SessionSlots {
    /// One of the tenant's `max` slots, or `None` when all are taken.
    pub(super) fn try_take(&self, tenant: &str, max: usize) -> Option<SessionSlot> {
        let mut map = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(tenant.to_string()).or_insert(0);
        if *n >= max {
            if *n == 0 {
                map.remove(tenant);
            }
            return None;
        }
        *n += 1;
        Some(SessionSlot {
            tenant: tenant.to_string(),
            sessions: self.counts.clone(),
        })
    }
}

/// Holds one of a tenant's `max_sessions_per_tenant` slots until dropped.
pub(super) struct SessionSlot {
    tenant: String,
    sessions: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut map = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.tenant);
            }
        }
    }
}

/// Kernel keepalive probes on an accepted connection: after [`KEEPALIVE_IDLE`] without a
/// packet from the client, a probe every [`KEEPALIVE_INTERVAL`], and after [`KEEPALIVE_PROBES`]
/// unanswered the connection fails. So a client whose machine lost power or whose network went
/// away (no FIN, no RST) is noticed in about a minute; until now its session, its session slot
/// and a file it was uploading (refused to others as "being uploaded by another session") were
/// held for `idle_timeout_secs` (600 s). A live client's kernel answers the probes without
/// involving the client program, so they neither keep an idle session open past
/// `idle_timeout_secs` (they move no SSH bytes) nor cut a slow one; a client process that is
/// frozen (SIGSTOP) still has a kernel that answers, so it keeps its session until then (review
/// s18 clients F5). SSH-level keepalives would notice that too, but their replies count as
/// traffic and would keep idle sessions open for ever. A failure to set them is logged, not
/// fatal.
pub fn keep_alive(socket: &tokio::net::TcpStream) {
    let probes = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(e) = socket2::SockRef::from(socket).set_tcp_keepalive(&probes) {
        tracing::debug!("cannot set TCP keepalive on an SFTP connection: {e}");
    }
}

/// Silence on a connection before the first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Time between unanswered probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes after which the connection fails.
pub const KEEPALIVE_PROBES: u32 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_get_keepalive_probes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        keep_alive(&socket);
        let s = socket2::SockRef::from(&socket);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(s.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(s.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
    }
}
