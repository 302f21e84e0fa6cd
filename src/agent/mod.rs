//! Wires source, store and delivery together. `run`, `once` and `demo` are the same
//! [`Pipeline`] driven differently: `run` polls on an interval until SIGTERM/SIGINT and
//! reloads on SIGHUP ([`run`](run::run)); `once` and `demo` poll once, deliver what is queued
//! and stop.
//!
//! | file | concept |
//! |---|---|
//! | `pipeline.rs` | the running pieces (lock, store, delivery tasks, metrics endpoint); drain and stop |
//! | `poller.rs` | the poll loop as its own task |
//! | `run.rs` | the foreground agent: signals, status, the stop sequence |
//! | `reload.rs` | SIGHUP: apply a new config or keep the running one |
//! | `supervise.rs` | a task that panics or ends on its own fails the agent |
//! | `systemd.rs` | readiness, status and watchdog notifications |

mod pipeline;
mod poller;
mod reload;
mod run;
mod supervise;
mod systemd;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

pub use pipeline::Pipeline;
pub use run::run;

use crate::config::{Config, ConfigError};
use crate::liveness::Liveness;
use crate::lock::LockError;
use crate::source::{self, CycleError, Source};
use crate::store::StoreError;

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
    let polled = poller::poll(&mut src, &pipeline.store).await;
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
