//! A pod template as `rollout history --revision N` prints it: kubectl's `DescribePodTemplate`,
//! which writes tab-separated `Key:\tvalue` lines straight out (no column alignment), so the tabs
//! are kept here too. Pure. Covers the fields wasmkube runs; probes, resources and volume details
//! are left to `describe`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, PodTemplateSpec};

/// Annotations kubectl's describers never show.
const HIDDEN_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];

/// The `Pod Template:` block, ending with a newline.
pub fn describe(template: &PodTemplateSpec) -> String {
    let mut text = String::from("Pod Template:\n");
    let meta = template.metadata.clone().unwrap_or_default();
    text.push_str(&map_lines("  Labels", meta.labels.as_ref(), "=", &[]));
    if meta.annotations.as_ref().is_some_and(|a| !a.is_empty()) {
        text.push_str(&map_lines("  Annotations", meta.annotations.as_ref(), ": ", HIDDEN_ANNOTATIONS));
    }
    let spec = template.spec.clone().unwrap_or_default();
    if let Some(account) = spec.service_account_name.as_deref().filter(|a| !a.is_empty()) {
        text.push_str(&format!("  Service Account:\t{account}\n"));
    }
    if let Some(init) = spec.init_containers.as_ref().filter(|c| !c.is_empty()) {
        containers(&mut text, "Init Containers", init);
    }
    containers(&mut text, "Containers", &spec.containers);
    match spec.volumes.as_ref().filter(|v| !v.is_empty()) {
        None => text.push_str("  Volumes:\t<none>\n"),
        Some(volumes) => {
            text.push_str("  Volumes:\n");
            for volume in volumes {
                text.push_str(&format!("   {}:\n", volume.name));
            }
        }
    }
    text.push_str(&map_lines("  Node-Selectors", spec.node_selector.as_ref(), "=", &[]));
    let tolerations: Vec<String> = spec.tolerations.iter().flatten().map(toleration).collect();
    text.push_str(&multiline("  Tolerations", &tolerations));
    text
}

/// `Title:\tfirst\n\tsecond\n...` over sorted keys, or `Title:\t<none>`.
fn map_lines(title: &str, map: Option<&BTreeMap<String, String>>, separator: &str, hidden: &[&str]) -> String {
    let lines: Vec<String> = map
        .into_iter()
        .flatten()
        .filter(|(k, _)| !hidden.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}{separator}{}", v.trim_end_matches('\n')))
        .collect();
    multiline(title, &lines)
}

fn multiline(title: &str, lines: &[String]) -> String {
    if lines.is_empty() {
        return format!("{title}:\t<none>\n");
    }
    let mut text = format!("{title}:\t");
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            text.push('\t');
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}

fn toleration(t: &k8s_openapi::api::core::v1::Toleration) -> String {
    let mut text = t.key.clone().unwrap_or_default();
    match (t.operator.as_deref(), t.value.as_deref()) {
        (Some("Exists"), _) | (_, None | Some("")) => {}
        (_, Some(value)) => text.push_str(&format!("={value}")),
    }
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        text.push_str(&format!(":{effect}"));
    }
    if let Some(seconds) = t.toleration_seconds {
        text.push_str(&format!(" for {seconds}s"));
    }
    text
}

