//! Wires source, store and delivery together: the poll loop, the delivery tasks, shutdown and
//! reload. `run`, `once` and `demo` are the same [`Pipeline`] driven differently.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Config, ConfigError, Problem, Protocol};
use crate::deliver::{self, Wiring};
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

/// The running pieces: the store, one task per destination, the wake-up and stop signals.
pub struct Pipeline {
    pub store: Store,
    names: Vec<String>,
    tail: watch::Sender<i64>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<bool>>,
}

/// Protocols whose transport is not built yet fail at start, naming the key, instead of
/// retrying forever.
fn check_supported(cfg: &Config, path: &Path) -> Result<(), ConfigError> {
    let problems: Vec<Problem> = cfg
        .destinations
        .iter()
        .enumerate()
        .filter(|(_, d)| matches!(d.protocol, Protocol::Tls | Protocol::Unix))
        .map(|(i, d)| Problem {
            key: format!("destinations[{i}].protocol"),
            line: None,
            message: format!(
                "protocol \"{}\" is not available in this version yet (use tcp, udp or stdout)",
                d.protocol.as_str()
            ),
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError {
            path: path.to_path_buf(),
            problems,
        })
    }
}

impl Pipeline {
    pub async fn start(cfg: &Config, config_path: &Path) -> Result<Pipeline, AgentError> {
        check_supported(cfg, config_path)?;
        let dir = cfg.state_dir.clone();
        let limit = QueueLimit {
            max_bytes: cfg.queue.max_bytes,
            when_full: cfg.queue.when_full,
        };
        let store = tokio::task::spawn_blocking(move || Store::open(&dir))
            .await
            .map_err(|e| AgentError::Io(e.to_string()))??
            .with_limit(limit);
        let names: Vec<String> = cfg.destinations.iter().map(|d| d.name.clone()).collect();
        let n = names.clone();
        let (added, removed) = store.call(move |s| s.sync_destinations(&n)).await?;
        for r in removed {
            tracing::warn!(destination = %r, "destination is no longer configured; its queue position was removed");
        }
        if !added.is_empty() {
            tracing::debug!(destinations = ?added, "new destinations start at the end of the queue");
        }
        let tail_now = store.call(|s| s.tail()).await?;
        let (tail, tail_rx) = watch::channel(tail_now);
        let (stop, stop_rx) = watch::channel(false);
        let tasks = cfg
            .destinations
            .iter()
            .map(|d| {
                let header = deliver::header_for(d, &cfg.syslog);
                deliver::spawn(
                    d.clone(),
                    header,
                    Wiring {
                        store: store.clone(),
                        tail: tail_rx.clone(),
                        stop: stop_rx.clone(),
                        retry_initial: cfg.queue.retry_initial,
                        retry_max: cfg.queue.retry_max,
                        close_timeout: cfg.shutdown_timeout,
                    },
                )
            })
            .collect();
        Ok(Pipeline {
            store,
            names,
            tail,
            stop,
            tasks,
        })
    }

    /// Wakes the delivery tasks after a commit.
    pub async fn notify_committed(&self) {
        if let Ok(t) = self.store.call(|s| s.tail()).await {
            self.tail.send_replace(t);
        }
    }

