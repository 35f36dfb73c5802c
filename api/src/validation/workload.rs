//! The controllers that own pod templates: Deployment, ReplicaSet, DaemonSet and StatefulSet keep
//! pods running and select them by label; Job runs them to completion; CronJob creates Jobs on a
//! schedule.

use serde_json::{Value, json};

use super::pod::{RestartRule, validate_pod_template};
use super::{Cause, field, str_field};
use crate::kinds::Kind;
use crate::selector::LabelSelector;

/// Longest CronJob name: its Jobs append an 11-character suffix and must stay DNS-1035 labels.
const CRON_JOB_NAME_MAX_LENGTH: usize = 52;

/// Deployment, ReplicaSet, DaemonSet and StatefulSet: a non-empty selector that selects the
/// template's own labels (or the controller would never see the pods it creates).
pub(super) fn validate_replicated(kind: &Kind, object: &Value, causes: &mut Vec<Cause>) {
    let spec = field(object, "spec");
    check_nonnegative(spec, "spec", "replicas", causes);
    let template = field(spec, "template");
    if let Some(selector) = validate_selector(kind, spec, causes) {
        let labels = template.pointer("/metadata/labels");
        if !selector.matches(labels.and_then(Value::as_object)) {
            let shown = labels.cloned().unwrap_or_else(|| json!({}));
            causes.push(Cause::invalid(
                "spec.template.metadata.labels",
                &shown,
                "`selector` does not match template `labels`",
            ));
        }
    }
    validate_pod_template(template, "spec.template", RestartRule::AlwaysOnly, causes);
}

/// The selector, when it is present, well formed and not empty.
fn validate_selector(kind: &Kind, spec: &Value, causes: &mut Vec<Cause>) -> Option<LabelSelector> {
    let Some(raw) = spec.get("selector").filter(|s| !s.is_null()) else {
        causes.push(Cause::required("spec.selector", ""));
        return None;
    };
    match LabelSelector::from_spec(raw) {
        Err(error) => {
            causes.push(Cause::invalid("spec.selector", raw, &error.to_string()));
            None
        }
        Ok(selector) if selector.is_empty() => {
            let message = format!("empty selector is invalid for {}", kind.singular);
            causes.push(Cause::invalid("spec.selector", raw, &message));
            None
        }
        Ok(selector) => Some(selector),
    }
}

pub(super) fn validate_job(object: &Value, causes: &mut Vec<Cause>) {
    validate_job_spec(field(object, "spec"), "spec", causes);
}

/// A Job spec at `path` (`spec`, or `spec.jobTemplate.spec` in a CronJob). The selector is left
/// alone: the server generates it from the Job's uid.
fn validate_job_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    for key in ["parallelism", "completions", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"] {
        check_nonnegative(spec, path, key, causes);
    }
    validate_pod_template(field(spec, "template"), &format!("{path}.template"), RestartRule::RunToCompletion, causes);
}

pub(super) fn validate_cron_job(object: &Value, causes: &mut Vec<Cause>) {
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    if name.len() > CRON_JOB_NAME_MAX_LENGTH {
        let message = format!("must be no more than {CRON_JOB_NAME_MAX_LENGTH} characters");
        causes.push(Cause::invalid("metadata.name", &Value::from(name), &message));
    }
    let spec = field(object, "spec");
    match str_field(spec, "schedule").unwrap_or("") {
        "" => causes.push(Cause::required("spec.schedule", "")),
        schedule => {
            if let Err(message) = check_schedule(schedule) {
                causes.push(Cause::invalid("spec.schedule", &Value::from(schedule), &message));
            }
        }
    }
    const POLICIES: &[&str] = &["Allow", "Forbid", "Replace"];
    if let Some(policy) = str_field(spec, "concurrencyPolicy").filter(|p| !p.is_empty() && !POLICIES.contains(p)) {
        causes.push(Cause::not_supported("spec.concurrencyPolicy", &Value::from(policy), POLICIES));
    }
    for key in ["startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
        check_nonnegative(spec, "spec", key, causes);
    }
    validate_job_spec(field(field(spec, "jobTemplate"), "spec"), "spec.jobTemplate.spec", causes);
}

/// The shape of a standard cron schedule: five fields or a descriptor, with the messages of the
/// parser Kubernetes uses. Field ranges are left to the CronJob controller.
fn check_schedule(schedule: &str) -> Result<(), String> {
    const DESCRIPTORS: &[&str] = &["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"];
    if schedule.starts_with("TZ=") || schedule.starts_with("CRON_TZ=") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".to_string());
    }
    if schedule.starts_with('@') {
        return if DESCRIPTORS.contains(&schedule) || schedule.starts_with("@every ") {
            Ok(())
        } else {
            Err(format!("unrecognized descriptor: {schedule}"))
        };
    }
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("expected exactly 5 fields, found {}: [{}]", fields.len(), fields.join(" ")));
    }
    Ok(())
}

