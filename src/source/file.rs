//! Indicators from a file, for air-gapped imports and the demo: an API response body
//! (`{"data": [...]}`), a JSON array, or NDJSON (one object per line).

use std::path::PathBuf;

use crate::decode::{self, Data, Item, Shape};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: line {line} is not JSON: {message}")]
    Json {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "{path}: line {line} is longer than {max_mib} MiB; NDJSON holds one indicator per line"
    )]
    LineTooLong {
        path: PathBuf,
        line: usize,
        max_mib: usize,
    },
    #[error("{path}: {bytes} bytes of JSON that is neither an array of indicators nor an API body with a `data` array; only those are read in pages, anything else is read whole and must be at most {max_mib} MiB")]
    TooLargeToReadWhole {
        path: PathBuf,
        bytes: u64,
        max_mib: usize,
    },
}

#[derive(Clone)]
pub struct FileSource {
    path: PathBuf,
}

/// How a file is laid out, told from its first line.
enum Layout {
    /// One JSON object per line, at least two lines: read line by line.
    Ndjson,
    /// One JSON value (an array, an API body, one object): parsed whole.
    Whole,
}

impl FileSource {
    pub fn new(path: PathBuf) -> FileSource {
        FileSource { path }
    }

    fn io(&self, source: std::io::Error) -> FileError {
        FileError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn json(&self, line: usize, message: String) -> FileError {
        FileError::Json {
            path: self.path.clone(),
            line,
            message,
        }
    }

    /// Every item of the file, in file order.
    pub fn read(&self) -> Result<Vec<Item>, FileError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| self.io(e))?;
        parse(&text).map_err(|(line, message)| self.json(line, message))
    }

    /// Hands the file's items to `page` in pages of at most `size`, in file order, until
    /// `page` returns false. The file is read twice: first to check all of it (a bad line
    /// fails the import before anything is handed out, as it always did), then to hand out
    /// pages as they are decoded — so a million-item import holds a page, not the file (it
    /// held ~1 GiB). NDJSON is read line by line; an array or an API body streams through
    /// `decode::stream`; a single object is read whole. Blocking: run it off the async
    /// workers.
    pub fn pages(
        &self,
        size: usize,
        mut page: impl FnMut(Vec<Item>) -> bool,
    ) -> Result<(), FileError> {
        let size = size.max(1);
        if let Layout::Whole = self.layout()? {
            // An array, or an API body with a `data` array: checked whole first, then streamed
            // (two reads, like NDJSON). Anything else — a single object, or a file that does
            // not check out — is parsed in memory as it always was, with the same errors, up
            // to MAX_WHOLE: a larger one gets the check's own error instead of being held.
            let open = || {
                std::fs::File::open(&self.path)
                    .map(|f| std::io::BufReader::with_capacity(1 << 16, f))
                    .map_err(|e| self.io(e))
            };
            let checked = decode::stream(open()?, size, None);
            if let Ok(Some(Shape::Array | Shape::Object { data_array: true })) = checked {
                decode::stream(open()?, size, Some(&mut page))
                    .map_err(|e| self.json(e.line(), e.to_string()))?;
                return Ok(());
            }
            let bytes = std::fs::metadata(&self.path).map_err(|e| self.io(e))?.len();
            if bytes > MAX_WHOLE as u64 {
                return Err(match checked {
                    Err(e) => self.json(e.line(), e.to_string()),
                    Ok(_) => FileError::TooLargeToReadWhole {
                        path: self.path.clone(),
                        bytes,
                        max_mib: MAX_WHOLE >> 20,
                    },
                });
            }
            let mut items = self.read()?.into_iter().peekable();
            while items.peek().is_some() {
                if !page(items.by_ref().take(size).collect()) {
                    break;
                }
            }
            return Ok(());
        }
        let mut scratch = decode::blank();
        self.each_line(|text| decode::check_item(text, &mut scratch), |_, ()| true)?;
        let mut buf = Vec::with_capacity(size);
        let mut open = true;
        self.each_line(
            |text| serde_json::from_str::<Item>(text),
            |_, item| {
                buf.push(item);
                if buf.len() >= size {
                    open = page(std::mem::replace(&mut buf, Vec::with_capacity(size)));
                }
                open
            },
        )?;
        if open && !buf.is_empty() {
            page(buf);
        }
        Ok(())
    }

    /// NDJSON when the first non-blank line is a whole JSON value by itself and another
    /// non-blank line follows; anything else is one JSON value. Reads at most
    /// [`MAX_LINE`] bytes of any line: a saved API response is often one line of
    /// hundreds of megabytes, and reading it as a line held all of it in memory.
    fn layout(&self) -> Result<Layout, FileError> {
        let file = std::fs::File::open(&self.path).map_err(|e| self.io(e))?;
        let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
        let mut line = Vec::new();
        let mut next = |line: &mut Vec<u8>| {
            read_line_capped(&mut reader, MAX_LINE, line).map_err(|e| self.io(e))
        };
        let blank = |l: &[u8]| l.iter().all(u8::is_ascii_whitespace);
        loop {
            match next(&mut line)? {
                None => return Ok(Layout::Whole),
                // Longer than any one indicator: one JSON value.
                Some(false) => return Ok(Layout::Whole),
                Some(true) if blank(&line) => {}
                Some(true) => break,
            }
        }
        let t = std::str::from_utf8(&line).unwrap_or_default().trim_start();
        if !t.starts_with('{') || serde_json::from_str::<serde::de::IgnoredAny>(t).is_err() {
            return Ok(Layout::Whole);
        }
        while let Some(fit) = next(&mut line)? {
            if !blank(&line) {
                return Ok(Layout::Ndjson);
            }
            if !fit {
                // Megabytes of blanks: not a file of one indicator per line.
                break;
            }
        }
        Ok(Layout::Whole)
    }

    /// Decodes each non-blank NDJSON line with `decode` and hands it to `f` with its 1-based
    /// number, until `f` returns false. The first line that does not decode is the error, and
    /// so is a line longer than [`MAX_LINE`] (it is not held in memory to find that out).
    fn each_line<T>(
        &self,
        mut decode: impl FnMut(&str) -> serde_json::Result<T>,
        mut f: impl FnMut(usize, T) -> bool,
    ) -> Result<(), FileError> {
        let file = std::fs::File::open(&self.path).map_err(|e| self.io(e))?;
        let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
        let mut line = Vec::new();
        let mut n = 0usize;
        loop {
            let Some(fit) =
                read_line_capped(&mut reader, MAX_LINE, &mut line).map_err(|e| self.io(e))?
            else {
                return Ok(());
            };
            n += 1;
            if !fit {
                return Err(FileError::LineTooLong {
                    path: self.path.clone(),
                    line: n,
                    max_mib: MAX_LINE >> 20,
                });
            }
            let line = std::str::from_utf8(&line).map_err(|e| self.json(n, e.to_string()))?;
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            let item = decode(text).map_err(|e| self.json(n, e.to_string()))?;
            if !f(n, item) {
                return Ok(());
            }
        }
    }
}

