//! Console sessions: who is signed in (an operator, or one tenant), their CSRF token, and the
//! cookies that carry them.
//!
//! A session is made by a successful sign-in (`signin`) and leaves as a `roster_session` cookie
//! (`HttpOnly`, `SameSite=Strict`, `Secure` when `[admin] public_url` is https). Each request
//! brings the cookie back; [`Viewer`] (an axum extractor) finds the session, checks that it has
//! not expired and that the credential it was made with is still the one in force (a reload
//! that changes the admin token or the tenant's password, or removes the tenant, ends it), and
//! refreshes its idle deadline. A GET without a session is redirected to `/login`. Each applied
//! reload also ends at once every session whose credential no longer matches
//! ([`end_stale_on_reload`]), so a session unused during the change does not come back when the
//! old config returns.
//!
//! Sessions live in this node's memory: a restart signs everyone out, and behind a load balancer
//! the console needs session affinity (docs/console.md). One principal (the operator, or one
//! tenant) holds at most [`MAX_SESSIONS_PER_PRINCIPAL`]; a further sign-in ends that principal's
//! own oldest session. Tenants' sessions together are at most [`MAX_SESSIONS`]; when that many
//! are live a tenant's sign-in is refused (503), and no one's live session is ended for another
//! principal. The operator's sessions count only against their own cap, so tenants cannot keep
//! the operator out. Session ids are 256 random bits, kept only as their SHA-256, so the table
//! holds nothing a reader could replay.
//!
//! The cookie's `Max-Age` is the absolute lifetime ([`ABSOLUTE_LIFETIME`]), not the idle limit:
//! the server ends a session idle for `session_minutes`, and a cookie that expired
//! `session_minutes` after sign-in would sign out a browser in the middle of its work.
//!
//! CSRF: every session has a random token; each state-changing form carries it in the field
//! `csrf` and the handler calls [`Viewer::check_csrf`] (403 otherwise). The sign-in forms, made
//! before any session exists, use a double-submit token: the `roster_login` cookie must equal
//! the form's `csrf` field.

use super::PageError;
use crate::admin::auth::ct_eq;
use crate::admin::AppState;
use crate::config::Config;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Tenants' sessions held at once; beyond that a tenant's sign-in is refused (503).
pub(crate) const MAX_SESSIONS: usize = 10_000;
/// Sessions of one principal (the operator, or one tenant); a further sign-in ends its oldest.
pub(crate) const MAX_SESSIONS_PER_PRINCIPAL: usize = 32;
/// A session ends this long after sign-in, however active (also the cookie's `Max-Age`).
pub(crate) const ABSOLUTE_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "roster_session";
/// The sign-in forms' double-submit cookie.
pub(crate) const LOGIN_COOKIE: &str = "roster_login";

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    /// Signed in with the admin token: every tenant, every action.
    Operator,
    /// Signed in with a tenant's portal password: that tenant only, read-only.
    Tenant(String),
}

#[derive(Debug, Clone)]
struct Session {
    role: Role,
    csrf: String,
    /// SHA-256 of the credential it was made with (admin token, or the tenant's hash string).
    credential: [u8; 32],
    made: Instant,
    idle_until: Instant,
}

/// A tenant's sign-in found [`MAX_SESSIONS`] live tenant sessions.
#[derive(Debug)]
pub(crate) struct SessionsFull;

/// The sessions of this node.
#[derive(Clone)]
pub(crate) struct Sessions {
    inner: Arc<Mutex<HashMap<[u8; 32], Session>>>,
    /// [`MAX_SESSIONS`] and [`MAX_SESSIONS_PER_PRINCIPAL`] (smaller in unit tests).
    max_tenant_sessions: usize,
    per_principal: usize,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions::with_caps(MAX_SESSIONS, MAX_SESSIONS_PER_PRINCIPAL)
    }
}

/// The signed-in person making a request.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    pub role: Role,
    /// The session's CSRF token (put into every form).
    pub csrf: String,
    session: [u8; 32],
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// 256 random bits as hex.
pub(crate) fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What a session of `role` was made with, as it stands in `config` now; None when the role
/// cannot sign in any more (tenant removed, no password).
pub(crate) fn credential_of(state: &AppState, config: &Config, role: &Role) -> Option<[u8; 32]> {
    match role {
        Role::Operator => crate::admin::auth::expected_token(state).map(|t| sha256(t.as_bytes())),
        Role::Tenant(id) => {
            let t = config.tenant(id)?;
            let hash = t
                .portal_password_hash
                .as_ref()
                .or(t.password_hash.as_ref())?;
            Some(sha256(hash.as_bytes()))
        }
    }
}

