//! The admin surface: the loopback HTTP API the CLI's admin commands call, `/metrics`, the
//! read-only SCIM 2.0 API for downstream applications, and the web console with its tenant
//! portal (`console`, HTML pages with cookie sessions instead of bearer tokens).
//!
//! Data enters as HTTP requests on `[admin] listen` (bound once at start; a reload changes the
//! token and tenants, not the address). Every route checks a bearer token before anything else
//! (`auth`): the admin routes and `/metrics` the `[admin] token`, the SCIM routes a tenant's
//! SCIM token (its SHA-256 must equal that tenant's `scim_token_sha256`), both compared in
//! constant time. Bearer tokens are not throttled (an `[admin] token` has at least 32
//! characters); the console's sign-in refuses an address blocked after failed logins (429)
//! before it looks at the password or token. Handlers read the directory and history through [`Store`], run imports
//! (`run-now`, `approve`, `restore`) as requests on the tenant's queue in the [`Intake`] and
//! wait for their records, run dry runs (`preview`) through `import`, and leave as JSON (`api`;
//! today's file in `today`), SCIM JSON (`scim`) or Prometheus text (`crate::metrics`). Nothing
//! here writes the directory or history itself: `approve` and `restore` write through the
//! intake's queue. An operator lifting a login block (`login_blocks`) clears the shared login
//! counters and the throttle's memory.
//!
//! Connections are admitted and timed by `listener` (caps in all and per address, a
//! header-read deadline that also closes idle keep-alive connections, slow bodies and stalled
//! answers cut off), so slow or silent clients cannot hold the listener or the process's
//! descriptors.
//!
//! Bound to loopback, the listener answers only requests addressed to a loopback name or the
//! host of `[admin] public_url` (`host_check`: DNS rebinding).
//!
//! Every answer of the listener (API, SCIM, console pages, the fallback 404) carries the same
//! security headers ([`security_headers`]): a Content-Security-Policy that allows only this
//! origin and no framing, `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`,
//! and `Cache-Control: no-store` unless the route set its own (the stylesheet).
//!
//! Errors are one JSON object `{"error": "<sentence>"}` with a 4xx status for bad input (SCIM
//! uses its own error schema); a 5xx only for a store failure. Request bodies are bounded:
//! small for JSON, `max_upload_bytes` for a preview, read incrementally so a huge body is
//! refused with 413 without being held in memory.

mod api;
mod auth;
mod changes;
pub(crate) mod console;
pub mod filter;
pub(crate) mod heavy;
mod host_check;
mod listener;
pub(crate) mod login_blocks;
mod openapi;
mod request;
mod schemas;
mod scim;
mod scim_discovery;
mod scim_groups;
mod scim_push;
#[cfg(test)]
pub(crate) mod test_state;
mod today;
mod webhooks;

use crate::config::ConfigHandle;
use crate::intake::Intake;
use crate::store::Store;
use anyhow::Context;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

/// How long a preview waits for another preview's file to finish arriving before it is
/// answered 503 (review s21: a file sent at the slowest rate the listener allows held the one
/// preview turn for hours, and every preview and held run's plan waited behind it).
const PREVIEW_FILE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The sentence of a preview that found another preview's file still arriving.
pub(crate) const PREVIEW_FILE_BUSY: &str =
    "another preview's file is still arriving; try again once it is done";

