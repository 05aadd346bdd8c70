//! Node IPAM: every node gets a pod subnet (`spec.podCIDR`, a /24 of the
//! server's `--cluster-cidr`, the lowest one free), which its agent's CNI
//! hands out addresses from. A podCIDR once set is never changed.

use super::Context;
use super::objects::{self, name, str_at};
use super::queue::{self, Action, Key};
use crate::server::error::ApiError;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NODES: (&str, &str, &str) = ("", "v1", "nodes");
/// The default of the server's `--cluster-cidr`.
pub const CLUSTER_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 42, 0, 0), 16);
/// Upstream's `--node-cidr-mask-size` for IPv4.
pub const NODE_MASK: u8 = 24;

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    queue::run(ctx, shutdown, "nodeipam", NODES, Duration::from_secs(60), reconcile).await;
}

/// Parses `a.b.c.d/len`.
fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = text.split_once('/')?;
    Some((addr.parse().ok()?, len.parse().ok()?))
}

/// The lowest `/mask` subnet of `cluster` that none of `used` takes.
pub fn allocate(cluster: (Ipv4Addr, u8), mask: u8, used: &BTreeSet<Ipv4Addr>) -> Option<String> {
    let (base, prefix) = cluster;
    if mask < prefix || mask > 32 {
        return None;
    }
    let count = 1u64 << (mask - prefix);
    let step = 1u64 << (32 - mask);
    (0..count)
        .map(|i| Ipv4Addr::from((u64::from(u32::from(base)) + i * step) as u32))
        .find(|subnet| !used.contains(subnet))
        .map(|subnet| format!("{subnet}/{mask}"))
}

async fn reconcile(ctx: Context, (_, node_name): Key) -> Result<Action, ApiError> {
    let Some(node) = objects::get(&ctx, NODES, "", &node_name).await? else { return Ok(Action::Done) };
    if !str_at(&node, "/spec/podCIDR").is_empty() {
        return Ok(Action::Done);
    }
    let nodes = objects::list(&ctx, NODES, None).await?;
    let used: BTreeSet<Ipv4Addr> = nodes
        .iter()
        .flat_map(|n| {
            let mut cidrs: Vec<String> = vec![str_at(n, "/spec/podCIDR").to_string()];
            cidrs.extend(
                n.pointer("/spec/podCIDRs")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string),
            );
            cidrs
        })
        .filter_map(|c| parse_cidr(&c).map(|(addr, _)| addr))
        .collect();
    let Some(cidr) = allocate((ctx.cluster_cidr.addr, ctx.cluster_cidr.prefix), NODE_MASK, &used) else {
        tracing::warn!(node = %node_name, "no pod subnet left in the cluster CIDR");
        return Ok(Action::RequeueAfter(Duration::from_secs(60)));
    };
    tracing::info!(node = %name(&node), pod_cidr = %cidr, "allocated a pod subnet");
    let path = objects::path(&ctx, NODES, None, Some(&node_name), None)?;
    // The resourceVersion makes two allocations at once conflict instead of overlapping.
    let patch = json!({"metadata": {"resourceVersion": str_at(&node, "/metadata/resourceVersion")},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    objects::ignore_gone(ctx.client.merge_patch(&path, patch).await)?;
    Ok(Action::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_the_lowest_free_subnet() {
        let mut used = BTreeSet::new();
        assert_eq!(allocate(CLUSTER_CIDR, 24, &used), Some("10.42.0.0/24".into()));
        used.insert(Ipv4Addr::new(10, 42, 0, 0));
        used.insert(Ipv4Addr::new(10, 42, 2, 0));
        assert_eq!(allocate(CLUSTER_CIDR, 24, &used), Some("10.42.1.0/24".into()));
        let tiny = (Ipv4Addr::new(10, 42, 0, 0), 23);
        used.insert(Ipv4Addr::new(10, 42, 1, 0));
        assert_eq!(allocate(tiny, 24, &used), None);
        assert_eq!(parse_cidr("10.42.3.0/24"), Some((Ipv4Addr::new(10, 42, 3, 0), 24)));
    }
}