impl Sessions {
    fn with_caps(max_tenant_sessions: usize, per_principal: usize) -> Sessions {
        Sessions {
            inner: Arc::default(),
            max_tenant_sessions,
            per_principal: per_principal.max(1),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<[u8; 32], Session>) -> T) -> T {
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Starts a session; returns its id (for the cookie). Ends the principal's own oldest
    /// sessions beyond [`MAX_SESSIONS_PER_PRINCIPAL`]; refuses a tenant's when [`MAX_SESSIONS`]
    /// tenant sessions are live (another principal's live session is never ended).
    pub fn start(
        &self,
        role: Role,
        credential: [u8; 32],
        idle: Duration,
    ) -> Result<String, SessionsFull> {
        let id = random_token();
        let now = Instant::now();
        self.with(|m| {
            let live = |s: &Session| s.idle_until > now && now < s.made + ABSOLUTE_LIFETIME;
            // This principal's ended sessions go first, then its oldest beyond its cap.
            m.retain(|_, s| s.role != role || live(s));
            let mut mine: Vec<([u8; 32], Instant)> = m
                .iter()
                .filter(|(_, s)| s.role == role)
                .map(|(k, s)| (*k, s.made))
                .collect();
            if mine.len() >= self.per_principal {
                mine.sort_by_key(|(_, made)| *made);
                let over = mine.len() + 1 - self.per_principal;
                for (k, _) in &mine[..over] {
                    m.remove(k);
                }
            }
            if role != Role::Operator {
                let tenants = |m: &HashMap<[u8; 32], Session>| {
                    m.values().filter(|s| s.role != Role::Operator).count()
                };
                if tenants(m) >= self.max_tenant_sessions {
                    m.retain(|_, s| live(s));
                }
                if tenants(m) >= self.max_tenant_sessions {
                    return Err(SessionsFull);
                }
            }
            m.insert(
                sha256(id.as_bytes()),
                Session {
                    role,
                    csrf: random_token(),
                    credential,
                    made: now,
                    idle_until: now + idle,
                },
            );
            Ok(id)
        })
    }

    /// The live session of a cookie value, its idle deadline pushed back.
    fn touch(&self, id: &str, idle: Duration) -> Option<Session> {
        let key = sha256(id.as_bytes());
        let now = Instant::now();
        self.with(|m| {
            let live = m
                .get(&key)
                .is_some_and(|s| s.idle_until > now && now < s.made + ABSOLUTE_LIFETIME);
            if !live {
                m.remove(&key);
                return None;
            }
            let s = m.get_mut(&key)?;
            s.idle_until = now + idle;
            Some(s.clone())
        })
    }

    fn end_key(&self, key: &[u8; 32]) {
        self.with(|m| m.remove(key));
    }

    /// Ends every session whose credential is not `current(role)` now (None: the role cannot
    /// sign in any more); returns how many ended. `current` runs once per principal, outside
    /// the table's lock.
    pub fn end_stale(&self, current: impl Fn(&Role) -> Option<[u8; 32]>) -> usize {
        let roles: std::collections::HashSet<Role> =
            self.with(|m| m.values().map(|s| s.role.clone()).collect());
        let now: HashMap<Role, Option<[u8; 32]>> = roles
            .into_iter()
            .map(|r| {
                let c = current(&r);
                (r, c)
            })
            .collect();
        self.with(|m| {
            let before = m.len();
            // A principal that signed in meanwhile (not in `now`) is judged at its next request.
            m.retain(|_, s| match now.get(&s.role) {
                None => true,
                Some(c) => c.is_some_and(|c| ct_eq(&c, &s.credential)),
            });
            before - m.len()
        })
    }
}

/// After every applied config reload, ends the sessions whose credential changed (admin token
/// rotated, tenant password changed or removed, tenant removed); runs until `stop` turns true
/// or the config handle is gone.
pub(crate) async fn end_stale_on_reload(
    state: AppState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut reloads = state.config.subscribe();
    loop {
        tokio::select! {
            changed = reloads.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = stop.changed() => return,
        }
        let config = state.config.current();
        let ended = state
            .sessions
            .end_stale(|role| credential_of(&state, &config, role));
        if ended > 0 {
            tracing::info!(
                ended,
                "console: sessions ended by a config reload (their credential changed or their tenant was removed)"
            );
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, `Path=/`, `Secure` when the console's
/// public URL is https; `max_age` None ends the cookie.
pub(crate) fn set_cookie(config: &Config, name: &str, value: &str, max_age: Option<u64>) -> String {
    let secure = if config.admin.public_url.trim().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let age = max_age.unwrap_or(0);
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={age}{secure}")
}

/// How long a session lasts without use.
pub(crate) fn idle_limit(config: &Config) -> Duration {
    Duration::from_secs(config.admin.session_minutes.max(1) * 60)
}

/// A form that carries only its CSRF token (Run now, Approve, Restore).
#[derive(serde::Deserialize, Default)]
pub(super) struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// The CSRF token of a posted [`CsrfForm`]: empty when the body is no such form (the check
/// then fails as stale), but a body over the size limit is a 413 page of its own, not a
/// stale token (audit s22 console N1).
pub(super) fn posted_csrf(
    form: Result<axum::Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Result<String, PageError> {
    match form {
        Ok(axum::Form(f)) => Ok(f.csrf),
        Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => Err(PageError::new(
            e.status(),
            "the form is larger than the console takes",
        )),
        Err(_) => Ok(String::new()),
    }
}

impl Viewer {
    /// A viewer with `role` and no session (for the pages' unit tests).
    #[cfg(test)]
    pub(crate) fn for_test(role: Role) -> Viewer {
        Viewer {
            role,
            csrf: random_token(),
            session: [0; 32],
        }
    }

    /// 403 unless `given` is this session's CSRF token.
    pub fn check_csrf(&self, given: &str) -> Result<(), PageError> {
        if ct_eq(&sha256(given.as_bytes()), &sha256(self.csrf.as_bytes())) {
            Ok(())
        } else {
            Err(PageError::forbidden(
                "this form is stale or did not come from the console (its CSRF token does not \
                 match your session); reload the page and try again",
            ))
        }
    }

    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// Operator-only pages answer 404 to a tenant (as if they did not exist).
    pub fn operator_only(&self) -> Result<(), PageError> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(PageError::not_found("there is no such page"))
        }
    }

    /// The tenant a page is about, if this viewer may see it: an operator any configured
    /// tenant, a tenant only itself. Anything else is the same 404 as a tenant that does not
    /// exist, so the portal does not reveal other tenants' ids.
    pub fn tenant<'c>(
        &self,
        config: &'c Config,
        id: &str,
    ) -> Result<&'c crate::config::Tenant, PageError> {
        let allowed = match &self.role {
            Role::Operator => true,
            Role::Tenant(own) => own == id,
        };
        config
            .tenant(id)
            .filter(|_| allowed)
            .ok_or_else(|| PageError::not_found(format!("there is no tenant {id:?}")))
    }

    /// The session's key (to end it on sign out).
    pub(crate) fn end(&self, sessions: &Sessions) {
        sessions.end_key(&self.session);
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let config = state.config.current();
        let found = cookie(&parts.headers, SESSION_COOKIE).and_then(|id| {
            Some((
                sha256(id.as_bytes()),
                state.sessions.touch(id, idle_limit(&config))?,
            ))
        });
        let Some((key, session)) = found else {
            return Err(signed_out(parts));
        };
        let current = credential_of(state, &config, &session.role);
        if current.is_none_or(|c| !ct_eq(&c, &session.credential)) {
            state.sessions.end_key(&key);
            return Err(signed_out(parts));
        }
        Ok(Viewer {
            role: session.role,
            csrf: session.csrf,
            session: key,
        })
    }
}

/// No live session: a GET goes to the sign-in page, anything else is refused with 403.
fn signed_out(parts: &Parts) -> Response {
    if parts.method == Method::GET || parts.method == Method::HEAD {
        Redirect::to("/login").into_response()
    } else {
        PageError::forbidden("you are not signed in (or your session ended); sign in again")
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live_roles(sessions: &Sessions) -> Vec<Role> {
        sessions.with(|m| m.values().map(|s| s.role.clone()).collect())
    }

    #[test]
    fn a_principal_ends_only_its_own_oldest_session() {
        let sessions = Sessions::with_caps(100, 3);
        let idle = Duration::from_secs(60);
        let operator = sessions.start(Role::Operator, [0; 32], idle).unwrap();
        let first = sessions
            .start(Role::Tenant("beta".into()), [1; 32], idle)
            .unwrap();
        for _ in 0..10 {
            sessions
                .start(Role::Tenant("beta".into()), [1; 32], idle)
                .unwrap();
        }
        assert!(sessions.touch(&operator, idle).is_some(), "operator kept");
        assert!(
            sessions.touch(&first, idle).is_none(),
            "beta's oldest ended"
        );
        let beta = live_roles(&sessions)
            .iter()
            .filter(|r| **r == Role::Tenant("beta".into()))
            .count();
        assert_eq!(beta, 3);
    }

    #[test]
    fn a_full_table_refuses_tenants_but_not_the_operator() {
        let sessions = Sessions::with_caps(4, 2);
        let idle = Duration::from_secs(60);
        let mut kept = Vec::new();
        for t in ["a", "b"] {
            for _ in 0..2 {
                kept.push(
                    sessions
                        .start(Role::Tenant(t.into()), [1; 32], idle)
                        .unwrap(),
                );
            }
        }
        assert!(sessions
            .start(Role::Tenant("c".into()), [1; 32], idle)
            .is_err());
        let operator = sessions.start(Role::Operator, [0; 32], idle).unwrap();
        for id in kept.iter().chain([&operator]) {
            assert!(sessions.touch(id, idle).is_some(), "no live session ended");
        }
        // An idle-expired tenant session makes room.
        let short = Sessions::with_caps(1, 2);
        short
            .start(Role::Tenant("a".into()), [1; 32], Duration::ZERO)
            .unwrap();
        assert!(short.start(Role::Tenant("b".into()), [1; 32], idle).is_ok());
    }
}
