//! A real, throwaway PostgreSQL cluster for one test: `initdb` into a temp folder under /tmp,
//! `pg_ctl start` on a free port of 127.0.0.1 with its unix socket in that folder, fsync off
//! (the operating system keeps what a stopped server wrote) but `synchronous_commit` on: a
//! commit PostgreSQL acknowledged survives `stop` (immediate), as Roster's exactly-once needs.
//! When the tests run as root the cluster runs as `nobody` (PostgreSQL refuses to run as root)
//! through `runuser -u nobody --`. [`TestPostgres::url`] is a `postgres://` URL for the superuser
//! `roster` (trust authentication, no password). Dropping the value stops the cluster
//! (`pg_ctl stop -m immediate`) and removes the folder.
//!
//! Starting panics with PostgreSQL's own output when the binaries are missing or the server
//! does not start: a PostgreSQL test never skips silently. `tests/postgres/install.sh`
//! installs the binaries.
//!
//! [`TestPostgres::start_with_ssl`] starts the cluster with `ssl = on` and a server certificate
//! for the host name `localhost` made at start by `openssl` and signed by a CA made with it
//! ([`TestPostgres::ssl_ca`], a PEM file for `sslrootcert`).
//!
//! Include it with `#[path = "support/postgres.rs"] mod test_postgres;` in the test files that
//! need it, so test binaries without PostgreSQL do not carry it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The user the cluster runs as when the tests run as root.
const UNPRIVILEGED_USER: &str = "nobody";
/// The cluster's superuser; the URL logs in as it.
pub const SUPERUSER: &str = "roster";

pub struct TestPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<String>,
    pub port: u16,
    /// `-c name=value` options of `postgres` beyond the usual ones (TLS).
    extra_options: String,
    /// With [`TestPostgres::start_with_ssl`]: the PEM file of the CA that signed the server's
    /// certificate (for `sslrootcert`).
    pub ssl_ca: Option<PathBuf>,
}

impl TestPostgres {
    /// Creates and starts a cluster; panics with the reason when it cannot.
    pub fn start() -> TestPostgres {
        Self::start_with(false)
    }

    /// As [`start`](Self::start), with `ssl = on` and a certificate for `localhost` signed by
    /// the CA of [`ssl_ca`](Self::ssl_ca); plain connections are still accepted.
    #[allow(dead_code)] // only the TLS tests call it
    pub fn start_with_ssl() -> TestPostgres {
        Self::start_with(true)
    }

    fn start_with(ssl: bool) -> TestPostgres {
        let bin = server_bin_dir();
        let run_as = is_root().then(|| UNPRIVILEGED_USER.to_string());
        let dir = tempfile::Builder::new()
            .prefix("roster-pg-")
            .tempdir_in("/tmp")
            .expect("cannot create a temp folder for PostgreSQL under /tmp");
        if let Some(user) = &run_as {
            let (uid, gid) = user_ids(user);
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("cannot hand the PostgreSQL temp folder to the unprivileged user");
        }
        let mut pg = TestPostgres {
            dir,
            bin,
            run_as,
            port: 0,
            extra_options: String::new(),
            ssl_ca: None,
        };
        let data = pg.data_dir();
        pg.run_checked(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        if ssl {
            pg.make_certificates();
        }
        // A free port can be taken by someone else between the probe and the start: retry.
        let mut last = String::new();
        for _ in 0..5 {
            pg.port = free_port();
            match pg.try_start() {
                Ok(()) => return pg,
                Err(e) => last = e,
            }
        }
        panic!("PostgreSQL did not start (tests/postgres/install.sh installs it):\n{last}");
    }

    /// `postgres://roster@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, db: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{db}\""));
        self.url(db)
    }

