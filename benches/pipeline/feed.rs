//! The generated feed: `n` indicators of every IOC type, newest first, rendered once into one
//! buffer of JSON objects joined by `,`. Any page (`offset`, `limit`, `since`) is then a single
//! contiguous slice of that buffer between a small `meta` prefix and a `links` suffix, so the
//! fake API serves it without building anything per request, and the JSON-decode limit parses
//! the very same bytes.

use std::io::Write;

use chrono::DateTime;

/// Every type the agent knows (`config::IOC_TYPES`), plus `mitre_attack`, the API's other
/// spelling of `mitre-attack`.
pub fn types() -> Vec<&'static str> {
    let mut t = ioc_forwarder::config::IOC_TYPES.to_vec();
    t.push("mitre_attack");
    t
}

const FEEDS: [&str; 5] = [
    "CISA Alerts",
    "Unit 42",
    "Talos Intelligence",
    "Mandiant Advantage",
    "SANS ISC",
];
const CATEGORIES: [&str; 3] = ["government", "vendor", "research"];
const CONFIDENCE: [&str; 3] = ["high", "medium", "low"];
const SECTORS: [&str; 6] = [
    "energy",
    "healthcare",
    "financial-services",
    "water",
    "transportation",
    "communications",
];

/// Indicators that share one `last_seen` second (the API has second precision).
pub const PER_SECOND: usize = 100;

