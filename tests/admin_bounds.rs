//! The admin listener's bounds against clients that need no credential (review s15 F3-F5), over
//! real sockets against a whole running Roster: half-sent request heads from a few addresses,
//! reopened as fast as the server closes them, cannot keep another address from being answered;
//! a sign-in form is judged by its head (no `roster_login` cookie: 403; a declared body over
//! 16 KiB: 413) before its body is read; bytes sent ahead earn a slow body no extra time; the
//! refusals of a blocked address are logged at most about once a second, not once each.

#[path = "admin_support/mod.rs"]
mod admin_support;
#[path = "hardening_support/mod.rs"]
mod hardening_support;
mod support;

use admin_support::TOKEN;
use hardening_support::*;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

fn health() -> String {
    format!(
        "GET /health HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
         Connection: close\r\n\r\n"
    )
}

/// Keeps `per_address` connections from `from` that each sent `opening` and nothing more,
/// reopened as soon as the server closes one.
async fn hold_openings(
    opening: String,
    from: IpAddr,
    admin: SocketAddr,
    per_address: usize,
    stop: Arc<AtomicBool>,
    reopened: Arc<AtomicUsize>,
) {
    let mut tasks = Vec::new();
    for _ in 0..per_address {
        let (stop, reopened, opening) = (stop.clone(), reopened.clone(), opening.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let mut s = tcp_from(from, admin).await;
                if s.write_all(opening.as_bytes()).await.is_ok() {
                    // Held until the server closes it (or the test ends).
                    let _ = read_to_close(&mut s, 2).await;
                }
                reopened.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// With `max_connections = 16`, 4 per address, 4 addresses of `127.0.<net>.x` keep 4
/// connections each that sent `opening` (reopened at once when closed): every `/health` from a
/// fifth address is answered.
async fn others_are_answered_while_a_few_addresses_hold(opening: String, net: u8) {
    let env = start(
        "",
        "max_connections = 16\nmax_connections_per_address = 4\nclient_timeout_secs = 60",
    )
    .await;
    let admin = env.server().admin.addr;
    let (stop, reopened) = (Arc::new(AtomicBool::new(false)), Arc::default());
    let mut flood = Vec::new();
    for last in 1..=4u8 {
        let from = IpAddr::from([127, 0, net, last]);
        flood.push(tokio::spawn(hold_openings(
            opening.clone(),
            from,
            admin,
            4,
            stop.clone(),
            Arc::clone(&reopened),
        )));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for round in 0..5 {
        let a = request(IpAddr::from([127, 0, net, 50]), admin, &health()).await;
        assert_eq!(a.status, 200, "round {round}: {}", a.text);
    }
    stop.store(true, Ordering::SeqCst);
    for f in flood {
        let _ = f.await;
    }
    eprintln!(
        "held connections reopened: {}",
        reopened.load(Ordering::SeqCst)
    );
}

/// F3: half-sent request heads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_from_a_few_addresses_do_not_shut_others_out() {
    let head = "GET /health HTTP/1.1\r\nHost: localhost\r\n".to_string();
    others_are_answered_while_a_few_addresses_hold(head, 7).await;
}

/// The re-read of s15: connections made busy by a sign-in whose declared body never comes
/// (any `roster_login` cookie passes the first check) filled the listener as F3's half-sent
/// heads did, since only idle connections were pushed out. Now, with every connection busy,
/// the oldest of the address holding the most makes room for a newcomer from another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_sign_ins_from_a_few_addresses_do_not_shut_others_out() {
    others_are_answered_while_a_few_addresses_hold(sign_in_head(16_000, true), 8).await;
}

/// A sign-in request head declaring `len` body bytes, with or without the sign-in cookie.
fn sign_in_head(len: usize, cookie: bool) -> String {
    let cookie = if cookie {
        "Cookie: roster_login=t0k3n\r\n"
    } else {
        ""
    };
    format!(
        "POST /login/operator HTTP/1.1\r\nHost: localhost\r\n{cookie}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// F4: a sign-in without the cookie (403) or declaring 2 MB (413) is answered while its body
/// has barely begun; a body of 15,000 bytes sent at once and then 1 byte a second is cut off
/// about `client_timeout_secs` (2) later, not after the 15 s those bytes used to buy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_forms_are_judged_before_their_bodies_and_cannot_bank_time() {
    let env = start("", "client_timeout_secs = 2").await;
    let admin = env.server().admin.addr;
    let from = IpAddr::from([127, 0, 7, 60]);
    for (cookie, expected) in [(false, 403), (true, 413)] {
        let mut s = tcp_from(from, admin).await;
        s.write_all(sign_in_head(2_000_000, cookie).as_bytes())
            .await
            .unwrap();
        s.write_all(&[b'a'; 1000]).await.unwrap();
        let answer = read_to_close(&mut s, 10)
            .await
            .expect("answered and closed while the body is still owed");
        assert_eq!(parse(&answer).status, expected, "cookie: {cookie}");
    }

    let mut s = tcp_from(from, admin).await;
    s.write_all(sign_in_head(16_000, true).as_bytes())
        .await
        .unwrap();
    s.write_all(&[b'a'; 15_000]).await.unwrap();
    let started = Instant::now();
    let trickle = async {
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if s.write_all(b"a").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(12), trickle).await;
    let waited = started.elapsed();
    let closed = read_to_close(&mut s, 1).await;
    assert!(
        closed.is_some() && waited < Duration::from_secs(12),
        "a trickling body must be cut off well before 15 s (waited {waited:?})"
    );
}

/// F5: with `max_auth_failures = 3`, an address that is blocked sends 300 more sign-ins: all
/// are refused (429), and the log says so in about one line a second, with the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_a_blocked_address_are_not_logged_once_each() {
    let env = start("max_auth_failures = 3", "").await;
    let admin = env.server().admin.addr;
    let from = IpAddr::from([127, 0, 7, 70]);
    for _ in 0..3 {
        let a = request(from, admin, &tenant_sign_in("wrong")).await;
        assert_eq!(a.status, 401, "{}", a.text);
    }
    let started = Instant::now();
    for _ in 0..300 {
        let a = request(from, admin, &tenant_sign_in("wrong")).await;
        assert_eq!(a.status, 429, "{}", a.text);
    }
    let secs = started.elapsed().as_secs() as usize;
    let lines = log_lines_with(&["console tenant sign-in refused", "127.0.7.70"]);
    assert!(
        (1..=secs + 2).contains(&lines),
        "{lines} refusal lines for 300 refusals in {secs} s"
    );
    assert!(
        log_lines_with(&["console tenant sign-in refused", "refused="]) >= 1,
        "the line carries the count"
    );
}
