//! Users being pushed at once across every tenant of this process. Each tenant's pusher
//! starts at most `IN_FLIGHT` users at a time, but a node with hundreds of tenants that all
//! import at night would otherwise open hundreds of threads' worth of requests at once (gap
//! of s26: no cap across tenants). A user's push on a tenant's second to fourth lane holds one
//! slot of [`GLOBAL`] while it runs; the first lane takes none, so every tenant keeps one push
//! going whatever other tenants' slow applications hold (reviewer s28: with every push taking
//! a slot, eight slow applications held all of them and stalled every other tenant). At most
//! one push per tenant plus [`MAX_PUSHES`] run at once.
//!
//! Data enters as a request for a slot (with a way to tell that the pusher is stopping); it
//! leaves as a [`Slot`], freed when dropped, or None when the pusher stopped while it waited.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Pushes in flight over all tenants of this process.
pub const MAX_PUSHES: usize = 32;

/// The process's slots.
pub static GLOBAL: Slots = Slots::new(MAX_PUSHES);

/// How often a waiter looks at its stop flag.
const LOOK: Duration = Duration::from_millis(100);

/// A counting limit, waited for on the calling (blocking) thread.
pub struct Slots {
    max: usize,
    in_use: Mutex<usize>,
    freed: Condvar,
}

/// One slot held; freed on drop.
pub struct Slot<'a>(&'a Slots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut n = self.0.in_use.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

impl Slots {
    pub const fn new(max: usize) -> Slots {
        Slots {
            max,
            in_use: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Waits for a slot; None once `stopped` says so.
    pub fn take(&self, stopped: &dyn Fn() -> bool) -> Option<Slot<'_>> {
        let mut n = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if stopped() {
                return None;
            }
            if *n < self.max {
                *n += 1;
                return Some(Slot(self));
            }
            n = (self.freed.wait_timeout(n, LOOK))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_slot_is_waited_for_until_one_is_freed_or_the_pusher_stops() {
        let slots = Slots::new(2);
        let never = || false;
        let (a, _b) = (slots.take(&never), slots.take(&never));
        assert!(a.is_some());
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| slots.take(&|| stop.load(Ordering::Relaxed)).is_some());
            std::thread::sleep(Duration::from_millis(150));
            assert!(!waiter.is_finished(), "a third slot was given");
            drop(a);
            assert!(
                waiter.join().unwrap_or(false),
                "the freed slot was not given"
            );
        });
        // All taken again: a stopped pusher gets none.
        let _c = slots.take(&never);
        stop.store(true, Ordering::Relaxed);
        assert!(slots.take(&|| stop.load(Ordering::Relaxed)).is_none());
    }
}
