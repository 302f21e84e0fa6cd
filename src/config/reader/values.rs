//! One typed value out of a section: a string (with `${VAR}` replaced), a bool, an integer in a
//! range, a duration, a size, a list, a [`Named`] choice, a syslog code, a readable file. Each
//! takes the key out of the section (what is left at the end is unknown) and, when the value is
//! wrong, records a problem and gives the default so reading goes on.

use std::path::PathBuf;
use std::time::Duration;

use toml::Value;

use super::{quoted_names, Reader, Section};
use crate::config::syntax::parse_size;
use crate::config::Named;

impl Reader<'_> {
    /// `${NAME}` in any string is replaced by the environment variable NAME; an unset one (or
    /// `${}`) is a problem.
    fn interpolate(&mut self, sec: &Section, key: &str, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match after.find('}') {
                Some(end) => {
                    let name = &after[..end];
                    match (self.env)(name) {
                        Some(v) if !name.is_empty() => out.push_str(&v),
                        _ => self.problem(
                            sec,
                            key,
                            format!("environment variable ${{{name}}} is not set"),
                        ),
                    }
                    rest = &after[end + 1..];
                }
                None => {
                    self.problem(sec, key, "unterminated ${ in string");
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    pub(super) fn opt_str(&mut self, sec: &mut Section, key: &str) -> Option<String> {
        match sec.table.remove(key) {
            None => None,
            Some(Value::String(s)) => Some(self.interpolate(sec, key, &s)),
            Some(other) => {
                self.problem(
                    sec,
                    key,
                    format!("must be a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn string(&mut self, sec: &mut Section, key: &str, default: &str) -> String {
        self.opt_str(sec, key)
            .unwrap_or_else(|| default.to_string())
    }

    /// A string that, when empty or absent, means "not set".
    pub(super) fn nonempty(&mut self, sec: &mut Section, key: &str) -> Option<String> {
        self.opt_str(sec, key).filter(|s| !s.is_empty())
    }

    pub(super) fn bool(&mut self, sec: &mut Section, key: &str, default: bool) -> bool {
        match sec.table.remove(key) {
            None => default,
            Some(Value::Boolean(b)) => b,
            Some(other) => {
                self.problem(
                    sec,
                    key,
                    format!("must be true or false, found {}", other.type_str()),
                );
                default
            }
        }
    }

    pub(super) fn int(
        &mut self,
        sec: &mut Section,
        key: &str,
        default: i64,
        min: i64,
        max: i64,
    ) -> i64 {
        match sec.table.remove(key) {
            None => default,
            Some(Value::Integer(i)) if (min..=max).contains(&i) => i,
            Some(Value::Integer(i)) => {
                self.problem(sec, key, format!("{i} is out of range {min}..={max}"));
                default
            }
            Some(other) => {
                self.problem(
                    sec,
                    key,
                    format!("must be an integer, found {}", other.type_str()),
                );
                default
            }
        }
    }

    /// A duration greater than zero.
    pub(super) fn duration(&mut self, sec: &mut Section, key: &str, default: &str) -> Duration {
        let fallback = humantime::parse_duration(default).unwrap_or_default();
        match self.any_duration(sec, key) {
            None => fallback,
            Some(d) if d.is_zero() => {
                self.problem(sec, key, "must be greater than zero");
                fallback
            }
            Some(d) => d,
        }
    }

    /// A duration where zero ("0s") means never, given as `None`.
    pub(super) fn duration_or_never(
        &mut self,
        sec: &mut Section,
        key: &str,
        default: Option<Duration>,
    ) -> Option<Duration> {
        match self.any_duration(sec, key) {
            None => default,
            Some(d) => (!d.is_zero()).then_some(d),
        }
    }

    /// Any duration, zero included; `None` when absent or not a duration (then with a
    /// problem).
    fn any_duration(&mut self, sec: &mut Section, key: &str) -> Option<Duration> {
        let s = self.opt_str(sec, key)?;
        match humantime::parse_duration(s.trim()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(
                    sec,
                    key,
                    format!("{s:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"24h\""),
                );
                None
            }
        }
    }

    pub(super) fn size(&mut self, sec: &mut Section, key: &str, default: u64) -> u64 {
        match sec.table.remove(key) {
            None => default,
            Some(Value::Integer(i)) if i > 0 => i as u64,
            Some(Value::String(s)) => {
                let s = self.interpolate(sec, key, &s);
                match parse_size(&s) {
                    Some(n) if n > 0 => n,
                    _ => {
                        self.problem(
                            sec,
                            key,
                            format!(
                                "{s:?} is not a size; write e.g. \"8KiB\", \"512MiB\", \"1GiB\""
                            ),
                        );
                        default
                    }
                }
            }
            Some(other) => {
                self.problem(
                    sec,
                    key,
                    format!(
                        "must be a size such as \"8KiB\", found {}",
                        other.type_str()
                    ),
                );
                default
            }
        }
    }

    pub(super) fn string_list(&mut self, sec: &mut Section, key: &str) -> Vec<String> {
        match sec.table.remove(key) {
            None => vec![],
            Some(Value::String(s)) => {
                let s = self.interpolate(sec, key, &s);
                if s.is_empty() {
                    vec![]
                } else {
                    vec![s]
                }
            }
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        Value::String(s) => out.push(self.interpolate(sec, key, &s)),
                        other => self.problem(
                            sec,
                            key,
                            format!("list items must be strings, found {}", other.type_str()),
                        ),
                    }
                }
                out
            }
            Some(other) => {
                self.problem(
                    sec,
                    key,
                    format!("must be a list of strings, found {}", other.type_str()),
                );
                vec![]
            }
        }
    }

    /// One of a [`Named`] enum's names; `None` when absent or not one of them (then with a
    /// problem recorded).
    pub(super) fn choice<T: Named>(&mut self, sec: &mut Section, key: &str) -> Option<T> {
        let s = self.opt_str(sec, key)?;
        let value = T::from_name(&s);
        if value.is_none() {
            self.problem(
                sec,
                key,
                format!("{s:?} is not one of {}", quoted_names::<T>(", ")),
            );
        }
        value
    }

    /// A syslog code given as a name or a number.
    pub(super) fn code(&mut self, sec: &mut Section, key: &str, names: &[&str], default: u8) -> u8 {
        let max = names.len() as i64 - 1;
        match sec.table.remove(key) {
            None => default,
            Some(Value::Integer(i)) if (0..=max).contains(&i) => i as u8,
            Some(Value::String(s)) => {
                let s = self.interpolate(sec, key, &s).to_ascii_lowercase();
                if let Some(i) = names.iter().position(|n| *n == s) {
                    return i as u8;
                }
                if let Ok(i) = s.parse::<i64>() {
                    if (0..=max).contains(&i) {
                        return i as u8;
                    }
                }
                self.problem(
                    sec,
                    key,
                    format!(
                        "{s:?} is not a name ({}) or a number 0-{max}",
                        names.join(", ")
                    ),
                );
                default
            }
            Some(other) => {
                self.problem(
                    sec,
                    key,
                    format!("must be a name or a number 0-{max}, found {}", other),
                );
                default
            }
        }
    }

    /// A file the config names: it must be readable now (a missing key file is a config error at
    /// start, not a failure at the first poll); relative paths are taken from
    /// the config file's folder.
    pub(super) fn file(&mut self, sec: &mut Section, key: &str) -> Option<PathBuf> {
        let s = self.nonempty(sec, key)?;
        let p = self.base_dir.join(&s);
        match std::fs::File::open(&p) {
            Ok(_) => Some(p),
            Err(e) => {
                self.problem(sec, key, format!("cannot read {}: {e}", p.display()));
                None
            }
        }
    }
}
