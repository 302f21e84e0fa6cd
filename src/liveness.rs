//! Whether the long-running tasks still make progress, for the systemd watchdog.
//!
//! Pinging the watchdog from the main loop only proves the main loop runs. Each task instead
//! says, every time it comes round, how long it may take at most before it comes round again
//! (its longest wait by design: an idle tick, a backoff, a connect or write timeout). The
//! agent pings only while no task is past that promise, so a task that hangs — a deadlock, a
//! wedged system call — stops the pings and systemd restarts the agent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// When a task promised to beat again, in nanoseconds after [`Liveness`]'s epoch: a beat is
/// one atomic store on the task's hot path.
type Due = Arc<AtomicU64>;

/// The registry of every task's next promised beat.
#[derive(Debug, Clone)]
pub struct Liveness {
    /// Keyed by name and a registration number: a task that was abandoned and replaced by one
    /// of the same name must not take its successor's entry with it when it ends.
    tasks: Arc<Mutex<BTreeMap<(String, u64), Due>>>,
    registrations: Arc<AtomicU64>,
    epoch: Instant,
    /// Added to every promise: scheduling delays must not count as a hang.
    slack: Duration,
}

/// A task's handle on the registry, shared by the parts of the task that wait; dropping the
/// last clone removes the task.
#[derive(Debug, Clone)]
pub struct Heartbeat(Arc<Registration>);

#[derive(Debug)]
struct Registration {
    key: (String, u64),
    due: Due,
    reg: Liveness,
}

impl Liveness {
    pub fn new(slack: Duration) -> Liveness {
        Liveness {
            tasks: Arc::default(),
            registrations: Arc::default(),
            epoch: Instant::now(),
            slack,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, u64), Due>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn nanos_since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Registers a task under `name`, due at once plus `first` (its start-up).
    pub fn register(&self, name: impl Into<String>, first: Duration) -> Heartbeat {
        let number = self.registrations.fetch_add(1, Ordering::Relaxed);
        let hb = Heartbeat(Arc::new(Registration {
            key: (name.into(), number),
            due: Due::default(),
            reg: self.clone(),
        }));
        hb.expect_within(first);
        self.lock().insert(hb.0.key.clone(), hb.0.due.clone());
        hb
    }

    /// Tasks past their promise, with how long ago it ran out.
    pub fn overdue(&self) -> Vec<(String, Duration)> {
        let now = self.nanos_since_epoch();
        self.lock()
            .iter()
            .filter_map(|((name, _), due)| {
                let due = due.load(Ordering::Relaxed);
                (due < now).then(|| (name.clone(), Duration::from_nanos(now - due)))
            })
            .collect()
    }
}

impl Heartbeat {
    /// The task is alive and will beat again within `bound`.
    pub fn expect_within(&self, bound: Duration) {
        let r = &self.0;
        let within =
            u64::try_from(bound.saturating_add(r.reg.slack).as_nanos()).unwrap_or(u64::MAX);
        let due = r.reg.nanos_since_epoch().saturating_add(within);
        r.due.store(due, Ordering::Relaxed);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.reg.lock().remove(&self.key);
    }
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
        // A task replaced by one of the same name: the old one ending leaves the new one watched.
        let old = l.register("deliver:a", Duration::ZERO);
        let new = l.register("deliver:a", Duration::ZERO);
        drop(old);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(l.overdue().len(), 1);
        drop(new);
    }
}
