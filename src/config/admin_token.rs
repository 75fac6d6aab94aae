//! The admin API token when the config does not set one: no default token ever works.
//!
//! `[admin] token` set to anything but empty or the old example value `change-me` is used as
//! it is. Otherwise the server generates a random token on its first start into
//! `<data_dir>/admin-token` (mode 0600, 64 hex digits, created exclusively so two starts cannot
//! write different tokens) and keeps using that file; the CLI reads the same file. A token file
//! that group or others can read is refused by both (`chmod 600` it). Data enters
//! as the [`Config`] and the file; it leaves as the token string.

use super::Config;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

/// Name of the generated token's file inside `data_dir`.
pub const TOKEN_FILE: &str = "admin-token";

/// The example token of older configs; never accepted.
pub const OLD_DEFAULT: &str = "change-me";

/// The token `[admin] token` sets, unless it is empty or [`OLD_DEFAULT`].
pub fn configured(config: &Config) -> Option<&str> {
    let t = config.admin.token.trim();
    (!t.is_empty() && t != OLD_DEFAULT).then_some(t)
}

/// `<data_dir>/admin-token`.
pub fn token_path(config: &Config) -> PathBuf {
    config.server.data_dir.join(TOKEN_FILE)
}

/// The token the server accepts: the configured one, else the generated one, created now if
/// there is none yet (blocking; call at start).
pub fn ensure(config: &Config) -> Result<String> {
    if let Some(t) = configured(config) {
        return Ok(t.to_string());
    }
    let path = token_path(config);
    if let Some(t) = read_file(&path)? {
        return Ok(t);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path);
    match created {
        Ok(mut f) => {
            f.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::warn!(file = %path.display(), "[admin] token is not set: generated a random admin token into this file (the CLI reads it there)");
            Ok(token)
        }
        // Another start wrote it first: use that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_file(&path)?
            .with_context(|| format!("{} is empty; delete it and start again", path.display())),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// The token for the CLI: the configured one, else the server's generated file.
pub fn for_cli(config: &Config) -> Result<String> {
    if let Some(t) = configured(config) {
        return Ok(t.to_string());
    }
    let path = token_path(config);
    match read_file(&path)? {
        Some(t) => Ok(t),
        None => bail!(
            "[admin] token is not set and {} does not exist yet: start the server once (`roster serve`) and it writes a random token there",
            path.display()
        ),
    }
}

/// The token in `path`, None when the file does not exist. A file that group or others can
/// read, or that is empty, is an error (as libpq treats a `.pgpass` others can read): a token
/// others may have seen must not be trusted silently (review s30, F8: the code only warned).
fn read_file(path: &std::path::Path) -> Result<Option<String>> {
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if mode & 0o077 != 0 {
        bail!(
            "{p} can be read by group or others (mode {m:o}), so the admin token is not used: run `chmod 600 {p}` (or set [admin] token in the config)",
            p = path.display(),
            m = mode & 0o777
        );
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let token = text.trim();
    if token.is_empty() || token == OLD_DEFAULT {
        bail!(
            "{} holds no usable token; delete it and restart the server to generate one",
            path.display()
        );
    }
    Ok(Some(token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_never_accepts_the_old_default() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::parse("").unwrap();
        config.server.data_dir = dir.path().join("data");
        config.admin.token = OLD_DEFAULT.into();
        assert_eq!(configured(&config), None);
        assert!(for_cli(&config).is_err(), "no file yet");
        let first = ensure(&config).unwrap();
        assert_eq!(first.len(), 64);
        assert_ne!(first, OLD_DEFAULT);
        assert_eq!(ensure(&config).unwrap(), first, "kept across starts");
        assert_eq!(for_cli(&config).unwrap(), first);
        let mode = std::fs::metadata(token_path(&config))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        config.admin.token = "set-by-operator".into();
        assert_eq!(ensure(&config).unwrap(), "set-by-operator");
    }

    /// Review s30, F8: a token file group or others can read is refused, by the server and the
    /// CLI, with the chmod that fixes it.
    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::parse("").unwrap();
        config.server.data_dir = dir.path().join("data");
        let token = ensure(&config).unwrap();
        let path = token_path(&config);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        for e in [ensure(&config).unwrap_err(), for_cli(&config).unwrap_err()] {
            let e = format!("{e:#}");
            assert!(e.contains("chmod 600") && e.contains("640"), "{e}");
            assert!(!e.contains(&token), "{e}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(for_cli(&config).unwrap(), token);
    }
}
