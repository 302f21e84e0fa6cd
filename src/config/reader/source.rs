//! `[source]`: the filters every kind shares, then the API's keys or the file's path. The keys
//! of the kind not chosen are errors, not silently ignored: a `path` next to `kind =
//! "socdefenders"` means the operator expected something else to happen.

use std::path::{Path, PathBuf};

use toml::Value;

use super::{only_with, Reader, Section};
use crate::config::*;

/// The keys only `kind = "socdefenders"` reads.
const API_KEYS: &[&str] = &[
    "base_url",
    "api_key",
    "api_key_file",
    "page_size",
    "request_timeout",
    "ca_file",
    "allow_insecure_http",
];

impl Reader<'_> {
    pub(super) fn source(&mut self, top: &mut Section) -> SourceConfig {
        let mut s = self.section(top, "source", "[source]");
        let kind = self
            .choice(&mut s, "kind")
            .unwrap_or(SourceKindTag::SocDefenders);
        let poll_interval = self.duration(&mut s, "poll_interval", "5m");
        let lookback = self.duration(&mut s, "lookback", "24h");
        let types = self.names(
            &mut s,
            "types",
            IOC_TYPES,
            |t| t.trim().to_ascii_lowercase().replace('_', "-"),
            |t| format!("{t:?} is not an IOC type ({})", IOC_TYPES.join(", ")),
        );
        let confidence = self.names(
            &mut s,
            "confidence",
            CONFIDENCES,
            |c| c.trim().to_ascii_lowercase(),
            |c| format!("{c:?} is not one of {}", CONFIDENCES.join(", ")),
        );
        let industry = self.string(&mut s, "industry", "");
        let category = self.string(&mut s, "category", "");
        let kind = match kind {
            SourceKindTag::SocDefenders => SourceKind::SocDefenders(self.api(&mut s)),
            SourceKindTag::File => SourceKind::File {
                path: self.feed_path(&mut s),
            },
        };
        self.finish(s);
        SourceConfig {
            kind,
            poll_interval,
            lookback,
            types,
            confidence,
            industry,
            category,
        }
    }

    /// A list filter: each item normalised by `norm` must be one of `allowed`; it is kept once,
    /// and anything else is a problem worded by `unknown` (given the item as written).
    fn names(
        &mut self,
        s: &mut Section,
        key: &str,
        allowed: &[&str],
        norm: impl Fn(&str) -> String,
        unknown: impl Fn(&str) -> String,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for item in self.string_list(s, key) {
            let name = norm(&item);
            if !allowed.contains(&name.as_str()) {
                self.problem(s, key, unknown(&item));
            } else if !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }

    /// `kind = "socdefenders"`: where the API is and how to authenticate to it.
    fn api(&mut self, s: &mut Section) -> ApiConfig {
        let (base_url, allow_insecure_http) = self.base_url(s);
        let (api_key, key_in_config_file) = self.api_key(s);
        let page_size = self.int(s, "page_size", 1000, 1, 10_000) as u32;
        let request_timeout = self.duration(s, "request_timeout", "30s");
        let ca_file = self.file(s, "ca_file");
        self.reject(s, &["path"], &only_with("kind", SourceKindTag::File));
        ApiConfig {
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            page_size,
            request_timeout,
            ca_file,
            key_in_config_file,
            allow_insecure_http,
        }
    }

    /// `base_url` and `allow_insecure_http`, which decides whether an http:// URL may be used.
    fn base_url(&mut self, s: &mut Section) -> (String, bool) {
        let base_url = self.string(s, "base_url", "https://socdefenders.ai/api/v1");
        let allow_insecure_http = self.bool(s, "allow_insecure_http", false);
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            self.problem(
                s,
                "base_url",
                format!("{base_url:?} must start with https:// or http://"),
            );
        } else if let Err(e) = reqwest::Url::parse(&base_url) {
            self.problem(s, "base_url", format!("{base_url:?} is not a URL: {e}"));
        } else if let (Some(host), false) = (cleartext_host(&base_url), allow_insecure_http) {
            // The key goes in a request header: over http:// anyone on the path reads it.
            self.problem(
                s,
                "base_url",
                format!(
                    "http:// to {host} would send the API key in clear text; use https://, or set allow_insecure_http = true in [source] if the network path is trusted"
                ),
            );
        }
        (base_url, allow_insecure_http)
    }

    /// The key from exactly one of `api_key` and `api_key_file`, and whether it is written
    /// literally in the config file (not `${VAR}`, not a key file): then the config file is
    /// itself a secret.
    fn api_key(&mut self, s: &mut Section) -> (Secret, bool) {
        let key_in_config_file = s
            .table
            .get("api_key")
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty() && !v.contains("${"));
        let key_inline = self.nonempty(s, "api_key");
        let key_file = self.file(s, "api_key_file");
        let api_key = match (key_inline, key_file) {
            (Some(_), Some(_)) => {
                self.problem(
                    s,
                    "api_key_file",
                    "set either api_key or api_key_file, not both",
                );
                Secret::new("")
            }
            (Some(k), None) => Secret::new(k.trim()),
            (None, Some(p)) => self.key_file(s, &p),
            (None, None) => {
                if !self.reported(s, "api_key") && !self.reported(s, "api_key_file") {
                    self.problem(
                        s,
                        "api_key",
                        "an API key is required: set api_key or api_key_file",
                    );
                }
                Secret::new("")
            }
        };
        (api_key, key_in_config_file)
    }

    /// The key in `api_key_file`, surrounding whitespace trimmed; empty is a problem.
    fn key_file(&mut self, s: &Section, p: &Path) -> Secret {
        match std::fs::read_to_string(p) {
            Ok(k) if !k.trim().is_empty() => Secret::new(k.trim()),
            Ok(_) => {
                self.problem(s, "api_key_file", format!("{} is empty", p.display()));
                Secret::new("")
            }
            Err(e) => {
                self.problem(
                    s,
                    "api_key_file",
                    format!("cannot read {}: {e}", p.display()),
                );
                Secret::new("")
            }
        }
    }

    /// `kind = "file"`: the feed file, taken from the config file's folder when relative.
    fn feed_path(&mut self, s: &mut Section) -> PathBuf {
        let path = match self.nonempty(s, "path") {
            Some(p) => self.base_dir.join(p),
            None => {
                let kind = SourceKindTag::File.name();
                self.problem(s, "path", format!("kind = \"{kind}\" needs a path"));
                PathBuf::new()
            }
        };
        self.reject(s, API_KEYS, &only_with("kind", SourceKindTag::SocDefenders));
        path
    }
}
