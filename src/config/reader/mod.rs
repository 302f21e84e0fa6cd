//! TOML → [`Config`]: walks the parsed table key by key, converting each value to its type
//! and recording a [`Problem`] for each mistake instead of stopping at the first.

mod destination;
mod lifecycle;
mod sections;
mod source;
mod values;

use std::path::{Path, PathBuf};
use toml::{Table, Value};

use super::{Config, Named, Problem};

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
    /// For a table written inline (`severity = { low = 3 }`), the line of its key: the keys
    /// inside are not at the start of a line, so their problems are reported there.
    table_line: Option<usize>,
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
        let line = self.find_line(sec, key).or(sec.table_line);
        self.problems.push(Problem {
            key: sec.key(key),
            line,
            message: message.into(),
        });
    }

    /// Whether a problem with `key` is already recorded (so a follow-on one would only repeat
    /// it).
    fn reported(&self, sec: &Section, key: &str) -> bool {
        let key = sec.key(key);
        self.problems.iter().any(|p| p.key == key)
    }

    /// Removes `keys` that the section's choice does not use, with `message` for each present.
    fn reject(&mut self, sec: &mut Section, keys: &[&str], message: &str) {
        for k in keys {
            if sec.table.remove(*k).is_some() {
                self.problem(sec, k, message);
            }
        }
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

    /// The sub-table `key` of `parent` as a section of its own (empty when absent).
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
            table_line: None,
            table,
        }
    }

    /// The table `key` inside `parent` (`severity = { low = 3 }`, or a `[cef.severity]` table
    /// under `header`) as a section of its own; `None` when absent, or when not a table (then
    /// with a problem saying `shape`, e.g. "must be a table like { low = 3 }").
    fn sub_table(
        &mut self,
        parent: &mut Section,
        key: &str,
        header: &'static str,
        shape: &str,
    ) -> Option<Section> {
        match parent.table.remove(key) {
            None => None,
            Some(Value::Table(table)) => Some(Section {
                path: parent.key(key),
                header: Some(header),
                index: 0,
                table_line: self.find_line(parent, key),
                table,
            }),
            Some(_) => {
                self.problem(parent, key, shape);
                None
            }
        }
    }

    /// Ends a section: every key still in it was read by nothing, so it is unknown (a typo, or a
    /// key of another section).
    fn finish(&mut self, sec: Section) {
        let keys: Vec<String> = sec.table.keys().cloned().collect();
        for k in keys {
            self.problem(&sec, &k, "unknown key");
        }
    }
}

/// A [`Named`] enum's names, quoted, joined by ", " and the last by `last`: `"udp", "tcp" or
/// "tls"`.
fn quoted_names<T: Named>(last: &str) -> String {
    let mut out = String::new();
    for (i, (name, _)) in T::NAMES.iter().enumerate() {
        if i > 0 {
            out += if i + 1 == T::NAMES.len() { last } else { ", " };
        }
        out += &format!("\"{name}\"");
    }
    out
}

/// The message for a key that belongs to another choice: `only used with protocol = "tls"`.
fn only_with<T: Named>(key: &str, value: T) -> String {
    format!("only used with {key} = \"{}\"", value.name())
}
