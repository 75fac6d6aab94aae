//! Argon2id hashing and checking in reused memory: the one place Roster computes argon2.
//!
//! A hash or a check of the default cost works in about 19 MiB. Allocated per call, that memory
//! went back to the C allocator's arenas, small allocations settled in the freed space, and the
//! next call needed fresh memory: an import that hashed 1,200 passwords grew the server by
//! 2.5 GB, kept after the run (audit s22; the login checks had the same growth, review s16).
//! Here the memory is kept and reused: [`verify_in`] and [`hash_in`] take it from the caller
//! (the login checking threads keep one each), [`hash`] and [`verify`] from a small pool of
//! at most one buffer per core ([`pool_most`]; a caller past that waits for one).
//!
//! Data enters as passwords and PHC strings and leaves as PHC strings and yes/no answers; the
//! computations are the `argon2` crate's own (`hash_password_into_with_memory`, its PHC types
//! and its constant-time comparison of outputs).

use anyhow::{anyhow, Result};
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::{Condvar, Mutex, PoisonError};

/// Blocks (1 KiB each) a kept buffer holds at most: enough for the default cost (19 MiB). A
/// hash that needs more gets memory of its own for that one call.
pub const KEPT_BLOCKS: usize = 64 * 1024;

/// Buffers the pool makes at most: one per core, at most 16 (the import's threads). A hash is
/// pure work for one core, so more at once would not be faster; a caller past this waits for
/// a buffer instead of allocating one (the review of s23: with more hashing threads than kept
/// buffers, half the hashes still allocated and freed 19 MiB each).
fn pool_most() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 16))
}

/// The pool of [`hash`] and [`verify`]: the free buffers and how many exist.
struct Pool {
    free: Vec<Vec<Block>>,
    made: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    made: 0,
});
static RETURNED: Condvar = Condvar::new();

/// Runs `f` with a buffer of the pool: a free one, a new one while fewer than
/// [`pool_most`] exist, else the first one given back. The buffer is kept for good.
fn with_pooled<T>(f: impl FnOnce(&mut Vec<Block>) -> T) -> T {
    let mut memory = {
        let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(m) = pool.free.pop() {
                break m;
            }
            if pool.made < pool_most() {
                pool.made += 1;
                break Vec::new();
            }
            pool = RETURNED.wait(pool).unwrap_or_else(PoisonError::into_inner);
        }
    };
    let out = f(&mut memory);
    POOL.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .free
        .push(memory);
    RETURNED.notify_one();
    out
}

/// Blocks a hash may ask for at most (1 GiB): a PHC string naming more is refused rather than
/// allocated (a damaged or hostile hash must not abort the process on memory).
pub const MOST_BLOCKS: usize = 1024 * 1024;

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

/// Passes (`t`) a hash may name at most. The default cost makes 2; above 32 a check holds a
/// checking thread for seconds (review s29: a huge `t` held argon2 threads for minutes).
pub const MOST_PASSES: u32 = 32;

/// Blocks times passes a hash may name at most (4 × [`MOST_BLOCKS`], a few seconds of one
/// core): a check's work, so 1 GiB of memory goes with at most 4 passes. The default cost is
/// about 1% of it.
pub const MOST_WORK: u64 = 4 * MOST_BLOCKS as u64;

/// A PHC string that [`verify_in`] can check: its parts, ready for argon2.
pub struct Checkable {
    parsed: PasswordHash,
    algorithm: Algorithm,
    version: Version,
    params: Params,
}

/// The one rule for a password hash, applied by the config's validation and by every check:
/// a PHC string of an argon2 variant (argon2id, argon2i, argon2d), with a salt and a hash,
/// parameters argon2 accepts, a known version, at most [`MOST_BLOCKS`] of memory, at most
/// [`MOST_PASSES`] passes and at most [`MOST_WORK`] in all. Err says which part fails.
pub fn checkable(hash: &str) -> std::result::Result<Checkable, String> {
    let parsed = PasswordHash::new(hash).map_err(|_| "is not a PHC string".to_string())?;
    let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).map_err(|_| {
        format!(
            "names {:?}, not an argon2 variant",
            parsed.algorithm.as_str()
        )
    })?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err("has no salt or no hash (cut short?)".into());
    }
    let params =
        Params::try_from(&parsed).map_err(|e| format!("has bad argon2 parameters: {e}"))?;
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return Err("names an unknown argon2 version".into()),
    };
    if params.block_count() > MOST_BLOCKS {
        return Err(format!(
            "asks for more than {} MiB of memory",
            MOST_BLOCKS / 1024
        ));
    }
    let work = params.block_count() as u64 * u64::from(params.t_cost());
    if params.t_cost() > MOST_PASSES || work > MOST_WORK {
        return Err(format!(
            "costs too much to check (t at most {MOST_PASSES}, m × t at most {} MiB)",
            MOST_WORK / 1024
        ));
    }
    Ok(Checkable {
        parsed,
        algorithm,
        version,
        params,
    })
}

/// As [`verify`], in `memory`: any argon2 variant, version and cost [`checkable`] accepts.
pub fn verify_in(hash: &str, password: &[u8], memory: &mut Vec<Block>) -> bool {
    let Ok(c) = checkable(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&c.parsed.salt, &c.parsed.hash) else {
        return false;
    };
    let mut out = [0u8; Output::MAX_LENGTH];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let mut own = Vec::new();
    let blocks = blocks_in(memory, &mut own, c.params.block_count());
    let argon2 = Argon2::new(c.algorithm, c.version, c.params);
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

    /// More hashing threads than cores share the pool's buffers: never more than
    /// [`pool_most`] exist, each kept for reuse.
    #[test]
    fn more_threads_than_cores_share_at_most_one_buffer_per_core() {
        let hashes: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..pool_most() * 2)
                .map(|_| s.spawn(|| hash(b"x").unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(hashes.iter().all(|h| verify(h, b"x")));
        let pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        assert!((1..=pool_most()).contains(&pool.made), "{}", pool.made);
    }

    /// A hash that names more memory than [`MOST_BLOCKS`] is refused, not allocated.
    #[test]
    fn a_hash_asking_for_too_much_memory_matches_nothing() {
        let huge = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0$0XSsfOIUbEVJFH1EkHwIqJ5NV+nZFzs1OHp9Fk1dcWs";
        assert!(!verify(huge, b"x"));
    }
}
