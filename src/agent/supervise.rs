//! Task supervision: a spawned task that panics, or ends while nobody asked it to, is a
//! failure the agent must not carry on past. The supervisor turns either into one line on the
//! agent's failure channel; the agent then stops and exits 1 so that the service manager
//! restarts it.

use std::any::Any;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::shutdown::Shutdown;

/// Where tasks report that they failed: a panic, or an end nobody asked for.
pub(crate) type Failures = mpsc::UnboundedSender<String>;

/// Watches a task. When it panics, or ends while nobody asked it to (`stop` not fired, or no
/// `stop` at all), the reason goes to `failures`; its result goes to the returned receiver.
pub(crate) fn supervise<T: Send + 'static>(
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
