//! TOML → [`Config`]: walks the parsed table key by key, converting each value to its type
//! and recording a [`Problem`] for each mistake instead of stopping at the first.

mod destination;
mod sections;
mod source;

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use super::syntax::parse_size;
use super::{Config, Problem};

/// Reads a parsed config file; on failure, every problem found, in file order where known.
pub(super) fn read(
    text: &str,
    table: Table,
    env: &dyn Fn(&str) -> Option<String>,
    path: &Path,
) -> Result<Config, Vec<Problem>> {
    let mut r = Reader {
        text,
        env,
        problems: Vec::new(),
        base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let cfg = r.config(table);
    if r.problems.is_empty() {
        Ok(cfg)
    } else {
        let mut problems = r.problems;
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(problems)
    }
}

/// Walks the parsed TOML and records problems instead of returning at the first one.
struct Reader<'a> {
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
    base_dir: PathBuf,
}

/// One TOML table being read: keys are removed as they are consumed, leftovers are unknown.
struct Section {
    /// Dotted path for messages, e.g. `destinations[1]`; empty at top level.
    path: String,
    /// The header as written in the file (`[source]`, `[[destinations]]`), for line lookup.
    header: Option<&'static str>,
    /// Which occurrence of the header (for arrays of tables).
    index: usize,
    table: Table,
}

impl Section {
    fn key(&self, k: &str) -> String {
        if self.path.is_empty() {
            k.to_string()
        } else {
            format!("{}.{}", self.path, k)
        }
    }
}

impl<'a> Reader<'a> {
    fn problem(&mut self, sec: &Section, key: &str, message: impl Into<String>) {
        let line = self.find_line(sec, key);
        self.problems.push(Problem {
            key: sec.key(key),
            line,
            message: message.into(),
        });
    }

    /// Best-effort line of `key = ...` inside the section's header block.
    fn find_line(&self, sec: &Section, key: &str) -> Option<usize> {
        let mut in_section = sec.header.is_none();
        let mut seen = 0usize;
        for (i, raw) in self.text.lines().enumerate() {
            let line = raw.trim_start();
            if line.starts_with('[') {
                in_section = match sec.header {
                    Some(h) if line.starts_with(h) => {
                        seen += 1;
                        seen == sec.index + 1
                    }
                    _ => false,
                };
                if key.is_empty() && in_section {
                    return Some(i + 1);
                }
                continue;
            }
            if in_section && !key.is_empty() {
                let Some(rest) = line.strip_prefix(key) else {
                    continue;
                };
                let rest = rest.trim_start();
                if rest.starts_with('=') {
                    return Some(i + 1);
                }
            }
        }
        None
    }

    fn section(&mut self, parent: &mut Section, key: &str, header: &'static str) -> Section {
        let table = match parent.table.remove(key) {
            None => Table::new(),
            Some(Value::Table(t)) => t,
            Some(_) => {
                self.problem(parent, key, "must be a table");
                Table::new()
            }
        };
        Section {
            path: key.to_string(),
            header: Some(header),
            index: 0,
            table,
        }
    }

    fn finish(&mut self, sec: Section) {
        let keys: Vec<String> = sec.table.keys().cloned().collect();
        for k in keys {
            self.problem(&sec, &k, "unknown key");
        }
    }

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

    fn opt_str(&mut self, sec: &mut Section, key: &str) -> Option<String> {
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

    fn string(&mut self, sec: &mut Section, key: &str, default: &str) -> String {
        self.opt_str(sec, key)
            .unwrap_or_else(|| default.to_string())
    }

    /// A string that, when empty or absent, means "not set".
    fn nonempty(&mut self, sec: &mut Section, key: &str) -> Option<String> {
        self.opt_str(sec, key).filter(|s| !s.is_empty())
    }

    fn bool(&mut self, sec: &mut Section, key: &str, default: bool) -> bool {
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

    fn int(&mut self, sec: &mut Section, key: &str, default: i64, min: i64, max: i64) -> i64 {
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

    fn duration(&mut self, sec: &mut Section, key: &str, default: &str) -> Duration {
        let fallback = humantime::parse_duration(default).unwrap_or_default();
        let Some(s) = self.opt_str(sec, key) else {
            return fallback;
        };
        match humantime::parse_duration(s.trim()) {
            Ok(d) if d.is_zero() => {
                self.problem(sec, key, "must be greater than zero");
                fallback
            }
            Ok(d) => d,
            Err(e) => {
                self.problem(
                    sec,
                    key,
                    format!("{s:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"24h\""),
                );
                fallback
            }
        }
    }

    fn size(&mut self, sec: &mut Section, key: &str, default: u64) -> u64 {
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

    fn string_list(&mut self, sec: &mut Section, key: &str) -> Vec<String> {
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

    fn choice<T: Copy>(
        &mut self,
        sec: &mut Section,
        key: &str,
        choices: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(s) = self.opt_str(sec, key) else {
            return default;
        };
        if let Some((_, v)) = choices.iter().find(|(name, _)| *name == s) {
            return *v;
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        self.problem(
            sec,
            key,
            format!("{s:?} is not one of {}", names.join(", ")),
        );
        default
    }

    /// A syslog code given as a name or a number.
    fn code(&mut self, sec: &mut Section, key: &str, names: &[&str], default: u8) -> u8 {
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
    fn file(&mut self, sec: &mut Section, key: &str) -> Option<PathBuf> {
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
