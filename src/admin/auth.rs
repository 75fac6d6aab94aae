//! Bearer-token checks for the admin API and SCIM, in constant time.
//!
//! A token enters in the `Authorization: Bearer <token>` header. For the admin API it is
//! compared with `[admin] token`, or when that is unset (or the old example `change-me`) with
//! the token generated into `<data_dir>/admin-token` (`config::admin_token`); for SCIM its SHA-256 is compared with each tenant's
//! `scim_token_sha256`, which also tells which tenant the request reads. Both sides are hashed
//! (or already a hash) before comparing, so the comparison always runs over 32 bytes and
//! neither the content nor the length of the secret leaks through timing.

use super::{ApiError, AppState};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

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
    let expected = expected_token(&state).unwrap_or_default();
    let ok = match bearer(req.headers()) {
        Some(given) => {
            !expected.is_empty() && ct_eq(&sha256(given.as_bytes()), &sha256(expected.as_bytes()))
        }
        None => false,
    };
    if !ok {
        let why = if bearer(req.headers()).is_some() {
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
