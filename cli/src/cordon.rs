//! `cordon NODE` / `uncordon NODE`: mark a node unschedulable (`spec.unschedulable`) or
//! schedulable again. The scheduler's NodeUnschedulable filter then keeps new pods off it; pods
//! already there keep running (`drain` moves them).

use std::io::Write;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::error::{Error, render};
use crate::{ClientOptions, config};

#[derive(Debug, clap::Args)]
pub struct CordonArgs {
    /// The node (`NAME` or `node/NAME`).
    pub node: String,
}

/// `NAME` from `NAME`, `node/NAME` or `nodes/NAME`.
pub fn node_name(arg: &str) -> &str {
    arg.strip_prefix("node/").or_else(|| arg.strip_prefix("nodes/")).unwrap_or(arg)
}

pub async fn run(args: &CordonArgs, desired: bool, options: &ClientOptions, out: &mut impl Write) -> Result<(), Error> {
    let cluster = config::connect(options).await?;
    set_unschedulable(cluster.client, node_name(&args.node), desired, out).await
}

/// The merge patch for `spec.unschedulable`: `true`, or removing the field (what kubectl's
/// strategic patch does for `false`, which is the field's zero value).
pub fn cordon_patch(desired: bool) -> Value {
    let value = if desired { Value::Bool(true) } else { Value::Null };
    json!({"spec": {"unschedulable": value}})
}

/// Cordons (`desired` true) or uncordons a node, printing `node/NAME cordoned` or
/// `node/NAME already cordoned` (and the same for `uncordoned`).
pub async fn set_unschedulable(
    client: kube::Client,
    name: &str,
    desired: bool,
    out: &mut impl Write,
) -> Result<(), Error> {
    let verb = if desired { "cordon" } else { "uncordon" };
    let api: Api<Node> = Api::all(client);
    let node = api.get(name).await.map_err(|e| Error::request(&e))?;
    let current = node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    if current == desired {
        writeln!(out, "node/{name} already {verb}ed")?;
        return Ok(());
    }
    // kubectl prints this and carries on with exit status 0; a failed cordon should fail the
    // command (and stop a drain), so here it is the command's error.
    api.patch(name, &PatchParams::default(), &Patch::Merge(&cordon_patch(desired)))
        .await
        .map_err(|e| Error::Request(format!("error: unable to {verb} node \"{name}\": {}", render(&e))))?;
    writeln!(out, "node/{name} {verb}ed")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cordoning_sets_the_field_and_uncordoning_removes_it() {
        assert_eq!(cordon_patch(true), json!({"spec": {"unschedulable": true}}));
        assert_eq!(cordon_patch(false), json!({"spec": {"unschedulable": null}}));
    }

    #[test]
    fn nodes_may_be_named_with_their_type() {
        for arg in ["n1", "node/n1", "nodes/n1"] {
            assert_eq!(node_name(arg), "n1");
        }
    }
}
