//! `check-config`: every problem reported at once, one line each, naming the key; exit 2;
//! never a panic or a backtrace; secrets never printed.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::*;

/// A valid config (nothing listens on the addresses; check-config must not need them).
fn valid(dir: &Path) -> String {
    render_config(
        dir,
        "http://127.0.0.1:9/api/v1",
        &[Dest::tcp("siem1", "127.0.0.1:9")],
        &ConfigOpts::default(),
    )
}

fn write(dir: &Path, toml: &str) -> PathBuf {
    write_file(dir, "config.toml", toml)
}

fn check(dir: &Path, toml: &str) -> Output {
    check_config(&write(dir, toml))
}

/// Lines of stderr that mention `needle`.
fn lines_with<'a>(stderr: &'a str, needle: &str) -> Vec<&'a str> {
    stderr.lines().filter(|l| l.contains(needle)).collect()
}

fn assert_config_error(out: &Output, needles: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a config error exits 2\n{}",
        describe(out)
    );
    for n in needles {
        assert!(
            err.contains(n),
            "stderr does not mention {n:?}\n{}",
            describe(out)
        );
    }
    assert_no_panic(out);
}

fn assert_no_panic(out: &Output) {
    for s in [text(&out.stderr), text(&out.stdout)] {
        assert!(!s.contains("panicked"), "a panic\n{}", describe(out));
        assert!(
            !s.contains("RUST_BACKTRACE"),
            "a panic hint\n{}",
            describe(out)
        );
        assert!(
            !s.to_lowercase().contains("stack backtrace"),
            "a backtrace\n{}",
            describe(out)
        );
    }
}

fn with_source_line(dir: &Path, line: &str) -> String {
    valid(dir).replacen("[source]\n", &format!("[source]\n{line}\n"), 1)
}

#[test]
fn unknown_key_is_named_with_its_table() {
    let dir = tempdir();
    let toml = with_source_line(dir.path(), "pol_interval = \"5m\"");
    let out = check(dir.path(), &toml);
    assert_config_error(&out, &["source.pol_interval"]);
}

#[test]
fn unset_environment_variable_names_the_variable_and_the_key() {
    let dir = tempdir();
    let toml = valid(dir.path()).replace(
        &format!("api_key = \"{API_KEY}\""),
        "api_key = \"${SURELY_UNSET_VAR_X}\"",
    );
    assert!(toml.contains("SURELY_UNSET_VAR_X"));
    let mut cmd = command(&write(dir.path(), &toml), &["check-config"]);
    cmd.env_remove("SURELY_UNSET_VAR_X");
    let (out, _) = run_cmd(cmd);
    assert_config_error(&out, &["SURELY_UNSET_VAR_X", "source.api_key"]);
}

#[test]
fn bad_duration_names_the_key() {
    let dir = tempdir();
    let toml = valid(dir.path()).replace("poll_interval = \"1s\"", "poll_interval = \"5 parsecs\"");
    assert!(toml.contains("5 parsecs"));
    let out = check(dir.path(), &toml);
    assert_config_error(&out, &["source.poll_interval"]);
}

fn three_problems(dir: &Path) -> String {
    let toml = valid(dir)
        .replace("poll_interval = \"1s\"", "poll_interval = \"5 parsecs\"")
        .replace(
            &format!("api_key = \"{API_KEY}\""),
            "api_key = \"${SURELY_UNSET_VAR_X}\"",
        )
        .replacen("[source]\n", "[source]\npol_interval = \"5m\"\n", 1);
    assert!(toml.contains("5 parsecs") && toml.contains("SURELY_UNSET_VAR_X"));
    toml
}

