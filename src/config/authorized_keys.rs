//! The `authorized_keys` lines of a tenant: how one line is read into a public key. The config
//! checks every line with it when it loads, and SFTP login compares offered keys with it.
//!
//! A line of text enters; a `russh` public key (or why the line is not one) leaves.

use anyhow::{anyhow, Context};

/// Parses one `authorized_keys` line (`ssh-ed25519 AAAA... comment`; options are not supported).
pub fn parse_authorized_key(line: &str) -> anyhow::Result<russh::keys::PublicKey> {
    let mut parts = line.split_whitespace();
    let _algo = parts.next().ok_or_else(|| anyhow!("empty key line"))?;
    let b64 = parts
        .next()
        .ok_or_else(|| anyhow!("no key data after the algorithm"))?;
    russh::keys::parse_public_key_base64(b64).context("key data is not a valid public key")
}
