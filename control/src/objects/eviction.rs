//! `pods/{name}/eviction`: a delete that respects PodDisruptionBudgets, as kube-apiserver's
//! eviction subresource does (what `kubectl drain` uses).
//!
//! A pod that is not running (Pending, finished) or already being deleted is deleted at once.
//! Otherwise the one budget selecting it decides. With an allowance left
//! (`status.disruptionsAllowed > 0`) the eviction spends one: it decrements the budget's status
//! and records the pod in `status.disruptedPods` in a write guarded by the budget's
//! resourceVersion, and only then deletes the pod. Without one it answers 429 TooManyRequests,
//! which clients retry. A pod that is not Ready may go while the budget is otherwise met, without
//! spending an allowance (the default `IfHealthyBudget` policy), or whenever the budget says
//! `unhealthyPodEvictionPolicy: AlwaysAllow`.

use jiff::Timestamp;
use serde_json::{Value, json};
use wasmkube_api::selector::LabelSelector;

use super::{DeleteOptions, ListOptions, Objects, Subresource, Target, WriteOptions};
use crate::controller::disruption::{budgets_kind, is_ready};
use crate::status::ApiError;

/// How often a lost race on the budget's status is retried before the client is told to retry.
const ATTEMPTS: usize = 5;

const REFUSED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

impl Objects {
    /// Evicts the pod `target` names; `eviction` is the policy/v1 Eviction body.
    pub async fn evict(&self, target: &Target, eviction: &Value, opts: &WriteOptions) -> Result<(), ApiError> {
        let name = target.name.clone().unwrap_or_default();
        if let Some(named) = eviction.pointer("/metadata/name").and_then(Value::as_str)
            && !named.is_empty()
            && named != name
        {
            return Err(ApiError::BadRequest(format!(
                "name in URL does not match name in Eviction object: {name} != {named}"
            )));
        }
        let mut delete: DeleteOptions = match eviction.get("deleteOptions") {
            None | Some(Value::Null) => DeleteOptions::default(),
            Some(options) => serde_json::from_value(options.clone())
                .map_err(|e| ApiError::BadRequest(format!("deleteOptions: {e}")))?,
        };
        if opts.dry_run && !delete.dry_run.iter().any(|d| d == "All") {
            delete.dry_run.push("All".to_string());
        }
        for _ in 0..ATTEMPTS {
            let pod = self.get(target).await?;
            // Delete exactly the pod the decision was made on.
            let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
            let mut exact = delete.clone();
            let preconditions = exact.preconditions.get_or_insert_with(Default::default);
            preconditions.uid.get_or_insert(uid);
            match self.spend_budget(target, &pod, opts.dry_run).await? {
                Spent::Yes => {}
                Spent::Raced => continue,
            }
            return match self.delete(target, &exact).await {
                Ok(_) => Ok(()),
                // Deleted meanwhile: what the eviction wanted.
                Err(ApiError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            };
        }
        Err(ApiError::TooManyRequests {
            message: REFUSED.to_string(),
            causes: vec![("DisruptionBudget".into(), "the disruption budget changed meanwhile; try again".into())],
        })
    }

    /// Checks the pod's budget and spends an allowance when the pod is a healthy one.
    async fn spend_budget(&self, target: &Target, pod: &Value, dry_run: bool) -> Result<Spent, ApiError> {
        let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending");
        if pod.pointer("/metadata/deletionTimestamp").is_some() || matches!(phase, "Pending" | "Succeeded" | "Failed") {
            return Ok(Spent::Yes);
        }
        let namespace = target.namespace.clone();
        let all = Target { kind: budgets_kind(), namespace: namespace.clone(), name: None };
        let listed = self.list(&all, &ListOptions::default()).await?;
        let budgets: Vec<&Value> = listed
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|pdb| {
                LabelSelector::from_spec(pdb.pointer("/spec/selector").unwrap_or(&Value::Null))
                    .is_ok_and(|s| s.matches_object(pod))
            })
            .collect();
        let pdb = match budgets.as_slice() {
            [] => return Ok(Spent::Yes),
            [one] => *one,
            _ => {
                return Err(ApiError::Internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
                        .to_string(),
                ));
            }
        };
        let pdb_name = wasmkube_api::meta::name(pdb).to_string();
        let number = |field: &str| pdb.pointer(&format!("/status/{field}")).and_then(Value::as_i64).unwrap_or(0);
        let refused = |cause: String| ApiError::TooManyRequests {
            message: REFUSED.to_string(),
            causes: vec![("DisruptionBudget".to_string(), cause)],
        };
        let generation = pdb.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        if pdb.pointer("/status/observedGeneration").and_then(Value::as_i64).unwrap_or(0) < generation {
            return Err(refused(format!("The disruption budget {pdb_name} is still being processed by the server.")));
        }
        if !is_ready(pod) {
            let policy = pdb.pointer("/spec/unhealthyPodEvictionPolicy").and_then(Value::as_str);
            let (healthy, desired) = (number("currentHealthy"), number("desiredHealthy"));
            if policy == Some("AlwaysAllow") || (healthy >= desired && desired > 0) {
                return Ok(Spent::Yes);
            }
        }
        let allowed = number("disruptionsAllowed");
        if allowed <= 0 {
            return Err(refused(format!(
                "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                number("desiredHealthy"),
                number("currentHealthy")
            )));
        }
        if dry_run {
            return Ok(Spent::Yes);
        }
        let mut spent = pdb.clone();
        spent["status"]["disruptionsAllowed"] = json!(allowed - 1);
        let pod_name = target.name.clone().unwrap_or_default();
        let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        match spent["status"].get_mut("disruptedPods").and_then(Value::as_object_mut) {
            Some(disrupted) => {
                disrupted.insert(pod_name, json!(now));
            }
            None => spent["status"]["disruptedPods"] = json!({ pod_name: now }),
        }
        let budget = Target { kind: budgets_kind(), namespace, name: Some(pdb_name) };
        // `spent` carries the resourceVersion read: a concurrent eviction or status pass makes
        // this a conflict, and the whole decision is taken again on fresh state.
        match self.update(&budget, spent, Subresource::Status, &WriteOptions::default()).await {
            Ok(_) => Ok(Spent::Yes),
            Err(ApiError::Conflict { .. }) => Ok(Spent::Raced),
            Err(e) => Err(e),
        }
    }
}

enum Spent {
    /// The pod may go now.
    Yes,
    /// The budget changed under the decision: decide again.
    Raced,
}
