//! Shared helpers for the integration tests: a fake SOC Defenders API, syslog receivers,
//! config writers, process runners with hang guards, and strict-enough RFC 5424 / CEF parsers.
//!
//! Everything here talks to the real binary through real sockets and real files; nothing
//! imports the library crate, so the tests keep working however `src/` is arranged.
//!
//! Each test file compiles this module into its own binary and uses only part of it, hence
//! `allow(dead_code)`. The common helpers are re-exported here, so a test says
//! `use support::*;`; the specialised receivers and faults are named by their module
//! (`support::tls::TlsReceiver`, `support::faults::NetNs`).
#![allow(dead_code)]

/// The fake SOC Defenders API (`FakeApi`) and the faults it can serve.
pub mod api;
/// The agent's TOML config: `ConfigOpts`, `Dest`, `write_config`.
pub mod config;
/// Test indicators and the API's time format.
pub mod feed;
/// The parts of HTTP/1.1 the fake APIs speak.
pub mod http;
/// RFC 6587, RFC 5424 and CEF parsers for what receivers got.
pub mod parsers;
/// Running the binary: `run_once`, `Agent`, `assert_exit`, `tempdir`.
pub mod process;
/// TCP syslog receivers.
pub mod receivers;
#[path = "../interop/strict.rs"]
pub mod strict;

/// Misbehaving receivers, private network and mount namespaces, wrapped commands.
pub mod faults;
/// UDP and unix-socket receivers.
pub mod sockets;
/// Certificates made at test time and a rustls receiver.
pub mod tls;

// Some test binaries use none of a module's items.
#[allow(unused_imports)]
pub use self::{api::*, config::*, feed::*, parsers::*, process::*, receivers::*};
