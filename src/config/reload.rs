//! The live configuration: a [`ConfigHandle`] that every part of the server reads, swapped whole
//! when the file changes on disk (watched with notify) or on SIGHUP. A file that fails validation
//! is logged and ignored: the running config stays. So is a file that is empty or defines no
//! tenants: an editor or `>` caught halfway (or a truncation) must not lock every tenant out.

use super::Config;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

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

    /// Re-reads the file. On success the new config replaces the old one; on failure the old
    /// one stays and the problems are returned (and logged by the caller).
    pub fn reload(&self) -> Result<Arc<Config>, super::ConfigErrors> {
        let fresh = Config::load(&self.path)?;
        if fresh.tenants.is_empty() {
            let empty = std::fs::read(self.path.as_ref())
                .map(|t| t.iter().all(u8::is_ascii_whitespace))
                .unwrap_or(true);
            let why = if empty {
                "the file is empty (truncated, or caught while being written)"
            } else {
                "the file defines no tenants ([[tenants]]), which would lock every tenant out"
            };
            return Err(super::ConfigErrors {
                file: self.path.as_ref().clone(),
                problems: vec![why.to_string()],
            });
        }
        let fresh = Arc::new(fresh);
        match self.inner.write() {
            Ok(mut g) => *g = fresh.clone(),
            Err(poisoned) => *poisoned.into_inner() = fresh.clone(),
        }
        self.changed.send_modify(|n| *n += 1);
        Ok(fresh)
    }

    fn reload_and_log(&self, why: &str) {
        let before = self.current();
        match self.reload() {
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
                handle.reload_and_log("SIGHUP");
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
                // Editors write in several steps: wait for the burst to end, then read once.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while rx.try_recv().is_ok() {}
                handle.reload_and_log("file changed");
            }
        });
    }
}

fn config_text_eq(a: &Config, b: &Config) -> bool {
    match (toml::to_string(a), toml::to_string(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