#[test]
fn all_problems_are_reported_in_one_run_one_line_each() {
    let dir = tempdir();
    let toml = three_problems(dir.path());
    let mut cmd = command(&write(dir.path(), &toml), &["check-config"]);
    cmd.env_remove("SURELY_UNSET_VAR_X");
    let (out, _) = run_cmd(cmd);
    assert_config_error(
        &out,
        &[
            "source.pol_interval",
            "source.api_key",
            "SURELY_UNSET_VAR_X",
            "source.poll_interval",
        ],
    );
    // One line per problem: the three keys are reported on three different lines.
    let err = text(&out.stderr);
    let a = lines_with(&err, "source.pol_interval");
    let b = lines_with(&err, "source.api_key");
    let c = lines_with(&err, "source.poll_interval");
    assert!(
        a.iter().any(|l| !b.contains(l) && !c.contains(l))
            && b.iter().any(|l| !a.contains(l) && !c.contains(l))
            && c.iter().any(|l| !a.contains(l) && !b.contains(l)),
        "each problem on its own line\n{err}"
    );
}

#[test]
fn config_errors_never_panic_or_print_a_backtrace() {
    let dir = tempdir();
    let toml = three_problems(dir.path());
    let path = write(dir.path(), &toml);
    for args in [&["check-config"][..], &["once"][..]] {
        let mut cmd = command(&path, args);
        cmd.env_remove("SURELY_UNSET_VAR_X")
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LIB_BACKTRACE", "1");
        let (out, _) = run_cmd(cmd);
        assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", describe(&out));
        assert_no_panic(&out);
    }
    // Not even for a file that is not TOML at all, or a missing file.
    let garbage = write_file(
        dir.path(),
        "garbage.toml",
        "[source\nthis is = = not toml\n\u{0}",
    );
    let missing = dir.path().join("does-not-exist.toml");
    for path in [garbage, missing] {
        let mut cmd = command(&path, &["check-config"]);
        cmd.env("RUST_BACKTRACE", "1");
        let (out, _) = run_cmd(cmd);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}\n{}",
            path.display(),
            describe(&out)
        );
        assert_no_panic(&out);
    }
}

#[test]
fn valid_config_prints_the_effective_config_with_the_key_redacted() {
    let dir = tempdir();
    let out = check(dir.path(), &valid(dir.path()));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    for (name, s) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(!s.contains(API_KEY), "{name} contains the API key\n{s}");
        assert!(
            !s.contains("abcdefghijklmnop"),
            "{name} contains the key's secret part\n{s}"
        );
    }
    for want in ["siem1", "poll_interval", "api_key", "app_name"] {
        assert!(
            stdout.contains(want),
            "the effective config (with defaults) shows {want:?}\n{stdout}"
        );
    }
}

#[test]
fn key_from_environment_or_file_is_redacted_too() {
    let dir = tempdir();
    let secret_env = "sk_live_fromTheEnvironment42";
    let toml = valid(dir.path()).replace(
        &format!("api_key = \"{API_KEY}\""),
        "api_key = \"${IOCF_TEST_SECRET_KEY}\"",
    );
    let mut cmd = command(&write(dir.path(), &toml), &["check-config"]);
    cmd.env("IOCF_TEST_SECRET_KEY", secret_env);
    let (out, _) = run_cmd(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        !text(&out.stdout).contains(secret_env),
        "stdout leaks the key"
    );
    assert!(
        !text(&out.stderr).contains(secret_env),
        "stderr leaks the key"
    );

    let secret_file = "sk_live_fromTheKeyFile1234";
    let key_path = write_file(dir.path(), "api-key", &format!("{secret_file}\n"));
    let toml = valid(dir.path()).replace(
        &format!("api_key = \"{API_KEY}\""),
        &format!("api_key_file = {}", toml_str(key_path.to_str().unwrap())),
    );
    let out = check(dir.path(), &toml);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        !text(&out.stdout).contains(secret_file),
        "stdout leaks the key"
    );
    assert!(
        !text(&out.stderr).contains(secret_file),
        "stderr leaks the key"
    );
}

#[test]
fn missing_api_key_file_names_the_key() {
    let dir = tempdir();
    let missing = dir.path().join("no-such-key-file");
    let toml = valid(dir.path()).replace(
        &format!("api_key = \"{API_KEY}\""),
        &format!("api_key_file = {}", toml_str(missing.to_str().unwrap())),
    );
    let out = check(dir.path(), &toml);
    assert_config_error(&out, &["source.api_key_file"]);
}

