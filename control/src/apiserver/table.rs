//! `meta.k8s.io` Tables: the server-rendered rows `kubectl get` prints.
//!
//! A client that puts `as=Table;g=meta.k8s.io;v=v1` (or `v1beta1`) before plain JSON in its Accept
//! header gets lists, single objects and watch events as Tables. The columns and cells are
//! [`wasmkube_api::printers`]' (the same ones `wasmkube get` prints), and each row carries the
//! object's metadata as a `PartialObjectMetadata`, which kubectl reads for `-A`'s NAMESPACE column,
//! `--show-labels` and `-L`.

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use wasmkube_api::{Kind, printers};

use crate::status::ApiError;

/// A Table request: the `meta.k8s.io` version asked for and what each row carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableRequest {
    /// `v1` or `v1beta1`.
    pub version: &'static str,
    pub include: Include,
}

/// `includeObject`: what a row's `object` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Include {
    None,
    /// A `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    Object,
}

impl Include {
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None | Some("") | Some("Metadata") => Ok(Self::Metadata),
            Some("None") => Ok(Self::None),
            Some("Object") => Ok(Self::Object),
            Some(other) => Err(ApiError::BadRequest(format!(
                "includeObject: Unsupported value: {other:?}: supported values: \"Metadata\", \"None\", \"Object\""
            ))),
        }
    }
}

/// The Table version the first acceptable media range of `accept` names, or `None` when the client
/// prefers plain objects (a range without `as=`) or names no Table at all.
pub fn negotiate(accept: &str) -> Option<&'static str> {
    for range in super::media::ranges(accept).filter(|r| r.json) {
        match (range.as_kind, range.group, range.version) {
            ("", _, _) => return None,
            ("Table", "meta.k8s.io", "v1") => return Some("v1"),
            ("Table", "meta.k8s.io", "v1beta1") => return Some("v1beta1"),
            _ => continue,
        }
    }
    None
}

fn column_definitions(kind: &Kind) -> Value {
    let columns: Vec<Value> = printers::definitions(kind)
        .into_iter()
        .map(|d| json!({"name": d.name, "type": "string", "format": d.format, "description": "", "priority": d.priority}))
        .collect();
    Value::Array(columns)
}

fn row(kind: &Kind, object: Value, include: Include, now: Timestamp) -> Value {
    let cells = printers::cells_at(kind, &object, now);
    let mut row = json!({"cells": cells});
    match include {
        Include::None => {}
        Include::Object => row["object"] = object,
        Include::Metadata => {
            let metadata = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
            row["object"] =
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata});
        }
    }
    row
}

fn table(request: TableRequest, metadata: Value, columns: Value, rows: Vec<Value>) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{}", request.version),
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// A list (`{"metadata": {...}, "items": [...]}`) as a Table, keeping its resourceVersion and
/// continue token.
pub fn of_list(kind: &Kind, list: Value, request: TableRequest) -> Value {
    let Value::Object(mut list) = list else { return list };
    let now = Timestamp::now();
    let items = match list.remove("items") {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    let rows = items.into_iter().map(|o| row(kind, o, request.include, now)).collect();
    let metadata = list.remove("metadata").unwrap_or_else(|| Value::Object(Map::new()));
    table(request, metadata, column_definitions(kind), rows)
}

/// One object as a one-row Table. Watch events after the first leave out the column definitions,
/// as Kubernetes does (`with_columns` false); kubectl keeps the first ones.
pub fn of_object(kind: &Kind, object: Value, request: TableRequest, with_columns: bool) -> Value {
    let mut metadata = Map::new();
    if let Some(rv) = object.pointer("/metadata/resourceVersion") {
        metadata.insert("resourceVersion".into(), rv.clone());
    }
    let columns = if with_columns { column_definitions(kind) } else { Value::Null };
    table(request, Value::Object(metadata), columns, vec![row(kind, object, request.include, Timestamp::now())])
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

    #[test]
    fn tables_are_served_only_to_clients_that_prefer_them() {
        assert_eq!(negotiate(KUBECTL), Some("v1"));
        assert_eq!(negotiate("application/json;as=Table;v=v1beta1;g=meta.k8s.io"), Some("v1beta1"));
        assert_eq!(negotiate("application/json"), None);
        assert_eq!(negotiate("application/json, */*"), None);
        assert_eq!(negotiate("application/json;as=Table;v=v2;g=meta.k8s.io,application/json"), None);
        assert_eq!(negotiate("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io"), None);
    }

    #[test]
    fn list_rows_carry_cells_and_partial_metadata() {
        let pods = wasmkube_api::kinds::by_resource("", "v1", "pods").expect("pods");
        let list = json!({
            "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "42", "continue": "c"},
            "items": [{"metadata": {"name": "web", "namespace": "prod", "labels": {"app": "web"}},
                       "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Pending"}}],
        });
        let t = of_list(pods, list, TableRequest { version: "v1", include: Include::Metadata });
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["metadata"], json!({"resourceVersion": "42", "continue": "c"}));
        assert_eq!(
            t["columnDefinitions"][0],
            json!({"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0})
        );
        let wide: Vec<_> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["priority"] == 1)
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(wide, ["IP", "Node", "Nominated Node", "Readiness Gates"]);
        assert_eq!(t["rows"][0]["cells"].as_array().unwrap()[..5], ["web", "0/1", "Pending", "0", "<unknown>"]);
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "prod");
        assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["app"], "web");
    }
}