impl AppState {
    /// The turn to receive one preview's file, held until the preview is answered; None after
    /// [`PREVIEW_FILE_WAIT`] behind another.
    pub(crate) async fn preview_file_turn(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let wait = self.preview_files.clone().acquire_owned();
        tokio::time::timeout(PREVIEW_FILE_WAIT, wait)
            .await
            .ok()?
            .ok()
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub config: ConfigHandle,
    pub store: Store,
    pub intake: Intake,
    /// One preview's file arriving or held at a time: each is a whole file (up to
    /// `max_upload_bytes`) in memory. Taken before the file is read, so a file that arrives
    /// slowly holds up the next file, but not the dry runs (`previews`) of held runs.
    pub preview_files: std::sync::Arc<tokio::sync::Semaphore>,
    /// One dry run at a time (a preview, a held run's plan, a mapping's sample).
    pub previews: std::sync::Arc<tokio::sync::Semaphore>,
    /// The token from `<data_dir>/admin-token` while `[admin] token` is unset (read at start,
    /// or when a reload unsets the token).
    pub generated_token: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// Turns for directory listings (SCIM `/Users` and `/Groups`, admin `/users`, the
    /// console's user pages), with a share per tenant.
    pub heavy: heavy::HeavyTurns,
    /// Failed logins and blocks, shared with SFTP (the console's sign-in counts here too).
    pub throttle: crate::login::LoginThrottle,
    /// The web console's sessions on this node.
    pub sessions: console::Sessions,
    /// The console's held-run dry runs kept on this node (the held page's pages share one).
    pub held_plans: console::HeldPlans,
}

/// The running admin listener.
pub struct RunningAdmin {
    /// The bound address (useful when `[admin] listen` ends in `:0`).
    pub addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningAdmin {
    /// Stops accepting requests and lets the ones in flight finish, for at most `bound`: then
    /// the connections still open are closed with their requests (review s30: an approve or
    /// run-now waiting for a store that was down held the stop, and so the process, for as long
    /// as the store stayed down). A request cut off this way may still complete its change; its
    /// client sees the connection close, not an answer.
    pub async fn stop(mut self, bound: std::time::Duration) {
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(bound, &mut self.task).await.is_err() {
            tracing::warn!(
                secs = bound.as_secs(),
                "admin requests still in flight after the stop's bound: closing their connections"
            );
            self.task.abort();
            let _ = self.task.await;
        }
    }
}

/// The admin listener bound to `[admin] listen`, not yet serving: bound before the intake
/// starts, so a port that is taken fails the start before any import runs (review s30).
pub struct BoundAdmin {
    listener: tokio::net::TcpListener,
    /// The bound address.
    pub addr: SocketAddr,
    generated: Option<String>,
}

/// Binds `[admin] listen` and reads (or generates) the admin token; [`BoundAdmin::serve`] then
/// serves the admin API, `/metrics` and SCIM on it until stopped.
pub async fn bind(config: &ConfigHandle) -> anyhow::Result<BoundAdmin> {
    let listen = config.current().admin.listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen} for the admin API ([admin] listen)"))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the admin API listens beyond loopback: keep [admin] token long and random, and firewall the port");
    }
    let current = config.current();
    if current.admin.token.trim() == crate::config::admin_token::OLD_DEFAULT {
        tracing::warn!("[admin] token is the old example \"change-me\", which is never accepted: using the generated token instead");
    }
    let generated = match crate::config::admin_token::configured(&current) {
        Some(_) => None,
        None => Some(crate::config::admin_token::ensure(&current)?),
    };
    Ok(BoundAdmin {
        listener,
        addr,
        generated,
    })
}

impl BoundAdmin {
    /// Serves the admin API, `/metrics` and SCIM on the bound listener until stopped.
    pub fn serve(
        self,
        config: ConfigHandle,
        store: Store,
        intake: Intake,
        throttle: crate::login::LoginThrottle,
    ) -> RunningAdmin {
        serve(self, config, store, intake, throttle)
    }
}

fn serve(
    bound: BoundAdmin,
    config: ConfigHandle,
    store: Store,
    intake: Intake,
    throttle: crate::login::LoginThrottle,
) -> RunningAdmin {
    let BoundAdmin {
        listener,
        addr,
        generated,
    } = bound;
    let config_handle = config.clone();
    let state = AppState {
        config,
        store,
        intake,
        preview_files: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
        previews: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
        generated_token: std::sync::Arc::new(std::sync::Mutex::new(generated)),
        heavy: heavy::HeavyTurns::default(),
        throttle,
        sessions: console::Sessions::default(),
        held_plans: console::HeldPlans::default(),
    };
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(console::end_stale_on_reload(state.clone(), rx.clone()));
    let app = api::router(state.clone())
        .merge(webhooks::router(state.clone()))
        .merge(login_blocks::router(state.clone()))
        .merge(scim::router(state.clone()))
        .merge(console::router(state))
        .fallback(
            |headers: axum::http::HeaderMap, uri: axum::http::Uri| async move {
                // A browser (it asks for HTML) and any path outside the JSON APIs get the
                // console's 404 page; API clients JSON.
                let api = ["/api", "/scim", "/health"]
                    .iter()
                    .any(|p| uri.path() == *p || uri.path().starts_with(&format!("{p}/")));
                if wants_html(&headers) || !api {
                    return console::PageError::not_found("there is no such page").into_response();
                }
                ApiError::not_found(
                    "there is no such route; see docs/operators.md for the admin API",
                )
                .into_response()
            },
        )
        .layer(axum::middleware::from_fn_with_state(
            config_handle.clone(),
            answer_deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(
            host_check::HostCheck {
                loopback_only: addr.ip().is_loopback(),
                config: config_handle.clone(),
            },
            host_check::refuse_foreign_host,
        ))
        .layer(axum::middleware::map_response(security_headers));
    // Not axum::serve: it has no header-read timeout, no body or write timeout and no cap on
    // connections (listener.rs).
    let task = tokio::spawn(listener::serve(listener, app, config_handle, rx));
    tracing::info!(%addr, "admin API listening");
    RunningAdmin {
        addr,
        shutdown,
        task,
    }
}

/// Bounds how long a GET or HEAD waits for its answer: past `[admin] answer_timeout_secs` it
/// is answered 503 with a sentence (JSON, or the console's page for a browser). Without it a
/// read waited as long as the statement it sent, for ever while PostgreSQL was frozen (a paused
/// VM, a stalled disk). The work it waited on ends on its own (the store's thread is not
/// stopped, and the pool bounds how many can wait). Other methods are never cut off: an
/// approve, restore or run-now answered 503 might still complete, and the client would be
/// misled about a change.
async fn answer_deadline(
    axum::extract::State(config): axum::extract::State<ConfigHandle>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::Method;
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let secs = config.current().admin.answer_timeout_secs;
    let html = wants_html(req.headers());
    let path = req.uri().path().to_string();
    match tokio::time::timeout(std::time::Duration::from_secs(secs), next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(path = %crate::logs::escape(&path), secs, "admin request not answered within answer_timeout_secs: 503");
            let message = format!(
                "no answer within {secs} s (answer_timeout_secs): the store is not answering \
                 (PostgreSQL stalled or frozen?) or the server is too busy; try again later"
            );
            match html {
                true => console::PageError::new(StatusCode::SERVICE_UNAVAILABLE, message)
                    .into_response(),
                false => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).into_response(),
            }
        }
    }
}

