//! Reading `-f FILE|DIR|-` into resolved documents.
//!
//! Everything is read, parsed and matched against the kind registry before the caller sends a
//! single request, so a syntax error or an unknown kind in the last document writes nothing.

use std::fmt;
use std::io::Read;
use std::path::Path;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::Value;
use wasmkube_api::{Kind, kinds, meta};

/// Why the manifests could not be used. Each names the file (and document) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("error: reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("error parsing {file}: line {line} column {column}: {message}")]
    Syntax { file: String, line: usize, column: usize, message: String },
    #[error("error parsing {document}: {message}")]
    Decode { document: Source, message: String },
    #[error("{document}: {problem} (line {})", .document.line)]
    Invalid { document: Source, problem: String },
    #[error("{document}: unknown kind \"{kind}\" in apiVersion \"{api_version}\" (line {})", .document.line)]
    UnknownKind { document: Source, api_version: String, kind: String },
    #[error(
        "error: the namespace from the provided object \"{object}\" does not match the namespace \"{flag}\". \
         You must pass '--namespace={object}' to perform this operation."
    )]
    NamespaceMismatch { object: String, flag: String },
}

/// Where a document came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The path as the user gave it (joined with the directory for directory entries), or `STDIN`.
    pub file: String,
    /// 1-based position of the document in its file.
    pub index: usize,
    /// 1-based line where the document's content starts.
    pub line: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.index)
    }
}

/// One object from a manifest, with its kind resolved.
#[derive(Debug, Clone)]
pub struct Document {
    pub source: Source,
    pub kind: &'static Kind,
    pub object: Value,
}

impl Document {
    pub fn name(&self) -> &str {
        meta::name(&self.object)
    }

    /// The namespace the object goes to: set by [`assign_namespaces`] for namespaced kinds.
    pub fn namespace(&self) -> Option<&str> {
        if self.kind.namespaced { meta::namespace(&self.object) } else { None }
    }
}

/// Reads every `-f` argument in order: a file, a directory (its `*.yaml`, `*.yml`, `*.json`
/// files sorted by name, not recursive, as kubectl without `-R`), or `-` for stdin.
pub fn read(paths: &[String]) -> Result<Vec<Document>, ManifestError> {
    let mut documents = Vec::new();
    for path in paths {
        for (file, text) in read_sources(path)? {
            let json = file.ends_with(".json");
            documents.extend(parse(&file, &text, json)?);
        }
    }
    Ok(documents)
}

/// The (display name, contents) of each file named by one `-f` argument.
fn read_sources(path: &str) -> Result<Vec<(String, String)>, ManifestError> {
    let read_err = |source| ManifestError::Read { path: path.to_string(), source };
    if path == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(read_err)?;
        return Ok(vec![("STDIN".to_string(), text)]);
    }
    if !Path::new(path).is_dir() {
        return Ok(vec![(path.to_string(), std::fs::read_to_string(path).map_err(read_err)?)]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_err)? {
        let entry_path = entry.map_err(read_err)?.path();
        let manifest_ext = matches!(entry_path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"));
        if manifest_ext && entry_path.is_file() {
            files.push(entry_path);
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let name = file.display().to_string();
            let text =
                std::fs::read_to_string(&file).map_err(|source| ManifestError::Read { path: name.clone(), source })?;
            Ok((name, text))
        })
        .collect()
}

/// Parses one file's text (YAML, possibly multi-document, or a stream of JSON values) into
/// resolved documents; empty documents are skipped and `v1` `List`s are expanded into their items.
pub fn parse(file: &str, text: &str, json: bool) -> Result<Vec<Document>, ManifestError> {
    let values = if json { json_values(file, text)? } else { yaml_values(file, text)? };
    let mut documents = Vec::new();
    for (position, (line, value)) in values.into_iter().enumerate() {
        let source = Source { file: file.to_string(), index: position + 1, line };
        if value.is_null() {
            continue;
        }
        if value.get("kind").and_then(Value::as_str) == Some("List") && value.get("items").is_some() {
            let items = match value.get("items") {
                Some(Value::Array(items)) => items.clone(),
                _ => return Err(invalid(&source, "items of a List must be a sequence")),
            };
            for item in items {
                documents.push(resolve(source.clone(), item)?);
            }
        } else {
            documents.push(resolve(source, value)?);
        }
    }
    Ok(documents)
}

fn invalid(source: &Source, problem: &str) -> ManifestError {
    ManifestError::Invalid { document: source.clone(), problem: problem.to_string() }
}

/// Checks a document has an apiVersion, kind and name, and finds its kind in the registry.
fn resolve(source: Source, object: Value) -> Result<Document, ManifestError> {
    if !object.is_object() {
        return Err(invalid(&source, "expected a mapping with apiVersion and kind"));
    }
    let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    let (api_version, kind_name) = (text("apiVersion"), text("kind"));
    if api_version.is_empty() {
        return Err(invalid(&source, "apiVersion not set"));
    }
    if kind_name.is_empty() {
        return Err(invalid(&source, "kind not set"));
    }
    let Some(kind) = kinds::by_api_version_kind(&api_version, &kind_name) else {
        return Err(ManifestError::UnknownKind { document: source, api_version, kind: kind_name });
    };
    if meta::name(&object).is_empty() {
        return Err(invalid(&source, "metadata.name is required"));
    }
    // Requests carry the object as a `DynamicObject`, whose metadata is typed: check it here so a
    // wrongly typed label fails before anything is sent.
    if let Err(err) = serde_json::from_value::<ObjectMeta>(object["metadata"].clone()) {
        return Err(invalid(&source, &format!("invalid metadata: {err}")));
    }
    Ok(Document { source, kind, object })
}

/// Each YAML document as (start line, value).
///
/// The text is split at `---` / `...` marker lines here rather than by iterating
/// `serde_yaml_ng::Deserializer`, because only the split knows where each document starts. Each
/// part is parsed with the lines before it blanked, so parser errors carry file line numbers.
fn yaml_values(file: &str, text: &str) -> Result<Vec<(usize, Value)>, ManifestError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut values = Vec::new();
    for (index, part) in split_documents(text).into_iter().enumerate() {
        let padded = format!("{}{}", "\n".repeat(part.first_line - 1), part.text);
        let deserializer = serde_yaml_ng::Deserializer::from_str(&padded);
        let value = Value::deserialize(deserializer).map_err(|err| yaml_error(file, index + 1, part.start, &err))?;
        values.push((part.start, value));
    }
    Ok(values)
}

