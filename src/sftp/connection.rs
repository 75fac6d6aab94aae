//! One SSH connection as russh sees it: authenticates the tenant (see `auth`), refuses
//! shells/exec/pty and every other channel request with an answer, and runs the SFTP subsystem
//! (see `wire`) inside the tenant's [`Jail`].
//!
//! Requests enter from russh's session task; each SFTP channel leaves as a task of its own, ended
//! when the connection ends. A login takes one of the tenant's session slots and holds it until
//! the connection ends, so a tenant has at most `max_sessions_per_tenant` logged-in connections;
//! the connection's SFTP channels use that slot one at a time, and each further SFTP channel open
//! at once takes a slot of its own. A login over the limit is told why on its SFTP channel and
//! disconnected; until then it counts as not logged in (see [`Connection::admit`]). A session
//! channel waits in `pending` until it asks for SFTP. A connection may hold at most
//! [`MAX_CHANNELS_PER_CONNECTION`] open channels (counted until closed by either side, see
//! `pending::OpenChannels`). It reads the config in force when a request arrives (so reloads
//! apply to new sessions; `server` closes withdrawn ones).
//!
//! Client text in log lines is bounded: a login name goes to the throttle as
//! `login::throttle_name` and to the log as `login::log_name`. Lines a client can repeat at
//! will are counted, not written each time: refused pty/X11/shell/exec/subsystem requests are
//! logged once per connection and summed up when it ends; refusals of a blocked address or
//! tenant at most once a second across connections.

use super::admission::{ConnectionTicket, KillSwitch};
use super::jail::Jail;
use super::login_answers::{key_algorithm_allowed, log_refused_login, refused_unchecked};
use super::pending::{OpenChannels, OpenGuard, Pending};
use super::requests::{SessionContext, SftpSession};
use super::server::{login_methods, Credential, LiveEntry, SessionSlot, SftpServer};
use super::uploads::InProgress;
use super::usage::UsageLimits;
use super::wire;
use crate::login::{self as auth, Gate};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, Sig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a client asking for a shell or a command is told.
pub const SFTP_ONLY: &str = "Roster serves SFTP only: no shell and no commands. Use sftp, or scp \
     without -O (scp -O runs a command on the server).\r\n";

/// Channels one connection may have open at once (OpenSSH's `MaxSessions` default is 10).
pub const MAX_CHANNELS_PER_CONNECTION: usize = 10;

/// One SSH connection.
pub(super) struct Connection {
    server: Arc<SftpServer>,
    peer: SocketAddr,
    ticket: ConnectionTicket,
    kill: Arc<KillSwitch>,
    /// Cancelled when the connection ends: its SFTP tasks stop (a reply waiting for window would
    /// otherwise wait forever).
    ended: CancellationToken,
    authenticated: Arc<AtomicBool>,
    tenant: Option<String>,
    /// How the tenant logged in, until `auth_succeeded` registers the login.
    credential: Option<Credential>,
    /// The registered login, held until the connection ends.
    _live: Option<LiveEntry>,
    /// The slot taken at login, held until the connection ends.
    slot: Option<LoginSlot>,
    /// Logged in while the tenant had `max_sessions_per_tenant` open: the SFTP request is refused
    /// with this sentence (a refused login would read "wrong password" to the person).
    over_limit: Option<String>,
    /// Channels opened and not yet given to an SFTP task.
    channels: HashMap<ChannelId, Pending>,
    /// Every channel open on this connection.
    open: OpenChannels,
    /// Channel requests refused so far (only the first is logged; the sum when it ends).
    refused_requests: u64,
    /// Whether a key offer of this connection has asked the shared login counters already
    /// (once per connection: `LoginThrottle::check_key_offer`).
    shared_asked: bool,
}

impl Connection {
    pub(super) fn new(
        server: Arc<SftpServer>,
        peer: SocketAddr,
        ticket: ConnectionTicket,
        kill: Arc<KillSwitch>,
        ended: CancellationToken,
    ) -> Connection {
        Connection {
            server,
            peer,
            ticket,
            kill,
            ended,
            authenticated: Arc::new(AtomicBool::new(false)),
            tenant: None,
            credential: None,
            _live: None,
            slot: None,
            over_limit: None,
            channels: HashMap::new(),
            open: OpenChannels::default(),
            refused_requests: 0,
            shared_asked: false,
        }
    }

