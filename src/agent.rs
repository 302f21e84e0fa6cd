//! Wires source, store and delivery together: the poll loop, the delivery tasks, shutdown and
//! reload. `run`, `once` and `demo` are the same [`Pipeline`] driven differently.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use std::net::SocketAddr;

use crate::config::{Config, ConfigError, DestinationConfig, QueueConfig, SyslogConfig};
use crate::deliver::{self, Wiring};
use crate::liveness::Liveness;
use crate::lock::{LockError, StateLock};
use crate::metrics;
use crate::shutdown::{self, Shutdown, Trigger};
use crate::source::{self, CycleError, Source};
use crate::store::{QueueLimit, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cycle(#[from] CycleError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("{0}; exiting so that the service manager restarts the agent")]
    TaskFailed(String),
    #[error("{0}")]
    Io(String),
}

/// Where tasks report that they failed: a panic, or an end nobody asked for.
type Failures = mpsc::UnboundedSender<String>;

/// How long delivery tasks get after the stop's deadline to record their positions and close
/// before they are abandoned. With the rest of the exit this keeps every stop within
/// `shutdown_timeout` + 2 s, whatever the receivers do.
const STOP_GRACE: Duration = Duration::from_millis(1200);

/// Deleting delivered events at stop is worth only this much time past [`STOP_GRACE`].
const COMPACT_WITHIN: Duration = Duration::from_millis(300);

/// How long a destination whose settings changed at reload may take to finish what it has in
/// flight before its new task starts.
const RELOAD_DRAIN: Duration = Duration::from_secs(1);

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

/// Watches a task. When it panics, or ends while nobody asked it to (`stop` not fired, or no
/// `stop` at all), the reason goes to `failures`; its result goes to the returned receiver.
fn supervise<T: Send + 'static>(
    what: String,
    task: JoinHandle<T>,
    stop: Option<Shutdown>,
    failures: Failures,
) -> oneshot::Receiver<T> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        match task.await {
            Ok(v) => {
                if !stop.as_ref().is_some_and(Shutdown::is_stopping) {
                    let _ = failures.send(format!("{what} ended on its own"));
                }
                let _ = tx.send(v);
            }
            Err(e) if e.is_panic() => {
                let _ = failures.send(format!(
                    "{what} failed: it panicked: {}",
                    panic_message(e.into_panic())
                ));
            }
            // Cancelled by the runtime shutting down.
            Err(_) => {}
        }
    });
    rx
}

fn panic_message(p: Box<dyn Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        return (*s).to_string();
    }
    p.downcast_ref::<String>()
        .cloned()
        .unwrap_or_else(|| "(no message)".into())
}

/// The metrics endpoint and the switch that stops it.
struct MetricsServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// Ends (and lets go of the address) once `stop` fires.
    task: JoinHandle<()>,
}

/// The running pieces: the state directory's lock, the store, one task per destination, the
/// wake-up signal.
pub struct Pipeline {
    pub store: Store,
    tasks: Vec<DestTask>,
    tail: Arc<watch::Sender<i64>>,
    metrics: Option<MetricsServer>,
    liveness: Liveness,
    failures: Failures,
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

    async fn sync_metrics(&mut self, cfg: &Config) -> Result<(), AgentError> {
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
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(metrics::http::serve(
            listener,
            self.store.clone(),
            cfg.source.poll_interval * 3,
            stop_rx,
        ));
        self.metrics = Some(MetricsServer { addr, stop, task });
        Ok(())
    }

