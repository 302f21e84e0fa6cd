//! Target `file_source`: any bytes as the file of `[source] kind = "file"` (an API body, a
//! JSON array, NDJSON, or garbage), read through `FileSource::pages` (what the daemon
//! calls) and `FileSource::read`. The input is written to a temporary file: the source
//! takes a path, and its layout sniffing, capped line reads and two-pass streaming are
//! what is under test. The page size is 1 to 4, from the input's length.
//!
//! Checks: pages are full but the last, never empty; `pages` and `read` agree (both fail,
//! or give the same items; a file that is not UTF-8 may page while `read` refuses it); a reader that stops after the first page gets exactly one; and
//! every indicator keeps the decoder's promises.

use std::path::PathBuf;

use ioc_forwarder::decode::Item;
use ioc_forwarder::source::file::FileSource;

use super::decode_body::{check_indicator, results};

fn temp_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "ioc-forwarder-fuzz-file-{}-{:?}.json",
        std::process::id(),
        std::thread::current().id()
    ))
}

pub fn run(data: &[u8]) {
    let path = temp_path();
    std::fs::write(&path, data).expect("write the temporary file");
    check(&FileSource::new(path.clone()), 1 + data.len() % 4, data);
    let _ = std::fs::remove_file(&path);
}

fn check(f: &FileSource, size: usize, data: &[u8]) {
    let mut pages: Vec<Vec<Item>> = Vec::new();
    let paged = f.pages(size, |p| {
        pages.push(p);
        true
    });
    let read = f.read();
    match (&paged, &read) {
        (Ok(()), Ok(items)) => {
            let all: Vec<Item> = pages.concat();
            assert_eq!(results(&all), results(items), "pages and read differ");
        }
        (Err(p), Err(r)) => {
            let _ = (p.to_string(), r.to_string());
        }
        // `read` takes the file as a string; a page decoder checks only the strings it
        // keeps (serde_json skips others unchecked), so a file that is not UTF-8 may page.
        (Ok(()), Err(_)) if std::str::from_utf8(data).is_err() => {}
        (p, r) => panic!("pages gave {p:?}, read gave {:?}", r.as_ref().map(Vec::len)),
    }
    if let Some((last, full)) = pages.split_last() {
        assert!(
            !last.is_empty() && last.len() <= size,
            "a last page of {}",
            last.len()
        );
        for p in full {
            assert_eq!(p.len(), size, "a page of {} before the last", p.len());
        }
    }
    for item in pages.iter().flatten() {
        if let Ok(ind) = &item.0 {
            check_indicator(ind);
        }
    }
    if paged.is_ok() {
        let mut calls = 0;
        f.pages(size, |_| {
            calls += 1;
            false
        })
        .expect("the same file read again");
        assert_eq!(
            calls,
            usize::from(!pages.is_empty()),
            "stopping after one page"
        );
    }
}
