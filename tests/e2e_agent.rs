//! End-to-end tests of the node agent: the real `kube server` with its local
//! agent, in a node network namespace of the test's own and driven by the
//! real kubectl, runs busybox pods pulled from the node's private registry
//! (serving the storage scripts/test-registry.sh + scripts/build-test-images.sh fill).
//! Needs root: skipped with a message otherwise, and failed instead when
//! KUBE_TEST_REQUIRE_ROOT=1 (CI). Every container, mount and folder it makes
//! is removed, also when a test fails.

mod common;

use common::agent::AgentCluster;
use std::time::{Duration, Instant};

fn can_run(test: &str) -> bool {
    common::can_run(test, common::agent_unmet())
}

#[test]
fn pods_run_log_fail_and_go_away() {
    if !can_run("pods_run_log_fail_and_go_away") {
        return;
    }
    let cluster = AgentCluster::start();
    cluster.wait_for("node Ready", &["get", "nodes"], Duration::from_secs(30), |out| {
        out.lines().any(|l| l.starts_with(&cluster.node) && l.split_whitespace().nth(1) == Some("Ready"))
    });

    // A long-running pod: Running 1/1, its log, then deletion stops it.
    let started = Instant::now();
    cluster.apply(&cluster.pod("hello", "echo hello; sleep 3600", "Always"));
    cluster.wait_for("hello Running 1/1", &["get", "pod", "hello", "--no-headers"], Duration::from_secs(60), |out| {
        let cols: Vec<&str> = out.split_whitespace().collect();
        cols.get(1) == Some(&"1/1") && cols.get(2) == Some(&"Running")
    });
    eprintln!("pod start latency (apply → Running 1/1, first pull included): {:?}", started.elapsed());
    cluster.wait_logs("hello", &[], "hello\n");
    let uid = cluster.ok(&["get", "pod", "hello", "-o", "jsonpath={.metadata.uid}"]);
    assert!(!AgentCluster::pod_processes(&uid).is_empty(), "no process in the cgroup of pod {uid}");
    let status = cluster.ok(&[
        "get",
        "pod",
        "hello",
        "-o",
        "jsonpath={.status.hostIP} {.status.containerStatuses[0].containerID} {.status.containerStatuses[0].imageID}",
    ]);
    let node_ip = cluster.node_ip().expect("node ip");
    assert!(status.starts_with(&format!("{node_ip} kube://")), "status: {status}");
    assert!(status.contains("@sha256:"), "status: {status}");

    // A pod that exits 1 with restartPolicy Never ends Failed with exitCode 1.
    cluster.apply(&cluster.pod("fails", "echo bye; exit 1", "Never"));
    cluster.wait_for(
        "fails Failed",
        &[
            "get",
            "pod",
            "fails",
            "-o",
            "jsonpath={.status.phase} {.status.containerStatuses[0].state.terminated.exitCode}",
        ],
        Duration::from_secs(60),
        |out| out == "Failed 1",
    );
    cluster.wait_logs("fails", &[], "bye\n");

    // Deleting stops the process and the object goes away.
    let started = Instant::now();
    cluster.ok(&["delete", "pod", "hello", "--timeout=60s"]);
    eprintln!("pod delete latency (grace 2 s, sh ignores SIGTERM): {:?}", started.elapsed());
    let out = cluster.kubectl(&["get", "pod", "hello"]);
    assert!(!out.status.success(), "pod hello still there: {}", String::from_utf8_lossy(&out.stdout));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !AgentCluster::pod_processes(&uid).is_empty() {
        assert!(Instant::now() < deadline, "processes of pod {uid} survived its deletion");
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.ok(&["delete", "pod", "fails", "--timeout=60s"]);
    assert!(!cluster.dir.path().join("agent/pods").join(uid.trim()).exists(), "pod folder left behind");
}

#[test]
fn containers_outlive_an_agent_restart() {
    if !can_run("containers_outlive_an_agent_restart") {
        return;
    }
    let mut cluster = AgentCluster::start();
    cluster.apply(&cluster.pod("survivor", "echo up; sleep 3600", "Always"));
    cluster.wait_for("survivor Running", &["get", "pod", "survivor", "--no-headers"], Duration::from_secs(60), |out| {
        out.split_whitespace().nth(2) == Some("Running")
    });
    let uid = cluster.ok(&["get", "pod", "survivor", "-o", "jsonpath={.metadata.uid}"]);
    let before = AgentCluster::pod_processes(&uid);
    assert!(!before.is_empty(), "no process for pod {uid}");
    let ip = cluster.wait_for(
        "survivor podIP",
        &["get", "pod", "survivor", "-o", "jsonpath={.status.podIP}"],
        Duration::from_secs(10),
        |out| !out.is_empty(),
    );
    cluster.restart();
    cluster.wait_for(
        "adopted",
        &["get", "pod", "survivor", "-o", "jsonpath={.status.containerStatuses[0].restartCount} {.status.phase}"],
        Duration::from_secs(30),
        |out| out == "0 Running",
    );
    assert_eq!(AgentCluster::pod_processes(&uid), before, "the container was restarted instead of adopted");
    let after = cluster.ok(&["get", "pod", "survivor", "-o", "jsonpath={.status.podIP}"]);
    assert_eq!(after, ip, "the pod's IP changed across the agent restart");
    assert!(cluster.log().contains("adopted a running container"), "{}", cluster.log_tail());
    cluster.ok(&["delete", "pod", "survivor", "--timeout=60s"]);
    assert!(AgentCluster::pod_processes(&uid).is_empty(), "adopted container survived deletion");
}

#[test]
fn crashing_containers_back_off() {
    if !can_run("crashing_containers_back_off") {
        return;
    }
    let cluster = AgentCluster::start();
    cluster.apply(&cluster.pod("crasher", "echo crash; exit 3", "Always"));
    cluster.wait_for(
        "CrashLoopBackOff",
        &["get", "pod", "crasher", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason} {.status.containerStatuses[0].lastState.terminated.exitCode}"],
        Duration::from_secs(60),
        |out| out == "CrashLoopBackOff 3",
    );
    let restarts = cluster.ok(&["get", "pod", "crasher", "-o", "jsonpath={.status.containerStatuses[0].restartCount}"]);
    assert!(restarts.trim().parse::<u32>().expect("restartCount") >= 1);
    cluster.wait_logs("crasher", &["--previous"], "crash\n");
}

/// The pod of `pods_reach_the_api_with_their_service_account`: env from a
/// ConfigMap and the downward API, the `kubernetes` Service reachable, and
/// its mounted token printed for the test to use (busybox's own TLS cannot
/// talk to a modern TLS server, so the test makes the API call instead).
fn api_client_pod(node: &str) -> String {
    let script = "SA=/var/run/secrets/kubernetes.io/serviceaccount; \
        echo \"ns=$(cat $SA/namespace) mode=$MODE color=$CFG_color mem=$MEM_MI host=$HOST_IP api=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT\"; \
        test -s $SA/ca.crt && echo ca=present; \
        until nc -w 3 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT </dev/null; do sleep 1; done; echo api=reachable; \
        echo token=$(cat $SA/token); sleep 3600";
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: api-client}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {registry}/{image}\n    command: [sh, -c, {script:?}]\n    resources: {{limits: {{memory: 64Mi}}}}\n    envFrom: [{{prefix: CFG_, configMapRef: {{name: settings}}}}]\n    env:\n    - {{name: MODE, valueFrom: {{configMapKeyRef: {{name: settings, key: mode}}}}}}\n    - {{name: HOST_IP, valueFrom: {{fieldRef: {{fieldPath: status.hostIP}}}}}}\n    - {{name: MEM_MI, valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}}}\n",
        registry = common::agent::registry(),
        image = common::agent::IMAGE,
    )
}

