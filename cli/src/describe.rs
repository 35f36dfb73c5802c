//! `describe`: a readable page per object — metadata, the kind's main fields, conditions, events.
//!
//! Rendering is a pure function ([`describe`]) of the object and its events. Most kinds are shown
//! the way kubectl shows custom resources (every spec/status field as an indented `Key: value`
//! tree); pods, deployments, config maps and secrets get kubectl's dedicated layouts in [`kinds`].

use std::io::Write;

use jiff::Timestamp;
use kube::api::ListParams;
use serde_json::Value;
use wasmkube_api::{Kind, kinds as registry, meta};

use crate::apply::LAST_APPLIED;
use crate::error::{Error, is_unreachable};
use crate::get::{self, Query};
use crate::output::Report;
use crate::{ClientOptions, config, resource};

mod kinds;
mod page;

use page::Page;

#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    /// What to describe: `TYPE [NAME...]` or `TYPE/NAME...`; without names, every object listed.
    #[arg(required = true, value_name = "TYPE [NAME...]")]
    pub resources: Vec<String>,
    /// Label selector for the objects to describe when no names are given.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Describe matching objects in all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

pub async fn run(args: &DescribeArgs, options: &ClientOptions, out: &mut impl Write) -> Result<(), Error> {
    let targets = resource::parse_targets(&args.resources)?;
    let cluster = config::connect(options).await?;
    let query = Query {
        targets,
        namespace: cluster.namespace_for(options),
        all_namespaces: args.all_namespaces,
        label_selector: args.selector.clone(),
        field_selector: None,
    };
    let fetched = get::fetch(cluster.client.clone(), &query).await?;
    let mut report = Report { notes: Vec::new(), errors: fetched.errors };
    let mut described = 0;
    for (kind, objects) in &fetched.groups {
        for object in objects {
            let events = events_for(cluster.client.clone(), kind, object).await?;
            if described > 0 {
                writeln!(out)?;
            }
            out.write_all(describe(kind, object, &events, Timestamp::now()).as_bytes())?;
            described += 1;
        }
    }
    let named = query.targets.iter().any(|t| !t.names.is_empty());
    if described == 0 && report.errors.is_empty() && !named {
        report.notes.push(format!("No resources found in {} namespace.", query.namespace));
    }
    report.finish()
}

/// The events about `object`, oldest first. Listing failures other than an unreachable server
/// leave the section empty, as kubectl does, rather than failing the description.
pub async fn events_for(client: kube::Client, kind: &Kind, object: &Value) -> Result<Vec<Value>, Error> {
    let Some(event_kind) = registry::resolve("events") else {
        return Ok(Vec::new());
    };
    let namespace = meta::namespace(object).unwrap_or_default();
    let mut selector = format!("involvedObject.name={},involvedObject.namespace={namespace}", meta::name(object));
    if let Some(uid) = object.pointer("/metadata/uid").and_then(Value::as_str) {
        selector.push_str(&format!(",involvedObject.uid={uid}"));
    }
    let scope = kind.namespaced.then_some(namespace);
    let api = resource::api(client, event_kind, scope);
    let list = match api.list(&ListParams::default().fields(&selector)).await {
        Ok(list) => list,
        Err(err) if is_unreachable(&err) => return Err(Error::request(&err)),
        Err(err) => {
            tracing::debug!(%err, "listing events failed");
            return Ok(Vec::new());
        }
    };
    let mut events = Vec::new();
    for item in &list.items {
        events.push(resource::to_value(event_kind, item)?);
    }
    events.sort_by_key(|e| event_time(e).map(str::to_string));
    Ok(events)
}

fn event_time(event: &Value) -> Option<&str> {
    ["/lastTimestamp", "/eventTime", "/firstTimestamp", "/metadata/creationTimestamp"]
        .iter()
        .find_map(|p| event.pointer(p).and_then(Value::as_str))
}

/// The description page of one object.
pub fn describe(kind: &Kind, object: &Value, events: &[Value], now: Timestamp) -> String {
    let mut page = Page::default();
    page.field(0, "Name", meta::name(object));
    if kind.namespaced {
        page.field(0, "Namespace", meta::namespace(object).unwrap_or_default());
    }
    page.field(0, "Labels", &labels(object.pointer("/metadata/labels")));
    page.field(0, "Annotations", &annotations(object.pointer("/metadata/annotations")));
    page.field(0, "CreationTimestamp", &time(object.pointer("/metadata/creationTimestamp")));
    match (kind.group, kind.kind) {
        ("", "Pod") => kinds::pod(&mut page, object),
        ("apps", "Deployment") => kinds::deployment(&mut page, object),
        ("", "ConfigMap") => kinds::config_map(&mut page, object),
        ("", "Secret") => kinds::secret(&mut page, object),
        _ => generic_body(&mut page, object),
    }
    conditions(&mut page, object);
    events_section(&mut page, events, now);
    page.render()
}

