//! Signing in and out of the console.
//!
//! `GET /login` shows two forms: the operator's (field `token`: the admin token) and a
//! tenant's (fields `tenant` and `password`: the portal password, `login::verify_portal_password`).
//! Both are guarded by a double-submit token (the `roster_login` cookie set with the page must
//! equal the form's `csrf` field) and by the same [`crate::login::LoginThrottle`] as SFTP: a
//! blocked address or tenant is refused without checking, and each attempt is counted before it
//! is checked (`LoginThrottle::begin`) and ends as a failure or a success (an operator's against
//! the address only), so concurrent guesses get no more checks than failures allowed. A
//! success starts a session (`session::Sessions`) and redirects to `/`; `POST /logout` ends it.
//!
//! Bounds against clients that need no credential: these routes take at most
//! [`SIGN_IN_BODY_LIMIT`] bytes of body (more is refused with 413, from the declared length
//! before any of it is read); a sign-in without the `roster_login` cookie is refused (403)
//! before its body is read; refusals of a blocked (or busy) address or tenant are logged at
//! most once a second, with their count, however fast they come.

use super::session::{
    cookie, credential_of, idle_limit, random_token, set_cookie, ABSOLUTE_LIFETIME, LOGIN_COOKIE,
    SESSION_COOKIE,
};
use super::{page, PageError, Role, Viewer};
use crate::admin::auth::ct_eq;
use crate::admin::AppState;
use crate::login::Refusal;
use crate::logs::SharedEverySecond;
use askama::Template;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};

/// The most body bytes a sign-in or sign-out form may have (its fields are a token, a tenant
/// id and a password).
pub(crate) const SIGN_IN_BODY_LIMIT: usize = 16 * 1024;

/// Sign-in refusals of blocked or busy addresses and tenants: one line a second, counted.
static REFUSED_SIGN_INS: SharedEverySecond = SharedEverySecond::new();

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page))
        .route("/login/operator", post(operator))
        .route("/login/tenant", post(tenant))
        .route("/logout", post(logout))
        .layer(DefaultBodyLimit::max(SIGN_IN_BODY_LIMIT))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    error: Option<String>,
    tenant: String,
}

/// Renders the sign-in page with a fresh double-submit token (and its cookie).
fn login_answer(
    st: &AppState,
    status: StatusCode,
    error: Option<String>,
    tenant: &str,
) -> Response {
    let csrf = random_token();
    let form = LoginPage {
        csrf: csrf.clone(),
        error,
        tenant: tenant.to_string(),
    };
    let cookie = set_cookie(&st.config.current(), LOGIN_COOKIE, &csrf, Some(3600));
    match page(&form) {
        Ok(mut resp) => {
            *resp.status_mut() = status;
            if let Ok(v) = cookie.parse() {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            resp
        }
        Err(e) => e.into_response(),
    }
}

async fn login_page(State(st): State<AppState>, viewer: Result<Viewer, Response>) -> Response {
    if viewer.is_ok() {
        return Redirect::to("/").into_response();
    }
    login_answer(&st, StatusCode::OK, None, "")
}

#[derive(Deserialize)]
struct OperatorForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

#[derive(Deserialize)]
struct TenantForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    password: String,
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

fn stale_form() -> PageError {
    PageError::forbidden(
        "this sign-in form is stale or did not come from the console; reload the sign-in page \
         and try again",
    )
}

/// 403 unless the form's token equals the `roster_login` cookie.
fn check_login_csrf(headers: &HeaderMap, given: &str) -> Result<(), PageError> {
    let expected = cookie(headers, LOGIN_COOKIE).unwrap_or_default();
    let digest = |s: &str| -> [u8; 32] { Sha256::digest(s.as_bytes()).into() };
    if !expected.is_empty() && ct_eq(&digest(expected), &digest(given)) {
        Ok(())
    } else {
        Err(stale_form())
    }
}

/// The request's headers and its form, read only once the head passes what it can be judged
/// by: a request without the `roster_login` cookie is refused (403), and one that declares more
/// than [`SIGN_IN_BODY_LIMIT`] bytes is refused (413), before a byte of the body is read. (The
/// body limit layer also stops a body without a declared length at the limit.)
async fn read_form<T: DeserializeOwned>(
    st: &AppState,
    request: Request,
) -> Result<(HeaderMap, T), Response> {
    let headers = request.headers().clone();
    if cookie(&headers, LOGIN_COOKIE)
        .unwrap_or_default()
        .is_empty()
    {
        return Err(stale_form().into_response());
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > SIGN_IN_BODY_LIMIT as u64) {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            "the sign-in form is too large",
        )
            .into_response());
    }
    let Form(form) = Form::<T>::from_request(request, st)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((headers, form))
}

/// A refused sign-in, logged at most once a second (with the count since the last line).
fn log_refused(addr: Option<IpAddr>, role: &str, why: &str) {
    if let Some(n) = REFUSED_SIGN_INS.hit() {
        tracing::warn!(
            ?addr,
            refused = n,
            "console {role} sign-in refused: {why} (refusals of the last second counted)"
        );
    }
}

fn address(peer: &Result<ConnectInfo<SocketAddr>, impl Sized>) -> Option<IpAddr> {
    peer.as_ref().ok().map(|c| c.0.ip())
}

