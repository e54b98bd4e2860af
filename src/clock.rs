//! Time, as the exporter reads it: a replaceable wall clock (tests pin and move it), a wait
//! for a wall-clock time, and the one way the exporter takes a lock.
//!
//! At the bottom of the module graph: it imports nothing of the crate.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The wall clock, replaceable in tests.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// How often a wait for a wall-clock time looks at the clock again.
pub const CLOCK_POLL: Duration = Duration::from_secs(1);

/// Waits until `clock` reads `at` or later, looking at it every [`CLOCK_POLL`], so that a wait
/// follows the wall clock (and a test's clock) rather than elapsed time.
pub async fn sleep_until(clock: &Clock, at: DateTime<Utc>) {
    loop {
        let now = clock();
        if now >= at {
            return;
        }
        let left = (at - now).to_std().unwrap_or_default();
        tokio::time::sleep(left.min(CLOCK_POLL)).await;
    }
}

/// Locks `mutex`, even if a thread panicked while holding it: every value the exporter keeps
/// under a lock is whole between statements, so a panic elsewhere never leaves it half-made.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
