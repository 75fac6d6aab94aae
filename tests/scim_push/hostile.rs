//! A small HTTP/1.1 server for the SCIM push tests that need an application misbehaving in a
//! way `scim2-server` cannot (redirects, broken paging, slowness): each request is answered by
//! a closure from its method and path, one thread per connection, `Connection: close`. Every
//! request line is recorded, so a test can see what Roster asked.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// An answer: status, extra headers, body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn json(status: u16, body: &serde_json::Value) -> Answer {
        Answer {
            status,
            headers: vec![("Content-Type".into(), "application/scim+json".into())],
            body: body.to_string(),
        }
    }
}

/// The running server: its base URL and the request lines it has seen ("METHOD /path").
pub struct Hostile {
    pub base: String,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Hostile {
    pub fn start(answer: impl Fn(&str, &str) -> Answer + Send + Sync + 'static) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (answer, log) = (answer.clone(), log.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, answer.as_ref(), &log);
                });
            }
        });
        Hostile { base, seen }
    }

    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn handle(
    conn: std::net::TcpStream,
    answer: &(dyn Fn(&str, &str) -> Answer + Send + Sync),
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    log.lock().unwrap().push(format!("{method} {path}"));
    let a = answer(&method, &path);
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        a.status,
        a.body.len()
    );
    for (k, v) in &a.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&a.body);
    let mut conn = conn;
    conn.write_all(out.as_bytes())?;
    conn.flush()
}
