//! The stop signal every long-running task holds, and the deadline that comes with it.
//!
//! A stop is not "now": the agent keeps delivering for `shutdown_timeout`, and every task must
//! be done by the same instant so the whole stop fits that budget whatever the receivers do.
//! So the signal carries that instant. A task that is told to stop finishes what it can
//! before [`Shutdown::deadline`] and then closes; nobody waits for it past that (the agent
//! gives tasks a short grace and then abandons them).

use tokio::sync::watch;
use tokio::time::Instant;

/// Held by the one who decides when to stop.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<Option<Instant>>,
}

/// Held by each task: tells whether, and by when, it must stop.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<Option<Instant>>,
}

/// A new trigger and the signal it fires.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(None);
    (Trigger { tx }, Shutdown { rx })
}

impl Trigger {
    /// Tells every holder of the signal to be done by `deadline`. A second call can only bring
    /// the deadline closer.
    pub fn stop_by(&self, deadline: Instant) {
        self.tx.send_modify(|d| {
            *d = Some(d.map_or(deadline, |old| old.min(deadline)));
        });
    }

    /// Stop now: finish nothing more than closing.
    pub fn stop_now(&self) {
        self.stop_by(Instant::now());
    }
}

impl Drop for Trigger {
    /// A trigger that goes away (its owner failed half-way, e.g. a pipeline that could not
    /// start) stops its holders: nobody could stop them later.
    fn drop(&mut self) {
        self.stop_now();
    }
}

impl Shutdown {
    /// True once a stop was asked for.
    pub fn is_stopping(&self) -> bool {
        self.rx.borrow().is_some()
    }

    /// The instant by which the holder must be done, once a stop was asked for.
    pub fn deadline(&self) -> Option<Instant> {
        *self.rx.borrow()
    }

    /// Completes when a stop is asked for (at once if it already was). Cancel-safe.
    pub async fn stopped(&mut self) {
        // An error means the trigger is gone, which only happens when everything stops.
        let _ = self.rx.wait_for(|d| d.is_some()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_stop_reaches_every_holder_with_its_deadline_and_only_moves_closer() {
        let (trigger, mut a) = channel();
        let b = a.clone();
        assert!(!a.is_stopping());
        let late = Instant::now() + Duration::from_secs(60);
        trigger.stop_by(late);
        a.stopped().await;
        assert!(b.is_stopping());
        assert_eq!(b.deadline(), Some(late));
        trigger.stop_by(late + Duration::from_secs(5));
        assert_eq!(
            b.deadline(),
            Some(late),
            "a later deadline does not extend a stop"
        );
        trigger.stop_now();
        assert!(b.deadline().is_some_and(|d| d < late));
    }
}
