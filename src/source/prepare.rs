//! Turning decoded items into queue entries before the store's lock is taken: the local
//! filters, the dedup key and version, the CEF line ([`crate::store::Prepared`]). For the API
//! this happens item by item while the page is decoded ([`crate::decode::body_each`]), so a
//! page never exists as ten thousand decoded indicators of a dozen allocations each — only as
//! one string per indicator.

use crate::decode::Item;
use crate::encode::cef::{self, CefOptions};
use crate::indicator::{Indicator, IocType, Skip};
use crate::store::{Keyer, Prepared};

/// What turns a decoded item into a queue entry: the local filters and the CEF options.
pub struct Prep {
    pub cef: CefOptions,
    /// Types/confidences filtered here (when the server cannot do it in one query).
    pub local_types: Vec<IocType>,
    pub local_confidence: Vec<String>,
}

/// A page made ready for [`crate::store::Store::commit_page`], and what was left out of it.
#[derive(Default)]
pub struct PreparedPage {
    pub items: Vec<Prepared>,
    /// Items the page held (indicators, skipped ones and filtered ones).
    pub decoded: u64,
    pub filtered: u64,
    pub skipped: u64,
    /// Counted per page, then added to the process-wide metrics in one go per label.
    pub by_type: Vec<(&'static str, u64)>,
    pub by_reason: Vec<(&'static str, u64)>,
    /// Fingerprints of the page's first and last items (identity and last_seen, or the skip
    /// reason): the walk compares them to notice a server that serves the same page at every
    /// offset.
    pub edges: Option<(u64, u64)>,
}

impl PreparedPage {
    fn edge(&mut self, print: u64) {
        self.edges = Some((self.edges.map_or(print, |e| e.0), print));
    }
}

fn bump(counts: &mut Vec<(&'static str, u64)>, label: &'static str) {
    match counts.iter_mut().find(|(l, _)| *l == label) {
        Some((_, n)) => *n += 1,
        None => counts.push((label, 1)),
    }
}

impl Prep {
    /// Keeps every item (no local filters).
    pub fn unfiltered(cef: CefOptions) -> Prep {
        Prep {
            cef,
            local_types: Vec::new(),
            local_confidence: Vec::new(),
        }
    }

    fn wanted(&self, i: &Indicator) -> bool {
        (self.local_types.is_empty() || self.local_types.contains(&i.ioc_type))
            && (self.local_confidence.is_empty()
                || i.confidence
                    .as_ref()
                    .is_some_and(|c| self.local_confidence.contains(c)))
    }

    /// Takes one decoded item into `page` (only its CEF line is kept). `line` is scratch
    /// space reused across calls.
    pub fn add(
        &self,
        page: &mut PreparedPage,
        item: Result<&Indicator, Skip>,
        keyer: &Keyer,
        line: &mut String,
    ) {
        page.decoded += 1;
        let i = match item {
            Ok(i) => i,
            Err(skip) => {
                page.edge(skip as u64);
                page.skipped += 1;
                bump(&mut page.by_reason, skip.reason());
                tracing::debug!(reason = skip.reason(), "skipped an item of the feed");
                return;
            }
        };
        let key = keyer.key(i);
        // The identity's hash (needed anyway) mixed with the version's time.
        let last_us = i.last_seen.map_or(0, |t| t.timestamp_micros());
        page.edge(key ^ (last_us as u64).rotate_left(29));
        // `other` for unknown types: metric labels must stay a bounded set.
        bump(&mut page.by_type, i.ioc_type.as_str());
        if !self.wanted(i) {
            page.filtered += 1;
            return;
        }
        line.clear();
        let (cuts, act_at) = cef::encode_queued(i, &self.cef, line);
        page.items.push(Prepared::new(key, i, line, act_at, cuts));
    }

    /// Prepares a page of items decoded already (the file source).
    pub fn page(&self, items: Vec<Item>, keyer: &Keyer) -> PreparedPage {
        let mut page = PreparedPage {
            items: Vec::with_capacity(items.len()),
            ..PreparedPage::default()
        };
        let mut line = String::with_capacity(1024);
        for item in items {
            self.add(&mut page, item.0.as_ref().map_err(|s| *s), keyer, &mut line);
        }
        page
    }
}
