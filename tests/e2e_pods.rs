//! End-to-end tests of pod lifecycle features of the agent (issue 5, "Pods"):
//! OOM-killed containers, sidecar (restartable init) containers and static
//! pods with their mirror pods, against the real `kube server` in a node
//! namespace of the test's own, driven by the real kubectl. Needs root
//! (skipped otherwise, failed when KUBE_TEST_REQUIRE_ROOT=1).

mod common;

use common::agent::{AgentCluster, IMAGE, registry};
use std::time::Duration;

fn can_run(test: &str) -> bool {
    common::can_run(test, common::agent_unmet())
}

#[test]
fn a_container_over_its_memory_limit_is_oom_killed() {
    if !can_run("a_container_over_its_memory_limit_is_oom_killed") {
        return;
    }
    let cluster = AgentCluster::start();
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: hog}}\nspec:\n  nodeName: {node}\n  restartPolicy: Always\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {registry}/{IMAGE}\n    command: [sh, -c, 'head -c 64m /dev/zero | tail']\n    resources: {{limits: {{memory: 16Mi}}}}\n",
        node = cluster.node,
        registry = registry(),
    );
    cluster.apply(&manifest);
    // After the first kill the container restarts: the kill shows in lastState.
    let out = cluster.wait_for(
        "OOMKilled in lastState",
        &[
            "get",
            "pod",
            "hog",
            "-o",
            "jsonpath={.status.containerStatuses[0].lastState.terminated.reason} {.status.containerStatuses[0].lastState.terminated.exitCode}",
        ],
        Duration::from_secs(90),
        |out| out.starts_with("OOMKilled"),
    );
    assert_eq!(out, "OOMKilled 137");
    let describe = cluster.ok(&["describe", "pod", "hog"]);
    assert!(describe.contains("OOMKilled"), "describe:\n{describe}");
    cluster.ok(&["delete", "pod", "hog", "--timeout=60s"]);
}

#[test]
fn a_sidecar_feeds_the_main_container_and_stops_after_it() {
    if !can_run("a_sidecar_feeds_the_main_container_and_stops_after_it") {
        return;
    }
    let cluster = AgentCluster::start();
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: with-sidecar}}
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  volumes: [{{name: shared, emptyDir: {{}}}}]
  initContainers:
  - name: writer
    image: {registry}/{IMAGE}
    restartPolicy: Always
    command: [sh, -c, "trap 'exit 0' TERM; echo from-sidecar > /data/msg; while true; do sleep 1; done"]
    volumeMounts: [{{name: shared, mountPath: /data}}]
  containers:
  - name: main
    image: {registry}/{IMAGE}
    command: [sh, -c, "until [ -f /data/msg ]; do sleep 0.1; done; cat /data/msg; sleep 3"]
    volumeMounts: [{{name: shared, mountPath: /data}}]
"#,
        node = cluster.node,
        registry = registry(),
    );
    cluster.apply(&manifest);
    cluster.wait_for(
        "sidecar and main running together",
        &[
            "get",
            "pod",
            "with-sidecar",
            "-o",
            "jsonpath={.status.phase} {.status.initContainerStatuses[0].started} {.status.initContainerStatuses[0].state.running.startedAt} {.status.containerStatuses[0].state.running.startedAt}",
        ],
        Duration::from_secs(60),
        |out| {
            let cols: Vec<&str> = out.split_whitespace().collect();
            cols.len() == 4 && cols[0] == "Running" && cols[1] == "true"
        },
    );
    // The main container read what the sidecar wrote; once it is done the
    // sidecar is stopped and the pod completes.
    let out = cluster.wait_for(
        "pod Succeeded",
        &[
            "get",
            "pod",
            "with-sidecar",
            "-o",
            "jsonpath={.status.phase} {.status.initContainerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.terminated.exitCode}",
        ],
        Duration::from_secs(60),
        |out| out.starts_with("Succeeded"),
    );
    assert_eq!(out, "Succeeded 0 0");
    cluster.wait_logs("with-sidecar", &["-c", "main"], "from-sidecar\n");
    cluster.ok(&["delete", "pod", "with-sidecar", "--timeout=60s"]);
}

#[test]
fn a_static_pod_runs_with_a_mirror_pod_that_comes_back() {
    if !can_run("a_static_pod_runs_with_a_mirror_pod_that_comes_back") {
        return;
    }
    let cluster = AgentCluster::start();
    let manifests = cluster.dir.path().join("agent/pod-manifests");
    std::fs::create_dir_all(&manifests).expect("manifest folder");
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: static-web, labels: {{app: static-web}}}}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {registry}/{IMAGE}\n    command: [sh, -c, 'echo static; sleep 3600']\n",
        registry = registry(),
    );
    std::fs::write(manifests.join("web.yaml"), manifest).expect("write manifest");
    let name = format!("static-web-{}", cluster.node);
    let mirror = |cluster: &AgentCluster| {
        cluster.wait_for(
            "mirror pod Running",
            &[
                "get",
                "pod",
                &name,
                "-o",
                r#"jsonpath={.status.phase} {.metadata.annotations.kubernetes\.io/config\.source} {.metadata.ownerReferences[0].kind} {.spec.nodeName} {.metadata.uid}"#,
            ],
            Duration::from_secs(60),
            |out| out.starts_with("Running "),
        )
    };
    let first = mirror(&cluster);
    let cols: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(cols[1..4], ["file", "Node", cluster.node.as_str()], "mirror pod: {first}");
    let annotations = cluster.ok(&["get", "pod", &name, "-o", "jsonpath={.metadata.annotations}"]);
    assert!(annotations.contains("kubernetes.io/config.mirror"), "{annotations}");
    cluster.wait_logs(&name, &[], "static\n");

    // Deleting the mirror pod through the API recreates it; the pod keeps running.
    cluster.ok(&["delete", "pod", &name, "--timeout=60s"]);
    let second = mirror(&cluster);
    assert_ne!(second.split_whitespace().last(), first.split_whitespace().last(), "same mirror pod uid");

    // Removing the manifest stops the pod and removes its mirror pod.
    std::fs::remove_file(manifests.join("web.yaml")).expect("remove manifest");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = cluster.kubectl(&["get", "pod", &name]);
        if !out.status.success() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "mirror pod still there\n{}", cluster.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }
}