#[test]
fn config_path_comes_from_the_environment_when_no_flag_is_given() {
    let dir = tempdir();
    let path = write(dir.path(), &valid(dir.path()));
    let out = run_cmd({
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ioc-forwarder"));
        c.arg("check-config").env("IOC_FORWARDER_CONFIG", &path);
        c
    })
    .0;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(text(&out.stdout).contains("siem1"), "{}", describe(&out));
    // --config wins over the environment.
    let out = run_cmd({
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ioc-forwarder"));
        c.args(["--config", "/nonexistent/ioc.toml", "check-config"])
            .env("IOC_FORWARDER_CONFIG", &path);
        c
    })
    .0;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(text(&out.stderr).contains("/nonexistent/ioc.toml"));
}

#[test]
fn usage_errors_exit_2() {
    let out = run_cmd({
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ioc-forwarder"));
        c.arg("no-such-command");
        c
    })
    .0;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_no_panic(&out);
}

/// `valid` with another `base_url` and extra `[source]` lines.
fn with_base_url(dir: &Path, base_url: &str, source_extra: &str) -> String {
    render_config(
        dir,
        base_url,
        &[Dest::tcp("siem1", "127.0.0.1:9")],
        &ConfigOpts {
            source_extra: source_extra.to_string(),
            ..ConfigOpts::default()
        },
    )
}

/// No part of the test key in either stream (check-config's redacted prefix included).
fn assert_key_not_printed(out: &Output) {
    for (name, s) in [("stdout", text(&out.stdout)), ("stderr", text(&out.stderr))] {
        assert!(
            !s.contains(&API_KEY[..8]) && !s.contains("abcdefgh"),
            "{name} shows part of the API key\n{}",
            describe(out)
        );
    }
}

#[test]
fn http_base_url_to_another_host_is_refused_naming_the_key_and_the_way_out() {
    let dir = tempdir();
    let toml = with_base_url(dir.path(), "http://api.example.invalid/api/v1", "");
    let line = line_of(&toml, "base_url");
    let path = write(dir.path(), &toml);
    for args in [&["check-config"][..], &["once"][..], &["run"][..]] {
        let (out, _) = run_cmd(command(&path, args));
        assert_config_error(
            &out,
            &[
                &format!("source.base_url (line {line})"),
                "clear text",
                "allow_insecure_http = true",
            ],
        );
        let err = text(&out.stderr);
        assert_eq!(
            lines_with(&err, "source.base_url").len(),
            1,
            "{args:?}: one line for the problem\n{err}"
        );
        assert_key_not_printed(&out);
    }
}

#[test]
fn http_base_url_to_loopback_needs_no_flag() {
    let dir = tempdir();
    for url in [
        "http://127.0.0.1:8080/api/v1",
        "http://127.3.2.1/api/v1",
        "http://[::1]:8080/api/v1",
        "http://localhost:8080/api/v1",
        "http://LOCALHOST/api/v1",
    ] {
        let out = check(dir.path(), &with_base_url(dir.path(), url, ""));
        assert_eq!(out.status.code(), Some(0), "{url}\n{}", describe(&out));
        assert!(
            text(&out.stdout)
                .lines()
                .any(|l| l == "allow_insecure_http = false"),
            "check-config shows the key with its default\n{}",
            describe(&out)
        );
    }
}

#[test]
fn allow_insecure_http_loads_a_remote_http_url_and_once_warns_about_it() {
    let dir = tempdir();
    // `.invalid` never resolves: nothing leaves the machine, and the poll fails.
    let toml = with_base_url(
        dir.path(),
        "http://api.example.invalid/api/v1",
        "allow_insecure_http = true",
    );
    let path = write(dir.path(), &toml);
    let out = check_config(&path);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l == "allow_insecure_http = true"),
        "{}",
        describe(&out)
    );
    let out = run_once(&path);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the poll fails (the host does not resolve), the config loads\n{}",
        describe(&out)
    );
    let err = text(&out.stderr);
    let warnings = lines_with(&err, "clear text");
    assert_eq!(
        warnings.len(),
        1,
        "one warning at the start of `once`\n{err}"
    );
    assert!(
        warnings[0].contains("WARN") && warnings[0].contains("api.example.invalid"),
        "{}",
        warnings[0]
    );
    assert_key_not_printed(&out);
    assert_no_panic(&out);
}

