//! Whether the long-running tasks still make progress, for the systemd watchdog.
//!
//! Pinging the watchdog from the main loop only proves the main loop runs. Each task instead
//! says, every time it comes round, how long it may take at most before it comes round again
//! (its longest wait by design: an idle tick, a backoff, a connect or write timeout). The
//! agent pings only while no task is past that promise, so a task that hangs — a deadlock, a
//! wedged system call — stops the pings and systemd restarts the agent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// The registry of every task's next promised beat.
#[derive(Debug, Clone)]
pub struct Liveness {
    due: Arc<Mutex<BTreeMap<String, Instant>>>,
    /// Added to every promise: scheduling delays must not count as a hang.
    slack: Duration,
}

/// A task's handle on the registry; dropping it removes the task.
#[derive(Debug)]
pub struct Heartbeat {
    name: String,
    reg: Liveness,
}

impl Liveness {
    pub fn new(slack: Duration) -> Liveness {
        Liveness {
            due: Arc::default(),
            slack,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Instant>> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a task under `name`, due at once plus `first` (its start-up).
    pub fn register(&self, name: impl Into<String>, first: Duration) -> Heartbeat {
        let hb = Heartbeat {
            name: name.into(),
            reg: self.clone(),
        };
        hb.expect_within(first);
        hb
    }

    /// Tasks past their promise, with how long ago it ran out.
    pub fn overdue(&self) -> Vec<(String, Duration)> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(_, due)| **due < now)
            .map(|(name, due)| (name.clone(), now - *due))
            .collect()
    }
}

impl Heartbeat {
    /// The task is alive and will beat again within `bound`.
    pub fn expect_within(&self, bound: Duration) {
        let due = Instant::now()
            .checked_add(bound.saturating_add(self.reg.slack))
            .unwrap_or_else(far_future);
        self.reg.lock().insert(self.name.clone(), due);
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.reg.lock().remove(&self.name);
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_task_is_overdue_only_past_its_promise_plus_slack_and_gone_when_dropped() {
        let l = Liveness::new(Duration::from_secs(1));
        let a = l.register("deliver:a", Duration::from_secs(5));
        let _b = l.register("poller", Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(l.overdue().is_empty(), "within the promise plus slack");
        tokio::time::advance(Duration::from_secs(2)).await;
        let late: Vec<String> = l.overdue().into_iter().map(|(n, _)| n).collect();
        assert_eq!(late, vec!["deliver:a".to_string()]);
        a.expect_within(Duration::from_secs(5));
        assert!(l.overdue().is_empty(), "a beat renews the promise");
        tokio::time::advance(Duration::from_secs(10)).await;
        drop(a);
        assert!(
            l.overdue().is_empty(),
            "a task that ended is not waited for"
        );
        let _huge = l.register("forever", Duration::MAX);
        assert!(l.overdue().is_empty());
    }
}
