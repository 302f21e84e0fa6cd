//! Wires source, store and delivery together: the poll loop, the delivery tasks, shutdown and
//! reload. `run`, `once` and `demo` are the same [`Pipeline`] driven differently.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use std::net::SocketAddr;

use crate::config::{Config, ConfigError, DestinationConfig, QueueConfig, SyslogConfig};
use crate::deliver::{self, Wiring};
use crate::metrics;
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
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("{0}")]
    Io(String),
}

/// One running delivery task and the settings it was started with.
struct DestTask {
    cfg: DestinationConfig,
    syslog: SyslogConfig,
    stop: watch::Sender<bool>,
    handle: JoinHandle<bool>,
}

impl DestTask {
    /// Stops the task (it closes its connection gracefully); true when all it wrote was
    /// acknowledged.
    async fn stop(self) -> bool {
        self.stop.send_replace(true);
        self.handle.await.unwrap_or(false)
    }
}

/// The metrics endpoint and the switch that stops it.
struct MetricsServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

/// The running pieces: the store, one task per destination, the wake-up signal.
pub struct Pipeline {
    pub store: Store,
    tasks: Vec<DestTask>,
    tail: Arc<watch::Sender<i64>>,
    metrics: Option<MetricsServer>,
}

fn limit_of(q: &QueueConfig) -> QueueLimit {
    QueueLimit {
        max_bytes: q.max_bytes,
        when_full: q.when_full,
    }
}

