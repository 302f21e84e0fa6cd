//! What a failed load reports: every problem, each with its dotted key and, where it can be
//! found, its line in the file.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key, e.g. `destinations[1].address`; `(syntax)` for a TOML syntax error,
    /// `(file)` for an unreadable file.
    pub key: String,
    /// The 1-based line of the key in the file, where it can be found.
    pub line: Option<usize>,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} (line {}): {}", self.key, line, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Everything wrong with a config, in file order where known.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// At least one; those with a line first, in line order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "config error in {}: {}", self.path.display(), p)?;
        }
        Ok(())
    }
}
