//! Server host keys: an Ed25519 and an RSA key in `host_keys/`, created on first start with
//! mode 0600 and reused afterwards, so clients see the same fingerprints across restarts.
//!
//! A new key is written to `<key>.tmp` and renamed into place; a `.tmp` left by an earlier
//! start is removed first and the new one is created exclusively without following a link, so
//! neither a stale file's mode nor a planted symbolic link decides where or how the key lands
//! (review s30, F7). An existing key file that group or others can read is used, with a warning
//! at start.

use anyhow::{anyhow, Context};
use russh::keys::{Algorithm, HashAlg, PrivateKey};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
            if let Some(w) = exposed_warning(&path) {
                tracing::warn!("{w}");
            }
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

/// The warning for a host key file that group or others can read, if `path` is one.
fn exposed_warning(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "the host key {} can be read by group or others (mode {:o}): chmod 600 it",
            path.display(),
            mode & 0o777
        )
    })
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
    // A stale temp file (or a link planted in its place) goes; the new one is created
    // exclusively, 0600, and never through a link.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}", tmp.display()));
        }
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .with_context(|| format!("cannot write the host key {}", tmp.display()))?;
    f.write_all(pem.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write the host key {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot write the host key {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review s30, F7: a stale `.tmp` that is a link to another file, or a file others can
    /// read, neither receives the key nor lends it its mode.
    #[test]
    fn a_stale_or_planted_temp_file_is_not_followed_or_reused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("hk");
        std::fs::create_dir(&keys).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "not a key").unwrap();
        std::os::unix::fs::symlink(&victim, keys.join("ssh_host_ed25519_key.tmp")).unwrap();
        let stale = keys.join("ssh_host_rsa_key.tmp");
        std::fs::write(&stale, "stale").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
        let loaded = load_or_create(&keys).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not a key");
        for (file, _) in KEYS {
            let mode = std::fs::metadata(keys.join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
            assert!(!keys.join(file).with_extension("tmp").exists());
        }
        let ed = keys.join(KEYS[0].0);
        assert_eq!(exposed_warning(&ed), None);
        std::fs::set_permissions(&ed, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(exposed_warning(&ed).is_some_and(|w| w.contains("chmod 600")));
    }
}
