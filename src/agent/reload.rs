//! SIGHUP: re-read the config and apply it without losing or resending anything. A config
//! that does not load, or whose TLS files or source cannot be set up, is rejected before
//! anything is torn down and the running one stays. A new `state_dir` starts a fresh pipeline
//! (and lock) before the old one stops; otherwise the pipeline changes in place (see
//! [`Pipeline::reload`]).

use std::path::Path;

use tokio::time::Instant;

use super::pipeline::{Pipeline, RELOAD_DRAIN};
use super::AgentError;
use crate::config::{Config, Protocol};
use crate::source::Source;

/// Re-reads the config. `Ok(None)`: rejected (logged), the running config stays. Otherwise
/// the pipeline has been updated and the new config and source are returned.
pub(super) async fn reload(
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
        .filter(|d| d.protocol == Protocol::Tls)
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
