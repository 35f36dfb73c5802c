//! `get`: fetch objects and print them as tables, YAML, JSON or names, as kubectl does.

use std::io::Write;

use kube::api::ListParams;
use serde_json::Value;
use wasmkube_api::{Kind, meta, printers};

use crate::error::{Error, is_unreachable, render};
use crate::output::{self, GET_GAP, Report};
use crate::resource::{self, Target};

use crate::{ClientOptions, config};

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// What to get: `TYPE[,TYPE...] [NAME...]` or `TYPE/NAME...`; `all` means the workload kinds.
    #[arg(required = true, value_name = "TYPE[,TYPE...] [NAME...]")]
    pub resources: Vec<String>,
    /// Output format: a wider table, the objects as YAML or JSON, or `kind/name` lines.
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
    /// Label selector, e.g. `app=web,tier in (a,b)`.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector, e.g. `status.phase=Running`.
    #[arg(long)]
    pub field_selector: Option<String>,
    /// List across all namespaces (adds a NAMESPACE column).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Wide,
    Yaml,
    Json,
    Name,
}

/// What to fetch.
#[derive(Debug, Clone)]
pub struct Query {
    pub targets: Vec<Target>,
    /// The namespace for namespaced kinds, unless `all_namespaces`.
    pub namespace: String,
    pub all_namespaces: bool,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
}