/// The longest line [`FileSource`] reads as a line: far more than one indicator takes, far
/// less than a saved API response (one line of hundreds of megabytes). A longer first line
/// makes the file one JSON value; a longer NDJSON line is an error.
const MAX_LINE: usize = 4 << 20;

/// The largest file [`FileSource`] parses in memory (anything but an array or an API body
/// with a `data` array, which are streamed): a single indicator object is far smaller, and a
/// broken dump of gigabytes must not be held just to report its error.
const MAX_WHOLE: usize = 64 << 20;

/// Reads the next line into `line` (without its newline). `None` at the end of the file, else
/// whether the whole line fit in `cap` bytes; a longer one stops there (`line` holds its first
/// `cap` bytes, the rest is left unread).
fn read_line_capped(
    r: &mut impl std::io::BufRead,
    cap: usize,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    line.clear();
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            // A last line without a newline is in `line` (a part is empty only at a newline).
            return Ok((!line.is_empty()).then_some(true));
        }
        let end = chunk.iter().position(|&b| b == b'\n');
        let part = &chunk[..end.unwrap_or(chunk.len())];
        let room = cap.saturating_sub(line.len());
        if part.len() > room {
            line.extend_from_slice(&part[..room]);
            r.consume(room);
            return Ok(Some(false));
        }
        line.extend_from_slice(part);
        let used = end.map_or(chunk.len(), |i| i + 1);
        r.consume(used);
        if end.is_some() {
            return Ok(Some(true));
        }
    }
}

