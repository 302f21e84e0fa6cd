//! Exponential backoff with jitter, shared by the API client and every destination.
//!
//! "Equal jitter": each delay is half the current step plus a random part of the other half,
//! so many agents (or many destinations) that failed together do not retry in lockstep, and a
//! delay never drops to zero.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            step: initial,
        }
    }

    /// The next delay; doubles the step up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let half = self.step / 2;
        let delay = half + jitter(self.step - half);
        self.step = (self.step * 2).min(self.max);
        delay
    }

    /// Back to the initial step after a success.
    pub fn reset(&mut self) {
        self.step = self.initial;
    }
}

/// A uniformly random duration in `[0, upto]`. `RandomState` is seeded from the OS per
/// instance, which is all the randomness jitter needs.
pub fn jitter(upto: Duration) -> Duration {
    let nanos = upto.as_nanos().min(u64::MAX as u128) as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    let mut h = RandomState::new().build_hasher();
    h.write_u64(nanos);
    Duration::from_nanos(h.finish() % (nanos + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_within_bounds_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let mut steps = vec![];
        for _ in 0..6 {
            steps.push(b.next_delay());
        }
        assert!(steps[0] >= Duration::from_millis(50) && steps[0] <= Duration::from_millis(100));
        for d in &steps {
            assert!(*d <= Duration::from_millis(800));
        }
        assert!(steps[5] >= Duration::from_millis(400));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