#[test]
fn allow_insecure_http_is_only_for_the_api_source() {
    let dir = tempdir();
    let feed = write_file(dir.path(), "iocs.json", "[]");
    let toml = valid(dir.path())
        .replace(
            "kind = \"socdefenders\"",
            &format!(
                "kind = \"file\"\npath = {}",
                toml_str(feed.to_str().unwrap())
            ),
        )
        .replacen("[source]\n", "[source]\nallow_insecure_http = true\n", 1);
    let toml: String = toml
        .lines()
        .filter(|l| {
            !["base_url", "api_key", "page_size", "request_timeout"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let out = check(dir.path(), &toml);
    assert_config_error(
        &out,
        &["source.allow_insecure_http", "kind = \"socdefenders\""],
    );
}

/// `valid` with a `[lifecycle]` section holding `body`, and `lifecycle_events = false` on the
/// destination.
fn with_lifecycle(dir: &Path, body: &str) -> String {
    render_config(
        dir,
        "http://127.0.0.1:9/api/v1",
        &[Dest::tcp("siem1", "127.0.0.1:9").set("lifecycle_events", "false")],
        &ConfigOpts {
            lifecycle: Some(body.to_string()),
            ..ConfigOpts::default()
        },
    )
}

/// The 1-based line of the first line of `toml` starting with `key`.
fn line_of(toml: &str, key: &str) -> usize {
    let found = toml.lines().position(|l| l.starts_with(key));
    found
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no {key} in\n{toml}"))
}

#[test]
fn lifecycle_problems_name_the_key_and_line_and_come_together() {
    let dir = tempdir();
    let toml = with_lifecycle(
        dir.path(),
        "expire_after = \"90 parsecs\"\nexpire_after_by_type = { ipv5 = \"30d\", sha256 = \"365d\" }\nrefresh_every = \"10m\"",
    );
    let out = check(dir.path(), &toml);
    let by_type = line_of(&toml, "expire_after_by_type");
    assert_config_error(
        &out,
        &[
            &format!(
                "lifecycle.expire_after (line {}): \"90 parsecs\" is not a duration",
                line_of(&toml, "expire_after =")
            ),
            &format!("lifecycle.expire_after_by_type.ipv5 (line {by_type}): \"ipv5\" is not an IOC type (ipv4, ipv6, domain, url, md5, sha1, sha256, sha512, cve, email, mitre-attack)"),
            &format!(
                "lifecycle.refresh_every (line {}): \"10m\" is too short",
                line_of(&toml, "refresh_every")
            ),
            "write \"1h\" or more, or \"0s\" for never",
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 3, "one line per problem\n{err}");
}

#[test]
fn check_config_shows_lifecycle_and_lifecycle_events() {
    let dir = tempdir();
    let out = check(dir.path(), &valid(dir.path()));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = text(&out.stdout);
    let defaults = "[lifecycle]\nexpire_after = \"90days\"\nexpire_after_by_type = {}\nrefresh_every = \"0s\"\n";
    assert!(stdout.contains(defaults), "the defaults\n{stdout}");
    assert!(
        stdout.lines().any(|l| l == "lifecycle_events = true"),
        "{stdout}"
    );

    let toml = with_lifecycle(
        dir.path(),
        "expire_after = \"0s\"\nexpire_after_by_type = { sha256 = \"0s\", mitre_attack = \"30d\", ipv4 = \"7d\" }\nrefresh_every = \"24h\"",
    );
    let out = check(dir.path(), &toml);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = text(&out.stdout);
    let set = "[lifecycle]\nexpire_after = \"0s\"\nexpire_after_by_type = { ipv4 = \"7days\", sha256 = \"0s\", mitre-attack = \"30days\" }\nrefresh_every = \"1day\"\n";
    assert!(
        stdout.contains(set),
        "as set, types in IOC_TYPES order\n{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l == "lifecycle_events = false"),
        "{stdout}"
    );
}