/// The objects found for each target kind, in target order, and the per-object errors.
#[derive(Debug, Default)]
pub struct Fetched {
    pub groups: Vec<(&'static Kind, Vec<Value>)>,
    pub errors: Vec<String>,
}

pub async fn run(args: &GetArgs, options: &ClientOptions, out: &mut impl Write) -> Result<(), Error> {
    let targets = resource::parse_targets(&args.resources)?;
    if args.all_namespaces && targets.iter().any(|t| !t.names.is_empty()) {
        return Err(Error::Usage("a resource cannot be retrieved by name across all namespaces".to_string()));
    }
    let cluster = config::connect(options).await?;
    let query = Query {
        targets,
        namespace: cluster.namespace_for(options),
        all_namespaces: args.all_namespaces,
        label_selector: args.selector.clone(),
        field_selector: args.field_selector.clone(),
    };
    get(cluster.client, &query, args.output, out).await?.finish()
}

/// Fetches and prints; what belongs on stderr comes back in the [`Report`].
pub async fn get(
    client: kube::Client,
    query: &Query,
    format: Option<Format>,
    out: &mut impl Write,
) -> Result<Report, Error> {
    let fetched = fetch(client, query).await?;
    let notes = print(&fetched, query, format, out)?;
    Ok(Report { notes, errors: fetched.errors })
}

/// Lists each target kind, or gets each named object. Rejections (NotFound, Forbidden) are
/// collected as kubectl lines; an unreachable server is the whole command's error.
pub async fn fetch(client: kube::Client, query: &Query) -> Result<Fetched, Error> {
    let namespace = (!query.all_namespaces).then_some(query.namespace.as_str());
    let mut fetched = Fetched::default();
    for target in &query.targets {
        let api = resource::api(client.clone(), target.kind, namespace);
        let mut objects = Vec::new();
        if target.names.is_empty() {
            let params = ListParams {
                label_selector: query.label_selector.clone(),
                field_selector: query.field_selector.clone(),
                ..ListParams::default()
            };
            match api.list(&params).await {
                Ok(list) => {
                    for item in &list.items {
                        objects.push(resource::to_value(target.kind, item)?);
                    }
                }
                Err(err) if is_unreachable(&err) => return Err(Error::request(&err)),
                Err(err) => fetched.errors.push(render(&err)),
            }
        }
        for name in &target.names {
            match api.get(name).await {
                Ok(item) => objects.push(resource::to_value(target.kind, &item)?),
                Err(err) if is_unreachable(&err) => return Err(Error::request(&err)),
                Err(err) => fetched.errors.push(render(&err)),
            }
        }
        fetched.groups.push((target.kind, objects));
    }
    Ok(fetched)
}

/// Prints fetched objects in `format`; returns the notes for stderr (`No resources found ...`).
pub fn print(
    fetched: &Fetched,
    query: &Query,
    format: Option<Format>,
    out: &mut impl Write,
) -> Result<Vec<String>, Error> {
    let objects: Vec<&Value> = fetched.groups.iter().flat_map(|(_, objects)| objects).collect();
    let named = query.targets.iter().any(|t| !t.names.is_empty());
    match format {
        Some(format @ (Format::Json | Format::Yaml)) => {
            // One named object prints as itself, anything else as a List (kubectl's rule).
            let single = query.targets.len() == 1 && query.targets.iter().all(|t| t.names.len() == 1);
            let value = match objects.as_slice() {
                [] if single => return Ok(Vec::new()),
                [object] if single => (*object).clone(),
                _ => output::list(objects.into_iter().cloned().collect()),
            };
            if format == Format::Json {
                output::write_json(out, &value)?
            } else {
                output::write_yaml(out, &value)?
            }
            return Ok(Vec::new());
        }
        Some(Format::Name) => {
            for (kind, objects) in &fetched.groups {
                for object in objects {
                    writeln!(out, "{}/{}", kind.qualified_singular(), meta::name(object))?;
                }
            }
        }
        Some(Format::Wide) | None => write_tables(fetched, query, format == Some(Format::Wide), out)?,
    }
    if objects.is_empty() && fetched.errors.is_empty() && !named {
        return Ok(vec![no_resources(query)]);
    }
    Ok(Vec::new())
}

fn no_resources(query: &Query) -> String {
    if !query.all_namespaces && query.targets.iter().any(|t| t.kind.namespaced) {
        format!("No resources found in {} namespace.", query.namespace)
    } else {
        "No resources found".to_string()
    }
}

/// One table per kind with objects, separated by blank lines. With several kinds requested, names
/// read `kind/name`; with `-A`, namespaced kinds get a leading NAMESPACE column.
fn write_tables(fetched: &Fetched, query: &Query, wide: bool, out: &mut impl Write) -> Result<(), Error> {
    let with_kind = query.targets.len() > 1;
    let mut first = true;
    for (kind, objects) in fetched.groups.iter().filter(|(_, objects)| !objects.is_empty()) {
        if !first {
            writeln!(out)?;
        }
        first = false;
        let mut headers = printers::columns(kind, wide);
        let namespace_column = query.all_namespaces && kind.namespaced;
        let prefix_name = with_kind && headers.first().is_some_and(|h| h == "NAME");
        let rows: Vec<Vec<String>> = objects
            .iter()
            .map(|object| {
                let mut row = printers::row(kind, object, wide);
                if let Some(name) = row.first_mut().filter(|_| prefix_name) {
                    *name = format!("{}/{name}", kind.qualified_singular());
                }
                if namespace_column {
                    row.insert(0, meta::namespace(object).unwrap_or_default().to_string());
                }
                row
            })
            .collect();
        if namespace_column {
            headers.insert(0, "NAMESPACE".to_string());
        }
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        out.write_all(output::table(&headers, &rows, GET_GAP).as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wasmkube_api::kinds;

    use super::*;

    fn kind(name: &str) -> &'static Kind {
        kinds::resolve(name).expect("registered")
    }

    fn query(targets: Vec<Target>, all_namespaces: bool) -> Query {
        Query { targets, namespace: "default".into(), all_namespaces, label_selector: None, field_selector: None }
    }

    fn cm(name: &str, namespace: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}, "data": {"a": "1"}})
    }

    fn printed(fetched: &Fetched, query: &Query, format: Option<Format>) -> (String, Vec<String>) {
        let mut out = Vec::new();
        let notes = print(fetched, query, format, &mut out).expect("prints");
        (String::from_utf8(out).expect("utf-8"), notes)
    }

    #[test]
    fn all_namespaces_tables_lead_with_namespace_and_kinds_prefix_names_when_several() {
        let targets = vec![Target { kind: kind("cm"), names: vec![] }, Target { kind: kind("ns"), names: vec![] }];
        let fetched = Fetched {
            groups: vec![
                (kind("cm"), vec![cm("a", "default"), cm("long-name", "kube-system")]),
                (kind("ns"), vec![json!({"metadata": {"name": "default"}, "status": {"phase": "Active"}})]),
            ],
            errors: vec![],
        };
        let (text, notes) = printed(&fetched, &query(targets, true), None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAMESPACE     NAME                  DATA   AGE");
        assert_eq!(lines[1], "default       configmap/a           1      <unknown>");
        assert_eq!(lines[3], "");
        assert_eq!(lines[4], "NAME                STATUS   AGE");
        assert_eq!(lines[5], "namespace/default   Active   <unknown>");
        assert!(notes.is_empty());
    }

    #[test]
    fn one_named_object_prints_as_itself_and_several_as_a_list() {
        let one = query(vec![Target { kind: kind("cm"), names: vec!["a".into()] }], false);
        let fetched = Fetched { groups: vec![(kind("cm"), vec![cm("a", "default")])], errors: vec![] };
        let (text, _) = printed(&fetched, &one, Some(Format::Yaml));
        assert!(text.starts_with("apiVersion: v1\ndata:\n  a: '1'\nkind: ConfigMap\n"), "{text}");

        let all = query(vec![Target { kind: kind("cm"), names: vec![] }], false);
        let (text, _) = printed(&fetched, &all, Some(Format::Json));
        let value: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["kind"], "List");
        assert_eq!(value["items"][0]["metadata"]["name"], "a");
        let (text, _) = printed(&fetched, &all, Some(Format::Name));
        assert_eq!(text, "configmap/a\n");
    }

    #[test]
    fn nothing_found_is_a_note_naming_the_namespace() {
        let targets = vec![Target { kind: kind("pods"), names: vec![] }];
        let fetched = Fetched { groups: vec![(kind("pods"), vec![])], errors: vec![] };
        let (text, notes) = printed(&fetched, &query(targets.clone(), false), None);
        assert_eq!((text.as_str(), notes), ("", vec!["No resources found in default namespace.".to_string()]));
        let (_, notes) = printed(&fetched, &query(targets, true), None);
        assert_eq!(notes, ["No resources found"]);
    }
}