/// Starts a session for `role` and redirects to `/` with its cookie (and the sign-in cookie
/// ended). The cookie lasts the session's absolute lifetime; the server ends it sooner when it
/// is idle for `session_minutes`. When the node holds as many tenant sessions as it may, a
/// tenant's sign-in is refused with 503 and a sentence.
///
/// `credential` is what the sign-in was checked against (the token or hash of the config read
/// for the check), never the config as it stands now: a reload between the check and this
/// call would otherwise tie the session to a credential the user never proved, and a
/// withdrawn password would keep working. Every request compares it with the config in force
/// ([`super::session`]), so a session made just before a reload ends at its first request.
fn signed_in(st: &AppState, role: Role, credential: Option<[u8; 32]>) -> Response {
    let config = st.config.current();
    let Some(credential) = credential else {
        return PageError::forbidden("this account cannot sign in").into_response();
    };
    let tenant = match &role {
        Role::Tenant(id) => id.clone(),
        Role::Operator => String::new(),
    };
    let Ok(id) = st.sessions.start(role, credential, idle_limit(&config)) else {
        tracing::warn!(
            tenant,
            "console sign-in refused: the node holds the most tenant sessions it may"
        );
        let why = "the console has as many signed-in sessions as it can hold right now; try \
                   again later, or ask the operator"
            .to_string();
        return login_answer(st, StatusCode::SERVICE_UNAVAILABLE, Some(why), &tenant);
    };
    let mut resp = Redirect::to("/").into_response();
    for c in [
        set_cookie(
            &config,
            SESSION_COOKIE,
            &id,
            Some(ABSOLUTE_LIFETIME.as_secs()),
        ),
        set_cookie(&config, LOGIN_COOKIE, "", None),
    ] {
        if let Ok(v) = c.parse() {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

async fn operator(
    State(st): State<AppState>,
    peer: Result<ConnectInfo<SocketAddr>, axum::extract::rejection::ExtensionRejection>,
    request: Request,
) -> Response {
    let (headers, form) = match read_form::<OperatorForm>(&st, request).await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    if let Err(e) = check_login_csrf(&headers, &form.csrf) {
        return e.into_response();
    }
    let addr = address(&peer);
    let attempt = match st
        .throttle
        .begin(crate::admin::auth::throttle_policy(&st), addr, None)
        .await
    {
        Ok(attempt) => attempt,
        Err(refusal) => {
            log_refused(addr, "operator", refusal.reason());
            return refused(&st, &refusal, "");
        }
    };
    let expected = crate::admin::auth::expected_token(&st).unwrap_or_default();
    let digest = |s: &str| -> [u8; 32] { Sha256::digest(s.as_bytes()).into() };
    let ok = !expected.is_empty() && ct_eq(&digest(form.token.trim()), &digest(&expected));
    if !ok {
        let delay = attempt.failed().await;
        tracing::warn!(?addr, "console operator sign-in failed: wrong admin token");
        tokio::time::sleep(delay).await;
        let why = "that is not the admin token of this server".to_string();
        return login_answer(&st, StatusCode::UNAUTHORIZED, Some(why), "");
    }
    attempt.succeeded();
    tracing::info!(?addr, "console: operator signed in");
    signed_in(&st, Role::Operator, Some(digest(&expected)))
}

async fn tenant(
    State(st): State<AppState>,
    peer: Result<ConnectInfo<SocketAddr>, axum::extract::rejection::ExtensionRejection>,
    request: Request,
) -> Response {
    let (headers, form) = match read_form::<TenantForm>(&st, request).await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    if let Err(e) = check_login_csrf(&headers, &form.csrf) {
        return e.into_response();
    }
    let addr = address(&peer);
    let id = form.tenant.trim().to_string();
    if id.is_empty() || id.len() > 64 {
        let why = "give your tenant id and password".to_string();
        return login_answer(&st, StatusCode::UNAUTHORIZED, Some(why), "");
    }
    // Counted as in flight before the password is checked (`LoginThrottle::begin`), so a
    // burst of concurrent guesses gets no more checks than `max_auth_failures`.
    let name = crate::login::throttle_name(&id);
    let attempt = match st
        .throttle
        .begin(crate::admin::auth::throttle_policy(&st), addr, Some(name))
        .await
    {
        Ok(attempt) => attempt,
        Err(refusal) => {
            log_refused(addr, "tenant", refusal.reason());
            return refused(&st, &refusal, &id);
        }
    };
    let config = st.config.current();
    if !crate::login::verify_portal_password(&config, &id, &form.password).await {
        let delay = attempt.failed().await;
        tracing::warn!(?addr, tenant = %id, "console tenant sign-in failed");
        tokio::time::sleep(delay).await;
        let why = "the tenant id or the password is wrong (or this tenant has no portal \
                   password)"
            .to_string();
        return login_answer(&st, StatusCode::UNAUTHORIZED, Some(why), &id);
    }
    attempt.succeeded();
    tracing::info!(?addr, tenant = %id, "console: tenant signed in to the portal");
    let role = Role::Tenant(id);
    let credential = credential_of(&st, &config, &role);
    signed_in(&st, role, credential)
}

/// 429 with the sign-in page and a sentence saying why nothing was checked.
fn refused(st: &AppState, refusal: &Refusal, tenant: &str) -> Response {
    let sentence = match refusal {
        Refusal::Blocked(_) => {
            "too many failed sign-ins: signing in is blocked for a while; try again later"
        }
        Refusal::Busy(_) => {
            "too many sign-ins from here (or for this tenant) are being checked at once; try \
             again in a moment"
        }
    };
    login_answer(
        st,
        StatusCode::TOO_MANY_REQUESTS,
        Some(sentence.to_string()),
        tenant,
    )
}

async fn logout(
    State(st): State<AppState>,
    viewer: Viewer,
    Form(form): Form<LogoutForm>,
) -> Result<Response, PageError> {
    viewer.check_csrf(&form.csrf)?;
    viewer.end(&st.sessions);
    let mut resp = Redirect::to("/login").into_response();
    let ended = set_cookie(&st.config.current(), SESSION_COOKIE, "", None);
    if let Ok(v) = ended.parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}