    /// Events not yet delivered, summed over destinations, and the sum of positions (to see
    /// progress).
    async fn backlog(&self) -> Option<(i64, i64)> {
        let names = self.names.clone();
        self.store
            .call(move |s| {
                let mut pending = 0;
                let mut positions = 0;
                for n in &names {
                    pending += s.pending(n).ok()?;
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

    /// Stops every delivery task (each closes its connection gracefully). Returns true when
    /// every task confirmed that the peer acknowledged all it wrote.
    pub async fn stop(self) -> bool {
        self.stop.send_replace(true);
        let mut all = true;
        for t in self.tasks {
            all &= t.await.unwrap_or(false);
        }
        all
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
pub async fn once(cfg: &Config, config_path: &Path) -> Result<OnceOutcome, AgentError> {
    let pipeline = Pipeline::start(cfg, config_path).await?;
    let mut src = Source::new(cfg)?;
    let polled = poll(&mut src, &pipeline.store).await;
    pipeline.notify_committed().await;
    prune(cfg, &pipeline.store).await;
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
    let result = source::poll_and_log(src, store).await;
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

/// Keeps the dedup table bounded: versions recorded longer ago than the lookback plus a day
/// cannot be served to us again by a `since` query.
async fn prune(cfg: &Config, store: &Store) {
    let horizon = chrono::Duration::from_std(cfg.source.lookback)
        .unwrap_or(chrono::Duration::days(1))
        .max(chrono::Duration::days(1))
        + chrono::Duration::days(1);
    let before = chrono::Utc::now() - horizon;
    match store.call(move |s| s.prune_seen(before)).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(pruned = n, "forgot old indicator versions"),
        Err(e) => tracing::warn!(error = %e, "cannot prune old indicator versions"),
    }
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd NOTIFY_SOCKET is unset and this is a no-op.
    let _ = sd_notify::notify(false, state);
}

enum Next {
    Stop,
    Reload(Box<Config>),
}

/// The agent in the foreground until SIGTERM/SIGINT (SPEC `run`).
pub async fn run(config_path: PathBuf, mut cfg: Config) -> Result<(), AgentError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(AgentError::Signals)?;
    spawn_watchdog();
    let mut first = true;
    loop {
        let pipeline = Pipeline::start(&cfg, &config_path).await?;
        let mut src = Source::new(&cfg)?;
        if first {
            notify(&[sd_notify::NotifyState::Ready]);
            tracing::info!(destinations = pipeline.names.len(), poll_interval = ?cfg.source.poll_interval, "agent started");
            first = false;
        }
        let mut next_poll = Instant::now();
        let next = loop {
            let poll = async {
                tokio::time::sleep_until(next_poll).await;
                poll(&mut src, &pipeline.store).await
            };
            tokio::select! {
                result = poll => {
                    pipeline.notify_committed().await;
                    let status = match &result {
                        Ok(r) => format!("last poll ok: {} new versions", r.new_versions()),
                        Err(e) => format!("last poll failed: {}", e.kind()),
                    };
                    notify(&[sd_notify::NotifyState::Status(&status)]);
                    if result.is_ok() {
                        prune(&cfg, &pipeline.store).await;
                    }
                    next_poll = Instant::now() + cfg.source.poll_interval;
                }
                _ = sigterm.recv() => break Next::Stop,
                _ = sigint.recv() => break Next::Stop,
                _ = sighup.recv() => match Config::load(&config_path) {
                    Ok(new) => {
                        tracing::info!(path = %config_path.display(), "SIGHUP: configuration reloaded");
                        break Next::Reload(Box::new(new));
                    }
                    Err(e) => {
                        for line in e.to_string().lines() {
                            tracing::error!("SIGHUP: new configuration rejected, keeping the running one: {line}");
                        }
                    }
                },
            }
        };
        match next {
            Next::Reload(new) => {
                pipeline.stop().await;
                cfg = *new;
            }
            Next::Stop => {
                notify(&[sd_notify::NotifyState::Stopping]);
                tracing::info!(timeout = ?cfg.shutdown_timeout, "stopping: polling stopped, delivering what is queued");
                let delivered = pipeline.drain(cfg.shutdown_timeout, false).await;
                let acked = pipeline.stop().await;
                if delivered && acked {
                    tracing::info!("stopped; everything queued was delivered");
                } else {
                    tracing::warn!("stopped with events still queued; they are kept and sent at the next start");
                }
                return Ok(());
            }
        }
    }
}

/// Pings the systemd watchdog at half its interval when `WATCHDOG_USEC` asks for it.
fn spawn_watchdog() {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = Duration::from_micros(usec / 2);
    tokio::spawn(async move {
        loop {
            notify(&[sd_notify::NotifyState::Watchdog]);
            tokio::time::sleep(every).await;
        }
    });
}
