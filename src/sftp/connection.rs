//! One SSH connection as russh sees it: authenticates the tenant (see `auth`), refuses
//! shells/exec/pty and every other channel request with an answer, and runs the SFTP subsystem
//! (see `wire`) inside the tenant's [`Jail`].
//!
//! Requests enter from russh's session task; each SFTP channel leaves as a task of its own that
//! holds one of the tenant's session slots until the channel ends. A connection may hold at most
//! [`MAX_CHANNELS_PER_CONNECTION`] open channels. It reads the config in force when a request
//! arrives (so reloads apply to new sessions; `server` closes withdrawn ones).

use super::admission::{ConnectionTicket, KillSwitch};
use super::jail::Jail;
use super::requests::{SessionContext, SftpSession};
use super::server::{login_methods, Credential, LiveEntry, SessionSlot, SftpServer};
use super::uploads::InProgress;
use super::wire;
use crate::login::{self as auth, Gate};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, Sig};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Channels one connection may have open at once (OpenSSH's `MaxSessions` default is 10).
pub const MAX_CHANNELS_PER_CONNECTION: usize = 10;

/// One SSH connection.
pub(super) struct Connection {
    server: Arc<SftpServer>,
    peer: SocketAddr,
    ticket: ConnectionTicket,
    kill: Arc<KillSwitch>,
    authenticated: Arc<AtomicBool>,
    tenant: Option<String>,
    /// How the tenant logged in, until `auth_succeeded` registers the login.
    credential: Option<Credential>,
    /// The registered login, held until the connection ends.
    _live: Option<LiveEntry>,
    /// The slot taken at login; the first SFTP channel uses it, later ones take their own.
    slot: Option<SessionSlot>,
    /// Logged in while the tenant had `max_sessions_per_tenant` open: the SFTP request is refused
    /// with this sentence (a refused login would read "wrong password" to the person).
    over_limit: Option<String>,
    /// Channels opened and not yet given to an SFTP task.
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// Every channel open on this connection (closed by the client or not yet).
    open: HashSet<ChannelId>,
}

impl Connection {
    pub(super) fn new(
        server: Arc<SftpServer>,
        peer: SocketAddr,
        ticket: ConnectionTicket,
        kill: Arc<KillSwitch>,
    ) -> Connection {
        Connection {
            server,
            peer,
            ticket,
            kill,
            authenticated: Arc::new(AtomicBool::new(false)),
            tenant: None,
            credential: None,
            _live: None,
            slot: None,
            over_limit: None,
            channels: HashMap::new(),
            open: HashSet::new(),
        }
    }

    /// True once the login succeeded (the listener's login deadline reads it).
    pub(super) fn authenticated_flag(&self) -> Arc<AtomicBool> {
        self.authenticated.clone()
    }

    /// Login accepted: take a session slot, or mark the connection over the limit.
    fn admit(&mut self, user: &str, method: &str, credential: Credential) -> Auth {
        let max = self.server.config.current().server.max_sessions_per_tenant;
        self.tenant = Some(user.to_string());
        self.credential = Some(credential);
        self.authenticated.store(true, Ordering::SeqCst);
        self.ticket.authenticated();
        self.server.throttle.succeeded(Some(self.peer.ip()), user);
        self.slot = self.server.slots.try_take(user, max);
        if self.slot.is_none() {
            tracing::warn!(tenant = user, peer = %self.peer, max, "session refused: too many sessions for this tenant");
            self.over_limit = Some(too_many_sessions(user, max));
            return Auth::Accept;
        }
        crate::metrics::login_ok();
        tracing::info!(tenant = user, peer = %self.peer, method, "login");
        Auth::Accept
    }

    async fn blocked(&self, user: Option<&str>) -> bool {
        match self.server.throttle.check(Some(self.peer.ip()), user).await {
            Gate::Open => false,
            Gate::Blocked(why) => {
                crate::metrics::login_blocked();
                tracing::warn!(peer = %self.peer, "login refused: {why}");
                true
            }
        }
    }

    /// Answers a request Roster does not serve with a failure (sent only when the client asked
    /// for a reply), so the client never waits for one.
    fn refuse_channel_request(
        &self,
        channel: ChannelId,
        what: &str,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        tracing::info!(tenant = ?self.tenant, peer = %self.peer, "refused a {what} request: Roster only serves SFTP");
        session.channel_failure(channel)
    }

    /// This channel's session slot: the login's, or a fresh one of the tenant's.
    fn channel_slot(&mut self, tenant: &str, max: usize) -> Option<SessionSlot> {
        self.slot
            .take()
            .or_else(|| self.server.slots.try_take(tenant, max))
    }
}

fn too_many_sessions(tenant: &str, max: usize) -> String {
    format!(
        "Roster: {tenant} already has {max} sessions open, the most allowed. Close one and try again.\r\n"
    )
}

/// Says `msg` on the channel's stderr (OpenSSH prints it), then ends the channel.
async fn refuse_on_stderr(channel: Channel<Msg>, msg: &str) {
    let _ = channel.extended_data(1, msg.as_bytes()).await;
    let _ = channel.exit_status(1).await;
    let _ = channel.eof().await;
    let _ = channel.close().await;
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        // Counted as in flight before the check (login.rs), so concurrent guesses get no more
        // checks than max_auth_failures; dropped unfinished, it counts as a failure.
        let attempt = match self
            .server
            .throttle
            .begin(self.server.policy(), Some(self.peer.ip()), Some(user))
            .await
        {
            Ok(attempt) => attempt,
            Err(refusal) => {
                crate::metrics::login_blocked();
                tracing::warn!(peer = %self.peer, "login refused: {}", refusal.reason());
                return Ok(Auth::reject());
            }
        };
        let config = self.server.config.current();
        if auth::verify_password(&config, user, password).await {
            let hash = config
                .tenant(user)
                .and_then(|t| t.password_hash.clone())
                .unwrap_or_default();
            attempt.verified(); // admit clears this tenant's failures
            return Ok(self.admit(user, "password", Credential::Password(hash)));
        }
        let delay = attempt.failed().await;
        crate::metrics::login_failed();
        tracing::warn!(tenant = user, peer = %self.peer, known = config.tenant(user).is_some(), "failed password login");
        tokio::time::sleep(delay).await;
        if self.server.throttle.gate(Some(self.peer.ip()), Some(user)) != Gate::Open {
            // The block applies now: russh takes `password` off the methods offered.
            return Ok(Auth::reject());
        }
        Ok(Auth::Reject {
            proceed_with_methods: Some(login_methods()),
            partial_success: false,
        })
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.blocked(None).await {
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
            let credential = Credential::Key(key.public_key.clone());
            return Ok(self.admit(user, "publickey", credential));
        }
        Ok(Auth::reject())
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        if let (Some(tenant), Some(credential)) = (self.tenant.clone(), self.credential.take()) {
            self._live = Some(self.server.logins.register(
                &tenant,
                credential,
                session.handle(),
                self.kill.clone(),
            ));
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.open.len() >= MAX_CHANNELS_PER_CONNECTION {
            tracing::warn!(tenant = ?self.tenant, peer = %self.peer, max = MAX_CHANNELS_PER_CONNECTION, "channel refused: too many channels on one connection");
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        self.open.insert(channel.id());
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
            session.channel_success(id)?;
            refuse_on_stderr(channel, &msg).await;
            return Ok(());
        }
        let config = self.server.config.current();
        if config.tenant(&tenant).is_none() {
            tracing::warn!(%tenant, "tenant was removed from the config; SFTP refused");
            return session.channel_failure(id);
        }
        let max = config.server.max_sessions_per_tenant;
        let Some(slot) = self.channel_slot(&tenant, max) else {
            tracing::warn!(%tenant, peer = %self.peer, max, "SFTP channel refused: too many sessions for this tenant");
            session.channel_success(id)?;
            refuse_on_stderr(channel, &too_many_sessions(&tenant, max)).await;
            return Ok(());
        };
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
            // The slot is held for as long as this channel serves SFTP.
            let _slot = slot;
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

    // The default answers nothing, so it is overridden to refuse at once.
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

    async fn x11_request(
        &mut self,
        id: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel_request(id, "X11 forwarding", session)
    }

    async fn env_request(
        &mut self,
        id: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Not logged: OpenSSH sends LANG and LC_* on every connection.
        session.channel_failure(id)
    }

    async fn window_change_request(
        &mut self,
        id: ChannelId,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(id)
    }

    async fn signal(
        &mut self,
        id: ChannelId,
        _signal: Sig,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(id)
    }

    async fn channel_close(
        &mut self,
        id: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&id);
        self.open.remove(&id);
        Ok(())
    }
}