/// Items of an API body, a JSON array or NDJSON. Errors carry the 1-based line.
pub fn parse(text: &str) -> Result<Vec<Item>, (usize, String)> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str::<Vec<Item>>(text).map_err(|e| (e.line(), e.to_string()));
    }
    if trimmed.starts_with('{') {
        // A whole-file object is an API body when it has a `data` array, else one item;
        // anything that is not one whole JSON object is NDJSON, parsed below.
        if let Ok(body) = decode::body(text.as_bytes()) {
            if let Data::Items(items) = body.data {
                return Ok(items);
            }
            if let Ok(item) = serde_json::from_str::<Item>(text) {
                return Ok(vec![item]);
            }
        }
    }
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v = serde_json::from_str(line).map_err(|e| (i + 1, e.to_string()))?;
        items.push(v);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_body_array_and_ndjson_all_parse() {
        assert_eq!(
            parse(r#"{"meta":{},"data":[{"value":"a"},{"value":"b"}]}"#)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(parse(r#"[{"value":"a"}]"#).unwrap().len(), 1);
        assert_eq!(
            parse("{\"value\":\"a\"}\n\n{\"value\":\"b\"}\n")
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn broken_ndjson_names_the_line() {
        let e = parse("{\"value\":\"a\"}\n{\"value\":\n").unwrap_err();
        assert_eq!(e.0, 2);
    }

    fn write(text: &str) -> (tempfile::TempDir, FileSource) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feed");
        std::fs::write(&path, text).unwrap();
        (dir, FileSource::new(path))
    }

    fn values(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| i.0.as_ref().map(|i| i.value.clone()).unwrap_or_default())
            .collect()
    }

    fn pages_of(f: &FileSource, size: usize) -> Result<Vec<Vec<String>>, FileError> {
        let mut out = Vec::new();
        f.pages(size, |p| {
            out.push(values(&p));
            true
        })?;
        Ok(out)
    }

    #[test]
    fn lines_are_read_whole_up_to_the_cap_and_a_longer_one_stops_there() {
        let read = |text: &'static [u8]| {
            let mut r = std::io::BufReader::with_capacity(3, text);
            let mut line = Vec::new();
            let mut got = Vec::new();
            while let Some(fit) = read_line_capped(&mut r, 4, &mut line).unwrap() {
                got.push((String::from_utf8(line.clone()).unwrap(), fit));
                if !fit {
                    break;
                }
            }
            got
        };
        let lines = |want: &[(&str, bool)]| -> Vec<(String, bool)> {
            want.iter().map(|(l, f)| (l.to_string(), *f)).collect()
        };
        assert_eq!(
            read(b"abc\n\r\ndefg\nk"),
            lines(&[("abc", true), ("\r", true), ("defg", true), ("k", true)])
        );
        // A line over the cap stops the reading there.
        assert_eq!(
            read(b"abc\ndefghij\nk\n"),
            lines(&[("abc", true), ("defg", false)])
        );
    }

    #[test]
    fn a_one_line_api_body_longer_than_the_cap_streams_and_a_longer_ndjson_line_is_an_error() {
        let n = MAX_LINE / 12;
        let items: Vec<String> = (0..n).map(|i| format!("{{\"value\":\"v{i}\"}}")).collect();
        let body = format!("{{\"meta\":{{}},\"data\":[{}]}}", items.join(","));
        assert!(body.len() > MAX_LINE);
        let (_d, f) = write(&body);
        assert!(matches!(f.layout().unwrap(), Layout::Whole));
        let pages = pages_of(&f, 10_000).unwrap();
        assert_eq!(pages.iter().map(Vec::len).sum::<usize>(), n);
        assert_eq!(pages[0][0], "v0");
        // NDJSON: a short first line, then one longer than the cap.
        let long = format!("{{\"value\":\"{}\"}}", "x".repeat(MAX_LINE + 10));
        let (_d, f) = write(&format!("{{\"value\":\"a\"}}\n{long}\n"));
        assert!(matches!(f.layout().unwrap(), Layout::Ndjson));
        // ... whose over-long line is an error naming it, before any page is handed out.
        let mut handed = 0;
        let e = f.pages(10, |_| {
            handed += 1;
            true
        });
        let e = e.unwrap_err().to_string();
        assert!(e.contains("line 2 is longer than 4 MiB"), "{e}");
        assert_eq!(handed, 0);
        // Just under the cap is a line like any other.
        let fits = format!("{{\"value\":\"{}\"}}", "x".repeat(MAX_LINE - 20));
        let (_d, f) = write(&format!("{{\"value\":\"a\"}}\r\n{fits}\r\n"));
        assert_eq!(pages_of(&f, 10).unwrap().concat().len(), 2);
    }

    #[test]
    fn ndjson_is_handed_out_in_pages_in_file_order() {
        let text: String = (0..12)
            .map(|i| {
                format!(
                    "{{\"value\":\"v{i}\"}}\r\n{}",
                    if i == 3 { "\n  \n" } else { "" }
                )
            })
            .collect();
        let (_d, f) = write(&text);
        let pages = pages_of(&f, 5).unwrap();
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![5, 5, 2]
        );
        let all: Vec<String> = pages.concat();
        assert_eq!(all, (0..12).map(|i| format!("v{i}")).collect::<Vec<_>>());
        // Stopping early stops reading.
        let mut calls = 0;
        f.pages(5, |_| {
            calls += 1;
            false
        })
        .unwrap();
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_bad_ndjson_line_fails_before_any_page_is_handed_out() {
        let mut text: String = (0..9)
            .map(|i| format!("{{\"value\":\"v{i}\"}}\n"))
            .collect();
        text.push_str("{\"value\":\n{\"value\":\"last\"}\n");
        let (_d, f) = write(&text);
        let mut handed = 0;
        let e = f
            .pages(2, |_| {
                handed += 1;
                true
            })
            .unwrap_err();
        assert!(matches!(e, FileError::Json { line: 10, .. }), "{e}");
        assert_eq!(handed, 0);
    }

    #[test]
    fn whole_value_layouts_give_what_parse_gives() {
        for text in [
            r#"{"meta":{},"data":[{"value":"a"},{"value":"b"},{"value":"c"}]}"#,
            "{\n  \"meta\": {},\n  \"data\": [{\"value\": \"a\"}, {\"value\": \"b\"}]\n}\n",
            r#"[{"value":"a"},{"value":"b"},{"value":"c"}]"#,
            "{\"value\":\"only\"}\n\n",
            "",
        ] {
            let (_d, f) = write(text);
            let want = values(&parse(text).unwrap());
            assert_eq!(pages_of(&f, 2).unwrap().concat(), want, "{text}");
        }
    }

    #[test]
    fn arrays_and_api_bodies_stream_in_pages_and_bad_ones_fail_before_any_page() {
        let items: Vec<String> = (0..7)
            .map(|i| format!("{{\"value\":\"v{i}\",\"tags\":[\"t\"]}}"))
            .collect();
        let array = format!("[\n{}\n]\n", items.join(",\n"));
        let body = format!(
            "{{\"meta\":{{\"total\":7}},\n\"data\":[{}],\"x\":{{}}}}",
            items.join(",")
        );
        for text in [&array, &body] {
            let (_d, f) = write(text);
            let pages = pages_of(&f, 3).unwrap();
            assert_eq!(
                pages.iter().map(Vec::len).collect::<Vec<_>>(),
                vec![3, 3, 1],
                "{text}"
            );
            assert_eq!(
                pages.concat(),
                (0..7).map(|i| format!("v{i}")).collect::<Vec<_>>()
            );
            let mut calls = 0;
            f.pages(3, |_| {
                calls += 1;
                false
            })
            .unwrap();
            assert_eq!(calls, 1, "stopping early stops reading");
        }
        // Broken at the end (line 4): nothing is handed out, and the error is the one a whole
        // read gives.
        let broken = format!("[\n{},\n{}\n{{\"value\":\n", items[0], items[1]);
        let (_d, f) = write(&broken);
        let mut handed = 0;
        let e = f
            .pages(1, |_| {
                handed += 1;
                true
            })
            .unwrap_err();
        assert_eq!(handed, 0);
        assert!(matches!(e, FileError::Json { line: 4, .. }), "{e}");
        // Larger than MAX_WHOLE and broken: the streaming check's error, nothing held or
        // handed out; large and valid but not streamable (one object): its own error.
        let big = format!(
            "[{}",
            r#"{"value":"v","tags":["t"]},"#.repeat(MAX_WHOLE / 26 + 1)
        );
        assert!(big.len() > MAX_WHOLE);
        let (_d, f) = write(&big);
        let e = f
            .pages(1000, |_| panic!("a page of a broken file"))
            .unwrap_err();
        assert!(matches!(e, FileError::Json { line: 1, .. }), "{e}");
        let (_d, f) = write(&format!(r#"{{"value":"{}"}}"#, "x".repeat(MAX_WHOLE)));
        let e = f
            .pages(1000, |_| panic!("a page of a single object"))
            .unwrap_err();
        assert!(matches!(e, FileError::TooLargeToReadWhole { .. }), "{e}");
        assert!(e.to_string().contains("at most 64 MiB"), "{e}");
        // Two `data` keys: the whole read keeps the last, as before.
        let (_d, f) = write(r#"{"data":[{"value":"first"}],"data":[{"value":"second"}]}"#);
        assert_eq!(
            pages_of(&f, 5).unwrap().concat(),
            vec!["second".to_string()]
        );
    }
}
