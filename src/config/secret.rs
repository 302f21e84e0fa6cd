//! Secrets: the API key as a value whose `Debug` and `Display` never show it.

use std::fmt;

/// A string that must never be printed: `Debug`/`Display` show a redaction marker.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value so it is never printed.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The value itself; call only where it goes on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The only part of the key that may ever be shown (check-config, logs, errors): its first
    /// 12 characters, what the API itself shows as `key_prefix`, and only of a key of at least
    /// 20, so that most of it stays secret. Nothing of a shorter key.
    pub fn shown_prefix(&self) -> Option<String> {
        (self.0.chars().count() >= 20).then(|| self.0.chars().take(12).collect())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl fmt::Display for Secret {
    /// [`Secret::shown_prefix`] and a redaction marker: the one way a key is written out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shown_prefix() {
            Some(p) => write!(f, "{p}… (redacted)"),
            None => f.write_str("(redacted)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_long_keys_prefix_is_ever_shown() {
        let long = Secret::new("sk_live_0123456789abcdef");
        assert_eq!(long.shown_prefix().as_deref(), Some("sk_live_0123"));
        assert_eq!(long.to_string(), "sk_live_0123… (redacted)");
        let short = Secret::new("sk_live_01234");
        assert_eq!(short.shown_prefix(), None);
        assert_eq!(short.to_string(), "(redacted)");
    }
}