/// Every top-level field but the type and metadata, as kubectl prints custom resources.
fn generic_body(page: &mut Page, object: &Value) {
    for (key, value) in object.as_object().into_iter().flatten() {
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let mut value = value.clone();
        if key == "status"
            && let Some(status) = value.as_object_mut()
        {
            status.remove("conditions");
        }
        page.tree(0, key, &value);
    }
}

/// Labels as `k=v` lines, or `<none>`.
pub(crate) fn labels(map: Option<&Value>) -> String {
    let lines: Vec<String> = map
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    if lines.is_empty() { "<none>".to_string() } else { lines.join("\n") }
}

/// Annotations as `k: v` lines without the last-applied configuration, or `<none>`.
fn annotations(map: Option<&Value>) -> String {
    let lines: Vec<String> = map
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != LAST_APPLIED)
        .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or_default()))
        .collect();
    if lines.is_empty() { "<none>".to_string() } else { lines.join("\n") }
}

/// A timestamp in kubectl's describe format (RFC 1123 with numeric zone, local time).
pub(crate) fn time(value: Option<&Value>) -> String {
    let Some(ts) = value.and_then(Value::as_str).and_then(|t| t.parse::<Timestamp>().ok()) else {
        return "<unset>".to_string();
    };
    ts.to_zoned(jiff::tz::TimeZone::system()).strftime("%a, %d %b %Y %H:%M:%S %z").to_string()
}

/// The `Conditions:` table, when the object has conditions; Reason and Message columns only
/// when some condition has them.
fn conditions(page: &mut Page, object: &Value) {
    let Some(conditions) = object.pointer("/status/conditions").and_then(Value::as_array) else {
        return;
    };
    if conditions.is_empty() {
        return;
    }
    let fields = ["type", "status", "reason", "message"];
    let used: Vec<&str> = fields
        .iter()
        .enumerate()
        .filter(|(i, f)| {
            *i < 2 || conditions.iter().any(|c| c.get(**f).and_then(Value::as_str).is_some_and(|s| !s.is_empty()))
        })
        .map(|(_, f)| *f)
        .collect();
    let rows: Vec<Vec<String>> = conditions
        .iter()
        .map(|c| used.iter().map(|f| c.get(*f).and_then(Value::as_str).unwrap_or_default().to_string()).collect())
        .collect();
    let headers: Vec<String> = used.iter().map(|f| capitalize(f)).collect();
    page.header(0, "Conditions");
    page.table(1, &headers, rows);
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// The `Events:` table (`<none>` without events), kubectl's columns and age format.
fn events_section(page: &mut Page, events: &[Value], now: Timestamp) {
    if events.is_empty() {
        page.field(0, "Events", "<none>");
        return;
    }
    let text = |e: &Value, p: &str| e.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let from = Some(text(e, "/source/component"))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| text(e, "/reportingController"));
            vec![text(e, "/type"), text(e, "/reason"), event_age(e, now), from, text(e, "/message").trim().to_string()]
        })
        .collect();
    let headers: Vec<String> = ["Type", "Reason", "Age", "From", "Message"].map(String::from).to_vec();
    page.header(0, "Events");
    page.table(1, &headers, rows);
}

/// `10s`, or `2m (x3 over 5m)` for a repeated event.
fn event_age(event: &Value, now: Timestamp) -> String {
    let age = |p: &str| {
        let ts = event.pointer(p).and_then(Value::as_str)?.parse::<Timestamp>().ok()?;
        Some(meta::human_duration(now.as_second() - ts.as_second()))
    };
    let first = age("/firstTimestamp").or_else(|| age("/eventTime"));
    let last = age("/lastTimestamp").or_else(|| first.clone()).unwrap_or_else(|| "<unknown>".to_string());
    let count = event.get("count").and_then(Value::as_i64).unwrap_or(1);
    match first {
        Some(first) if count > 1 => format!("{last} (x{count} over {first})"),
        _ => last,
    }
}

#[cfg(test)]
mod tests;