impl Pipeline {
    pub async fn start(cfg: &Config) -> Result<Pipeline, AgentError> {
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
        };
        p.sync_destinations(cfg).await?;
        p.sync_metrics(cfg).await?;
        Ok(p)
    }

    /// Applies a reloaded config in place: destinations whose settings did not change keep
    /// their task and connection; changed ones restart at their stored position; removed ones
    /// stop and their queued events are dropped (counted); new ones start at the end of the
    /// queue. A different `state_dir` needs a full restart (the caller does that).
    pub async fn reload(&mut self, cfg: &Config) -> Result<(), AgentError> {
        self.store = self.store.clone().with_limit(limit_of(&cfg.queue));
        self.sync_destinations(cfg).await?;
        self.sync_metrics(cfg).await
    }

    async fn sync_destinations(&mut self, cfg: &Config) -> Result<(), AgentError> {
        let mut kept = Vec::new();
        for t in std::mem::take(&mut self.tasks) {
            match cfg.destinations.iter().find(|d| d.name == t.cfg.name) {
                Some(d) if *d == t.cfg && cfg.syslog == t.syslog => kept.push(t),
                Some(_) => {
                    tracing::info!(destination = %t.cfg.name, "destination settings changed; reconnecting");
                    t.stop().await;
                }
                None => {
                    let name = t.cfg.name.clone();
                    t.stop().await;
                    metrics::get().forget_destination(&name);
                }
            }
        }
        self.tasks = kept;
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
        for d in &cfg.destinations {
            if self.tasks.iter().any(|t| t.cfg.name == d.name) {
                continue;
            }
            let (stop, stop_rx) = watch::channel(false);
            let handle = deliver::spawn(
                d.clone(),
                deliver::header_for(d, &cfg.syslog),
                Wiring {
                    store: self.store.clone(),
                    tail: self.tail.subscribe(),
                    stop: stop_rx,
                    retry_initial: cfg.queue.retry_initial,
                    retry_max: cfg.queue.retry_max,
                    close_timeout: cfg.shutdown_timeout,
                },
            );
            self.tasks.push(DestTask {
                cfg: d.clone(),
                syslog: cfg.syslog.clone(),
                stop,
                handle,
            });
        }
        // Keep the config's order (drain and logs follow it).
        self.tasks.sort_by_key(|t| {
            cfg.destinations
                .iter()
                .position(|d| d.name == t.cfg.name)
                .unwrap_or(usize::MAX)
        });
        Ok(())
    }

    async fn sync_metrics(&mut self, cfg: &Config) -> Result<(), AgentError> {
        if self.metrics.as_ref().map(|m| m.addr) == cfg.metrics.listen {
            return Ok(());
        }
        if let Some(old) = self.metrics.take() {
            old.stop.send_replace(true);
        }
        let Some(addr) = cfg.metrics.listen else {
            return Ok(());
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| AgentError::Io(format!("cannot listen on {addr} for [metrics]: {e}")))?;
        tracing::info!(%addr, "metrics endpoint listening (/metrics, /healthz, /readyz)");
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(metrics::serve(
            listener,
            self.store.clone(),
            cfg.source.poll_interval * 3,
            stop_rx,
        ));
        self.metrics = Some(MetricsServer { addr, stop });
        Ok(())
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
    /// (SIGTERM). Returns true when everything was delivered.
    pub async fn drain(&self, budget: Duration, stall: bool) -> bool {
        let started = Instant::now();
        let mut last_progress = Instant::now();
        let mut last_positions = None;
        loop {
            if let Some((pending, positions)) = self.backlog().await {
                if pending == 0 {
                    return true;
                }
                if last_positions != Some(positions) {
                    last_positions = Some(positions);
                    last_progress = Instant::now();
                }
            }
            let since = if stall { last_progress } else { started };
            if since.elapsed() >= budget {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every delivery task (each closes its connection gracefully) and the metrics
    /// endpoint. Returns true when every task confirmed that the peer acknowledged all it wrote.
    pub async fn stop(self) -> bool {
        if let Some(m) = &self.metrics {
            m.stop.send_replace(true);
        }
        for t in &self.tasks {
            t.stop.send_replace(true);
        }
        let mut all = true;
        for t in self.tasks {
            all &= t.handle.await.unwrap_or(false);
        }
        if let Err(e) = self.store.call(|s| s.compact()).await {
            tracing::debug!(error = %e, "cannot delete delivered events at stop");
        }
        all
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

/// One poll cycle, then deliver everything queued (SPEC `once`).
pub async fn once(cfg: &Config) -> Result<OnceOutcome, AgentError> {
    let pipeline = Pipeline::start(cfg).await?;
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
    let delivered = pipeline.drain(cfg.shutdown_timeout, true).await;
    let acked = pipeline.stop().await;
    Ok(match (polled, delivered && acked) {
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
/// delivery after every cycle. Reload and stop abort it; that is safe at any await point
/// because every page commits in one transaction.
fn spawn_poller(
    mut src: Source,
    store: Store,
    tail: Arc<watch::Sender<i64>>,
    cfg: Config,
    results: tokio::sync::mpsc::Sender<Result<source::CycleReport, String>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let result = poll(&mut src, &store).await;
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
            let _ = results.send(result.map_err(|e| e.kind().to_string())).await;
            tokio::time::sleep(cfg.source.poll_interval).await;
        }
    })
}

/// The agent in the foreground until SIGTERM/SIGINT (SPEC `run`).
pub async fn run(config_path: PathBuf, mut cfg: Config) -> Result<(), AgentError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(AgentError::Signals)?;
    let mut pipeline = Pipeline::start(&cfg).await?;
    let (results_tx, mut results) = tokio::sync::mpsc::channel(4);
    let mut poller = spawn_poller(
        Source::new(&cfg)?,
        pipeline.store.clone(),
        pipeline.tail.clone(),
        cfg.clone(),
        results_tx.clone(),
    );
    let mut watchdog = watchdog_interval();
    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(destinations = pipeline.destination_count(), poll_interval = ?cfg.source.poll_interval, "agent started");
    loop {
        tokio::select! {
            Some(result) = results.recv() => {
                let depth = pipeline.store.call(|s| s.queue_bytes()).await.unwrap_or(0);
                let status = match &result {
                    Ok(r) => format!("last poll ok ({} new versions); queue {depth} bytes", r.new_versions()),
                    Err(kind) => format!("last poll failed ({kind}); queue {depth} bytes"),
                };
                notify(&[sd_notify::NotifyState::Status(&status)]);
            }
            _ = tick(&mut watchdog) => notify(&[sd_notify::NotifyState::Watchdog]),
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                match reload(&config_path, &cfg, &mut pipeline).await {
                    Ok(Some((new, src))) => {
                        poller.abort();
                        poller = spawn_poller(src, pipeline.store.clone(), pipeline.tail.clone(), (*new).clone(), results_tx.clone());
                        cfg = *new;
                        tracing::info!(path = %config_path.display(), "SIGHUP: configuration reloaded");
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "SIGHUP: reload failed half-way; destinations run with the new settings where they could be applied"),
                }
                notify(&[sd_notify::NotifyState::Ready]);
            }
        }
    }
    poller.abort();
    notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!(timeout = ?cfg.shutdown_timeout, "stopping: polling stopped, delivering what is queued");
    let delivered = pipeline.drain(cfg.shutdown_timeout, false).await;
    let acked = pipeline.stop().await;
    if delivered && acked {
        tracing::info!("stopped; everything queued was delivered");
    } else {
        tracing::warn!(
            "stopped with events still queued; they are kept and sent at the next start"
        );
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
        let fresh = Pipeline::start(&new).await?;
        std::mem::replace(pipeline, fresh).stop().await;
    } else {
        pipeline.reload(&new).await?;
    }
    Ok(Some((Box::new(new), src)))
}

/// The systemd watchdog period (half of `WATCHDOG_USEC`), when systemd asks for one.
fn watchdog_interval() -> Option<tokio::time::Interval> {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    Some(tokio::time::interval(Duration::from_micros(usec / 2)))
}

/// Waits for the next watchdog tick; never, without a watchdog. Pinging from the main loop
/// means a wedged agent stops pinging and systemd restarts it.
async fn tick(w: &mut Option<tokio::time::Interval>) {
    match w {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
