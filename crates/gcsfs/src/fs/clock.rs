//! An injectable monotonic clock, so TTL behaviour is tested without sleeping.

use std::time::Instant;

/// A source of monotonic time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> Instant;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to (tests; the `test-util` feature).
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset: parking_lot::Mutex<std::time::Duration>,
}

#[cfg(any(test, feature = "test-util"))]
impl Default for ManualClock {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            offset: parking_lot::Mutex::new(std::time::Duration::ZERO),
        }
    }
}

#[cfg(any(test, feature = "test-util"))]
impl ManualClock {
    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: std::time::Duration) {
        *self.offset.lock() += d;
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + *self.offset.lock()
    }
}
