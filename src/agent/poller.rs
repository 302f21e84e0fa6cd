//! The poll loop as its own task. It owns the source, commits every page through the store,
//! wakes delivery after every cycle and reports each cycle's result to the agent. It is
//! stopped through a [`Shutdown`](crate::shutdown::Shutdown) like every other task: a stop ends the cycle at its next
//! await, and since every page commits in one transaction and the cursor moves only with the
//! last, the next start re-walks the window.

use tokio::sync::mpsc;

use super::pipeline::Pipeline;
use super::supervise::supervise;
use crate::config::Config;
use crate::metrics;
use crate::shutdown::{self, Trigger};
use crate::source::{self, CycleError, CycleReport, Source};
use crate::store::Store;

/// One cycle via [`source::poll_and_log`], plus the explanation a full disk deserves.
pub(super) async fn poll(src: &mut Source, store: &Store) -> Result<CycleReport, CycleError> {
    // What the last cycle appended to the latest-event index is merged now, between polls.
    match store.call(|s| s.compact_latest()).await {
        Ok(0) => {}
        Ok(merges) => tracing::debug!(merges, "merged the latest-event index"),
        Err(e) => tracing::warn!(error = %e, "cannot merge the latest-event index"),
    }
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

/// The poll loop as its own task: it owns the source, commits through the store and wakes
/// delivery after every cycle. Reload and stop end it through the returned trigger (or by
/// dropping it). A panic in it is reported to `failures`.
pub(super) fn spawn(
    mut src: Source,
    p: &Pipeline,
    cfg: Config,
    results: mpsc::Sender<Result<CycleReport, String>>,
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
            // A stop ends the cycle at its next await (see the module doc).
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
