//! The threads that run argon2 password checks: one per core (at most four), started on first
//! use, fed by one queue (first come, first checked).
//!
//! A check enters as a hash and a password through [`check`] and leaves as a yes or no on a
//! oneshot channel. A check works in about 19 MiB (`model::argon`). When argon2 allocated it per check on
//! tokio's blocking pool, the C allocator kept what each thread freed in that thread's arena,
//! and a check ran on whichever pool thread was idle; while the store hangs (PostgreSQL
//! frozen), store calls hold pool threads, checks landed on ever other threads and arenas, and
//! the server's memory grew with password logins (review s16: 109 → 538 MB in 80 s of one
//! login every half second). Now each checking thread allocates its memory once and reuses it
//! ([`verify`]): the checks hold 19 MiB per checking thread, whatever else the process
//! waits for (`bench/frozen-store.sh`). The queue also replaces the per-core semaphore that
//! bounded concurrent checks before: a burst of logins queues instead of thrashing memory.

use argon2::Block;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use tokio::sync::oneshot;

/// One check to make, and where its answer goes.
struct Job {
    hash: String,
    password: String,
    answer: oneshot::Sender<bool>,
}

/// True when `password` matches `hash`, checked in the thread's kept `memory`.
fn verify(hash: &str, password: &str, memory: &mut Vec<Block>) -> bool {
    crate::model::argon::verify_in(hash, password.as_bytes(), memory)
}

/// The queue's sending end, once the threads run (`None` when no thread could be started).
fn queue() -> Option<&'static mpsc::Sender<Job>> {
    static QUEUE: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    QUEUE.get_or_init(start_threads).as_ref()
}

/// Checking threads at most, whatever the number of cores: each keeps its ~19 MiB for good,
/// and four check over a hundred passwords a second, far more than HR uploads log in.
const MOST_THREADS: usize = 4;

/// Starts one checking thread per core (at most [`MOST_THREADS`]) on a shared queue.
fn start_threads() -> Option<mpsc::Sender<Job>> {
    let cores = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(MOST_THREADS);
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let mut started = 0;
    for i in 0..cores {
        let rx = Arc::clone(&rx);
        let spawned = std::thread::Builder::new()
            .name(format!("roster-argon2-{i}"))
            .spawn(move || run_checks(&rx));
        match spawned {
            Ok(_) => started += 1,
            Err(e) => tracing::error!("cannot start a password-checking thread: {e}"),
        }
    }
    (started > 0).then_some(tx)
}

/// Takes jobs off the queue until every sender is gone (never, in a running server).
fn run_checks(rx: &Mutex<mpsc::Receiver<Job>>) {
    let mut memory = Vec::new();
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
            rx.recv()
        };
        let Ok(job) = job else { return };
        // A client that went away meanwhile no longer waits for its answer: skip the work.
        if job.answer.is_closed() {
            continue;
        }
        let _ = job
            .answer
            .send(verify(&job.hash, &job.password, &mut memory));
    }
}

/// Checks `password` against `hash` on the checking threads, after the checks queued before
/// it. Should the threads be unavailable, the check runs on tokio's blocking pool instead.
pub(super) async fn check(hash: String, password: String) -> bool {
    let (answer, answered) = oneshot::channel();
    let job = Job {
        hash,
        password,
        answer,
    };
    let unsent = match queue() {
        Some(tx) => tx.send(job).err().map(|e| e.0),
        None => Some(job),
    };
    match unsent {
        None => answered.await.unwrap_or(false),
        Some(job) => {
            tokio::task::spawn_blocking(move || verify(&job.hash, &job.password, &mut Vec::new()))
                .await
                .unwrap_or(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::phc::PasswordHash;
    use argon2::{Algorithm, Argon2, Params, Version};

    #[tokio::test]
    async fn right_and_wrong_passwords_are_told_apart() {
        let hash = crate::login::hash_password("right").unwrap();
        let checks: Vec<_> = (0..6)
            .map(|i| {
                let password = if i % 2 == 0 { "right" } else { "wrong" };
                tokio::spawn(check(hash.clone(), password.to_string()))
            })
            .collect();
        let mut answers = Vec::new();
        for c in checks {
            answers.push(c.await.unwrap());
        }
        assert_eq!(answers, [true, false, true, false, true, false]);
        assert!(!check("not a hash".into(), "right".into()).await);
    }

    /// A PHC string of `password` under the given algorithm, version and costs.
    fn hash_with(password: &str, algorithm: Algorithm, version: Version, m: u32, t: u32) -> String {
        use argon2::password_hash::{phc::SaltString, PasswordHasher};
        let params = Params::new(m, t, 1, None).unwrap();
        let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap();
        Argon2::new(algorithm, version, params)
            .hash_password_with_salt(password.as_bytes(), salt.as_ref().as_bytes())
            .unwrap()
            .to_string()
    }

    #[test]
    fn one_reused_memory_checks_hashes_of_every_kind_alike() {
        let hashes = [
            crate::login::hash_password("pw").unwrap(),
            hash_with("pw", Algorithm::Argon2i, Version::V0x10, 256, 3),
            hash_with("pw", Algorithm::Argon2d, Version::V0x13, 64, 1),
            hash_with("pw", Algorithm::Argon2id, Version::V0x13, 70 * 1024, 1),
        ];
        let mut memory = Vec::new();
        for round in 0..2 {
            for hash in &hashes {
                let parsed = PasswordHash::new(hash).unwrap();
                for password in ["pw", "pw ", ""] {
                    let theirs = argon2::PasswordVerifier::verify_password(
                        &Argon2::default(),
                        password.as_bytes(),
                        &parsed,
                    )
                    .is_ok();
                    let ours = verify(hash, password, &mut memory);
                    assert_eq!(ours, theirs, "round {round}, {hash}, {password:?}");
                    assert_eq!(ours, password == "pw");
                }
            }
        }
        // The 70 MiB hash was checked in memory of its own; the kept memory stays at 19 MiB.
        assert_eq!(memory.len(), 19 * 1024);
        assert!(!verify(
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$",
            "pw",
            &mut memory
        ));
    }
}
