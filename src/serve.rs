//! `roster serve`: starts every stage of the server and stops them on SIGINT/SIGTERM.
//!
//! The config file enters here, becomes a [`ConfigHandle`] (reloaded on change or SIGHUP), and
//! is handed to the SFTP listener; upload events leave the listener on a channel that the
//! intake consumes.

use crate::config::{Config, ConfigHandle};
use crate::sftp::{hostkeys, SftpServer, UploadFinished, UploadSink};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// A running SFTP listener (used by `serve` and by the integration tests).
pub struct RunningSftp {
    pub addr: SocketAddr,
    pub config: ConfigHandle,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSftp {
    /// Stops accepting new sessions and waits for the listener to end.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Loads the config at `path`, prepares host keys and folders, binds the SFTP listener and starts
/// serving; finished uploads go to `sink`. Also starts the config watchers.
pub async fn start_sftp(path: &Path, sink: Arc<dyn UploadSink>) -> anyhow::Result<RunningSftp> {
    let config = Config::load(path)?;
    let handle = ConfigHandle::new(path, config.clone());
    handle.spawn_watchers();
    let keys = hostkeys::load_or_create(&config.server.host_keys)?;
    for k in &keys {
        tracing::info!(algorithm = %k.algorithm(), fingerprint = %k.fingerprint(), "host key");
    }
    std::fs::create_dir_all(config.server.data_dir.join("tenants")).with_context(|| {
        format!(
            "cannot create the data folder {}",
            config.server.data_dir.display()
        )
    })?;
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, tenants = config.tenants.len(), "SFTP listening");
    let server = SftpServer::new(handle.clone(), &keys, sink);
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(server.run(listener, rx));
    Ok(RunningSftp {
        addr,
        config: handle,
        shutdown,
        task,
    })
}

/// `roster serve`: runs until SIGINT or SIGTERM.
pub async fn run(path: &Path) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<UploadFinished>();
    let sftp = start_sftp(path, Arc::new(tx)).await?;
    let uploads = tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            tracing::debug!(tenant = %ev.tenant, path = %ev.path, size = ev.size, "upload event received");
        }
    });
    wait_for_stop_signal().await;
    tracing::info!("stopping: no new sessions");
    sftp.stop().await;
    uploads.abort();
    Ok(())
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
