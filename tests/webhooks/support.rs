//! The webhook test receiver (tests/webhooks/receiver.py, which verifies every delivery with
//! the Standard Webhooks reference library) as a child process, and what it recorded.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// 32 bytes, `whsec_` + base64.
pub const SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
/// Another 32 bytes: the secret being rotated out in the rotation tests.
pub const OLD_SECRET: &str = "whsec_T0xEb2xkT0xEb2xkT0xEb2xkT0xEb2xkT0xEb2xkT0w=";
/// A third secret that neither side of a rotation uses.
pub const OTHER_SECRET: &str = "whsec_OTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTBmZWRjYmE=";

/// Installs `standardwebhooks` (tests/webhooks/install.sh) when python3 cannot import it.
pub fn ensure_installed() {
    let have = Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !have {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhooks");
        let ok = Command::new("bash")
            .arg(dir.join("install.sh"))
            .status()
            .expect("run tests/webhooks/install.sh");
        assert!(ok.success(), "tests/webhooks/install.sh failed");
    }
}

/// A running receiver; killed on drop.
pub struct Receiver {
    child: Child,
    pub url: String,
    log: PathBuf,
    control: PathBuf,
    _dir: tempfile::TempDir,
}

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The `webhook-id` as sent: `msg_<tenant>_<seq>_<ms>`.
    pub id: String,
    /// The id without its time: `msg_<tenant>_<seq>`, what the tests name messages by.
    pub event: String,
    pub timestamp: i64,
    /// The `webhook-signature` header as sent.
    pub signature: String,
    pub verified: bool,
    pub status: u16,
    pub body: Value,
}

impl Receiver {
    /// Starts a receiver verifying with `secret`.
    pub fn start(secret: &str) -> Receiver {
        ensure_installed();
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhooks/receiver.py");
        let (log, control, port) = (
            dir.path().join("log.jsonl"),
            dir.path().join("control"),
            dir.path().join("port"),
        );
        let child = Command::new("python3")
            .arg(script)
            .args([secret, path_str(&log), path_str(&control), path_str(&port)])
            .spawn()
            .expect("start python3 receiver.py");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port) {
                break p.trim().to_string();
            }
            assert!(Instant::now() < deadline, "the receiver did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        Receiver {
            child,
            url: format!("http://127.0.0.1:{port}/hook"),
            log,
            control,
            _dir: dir,
        }
    }

    /// The answers to give next, in order (see receiver.py: `500`, `429:SECS`, `410`, ...).
    pub fn answer(&self, plan: &str) {
        std::fs::write(&self.control, plan).unwrap();
    }

    /// Every delivery so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let id = v["id"].as_str().unwrap_or_default().to_string();
                Seen {
                    event: event_of(&id),
                    id,
                    timestamp: v["timestamp"].as_str().unwrap_or("0").parse().unwrap_or(0),
                    signature: v["signature"].as_str().unwrap_or_default().to_string(),
                    verified: v["verified"].as_bool().unwrap_or(false),
                    status: v["status"].as_u64().unwrap_or(0) as u16,
                    body: v["body"].clone(),
                }
            })
            .collect()
    }

    /// Ids of the requests that arrived so far, answered or not (in arrival order), without
    /// their time (`msg_<tenant>_<seq>`).
    pub fn arrivals(&self) -> Vec<String> {
        let mut path = self.log.clone().into_os_string();
        path.push(".arrivals");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(event_of)
            .collect()
    }

    /// Waits until at least `n` deliveries were answered 2xx; returns every delivery.
    pub fn wait_delivered(&self, n: usize, within: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.seen();
            if seen.iter().filter(|s| s.status < 300).count() >= n {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{n} deliveries not received in {within:?}; got {seen:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `msg_<tenant>_<seq>` of a `webhook-id` `msg_<tenant>_<seq>_<ms>` (or of a later part of a
/// big event, `..._<ms>_c<change>`); panics on another form.
pub fn event_of(id: &str) -> String {
    let whole = match id.rsplit_once("_c") {
        Some((head, change))
            if !change.is_empty() && change.bytes().all(|b| b.is_ascii_digit()) =>
        {
            head
        }
        _ => id,
    };
    let (event, ms) = whole.rsplit_once('_').unwrap_or(("", ""));
    assert!(
        event.starts_with("msg_") && !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()),
        "not a webhook-id of the form msg_<tenant>_<seq>_<ms>: {id:?}"
    );
    event.to_string()
}
