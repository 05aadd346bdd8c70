//! Every controller of the control plane, in-process, and the scheduler.
//! Each one file, each a `reconcile(key)` over current state that a watch
//! wakes up and a periodic resync repeats ([`queue`]); all write through the
//! in-process API client, so they pass the same authorization, admission and
//! validation as users. With several servers only the holder of the
//! controller Lease runs them ([`leader`]).

pub mod cron;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod events;
pub mod garbage_collector;
pub mod hpa;
pub mod job;
pub mod jobindex;
pub mod leader;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod objects;
pub mod podfailurepolicy;
pub mod podgc;
pub mod queue;
pub mod replicaset;
pub mod resourcequota;
pub mod revisions;
pub mod rollout;
pub mod scheduler;
pub mod serviceaccount;
pub mod servicelb;
pub mod statefulset;
pub mod taint_eviction;
pub mod ttl_after_finished;

use crate::server::catalog::Catalog;
use crate::server::client::Client;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What every controller gets.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub catalog: Catalog,
    /// The cluster CA (published as `kube-root-ca.crt` in every namespace).
    pub ca_pem: String,
    /// The pod network (`--cluster-cidr`) node podCIDRs are carved from.
    pub cluster_cidr: crate::server::config::Cidr,
}

/// Starts leader election; the leader runs every controller. All stop when
/// `shutdown` is cancelled.
pub fn start(ctx: Context, shutdown: CancellationToken) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    tasks.spawn(leader::run(ctx, shutdown, start_all));
    tasks
}

/// Starts every controller (on the leader); they stop when `shutdown` is cancelled.
fn start_all(ctx: Context, shutdown: CancellationToken) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    tasks.spawn(namespace::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(garbage_collector::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(deployment::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(job::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(cronjob::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(ttl_after_finished::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(endpoints::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(servicelb::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(endpoints::run_slices(ctx.clone(), shutdown.clone()));
    tasks.spawn(replicaset::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(replicaset::run_replication_controllers(ctx.clone(), shutdown.clone()));
    tasks.spawn(scheduler::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(daemonset::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(nodeipam::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(nodelifecycle::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(taint_eviction::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(disruption::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(podgc::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(statefulset::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(hpa::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(resourcequota::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(serviceaccount::run(ctx, shutdown));
    tasks
}