    /// True once the login succeeded within the tenant's session limit (the listener's login
    /// deadline reads it).
    pub(super) fn authenticated_flag(&self) -> Arc<AtomicBool> {
        self.authenticated.clone()
    }

    /// Login accepted: take a session slot, or mark the connection over the limit. Over the limit,
    /// the login is accepted only so that the SFTP request can say why it is refused: the
    /// connection keeps counting as not logged in (its pre-login connection slots, and the login
    /// deadline that ends it), and is disconnected once it has been told.
    fn admit(&mut self, user: &str, method: &str, credential: Credential) -> Auth {
        let max = self.server.config.current().server.max_sessions_per_tenant;
        self.tenant = Some(user.to_string());
        self.credential = Some(credential);
        self.server.throttle.succeeded(Some(self.peer.ip()), user);
        let Some(slot) = self.server.slots.try_take(user, max) else {
            tracing::warn!(tenant = user, peer = %self.peer, max, "session refused: too many sessions for this tenant");
            self.over_limit = Some(too_many_sessions(user, max));
            return Auth::Accept;
        };
        self.slot = Some(LoginSlot::new(slot));
        self.authenticated.store(true, Ordering::SeqCst);
        self.ticket.authenticated();
        crate::metrics::login_ok();
        tracing::info!(tenant = user, peer = %self.peer, method, "login");
        Auth::Accept
    }

    /// Whether this address is blocked, for a key offer (the shared counters asked once per
    /// connection).
    async fn blocked(&mut self) -> bool {
        let throttle = &self.server.throttle;
        match throttle
            .check_key_offer(Some(self.peer.ip()), &mut self.shared_asked)
            .await
        {
            Gate::Open => false,
            Gate::Blocked(why) => {
                log_refused_login(self.peer, &why);
                true
            }
        }
    }

    /// Answers a request Roster does not serve with a failure (sent only when the client asked
    /// for a reply), so the client never waits for one.
    /// Only the connection's first refusal is logged (a client can repeat them without end);
    /// the number is logged when the connection ends.
    fn refuse_channel_request(
        &mut self,
        channel: ChannelId,
        what: &str,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        self.count_refusal(what);
        session.channel_failure(channel)
    }

    /// Counts a refused request; the first of the connection is logged, the rest summed up
    /// when it ends.
    fn count_refusal(&mut self, what: &str) {
        self.refused_requests += 1;
        if self.refused_requests == 1 {
            tracing::info!(tenant = ?self.tenant, peer = %self.peer, "refused a {what} request: Roster only serves SFTP (further refusals on this connection are counted)");
        }
    }

    /// This channel's session slot: the login's if no other channel uses it, or a fresh one of
    /// the tenant's.
    fn channel_slot(&mut self, tenant: &str, max: usize) -> Option<ChannelSlot> {
        if let Some(lent) = self.slot.as_ref().and_then(LoginSlot::lend) {
            return Some(ChannelSlot::Login(lent));
        }
        self.server
            .slots
            .try_take(tenant, max)
            .map(ChannelSlot::Own)
    }

    /// Refuses a shell or a command so that the client shows why: the request is accepted, then
    /// [`SFTP_ONLY`] goes to the channel's stderr with exit status 1 and the channel closes.
    /// A refused request made OpenSSH print only "exec request failed on channel 0", which is
    /// all legacy `scp -O` users saw (review s19 docs F13). Counted and logged as every refusal.
    async fn refuse_in_words(
        &mut self,
        id: ChannelId,
        what: &str,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let Some(pending) = self.channels.remove(&id) else {
            return self.refuse_and_close(id, what, session);
        };
        let Some((channel, open)) = pending.claim().await else {
            // Closed by the client, or by its grace period.
            return session.channel_failure(id);
        };
        self.count_refusal(what);
        session.channel_success(id)?;
        refuse_on_stderr(channel, SFTP_ONLY.into(), None, self.ended.clone(), open);
        Ok(())
    }

