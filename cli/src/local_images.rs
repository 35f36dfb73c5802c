//! `apply` of a manifest whose container image is a local path (`./hello.wasm`,
//! `samples/target/…/hello.wasm`): the file is pushed to the cluster registry as
//! `<file stem>:latest` and the image is rewritten to the pinned `<file stem>@sha256:…`, so a
//! rebuilt binary is a new digest and a changed pod template.
//!
//! Files are found and read before anything is sent ([`find`]); relative paths are tried against
//! the manifest's own directory first (so a manifest works from anywhere), then the working
//! directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use wasmkube_api::oci::{self, Reference};

use crate::manifest::Document;
use crate::push::{self, PushError};

/// One container image to push: where in which document, and the file's bytes.
pub struct LocalImage {
    document: usize,
    /// JSON pointer of the container's `image` field.
    pointer: String,
    file: PathBuf,
}

/// The JSON pointers of the pod specs inside an object of `kind`.
fn pod_spec_pointers(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &["/spec"],
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicationController" => {
            &["/spec/template/spec"]
        }
        "CronJob" => &["/spec/jobTemplate/spec/template/spec"],
        _ => &[],
    }
}

/// The distinct local files among `images`, in order of appearance.
pub fn files(images: &[LocalImage]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    for image in images {
        if !files.contains(&image.file) {
            files.push(image.file.clone());
        }
    }
    files
}

/// Every container image in `documents` that names a local file, with the file found.
pub fn find(documents: &[Document]) -> Result<Vec<LocalImage>, PushError> {
    let mut found = Vec::new();
    for (index, document) in documents.iter().enumerate() {
        for spec in pod_spec_pointers(document.kind.kind) {
            for list in ["initContainers", "containers"] {
                let Some(containers) = document.object.pointer(&format!("{spec}/{list}")).and_then(Value::as_array)
                else {
                    continue;
                };
                for (i, container) in containers.iter().enumerate() {
                    let Some(image) = container.get("image").and_then(Value::as_str) else { continue };
                    if !oci::is_local_path(image) {
                        continue;
                    }
                    let file = locate(image, &document.source.file).map_err(|tried| PushError::Read {
                        path: format!("{} (image of {}, looked for {tried})", image, document.source),
                        source: std::io::Error::from(std::io::ErrorKind::NotFound),
                    })?;
                    found.push(LocalImage { document: index, pointer: format!("{spec}/{list}/{i}/image"), file });
                }
            }
        }
    }
    Ok(found)
}

/// The file an image path names: absolute as is; relative against the manifest's directory, then
/// the working directory. On failure, the places tried.
fn locate(image: &str, manifest: &str) -> Result<PathBuf, String> {
    let path = Path::new(image);
    if path.is_absolute() {
        return if path.is_file() { Ok(path.to_path_buf()) } else { Err(image.to_string()) };
    }
    let mut tried = Vec::new();
    if manifest != "STDIN"
        && let Some(dir) = Path::new(manifest).parent()
    {
        tried.push(dir.join(path));
    }
    tried.push(path.to_path_buf());
    tried
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and "))
}

/// The repository a file is pushed to: its stem, lowercased, with anything the registry
/// grammar does not allow turned into `-`.
pub fn repository_for(file: &Path) -> String {
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("wasm").to_ascii_lowercase();
    let cleaned: String =
        stem.chars().map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' }).collect();
    let trimmed = cleaned.trim_matches('-').to_string();
    if oci::valid_repository(&trimmed) { trimmed } else { "wasm".to_string() }
}

/// Pushes each file once and rewrites the images to their pinned references. Returns one note
/// per pushed file (`pushed PATH as NAME@sha256:…`).
pub async fn push_and_rewrite(
    client: &kube::Client,
    documents: &mut [Document],
    images: Vec<LocalImage>,
) -> Result<Vec<String>, PushError> {
    let mut pinned: HashMap<PathBuf, String> = HashMap::new();
    let mut notes = Vec::new();
    for image in images {
        let reference = match pinned.get(&image.file) {
            Some(reference) => reference.clone(),
            None => {
                let wasm = push::read_wasm(&image.file)?;
                let target = Reference {
                    registry: None,
                    repository: repository_for(&image.file),
                    tag: Some(oci::DEFAULT_TAG.into()),
                    digest: None,
                };
                let pushed = push::push(client, &wasm, &target).await?;
                notes.push(format!("pushed {} as {}", image.file.display(), pushed.pinned));
                pinned.insert(image.file.clone(), pushed.pinned.clone());
                pushed.pinned
            }
        };
        if let Some(field) = documents[image.document].object.pointer_mut(&image.pointer) {
            *field = Value::String(reference);
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_come_from_file_stems() {
        for (file, want) in [
            ("target/hello.wasm", "hello"),
            ("My_Service.wasm", "my-service"),
            ("/x/frontend-v2.wasm", "frontend-v2"),
            ("___.wasm", "wasm"),
        ] {
            assert_eq!(repository_for(Path::new(file)), want, "{file}");
        }
    }

    #[test]
    fn relative_paths_are_tried_beside_the_manifest_then_in_the_working_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("app.wasm"), b"\0asm").expect("write");
        let manifest = dir.path().join("app.yaml");
        let found = locate("app.wasm", &manifest.display().to_string()).expect("found beside the manifest");
        assert_eq!(found, dir.path().join("app.wasm"));
        let err = locate("missing.wasm", &manifest.display().to_string()).expect_err("missing");
        assert!(err.ends_with(" and missing.wasm"), "beside the manifest, then here: {err}");
        assert!(locate("missing.wasm", "STDIN").is_err());
    }
}