    /// Runs SQL through `psql` (from the same bin folder) and returns its stdout, trimmed;
    /// panics with psql's output when it fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let psql = self.bin.join("psql");
        let psql = if psql.exists() {
            psql
        } else {
            PathBuf::from("psql")
        };
        let out = Command::new(psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", SUPERUSER, "-d", db])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .output()
            .expect("cannot run psql");
        assert!(
            out.status.success(),
            "psql failed on {sql:?}: {}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Puts `line` first in pg_hba.conf and reloads the server (e.g. to demand a password).
    pub fn hba_prepend(&self, line: &str) {
        let hba = self.data_dir().join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("cannot read pg_hba.conf");
        std::fs::write(&hba, format!("{line}\n{old}")).expect("cannot write pg_hba.conf");
        assert_eq!(self.psql("postgres", "SELECT pg_reload_conf()"), "t");
    }

    /// Stops the server at once, as a crash or a power loss would (`pg_ctl stop -m immediate`:
    /// open connections are cut, nothing is shut down cleanly). [`start_again`](Self::start_again)
    /// brings it back on the same port with the same data.
    #[allow(dead_code)] // only the fault tests call it
    pub fn stop(&self) {
        let data = self.data_dir();
        self.run_checked(
            "pg_ctl",
            &["-D", path_str(&data), "-m", "immediate", "-w", "stop"],
        );
    }

    /// Stops every process of the cluster with SIGSTOP (a paused VM, a stalled disk): open
    /// connections stay open and nothing answers. [`thaw`](Self::thaw) resumes them.
    #[allow(dead_code)] // only the fault tests call it
    pub fn freeze(&self) {
        self.signal_all("-STOP");
    }

    /// Resumes a cluster [`freeze`](Self::freeze) stopped.
    #[allow(dead_code)] // only the fault tests call it
    pub fn thaw(&self) {
        self.signal_all("-CONT");
    }

    /// Sends `signal` to the postmaster and each of its children (read from /proc).
    fn signal_all(&self, signal: &str) {
        let pid_file = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .expect("the cluster is running");
        let postmaster = pid_file.lines().next().unwrap().trim().to_string();
        let mut pids = vec![postmaster.clone()];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid …: the command may hold spaces, so read after its ')'.
            let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
            if after.split_whitespace().nth(1) == Some(postmaster.as_str()) {
                pids.push(entry.file_name().to_string_lossy().to_string());
            }
        }
        let status = Command::new("kill")
            .arg(signal)
            .args(&pids)
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pids:?}");
    }

    /// Starts the stopped server again on the same port; panics when it does not start.
    #[allow(dead_code)] // only the fault tests call it
    pub fn start_again(&self) {
        if let Err(e) = self.try_start() {
            panic!("PostgreSQL did not start again:\n{e}");
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn try_start(&self) -> Result<(), String> {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-F -p {} -k {} -c listen_addresses=127.0.0.1 -c full_page_writes=off \
             -c max_connections=50{}",
            self.port,
            path_str(self.dir.path()),
            self.extra_options
        );
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        );
        if out.status.success() {
            return Ok(());
        }
        let server_log = std::fs::read_to_string(&log).unwrap_or_default();
        Err(format!("{}\nserver log:\n{server_log}", describe(&out)))
    }

    /// A CA and a server certificate for `localhost` (P-256 keys, two days), made by `openssl`
    /// in the temp folder; the server's key is handed to the user the cluster runs as.
    fn make_certificates(&mut self) {
        let dir = self.dir.path().to_path_buf();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("cannot run openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", describe(&out));
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=roster test CA"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
        openssl(&ca);
        let mut csr = vec!["req", "-new", "-subj", "/CN=localhost"];
        csr.extend(ec);
        csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
        openssl(&csr);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName = DNS:localhost\nbasicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n",
        )
        .expect("cannot write the certificate extensions");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ]);
        let key = dir.join("server.key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("cannot restrict the server key");
        if let Some(user) = &self.run_as {
            let (uid, gid) = user_ids(user);
            for f in ["server.key", "server.crt"] {
                std::os::unix::fs::chown(dir.join(f), Some(uid), Some(gid))
                    .expect("cannot hand the server certificate to the unprivileged user");
            }
        }
        self.extra_options = format!(
            " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            path_str(&dir.join("server.crt")),
            path_str(&key)
        );
        self.ssl_ca = Some(dir.join("ca.crt"));
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("LC_ALL", "C")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
    }

    fn run_checked(&self, tool: &str, args: &[&str]) {
        let out = self.run(tool, args);
        assert!(
            out.status.success(),
            "{tool} failed (tests/postgres/install.sh installs PostgreSQL): {}",
            describe(&out)
        );
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self.run(
            "pg_ctl",
            &["-D", path_str(&data), "-m", "immediate", "stop"],
        );
    }
}

/// The folder of `initdb`/`pg_ctl`/`postgres`: Debian's newest `/usr/lib/postgresql/<major>/bin`,
/// else the folder of `initdb` on PATH. When they are missing, `tests/postgres/install.sh` is
/// run once (so `cargo test` sets up its own PostgreSQL on a fresh machine, as the README
/// promises) and the search is repeated; a failed install panics with its output.
fn server_bin_dir() -> PathBuf {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    if let Some(bin) = find_server_bin_dir() {
        return bin;
    }
    INSTALL.call_once(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/postgres/install.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .expect("cannot run tests/postgres/install.sh");
        assert!(
            out.status.success(),
            "tests/postgres/install.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    find_server_bin_dir().unwrap_or_else(|| {
        panic!("PostgreSQL's initdb/pg_ctl are not installed: run tests/postgres/install.sh")
    })
}

fn find_server_bin_dir() -> Option<PathBuf> {
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .expect("cannot run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no user {user:?} to run PostgreSQL as"))
    };
    (id("-u"), id("-g"))
}

include!("ports.rs");

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
