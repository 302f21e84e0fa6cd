//! The running pieces of the agent: the state directory's lock, the store, one delivery task
//! per destination, the wake-up signal after commits, and the metrics endpoint. `run`, `once`
//! and `demo` start a [`Pipeline`], feed it from a poller and stop it; a reload changes it in
//! place.
//!
//! A stop has one deadline for everything: each delivery task keeps delivering what is in
//! flight until it, records its position and closes; a task not done [`STOP_GRACE`] later is
//! abandoned (its unacknowledged events stay queued for the next start).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::supervise::{supervise, Failures};
use super::AgentError;
use crate::config::{Config, DestinationConfig, QueueConfig, SyslogConfig};
use crate::deliver::{self, Wiring};
use crate::liveness::Liveness;
use crate::lock::StateLock;
use crate::metrics;
use crate::shutdown::{self, Trigger};
use crate::store::{QueueLimit, Store, StoreError};

/// How long delivery tasks get after the stop's deadline to record their positions and close
/// before they are abandoned. With the rest of the exit this keeps every stop within
/// `shutdown_timeout` + 2 s, whatever the receivers do.
pub(super) const STOP_GRACE: Duration = Duration::from_millis(1200);

/// Deleting delivered events at stop is worth only this much time past [`STOP_GRACE`].
const COMPACT_WITHIN: Duration = Duration::from_millis(300);

/// How long a destination whose settings changed at reload may take to finish what it has in
/// flight before its new task starts.
pub(super) const RELOAD_DRAIN: Duration = Duration::from_secs(1);

/// One running delivery task and the settings it was started with.
struct DestTask {
    cfg: DestinationConfig,
    syslog: SyslogConfig,
    stop: Trigger,
    /// Settles when the task ends: true when all it wrote was acknowledged.
    done: oneshot::Receiver<bool>,
}

impl DestTask {
    /// Waits (until `give_up`) for a task told to stop; true when it confirmed that the peer
    /// acknowledged all it wrote.
    async fn finished(self, give_up: Instant) -> bool {
        match tokio::time::timeout_at(give_up, self.done).await {
            Ok(Ok(acked)) => acked,
            // It failed; its supervisor reported why.
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::warn!(destination = %self.cfg.name,
                    "the delivery task did not finish in time; abandoned (its unacknowledged events stay queued)");
                false
            }
        }
    }
}

/// The metrics endpoint and the switch that stops it.
struct MetricsServer {
    addr: SocketAddr,
    stop: Trigger,
    /// Ends (and lets go of the address) once `stop` fires.
    task: JoinHandle<()>,
}

/// The running pieces: the state directory's lock, the store, one task per destination, the
/// wake-up signal.
pub struct Pipeline {
    pub store: Store,
    tasks: Vec<DestTask>,
    pub(super) tail: Arc<watch::Sender<i64>>,
    metrics: Option<MetricsServer>,
    pub(super) liveness: Liveness,
    pub(super) failures: Failures,
    lock: StateLock,
}

fn limit_of(q: &QueueConfig) -> QueueLimit {
    QueueLimit {
        max_bytes: q.max_bytes,
        when_full: q.when_full,
    }
}

