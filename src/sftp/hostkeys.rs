//! Server host keys: an Ed25519 and an RSA key in `host_keys/`, created on first start with
//! mode 0600 and reused afterwards, so clients see the same fingerprints across restarts.

use anyhow::{anyhow, Context};
use russh::keys::{Algorithm, HashAlg, PrivateKey};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The key files Roster keeps, and their algorithms.
const KEYS: &[(&str, KeyKind)] = &[
    ("ssh_host_ed25519_key", KeyKind::Ed25519),
    ("ssh_host_rsa_key", KeyKind::Rsa),
];

#[derive(Clone, Copy)]
enum KeyKind {
    Ed25519,
    Rsa,
}

/// A loaded host key with where it lives.
pub struct HostKey {
    pub path: PathBuf,
    pub key: PrivateKey,
}

impl HostKey {
    /// `SHA256:...` as OpenSSH prints it.
    pub fn fingerprint(&self) -> String {
        self.key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }

    pub fn algorithm(&self) -> String {
        self.key.algorithm().to_string()
    }
}

/// Loads the host keys from `dir`, creating any that are missing.
pub fn load_or_create(dir: &Path) -> anyhow::Result<Vec<HostKey>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the host key folder {}", dir.display()))?;
    let mut out = Vec::new();
    for (file, kind) in KEYS {
        let path = dir.join(file);
        let key = if path.exists() {
            PrivateKey::read_openssh_file(&path)
                .with_context(|| format!("cannot read the host key {}", path.display()))?
        } else {
            let key = generate(*kind)?;
            write_key(&path, &key)?;
            tracing::info!(path = %path.display(), "created a new host key");
            key
        };
        out.push(HostKey { path, key });
    }
    Ok(out)
}

/// Loads the host keys that exist in `dir` without creating any (for `check-config`).
pub fn load_existing(dir: &Path) -> anyhow::Result<Vec<HostKey>> {
    let mut out = Vec::new();
    for (file, _) in KEYS {
        let path = dir.join(file);
        if path.exists() {
            let key = PrivateKey::read_openssh_file(&path)
                .with_context(|| format!("cannot read the host key {}", path.display()))?;
            out.push(HostKey { path, key });
        }
    }
    Ok(out)
}

fn generate(kind: KeyKind) -> anyhow::Result<PrivateKey> {
    let algorithm = match kind {
        KeyKind::Ed25519 => Algorithm::Ed25519,
        KeyKind::Rsa => Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
    };
    PrivateKey::random(&mut rand10::rng(), algorithm)
        .map_err(|e| anyhow!("cannot generate a host key: {e}"))
}

fn write_key(path: &Path, key: &PrivateKey) -> anyhow::Result<()> {
    let pem = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| anyhow!("cannot encode the host key: {e}"))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write the host key {}", tmp.display()))?;
    f.write_all(pem.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write the host key {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot write the host key {}", path.display()))?;
    Ok(())
}
