//! Shared output shapes: aligned tables, kubectl's JSON/YAML encodings, and the stderr report that
//! decides the exit status.

use std::io::Write;

use serde_json::{Value, json};

use crate::Error;

/// The gap between table columns in `get` output (kubectl's tabwriter padding).
pub const GET_GAP: usize = 3;

/// Lays out rows under upper-case headers with every column padded to its widest cell plus `gap`
/// spaces; the last column is not padded, so lines carry no trailing spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>], gap: usize) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut text = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i < last {
                let width = widths.get(i).copied().unwrap_or(0);
                line.push_str(&" ".repeat(width - cell.chars().count() + gap));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Several objects as kubectl prints them: a `v1` `List`.
pub fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}})
}

/// JSON the way kubectl prints it: indented four spaces, with a final newline.
pub fn write_json(out: &mut impl Write, value: &Value) -> Result<(), Error> {
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(Vec::new(), formatter);
    serde::Serialize::serialize(value, &mut serializer).map_err(|e| Error::Encode(e.to_string()))?;
    let mut bytes = serializer.into_inner();
    bytes.push(b'\n');
    out.write_all(&bytes)?;
    Ok(())
}

pub fn write_yaml(out: &mut impl Write, value: &Value) -> Result<(), Error> {
    let text = serde_yaml_ng::to_string(value).map_err(|e| Error::Encode(e.to_string()))?;
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// What a verb leaves for stderr: notes (`No resources found ...`) and per-object errors. Verbs
/// carry on past a failed object, as kubectl does, and report at the end.
#[derive(Debug, Default)]
pub struct Report {
    pub notes: Vec<String>,
    pub errors: Vec<String>,
}

impl Report {
    /// Prints the notes and all errors but the last to stderr and returns the last as the error,
    /// so the caller's one-line print completes kubectl's output and the exit status is 1.
    pub fn finish(mut self) -> Result<(), Error> {
        for note in &self.notes {
            eprintln!("{note}");
        }
        let Some(last) = self.errors.pop() else {
            return Ok(());
        };
        for error in &self.errors {
            eprintln!("{error}");
        }
        Err(Error::Request(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_by_three_spaces_without_trailing_space() {
        let rows = vec![
            vec!["web-1".to_string(), "1/1".to_string(), "".to_string()],
            vec!["a".to_string(), "10/10".to_string(), "x".to_string()],
        ];
        assert_eq!(
            table(&["NAME", "READY", "IP"], &rows, GET_GAP),
            "NAME    READY   IP\nweb-1   1/1\na       10/10   x\n"
        );
    }

    #[test]
    fn json_is_indented_four_spaces() {
        let mut out = Vec::new();
        write_json(&mut out, &json!({"a": [1]})).expect("encodes");
        assert_eq!(String::from_utf8(out).expect("utf-8"), "{\n    \"a\": [\n        1\n    ]\n}\n");
    }
}