impl Pipeline {
    /// Takes the state directory (one process owns it at a time), opens the store and starts
    /// a delivery task per destination. A failure to record the destinations in the state
    /// file (a full disk) is logged, not fatal: what is queued must still go out.
    pub async fn start(
        cfg: &Config,
        liveness: Liveness,
        failures: Failures,
    ) -> Result<Pipeline, AgentError> {
        let lock = StateLock::acquire(&cfg.state_dir)?;
        let dir = cfg.state_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&dir))
            .await
            .map_err(|e| AgentError::Io(e.to_string()))??
            .with_limit(limit_of(&cfg.queue));
        let tail_now = store.call(|s| s.tail()).await?;
        if let Ok(Some(t)) = store.call(|s| s.last_success()).await {
            metrics::get().mark_success(t.timestamp());
        }
        let tail = Arc::new(watch::channel(tail_now).0);
        let store = store.with_tail_watch(tail.clone());
        let mut p = Pipeline {
            store,
            tasks: Vec::new(),
            tail,
            metrics: None,
            liveness,
            failures,
            lock,
        };
        if let Err(e) = p.sync_destinations(cfg).await {
            tracing::error!(error = %e, "cannot record the destinations in the state file; every destination delivers all the same");
        }
        p.sync_metrics(cfg).await?;
        Ok(p)
    }

    /// Applies a reloaded config in place: destinations whose settings did not change keep
    /// their task and connection; changed ones restart at their stored position; removed ones
    /// stop and their queued events are dropped (counted); new ones start at the end of the
    /// queue. A different `state_dir` needs a full restart (the caller does that). Whatever
    /// fails, every configured destination has a running task afterwards.
    pub async fn reload(&mut self, cfg: &Config) -> Result<(), AgentError> {
        self.store = self.store.clone().with_limit(limit_of(&cfg.queue));
        let recorded = self.sync_destinations(cfg).await;
        self.sync_metrics(cfg).await?;
        recorded
    }

    async fn sync_destinations(&mut self, cfg: &Config) -> Result<(), AgentError> {
        let (kept, going): (Vec<DestTask>, Vec<DestTask>) =
            std::mem::take(&mut self.tasks).into_iter().partition(|t| {
                cfg.destinations
                    .iter()
                    .any(|d| *d == t.cfg && cfg.syslog == t.syslog)
            });
        self.tasks = kept;
        let deadline = Instant::now() + RELOAD_DRAIN;
        for t in &going {
            t.stop.stop_by(deadline);
        }
        for t in going {
            let name = t.cfg.name.clone();
            t.finished(deadline + STOP_GRACE).await;
            if cfg.destinations.iter().any(|d| d.name == name) {
                tracing::info!(destination = %name, "destination settings changed; reconnected");
            } else {
                metrics::get().forget_destination(&name);
            }
        }
        let recorded = self.record_destinations(cfg).await;
        for d in &cfg.destinations {
            if !self.tasks.iter().any(|t| t.cfg.name == d.name) {
                self.spawn_delivery(d, cfg);
            }
        }
        // Keep the config's order (drain and logs follow it).
        self.tasks.sort_by_key(|t| {
            cfg.destinations
                .iter()
                .position(|d| d.name == t.cfg.name)
                .unwrap_or(usize::MAX)
        });
        recorded
    }

    /// Writes the set of destinations to the state file: positions for new ones, removed ones
    /// forgotten and what they leave behind counted as dropped.
    async fn record_destinations(&self, cfg: &Config) -> Result<(), AgentError> {
        let names: Vec<String> = cfg.destinations.iter().map(|d| d.name.clone()).collect();
        let (added, removed) = self
            .store
            .call(move |s| {
                // Count what a removed destination leaves behind before its position goes.
                let before: Vec<(String, i64)> = s
                    .stats()?
                    .into_iter()
                    .filter(|r| !names.contains(&r.name))
                    .map(|r| (r.name, r.events))
                    .collect();
                if crate::failpoint::hit("record-destinations-fails") {
                    return Err(StoreError::Sqlite {
                        path: s.path().to_path_buf(),
                        source: rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                            Some("failpoint record-destinations-fails".into()),
                        ),
                    });
                }
                let (added, removed) = s.sync_destinations(&names)?;
                let removed: Vec<(String, i64)> = before
                    .into_iter()
                    .filter(|(n, _)| removed.contains(n))
                    .collect();
                Ok::<_, StoreError>((added, removed))
            })
            .await?;
        for (name, events) in removed {
            metrics::get().forget_destination(&name);
            if events > 0 {
                metrics::get().dropped(&name, "removed", events as u64);
                tracing::warn!(destination = %name, dropped = events,
                    "destination is no longer configured; the events queued for it were dropped");
            } else {
                tracing::info!(destination = %name, "destination is no longer configured");
            }
        }
        if !added.is_empty() {
            tracing::info!(destinations = ?added, "new destinations start at the end of the queue");
        }
        Ok(())
    }

    fn spawn_delivery(&mut self, d: &DestinationConfig, cfg: &Config) {
        let (stop, shutdown) = shutdown::channel();
        let handle = deliver::spawn(
            d.clone(),
            deliver::header_for(d, &cfg.syslog),
            Wiring {
                store: self.store.clone(),
                tail: self.tail.subscribe(),
                shutdown: shutdown.clone(),
                retry_initial: cfg.queue.retry_initial,
                retry_max: cfg.queue.retry_max,
                liveness: self.liveness.clone(),
            },
        );
        let done = supervise(
            format!("the delivery task of destination {:?}", d.name),
            handle,
            Some(shutdown),
            self.failures.clone(),
        );
        self.tasks.push(DestTask {
            cfg: d.clone(),
            syslog: cfg.syslog.clone(),
            stop,
            done,
        });
    }

    pub(super) async fn sync_metrics(&mut self, cfg: &Config) -> Result<(), AgentError> {
        if self.metrics.as_ref().map(|m| m.addr) == cfg.metrics.listen {
            return Ok(());
        }
        self.stop_metrics().await;
        let Some(addr) = cfg.metrics.listen else {
            return Ok(());
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| AgentError::Io(format!("cannot listen on {addr} for [metrics]: {e}")))?;
        tracing::info!(%addr, "metrics endpoint listening (/metrics, /healthz, /readyz)");
        let (stop, shutdown) = shutdown::channel();
        let task = tokio::spawn(metrics::http::serve(
            listener,
            self.store.clone(),
            cfg.source.poll_interval * 3,
            shutdown,
        ));
        self.metrics = Some(MetricsServer { addr, stop, task });
        Ok(())
    }

    /// Stops the metrics endpoint and waits until its address is free again.
    pub(super) async fn stop_metrics(&mut self) {
        if let Some(m) = self.metrics.take() {
            m.stop.stop_now();
            let _ = m.task.await;
        }
    }

    /// Wakes the delivery tasks after a commit.
    pub async fn notify_committed(&self) {
        if let Ok(t) = self.store.call(|s| s.tail()).await {
            self.tail.send_replace(t);
        }
    }

    /// How many destinations still have events to deliver, and the sum of positions (to see
    /// progress).
    async fn backlog(&self) -> Option<(i64, i64)> {
        let names: Vec<String> = self.tasks.iter().map(|t| t.cfg.name.clone()).collect();
        self.store
            .call(move |s| {
                let mut pending = 0;
                let mut positions = 0;
                for n in &names {
                    pending += i64::from(s.has_pending(n).ok()?);
                    positions += s.position(n).ok()?;
                }
                Some((pending, positions))
            })
            .await
    }

    /// Lets delivery run until nothing is pending. With `stall = true` it gives up when no
    /// destination made progress for `budget` (`once`); otherwise after `budget` in total
    /// (SIGTERM). Returns whether everything was delivered, or the first task failure.
    pub async fn drain(
        &self,
        budget: Duration,
        stall: bool,
        failed: &mut mpsc::UnboundedReceiver<String>,
    ) -> Result<bool, AgentError> {
        let started = Instant::now();
        let mut last_progress = Instant::now();
        let mut last_positions = None;
        loop {
            // A store that does not answer must not hold the stop past its budget.
            let deadline = if stall { last_progress } else { started } + budget;
            let backlog = tokio::time::timeout_at(deadline, self.backlog()).await;
            if let Ok(Some((pending, positions))) = backlog {
                if pending == 0 {
                    return Ok(true);
                }
                if last_positions != Some(positions) {
                    last_positions = Some(positions);
                    last_progress = Instant::now();
                }
            }
            let since = if stall { last_progress } else { started };
            if since.elapsed() >= budget {
                return Ok(false);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                Some(why) = failed.recv() => return Err(AgentError::TaskFailed(why)),
            }
        }
    }

    /// Stops every delivery task and the metrics endpoint. Each task keeps delivering what is
    /// in flight until `deadline`, records its position and closes; one that is not done
    /// [`STOP_GRACE`] later is abandoned. Returns whether every task confirmed that the peer
    /// acknowledged all it wrote, and the state directory's lock: an abandoned task may still
    /// write until the process ends, so a caller that exits keeps the lock until then.
    pub async fn stop(self, deadline: Instant) -> (bool, StateLock) {
        if let Some(m) = &self.metrics {
            m.stop.stop_now();
        }
        for t in &self.tasks {
            t.stop.stop_by(deadline);
        }
        let give_up = deadline + STOP_GRACE;
        let mut all = true;
        for t in self.tasks {
            all &= t.finished(give_up).await;
        }
        let compact = self.store.call(|s| s.compact());
        match tokio::time::timeout_at(give_up.max(Instant::now()) + COMPACT_WITHIN, compact).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot delete delivered events at stop"),
            Err(_) => tracing::debug!("no time left to delete delivered events at stop"),
        }
        (all, self.lock)
    }

    pub fn destination_count(&self) -> usize {
        self.tasks.len()
    }
}
