//! CLI only: parse arguments, load config, call one command, map errors to exit codes
//! (0 success, 1 runtime failure, 2 usage or config error, 3 `once` left events undelivered).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ioc_forwarder::agent::{self, AgentError, OnceOutcome};
use ioc_forwarder::config::Config;
use ioc_forwarder::{commands, demo};

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
    let cfg = match commands::config_file::load(&path, lenient) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match command {
        Command::Demo { .. } => unreachable!("handled above"),
        Command::Run => {
            commands::config_file::warn_about_exposure(&path, &cfg);
            agent::run(path, cfg).await.map_or_else(fail, |()| 0)
        }
        Command::Once => {
            commands::config_file::warn_about_exposure(&path, &cfg);
            agent::once(&cfg).await.map_or_else(fail, outcome_code)
        }
        Command::CheckConfig => {
            print!("{}", cfg.to_display_toml());
            eprintln!("config OK: {}", path.display());
            0
        }
        Command::TestDestination { name } => {
            commands::test_destination::run(&cfg, name.as_deref()).await
        }
        Command::Queue { command } => queue(&cfg, command),
    }
}

fn queue(cfg: &Config, command: QueueCommand) -> u8 {
    match command {
        QueueCommand::Stats => commands::queue::stats(cfg),
        QueueCommand::Peek { n } => commands::queue::peek(cfg, n),
        QueueCommand::Purge { destination, yes } => {
            commands::queue::purge(cfg, destination.as_deref(), yes)
        }
        QueueCommand::Verify => commands::queue::verify(cfg),
    }
}
