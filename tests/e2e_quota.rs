//! End-to-end ResourceQuota with the real kubectl: creates past `spec.hard`
//! are refused with upstream's message, `kubectl get/describe quota` show
//! the usage the controller keeps, and freed quota admits again.

mod common;

use common::Cluster;
use std::time::{Duration, Instant};

/// Polls `check` until it returns true or 30 s pass.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn used(cluster: &Cluster, ns: &str, resource: &str) -> String {
    let path = format!("jsonpath={{.status.used.{}}}", resource.replace('.', "\\."));
    cluster.ok(&["get", "quota", "q", "-n", ns, "-o", &path])
}

fn ready_namespace(cluster: &Cluster, ns: &str) {
    cluster.ok(&["create", "namespace", ns]);
    eventually("the default service account", || cluster.kubectl(&["get", "sa", "default", "-n", ns]).status.success());
}

#[test]
fn object_count_quota_refuses_then_admits_after_a_delete() {
    let cluster = Cluster::start();
    ready_namespace(&cluster, "team");
    cluster.ok(&["create", "quota", "q", "--hard=pods=2,configmaps=3", "-n", "team"]);
    // kube-root-ca.crt is the namespace's first ConfigMap.
    eventually("the quota's usage", || {
        used(&cluster, "team", "configmaps") == "1" && used(&cluster, "team", "pods") == "0"
    });
    cluster.ok(&["run", "p1", "--image=busybox", "-n", "team"]);
    cluster.ok(&["run", "p2", "--image=busybox", "-n", "team"]);
    let err = cluster.fails(&["run", "p3", "--image=busybox", "-n", "team"]);
    assert!(
        err.contains(
            "Error from server (Forbidden): pods \"p3\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        ),
        "{err}"
    );
    cluster.ok(&["create", "configmap", "c1", "-n", "team"]);
    cluster.ok(&["create", "configmap", "c2", "-n", "team"]);
    let err = cluster.fails(&["create", "configmap", "c3", "-n", "team"]);
    assert!(
        err.contains("configmaps \"c3\" is forbidden: exceeded quota: q, requested: configmaps=1, used: configmaps=3, limited: configmaps=3"),
        "{err}"
    );

    eventually("pods: 2/2 in kubectl get quota", || {
        let table = cluster.ok(&["get", "quota", "-n", "team"]);
        table.contains("pods: 2/2") && table.contains("configmaps: 3/3")
    });
    let table = cluster.ok(&["get", "quota", "-n", "team"]);
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "AGE", "REQUEST", "LIMIT"], "{table}");
    assert!(table.contains("configmaps: 3/3, pods: 2/2"), "{table}");
    let describe = cluster.ok(&["describe", "quota", "q", "-n", "team"]);
    let rows: Vec<Vec<&str>> = describe.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(rows.iter().any(|r| r == &["pods", "2", "2"]), "{describe}");
    assert!(rows.iter().any(|r| r == &["configmaps", "3", "3"]), "{describe}");

    cluster.ok(&["delete", "pod", "p1", "-n", "team", "--grace-period=0", "--force"]);
    eventually("the freed pod in status.used", || used(&cluster, "team", "pods") == "1");
    cluster.ok(&["run", "p3", "--image=busybox", "-n", "team"]);
    eventually("pods: 2/2 again", || used(&cluster, "team", "pods") == "2");
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: NAME
spec:
  containers:
  - name: app
    image: busybox
    resources:
      requests:
        cpu: 600m
        memory: 64Mi
";

#[test]
fn compute_quota_needs_requests_and_sums_them() {
    let cluster = Cluster::start();
    ready_namespace(&cluster, "compute");
    cluster.ok(&["create", "quota", "q", "--hard=requests.cpu=1,requests.memory=1Gi", "-n", "compute"]);
    eventually("the quota's usage", || used(&cluster, "compute", "requests.cpu") == "0");
    let err = cluster.fails(&["run", "bare", "--image=busybox", "-n", "compute"]);
    assert!(
        err.contains("pods \"bare\" is forbidden: failed quota: q: must specify requests.cpu for: bare; requests.memory for: bare"),
        "{err}"
    );
    let first = cluster.kubectl_stdin(&["create", "-n", "compute", "-f", "-"], &POD.replace("NAME", "first"));
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let second = cluster.kubectl_stdin(&["create", "-n", "compute", "-f", "-"], &POD.replace("NAME", "second"));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(
            "exceeded quota: q, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"
        ),
        "{err}"
    );
    eventually("the first pod's requests in status.used", || {
        used(&cluster, "compute", "requests.cpu") == "600m" && used(&cluster, "compute", "requests.memory") == "64Mi"
    });
    let table = cluster.ok(&["get", "quota", "-n", "compute"]);
    assert!(table.contains("requests.cpu: 600m/1, requests.memory: 64Mi/1Gi"), "{table}");
}

#[test]
fn racing_creates_cannot_overspend_a_quota() {
    let cluster = Cluster::start();
    ready_namespace(&cluster, "race");
    // kube-root-ca.crt already takes one of the three.
    cluster.ok(&["create", "quota", "q", "--hard=configmaps=3", "-n", "race"]);
    let outcomes: Vec<bool> = std::thread::scope(|s| {
        let creates: Vec<_> = (0..6)
            .map(|i| {
                let cluster = &cluster;
                s.spawn(move || {
                    cluster.kubectl(&["create", "configmap", &format!("c{i}"), "-n", "race"]).status.success()
                })
            })
            .collect();
        creates.into_iter().map(|c| c.join().unwrap_or(false)).collect()
    });
    assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 2, "{outcomes:?}");
    eventually("configmaps: 3/3", || used(&cluster, "race", "configmaps") == "3");
}