pub struct Feed {
    /// Items joined by `,`.
    pub body: Vec<u8>,
    /// Start of item `i` in `body`; `starts[n]` = `body.len() + 1` (as if a comma followed).
    starts: Vec<usize>,
    /// Unix seconds of `last_seen`, non-increasing (newest first).
    last_seen: Vec<i64>,
    pub n: usize,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn push_hex(out: &mut Vec<u8>, seed: u64, chars: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut word = 0u64;
    for k in 0..chars {
        if k % 16 == 0 {
            word = mix(seed.wrapping_mul(31).wrapping_add(k as u64));
        }
        out.push(HEX[(word & 0xf) as usize]);
        word >>= 4;
    }
}

fn rfc3339(t: i64) -> String {
    DateTime::from_timestamp(t, 0)
        .expect("timestamp in range")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The IOC value of item `i` for its type (the value is what CEF puts in `src`).
fn push_value(out: &mut Vec<u8>, ty: &str, i: usize) {
    let h = mix(i as u64);
    match ty {
        "ipv4" => write!(
            out,
            "{}.{}.{}.{}",
            11 + (i >> 24) % 200,
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff
        ),
        "ipv6" => write!(
            out,
            "2001:db8:{:x}:{:x}::{:x}",
            (i >> 16) & 0xffff,
            i & 0xffff,
            h & 0xffff
        ),
        "domain" => write!(out, "cdn-{i}.update-check{}.example.com", h % 997),
        "url" => write!(
            out,
            "https://files-{}.example.net/dl/{i}/invoice_{}.zip?id={i}&ref=mail",
            h % 4099,
            h % 100_000
        ),
        "md5" => {
            push_hex(out, h, 32);
            Ok(())
        }
        "sha1" => {
            push_hex(out, h, 40);
            Ok(())
        }
        "sha256" => {
            push_hex(out, h, 64);
            Ok(())
        }
        "sha512" => {
            push_hex(out, h, 128);
            Ok(())
        }
        "cve" => write!(out, "CVE-20{}-{}", 19 + (i % 7), 10_000 + (i % 89_999)),
        "email" => write!(out, "billing{i}@secure-pay{}.example.org", h % 613),
        _ => write!(out, "T{}.{:03}", 1000 + (i % 600), i % 20),
    }
    .expect("write to a Vec");
}

impl Feed {
    /// `n` indicators, newest `last_seen` = `newest` (Unix seconds), [`PER_SECOND`] per second
    /// going back.
    pub fn generate(n: usize, newest: i64) -> Feed {
        let types = types();
        let mut body = Vec::with_capacity(n * 560);
        let mut starts = Vec::with_capacity(n + 1);
        let mut last_seen = Vec::with_capacity(n);
        let mut last_str = String::new();
        let mut last_t = i64::MIN;
        for i in 0..n {
            let t = newest - (i / PER_SECOND) as i64;
            if t != last_t {
                last_t = t;
                last_str = rfc3339(t);
            }
            let first = rfc3339(t - 86_400 * (1 + (i % 30) as i64) - (i % 3600) as i64);
            if i > 0 {
                body.push(b',');
            }
            starts.push(body.len());
            last_seen.push(t);
            let ty = types[i % types.len()];
            let h = mix(i as u64 ^ 0xabcdef);
            let article = i / 20;
            write!(
                body,
                r#"{{"id":"{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}","type":"{ty}","value":""#,
                (h >> 32) as u32,
                (h >> 16) & 0xffff,
                h & 0xfff,
                (h >> 12) & 0xfff,
                i
            )
            .unwrap();
            push_value(&mut body, ty, i);
            write!(
                body,
                r#"","confidence":"{}","first_seen":"{first}","last_seen":"{last_str}","source":{{"article_id":"a-{article:010}","article_title":"Threat actors exploit {} appliances (advisory {})","article_url":"https://socdefenders.ai/item/a-{article:010}","reference_url":{},"feed_name":"{}","category":"{}","origin":"{}"}},"context":"#,
                CONFIDENCE[i % 3],
                ["VPN", "edge", "e-mail", "file-transfer"][article % 4],
                article % 1000,
                if i % 4 == 0 {
                    format!("\"https://www.cisa.gov/news-events/cybersecurity-advisories/aa26-{:03}a\"", article % 365)
                } else {
                    "null".to_string()
                },
                FEEDS[article % FEEDS.len()],
                CATEGORIES[article % CATEGORIES.len()],
                if i % 5 == 0 { "feed" } else { "article" },
            )
            .unwrap();
            // Some contexts carry escapes (a quote, a backslash path) like real advisories.
            match i % 4 {
                0 => write!(
                    body,
                    r#""C2 server for the \"Op {}\" campaign, targets the {} sector""#,
                    article % 50,
                    SECTORS[i % SECTORS.len()]
                ),
                1 => write!(
                    body,
                    r#""Dropped to C:\\ProgramData\\upd{}.exe by the loader; beacons every 60s""#,
                    i % 100
                ),
                2 => write!(
                    body,
                    r#""Seen in phishing against {} organisations""#,
                    SECTORS[i % SECTORS.len()]
                ),
                _ => write!(body, "null"),
            }
            .unwrap();
            let tags: &[&str] = match i % 3 {
                0 => &["c2", "apt", "cobalt-strike"],
                1 => &["phishing"],
                _ => &[],
            };
            body.extend_from_slice(br#","tags":["#);
            for (k, tag) in tags.iter().enumerate() {
                if k > 0 {
                    body.push(b',');
                }
                write!(body, "\"{tag}\"").unwrap();
            }
            write!(
                body,
                r#"],"mitre_techniques":["T1071","T{}"]}}"#,
                1000 + (i % 600)
            )
            .unwrap();
        }
        starts.push(body.len() + 1);
        Feed {
            body,
            starts,
            last_seen,
            n,
        }
    }

    /// How many items have `last_seen` after `since` (all of them without `since`); they are
    /// the first ones, newest first.
    pub fn count_since(&self, since: Option<i64>) -> usize {
        match since {
            None => self.n,
            Some(s) => self.last_seen.partition_point(|&t| t > s),
        }
    }

    /// Items `a..b` as JSON objects joined by `,` (empty when `a >= b`).
    pub fn items(&self, a: usize, b: usize) -> &[u8] {
        if a >= b {
            return &[];
        }
        &self.body[self.starts[a]..self.starts[b] - 1]
    }

    /// The `{"meta":{..},"data":[` part of a page.
    pub fn prefix(total: usize, limit: usize, offset: usize, generated_at: &str) -> String {
        format!(
            r#"{{"meta":{{"total":{total},"limit":{limit},"offset":{offset},"generated_at":"{generated_at}","feed_version":"1.0","source":"SOC Defenders"}},"data":["#
        )
    }

    /// The `],"links":{..}}` part of a page.
    pub fn suffix(base: &str, total: usize, limit: usize, offset: usize) -> String {
        let next = if offset + limit < total {
            format!(
                r#","next":"{base}?limit={limit}&offset={}""#,
                offset + limit
            )
        } else {
            String::new()
        };
        format!(r#"],"links":{{"self":"{base}?limit={limit}&offset={offset}"{next}}}}}"#)
    }

    /// A whole page body as the fake API serves it (for the decode limit).
    pub fn page(&self, offset: usize, limit: usize, generated_at: &str) -> Vec<u8> {
        let total = self.n;
        let (a, b) = (offset.min(total), (offset + limit).min(total));
        let mut out = Feed::prefix(total, limit, offset, generated_at).into_bytes();
        out.extend_from_slice(self.items(a, b));
        out.extend_from_slice(
            Feed::suffix("http://127.0.0.1/api/v1/iocs", total, limit, offset).as_bytes(),
        );
        out
    }
}
