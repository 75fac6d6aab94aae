//! The live configuration: a [`ConfigHandle`] that every part of the server reads, swapped whole
//! when the file changes on disk (watched with notify) or on SIGHUP. A file that fails validation
//! is logged and ignored: the running config stays. So is a file that is empty or defines no
//! tenants: an editor or `>` caught halfway (or a truncation) must not lock every tenant out.
//!
//! A file rewritten in place can be caught half-written and still be valid TOML (a prefix that
//! ends at a line boundary drops the later tenants). So the watcher and SIGHUP read the file
//! twice, [`SETTLE`] apart, and apply it only when both reads are the same bytes and no change
//! event came in between; otherwise they read again, a few times, and then wait for the next
//! change ([`ConfigHandle::reload_settled`]).
//!
//! Some keys are read once at start and cannot change while the server runs
//! ([`RESTART_ONLY`]: `data_dir`, the listen addresses, `host_keys`, `[store]`, `[cluster]`).
//! A reload that changes one keeps the running value of each, applies the rest, and logs a WARN
//! naming the key ("needs a restart"), so no part of the server ever sees a value the others
//! do not use (a half-applied `data_dir` would move homes and claims but not the store).

use super::Config;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The wait between the two reads of the file that must agree before it is applied.
pub const SETTLE: Duration = Duration::from_millis(300);
/// Pairs of reads before a reload of a file that keeps changing is given up (until its next
/// change event).
const SETTLE_TRIES: usize = 5;

/// The keys read once at start, which a reload cannot change (docs/operators.md, "Config
/// reload"): their running values stay until a restart.
pub const RESTART_ONLY: [&str; 6] = [
    "[server] data_dir",
    "[server] listen",
    "[server] host_keys",
    "[admin] listen",
    "[store]",
    "[cluster]",
];

/// Shared, reloadable config. Cloning is cheap; `current()` returns a snapshot.
#[derive(Clone)]
pub struct ConfigHandle {
    inner: Arc<RwLock<Arc<Config>>>,
    path: Arc<PathBuf>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl ConfigHandle {
    pub fn new(path: &Path, config: Config) -> Self {
        let (changed, _) = tokio::sync::watch::channel(0);
        ConfigHandle {
            inner: Arc::new(RwLock::new(Arc::new(config))),
            path: Arc::new(path.to_path_buf()),
            changed,
        }
    }

    /// The config in force now.
    pub fn current(&self) -> Arc<Config> {
        match self.inner.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Subscribe to reloads: the value counts successful reloads.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Re-reads the file once and applies it. On success the new config replaces the old one;
    /// on failure the old one stays and the problems are returned (and logged by the caller).
    /// The watcher and SIGHUP use [`ConfigHandle::reload_settled`] instead.
    pub fn reload(&self) -> Result<Arc<Config>, super::ConfigErrors> {
        let text = std::fs::read(self.path.as_ref()).map_err(|e| self.unreadable(&e))?;
        self.apply(&text)
    }

    /// Reads the file until two reads [`SETTLE`] apart are the same bytes, with no change event
    /// (on `events`) in between, then applies it like [`ConfigHandle::reload`]. After
    /// [`SETTLE_TRIES`] reads that differ, nothing is applied and an error says why: the next
    /// change event (the writer's last write) reads it again.
    pub async fn reload_settled(
        &self,
        mut events: Option<&mut tokio::sync::mpsc::UnboundedReceiver<()>>,
    ) -> Result<Arc<Config>, super::ConfigErrors> {
        for _ in 0..SETTLE_TRIES {
            let first = tokio::fs::read(self.path.as_ref()).await;
            tokio::time::sleep(SETTLE).await;
            let mut moved = false;
            if let Some(rx) = events.as_mut() {
                while rx.try_recv().is_ok() {
                    moved = true;
                }
            }
            let second = tokio::fs::read(self.path.as_ref()).await;
            match (first, second) {
                (Ok(a), Ok(b)) if a == b && !moved => return self.apply(&b),
                (_, Err(e)) => return Err(self.unreadable(&e)),
                _ => {}
            }
        }
        Err(super::ConfigErrors {
            file: self.path.as_ref().clone(),
            problems: vec![format!(
                "the file was still changing after {SETTLE_TRIES} reads {} ms apart; it is \
                 read again at its next change (write the config to a temporary file and \
                 rename it over roster.toml)",
                SETTLE.as_millis()
            )],
        })
    }

    fn unreadable(&self, e: &std::io::Error) -> super::ConfigErrors {
        super::ConfigErrors {
            file: self.path.as_ref().clone(),
            problems: vec![format!("cannot read the file: {e}")],
        }
    }

    /// Parses and checks `text` (the file's bytes) and swaps it in, keeping the running value
    /// of each [`RESTART_ONLY`] key (each one that differs is logged at WARN).
    fn apply(&self, text: &[u8]) -> Result<Arc<Config>, super::ConfigErrors> {
        let errors = |problems: Vec<String>| super::ConfigErrors {
            file: self.path.as_ref().clone(),
            problems,
        };
        let text = std::str::from_utf8(text)
            .map_err(|_| errors(vec!["the file is not UTF-8 text".into()]))?;
        let mut fresh = Config::parse(text).map_err(errors)?;
        if let Some(why) = super::tenantless(text, &fresh) {
            return Err(errors(vec![why.to_string()]));
        }
        for key in keep_restart_only(&self.current(), &mut fresh) {
            tracing::warn!(
                key,
                file = %self.path.display(),
                "config key changed, but it needs a restart: the running value stays until then"
            );
        }
        let fresh = Arc::new(fresh);
        match self.inner.write() {
            Ok(mut g) => *g = fresh.clone(),
            Err(poisoned) => *poisoned.into_inner() = fresh.clone(),
        }
        self.changed.send_modify(|n| *n += 1);
        Ok(fresh)
    }

    async fn reload_and_log(
        &self,
        why: &str,
        events: Option<&mut tokio::sync::mpsc::UnboundedReceiver<()>>,
    ) {
        let before = self.current();
        match self.reload_settled(events).await {
            Ok(now) => {
                if config_text_eq(&before, &now) {
                    tracing::debug!(why, "config file unchanged");
                } else {
                    tracing::info!(
                        why,
                        tenants = now.tenants.len(),
                        file = %self.path.display(),
                        "config reloaded"
                    );
                }
            }
            Err(e) => tracing::error!(
                why,
                "config reload rejected, keeping the running config: {e}"
            ),
        }
    }

    /// Watches the config file (its folder, so editors that replace the file are seen) and
    /// listens for SIGHUP; reloads on either. Runs until the process ends.
    pub fn spawn_watchers(&self) {
        let handle = self.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!("cannot listen for SIGHUP; reload on file change only");
                return;
            };
            while hup.recv().await.is_some() {
                handle.reload_and_log("SIGHUP", None).await;
            }
        });