    /// Refuses a request that leaves the channel useless, and closes the channel.
    fn refuse_and_close(
        &mut self,
        channel: ChannelId,
        what: &str,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        self.refuse_channel_request(channel, what, session)?;
        self.channels.remove(&channel);
        // russh forgets a channel the server closes first, so it is uncounted here.
        self.open.remove(channel);
        session.close(channel)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.refused_requests > 1 {
            tracing::info!(tenant = ?self.tenant, peer = %self.peer, refused = self.refused_requests, "connection ended: channel requests refused on it in all");
        }
    }
}

/// The session slot a login holds until its connection ends, lent to one SFTP channel at a time.
struct LoginSlot {
    _slot: SessionSlot,
    lent: Arc<AtomicBool>,
}

impl LoginSlot {
    fn new(slot: SessionSlot) -> LoginSlot {
        LoginSlot {
            _slot: slot,
            lent: Arc::new(AtomicBool::new(false)),
        }
    }

    fn lend(&self) -> Option<Lent> {
        let free = !self.lent.swap(true, Ordering::SeqCst);
        free.then(|| Lent(self.lent.clone()))
    }
}

/// The loan of a [`LoginSlot`], given back when dropped.
struct Lent(Arc<AtomicBool>);

impl Drop for Lent {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// What an SFTP channel holds while it serves: its connection's login slot, or one of its own.
#[allow(dead_code)] // held only to be dropped when the channel ends
enum ChannelSlot {
    Login(Lent),
    Own(SessionSlot),
}

fn too_many_sessions(tenant: &str, max: usize) -> String {
    format!(
        "Roster: {tenant} already has {max} sessions open, the most allowed. Close one and try again.\r\n"
    )
}

/// Says `msg` on the channel's stderr (OpenSSH prints it), then ends the channel, and then the
/// connection if `disconnect` is given. In a task of its own, ended with the connection: these
/// messages wait for the client's window and for room in russh's queue, which russh's loop (the
/// caller) drains.
fn refuse_on_stderr(
    channel: Channel<Msg>,
    msg: String,
    disconnect: Option<russh::server::Handle>,
    ended: CancellationToken,
    open: OpenGuard,
) {
    // Nothing is read from it any more: russh drops what the client sends instead of waiting.
    let (read, write) = channel.split();
    drop(read);
    tokio::spawn(async move {
        let say = async {
            let _ = write.extended_data(1, msg.as_bytes()).await;
            let _ = write.exit_status(1).await;
            let _ = write.eof().await;
            let _ = write.close().await;
            if let Some(handle) = disconnect {
                let why = msg.trim_end().to_string();
                let _ = handle
                    .disconnect(russh::Disconnect::ByApplication, why, "en".into())
                    .await;
            }
        };
        tokio::select! {
            () = say => {}
            () = ended.cancelled() => {}
        }
        drop(open);
    });
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        // Counted as in flight before the check (login.rs), so concurrent guesses get no more
        // checks than max_auth_failures; dropped unfinished, it counts as a failure.
        // A name that is no valid tenant id is counted under one key (`login::throttle_name`).
        let name = auth::throttle_name(user);
        let attempt = match self
            .server
            .throttle
            .begin(self.server.policy(), Some(self.peer.ip()), Some(name))
            .await
        {
            Ok(attempt) => attempt,
            Err(refusal) => {
                log_refused_login(self.peer, refusal.reason());
                return Ok(refused_unchecked(&refusal));
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
        tracing::warn!(tenant = %auth::log_name(user), peer = %self.peer, known = config.tenant(user).is_some(), "failed password login");
        tokio::time::sleep(delay).await;
        if self.server.throttle.gate(Some(self.peer.ip()), Some(name)) != Gate::Open {
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
        if !key_algorithm_allowed(offer.algorithm) {
            return Ok(Auth::reject());
        }
        if self.blocked().await {
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
            self._live = self.server.logins.register(
                &tenant,
                credential,
                session.handle(),
                self.kill.clone(),
                &self.server.config,
            );
            if self._live.is_none() {
                // A reload withdrew the password or key while it was being checked.
                tracing::warn!(%tenant, peer = %self.peer, "login refused: its credential was withdrawn by a reload during the check");
                self.kill.kill();
                return Err(russh::Error::Disconnect);
            }
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
        let open = self.open.open(channel.id());
        self.channels
            .insert(channel.id(), Pending::hold(channel, open));
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
            let what = format!("subsystem {:?}", crate::logs::cut(name, 64));
            return self.refuse_and_close(id, &what, session);
        };
        let Some(pending) = self.channels.remove(&id) else {
            return session.channel_failure(id);
        };
        let Some((channel, open)) = pending.claim().await else {
            // Closed by the client, or by its grace period.
            return session.channel_failure(id);
        };
        if let Some(msg) = self.over_limit.clone() {
            session.channel_success(id)?;
            // This login holds no session slot: it is told why, then disconnected.
            let disconnect = Some(session.handle());
            refuse_on_stderr(channel, msg, disconnect, self.ended.clone(), open);
            return Ok(());
        }
        let config = self.server.config.current();
        if config.tenant(&tenant).is_none() {
            tracing::warn!(%tenant, "tenant was removed from the config; SFTP refused");
            return self.refuse_and_close(id, "subsystem \"sftp\" of a removed tenant", session);
        }
        let max = config.server.max_sessions_per_tenant;
        let Some(slot) = self.channel_slot(&tenant, max) else {
            tracing::warn!(%tenant, peer = %self.peer, max, "SFTP channel refused: too many sessions for this tenant");
            session.channel_success(id)?;
            let msg = too_many_sessions(&tenant, max);
            refuse_on_stderr(channel, msg, None, self.ended.clone(), open);
            return Ok(());
        };
        let jail = match Jail::tenant_home(&config.tenant_home(&tenant)) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(%tenant, "cannot open the tenant folder: {e}");
                session.channel_failure(id)?;
                drop(open);
                return session.close(id);
            }
        };
        let sftp = SftpSession::new(SessionContext {
            tenant: tenant.clone(),
            jail,
            max_upload_bytes: config.server.max_upload_bytes,
            min_free_bytes: config.server.min_free_bytes,
            usage: self.server.usage.for_tenant(
                &tenant,
                &config.tenant_home(&tenant),
                UsageLimits {
                    max_bytes: config.server.max_tenant_bytes,
                    max_entries: config.server.max_tenant_entries,
                },
            ),
            sink: self.server.sink.clone(),
            in_progress: InProgress::new(&config.server.data_dir, &tenant),
            handles: (self.server.handles)
                .for_tenant(&tenant, config.server.max_handles_per_tenant),
        });
        session.channel_success(id)?;
        let ended = self.ended.clone();
        tokio::spawn(async move {
            // The slot is held for as long as this channel serves SFTP, and the channel counts
            // as open until the task ends (it closes the channel itself, or the client did).
            let _slot = slot;
            let _open = open;
            // Reads, writes, exit-status, EOF and CLOSE all go through the channel's own halves,
            // so they leave in order: `sftp -b` and `scp` exit 1 unless they see the exit status
            // before the close.
            let (mut read_half, write_half) = channel.split();
            let serve = async {
                let reader = read_half.make_reader();
                let writer = write_half.make_writer();
                if let Err(e) = wire::serve(reader, writer, sftp).await {
                    tracing::debug!(%tenant, "SFTP stream ended: {e}");
                }
                let _ = write_half.exit_status(0).await;
                let _ = write_half.eof().await;
                let _ = write_half.close().await;
            };
            tokio::select! {
                () = serve => {}
                // Nothing can be sent any more; the session ends (dropped) here.
                () = ended.cancelled() => {}
            }
        });
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_in_words(id, "command (exec)", session).await
    }

    async fn shell_request(
        &mut self,
        id: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_in_words(id, "shell", session).await
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
        self.open.remove(id);
        Ok(())
    }
}
