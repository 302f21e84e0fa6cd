//! ioc-forwarder: polls the SOC Defenders threat-intelligence API, turns every new or changed
//! indicator of compromise into a CEF line, queues it durably, and delivers it to SIEM
//! receivers as RFC 5424 syslog.
//!
//! Data flows one way: [`source`] fetches pages and commits them, encoded by [`encode::cef`],
//! into the [`store`] (SQLite: queue, positions, cursor, seen versions); one [`deliver`] task per
//! destination reads after its own position, frames with [`encode::rfc5424`] and sends. The
//! store is the only thing the two sides share, which is what makes crashes and outages
//! boring. [`agent`] wires it together for `run`, `once` and `demo`; [`config`] holds the
//! typed configuration.

pub mod agent;
pub mod backoff;
pub mod commands;
pub mod config;
pub mod decode;
pub mod deliver;
pub mod demo;
pub mod encode;
pub mod failpoint;
pub mod indicator;
pub mod liveness;
pub mod lock;
pub mod metrics;
pub mod server_clock;
pub mod shutdown;
pub mod source;
pub mod store;
