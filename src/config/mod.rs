//! The TOML configuration (every key is in `config.example.toml`) as typed values.
//!
//! Loading never stops at the first mistake: every problem (unknown key, wrong type, unset
//! `${VAR}`, bad duration, unreadable file) is collected with the dotted key it belongs to and
//! the file line where we can find it, so an operator fixes a config in one round trip.
//! After loading, nothing in the program looks a key up by string.
//!
//! Secrets (the API key) live in [`Secret`], whose `Debug` and `Display` never show them.
//!
//! The parts: `types`, `destination` and `lifecycle` are the typed config, each field
//! documented with its key, default and unit (the reference for what a key does); `named` is the one table of names
//! per config enum; `reader` turns TOML into those types, collecting [`Problem`]s; `display`
//! writes the effective config back as TOML for `check-config`; `syntax` holds the string forms
//! (sizes, `host:port`, the API URL) that are not TOML types.

// The types' doc comments are the reference for each key: every public item carries one.
#![warn(missing_docs)]

mod destination;
mod display;
mod error;
mod lifecycle;
mod named;
mod reader;
mod secret;
mod syntax;
mod types;

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Table;

pub use destination::*;
pub use error::{ConfigError, Problem};
pub use lifecycle::LifecycleConfig;
pub use named::Named;
pub use secret::Secret;
pub use syntax::{cleartext_host, parse_size, split_host_port};
pub use types::*;

impl Config {
    /// Reads, interpolates and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            problems: vec![Problem {
                key: "(file)".into(),
                line: None,
                message: format!("cannot read the config file: {e}"),
            }],
        })?;
        Config::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses config text; `env` looks up `${VAR}` values (injectable for tests).
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            path: path.to_path_buf(),
            problems,
        };
        let table: Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                let e: toml::de::Error = e;
                let line = e.span().map(|s| line_of_offset(text, s.start));
                return Err(fail(vec![Problem {
                    key: "(syntax)".into(),
                    line,
                    message: e.message().to_string(),
                }]));
            }
        };
        reader::read(text, table, env, path).map_err(fail)
    }

    /// A built-in config for `demo`: the sample feed, defaults everywhere, one destination.
    pub fn demo(state_dir: PathBuf, feed: PathBuf, destination: DestinationConfig) -> Config {
        Config {
            state_dir,
            shutdown_timeout: Duration::from_secs(10),
            source: SourceConfig {
                kind: SourceKind::File { path: feed },
                poll_interval: Duration::from_secs(300),
                lookback: Duration::from_secs(86400),
                types: vec![],
                confidence: vec![],
                industry: String::new(),
                category: String::new(),
            },
            cef: CefConfig {
                device_vendor: "SOC Defenders".into(),
                device_product: "Threat Intelligence".into(),
                device_version: "1.0".into(),
                profile: CefProfile::SocDefenders,
                severity: SeverityMap::default(),
            },
            syslog: SyslogConfig {
                hostname: String::new(),
                app_name: "ioc-forwarder".into(),
                facility: 4,
                severity: 4,
                msgid: MsgId::IocType,
                structured_data: false,
            },
            destinations: vec![destination],
            queue: QueueConfig {
                max_bytes: 1 << 30,
                when_full: WhenFull::DropOldest,
                retry_initial: Duration::from_secs(1),
                retry_max: Duration::from_secs(60),
            },
            metrics: MetricsConfig { listen: None },
            lifecycle: LifecycleConfig::default(),
        }
    }
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::IocType;

    /// Distinct keys named by the problems (used by tests and for summaries).
    fn problem_keys(problems: &[Problem]) -> std::collections::BTreeSet<String> {
        problems.iter().map(|p| p.key.clone()).collect()
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/tmp/x.toml"), &|name| {
            (name == "KEY").then(|| "sk_live_0123456789abcdef".to_string())
        })
    }

    const MINIMAL: &str = r#"
