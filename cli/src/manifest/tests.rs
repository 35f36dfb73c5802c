use super::*;

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n";
const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: \"1\"\n";

fn names(documents: &[Document]) -> Vec<String> {
    documents.iter().map(|d| format!("{}/{}", d.kind.qualified_singular(), d.name())).collect()
}

#[test]
fn multi_document_yaml_yields_each_object_with_its_start_line() {
    let text = format!("# leading comment\n{CM}---\n\n{DEPLOY}");
    let documents = parse("app.yaml", &text, false).expect("valid manifests");
    assert_eq!(names(&documents), ["configmap/settings", "deployment.apps/web"]);
    assert_eq!(documents[0].source, Source { file: "app.yaml".into(), index: 1, line: 2 });
    assert_eq!(documents[1].source, Source { file: "app.yaml".into(), index: 2, line: 10 });
    assert_eq!(documents[1].object["spec"]["replicas"], 2);
}

#[test]
fn empty_documents_and_a_leading_marker_are_skipped() {
    let text = format!("---\n{CM}---\n---\n# only a comment\n---\n{DEPLOY}...\n");
    let documents = parse("app.yaml", &text, false).expect("valid manifests");
    assert_eq!(names(&documents), ["configmap/settings", "deployment.apps/web"]);
    assert_eq!(documents[1].source.index, 4);
    assert!(parse("empty.yaml", "", false).expect("empty file").is_empty());
    assert!(parse("empty.yaml", "---\n# nothing\n", false).expect("comment only").is_empty());
}

#[test]
fn malformed_yaml_names_the_file_line_and_column() {
    let text = format!("{CM}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: a: b\n");
    let err = parse("deploy.yaml", &text, false).expect_err("bad yaml");
    let line = err.to_string();
    assert!(line.starts_with("error parsing deploy.yaml: line 12 column "), "{line}");
    assert!(line.contains("mapping values are not allowed"), "{line}");
    assert!(!line.contains(" at line "), "location is not repeated: {line}");
}

#[test]
fn unknown_kinds_and_missing_type_fields_name_the_document() {
    let text = format!("{CM}---\napiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n");
    let err = parse("deploy.yaml", &text, false).expect_err("unknown kind");
    assert_eq!(
        err.to_string(),
        "deploy.yaml: document 2: unknown kind \"Widget\" in apiVersion \"example.com/v1\" (line 8)"
    );
    let err = parse("x.yaml", "kind: ConfigMap\nmetadata:\n  name: a\n", false).expect_err("no apiVersion");
    assert_eq!(err.to_string(), "x.yaml: document 1: apiVersion not set (line 1)");
    let err = parse("x.yaml", "apiVersion: v1\nkind: ConfigMap\n", false).expect_err("no name");
    assert!(err.to_string().contains("metadata.name is required"));
    let err = parse("x.yaml", "- a\n- b\n", false).expect_err("not a mapping");
    assert!(err.to_string().starts_with("x.yaml: document 1: expected a mapping"));
}

#[test]
fn json_files_may_hold_several_values_and_lists_expand() {
    let text = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}
{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}]}"#;
    let documents = parse("x.json", text, true).expect("valid json");
    assert_eq!(names(&documents), ["configmap/a", "secret/s"]);
    assert_eq!(documents[1].source.line, 2);
    let err = parse("x.json", "{\"a\": }", true).expect_err("bad json");
    assert!(err.to_string().starts_with("error parsing x.json: line 1 column 7: "), "{err}");
}

#[test]
fn a_directory_is_read_in_name_order_ignoring_other_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("b.yaml"), DEPLOY).expect("write");
    std::fs::write(dir.path().join("a.yml"), CM).expect("write");
    std::fs::write(dir.path().join("c.json"), r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"n"}}"#)
        .expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").expect("write");
    let documents = read(&[dir.path().display().to_string()]).expect("valid directory");
    assert_eq!(names(&documents), ["configmap/settings", "deployment.apps/web", "namespace/n"]);
    assert!(documents[0].source.file.ends_with("a.yml"));
}

#[test]
fn one_bad_file_fails_the_whole_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.yaml"), CM).expect("write");
    std::fs::write(dir.path().join("b.yaml"), "apiVersion: v1\nkind: Gizmo\nmetadata:\n  name: g\n").expect("write");
    assert!(matches!(read(&[dir.path().display().to_string()]), Err(ManifestError::UnknownKind { .. })));
    let missing = dir.path().join("missing.yaml").display().to_string();
    let err = read(std::slice::from_ref(&missing)).expect_err("missing file");
    assert!(err.to_string().starts_with(&format!("error: reading {missing}: ")));
}

#[test]
fn namespaces_come_from_the_document_then_the_flag_then_the_default() {
    let text = format!("{CM}---\n{DEPLOY}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n");
    let mut documents = parse("a.yaml", &text, false).expect("valid");
    documents[0].object["metadata"]["namespace"] = "own".into();
    assign_namespaces(&mut documents, "ctx", None).expect("no flag");
    assert_eq!(documents.iter().map(Document::namespace).collect::<Vec<_>>(), [Some("own"), Some("ctx"), None]);

    let mut documents = parse("a.yaml", &text, false).expect("valid");
    assign_namespaces(&mut documents, "ctx", Some("flag")).expect("flag");
    assert_eq!(documents[1].namespace(), Some("flag"));

    documents[0].object["metadata"]["namespace"] = "own".into();
    let err = assign_namespaces(&mut documents, "ctx", Some("flag")).expect_err("conflict");
    assert!(err.to_string().contains("\"own\" does not match the namespace \"flag\""), "{err}");
}