fn yaml_error(file: &str, index: usize, line: usize, err: &serde_yaml_ng::Error) -> ManifestError {
    let message = err.to_string();
    match err.location() {
        Some(at) => {
            // The message ends with " at line L column C"; the location moves to the front.
            let suffix = format!(" at line {} column {}", at.line(), at.column());
            let message = message.replacen(&suffix, "", 1);
            ManifestError::Syntax { file: file.to_string(), line: at.line(), column: at.column(), message }
        }
        None => ManifestError::Decode { document: Source { file: file.to_string(), index, line }, message },
    }
}

/// One YAML document's lines, and where it sits in the file.
struct Part {
    /// 1-based line of the part's first line (the `---` marker, blanked, when there is one).
    first_line: usize,
    /// 1-based line of the document's first content, for messages.
    start: usize,
    text: String,
}

/// Splits a YAML stream at document markers: a line that is `---` (optionally followed by a space
/// and inline content) or `...`. YAML forbids these at column 0 inside a document, so this split is
/// exact. Text before the first marker is a document only if it has content.
fn split_documents(text: &str) -> Vec<Part> {
    let mut parts: Vec<Part> = Vec::new();
    let mut current = Part { first_line: 1, start: 0, text: String::new() };
    let mut explicit = false;
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let is_start = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_start || line == "..." {
            if explicit || has_content(&current.text) {
                parts.push(finish(current));
            }
            current = Part { first_line: number, start: 0, text: String::new() };
            explicit = is_start;
            // Blank the marker but keep inline content (`--- {a: 1}`) in its columns.
            let rest = if is_start { format!("   {}", &line[3..]) } else { String::new() };
            current.text.push_str(&rest);
            current.text.push('\n');
            continue;
        }
        current.text.push_str(line);
        current.text.push('\n');
    }
    if explicit || has_content(&current.text) {
        parts.push(finish(current));
    }
    parts
}

fn finish(mut part: Part) -> Part {
    let offset = part.text.lines().position(is_content).unwrap_or(0);
    part.start = part.first_line + offset;
    part
}

fn is_content(line: &str) -> bool {
    let trimmed = line.trim();
    !trimmed.is_empty() && !trimmed.starts_with('#')
}

fn has_content(text: &str) -> bool {
    text.lines().any(is_content)
}

/// A file of one or more concatenated JSON values, each with the line it starts on.
fn json_values(file: &str, text: &str) -> Result<Vec<(usize, Value)>, ManifestError> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut values = Vec::new();
    loop {
        let offset = stream.byte_offset();
        let Some(next) = stream.next() else { break };
        let value = next.map_err(|err| ManifestError::Syntax {
            file: file.to_string(),
            line: err.line(),
            column: err.column(),
            message: json_message(&err),
        })?;
        let skipped = text[offset..].len() - text[offset..].trim_start().len();
        let line = text[..offset + skipped].matches('\n').count() + 1;
        values.push((line, value));
    }
    Ok(values)
}

/// serde_json's message without its " at line L column C" suffix.
fn json_message(err: &serde_json::Error) -> String {
    let message = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    message.strip_suffix(&suffix).unwrap_or(&message).to_string()
}

/// Gives every namespaced document its target namespace, as kubectl does before sending: the
/// document's own, else `-n`, else the context default. A document namespace contradicting an
/// explicit `-n` is an error.
pub fn assign_namespaces(
    documents: &mut [Document],
    default: &str,
    explicit: Option<&str>,
) -> Result<(), ManifestError> {
    for document in documents.iter_mut().filter(|d| d.kind.namespaced) {
        let own = meta::namespace(&document.object).filter(|ns| !ns.is_empty()).map(str::to_string);
        let namespace = match (own, explicit) {
            (Some(own), Some(flag)) if own != flag => {
                return Err(ManifestError::NamespaceMismatch { object: own, flag: flag.to_string() });
            }
            (Some(own), _) => own,
            (None, flag) => flag.unwrap_or(default).to_string(),
        };
        if let Some(metadata) = document.object.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.insert("namespace".to_string(), Value::String(namespace));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