state_dir = "/tmp/s"
[source]
api_key = "${KEY}"
[[destinations]]
name = "a"
protocol = "tcp"
address = "127.0.0.1:514"
"#;

    #[test]
    fn minimal_config_takes_the_spec_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(c.source.poll_interval, Duration::from_secs(300));
        let SourceKind::SocDefenders(api) = &c.source.kind else {
            panic!()
        };
        assert_eq!(api.api_key.expose(), "sk_live_0123456789abcdef");
        assert_eq!(api.page_size, 1000);
        assert_eq!(c.syslog.facility, 4);
        assert_eq!(c.syslog.severity, 4);
        assert_eq!(c.destinations[0].framing, Framing::Lf);
        assert_eq!(c.destinations[0].max_message_size, 8192);
        assert!(c.destinations[0].lifecycle_events);
        assert_eq!(c.lifecycle, LifecycleConfig::default());
        assert_eq!(
            c.cef.severity,
            SeverityMap {
                low: 3,
                medium: 6,
                high: 9
            }
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key_and_line() {
        let text = "state_dir = \"/tmp/s\"\nbogus = 1\n[source]\napi_key = \"${NOPE}\"\npoll_interval = \"5 parsecs\"\n[[destinations]]\nname = \"a\"\nprotocol = \"carrier-pigeon\"\naddress = \"x:1\"\n";
        let err = parse(text).unwrap_err();
        let keys = problem_keys(&err.problems);
        for k in [
            "bogus",
            "source.api_key",
            "source.poll_interval",
            "destinations[0].protocol",
        ] {
            assert!(keys.contains(k), "{k} missing from {keys:?}");
        }
        let poll = err
            .problems
            .iter()
            .find(|p| p.key == "source.poll_interval")
            .unwrap();
        assert_eq!(poll.line, Some(5));
        assert!(err.to_string().contains("NOPE"));
    }

    #[test]
    fn a_problem_inside_an_inline_table_has_the_line_of_its_key() {
        let text = format!("{MINIMAL}[cef]\nseverity = {{ low = 11, medium = 6, high = 9 }}\n");
        let err = parse(&text).unwrap_err();
        let low = err.problems.iter().find(|p| p.key == "cef.severity.low");
        assert_eq!(low.map(|p| p.line), Some(Some(10)), "{err}");
    }

    #[test]
    fn secret_never_shows_in_debug_or_display() {
        let c = parse(MINIMAL).unwrap();
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
        assert!(!c.to_display_toml().contains("0123456789abcdef"));
        assert!(c.to_display_toml().contains("sk_live_0123"));
    }

    #[test]
    fn display_toml_is_itself_valid_toml() {
        let c = parse(MINIMAL).unwrap();
        let t: Result<Table, _> = c.to_display_toml().parse();
        assert!(t.is_ok(), "{}", c.to_display_toml());
    }

    const DAY: Duration = Duration::from_secs(86_400);

    /// The problem recorded for `key`.
    fn problem<'a>(err: &'a ConfigError, key: &str) -> &'a Problem {
        let found = err.problems.iter().find(|p| p.key == key);
        found.unwrap_or_else(|| panic!("no problem for {key}: {err}"))
    }

    #[test]
    fn lifecycle_reads_zero_as_never_and_keeps_types_in_ioc_types_order() {
        let text = format!(
            "{MINIMAL}lifecycle_events = false\n[lifecycle]\nexpire_after = \"0s\"\nexpire_after_by_type = {{ sha256 = \"365d\", IPv4 = \"30d\", mitre_attack = \"0s\" }}\nrefresh_every = \"24h\"\n"
        );
        let c = parse(&text).unwrap();
        let l = &c.lifecycle;
        assert_eq!(l.expire_after, None);
        assert_eq!(
            l.expire_after_by_type,
            vec![
                (IocType::Ipv4, Some(30 * DAY)),
                (IocType::Sha256, Some(365 * DAY)),
                (IocType::MitreAttack, None),
            ]
        );
        assert_eq!(l.refresh_every, Some(DAY));
        assert_eq!(l.expire_after_for(IocType::Ipv4), Some(30 * DAY));
        assert_eq!(l.expire_after_for(IocType::MitreAttack), None);
        assert_eq!(
            l.expire_after_for(IocType::Domain),
            None,
            "the default: never"
        );
        assert!(!c.destinations[0].lifecycle_events);
    }

    #[test]
    fn lifecycle_by_type_may_be_a_table_of_its_own() {
        let text = format!(
            "{MINIMAL}[lifecycle]\nrefresh_every = \"1h\"\n[lifecycle.expire_after_by_type]\nurl = \"60d\"\nipv5 = \"1d\"\n"
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        let ipv5 = problem(&err, "lifecycle.expire_after_by_type.ipv5");
        assert_eq!(ipv5.line, Some(13), "{err}");
        let c = parse(&text.replace("ipv5 = \"1d\"\n", "")).unwrap();
        assert_eq!(
            c.lifecycle.expire_after_by_type,
            vec![(IocType::Url, Some(60 * DAY))]
        );
        assert_eq!(
            c.lifecycle.refresh_every,
            Some(LifecycleConfig::MIN_REFRESH_EVERY)
        );
    }

    #[test]
    fn every_lifecycle_problem_is_reported_with_its_key_and_line() {
        let text = format!(
            "{MINIMAL}lifecycle_events = \"no\"\n[lifecycle]\nexpire_after = \"90 fortnights\"\nexpire_after_by_type = {{ ipv5 = \"30d\", sha256 = \"soon\", mitre_attack = \"1d\", mitre-attack = \"2d\" }}\nrefresh_every = \"10m\"\nrefresh = \"1h\"\n"
        );
        let err = parse(&text).unwrap_err();
        let by_type = "lifecycle.expire_after_by_type";
        for (key, line, says) in [
            ("destinations[0].lifecycle_events", 9, "true or false"),
            ("lifecycle.expire_after", 11, "not a duration"),
            (
                &format!("{by_type}.ipv5"),
                12,
                "not an IOC type (ipv4, ipv6, domain",
            ),
            (&format!("{by_type}.sha256"), 12, "not a duration"),
            (&format!("{by_type}.mitre_attack"), 12, "again"),
            ("lifecycle.refresh_every", 13, "\"10m\" is too short"),
            ("lifecycle.refresh", 14, "unknown key"),
        ] {
            let p = problem(&err, key);
            assert_eq!(p.line, Some(line), "{p}");
            assert!(p.message.contains(says), "{p}");
        }
        assert_eq!(err.problems.len(), 7, "{err}");
        let refresh = problem(&err, "lifecycle.refresh_every");
        assert!(refresh.message.contains("1h"), "{refresh}");
    }

    #[test]
    fn check_config_shows_lifecycle_as_the_reader_takes_it_back() {
        let c = parse(MINIMAL).unwrap();
        let shown = c.to_display_toml();
        for line in [
            "lifecycle_events = true",
            "[lifecycle]\nexpire_after = \"90days\"\nexpire_after_by_type = {}\nrefresh_every = \"0s\"\n",
        ] {
            assert!(shown.contains(line), "{line:?} missing from\n{shown}");
        }
        let text = format!(
            "{MINIMAL}[lifecycle]\nexpire_after = \"2160h\"\nexpire_after_by_type = {{ sha256 = \"0s\", ipv4 = \"30d 1h\", cve = \"1d\" }}\nrefresh_every = \"12h\"\n"
        );
        let c = parse(&text).unwrap();
        let shown = c.to_display_toml();
        let want = "[lifecycle]\nexpire_after = \"90days\"\nexpire_after_by_type = { ipv4 = \"30days 1h\", sha256 = \"0s\", cve = \"1day\" }\nrefresh_every = \"12h\"\n";
        assert!(shown.contains(want), "{shown}");
        let back = parse(&shown).unwrap();
        assert_eq!(back.lifecycle, c.lifecycle);
    }
}
