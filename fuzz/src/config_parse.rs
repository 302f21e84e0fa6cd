//! Target `config_parse`: any UTF-8 text as the config file, through `Config::parse` with a
//! made-up environment (`${U…}` unset, `${E…}` empty, any other name its own name twice).
//! Checks: every problem names a key (unless the key is `""`) and a line within the file;
//! the error and a valid config's display form (`check-config`) render without panicking.
//!
//! Config files name files that are opened (`ca_file`, …) or read (`api_key_file`): inputs with
//! a string value that could name one under `/dev`, `/proc`, `/sys` or `/run` are skipped,
//! since `/dev/zero` or a FIFO would read or block forever (the operator's own doing, not
//! hostile input). Values are looked at as TOML decodes them (escapes like `\u002F` undone);
//! variable names other than letters, digits and `_` are unset, so no expansion adds a `/`,
//! and each value is also looked at without its `${…}` (the empty ones).

use std::path::Path;

use ioc_forwarder::config::Config;

fn env(name: &str) -> Option<String> {
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    match name.chars().next() {
        None | Some('U') => None,
        Some('E') => Some(String::new()),
        Some(_) => Some(name.repeat(2)),
    }
}

/// Whether a string value of the TOML `text`, or one without its `${…}`, holds a path under
/// a special tree.
fn names_special_file(text: &str) -> bool {
    fn special(t: &str) -> bool {
        ["/dev", "/proc", "/sys", "/run"]
            .iter()
            .any(|d| t.contains(d))
    }
    fn any_string(v: &toml::Value) -> bool {
        match v {
            toml::Value::String(s) => special(s) || special(&without_variables(s)),
            toml::Value::Array(a) => a.iter().any(any_string),
            toml::Value::Table(t) => t.values().any(any_string),
            _ => false,
        }
    }
    match text.parse::<toml::Table>() {
        Ok(t) => t.values().any(any_string),
        Err(_) => false,
    }
}

fn without_variables(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => rest = &rest[start + end + 1..],
            None => break,
        }
    }
    out.push_str(rest);
    out
}

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if names_special_file(text) {
        return;
    }
    let path = Path::new("/nonexistent/ioc-forwarder-fuzz/config.toml");
    match Config::parse(text, path, &env) {
        Ok(cfg) => {
            let _ = cfg.to_display_toml();
        }
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error without a problem");
            let lines = text.lines().count().max(1);
            for p in &e.problems {
                // An empty key (`"" = 1`) is reported under its own, empty, name.
                let empty_key = text.contains("\"\"") || text.contains("''");
                assert!(
                    !p.key.is_empty() || empty_key,
                    "a problem without a key: {p:?}"
                );
                if let Some(line) = p.line {
                    assert!(
                        (1..=lines + 1).contains(&line),
                        "line {line} of a {lines}-line file: {p:?}"
                    );
                }
            }
            let _ = e.to_string();
        }
    }
}
