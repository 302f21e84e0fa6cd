//! CLI only: parse arguments, load config, call one command, map errors to exit codes
//! (0 success, 1 runtime failure, 2 usage or config error, 3 `once` left events undelivered).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ioc_forwarder::agent::{self, AgentError, OnceOutcome};
use ioc_forwarder::config::{Config, DestinationConfig, SourceKind};
use ioc_forwarder::deliver::{self, transport};
use ioc_forwarder::lock::StateLock;
use ioc_forwarder::store::{self, Event, Store};
use ioc_forwarder::{demo, encode};

const DEFAULT_CONFIG: &str = "/etc/ioc-forwarder/config.toml";

#[derive(Parser)]
#[command(
    name = "ioc-forwarder",
    version,
    about = "Forwards SOC Defenders indicators as CEF over syslog, from a durable queue"
)]
struct Cli {
    /// Config file [default: $IOC_FORWARDER_CONFIG, else /etc/ioc-forwarder/config.toml]
    #[arg(short, long, global = true, env = "IOC_FORWARDER_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// error, warn, info, debug, trace, or a RUST_LOG-style filter [default: $RUST_LOG, else info]
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent in the foreground until SIGTERM/SIGINT
    Run,
    /// One poll cycle, then deliver everything queued, then exit
    Once,
    /// Run the whole pipeline on the built-in sample feed
    Demo {
        /// tcp://HOST:PORT or udp://HOST:PORT instead of stdout
        #[arg(long)]
        to: Option<String>,
    },
    /// Validate the config and print it with secrets redacted
    CheckConfig,
    /// Send one test event to every (or the named) destination and report each
    TestDestination { name: Option<String> },
    /// Inspect or change the queue
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Events and bytes queued per destination, oldest event age
    Stats,
    /// Print the next N queued CEF lines
    Peek {
        #[arg(default_value_t = 10)]
        n: usize,
    },
    /// Drop queued events (for one destination or all)
    Purge {
        #[arg(long)]
        destination: Option<String>,
        #[arg(long)]
        yes: bool,
    },
    /// Integrity check of the state file; non-zero exit on damage
    Verify,
}

fn init_logging(format: LogFormat, level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // Under systemd the journal stamps every line itself.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    match (format, journal) {
        (LogFormat::Text, false) => builder.init(),
        (LogFormat::Text, true) => builder.without_time().init(),
        (LogFormat::Json, _) => builder.json().flatten_event(true).init(),
    }
}

/// glibc's allocator gives every thread that allocates its own arena, and raises its mmap
/// threshold after the first multi-megabyte page body is freed, so later bodies are carved
/// from (and fragment) the heap. Decoding and committing pages on different blocking threads
/// made peak RSS of a 200k backfill 131 MiB; with a fixed 4 MiB threshold (page bodies are
/// mapped and unmapped whole) and two arenas it was 64–74 MiB (mimalloc, tried instead: 200
/// MiB and 40 % more CPU). Since items are decoded into one reused indicator there are few
/// allocations left to contend for one arena: on a 1M TLS backfill one arena gives 53–56 MiB
/// peak instead of 58–60 for ~3 % more CPU, and collector hosts are small. The environment
/// (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`) still wins when set.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; called before any other thread
        // exists.
        unsafe {
            if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
                libc::mallopt(libc::M_ARENA_MAX, 1);
            }
            if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
            }
        }
    }
}

fn main() -> ExitCode {
    // A file-size limit (ulimit -f) must surface as a write error (EFBIG) that the store
    // handles like a full disk, not as a signal that kills the agent mid-transaction.
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    tune_malloc();
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.log_level.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let code = runtime.block_on(dispatch(cli.command, config_path));
    // Delivery tasks have finished or were abandoned at the stop's deadline; do not wait for
    // a stuck blocking call at exit (the stop's budget is already spent).
    runtime.shutdown_timeout(Duration::from_millis(200));
    ExitCode::from(code)
}

/// Prints an error and returns its exit code.
fn fail(e: AgentError) -> u8 {
    match e {
        AgentError::Config(c) => {
            eprintln!("{c}");
            2
        }
        other => {
            eprintln!("error: {other}");
            1
        }
    }
}

