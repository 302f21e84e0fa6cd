//! The config file as the commands load it: strictly for `run`, `once`, `check-config` and
//! `test-destination`; leniently for the `queue` commands, which need only `state_dir` and
//! must work for an operator whose shell lacks the service's environment (an unset `${VAR}`
//! becomes a visible `<unset VAR>` placeholder). Also the warnings a running agent gives about
//! how the file and the process are exposed.

use std::path::Path;

use crate::config::{Config, SourceKind};

/// Loads the config; `lenient` lets unset `${VAR}`s through as placeholders.
pub fn load(path: &Path, lenient: bool) -> Result<Config, u8> {
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
pub fn warn_about_exposure(path: &Path, cfg: &Config) {
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
