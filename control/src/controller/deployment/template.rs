//! The pod-template side of a Deployment: the `pod-template-hash` that names and labels its
//! ReplicaSets, whether a ReplicaSet runs the Deployment's current template, and the annotations
//! the controller keeps on ReplicaSets (revision, revision history, desired and max replicas).
//! Pure: no I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// The label that tells a Deployment's ReplicaSets (and their pods) apart.
pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Annotations a Deployment does not pass on to its ReplicaSets: they describe the Deployment
/// itself, or the controller owns them on the ReplicaSet.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Kubernetes keeps `revision-history` under this many characters, dropping the oldest entries.
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// The alphabet of Kubernetes' `rand.SafeEncodeString`: no vowels (no words), no look-alikes.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1a, 32 bits: the hash Kubernetes uses for pod templates.
pub fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// Maps each character onto the safe alphabet, as `rand.SafeEncodeString` does.
fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char).collect()
}

/// The `pod-template-hash` of a template: FNV-32a over the template, then the collision count
/// (8 bytes, the count little-endian in the first four, as Kubernetes writes it), the decimal
/// value mapped onto the safe alphabet. Kubernetes hashes Go's struct dump; we hash the canonical
/// JSON of the typed template, which is just as deterministic: k8s-openapi is pinned and writes
/// fields in declaration order and maps sorted, so the same template gives the same name after
/// a restart.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(template).expect("a typed pod template always serialises");
    if let Some(count) = collision_count {
        let mut extra = [0u8; 8];
        extra[..4].copy_from_slice(&(count as u32).to_le_bytes());
        bytes.extend_from_slice(&extra);
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// The template without the hash label, with an empty label map counted as none (Kubernetes
/// compares semantically, where nil and empty maps are equal).
fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    if let Some(meta) = t.metadata.as_mut() {
        if let Some(labels) = meta.labels.as_mut() {
            labels.remove(HASH_LABEL);
        }
        if meta.labels.as_ref().is_some_and(BTreeMap::is_empty) {
            meta.labels = None;
        }
    }
    if t.metadata.as_ref().is_some_and(|m| *m == Default::default()) {
        t.metadata = None;
    }
    t
}

/// Whether two templates are the same apart from `pod-template-hash` (Kubernetes'
/// `EqualIgnoreHash`): how the Deployment finds the ReplicaSet running its current template.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// The annotation a pod template opts in to in-place image swaps with (`"true"`).
pub const HOT_SWAP: &str = "wasmkube.dev/hot-swap";

/// Whether the template opted in to in-place image swaps.
pub fn hot_swap(template: &PodTemplateSpec) -> bool {
    opts_in(template.metadata.as_ref())
}

/// Whether a pod's (or template's) metadata opts in to in-place image swaps.
pub fn opts_in(metadata: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>) -> bool {
    metadata.and_then(|m| m.annotations.as_ref()).and_then(|a| a.get(HOT_SWAP)).is_some_and(|v| v == "true")
}

/// The containers whose image `to` changes from `from`, when that is all that differs (hash
/// label aside): `(container name, new image)`. `None` when anything else changed too, or nothing.
pub fn image_changes(from: &PodTemplateSpec, to: &PodTemplateSpec) -> Option<Vec<(String, String)>> {
    let (mut a, mut b) = (without_hash(from), without_hash(to));
    let mut changes = Vec::new();
    let containers =
        |t: &mut PodTemplateSpec| t.spec.as_mut().map(|s| std::mem::take(&mut s.containers)).unwrap_or_default();
    let (mut old, new) = (containers(&mut a), containers(&mut b));
    if a != b || old.len() != new.len() {
        return None;
    }
    for (o, n) in old.iter_mut().zip(&new) {
        if o.image != n.image {
            changes.push((n.name.clone(), n.image.clone().unwrap_or_default()));
            o.image = n.image.clone();
        }
    }
    (old == new && !changes.is_empty()).then_some(changes)
}

/// A `revision` annotation: 0 when absent, `None` when it is not a number.
pub fn revision(annotations: Option<&BTreeMap<String, String>>) -> Option<i64> {
    match annotations.and_then(|a| a.get(REVISION)) {
        None => Some(0),
        Some(v) => v.parse().ok(),
    }
}

