//! The threads that run argon2 password checks: one per core, started on first use, fed by
//! one queue (first come, first checked).
//!
//! A check enters as a hash and a password through [`check`] and leaves as a yes or no on a
//! oneshot channel. Each check allocates about 19 MiB, and the C allocator keeps what a thread
//! freed in that thread's arena for its next use. On tokio's blocking pool, a check ran on
//! whichever pool thread was idle; while the store hangs (PostgreSQL frozen), store calls hold
//! many pool threads, checks land on ever other threads and arenas, and the server's memory
//! grew with password logins (review s16: 109 → 538 MB in 80 s of one login every half
//! second). On threads of their own, the checks' memory is held by at most one arena per core,
//! whatever else the process waits for. The queue also replaces the per-core semaphore that
//! bounded concurrent checks before: a burst of logins queues instead of thrashing memory.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordVerifier};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use tokio::sync::oneshot;

/// One check to make, and where its answer goes.
struct Job {
    hash: String,
    password: String,
    answer: oneshot::Sender<bool>,
}

/// True when `password` matches the argon2 PHC string `hash` (an unparsable hash matches
/// nothing).
fn verify(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// The queue's sending end, once the threads run (`None` when no thread could be started).
fn queue() -> Option<&'static Mutex<mpsc::Sender<Job>>> {
    static QUEUE: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();
    QUEUE.get_or_init(start_threads).as_ref()
}

/// Starts one checking thread per core on a shared queue.
fn start_threads() -> Option<Mutex<mpsc::Sender<Job>>> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
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
    (started > 0).then(|| Mutex::new(tx))
}

/// Takes jobs off the queue until every sender is gone (never, in a running server).
fn run_checks(rx: &Mutex<mpsc::Receiver<Job>>) {
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
        let _ = job.answer.send(verify(&job.hash, &job.password));
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
        Some(tx) => tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(job)
            .err()
            .map(|e| e.0),
        None => Some(job),
    };
    match unsent {
        None => answered.await.unwrap_or(false),
        Some(job) => tokio::task::spawn_blocking(move || verify(&job.hash, &job.password))
            .await
            .unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
