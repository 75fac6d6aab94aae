//! The SFTP front door: the SSH listener, its connection caps and authentication (`server`,
//! `admission`, `connection`, `hostkeys`; password and key checks and the login throttle are
//! `crate::login`), session channels until they ask for SFTP (`pending`), the per-tenant jail
//! (`jail`), the SFTP request handler (`requests`, with `changes`, `extensions`, folder listings
//! in `dirstream`, the handle budget in `handles` and each tenant's share of the disk in `usage`)
//! and its wire loop (`wire`), and the "upload finished" event (`events`).
//!
//! Bytes enter from SSH clients (or stdin for `roster sftp-server`); files land in the tenant's
//! home; each finished upload leaves as one [`UploadFinished`] on an [`UploadSink`].

pub mod admission;
mod changes;
mod connection;
mod dirstream;
pub mod events;
mod extensions;
mod fs;
pub mod handles;
pub mod hostkeys;
pub mod jail;
mod login_answers;
mod pending;
pub mod requests;
pub mod server;
mod status;
pub mod uploads;
pub mod usage;
pub mod wire;

pub use events::{is_temp_name, FinishedBy, NoUploadSink, UploadFinished, UploadSink};
pub use jail::Jail;
pub use server::SftpServer;
pub use uploads::{FileId, InProgress};

use std::sync::Arc;

/// Serves one SFTP session on stdin/stdout, jailed to `root` (`roster sftp-server`), for use as
/// OpenSSH's `Subsystem sftp`. Uploads are not announced here: the server's folder watcher sees them.
/// Unlike a tenant jail, symlinks are followed inside `root` and `ln`/`ln -s` work there, as with
/// OpenSSH's own sftp-server.
pub async fn serve_stdio(
    root: &std::path::Path,
    read_only: bool,
    max_upload_bytes: u64,
) -> anyhow::Result<()> {
    crate::private_files::set_private_umask();
    let jail = Jail::new(root, read_only)
        .map_err(|e| anyhow::anyhow!("cannot use {} as the SFTP root: {e}", root.display()))?
        .with_links();
    // The root's own folder name (a tenant's home is named after it), shown as the owner in
    // `ls -l` listings: the whole path was cut to 8 characters there ("/work/pr").
    let tenant = root
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "roster".to_string());
    let session = requests::SftpSession::new(requests::SessionContext {
        handles: handles::HandleBudget::default().for_tenant(&tenant, requests::MAX_HANDLES),
        tenant,
        jail,
        max_upload_bytes,
        // `roster sftp-server` writes where OpenSSH lets it, as OpenSSH's own server does.
        min_free_bytes: 0,
        usage: usage::TenantUsage::unlimited(),
        sink: Arc::new(NoUploadSink),
        in_progress: InProgress::none(),
    });
    wire::serve(tokio::io::stdin(), tokio::io::stdout(), session).await?;
    Ok(())
}