fn containers(text: &mut String, label: &str, containers: &[Container]) {
    let none = if containers.is_empty() { " <none>" } else { "" };
    text.push_str(&format!("  {label}:{none}\n"));
    for c in containers {
        text.push_str(&format!("   {}:\n", c.name));
        text.push_str(&format!("    Image:\t{}\n", c.image.as_deref().unwrap_or_default()));
        let ports = c.ports.as_deref().unwrap_or_default();
        text.push_str(&ports_line("Port", &port_list(ports, |p| p.container_port)));
        text.push_str(&ports_line("Host Port", &port_list(ports, |p| p.host_port.unwrap_or(0))));
        for (title, words) in [("Command", &c.command), ("Args", &c.args)] {
            if let Some(words) = words.as_ref().filter(|w| !w.is_empty()) {
                text.push_str(&format!("    {title}:\n"));
                for line in words.iter().flat_map(|w| w.split('\n')) {
                    text.push_str(&format!("      {line}\n"));
                }
            }
        }
        environment(text, c);
        let mounts = c.volume_mounts.as_deref().unwrap_or_default();
        text.push_str(if mounts.is_empty() { "    Mounts:\t<none>\n" } else { "    Mounts:\n" });
        for m in mounts {
            let mode = if m.read_only.unwrap_or(false) { "ro" } else { "rw" };
            text.push_str(&format!("      {} from {} ({mode})\n", m.mount_path, m.name));
        }
    }
}

/// `8080/TCP (http), 9090/TCP`: a port, its protocol and its name.
fn port_list(ports: &[ContainerPort], number: fn(&ContainerPort) -> i32) -> String {
    let each = ports.iter().map(|p| {
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        match p.name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => format!("{}/{protocol} ({name})", number(p)),
            None => format!("{}/{protocol}", number(p)),
        }
    });
    each.collect::<Vec<_>>().join(", ")
}

/// `Port:` for one (or none), `Ports:` for several, as kubectl decides by the comma.
fn ports_line(title: &str, list: &str) -> String {
    match list {
        "" => format!("    {title}:\t<none>\n"),
        l if l.contains(',') => format!("    {title}s:\t{l}\n"),
        l => format!("    {title}:\t{l}\n"),
    }
}

fn environment(text: &mut String, c: &Container) {
    let env = c.env.as_deref().unwrap_or_default();
    text.push_str(if env.is_empty() { "    Environment:\t<none>\n" } else { "    Environment:\n" });
    for var in env {
        let from = var.value_from.as_ref();
        let value = match (from.and_then(|f| f.field_ref.as_ref()), from.and_then(|f| f.config_map_key_ref.as_ref())) {
            (Some(field), _) => format!(" ({}:{})", field.api_version.as_deref().unwrap_or("v1"), field.field_path),
            (None, Some(key)) => format!(
                "<set to the key '{}' of config map '{}'>\tOptional: {}",
                key.key,
                key.name,
                key.optional.unwrap_or(false)
            ),
            (None, None) => match from.and_then(|f| f.secret_key_ref.as_ref()) {
                Some(key) => format!(
                    "<set to the key '{}' in secret '{}'>\tOptional: {}",
                    key.key,
                    key.name,
                    key.optional.unwrap_or(false)
                ),
                None => var.value.clone().unwrap_or_default().replace('\n', "\n      \t"),
            },
        };
        text.push_str(&format!("      {}:\t{value}\n", var.name));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_template_reads_like_kubectls_pod_template_block() {
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web", "pod-template-hash": "abc"},
                "annotations": {"kubernetes.io/change-cause": "v2"}},
            "spec": {"containers": [{"name": "web", "image": "hello:2", "args": ["serve"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "env": [{"name": "GREETING", "value": "hi"}]}]},
        }))
        .expect("template");
        let want = "Pod Template:\n\
            \x20 Labels:\tapp=web\n\
            \tpod-template-hash=abc\n\
            \x20 Annotations:\tkubernetes.io/change-cause: v2\n\
            \x20 Containers:\n\
            \x20  web:\n\
            \x20   Image:\thello:2\n\
            \x20   Port:\t8080/TCP (http)\n\
            \x20   Host Port:\t0/TCP (http)\n\
            \x20   Args:\n\
            \x20     serve\n\
            \x20   Environment:\n\
            \x20     GREETING:\thi\n\
            \x20   Mounts:\t<none>\n\
            \x20 Volumes:\t<none>\n\
            \x20 Node-Selectors:\t<none>\n\
            \x20 Tolerations:\t<none>\n";
        assert_eq!(describe(&template), want);
    }
}
