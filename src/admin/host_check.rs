//! Refuses requests addressed to a host name the listener does not answer to, while it listens
//! on loopback only: the defence against DNS rebinding (review s26).
//!
//! A page the operator visits can point its own host name at 127.0.0.1 and then talk to the
//! console from the operator's browser. Cookies do not follow it (they belong to the real
//! name), but it could sign in wrongly `max_auth_failures` times and block the loopback
//! address, or a tenant's password logins. Its requests carry its own name in `Host`, so a
//! listener bound to loopback answers only to loopback addresses, `localhost`, and the host of
//! `[admin] public_url` (a reverse proxy in front), and refuses the rest with 421 and a
//! sentence. A listener bound beyond loopback is reached by whatever names the network gives
//! it, and the check is off.
//!
//! Data enters as each request's `Host` header (or the URI's authority) and the current config;
//! it leaves as the request passed on, or a 421 answer.

use super::{wants_html, ApiError, ConfigHandle};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;

/// What the middleware needs: whether the listener is loopback only, and the config.
#[derive(Clone)]
pub struct HostCheck {
    pub loopback_only: bool,
    pub config: ConfigHandle,
}

/// The middleware: passes requests for a name this listener answers to, refuses the rest.
pub async fn refuse_foreign_host(
    axum::extract::State(check): axum::extract::State<HostCheck>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !check.loopback_only {
        return next.run(req).await;
    }
    // A Host header that is not plain ASCII names nothing this listener answers to; without
    // one, the request line's authority (absolute form) is the name. A request that names no
    // host at all is refused too (s29: it was passed on unchecked).
    let named = match req.headers().get(header::HOST) {
        Some(v) => v.to_str().ok().map(str::to_string),
        None => req.uri().authority().map(|a| a.to_string()),
    };
    let public_url = check.config.current().admin.public_url.clone();
    let refused = match &named {
        Some(host) if answers_to(host, &public_url) => return next.run(req).await,
        Some(host) => format!("not to {:?}", crate::logs::escape(host)),
        None => "and a request must name one of them in a readable Host header".to_string(),
    };
    let message = format!(
        "this listener answers to localhost, loopback addresses and the host of [admin] \
         public_url, {refused}: set [admin] public_url to the address operators use"
    );
    match wants_html(req.headers()) {
        true => {
            super::console::PageError::new(StatusCode::MISDIRECTED_REQUEST, message).into_response()
        }
        false => ApiError::new(StatusCode::MISDIRECTED_REQUEST, message).into_response(),
    }
}

/// True when `host` (a `Host` header: a name or address, with or without a port) is loopback,
/// `localhost`, or the host of `public_url`.
pub fn answers_to(host: &str, public_url: &str) -> bool {
    let name = host_name(host);
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Ok(ip) = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return ip.is_loopback();
    }
    let public = public_url.split_once("://").map_or("", |(_, rest)| {
        rest.split(['/', '?', '#']).next().unwrap_or("")
    });
    let public = public.rsplit_once('@').map_or(public, |(_, h)| h);
    !public.is_empty() && name.eq_ignore_ascii_case(host_name(public))
}

/// The name part of `host[:port]` (an IPv6 address keeps its brackets).
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_the_public_host_are_answered() {
        for host in [
            "localhost",
            "LOCALHOST:8022",
            "127.0.0.1",
            "127.0.0.1:8022",
            "127.0.0.9:1",
            "[::1]:8022",
            "[::1]",
        ] {
            assert!(answers_to(host, ""), "{host}");
        }
        let public = "https://roster.example.com/console";
        assert!(answers_to("roster.example.com", public));
        assert!(answers_to("Roster.Example.com:443", public));
        assert!(answers_to(
            "roster.example.com:8443",
            "http://u@roster.example.com:8443"
        ));
    }

    #[test]
    fn other_names_are_refused() {
        for host in [
            "evil.example",
            "evil.example:8022",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.5:8022",
            "[2001:db8::1]:8022",
            "",
            "x",
        ] {
            assert!(!answers_to(host, ""), "{host}");
            assert!(!answers_to(host, "https://roster.example.com"), "{host}");
        }
        assert!(!answers_to(
            "roster.example.com.evil",
            "https://roster.example.com"
        ));
    }
}