/// Loads the config; `lenient` lets unset `${VAR}`s through as placeholders.
fn load(path: &std::path::Path, lenient: bool) -> Result<Config, u8> {
    let result = if lenient {
        std::fs::read_to_string(path)
            .map_err(|e| {
                format!(
                    "config error in {}: cannot read the config file: {e}",
                    path.display()
                )
            })
            .and_then(|text| {
                Config::parse(&text, path, &|name| {
                    Some(std::env::var(name).unwrap_or_else(|_| format!("<unset {name}>")))
                })
                .map_err(|e| e.to_string())
            })
    } else {
        Config::load(path).map_err(|e| e.to_string())
    };
    result.map_err(|e| {
        eprintln!("{e}");
        2
    })
}

/// A config file that holds the API key must not be readable by everyone, and the agent has
/// no reason to run as root.
fn warn_about_exposure(path: &std::path::Path, cfg: &Config) {
    use std::os::unix::fs::PermissionsExt;
    let key_in_file =
        matches!(&cfg.source.kind, SourceKind::SocDefenders(api) if api.key_in_config_file);
    if key_in_file {
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o004 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the config file holds api_key and is readable by every user; run `chmod 0640 {}` (group = the service user), or move the key to api_key_file or ${{SOCDEFENDERS_API_KEY}}",
                    path.display()
                );
            }
        }
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        tracing::warn!("running as root is not needed; the packages run the agent as the ioc-forwarder system user");
    }
}

fn outcome_code(o: OnceOutcome) -> u8 {
    match o {
        OnceOutcome::Delivered => 0,
        OnceOutcome::PollFailed => 1,
        OnceOutcome::Undelivered => 3,
    }
}

async fn dispatch(command: Command, path: PathBuf) -> u8 {
    if let Command::Demo { to } = &command {
        let dest = match demo::destination(to.as_deref()) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        };
        return match demo::run(dest).await {
            Ok(o) => outcome_code(o),
            Err(e) => fail(e),
        };
    }
    // The queue commands only need state_dir: they must work for an operator whose shell
    // lacks the service's environment (e.g. SOCDEFENDERS_API_KEY).
    let lenient = matches!(command, Command::Queue { .. });
    let cfg = match load(&path, lenient) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match command {
        Command::Demo { .. } => unreachable!("handled above"),
        Command::Run => {
            warn_about_exposure(&path, &cfg);
            agent::run(path, cfg).await.map_or_else(fail, |()| 0)
        }
        Command::Once => {
            warn_about_exposure(&path, &cfg);
            agent::once(&cfg).await.map_or_else(fail, outcome_code)
        }
        Command::CheckConfig => {
            print!("{}", cfg.to_display_toml());
            eprintln!("config OK: {}", path.display());
            0
        }
        Command::TestDestination { name } => test_destinations(&cfg, name.as_deref()).await,
        Command::Queue { command } => queue(&cfg, command),
    }
}

