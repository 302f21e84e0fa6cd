//! The agent in the foreground: poll on an interval, deliver, reload on SIGHUP, stop on
//! SIGTERM/SIGINT — or exit 1 when a task fails, so that the service manager restarts it.
//!
//! The stop delivers what is queued for up to `shutdown_timeout`; what is not acknowledged by
//! then stays queued for the next start. systemd is told how long the stop may take, since a
//! unit's `TimeoutStopSec` may be shorter.

use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::pipeline::Pipeline;
use super::systemd::{self, notify, NotifyState, Watchdog};
use super::{poller, reload, AgentError};
use crate::config::Config;
use crate::liveness::Liveness;
use crate::shutdown::Trigger;
use crate::source::{CycleReport, Source};

/// The agent in the foreground until SIGTERM/SIGINT.
pub async fn run(config_path: PathBuf, cfg: Config) -> Result<(), AgentError> {
    let mut signals = Signals::install()?;
    let watchdog = Watchdog::from_env();
    // Promises are judged with one ping period of slack (10 s without a watchdog).
    let slack = watchdog
        .as_ref()
        .map_or(Duration::from_secs(10), |w| w.period);
    let liveness = Liveness::new(slack);
    let (failures, failed) = mpsc::unbounded_channel();
    let pipeline = Pipeline::start(&cfg, liveness.clone(), failures).await?;
    let (results_tx, results) = mpsc::channel(4);
    let poller = poller::spawn(
        Source::new(&cfg)?,
        &pipeline,
        cfg.clone(),
        results_tx.clone(),
    );
    notify(&[NotifyState::Ready]);
    tracing::info!(destinations = pipeline.destination_count(), poll_interval = ?cfg.source.poll_interval, "agent started");
    let mut agent = Running {
        config_path,
        cfg,
        pipeline,
        poller,
        results,
        results_tx,
        failed,
        watchdog,
        liveness,
    };
    let failure = agent.until_stopped(&mut signals).await;
    agent.stop(failure).await
}

/// The signals the agent answers.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Result<Signals, AgentError> {
        let on = |kind| signal(kind).map_err(AgentError::Signals);
        Ok(Signals {
            term: on(SignalKind::terminate())?,
            int: on(SignalKind::interrupt())?,
            hup: on(SignalKind::hangup())?,
        })
    }
}

/// What happens next in the foreground loop.
enum Next {
    Continue,
    Reload,
    /// Stop; with the reason when a task failed.
    Stop(Option<String>),
}

/// The foreground agent's state between signals.
struct Running {
    config_path: PathBuf,
    cfg: Config,
    pipeline: Pipeline,
    poller: Trigger,
    results: mpsc::Receiver<Result<CycleReport, String>>,
    /// Handed to each new poller after a reload.
    results_tx: mpsc::Sender<Result<CycleReport, String>>,
    failed: mpsc::UnboundedReceiver<String>,
    watchdog: Option<Watchdog>,
    liveness: Liveness,
}

impl Running {
    /// Serves until a stop signal (`None`) or a task failure (its reason).
    async fn until_stopped(&mut self, signals: &mut Signals) -> Option<String> {
        loop {
            let next = tokio::select! {
                Some(result) = self.results.recv() => {
                    self.report_status(&result).await;
                    Next::Continue
                }
                _ = systemd::tick(&mut self.watchdog) => {
                    if let Some(w) = &mut self.watchdog {
                        w.ping_if_alive(&self.liveness);
                    }
                    Next::Continue
                }
                Some(why) = self.failed.recv() => Next::Stop(Some(why)),
                _ = signals.term.recv() => Next::Stop(None),
                _ = signals.int.recv() => Next::Stop(None),
                _ = signals.hup.recv() => Next::Reload,
            };
            match next {
                Next::Continue => {}
                Next::Reload => self.reload().await,
                Next::Stop(failure) => return failure,
            }
        }
    }

    /// The last poll's result and the queue's size as the unit's status line.
    async fn report_status(&self, result: &Result<CycleReport, String>) {
        let depth = self
            .pipeline
            .store
            .call(|s| s.queue_bytes())
            .await
            .unwrap_or(0);
        let status = match result {
            Ok(r) => format!(
                "last poll ok ({} new versions); queue {depth} bytes",
                r.new_versions()
            ),
            Err(kind) => format!("last poll failed ({kind}); queue {depth} bytes"),
        };
        notify(&[NotifyState::Status(&status)]);
    }

    async fn reload(&mut self) {
        notify(&[NotifyState::Reloading]);
        match reload::reload(&self.config_path, &self.cfg, &mut self.pipeline).await {
            Ok(Some((new, src))) => {
                self.poller.stop_now();
                let poller_cfg = (*new).clone();
                self.poller =
                    poller::spawn(src, &self.pipeline, poller_cfg, self.results_tx.clone());
                self.cfg = *new;
                tracing::info!(path = %self.config_path.display(), "SIGHUP: configuration reloaded");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: reload failed half-way; every destination runs, with the new settings where they could be applied")
            }
        }
        notify(&[NotifyState::Ready]);
    }

    /// Stops polling, then either exits for a failed task at once or delivers what is queued
    /// within `shutdown_timeout`.
    async fn stop(mut self, failure: Option<String>) -> Result<(), AgentError> {
        self.poller.stop_now();
        // The stop may take shutdown_timeout plus its grace; make sure the service manager
        // waits that long even where the unit's TimeoutStopSec is shorter.
        let budget = self.cfg.shutdown_timeout + Duration::from_secs(5);
        let usec = u32::try_from(budget.as_micros()).unwrap_or(u32::MAX);
        notify(&[NotifyState::Stopping, NotifyState::ExtendTimeoutUsec(usec)]);
        if let Some(why) = failure {
            tracing::error!(
                "{why}; stopping (exit 1, so that the service manager restarts the agent)"
            );
            let (_, lock) = self.pipeline.stop(Instant::now()).await;
            std::mem::forget(lock);
            return Err(AgentError::TaskFailed(why));
        }
        let timeout = self.cfg.shutdown_timeout;
        tracing::info!(
            ?timeout,
            "stopping: polling stopped, delivering what is queued"
        );
        let deadline = Instant::now() + timeout;
        let delivered = self.pipeline.drain(timeout, false, &mut self.failed).await;
        let (acked, lock) = self.pipeline.stop(deadline).await;
        // Held until the process exits: an abandoned task may still write until then.
        std::mem::forget(lock);
        // A task that failed while it was stopping.
        let delivered = match self.failed.try_recv() {
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
}