#[test]
fn pods_reach_the_api_with_their_service_account() {
    if !can_run("pods_reach_the_api_with_their_service_account") {
        return;
    }
    let cluster = AgentCluster::start();
    cluster.ok(&["create", "configmap", "settings", "--from-literal=mode=fast", "--from-literal=color=blue"]);
    cluster.ok(&["create", "rolebinding", "default-view", "--clusterrole=view", "--serviceaccount=default:default"]);
    cluster.apply(&api_client_pod(&cluster.node));
    let volume = cluster.ok(&["get", "pod", "api-client", "-o", "jsonpath={.spec.volumes[0].name}"]);
    assert!(volume.starts_with("kube-api-access-"), "ServiceAccount admission adds the token volume: {volume}");
    let logs = cluster
        .wait_for("the pod's token", &["logs", "api-client"], Duration::from_secs(90), |out| out.contains("token=ey"));
    let node_ip = cluster.node_ip().expect("node ip");
    assert!(
        logs.contains(&format!("ns=default mode=fast color=blue mem=64 host={node_ip} api=10.43.0.1:443")),
        "env from the ConfigMap, the downward API and the Service links: {logs}"
    );
    assert!(logs.contains("ca=present") && logs.contains("api=reachable"), "CA mounted, API Service reachable: {logs}");
    let token = logs.lines().find_map(|l| l.strip_prefix("token=")).unwrap_or_default().trim().to_string();
    let server = format!("https://{node_ip}:{}", cluster.port);
    let as_pod = |args: &[&str]| {
        let mut full =
            vec!["--kubeconfig", "/dev/null", "--server", &server, "--insecure-skip-tls-verify", "--token", &token];
        full.extend_from_slice(args);
        let out = cluster.kubectl(&full);
        assert!(out.status.success(), "{args:?} with the pod's token: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let bound = as_pod(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username} {.status.userInfo.extra.authentication\\.kubernetes\\.io/pod-name}",
    ]);
    assert_eq!(bound, "system:serviceaccount:default:default [\"api-client\"]", "the token is bound to the pod");
    assert!(as_pod(&["get", "pods", "-o", "name"]).contains("pod/api-client"), "the view role lets the pod read pods");
}
