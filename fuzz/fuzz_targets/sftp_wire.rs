//! Any sequence of SFTP packets from a client, through the wire loop and the request handlers,
//! on a tenant jail: never a panic, and nothing outside the tenant's home is created, changed
//! or removed, not even through a symbolic link a tenant might find in its folder.
//!
//! The input is cut into packets so that most of them frame correctly: after the INIT that
//! every client sends, each packet is one length byte and that many bytes (type, request id
//! and fields), wrapped in SFTP's 4-byte length. An input whose first byte is 0xFF is sent
//! as it is after the INIT instead, to reach the framing itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roster::sftp::events::NoUploadSink;
use roster::sftp::handles::HandleBudget;
use roster::sftp::requests::{SessionContext, SftpSession, MAX_HANDLES};
use roster::sftp::uploads::InProgress;
use roster::sftp::usage::{UsageLimits, UsageRegistry};
use roster::sftp::Jail;
use std::path::Path;
use std::sync::Arc;

const INIT: [u8; 9] = [0, 0, 0, 5, 1, 0, 0, 0, 3];

fn packets(data: &[u8]) -> Vec<u8> {
    let mut out = INIT.to_vec();
    if let Some((&0xFF, raw)) = data.split_first() {
        out.extend_from_slice(raw);
        return out;
    }
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let body = &tail[..tail.len().min(usize::from(len))];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
        rest = &tail[body.len()..];
    }
    out
}

/// What lies outside the home: its names and each file's bytes, to compare after the session.
fn outside(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut seen = Vec::new();
    for entry in walk(root) {
        if entry.starts_with(root.join("home")) {
            continue;
        }
        let bytes = std::fs::read(&entry).unwrap_or_default();
        seen.push((entry.display().to_string(), bytes));
    }
    seen.sort();
    seen
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        all.push(path.clone());
        if is_dir {
            all.extend(walk(&path));
        }
    }
    all
}

fuzz_target!(|data: &[u8]| {
    let root = tempfile::tempdir().expect("a temporary folder");
    let home = root.path().join("home");
    let secret = root.path().join("outside");
    std::fs::create_dir_all(home.join("processed")).expect("the home");
    std::fs::create_dir_all(&secret).expect("a folder outside the home");
    std::fs::write(secret.join("other-tenant.csv"), b"email\nx@y.example\n").expect("a file");
    std::fs::write(home.join("users.csv"), b"email\na@b.example\n").expect("a file");
    std::os::unix::fs::symlink(&secret, home.join("link")).expect("a link out of the home");
    let before = outside(root.path());

    let jail = Jail::new(&home, false).expect("the jail");
    let limits = UsageLimits {
        max_bytes: 1 << 20,
        max_entries: 50,
    };
    let session = SftpSession::new(SessionContext {
        tenant: "fuzz".to_string(),
        jail,
        max_upload_bytes: 1 << 20,
        min_free_bytes: 0,
        usage: UsageRegistry::default().for_tenant("fuzz", &home, limits),
        sink: Arc::new(NoUploadSink),
        in_progress: InProgress::none(),
        handles: HandleBudget::default().for_tenant("fuzz", MAX_HANDLES),
    });
    let input = packets(data);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let _ = runtime.block_on(roster::sftp::wire::serve(
        input.as_slice(),
        tokio::io::sink(),
        session,
    ));
    drop(runtime);
    assert_eq!(
        outside(root.path()),
        before,
        "the session reached outside its home"
    );
});