    /// Stops the metrics endpoint and waits until its address is free again.
    async fn stop_metrics(&mut self) {
        if let Some(m) = self.metrics.take() {
            m.stop.send_replace(true);
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
            m.stop.send_replace(true);
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

/// Outcome of `once` / `demo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnceOutcome {
    Delivered,
    PollFailed,
    Undelivered,
}

/// One poll cycle, then deliver everything queued, then stop.
pub async fn once(cfg: &Config) -> Result<OnceOutcome, AgentError> {
    let (failures, mut failed) = mpsc::unbounded_channel();
    let pipeline = Pipeline::start(cfg, Liveness::new(Duration::from_secs(10)), failures).await?;
    let mut src = Source::new(cfg)?;
    // Only `once` may draw a progress bar; `run`'s stderr is a log.
    src.progress_bar_if_terminal();
    let polled = poll(&mut src, &pipeline.store).await;
    pipeline.notify_committed().await;
    // Only after a successful poll: a failed one leaves the cursor where it was, and the
    // versions seen since then are needed when the next cycle re-reads that window.
    if polled.is_ok() {
        source::prune_seen(cfg.source.lookback, &pipeline.store).await;
    }
    let delivered = pipeline
        .drain(cfg.shutdown_timeout, true, &mut failed)
        .await;
    let (acked, lock) = pipeline.stop(Instant::now()).await;
    // Held until the process exits (see `Pipeline::stop`).
    std::mem::forget(lock);
    if let Ok(why) = failed.try_recv() {
        return Err(AgentError::TaskFailed(why));
    }
    Ok(match (polled, delivered? && acked) {
        (_, false) => OnceOutcome::Undelivered,
        (Err(_), true) => OnceOutcome::PollFailed,
        (Ok(_), true) => OnceOutcome::Delivered,
    })
}

/// One cycle via [`source::poll_and_log`], plus the explanation a full disk deserves.
async fn poll(src: &mut Source, store: &Store) -> Result<source::CycleReport, CycleError> {
    let started = std::time::Instant::now();
    let result = source::poll_and_log(src, store).await;
    let m = metrics::get();
    m.poll_finished(started.elapsed(), result.is_ok());
    // The API client counts each failed request itself; a file import counts once per failure.
    if let Err(e @ CycleError::File(_)) = &result {
        m.source_error(e.kind());
    }
    if let Err(CycleError::Store(e)) = &result {
        if e.is_disk_full() {
            tracing::error!(
                path = %store.path().display(),
                "disk full: cannot write the state file; polling pauses (the cursor does not move) until there is room, delivery continues"
            );
        }
    }
    result
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd NOTIFY_SOCKET is unset and this is a no-op.
    let _ = sd_notify::notify(false, state);
}

/// The poll loop as its own task: it owns the source, commits through the store and wakes
/// delivery after every cycle. Reload and stop end it through the returned trigger (or by
/// dropping it). A panic in it is reported to `failures`.
fn spawn_poller(
    mut src: Source,
    p: &Pipeline,
    cfg: Config,
    results: mpsc::Sender<Result<source::CycleReport, String>>,
) -> Trigger {
    let (store, tail) = (p.store.clone(), p.tail.clone());
    let beat = p.liveness.register("the poller", source::STEP_ALLOWANCE);
    src.watched_by(beat.clone());
    let (trigger, shutdown) = shutdown::channel();
    let mut stop = shutdown.clone();
    let task = tokio::spawn(async move {
        loop {
            // Each request, wait and commit of the cycle promises its own bound from here on.
            beat.expect_within(source::STEP_ALLOWANCE);
            // A stop ends the cycle at its next await: every page commits in one transaction
            // and the cursor moves only with the last, so the next start re-walks the window.
            let result = tokio::select! {
                r = poll(&mut src, &store) => r,
                _ = stop.stopped() => return,
            };
            // The store calls below.
            beat.expect_within(source::STEP_ALLOWANCE);
            if let Ok(t) = store.call(|s| s.tail()).await {
                tail.send_replace(t);
            }
            if result.is_ok() {
                source::prune_seen(cfg.source.lookback, &store).await;
            }
            // Between polls the dedup index is only memory: give it back (see the store).
            let freed = store.call(|s| s.release_seen_index()).await;
            tracing::debug!(
                bytes = freed,
                "released the dedup index until the next poll"
            );
            tokio::select! {
                _ = results.send(result.map_err(|e| e.kind().to_string())) => {}
                _ = stop.stopped() => return,
            }
            beat.expect_within(cfg.source.poll_interval);
            tokio::select! {
                _ = tokio::time::sleep(cfg.source.poll_interval) => {}
                _ = stop.stopped() => return,
            }
        }
    });
    drop(supervise(
        "the poller".into(),
        task,
        Some(shutdown),
        p.failures.clone(),
    ));
    trigger
}
/// The agent in the foreground until SIGTERM/SIGINT.
pub async fn run(config_path: PathBuf, mut cfg: Config) -> Result<(), AgentError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(AgentError::Signals)?;
    let mut watchdog = Watchdog::from_env();
    // Promises are judged with one ping period of slack (10 s without a watchdog).
    let liveness = Liveness::new(
        watchdog
            .as_ref()
            .map_or(Duration::from_secs(10), |w| w.period),
    );
    let (failures, mut failed) = mpsc::unbounded_channel();
    let mut pipeline = Pipeline::start(&cfg, liveness.clone(), failures.clone()).await?;
    let (results_tx, mut results) = mpsc::channel(4);
    let mut poller = spawn_poller(
        Source::new(&cfg)?,
        &pipeline,
        cfg.clone(),
        results_tx.clone(),
    );
    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(destinations = pipeline.destination_count(), poll_interval = ?cfg.source.poll_interval, "agent started");
    let failure = loop {
        tokio::select! {
            Some(result) = results.recv() => {
                let depth = pipeline.store.call(|s| s.queue_bytes()).await.unwrap_or(0);
                let status = match &result {
                    Ok(r) => format!("last poll ok ({} new versions); queue {depth} bytes", r.new_versions()),
                    Err(kind) => format!("last poll failed ({kind}); queue {depth} bytes"),
                };
                notify(&[sd_notify::NotifyState::Status(&status)]);
            }
            _ = tick(&mut watchdog) => {
                if let Some(w) = &mut watchdog {
                    w.ping_if_alive(&liveness);
                }
            }
            Some(why) = failed.recv() => break Some(why),
            _ = sigterm.recv() => break None,
            _ = sigint.recv() => break None,
            _ = sighup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                match reload(&config_path, &cfg, &mut pipeline).await {
                    Ok(Some((new, src))) => {
                        poller.stop_now();
                        poller = spawn_poller(src, &pipeline, (*new).clone(), results_tx.clone());
                        cfg = *new;
                        tracing::info!(path = %config_path.display(), "SIGHUP: configuration reloaded");
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "SIGHUP: reload failed half-way; every destination runs, with the new settings where they could be applied"),
                }
                notify(&[sd_notify::NotifyState::Ready]);
            }
        }
    };
    poller.stop_now();
    // The stop may take shutdown_timeout plus its grace; make sure the service manager waits
    // that long even where the unit's TimeoutStopSec is shorter.
    let budget = cfg.shutdown_timeout + Duration::from_secs(5);
    let usec = u32::try_from(budget.as_micros()).unwrap_or(u32::MAX);
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::ExtendTimeoutUsec(usec),
    ]);
    if let Some(why) = failure {
        tracing::error!("{why}; stopping (exit 1, so that the service manager restarts the agent)");
        let (_, lock) = pipeline.stop(Instant::now()).await;
        std::mem::forget(lock);
        return Err(AgentError::TaskFailed(why));
    }
    tracing::info!(timeout = ?cfg.shutdown_timeout, "stopping: polling stopped, delivering what is queued");
    let deadline = Instant::now() + cfg.shutdown_timeout;
    let delivered = pipeline
        .drain(cfg.shutdown_timeout, false, &mut failed)
        .await;
    let (acked, lock) = pipeline.stop(deadline).await;
    // Held until the process exits: an abandoned task may still write until then.
    std::mem::forget(lock);
    // A task that failed while it was stopping.
    let delivered = match failed.try_recv() {
        Ok(why) => Err(AgentError::TaskFailed(why)),
        Err(_) => delivered,
    };
    match delivered {
        Ok(true) if acked => tracing::info!("stopped; everything queued was delivered"),
        Ok(_) => tracing::warn!(
            "stopped with events still queued; they are kept and sent at the next start"
        ),
        Err(e) => {
            tracing::error!("{e}");
            return Err(e);
        }
    }
    Ok(())
}

