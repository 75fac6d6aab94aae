// Free ports for the servers the tests start (roster serve, PostgreSQL, ChromeDriver, the SCIM
// server). Pasted with `include!("ports.rs")` into each support file that needs one, since
// several of those files are compiled into one test binary.

/// Lowest port handed out; [`SPAN`] ports from here stay below Linux's ephemeral range
/// (32768-60999 by default).
#[allow(dead_code)]
const LOW: u32 = 20_000;
#[allow(dead_code)]
const SPAN: u32 = 12_000;

/// A port of 127.0.0.1 that was free a moment ago, for a server started next. Taken below the
/// kernel's ephemeral range: the ports `bind(…:0)` and outgoing connections get come from that
/// range, so neither can take this one before the server binds it (which made two-node tests
/// fail now and then with "Address already in use"). Ports are handed out one after the other
/// from a place drawn once (from the process id and the clock, when the first is asked for),
/// each checked by binding it. Drawn once, not per call: a place drawn per call let two tests
/// running side by side get the same port before either server bound it (CI, 2026-11-30:
/// a node "cannot listen on 127.0.0.1:27858 for the admin API").
#[allow(dead_code)]
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: OnceLock<u32> = OnceLock::new();
    // Each pasted copy has its own counter and start: the clock keeps two copies from starting
    // at the same place, and each walks on from its own.
    let start = *START.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        std::process::id().wrapping_mul(7919) ^ nanos
    });
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + start.wrapping_add(n) % SPAN;
        let port = u16::try_from(port).expect("below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}