fn queue(cfg: &Config, command: QueueCommand) -> u8 {
    if let QueueCommand::Verify = command {
        let file = cfg.state_dir.join(store::FILE_NAME);
        if !file.exists() {
            // Not damage: the agent has not run with this state_dir yet (or it points
            // elsewhere: the path says which).
            println!(
                "no state file at {}: nothing queued yet, nothing to verify",
                file.display()
            );
            return 0;
        }
        return match store::verify(&cfg.state_dir) {
            Ok(problems) if problems.is_empty() => {
                println!(
                    "state file OK: {}",
                    cfg.state_dir.join(store::FILE_NAME).display()
                );
                0
            }
            Ok(problems) => {
                for p in problems {
                    println!("damage: {p}");
                }
                1
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        };
    }
    // Purging changes what a running agent reads and acknowledges: it needs the directory to
    // itself. Stats and peek only read.
    let _lock = match &command {
        QueueCommand::Purge { .. } => match StateLock::acquire(&cfg.state_dir) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        },
        _ => None,
    };
    let s = match Store::open(&cfg.state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let result = match command {
        QueueCommand::Stats => s.stats().map(|rows| {
            println!(
                "{:<24} {:>10} {:>14} {:>12}",
                "DESTINATION", "EVENTS", "BYTES", "OLDEST_AGE"
            );
            let now = chrono::Utc::now();
            for r in rows {
                let age = r
                    .oldest
                    .map(|t| {
                        let secs = (now - t).num_seconds().max(0) as u64;
                        humantime::format_duration(Duration::from_secs(secs)).to_string()
                    })
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<24} {:>10} {:>14} {:>12}",
                    r.name, r.events, r.bytes, age
                );
            }
            0
        }),
        QueueCommand::Peek { n } => s.peek(n).map(|events: Vec<Event>| {
            for e in events {
                println!("{}", e.cef());
            }
            0
        }),
        QueueCommand::Purge { destination, yes } => {
            if !yes {
                eprintln!("queue purge drops queued events for good; add --yes to confirm");
                return 2;
            }
            if let Some(d) = &destination {
                match s.destinations() {
                    Ok(known) if !known.contains(d) => {
                        eprintln!(
                            "no destination named {d:?} in the state file (known: {})",
                            known.join(", ")
                        );
                        return 2;
                    }
                    _ => {}
                }
            }
            s.purge(destination.as_deref()).map(|n| {
                println!("purged {n} events");
                0
            })
        }
        QueueCommand::Verify => unreachable!("handled above"),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        1
    })
}

/// Connects to each destination, sends one marked test event, waits for the TCP
/// acknowledgement where there is one, and reports per destination.
async fn test_destinations(cfg: &Config, only: Option<&str>) -> u8 {
    let chosen: Vec<&DestinationConfig> = cfg
        .destinations
        .iter()
        .filter(|d| only.is_none_or(|n| d.name == n))
        .collect();
    if chosen.is_empty() {
        eprintln!("no destination named {:?}", only.unwrap_or_default());
        return 2;
    }
    let mut all_ok = true;
    for d in chosen {
        let header = deliver::header_for(d, &cfg.syslog);
        let mut line = String::from("CEF:0|");
        encode::cef::push_header(&mut line, &cfg.cef.device_vendor);
        line.push('|');
        encode::cef::push_header(&mut line, &cfg.cef.device_product);
        line.push('|');
        encode::cef::push_header(&mut line, &cfg.cef.device_version);
        line.push_str("|test|ioc-forwarder test event|0|msg=test event from ioc-forwarder ");
        line.push_str(env!("CARGO_PKG_VERSION"));
        let ev = Event::new(1, chrono::Utc::now(), "test", &line);
        let result = async {
            let mut tls = transport::TlsCache::default();
            let mut c = transport::connect(d, &mut tls, None)
                .await
                .map_err(|e| e.to_string())?;
            let (mut msg, mut buf) = (Vec::new(), Vec::new());
            deliver::frame_event(d, &header, &ev, c.is_datagram(), &mut msg, &mut buf);
            tokio::time::timeout(d.write_timeout, c.send(&buf, &[buf.len()]))
                .await
                .map_err(|_| format!("write stalled for more than {:?}", d.write_timeout))?
                .map_err(|e| format!("write failed: {e}"))?;
            // Give a TLS receiver the round trips it needs to refuse us with an alert.
            let acked = c.wait_acked(d.write_timeout).await;
            let mut detail = format!("{} {}", d.protocol.as_str(), c.peer);
            if let Some(t) = &c.tls {
                detail += &format!(
                    ", {} {}, certificate {} expires {}, pin sha256//{}",
                    t.version,
                    t.cipher,
                    t.subject,
                    t.not_after
                        .map(|x| x.to_rfc3339())
                        .unwrap_or_else(|| "?".into()),
                    t.spki_pin.as_deref().unwrap_or("?")
                );
            }
            c.close(Duration::from_millis(500)).await;
            match acked {
                Ok(()) => Ok(detail),
                Err(why) => Err(format!("{detail}: {why}")),
            }
        }
        .await;
        match result {
            Ok(detail) => println!("{}: OK ({detail})", d.name),
            Err(e) => {
                all_ok = false;
                println!("{}: FAILED: {e}", d.name);
            }
        }
    }
    if all_ok {
        0
    } else {
        1
    }
}
