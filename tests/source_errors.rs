//! Source errors as an operator sees them: the one log line of a refused key, which shows the
//! key exactly as `check-config` does and never more of it.

mod support;

use std::path::Path;

use support::*;

/// A config for `api` with `key` and a destination nobody listens on (nothing gets queued).
fn config_with_key(dir: &Path, api: &FakeApi, key: &str) -> std::path::PathBuf {
    write_config_with(
        dir,
        &api.base_url(),
        &[Dest::tcp("siem1", format!("127.0.0.1:{}", reserve_port()))],
        &ConfigOpts {
            api_key: key.to_string(),
            ..ConfigOpts::default()
        },
    )
}

/// The `api_key` value `check-config` prints for this config.
fn key_as_check_config_shows_it(config: &Path) -> String {
    let out = check_config(config);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("api_key = "))
        .unwrap_or_else(|| panic!("no api_key line in\n{stdout}"));
    line.trim_matches('"').to_string()
}

/// Every run of `len` characters of `key` that `shown` does not contain itself.
fn hidden_pieces(key: &str, shown: &str, len: usize) -> Vec<String> {
    let chars: Vec<char> = key.chars().collect();
    chars
        .windows(len)
        .map(|w| w.iter().collect::<String>())
        .filter(|p| !shown.contains(p.as_str()))
        .collect()
}

#[test]
fn a_refused_key_is_logged_exactly_as_check_config_shows_it() {
    // A short key check-config hides entirely, and a long one it shows the prefix of; the
    // fake API accepts neither.
    for key in ["sk_live_Q7x9Kp", "sk_live_ZZZZsomebody-elses-key"] {
        let api = FakeApi::start(ipv4_feed(3, now_secs(), std::time::Duration::from_secs(1)));
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_with_key(dir.path(), &api, key);
        let shown = key_as_check_config_shows_it(&cfg);
        let out = run_once(&cfg);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let err = text(&out.stderr);
        let auth: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("invalid_api_key"))
            .collect();
        assert_eq!(auth.len(), 1, "one line for the 401\n{err}");
        assert!(
            auth[0].contains(&format!("refused the key {shown}: HTTP 401")),
            "the 401 line shows the key as check-config does ({shown:?}): {}",
            auth[0]
        );
        for piece in hidden_pieces(key, &shown, 5) {
            assert!(
                !err.contains(&piece) && !text(&out.stdout).contains(&piece),
                "{piece:?} of the key {shown:?} is in the output\n{}",
                describe(&out)
            );
        }
    }
}
