//! The signals of `roster serve`, listened for from the first line of `serve::run` (review
//! s30: until then SIGHUP and SIGTERM kept their default action during start-up, which can take
//! ten seconds and more, and SIGHUP killed the process without a line).
//!
//! - The first SIGTERM or SIGINT asks for a stop ([`Signals::stopping`]): during start-up the
//!   start ends at its next step and the process exits 0 without starting the intake if it has
//!   not started yet; once started, the graceful stop of `RunningServer::finish` runs.
//! - A second SIGTERM or SIGINT ends the process at once with status 128 + the signal number
//!   (143, 130), the shell's convention, without waiting for anything: what an import had not
//!   committed is not applied, and its claim is finished at the next start.
//! - SIGHUP during start-up is logged and remembered; once started, the config is read again
//!   ([`Signals::reload_if_asked`]). After the start the config watchers take SIGHUP.
//!
//! Nothing enters but the signals; what leaves is the stop request and log lines.

use crate::config::ConfigHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// A signal that stops `roster serve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Term,
    Int,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Term => "SIGTERM",
            Stop::Int => "SIGINT",
        }
    }

    /// 128 + the signal's number: how a shell reports a process ended by it.
    fn exit_status(self) -> i32 {
        128 + match self {
            Stop::Term => libc::SIGTERM,
            Stop::Int => libc::SIGINT,
        }
    }
}

/// The stop request and the SIGHUPs of the start-up, fed by a task listening for the signals.
pub struct Signals {
    stop: watch::Receiver<Option<Stop>>,
    started: Arc<AtomicBool>,
    hup_during_start: Arc<AtomicBool>,
}

impl Signals {
    /// Listens for SIGTERM, SIGINT and SIGHUP from now on (their default actions no longer
    /// apply).
    pub fn listen() -> anyhow::Result<Signals> {
        let term = signal(SignalKind::terminate())?;
        let int = signal(SignalKind::interrupt())?;
        let hup = signal(SignalKind::hangup())?;
        let (tx, stop) = watch::channel(None);
        let started = Arc::new(AtomicBool::new(false));
        let hup_during_start = Arc::new(AtomicBool::new(false));
        let (s, h) = (started.clone(), hup_during_start.clone());
        tokio::spawn(follow(term, int, hup, tx, s, h));
        Ok(Signals {
            stop,
            started,
            hup_during_start,
        })
    }

    /// The stop request: None until the first SIGTERM or SIGINT.
    pub fn stopping(&self) -> watch::Receiver<Option<Stop>> {
        self.stop.clone()
    }

    /// Waits for the first SIGTERM or SIGINT (at once if one came already).
    pub async fn wait(&self) -> Stop {
        let mut rx = self.stop.clone();
        loop {
            if let Some(s) = *rx.borrow_and_update() {
                return s;
            }
            if rx.changed().await.is_err() {
                // The listening task is gone (it never returns): wait for ever as before.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Marks the start-up done; a SIGHUP that came during it reloads the config now.
    pub async fn reload_if_asked(&self, config: &ConfigHandle) {
        self.started.store(true, Ordering::SeqCst);
        if !self.hup_during_start.swap(false, Ordering::SeqCst) {
            return;
        }
        match config.reload_settled(None).await {
            Ok(now) => tracing::info!(
                tenants = now.tenants.len(),
                "config read again for the SIGHUP received during start-up"
            ),
            Err(e) => tracing::error!(
                "config reload (SIGHUP during start-up) rejected, keeping the running config: {e}"
            ),
        }
    }
}

/// The listening task: see the module doc.
async fn follow(
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
    mut hup: tokio::signal::unix::Signal,
    tx: watch::Sender<Option<Stop>>,
    started: Arc<AtomicBool>,
    hup_during_start: Arc<AtomicBool>,
) {
    loop {
        let got = tokio::select! {
            _ = term.recv() => Stop::Term,
            _ = int.recv() => Stop::Int,
            _ = hup.recv() => {
                if !started.load(Ordering::SeqCst) {
                    tracing::info!("SIGHUP during start-up: the config is read again once the server has started");
                    hup_during_start.store(true, Ordering::SeqCst);
                }
                continue;
            }
        };
        if tx.borrow().is_some() {
            tracing::warn!(
                signal = got.name(),
                status = got.exit_status(),
                "second stop signal: exiting now without waiting; what a running import had not \
                 committed is not applied, and its claim is finished at the next start"
            );
            std::process::exit(got.exit_status());
        }
        tracing::info!(signal = got.name(), "stop signal received");
        tx.send_replace(Some(got));
    }
}