        let handle = self.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let file = self.path.as_ref().clone();
        let file_name = file.file_name().map(|n| n.to_os_string());
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev {
                let ours = ev
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name);
                if ours && !matches!(ev.kind, notify::EventKind::Access(_)) {
                    let _ = tx.send(());
                }
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("cannot watch the config file ({e}); reload with SIGHUP");
                return;
            }
        };
        if let Err(e) =
            notify::Watcher::watch(&mut watcher, &dir, notify::RecursiveMode::NonRecursive)
        {
            tracing::warn!(dir = %dir.display(), "cannot watch the config folder ({e}); reload with SIGHUP");
            return;
        }
        tokio::spawn(async move {
            let _keep = watcher;
            while rx.recv().await.is_some() {
                // Editors write in several steps: wait for the burst to end, then read until
                // the file holds still.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while rx.try_recv().is_ok() {}
                handle.reload_and_log("file changed", Some(&mut rx)).await;
            }
        });
    }
}

/// Puts the running value of each [`RESTART_ONLY`] key into `fresh`; returns the keys whose
/// value in `fresh` differed.
fn keep_restart_only(running: &Config, fresh: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    let [data_dir, listen, host_keys, admin_listen, store, cluster] = RESTART_ONLY;
    let (rs, fs) = (&running.server, &mut fresh.server);
    if rs.data_dir != fs.data_dir {
        fs.data_dir = rs.data_dir.clone();
        kept.push(data_dir);
    }
    if rs.listen != fs.listen {
        fs.listen = rs.listen.clone();
        kept.push(listen);
    }
    if rs.host_keys != fs.host_keys {
        fs.host_keys = rs.host_keys.clone();
        kept.push(host_keys);
    }
    if running.admin.listen != fresh.admin.listen {
        fresh.admin.listen = running.admin.listen.clone();
        kept.push(admin_listen);
    }
    if running.store != fresh.store {
        fresh.store = running.store.clone();
        kept.push(store);
    }
    if running.cluster != fresh.cluster {
        fresh.cluster = running.cluster.clone();
        kept.push(cluster);
    }
    kept
}

