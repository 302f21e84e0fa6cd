//! What the agent tells systemd: readiness, status and stop notices, and the watchdog pings.
//! Outside systemd (`NOTIFY_SOCKET` and `WATCHDOG_USEC` unset) all of it is a no-op.
//!
//! The watchdog is pinged only while every task keeps the promise it made through
//! [`Liveness`]: a task that hangs stops the pings, and systemd restarts the agent.

use std::time::Duration;

use crate::liveness::Liveness;

pub(crate) use sd_notify::NotifyState;

/// Sends `state` to systemd; a no-op outside it.
pub(crate) fn notify(state: &[NotifyState<'_>]) {
    let _ = sd_notify::notify(false, state);
}

/// The systemd watchdog, when systemd asks for one (`WATCHDOG_USEC`).
pub(crate) struct Watchdog {
    /// Half of `WATCHDOG_USEC`: how often we ping.
    pub(crate) period: Duration,
    ticks: tokio::time::Interval,
    /// The tasks that were late at the last tick, so the log says it once per incident.
    late: Vec<String>,
}

impl Watchdog {
    pub(crate) fn from_env() -> Option<Watchdog> {
        let mut usec = 0u64;
        if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
            return None;
        }
        let period = Duration::from_micros(usec / 2);
        Some(Watchdog {
            period,
            ticks: tokio::time::interval(period),
            late: Vec::new(),
        })
    }

    /// Pings only while every task keeps its promise (see [`Liveness`]).
    pub(crate) fn ping_if_alive(&mut self, liveness: &Liveness) {
        let overdue = liveness.overdue();
        let late: Vec<String> = overdue.iter().map(|(n, _)| n.clone()).collect();
        if late.is_empty() {
            notify(&[NotifyState::Watchdog]);
        } else if late != self.late {
            for (name, by) in &overdue {
                tracing::error!(task = %name, overdue = ?by,
                    "a task made no progress for longer than it may; not pinging the systemd watchdog (systemd restarts the agent)");
            }
        }
        self.late = late;
    }
}

/// Waits for the next watchdog tick; never, without a watchdog.
pub(crate) async fn tick(w: &mut Option<Watchdog>) {
    match w {
        Some(w) => {
            w.ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}
