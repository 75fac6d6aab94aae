//! For the admin listener's unit tests: an [`AppState`] over a sled store in a temporary
//! folder, with one tenant `acme`, as `start` builds it (no listener).

use super::{console, heavy, AppState};
use crate::config::{Config, ConfigHandle};
use crate::intake::Intake;
use crate::store::Store;
use std::path::Path;

/// An argon2 hash of a password no test uses.
const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0XSsfOIUbEVJFH1EkHwIqJ5NV+nZFzs1OHp9Fk1dcWs";

/// The config of [`state`]: data in `dir`, tenant `acme` (file `users.csv`).
pub(crate) fn config(dir: &Path) -> Config {
    let text = format!(
        "[server]\ndata_dir = {:?}\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [mail]\nsmtp_url = \"smtp://127.0.0.1:25\"\nfrom = \"r@example.com\"\n\
         [[tenants]]\nid = \"acme\"\npassword_hash = \"{HASH}\"\nnotify = [\"it@acme.example\"]\n",
        dir.display().to_string()
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("{e:?}"))
}

/// An [`AppState`] over the config of [`config`] and a sled store in `dir` (needs a tokio
/// runtime: the intake starts its tasks).
pub(crate) fn state(dir: &Path) -> AppState {
    let config = config(dir);
    std::fs::create_dir_all(config.tenant_home("acme")).unwrap();
    let handle = ConfigHandle::new(&dir.join("roster.toml"), config);
    let store = Store::open(&dir.join("store")).unwrap();
    let (_uploads, rx) = tokio::sync::mpsc::unbounded_channel();
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let intake = Intake::start(handle.clone(), store.clone(), rx, wake);
    AppState {
        config: handle,
        store,
        intake,
        preview_files: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
        previews: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
        generated_token: std::sync::Arc::new(std::sync::Mutex::new(None)),
        heavy: heavy::HeavyTurns::default(),
        throttle: crate::login::LoginThrottle::default(),
        sessions: console::Sessions::default(),
        held_plans: console::HeldPlans::default(),
    }
}
