//! Bearer-token checks for the admin API and SCIM, in constant time.
//!
//! A token enters in the `Authorization: Bearer <token>` header. For the admin API it is
//! compared with `[admin] token`, or when that is unset (or the old example `change-me`) with
//! the token generated into `<data_dir>/admin-token` (`config::admin_token`); for SCIM its SHA-256 is compared with each tenant's
//! `scim_token_sha256`, which also tells which tenant the request reads. Both sides are hashed
//! (or already a hash) before comparing, so the comparison always runs over 32 bytes and
//! neither the content nor the length of the secret leaks through timing.
//!
//! A wrong bearer token (one was sent, and it matches nothing) is logged, at most once a second
//! with a count, and answered 401; it blocks nobody. Every client behind one proxy or load
//! balancer shares an address, so a block by address would let one client with an old token
//! (a tenant's SCIM connector after a rotation) shut out every tenant's SCIM, the operator's
//! API and CLI, `/health` and the address's SFTP password logins (re-read of review s16). What
//! stops guessing is the token itself: `check-config` refuses an `[admin] token` under 32
//! characters, and SCIM tokens are made the same way (`openssl rand -hex 32`).

use super::{ApiError, AppState};
use crate::login::ThrottlePolicy;
use crate::logs::SharedEverySecond;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Wrong bearer tokens: one log line a second, counted.
static WRONG_TOKENS: SharedEverySecond = SharedEverySecond::new();

/// The throttle's policy from the current `[server] max_auth_failures` and `auth_block_secs`
/// (the console's sign-in forms).
pub(crate) fn throttle_policy(st: &AppState) -> ThrottlePolicy {
    let cfg = st.config.current();
    ThrottlePolicy {
        max_failures: cfg.server.max_auth_failures.max(1),
        block_for: Duration::from_secs(cfg.server.auth_block_secs),
    }
}

/// The client's address, as the listener recorded it.
fn peer(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Logs a wrong bearer token (at most once a second, with the count).
fn wrong_token(addr: Option<IpAddr>, api: &str) {
    if let Some(n) = WRONG_TOKENS.hit() {
        tracing::warn!(
            ?addr,
            failed = n,
            "{api}: wrong bearer token (failures of the last second counted)"
        );
    }
}

/// True when `a` and `b` are equal; the time taken depends only on their lengths.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // black_box keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The token of an `Authorization: Bearer ...` header, if there is one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Middleware: the request must carry the `[admin] token` (read per request, so a reload that
/// changes it applies at once).
pub(crate) async fn require_admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let addr = peer(&req);
    let expected = expected_token(&state).unwrap_or_default();
    let ok = match bearer(req.headers()) {
        Some(given) => {
            !expected.is_empty() && ct_eq(&sha256(given.as_bytes()), &sha256(expected.as_bytes()))
        }
        None => false,
    };
    if !ok {
        let why = if bearer(req.headers()).is_some() {
            wrong_token(addr, "admin API");
            "the bearer token is not the [admin] token of this server"
        } else {
            "this route needs the header Authorization: Bearer <[admin] token>"
        };
        return ApiError::new(StatusCode::UNAUTHORIZED, why).into_response();
    }
    next.run(req).await
}

/// The admin token in force: `[admin] token`, else the generated one (never `change-me`).
/// None when neither is usable (every request is then refused, and the reason logged).
pub(crate) fn expected_token(state: &AppState) -> Option<String> {
    let config = state.config.current();
    if let Some(t) = crate::config::admin_token::configured(&config) {
        return Some(t.to_string());
    }
    let mut generated = match state.generated_token.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    if generated.is_none() {
        // A reload unset the token after a start with one: generate (or read) it now.
        match crate::config::admin_token::ensure(&config) {
            Ok(t) => *generated = Some(t),
            Err(e) => tracing::error!("no admin token can be used: {e:#}"),
        }
    }
    generated.clone()
}

/// Middleware of the SCIM routes: a request that sent a bearer token and was answered 401 (the
/// token is no tenant's) is logged as a wrong token.
pub(crate) async fn scim_throttle(
    State(_state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let addr = peer(&req);
    let sent_token = bearer(req.headers()).is_some();
    let resp = next.run(req).await;
    if sent_token && resp.status() == StatusCode::UNAUTHORIZED {
        wrong_token(addr, "SCIM");
    }
    resp
}

/// The tenant whose SCIM token the request carries, or None. Every tenant with SCIM enabled
/// is compared, so the time taken does not reveal which one matched.
pub(crate) fn scim_tenant(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let given = sha256(bearer(headers)?.as_bytes());
    let config = state.config.current();
    let mut found = None;
    for t in &config.tenants {
        let Some(hex_hash) = &t.scim_token_sha256 else {
            continue;
        };
        let Ok(expected) = hex::decode(hex_hash.trim()) else {
            continue;
        };
        if ct_eq(&given, &expected) && found.is_none() {
            found = Some(t.id.clone());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn bearer_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer  tok ".parse().unwrap());
        assert_eq!(bearer(&h), Some("tok"));
        h.insert(header::AUTHORIZATION, "bearer tok".parse().unwrap());
        assert_eq!(bearer(&h), Some("tok"));
        h.insert(header::AUTHORIZATION, "Basic dG9rOg==".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