/// Re-reads the config. `Ok(None)`: rejected (logged), the running config stays. Otherwise
/// the pipeline has been updated and the new config and source are returned.
async fn reload(
    path: &Path,
    old: &Config,
    pipeline: &mut Pipeline,
) -> Result<Option<(Box<Config>, Source)>, AgentError> {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            for line in e.to_string().lines() {
                tracing::error!(
                    "SIGHUP: new configuration rejected, keeping the running one: {line}"
                );
            }
            return Ok(None);
        }
    };
    // TLS files must load before anything is torn down.
    for d in new
        .destinations
        .iter()
        .filter(|d| d.protocol == crate::config::Protocol::Tls)
    {
        if let Err(e) = crate::deliver::tls::client_config(d) {
            tracing::error!(destination = %d.name, error = %e, "SIGHUP: new configuration rejected, keeping the running one");
            return Ok(None);
        }
    }
    let src = match Source::new(&new) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: new configuration rejected, keeping the running one");
            return Ok(None);
        }
    };
    if new.state_dir != old.state_dir {
        // The new pipeline may want the same metrics address.
        pipeline.stop_metrics().await;
        let fresh = Pipeline::start(&new, pipeline.liveness.clone(), pipeline.failures.clone());
        let fresh = match fresh.await {
            Ok(p) => p,
            Err(e) => {
                if let Err(m) = pipeline.sync_metrics(old).await {
                    tracing::error!(error = %m, "SIGHUP: cannot restore the metrics endpoint");
                }
                return Err(e);
            }
        };
        // The old directory is free for others once its tasks are done.
        let (_, old_lock) = std::mem::replace(pipeline, fresh)
            .stop(Instant::now() + RELOAD_DRAIN)
            .await;
        drop(old_lock);
    } else {
        pipeline.reload(&new).await?;
    }
    Ok(Some((Box::new(new), src)))
}

/// The systemd watchdog, when systemd asks for one (`WATCHDOG_USEC`).
struct Watchdog {
    /// Half of `WATCHDOG_USEC`: how often we ping.
    period: Duration,
    ticks: tokio::time::Interval,
    /// The tasks that were late at the last tick, so the log says it once per incident.
    late: Vec<String>,
}

impl Watchdog {
    fn from_env() -> Option<Watchdog> {
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

    /// Pings only while every task keeps its promise (see [`Liveness`]): a task that hangs
    /// stops the pings, and systemd restarts the agent.
    fn ping_if_alive(&mut self, liveness: &Liveness) {
        let overdue = liveness.overdue();
        let late: Vec<String> = overdue.iter().map(|(n, _)| n.clone()).collect();
        if late.is_empty() {
            notify(&[sd_notify::NotifyState::Watchdog]);
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
async fn tick(w: &mut Option<Watchdog>) {
    match w {
        Some(w) => {
            w.ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}
