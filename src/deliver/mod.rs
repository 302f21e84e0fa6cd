//! One delivery task per destination: read a batch after its own position → frame → send →
//! move the position. Destinations never wait for each other; the store is all they share.
//!
//! Ack-aware: the durable position moves only past frames the peer's TCP stack has
//! acknowledged. Each written frame is remembered with the byte offset where it ends on the
//! current connection; `TCP_INFO` says how many bytes the peer acknowledged; frames below that
//! line are delivered. When a connection fails, every frame not known to be acknowledged is
//! sent again on the next one (at least once). Transports that cannot tell (unix stream
//! sockets, stdout, other systems than Linux) fall back to "delivered once written"; a UDP
//! frame counts as delivered once [`transport::UDP_CONFIRM`] passed without a refusal.
//!
//! The parts: `task/` is the loop (connecting and reconnecting in `task/connection.rs`); it
//! frames with `frame.rs`, keeps what is in flight and what the peer confirmed in `acks.rs`,
//! records the position in the store with `position.rs`, and talks to the receiver through
//! [`transport`] (and [`tls`]).

mod acks;
mod frame;
mod position;
mod task;
pub mod tls;
pub mod transport;

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::DestinationConfig;
use crate::encode::rfc5424;
use crate::liveness::Liveness;
use crate::shutdown::Shutdown;
use crate::store::Store;
use task::Task;

pub use frame::{frame_event, header_for, machine_hostname, Framed};

/// Handles a delivery task needs.
#[derive(Clone)]
pub struct Wiring {
    pub store: Store,
    /// Bumped by the poller after each commit.
    pub tail: watch::Receiver<i64>,
    /// Fires when the task must finish, with the instant by which it must be done (the agent
    /// decided how long to drain before).
    pub shutdown: Shutdown,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Where the task promises its next beat, for the watchdog.
    pub liveness: Liveness,
}

/// Spawns the task; it returns true when it ended with every written frame acknowledged.
pub fn spawn(dest: DestinationConfig, header: rfc5424::Header, w: Wiring) -> JoinHandle<bool> {
    tokio::spawn(async move { Task::new(dest, header, w).run().await })
}