/// Copies the Deployment's annotations onto its new ReplicaSet (so `kubernetes.io/change-cause`
/// shows in `kubectl rollout history`); true if the ReplicaSet's annotations changed.
fn copy_deployment_annotations(deployment: &BTreeMap<String, String>, rs: &mut BTreeMap<String, String>) -> bool {
    let mut changed = false;
    for (k, v) in deployment {
        if NOT_COPIED.contains(&k.as_str()) || rs.get(k) == Some(v) {
            continue;
        }
        rs.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// Sets `desired-replicas` and `max-replicas`; true if either changed.
pub fn set_replicas_annotations(rs: &mut BTreeMap<String, String>, desired: i32, max: i32) -> bool {
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if rs.get(key) != Some(&value) {
            rs.insert(key.to_string(), value);
            changed = true;
        }
    }
    changed
}

/// Whether `desired-replicas` or `max-replicas` differ from these values.
pub fn replicas_annotations_need_update(rs: Option<&BTreeMap<String, String>>, desired: i32, max: i32) -> bool {
    let get = |k: &str| rs.and_then(|a| a.get(k)).cloned();
    get(DESIRED_REPLICAS) != Some(desired.to_string()) || get(MAX_REPLICAS) != Some(max.to_string())
}

/// Kubernetes' `SetNewReplicaSetAnnotations`: copies the Deployment's annotations, raises the
/// revision to `new_revision` when it is lower (a rollback makes an old ReplicaSet current again:
/// its previous revision goes to `revision-history`), and for a ReplicaSet about to be created sets
/// the replicas annotations. True if the annotations changed.
pub fn set_new_rs_annotations(
    deployment: &BTreeMap<String, String>,
    rs: &mut BTreeMap<String, String>,
    new_revision: i64,
    exists: bool,
    (desired, max): (i32, i32),
) -> bool {
    let mut changed = copy_deployment_annotations(deployment, rs);
    let old = rs.get(REVISION).cloned();
    let old_revision = match old.as_deref() {
        None | Some("") => 0,
        Some(v) => match v.parse::<i64>() {
            Ok(n) => n,
            // Someone wrote garbage: leave the revision alone rather than guess.
            Err(_) => return false,
        },
    };
    if old_revision < new_revision {
        rs.insert(REVISION.to_string(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            push_revision_history(rs, &old);
        }
    }
    if !exists && set_replicas_annotations(rs, desired, max) {
        changed = true;
    }
    changed
}

/// Appends `old` to `revision-history`, dropping the oldest entries to stay under the limit.
fn push_revision_history(rs: &mut BTreeMap<String, String>, old: &str) {
    let history = rs.get(REVISION_HISTORY).cloned().unwrap_or_default();
    if history.is_empty() {
        rs.insert(REVISION_HISTORY.to_string(), old.to_string());
        return;
    }
    let entries: Vec<&str> = history.split(',').collect();
    let mut total = history.len() + old.len() + 1;
    let mut start = 0;
    while total > MAX_REVISION_HISTORY_CHARS && start < entries.len() {
        total -= entries[start].len() + 1;
        start += 1;
    }
    if total <= MAX_REVISION_HISTORY_CHARS {
        let mut kept: Vec<&str> = entries[start..].to_vec();
        kept.push(old);
        rs.insert(REVISION_HISTORY.to_string(), kept.join(","));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(labels: serde_json::Value, image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": image}]}}))
        .expect("template")
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn fnv32a_matches_the_reference_vectors() {
        for (input, want) in [("", 0x811c_9dc5), ("a", 0xe40c_292c), ("foobar", 0xbf9c_f968)] {
            assert_eq!(fnv32a(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn the_hash_is_stable_label_safe_and_changes_with_template_and_collisions() {
        let web = template(json!({"app": "web"}), "web:1");
        let hash = pod_template_hash(&web, None);
        assert_eq!(hash, pod_template_hash(&web.clone(), None), "deterministic");
        assert!(!hash.is_empty() && hash.len() <= 10, "{hash}");
        assert!(hash.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{hash}");
        assert_ne!(hash, pod_template_hash(&template(json!({"app": "web"}), "web:2"), None));
        assert_ne!(hash, pod_template_hash(&web, Some(1)));
        assert_ne!(pod_template_hash(&web, Some(1)), pod_template_hash(&web, Some(2)));
    }

    #[test]
    fn image_changes_are_found_only_when_they_are_the_whole_difference() {
        let a = template(json!({"app": "web", HASH_LABEL: "abc"}), "web:1");
        let b = template(json!({"app": "web"}), "web:2");
        assert_eq!(image_changes(&a, &b), Some(vec![("app".to_string(), "web:2".to_string())]));
        assert_eq!(image_changes(&a, &a), None, "nothing changed");
        let relabelled = template(json!({"app": "other"}), "web:2");
        assert_eq!(image_changes(&a, &relabelled), None, "labels changed too");
    }

    #[test]
    fn templates_are_compared_without_the_hash_label() {
        // (a labels, b labels, images equal, want)
        for (a, b, same_image, want) in [
            (json!({"app": "web"}), json!({"app": "web", HASH_LABEL: "abc"}), true, true),
            (json!({HASH_LABEL: "x"}), json!({}), true, true),
            (json!({"app": "web"}), json!({"app": "api", HASH_LABEL: "abc"}), true, false),
            (json!({"app": "web"}), json!({"app": "web"}), false, false),
        ] {
            let ta = template(a.clone(), "web:1");
            let tb = template(b.clone(), if same_image { "web:1" } else { "web:2" });
            assert_eq!(equal_ignore_hash(&ta, &tb), want, "{a} vs {b}");
        }
    }

    #[test]
    fn new_replica_set_annotations_follow_kubernetes() {
        let deployment = map(&[
            ("kubernetes.io/change-cause", "v2"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
            (REVISION, "7"),
        ]);
        // A ReplicaSet about to be created: revision, replicas annotations, copied change-cause.
        let mut fresh = BTreeMap::new();
        assert!(set_new_rs_annotations(&deployment, &mut fresh, 3, false, (4, 5)));
        assert_eq!(
            fresh,
            map(&[(REVISION, "3"), (DESIRED_REPLICAS, "4"), (MAX_REPLICAS, "5"), ("kubernetes.io/change-cause", "v2")])
        );
        // Rolled back to: the old revision moves to the history.
        let mut old = map(&[(REVISION, "1"), ("kubernetes.io/change-cause", "v2")]);
        assert!(set_new_rs_annotations(&deployment, &mut old, 3, true, (4, 5)));
        assert_eq!(old.get(REVISION).map(String::as_str), Some("3"));
        assert_eq!(old.get(REVISION_HISTORY).map(String::as_str), Some("1"));
        assert!(!old.contains_key(DESIRED_REPLICAS), "existing sets keep their replicas annotations");
        let mut again = old.clone();
        again.insert(REVISION.into(), "3".into());
        assert!(!set_new_rs_annotations(&deployment, &mut again, 3, true, (4, 5)), "nothing to change");
        assert!(set_new_rs_annotations(&deployment, &mut again, 5, true, (4, 5)));
        assert_eq!(again.get(REVISION_HISTORY).map(String::as_str), Some("1,3"));
        // A higher revision is never lowered.
        let mut ahead = map(&[(REVISION, "9"), ("kubernetes.io/change-cause", "v2")]);
        assert!(!set_new_rs_annotations(&deployment, &mut ahead, 3, true, (4, 5)));
        assert_eq!(ahead.get(REVISION).map(String::as_str), Some("9"));
    }

    #[test]
    fn revision_history_drops_the_oldest_entries_past_the_limit() {
        let long = vec!["12345"; 333].join(","); // 1997 characters
        let mut rs = map(&[(REVISION_HISTORY, long.as_str())]);
        push_revision_history(&mut rs, "99");
        let history = rs.get(REVISION_HISTORY).cloned().unwrap_or_default();
        assert!(history.len() <= MAX_REVISION_HISTORY_CHARS, "{}", history.len());
        assert!(history.ends_with(",99"));
    }

    #[test]
    fn revisions_parse_with_absent_as_zero() {
        assert_eq!(revision(None), Some(0));
        assert_eq!(revision(Some(&map(&[(REVISION, "4")]))), Some(4));
        assert_eq!(revision(Some(&map(&[(REVISION, "x")]))), None);
    }
}