fn config_text_eq(a: &Config, b: &Config) -> bool {
    match (toml::to_string(a), toml::to_string(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0XSsfOIUbEVJFH1EkHwIqJ5NV+nZFzs1OHp9Fk1dcWs";

    fn text(head: &str, tenants: &[&str]) -> String {
        let mut s = head.to_string();
        for t in tenants {
            s.push_str(&format!(
                "\n[[tenants]]\nid = \"{t}\"\npassword_hash = \"{HASH}\"\nnotify = [\"it@{t}.example\"]\n"
            ));
        }
        s
    }

    #[test]
    fn a_reload_keeps_the_running_value_of_each_restart_only_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roster.toml");
        let head = "[server]\ndata_dir = \"/srv/data\"\nlisten = \"127.0.0.1:2222\"\n\
                    [admin]\nlisten = \"127.0.0.1:8022\"\n[mail]\nsmtp_url = \"smtp://127.0.0.1:25\"\n\
                    from = \"r@example.com\"\n";
        let first = text(head, &["acme"]);
        std::fs::write(&path, &first).unwrap();
        let handle = ConfigHandle::new(&path, Config::parse(&first).unwrap());
        let moved = "[server]\ndata_dir = \"/srv/data2\"\nlisten = \"127.0.0.1:2223\"\n\
                     host_keys = \"/elsewhere\"\n[admin]\nlisten = \"127.0.0.1:8023\"\n\
                     [cluster]\nlease_secs = 60\n[mail]\nsmtp_url = \"smtp://127.0.0.1:2525\"\n\
                     from = \"r@example.com\"\n";
        std::fs::write(&path, text(moved, &["acme", "beta"])).unwrap();
        let now = handle.reload().unwrap();
        // Kept: the running values of the keys that need a restart.
        assert_eq!(now.server.data_dir, PathBuf::from("/srv/data"));
        assert_eq!(
            now.tenant_home("beta"),
            PathBuf::from("/srv/data/tenants/beta")
        );
        assert_eq!(now.server.listen, "127.0.0.1:2222");
        assert_eq!(now.server.host_keys, PathBuf::from("host_keys"));
        assert_eq!(now.admin.listen, "127.0.0.1:8022");
        assert_eq!(now.cluster.lease_secs, 30);
        // Applied: everything else.
        assert_eq!(now.tenants.len(), 2);
        let mail = now.mail.as_ref().unwrap();
        assert_eq!(mail.smtp_url, "smtp://127.0.0.1:2525");
        let mut fresh = Config::parse(&text(moved, &["acme"])).unwrap();
        let kept = keep_restart_only(&Config::parse(&first).unwrap(), &mut fresh);
        assert_eq!(
            kept,
            RESTART_ONLY[..4]
                .iter()
                .chain(&RESTART_ONLY[5..])
                .copied()
                .collect::<Vec<_>>()
        );
    }

    /// p13 of the review of 2026-11-30 (F6): the file rewritten in place in two writes, the
    /// second 350 ms after the first; the first alone is valid TOML with one tenant fewer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_caught_half_written_is_not_applied() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roster.toml");
        let full = text("", &["acme", "beta"]);
        std::fs::write(&path, &full).unwrap();
        let handle = ConfigHandle::new(&path, Config::parse(&full).unwrap());
        handle.spawn_watchers();
        let mut changes = handle.subscribe();
        let seen = handle.clone();
        let counts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = counts.clone();
        let recorder = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let n = seen.current().tenants.len();
                record.lock().unwrap().push(n);
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cut = full.find("\n[[tenants]]\nid = \"beta\"").unwrap();
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&full.as_bytes()[..cut]).unwrap();
        tokio::time::sleep(Duration::from_millis(350)).await;
        f.write_all(&full.as_bytes()[cut..]).unwrap();
        drop(f);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        recorder.abort();
        let counts = counts.lock().unwrap().clone();
        assert!(!counts.is_empty(), "the rewrite was never reloaded");
        assert_eq!(handle.current().tenants.len(), 2);
        assert!(
            !counts.contains(&1),
            "the half-written file was applied: {counts:?}"
        );
    }
}
