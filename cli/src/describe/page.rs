//! A description page: indented `Key: value` lines, sections and small tables, laid out the way
//! kubectl's describers do (values aligned within each run of fields at one indent).

use serde_json::Value;

use crate::output;

/// Spaces per indent level.
const INDENT: usize = 2;

/// The gap between a field's colon (of the longest key in its run) and its value, and between
/// table columns.
const GAP: usize = 2;

enum Line {
    Field { indent: usize, key: String, value: String },
    Header { indent: usize, key: String },
    Raw { indent: usize, text: String },
}

#[derive(Default)]
pub(crate) struct Page {
    lines: Vec<Line>,
}

impl Page {
    /// `Key:  value`; a multi-line value continues aligned under its first line.
    pub(crate) fn field(&mut self, indent: usize, key: &str, value: &str) {
        self.lines.push(Line::Field { indent, key: key.to_string(), value: value.to_string() });
    }

    /// `Key:` opening a nested section.
    pub(crate) fn header(&mut self, indent: usize, key: &str) {
        self.lines.push(Line::Header { indent, key: key.to_string() });
    }

    pub(crate) fn raw(&mut self, indent: usize, text: &str) {
        self.lines.push(Line::Raw { indent, text: text.to_string() });
    }

    /// A table with a dashed rule under the headers, as in `Conditions:` and `Events:`.
    pub(crate) fn table(&mut self, indent: usize, headers: &[String], rows: Vec<Vec<String>>) {
        // kubectl's rules are at least four dashes (`Age` gets `----`).
        let rule: Vec<String> = headers.iter().map(|h| "-".repeat(h.chars().count().max(4))).collect();
        let all: Vec<Vec<String>> = std::iter::once(rule).chain(rows).collect();
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        for line in output::table(&headers, &all, GAP).lines() {
            self.raw(indent, line);
        }
    }

    /// Any JSON value as an indented tree with kubectl's smart labels (`clusterIP` → `Cluster IP`):
    /// maps and lists open sections, scalars are fields. This is how kubectl describes kinds it
    /// has no dedicated describer for.
    pub(crate) fn tree(&mut self, indent: usize, key: &str, value: &Value) {
        let label = smart_label(key);
        match value {
            Value::Object(map) => {
                self.header(indent, &label);
                for (k, v) in map {
                    self.tree(indent + 1, k, v);
                }
            }
            Value::Array(items) => {
                self.header(indent, &label);
                for item in items {
                    match item {
                        Value::Object(map) => map.iter().for_each(|(k, v)| self.tree(indent + 1, k, v)),
                        other => self.raw(indent + 1, &scalar(other)),
                    }
                }
            }
            other => self.field(indent, &label, &scalar(other)),
        }
    }

    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        let mut i = 0;
        while i < self.lines.len() {
            match &self.lines[i] {
                Line::Field { .. } => {
                    let run = self.lines[i..].iter().take_while(|l| matches!(l, Line::Field { .. })).count();
                    render_fields(&mut text, &self.lines[i..i + run]);
                    i += run;
                    continue;
                }
                Line::Header { indent, key } => push_line(&mut text, &format!("{}{key}:", pad(*indent))),
                Line::Raw { indent, text: raw } => push_line(&mut text, &format!("{}{raw}", pad(*indent))),
            }
            i += 1;
        }
        text
    }
}

/// Writes a run of consecutive fields with their values in one column: like kubectl's
/// tabwriter, the run spans indent levels and ends at the next header or raw line.
fn render_fields(text: &mut String, run: &[Line]) {
    let label = |indent: usize, key: &str| format!("{}{key}:", pad(indent));
    let width = run
        .iter()
        .map(|l| match l {
            Line::Field { indent, key, .. } => label(*indent, key).chars().count(),
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    let column = width + GAP;
    for line in run {
        let Line::Field { indent, key, value } = line else {
            continue;
        };
        let label = label(*indent, key);
        let mut values = value.lines();
        let first = values.next().unwrap_or_default();
        let spaces = column - label.chars().count();
        push_line(text, &format!("{label}{}{first}", " ".repeat(spaces)));
        for more in values {
            push_line(text, &format!("{}{more}", " ".repeat(column)));
        }
    }
}

fn push_line(text: &mut String, line: &str) {
    text.push_str(line.trim_end());
    text.push('\n');
}

fn pad(indent: usize) -> String {
    " ".repeat(indent * INDENT)
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".to_string(),
        other => other.to_string(),
    }
}

/// kubectl's `smartLabelFor`: split camelCase into capitalised words, upper-casing common
/// acronyms; keys with other characters (`app.kubernetes.io/name`) stay as they are.
pub(crate) fn smart_label(field: &str) -> String {
    if field.is_empty() || !field.chars().all(|c| c.is_alphabetic() || c == '-') {
        return field.to_string();
    }
    let chars: Vec<char> = field.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let prev_lower = i > 0 && chars[i - 1].is_lowercase();
        let prev_upper = i > 0 && chars[i - 1].is_uppercase();
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
        // A word starts at a lower→upper step (`clusterIP`), or at the last capital of an
        // acronym followed by lower case (`HTTPServer` → `HTTP`, `Server`).
        if c.is_uppercase() && (prev_lower || (prev_upper && next_lower)) && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        word.push(c);
    }
    words.push(word);
    let words: Vec<String> = words
        .into_iter()
        .map(|w| {
            let upper = w.to_uppercase();
            if ["API", "URL", "UID", "OSB", "GUID"].contains(&upper.as_str()) {
                upper
            } else {
                let mut chars = w.chars();
                chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
            }
        })
        .collect();
    words.join(" ")
}