/// True when the client asks for HTML (a browser): it gets the console's pages.
fn wants_html(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// Headers on every answer of the listener: only this origin may supply anything, no framing,
/// no sniffing, no caching (pages and JSON show directory data) unless the route chose its own
/// `Cache-Control`. A 503 (the store unreachable, a turn not free, no answer in time) tells the
/// client when to try again, [`RETRY_AFTER_SECS`], unless the route chose its own `Retry-After`.
async fn security_headers(mut resp: Response) -> Response {
    use axum::http::HeaderValue;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .entry(header::RETRY_AFTER)
            .or_insert(HeaderValue::from_static(RETRY_AFTER_SECS));
    }
    resp
}

/// `Retry-After` of a 503 whose route gave none: long enough for a PostgreSQL restart or a
/// busy turn to pass, short enough that a consumer catches up soon after.
const RETRY_AFTER_SECS: &str = "5";

/// An admin API error: a status and one sentence, sent as `{"error": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

/// Characters of an error message shown at most: a message that quotes what the client sent
/// (an id, a key) does not echo 50 KB of it back (audit s22 console N6).
const MESSAGE_MOST: usize = 600;

/// `message` cut to [`MESSAGE_MOST`] characters, with `…` where it was cut.
pub(crate) fn bounded_message(message: String) -> String {
    match message.char_indices().nth(MESSAGE_MOST) {
        Some((at, _)) => format!("{}…", &message[..at]),
        None => message,
    }
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: bounded_message(message.into()),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    /// A failure inside Roster (store, task): logged with its chain, answered with a sentence:
    /// 503 when the store cannot be reached right now (`store::Unavailable`), else 500.
    pub fn internal(what: &str, e: anyhow::Error) -> ApiError {
        log_failure("admin API", what, &e);
        if crate::store::is_unavailable(&e) {
            // A pool whose connections are all taken (statements behind a lock) is not an
            // unreachable server: the driver's sentence says which (`connections.rs`).
            let busy = e
                .chain()
                .find_map(|c| c.downcast_ref::<crate::store::PoolBusy>());
            let why = match busy {
                Some(b) => format!("{b}. Try again shortly."),
                None => "the store (PostgreSQL) cannot be reached right now; uploads wait in the \
                         tenant folders and are imported when it is back. Try again shortly."
                    .to_string(),
            };
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{what}: {why}"));
        }
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e:#}"))
    }

    /// `e` as a refusal: `status` with the sentence `message` makes of it, unless the store
    /// could not be reached, which is [`ApiError::internal`]'s 503 whatever the request (s29:
    /// preview and approve answered a store outage 422 and 409).
    pub fn refusal(
        what: &str,
        e: anyhow::Error,
        status: StatusCode,
        message: impl FnOnce(&anyhow::Error) -> String,
    ) -> ApiError {
        if crate::store::is_unavailable(&e) {
            return ApiError::internal(what, e);
        }
        ApiError::new(status, message(&e))
    }
}

/// 503 answers of a store outage, logged at most once a second.
static STORE_DOWN_ANSWERS: crate::logs::SharedEverySecond = crate::logs::SharedEverySecond::new();

/// Logs a failed request of `surface` (the admin API, SCIM): an outage of the store fails every
/// request alike, so it is one WARN a second with the count, not an ERROR per request (review
/// s16 cluster F6: 450 lines a second from one client); anything else is an ERROR.
pub(crate) fn log_failure(surface: &str, what: &str, e: &anyhow::Error) {
    if !crate::store::is_unavailable(e) {
        tracing::error!("{surface}: {what}: {e:#}");
    } else if let Some(n) = STORE_DOWN_ANSWERS.hit() {
        tracing::warn!(
            answered_503 = n,
            "{surface}: {what}: {e:#} (requests answered 503 in the last second counted)"
        );
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"roster-admin\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_pool_is_not_called_unreachable() {
        let busy = anyhow::Error::new(crate::store::PoolBusy(
            "all 8 connections to PostgreSQL are busy (statements waiting on a lock, or slow); none came free within 10 s".into(),
        ))
        .context(crate::store::Unavailable);
        let e = ApiError::internal("cannot list the tenants", busy);
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            e.message.contains("connections to PostgreSQL are busy"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("cannot be reached"), "{}", e.message);
        let down = anyhow::anyhow!("connection refused").context(crate::store::Unavailable);
        let e = ApiError::internal("cannot list the tenants", down);
        assert!(e.message.contains("cannot be reached"), "{}", e.message);
    }
}
