//! The SSH listener: accepts TCP connections, runs russh on each, authenticates the tenant
//! (see `auth`), refuses shells/exec/pty, and runs the SFTP subsystem (see `wire`) inside the
//! tenant's [`Jail`].
//!
//! Connections enter from a `TcpListener`; finished uploads leave through the [`UploadSink`].
//! Each connection reads the config in force when it starts (so reloads apply to new sessions)
//! and holds a slot in the per-tenant session count until it ends.

use super::auth::{self, Gate, LoginThrottle, ThrottlePolicy};
use super::events::{InProgress, UploadSink};
use super::handles::HandleBudget;
use super::hostkeys::HostKey;
use super::jail::Jail;
use super::requests::{SessionContext, SftpSession};
use super::wire;
use crate::config::ConfigHandle;
use russh::keys::{Algorithm, HashAlg};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;

/// What every connection shares.
pub struct SftpServer {
    config: ConfigHandle,
    host_keys: Vec<russh::keys::PrivateKey>,
    throttle: LoginThrottle,
    sessions: Arc<Mutex<HashMap<String, usize>>>,
    /// Open SFTP handles per tenant across its sessions (`max_handles_per_tenant`).
    handles: HandleBudget,
    sink: Arc<dyn UploadSink>,
}

impl SftpServer {
    pub fn new(
        config: ConfigHandle,
        host_keys: &[HostKey],
        sink: Arc<dyn UploadSink>,
    ) -> Arc<SftpServer> {
        Arc::new(SftpServer {
            config,
            host_keys: host_keys.iter().map(|k| k.key.clone()).collect(),
            throttle: LoginThrottle::default(),
            sessions: Arc::new(Mutex::new(HashMap::new())),
            handles: HandleBudget::default(),
            sink,
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
            methods: MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..]),
            auth_rejection_time: Duration::from_millis(300),
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: self.host_keys.clone(),
            window_size: 16 * 1024 * 1024,
            maximum_packet_size: 65535,
            channel_buffer_size: 256,
            event_buffer_size: 64,
            max_auth_attempts: 6,
            inactivity_timeout: Some(Duration::from_secs(cfg.server.idle_timeout_secs)),
            nodelay: true,
            preferred,
            ..Default::default()
        }
    }

    /// Accepts connections until `shutdown` fires. Returns when no new sessions will start.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    tracing::info!("SFTP listener stopped: no new sessions");
                    return;
                }
                accepted = listener.accept() => {
                    match accepted {
                        Ok((socket, peer)) => {
                            let server = self.clone();
                            tokio::spawn(async move { server.connection(socket, peer).await });
                        }
                        Err(e) => {
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }
    }

    async fn connection(self: Arc<Self>, socket: tokio::net::TcpStream, peer: SocketAddr) {
        let _ = socket.set_nodelay(true);
        let _open = crate::metrics::session_open();
        let handler = Connection {
            server: self.clone(),
            peer,
            tenant: None,
            slot: None,
            over_limit: None,
            channels: HashMap::new(),
        };
        let config = Arc::new(self.ssh_config());
        match russh::server::run_stream(config, socket, handler).await {
            Ok(session) => {
                if let Err(e) = session.await {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
            }
            Err(e) => tracing::debug!(%peer, "SSH handshake failed: {e}"),
        }
    }

    fn policy(&self) -> ThrottlePolicy {
        let cfg = self.config.current();
        ThrottlePolicy {
            max_failures: cfg.server.max_auth_failures.max(1),
            block_for: Duration::from_secs(cfg.server.auth_block_secs),
        }
    }
}

/// Holds one of a tenant's `max_sessions_per_tenant` slots until dropped.
struct SessionSlot {
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

/// One SSH connection.
struct Connection {
    server: Arc<SftpServer>,
    peer: SocketAddr,
    tenant: Option<String>,
    slot: Option<SessionSlot>,
    /// Logged in while the tenant had `max_sessions_per_tenant` open: the SFTP request is refused
    /// with this sentence (a refused login would read "wrong password" to the person).
    over_limit: Option<String>,
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl Connection {
    /// Login accepted: take a session slot, or refuse when the tenant has too many.
    fn admit(&mut self, user: &str, method: &str) -> Auth {
        let max = self.server.config.current().server.max_sessions_per_tenant;
        let mut map = self
            .server
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(user.to_string()).or_insert(0);
        if *n >= max {
            tracing::warn!(tenant = user, peer = %self.peer, max, "session refused: too many sessions for this tenant");
            self.over_limit = Some(format!(
                "Roster: {user} already has {max} sessions open, the most allowed. Close one and try again.\r\n"
            ));
            self.tenant = Some(user.to_string());
            return Auth::Accept;
        }
        *n += 1;
        drop(map);
        self.slot = Some(SessionSlot {
            tenant: user.to_string(),
            sessions: self.server.sessions.clone(),
        });
        self.tenant = Some(user.to_string());
        self.server.throttle.succeeded(Some(self.peer.ip()));
        crate::metrics::login_ok();
        tracing::info!(tenant = user, peer = %self.peer, method, "login");
        Auth::Accept
    }

    fn blocked(&self, user: Option<&str>) -> bool {
        match self.server.throttle.gate(Some(self.peer.ip()), user) {
            Gate::Open => false,
            Gate::Blocked(why) => {
                crate::metrics::login_blocked();
                tracing::warn!(peer = %self.peer, "login refused: {why}");
                true
            }
        }
    }

    fn refuse_channel_request(
        &self,
        channel: ChannelId,
        what: &str,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        tracing::info!(tenant = ?self.tenant, peer = %self.peer, "refused a {what} request: Roster only serves SFTP");
        session.channel_failure(channel)
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.blocked(Some(user)) {
            return Ok(Auth::reject());
        }
        let config = self.server.config.current();
        if auth::verify_password(&config, user, password).await {
            return Ok(self.admit(user, "password"));
        }
        let delay = self
            .server
            .throttle
            .failed(self.server.policy(), Some(self.peer.ip()), user);
        crate::metrics::login_failed();
        tracing::warn!(tenant = user, peer = %self.peer, known = config.tenant(user).is_some(), "failed password login");
        tokio::time::sleep(delay).await;
        Ok(Auth::reject())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.blocked(None) {
            return Ok(Auth::reject());
        }
        let config = self.server.config.current();
        let ok = config
            .tenant(user)
            .is_some_and(|t| auth::key_is_authorized(t, offer.public_key));
        Ok(if ok { Auth::Accept } else { Auth::reject() })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let config = self.server.config.current();
        if config
            .tenant(user)
            .is_some_and(|t| auth::key_is_authorized(t, key.public_key))
        {
            return Ok(self.admit(user, "publickey"));
        }
        Ok(Auth::reject())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(tenant), true) = (self.tenant.clone(), name == "sftp") else {
            return self.refuse_channel_request(id, &format!("subsystem {name:?}"), session);
        };
        let Some(channel) = self.channels.remove(&id) else {
            return session.channel_failure(id);
        };
        if let Some(msg) = self.over_limit.clone() {
            // Said on the channel's stderr (OpenSSH prints it), then the channel ends.
            session.channel_success(id)?;
            let _ = channel.extended_data(1, msg.as_bytes()).await;
            let _ = channel.exit_status(1).await;
            let _ = channel.eof().await;
            let _ = channel.close().await;
            return Ok(());
        }
        let config = self.server.config.current();
        if config.tenant(&tenant).is_none() {
            tracing::warn!(%tenant, "tenant was removed from the config; SFTP refused");
            return session.channel_failure(id);
        }
        let jail = match Jail::new(&config.tenant_home(&tenant), false) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(%tenant, "cannot open the tenant folder: {e}");
                return session.channel_failure(id);
            }
        };
        let sftp = SftpSession::new(SessionContext {
            tenant: tenant.clone(),
            jail,
            max_upload_bytes: config.server.max_upload_bytes,
            sink: self.server.sink.clone(),
            in_progress: InProgress::new(&config.server.data_dir, &tenant),
            handles: (self.server.handles)
                .for_tenant(&tenant, config.server.max_handles_per_tenant),
        });
        session.channel_success(id)?;
        tokio::spawn(async move {
            // Reads, writes, exit-status, EOF and CLOSE all go through the channel's own halves,
            // so they leave in order: `sftp -b` and `scp` exit 1 unless they see the exit status
            // before the close.
            let (mut read_half, write_half) = channel.split();
            let reader = read_half.make_reader();
            let writer = write_half.make_writer();
            if let Err(e) = wire::serve(reader, writer, sftp).await {
                tracing::debug!(%tenant, "SFTP stream ended: {e}");
            }
            let _ = write_half.exit_status(0).await;
            let _ = write_half.eof().await;
            let _ = write_half.close().await;
        });
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel_request(id, "command (exec)", session)?;
        session.close(id)
    }

    async fn shell_request(
        &mut self,
        id: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel_request(id, "shell", session)?;
        session.close(id)
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        id: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel_request(id, "terminal (pty)", session)
    }

    async fn channel_close(
        &mut self,
        id: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&id);
        Ok(())
    }
}
