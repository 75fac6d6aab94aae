//! A real SCIM 2.0 service provider for the SCIM push tests: `scim2-server` (PyPI, by Yaal
//! Coop; installed by `tests/scim_push/install.sh`), started on a free loopback port and
//! stopped when dropped. Its users are read back through its own SCIM API.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `scim2-server` program, installed once per test binary.
fn program() -> &'static str {
    static PROGRAM: OnceLock<String> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scim_push/install.sh");
        let out = Command::new("bash").arg(script).output().unwrap();
        assert!(
            out.status.success(),
            "install.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines().last().unwrap().trim().to_string()
    })
}

include!("../support/ports.rs");

pub struct ScimServer {
    child: Child,
    pub port: u16,
    /// The SCIM base URL (`/Users` is appended).
    pub base: String,
    args: Vec<String>,
    token: Option<String>,
    agent: ureq::Agent,
}

impl ScimServer {
    /// A fresh server with `args` (such as `--bearer-token T`).
    pub fn start(args: &[&str]) -> ScimServer {
        Self::start_on(free_port(), args.iter().map(|s| s.to_string()).collect())
    }

    fn start_on(port: u16, args: Vec<String>) -> ScimServer {
        let child = Command::new(program())
            .args(["--hostname", "127.0.0.1", "--port", &port.to_string()])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let token = args
            .iter()
            .position(|a| a == "--bearer-token")
            .map(|i| args[i + 1].clone());
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build(),
        );
        let s = ScimServer {
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            args,
            token,
            agent,
        };
        let until = Instant::now() + Duration::from_secs(20);
        while s.get("/ServiceProviderConfig").is_none() {
            assert!(Instant::now() < until, "scim2-server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    /// Stops the server (its users are lost: it keeps them in memory).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A fresh, empty server on the same port with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        let again = Self::start_on(self.port, self.args.clone());
        *self = again;
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("Content-Type", "application/scim+json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        match self.agent.run(req.body(bytes).unwrap()) {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let text = r.body_mut().read_to_string().unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    fn get(&self, path: &str) -> Option<Value> {
        let (s, v) = self.request("GET", path, None);
        (s == 200).then_some(v)
    }

    /// Creates a user directly (as the application's own admin would).
    pub fn create(&self, user: Value) -> Value {
        let (s, v) = self.request("POST", "/Users", Some(&user));
        assert_eq!(s, 201, "{v}");
        v
    }

    /// Replaces a user directly (as the application's own admin would, without PATCH).
    pub fn replace(&self, id: &str, user: &Value) -> Value {
        let (s, v) = self.request("PUT", &format!("/Users/{id}"), Some(user));
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Deletes a user directly (as the application's own admin would).
    pub fn delete(&self, id: &str) {
        let (s, v) = self.request("DELETE", &format!("/Users/{id}"), None);
        assert_eq!(s, 204, "{v}");
    }

    /// `GET /Users/{id}`: the user of that id, if the server has it.
    pub fn user(&self, id: &str) -> Option<Value> {
        self.get(&format!("/Users/{id}"))
    }

    /// Every user of the server.
    pub fn users(&self) -> Vec<Value> {
        let v = self.get("/Users?count=1000").unwrap();
        v["Resources"].as_array().cloned().unwrap_or_default()
    }

    /// The user carrying `externalId` `key`.
    pub fn by_external_id(&self, key: &str) -> Option<Value> {
        self.users()
            .into_iter()
            .find(|u| u["externalId"] == json!(key))
    }
}

impl Drop for ScimServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// nginx in front of a [`ScimServer`], limiting requests to `rate` per second (no burst) and
/// answering the excess 429 with `Retry-After: retry_after`.
pub struct RateLimiter {
    child: Child,
    _dir: tempfile::TempDir,
    pub base: String,
}

impl RateLimiter {
    pub fn start(upstream: &ScimServer, rate: u32, retry_after: u32) -> RateLimiter {
        program(); // installs nginx too
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let p = dir.path().display();
        let conf = format!(
            r#"worker_processes 1;
daemon off;
user root;
pid {p}/nginx.pid;
error_log {p}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    limit_req_zone $binary_remote_addr zone=push:1m rate={rate}r/s;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            limit_req zone=push burst=4 nodelay;
            limit_req_status 429;
            add_header Retry-After {retry_after} always;
            proxy_pass http://127.0.0.1:{up};
        }}
    }}
}}
"#,
            up = upstream.port
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let nginx = if std::path::Path::new("/usr/sbin/nginx").exists() {
            "/usr/sbin/nginx"
        } else {
            "nginx"
        };
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "nginx did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        RateLimiter {
            child,
            _dir: dir,
            base: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for RateLimiter {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (SIGKILL would leave them orphaned).
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signals our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
