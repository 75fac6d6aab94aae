//! Argon2id hashing and checking in reused memory: the one place Roster computes argon2.
//!
//! A hash or a check of the default cost works in about 19 MiB. Allocated per call, that memory
//! went back to the C allocator's arenas, small allocations settled in the freed space, and the
//! next call needed fresh memory: an import that hashed 1,200 passwords grew the server by
//! 2.5 GB, kept after the run (audit s22; the login checks had the same growth, review s16).
//! Here the memory is kept and reused: [`verify_in`] and [`hash_in`] take it from the caller
//! (the login checking threads keep one each), [`hash`] and [`verify`] from a small pool of
//! at most one buffer per core ([`POOL_MOST`]).
//!
//! Data enters as passwords and PHC strings and leaves as PHC strings and yes/no answers; the
//! computations are the `argon2` crate's own (`hash_password_into_with_memory`, its PHC types
//! and its constant-time comparison of outputs).

use anyhow::{anyhow, Result};
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::{Mutex, PoisonError};

/// Blocks (1 KiB each) a kept buffer holds at most: enough for the default cost (19 MiB). A
/// hash that needs more gets memory of its own for that one call.
pub const KEPT_BLOCKS: usize = 64 * 1024;

/// Buffers the pool keeps at most (one per core, at most 16, as the import's threads).
fn pool_most() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 16))
}

/// The pool of [`hash`] and [`verify`].
static POOL: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Runs `f` with a buffer of the pool (a new one when all are in use) and keeps the buffer
/// afterwards unless the pool is full.
fn with_pooled<T>(f: impl FnOnce(&mut Vec<Block>) -> T) -> T {
    let taken = POOL.lock().unwrap_or_else(PoisonError::into_inner).pop();
    let mut memory = taken.unwrap_or_default();
    let out = f(&mut memory);
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if pool.len() < pool_most() && memory.len() <= KEPT_BLOCKS {
        pool.push(memory);
    }
    out
}

/// `memory` grown to `blocks` when it may keep that many; else a buffer for this call only.
fn blocks_in<'m>(
    memory: &'m mut Vec<Block>,
    own: &'m mut Vec<Block>,
    blocks: usize,
) -> &'m mut [Block] {
    let memory = if blocks <= KEPT_BLOCKS { memory } else { own };
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    &mut memory[..blocks]
}

/// An argon2id PHC string of `password` with a random 16-byte salt and the default cost.
pub fn hash(password: &[u8]) -> Result<String> {
    with_pooled(|memory| hash_in(password, memory))
}

/// As [`hash`], in `memory`.
pub fn hash_in(password: &[u8], memory: &mut Vec<Block>) -> Result<String> {
    let salt: [u8; 16] = rand::random();
    let params = Params::default();
    let (algorithm, version) = (Algorithm::Argon2id, Version::V0x13);
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let mut own = Vec::new();
    let blocks = blocks_in(memory, &mut own, params.block_count());
    Argon2::new(algorithm, version, params.clone())
        .hash_password_into_with_memory(password, &salt, &mut out, blocks)
        .map_err(|e| anyhow!("cannot hash a password: {e}"))?;
    let phc = PasswordHash {
        algorithm: algorithm.ident(),
        version: Some(version.into()),
        params: ParamsString::try_from(&params).map_err(|e| anyhow!("argon2 parameters: {e}"))?,
        salt: Some(Salt::new(&salt).map_err(|e| anyhow!("argon2 salt: {e}"))?),
        hash: Some(Output::new(&out).map_err(|e| anyhow!("argon2 output: {e}"))?),
    };
    Ok(phc.to_string())
}

/// True when `password` matches the PHC string `hash` (an unparsable hash matches nothing).
pub fn verify(hash: &str, password: &[u8]) -> bool {
    with_pooled(|memory| verify_in(hash, password, memory))
}

/// As [`verify`], in `memory`: any argon2 variant, version and cost the string names.
pub fn verify_in(hash: &str, password: &[u8], memory: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut out = [0u8; Output::MAX_LENGTH];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let mut own = Vec::new();
    let blocks = blocks_in(memory, &mut own, params.block_count());
    let argon2 = Argon2::new(algorithm, version, params);
    if argon2
        .hash_password_into_with_memory(password, salt, &mut *out, blocks)
        .is_err()
    {
        return false;
    }
    Output::new(out).is_ok_and(|computed| computed == *expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordVerifier;

    /// A hash made here is one the crate's own verifier takes, and the other way round.
    #[test]
    fn hashes_agree_with_the_crates_own_verifier() {
        let mine = hash(b"right").unwrap();
        assert!(
            mine.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{mine}"
        );
        let parsed = PasswordHash::new(&mine).unwrap();
        assert!(Argon2::default().verify_password(b"right", &parsed).is_ok());
        assert!(Argon2::default()
            .verify_password(b"wrong", &parsed)
            .is_err());
        assert!(verify(&mine, b"right"));
        assert!(!verify(&mine, b"wrong"));
        assert!(!verify("not a hash", b"right"));
        assert_ne!(hash(b"right").unwrap(), mine, "a fresh salt each time");
    }

    /// Many hashes reuse the pool's buffers instead of allocating 19 MiB each.
    #[test]
    fn the_pool_keeps_at_most_one_buffer_per_core() {
        for _ in 0..3 {
            hash(b"x").unwrap();
        }
        let kept = POOL.lock().unwrap_or_else(PoisonError::into_inner).len();
        assert!((1..=pool_most()).contains(&kept), "{kept}");
    }
}