fn check_nonnegative(spec: &Value, path: &str, key: &str, causes: &mut Vec<Cause>) {
    if let Some(value) = spec.get(key).and_then(Value::as_i64).filter(|v| *v < 0) {
        causes.push(Cause::invalid(format!("{path}.{key}"), &Value::from(value), "must be greater than or equal to 0"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds;

    fn deployment(selector: Value, labels: Value) -> Value {
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": selector,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "web", "image": "web:1"}]},
                },
            },
        })
    }

    fn check(kind_name: &str, object: &Value) -> Vec<String> {
        let kind = kinds::resolve(kind_name).expect("kind is registered");
        let mut causes = Vec::new();
        match kind.kind {
            "Job" => validate_job(object, &mut causes),
            "CronJob" => validate_cron_job(object, &mut causes),
            _ => validate_replicated(kind, object, &mut causes),
        }
        causes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_selector_must_select_the_template_labels() {
        // (selector, template labels, expected causes)
        for (selector, labels, want) in [
            (json!({"matchLabels": {"app": "web"}}), json!({"app": "web", "tier": "a"}), vec![]),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]}),
                json!({"app": "api"}),
                vec![],
            ),
            (
                json!({"matchLabels": {"app": "web"}}),
                json!({"app": "x"}),
                vec![
                    r#"spec.template.metadata.labels: Invalid value: {"app":"x"}: `selector` does not match template `labels`"#,
                ],
            ),
            (Value::Null, json!({"app": "x"}), vec!["spec.selector: Required value"]),
            (
                json!({}),
                json!({"app": "x"}),
                vec!["spec.selector: Invalid value: {}: empty selector is invalid for deployment"],
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "Near"}]}),
                json!({"app": "x"}),
                vec![
                    r#"spec.selector: Invalid value: {"matchExpressions":[{"key":"app","operator":"Near"}]}: "Near" is not a valid label selector operator"#,
                ],
            ),
        ] {
            assert_eq!(check("deploy", &deployment(selector.clone(), labels)), want, "{selector}");
        }
    }

    #[test]
    fn every_replicated_kind_requires_a_selector_and_an_always_restart_policy() {
        for kind_name in ["deploy", "rs", "ds", "sts"] {
            let mut object = deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "web"}));
            assert_eq!(check(kind_name, &object), Vec::<String>::new(), "{kind_name}");
            object["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
            object["spec"]["replicas"] = json!(-1);
            assert_eq!(
                check(kind_name, &object),
                [
                    "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                    r#"spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always""#,
                ],
                "{kind_name}"
            );
        }
    }

    #[test]
    fn jobs_need_a_run_to_completion_restart_policy() {
        let job = |policy: Value| json!({"spec": {"template": {"spec": {"restartPolicy": policy, "containers": [{"name": "a", "image": "i"}]}}}});
        assert_eq!(check("job", &job(json!("Never"))), Vec::<String>::new());
        assert_eq!(
            check("job", &job(Value::Null)),
            [r#"spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never""#]
        );
        assert_eq!(
            check("job", &job(json!("Always"))),
            [
                r#"spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: "OnFailure", "Never""#
            ]
        );
    }

    #[test]
    fn cron_jobs_need_a_schedule_and_a_valid_job_template() {
        let template = json!({"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "a", "image": "i"}]}}}});
        // (schedule, expected causes)
        for (schedule, want) in [
            ("*/5 * * * *", vec![]),
            ("@hourly", vec![]),
            ("@every 1h", vec![]),
            ("", vec!["spec.schedule: Required value"]),
            ("5 * *", vec![r#"spec.schedule: Invalid value: "5 * *": expected exactly 5 fields, found 3: [5 * *]"#]),
            ("@sometimes", vec![r#"spec.schedule: Invalid value: "@sometimes": unrecognized descriptor: @sometimes"#]),
        ] {
            let object =
                json!({"metadata": {"name": "nightly"}, "spec": {"schedule": schedule, "jobTemplate": template}});
            assert_eq!(check("cronjob", &object), want, "{schedule:?}");
        }
        let object =
            json!({"metadata": {"name": "nightly"}, "spec": {"schedule": "@daily", "jobTemplate": {"spec": {}}}});
        assert_eq!(
            check("cronjob", &object),
            [
                "spec.jobTemplate.spec.template.spec.containers: Required value",
                r#"spec.jobTemplate.spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never""#,
            ]
        );
    }

    #[test]
    fn cron_job_names_leave_room_for_the_job_suffix() {
        let object = json!({"metadata": {"name": "a".repeat(53)}, "spec": {"schedule": "@daily",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "a", "image": "i"}]}}}}}});
        assert_eq!(check("cronjob", &object).len(), 1);
    }
}
