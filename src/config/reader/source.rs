//! `[source]`: the filters every kind shares, then the API's keys or the file's path.

use std::path::PathBuf;

use toml::Value;

use super::{Reader, Section};
use crate::config::*;

impl Reader<'_> {
    pub(super) fn source(&mut self, top: &mut Section) -> SourceConfig {
        let mut s = self.section(top, "source", "[source]");
        let kind = self.choice(&mut s, "kind", &[("socdefenders", 0), ("file", 1)], 0);
        let poll_interval = self.duration(&mut s, "poll_interval", "5m");
        let lookback = self.duration(&mut s, "lookback", "24h");
        let mut types = Vec::new();
        for t in self.string_list(&mut s, "types") {
            let norm = t.trim().to_ascii_lowercase().replace('_', "-");
            if IOC_TYPES.contains(&norm.as_str()) {
                if !types.contains(&norm) {
                    types.push(norm);
                }
            } else {
                self.problem(
                    &s,
                    "types",
                    format!("{t:?} is not an IOC type ({})", IOC_TYPES.join(", ")),
                );
            }
        }
        let mut confidence = Vec::new();
        for c in self.string_list(&mut s, "confidence") {
            let norm = c.trim().to_ascii_lowercase();
            if ["low", "medium", "high"].contains(&norm.as_str()) {
                if !confidence.contains(&norm) {
                    confidence.push(norm);
                }
            } else {
                self.problem(
                    &s,
                    "confidence",
                    format!("{c:?} is not one of low, medium, high"),
                );
            }
        }
        let industry = self.string(&mut s, "industry", "");
        let category = self.string(&mut s, "category", "");
        let kind = if kind == 0 {
            let base_url = self.string(&mut s, "base_url", "https://socdefenders.ai/api/v1");
            let allow_insecure_http = self.bool(&mut s, "allow_insecure_http", false);
            if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
                self.problem(
                    &s,
                    "base_url",
                    format!("{base_url:?} must start with https:// or http://"),
                );
            } else if let Err(e) = reqwest::Url::parse(&base_url) {
                self.problem(&s, "base_url", format!("{base_url:?} is not a URL: {e}"));
            } else if let (Some(host), false) = (cleartext_host(&base_url), allow_insecure_http) {
                // The key goes in a request header: over http:// anyone on the path reads it.
                self.problem(
                    &s,
                    "base_url",
                    format!(
                        "http:// to {host} would send the API key in clear text; use https://, or set allow_insecure_http = true in [source] if the network path is trusted"
                    ),
                );
            }
            let key_in_config_file = s
                .table
                .get("api_key")
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty() && !v.contains("${"));
            let key_inline = self.nonempty(&mut s, "api_key");
            let key_file = self.file(&mut s, "api_key_file");
            let api_key = match (key_inline, key_file) {
                (Some(_), Some(_)) => {
                    self.problem(
                        &s,
                        "api_key_file",
                        "set either api_key or api_key_file, not both",
                    );
                    Secret::new("")
                }
                (Some(k), None) => Secret::new(k.trim()),
                (None, Some(p)) => match std::fs::read_to_string(&p) {
                    Ok(k) if !k.trim().is_empty() => Secret::new(k.trim()),
                    Ok(_) => {
                        self.problem(&s, "api_key_file", format!("{} is empty", p.display()));
                        Secret::new("")
                    }
                    Err(e) => {
                        self.problem(
                            &s,
                            "api_key_file",
                            format!("cannot read {}: {e}", p.display()),
                        );
                        Secret::new("")
                    }
                },
                (None, None) => {
                    if !self
                        .problems
                        .iter()
                        .any(|p| p.key == "source.api_key" || p.key == "source.api_key_file")
                    {
                        self.problem(
                            &s,
                            "api_key",
                            "an API key is required: set api_key or api_key_file",
                        );
                    }
                    Secret::new("")
                }
            };
            let page_size = self.int(&mut s, "page_size", 1000, 1, 10_000) as u32;
            let request_timeout = self.duration(&mut s, "request_timeout", "30s");
            let ca_file = self.file(&mut s, "ca_file");
            if let Some(v) = s.table.remove("path") {
                let _ = v;
                self.problem(&s, "path", "only used with kind = \"file\"");
            }
            SourceKind::SocDefenders(ApiConfig {
                base_url: base_url.trim_end_matches('/').to_string(),
                api_key,
                page_size,
                request_timeout,
                ca_file,
                key_in_config_file,
                allow_insecure_http,
            })
        } else {
            let path = match self.nonempty(&mut s, "path") {
                Some(p) => self.base_dir.join(p),
                None => {
                    self.problem(&s, "path", "kind = \"file\" needs a path");
                    PathBuf::new()
                }
            };
            for k in [
                "base_url",
                "api_key",
                "api_key_file",
                "page_size",
                "request_timeout",
                "ca_file",
                "allow_insecure_http",
            ] {
                if s.table.remove(k).is_some() {
                    self.problem(&s, k, "only used with kind = \"socdefenders\"");
                }
            }
            SourceKind::File { path }
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
}
