//! Indicators from a file, for air-gapped imports and the demo: an API response body
//! (`{"data": [...]}`), a JSON array, or NDJSON (one object per line).

use std::path::PathBuf;

use crate::decode::{self, Data, Item};

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
}

pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    pub fn new(path: PathBuf) -> FileSource {
        FileSource { path }
    }

    /// Every item of the file, in file order.
    pub fn read(&self) -> Result<Vec<Item>, FileError> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| FileError::Io {
            path: self.path.clone(),
            source,
        })?;
        parse(&text).map_err(|(line, message)| FileError::Json {
            path: self.path.clone(),
            line,
            message,
        })
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
}
