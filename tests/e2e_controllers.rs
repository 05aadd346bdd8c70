//! End-to-end tests of the controllers and the scheduler with the real
//! kubectl and no node agent: the tests create Node objects and play the
//! kubelet themselves (pod status patches, finishing graceful deletions).

mod common;

use common::Cluster;
use common::kubelet::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: 127.0.0.1:5000/busybox:1
        resources: {requests: {cpu: 100m, memory: 64Mi}}
"#;

/// Runs `kubectl rollout status` while playing the kubelet until it succeeds.
fn rollout_completes(cluster: &Cluster, next_ip: &mut u32) -> String {
    let mut child = kubectl_child(cluster, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    let deadline = Instant::now() + Duration::from_secs(70);
    loop {
        if let Some(status) = child.try_wait().expect("rollout status") {
            let out = child.wait_with_output().expect("rollout output");
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                status.success(),
                "rollout status failed: {stdout}\n{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                cluster.log_tail()
            );
            return stdout;
        }
        assert!(Instant::now() < deadline, "rollout status did not finish\n{}", cluster.log_tail());
        kubelet_pass(cluster, "app=web", next_ip);
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn image_of_pods(pods: &[Value]) -> Vec<String> {
    pods.iter().map(|p| text(p, "/spec/containers/0/image").to_string()).collect()
}

#[test]
fn deployment_scales_rolls_out_rolls_back_and_is_collected() {
    let cluster = Cluster::start();
    let _kubelets = Heartbeats::start(&cluster, NODES);
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], DEPLOYMENT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Pods are created and bound, spread over both nodes.
    let pods = eventually(&cluster, "3 bound pods", Duration::from_secs(30), || {
        let pods = live_pods(&cluster, "app=web");
        (pods.len() == 3 && pods.iter().all(|p| !text(p, "/spec/nodeName").is_empty())).then_some(pods)
    });
    let nodes: std::collections::BTreeSet<&str> = pods.iter().map(|p| text(p, "/spec/nodeName")).collect();
    assert_eq!(nodes.len(), 2, "pods should spread over both nodes: {nodes:?}");
    let owner = &pods[0]["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["controller"].as_bool(), owner["blockOwnerDeletion"].as_bool()),
        (Some("ReplicaSet"), Some(true), Some(true))
    );
    let rs_name = owner["name"].as_str().unwrap_or_default().to_string();
    assert!(rs_name.starts_with("web-") && text(&pods[0], "/metadata/name").starts_with(&format!("{rs_name}-")));
    assert_eq!(text(&pods[0], "/metadata/labels/pod-template-hash"), rs_name.trim_start_matches("web-"));

    let mut ip = 0;
    let out = rollout_completes(&cluster, &mut ip);
    assert!(out.contains("successfully rolled out"), "{out}");
    let table = cluster.ok(&["get", "deploy", "web"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(row[..4], ["web", "3/3", "3", "3"], "{table}");
    let deploy = get_json(&cluster, &["get", "deploy", "web"]);
    assert_eq!(text(&deploy, "/metadata/annotations/deployment.kubernetes.io~1revision"), "1");
    let conditions = deploy["status"]["conditions"].as_array().cloned().unwrap_or_default();
    assert!(conditions.iter().any(|c| c["type"] == "Available" && c["status"] == "True"), "{conditions:?}");
    assert!(
        conditions.iter().any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable"),
        "{conditions:?}"
    );

    // Scaling.
    cluster.ok(&["scale", "deployment/web", "--replicas=5"]);
    eventually(&cluster, "5 pods", Duration::from_secs(30), || {
        (live_pods(&cluster, "app=web").len() == 5).then_some(())
    });
    cluster.ok(&["scale", "deployment/web", "--replicas=2"]);
    eventually(&cluster, "2 pods", Duration::from_secs(30), || {
        (live_pods(&cluster, "app=web").len() == 2).then_some(())
    });
    rollout_completes(&cluster, &mut ip);

    // A new image rolls out a new replica set.
    cluster.ok(&["set", "image", "deployment/web", "web=127.0.0.1:5000/busybox:2"]);
    rollout_completes(&cluster, &mut ip);
    let pods = live_pods(&cluster, "app=web");
    assert_eq!(image_of_pods(&pods), ["127.0.0.1:5000/busybox:2"; 2]);
    let sets = items(&cluster, &["get", "rs", "-l", "app=web"]);
    assert_eq!(sets.len(), 2, "{sets:?}");
    let new_rs = sets.iter().find(|rs| text(rs, "/metadata/name") != rs_name).cloned().unwrap_or_default();
    assert_eq!(text(&new_rs, "/metadata/annotations/deployment.kubernetes.io~1revision"), "2");
    let old = sets.iter().find(|rs| text(rs, "/metadata/name") == rs_name).cloned().unwrap_or_default();
    assert_eq!(old["spec"]["replicas"], 0);

    // Rolling back returns to the first template (and its replica set) as revision 3.
    cluster.ok(&["rollout", "undo", "deployment/web"]);
    rollout_completes(&cluster, &mut ip);
    let pods = live_pods(&cluster, "app=web");
    assert_eq!(image_of_pods(&pods), ["127.0.0.1:5000/busybox:1"; 2]);
    assert!(pods.iter().all(|p| text(p, "/metadata/ownerReferences/0/name") == rs_name));
    let deploy = get_json(&cluster, &["get", "deploy", "web"]);
    assert_eq!(text(&deploy, "/metadata/annotations/deployment.kubernetes.io~1revision"), "3");

    let events = cluster.ok(&["get", "events"]);
    for expected in
        ["ScalingReplicaSet", "deployment/web", "SuccessfulCreate", &format!("replicaset/{rs_name}"), "Scheduled"]
    {
        assert!(events.contains(expected), "{expected} missing from events:\n{events}");
    }
    assert!(events.contains(&format!("Scaled up replica set {rs_name}")), "{events}");
    assert!(events.contains("Successfully assigned default/"), "{events}");

    // Deleting the deployment removes its replica sets and (through the kubelet) its pods.
    cluster.ok(&["delete", "deployment", "web", "--wait=false"]);
    eventually(&cluster, "replica sets and pods gone", Duration::from_secs(60), || {
        kubelet_pass(&cluster, "app=web", &mut ip);
        let sets = items(&cluster, &["get", "rs", "-l", "app=web"]);
        let pods = items(&cluster, &["get", "pods", "-l", "app=web"]);
        (sets.is_empty() && pods.is_empty()).then_some(())
    });
}

#[test]
fn node_selector_keeps_a_pod_pending_until_a_node_matches() {
    let cluster = Cluster::start();
    let _kubelets = Heartbeats::start(&cluster, NODES);
    let pod = r#"
apiVersion: v1
kind: Pod
metadata: {name: fast}
spec:
  nodeSelector: {disk: ssd}
  containers: [{name: app, image: 127.0.0.1:5000/busybox:1}]
"#;
    assert!(cluster.kubectl_stdin(&["apply", "-f", "-"], pod).status.success());
    let condition = eventually(&cluster, "the Unschedulable condition", Duration::from_secs(30), || {
        let pod = get_json(&cluster, &["get", "pod", "fast"]);
        pod["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "PodScheduled").cloned()
    });
    assert_eq!((condition["status"].as_str(), condition["reason"].as_str()), (Some("False"), Some("Unschedulable")));
    assert!(
        text(&condition, "/message")
            .starts_with("0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."),
        "{condition}"
    );
    let pod_now = get_json(&cluster, &["get", "pod", "fast"]);
    assert_eq!(text(&pod_now, "/status/phase"), "Pending");
    assert_eq!(text(&pod_now, "/spec/nodeName"), "");
    let events = eventually(&cluster, "a FailedScheduling event", Duration::from_secs(10), || {
        let events = cluster.ok(&["get", "events"]);
        events.contains("FailedScheduling").then_some(events)
    });
    assert!(events.contains("pod/fast"), "{events}");

    // A node that matches makes it schedulable.
    cluster.ok(&["label", "node", "node-b", "disk=ssd", "--overwrite"]);
    let node = eventually(&cluster, "the pod bound", Duration::from_secs(30), || {
        let pod = get_json(&cluster, &["get", "pod", "fast"]);
        Some(text(&pod, "/spec/nodeName").to_string()).filter(|n| !n.is_empty())
    });
    assert_eq!(node, "node-b");
}

#[test]
fn endpoints_list_ready_pod_ips() {
    let cluster = Cluster::start();
    let _kubelets = Heartbeats::start(&cluster, NODES);
    let manifests = r#"
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, labels: {app: api}}
spec:
  containers: [{name: api, image: 127.0.0.1:5000/busybox:1, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: api-2, labels: {app: api}}
spec:
  containers: [{name: api, image: 127.0.0.1:5000/busybox:1, ports: [{name: http, containerPort: 8080}]}]
"#;
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], manifests);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for name in ["api-1", "api-2"] {
        eventually(&cluster, "the pod bound", Duration::from_secs(30), || {
            (!text(&get_json(&cluster, &["get", "pod", name]), "/spec/nodeName").is_empty()).then_some(())
        });
    }
    mark_ready(&cluster, &get_json(&cluster, &["get", "pod", "api-1"]), "10.42.1.10");
    cluster.ok(&["patch", "pod", "api-2", "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"phase":"Running","podIP":"10.42.1.11","podIPs":[{"ip":"10.42.1.11"}],"conditions":[{"type":"Ready","status":"False"}]}}"#]);
    let subset = eventually(&cluster, "endpoints with both pods", Duration::from_secs(30), || {
        let ep = get_json(&cluster, &["get", "endpoints", "api"]);
        let subset = ep["subsets"][0].clone();
        (subset["addresses"].is_array() && subset["notReadyAddresses"].is_array()).then_some(subset)
    });
    assert_eq!(subset["addresses"][0]["ip"], "10.42.1.10");
    assert_eq!(subset["addresses"][0]["targetRef"]["name"], "api-1");
    assert_eq!(subset["notReadyAddresses"][0]["ip"], "10.42.1.11");
    assert_eq!(subset["ports"][0]["port"], 8080);
    let table = cluster.ok(&["get", "endpoints", "api"]);
    assert!(table.contains("10.42.1.10:8080"), "{table}");

    // As a LoadBalancer, the service is reachable on every Ready node's address.
    cluster.ok(&["patch", "service", "api", "--type=merge", "-p", r#"{"spec":{"type":"LoadBalancer"}}"#]);
    let ingress = eventually(&cluster, "load balancer ingress", Duration::from_secs(30), || {
        let svc = get_json(&cluster, &["get", "service", "api"]);
        svc["status"]["loadBalancer"]["ingress"].as_array().cloned().filter(|i| i.len() == 2)
    });
    let ips: Vec<&str> = ingress.iter().filter_map(|i| i["ip"].as_str()).collect();
    assert_eq!(ips, ["192.168.77.97", "192.168.77.98"]);
    let table = cluster.ok(&["get", "service", "api"]);
    assert!(table.contains("192.168.77.97,192.168.77.98"), "{table}");

    let slice = eventually(&cluster, "an endpoint slice", Duration::from_secs(30), || {
        items(&cluster, &["get", "endpointslices", "-l", "kubernetes.io/service-name=api"])
            .into_iter()
            .find(|s| s["endpoints"].as_array().is_some_and(|e| e.len() == 2))
    });
    assert_eq!(slice["ports"][0]["port"], 8080);

    // The not-ready pod becomes ready and moves over.
    mark_ready(&cluster, &get_json(&cluster, &["get", "pod", "api-2"]), "10.42.1.11");
    eventually(&cluster, "both pods ready in endpoints", Duration::from_secs(30), || {
        let ep = get_json(&cluster, &["get", "endpoints", "api"]);
        (ep["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(2)).then_some(())
    });
}

#[test]
fn workloads_are_validated_like_upstream() {
    let cluster = Cluster::start();
    let mismatched = DEPLOYMENT.replace("metadata: {labels: {app: web}}", "metadata: {labels: {app: other}}");
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &mismatched);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"),
        "{stderr}"
    );
    let job = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: bad}
spec:
  template:
    spec:
      containers: [{name: a, image: x}]
"#;
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], job);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spec.template.spec.restartPolicy: Unsupported value: \"Always\""), "{stderr}");
    let deploy = cluster.kubectl_stdin(&["apply", "-f", "-"], DEPLOYMENT);
    assert!(deploy.status.success());
    let spec = get_json(&cluster, &["get", "deploy", "web"])["spec"].clone();
    assert_eq!(spec["strategy"]["rollingUpdate"], json!({"maxSurge": "25%", "maxUnavailable": "25%"}));
    assert_eq!(
        (spec["revisionHistoryLimit"].as_i64(), spec["progressDeadlineSeconds"].as_i64()),
        (Some(10), Some(600))
    );
    let err = cluster.fails(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"selector":{"matchLabels":{"app":"x"}},"template":{"metadata":{"labels":{"app":"x"}}}}}"#,
    ]);
    assert!(err.contains("field is immutable"), "{err}");
}

#[test]
fn statefulset_creates_pods_in_order_and_scales_down_from_the_top() {
    let cluster = Cluster::start();
    let _kubelets = Heartbeats::start(&cluster, NODES);
    let sts = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: 127.0.0.1:5000/busybox:1}]
"#;
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], sts);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut ip = 100;
    for i in 0..3 {
        let pod_name = format!("db-{i}");
        // The controller has seen exactly the pods up to this one (not Ready yet) and created no more.
        eventually(&cluster, &format!("{pod_name} alone and bound"), Duration::from_secs(30), || {
            let status = get_json(&cluster, &["get", "sts", "db"])["status"].clone();
            let pods = live_pods(&cluster, "app=db");
            let bound =
                pods.iter().any(|p| text(p, "/metadata/name") == pod_name && !text(p, "/spec/nodeName").is_empty());
            (bound && status["replicas"].as_i64() == Some(i + 1)).then_some(())
        });
        let names: Vec<String> =
            live_pods(&cluster, "app=db").iter().map(|p| text(p, "/metadata/name").to_string()).collect();
        assert_eq!(names, (0..=i).map(|n| format!("db-{n}")).collect::<Vec<_>>());
        let pod = get_json(&cluster, &["get", "pod", &pod_name]);
        assert_eq!((text(&pod, "/spec/hostname"), text(&pod, "/spec/subdomain")), (pod_name.as_str(), "db"));
        ip += 1;
        mark_ready(&cluster, &pod, &format!("10.42.0.{ip}"));
    }
    cluster.ok(&["rollout", "status", "statefulset/db", "--timeout=30s"]);
    let status = get_json(&cluster, &["get", "sts", "db"])["status"].clone();
    assert_eq!(status["readyReplicas"], 3, "{status}");
    assert_eq!(status["currentRevision"], status["updateRevision"]);
    assert_eq!(cluster.ok(&["get", "controllerrevisions", "-o", "name"]).lines().count(), 1);

    // A rolling update replaces the highest ordinal first.
    cluster.ok(&["set", "image", "sts/db", "db=127.0.0.1:5000/busybox:2"]);
    let going = eventually(&cluster, "the first pod replaced", Duration::from_secs(30), || {
        let pods = items(&cluster, &["get", "pods", "-l", "app=db"]);
        let deleting: Vec<String> =
            pods.iter().filter(|p| deleting(p)).map(|p| text(p, "/metadata/name").to_string()).collect();
        (!deleting.is_empty()).then_some(deleting)
    });
    assert_eq!(going, ["db-2"]);
    eventually(&cluster, "every pod updated and ready", Duration::from_secs(60), || {
        kubelet_pass(&cluster, "app=db", &mut ip);
        let status = get_json(&cluster, &["get", "sts", "db"])["status"].clone();
        let pods = live_pods(&cluster, "app=db");
        let images = image_of_pods(&pods);
        (images == ["127.0.0.1:5000/busybox:2"; 3]
            && status["readyReplicas"] == 3
            && status["currentRevision"] == status["updateRevision"])
            .then_some(())
    });
    cluster.ok(&["rollout", "status", "statefulset/db", "--timeout=30s"]);

    cluster.ok(&["scale", "sts/db", "--replicas=1"]);
    let going = eventually(&cluster, "db-2 deleted first", Duration::from_secs(30), || {
        let pods = items(&cluster, &["get", "pods", "-l", "app=db"]);
        let deleting: Vec<String> =
            pods.iter().filter(|p| deleting(p)).map(|p| text(p, "/metadata/name").to_string()).collect();
        (!deleting.is_empty()).then_some(deleting)
    });
    assert_eq!(going, ["db-2"]);
    eventually(&cluster, "one pod left", Duration::from_secs(30), || {
        kubelet_pass(&cluster, "app=db", &mut ip);
        let names: Vec<String> = items(&cluster, &["get", "pods", "-l", "app=db"])
            .iter()
            .map(|p| text(p, "/metadata/name").to_string())
            .collect();
        (names == ["db-0"]).then_some(())
    });
}

#[test]
fn daemonset_runs_one_pod_per_eligible_node() {
    let cluster = Cluster::start();
    let _kubelets =
        Heartbeats::start(&cluster, &[("node-a", "disk: hdd"), ("node-b", "disk: hdd"), ("node-c", "disk: ssd")]);
    cluster.ok(&["taint", "node", "node-c", "dedicated=db:NoSchedule"]);
    let ds = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: 127.0.0.1:5000/busybox:1}]
"#;
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], ds);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let nodes = eventually(&cluster, "a bound pod on each untainted node", Duration::from_secs(30), || {
        let mut nodes: Vec<String> =
            live_pods(&cluster, "app=agent").iter().map(|p| text(p, "/spec/nodeName").to_string()).collect();
        nodes.sort();
        (nodes == ["node-a", "node-b"]).then_some(nodes)
    });
    assert_eq!(nodes.len(), 2);
    let status = eventually(&cluster, "daemon set status", Duration::from_secs(30), || {
        let status = get_json(&cluster, &["get", "ds", "agent"])["status"].clone();
        (status["currentNumberScheduled"] == 2).then_some(status)
    });
    assert_eq!(status["desiredNumberScheduled"], 2, "{status}");

    // Tolerating the taint brings the third node in.
    cluster.ok(&["patch", "ds", "agent", "--type=merge", "-p",
        r#"{"spec":{"template":{"spec":{"tolerations":[{"key":"dedicated","operator":"Exists","effect":"NoSchedule"}]}}}}"#]);
    let mut ip = 50;
    eventually(&cluster, "a pod on all three nodes", Duration::from_secs(60), || {
        kubelet_pass(&cluster, "app=agent", &mut ip);
        let pods = live_pods(&cluster, "app=agent");
        let mut nodes: Vec<&str> = pods.iter().map(|p| text(p, "/spec/nodeName")).collect();
        nodes.sort();
        let tolerant = pods
            .iter()
            .all(|p| p["spec"]["tolerations"].as_array().is_some_and(|t| t.iter().any(|t| t["key"] == "dedicated")));
        (nodes == ["node-a", "node-b", "node-c"] && tolerant).then_some(())
    });
    eventually(&cluster, "every daemon pod ready", Duration::from_secs(30), || {
        kubelet_pass(&cluster, "app=agent", &mut ip);
        let status = get_json(&cluster, &["get", "ds", "agent"])["status"].clone();
        (status["numberAvailable"] == 3 && status["updatedNumberScheduled"] == 3).then_some(())
    });
    cluster.ok(&["rollout", "status", "daemonset/agent", "--timeout=30s"]);
    let history = cluster.ok(&["rollout", "history", "daemonset/agent"]);
    let revisions: Vec<&str> =
        history.lines().filter_map(|l| l.split_whitespace().next()).filter(|w| w.parse::<u32>().is_ok()).collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    // Node IPAM gave each node its own pod subnet.
    let mut cidrs: Vec<String> =
        items(&cluster, &["get", "nodes"]).iter().map(|n| text(n, "/spec/podCIDR").to_string()).collect();
    cidrs.sort();
    assert_eq!(cidrs, ["10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24"]);
}

#[test]
fn node_without_heartbeats_becomes_unreachable() {
    let cluster = Cluster::start();
    let _kubelets = Heartbeats::start(&cluster, &[("alive", "disk: hdd")]);
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &node_yaml("silent", "disk: hdd"));
    assert!(out.status.success());
    let pinned = r#"
apiVersion: v1
kind: Pod
metadata: {name: impatient}
spec:
  nodeName: silent
  tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 1}]
  containers: [{name: a, image: 127.0.0.1:5000/busybox:1}]
---
apiVersion: v1
kind: Pod
metadata: {name: patient}
spec:
  nodeName: silent
  containers: [{name: a, image: 127.0.0.1:5000/busybox:1}]
"#;
    assert!(cluster.kubectl_stdin(&["apply", "-f", "-"], pinned).status.success());
    let node = eventually(&cluster, "the silent node unreachable", Duration::from_secs(75), || {
        let node = get_json(&cluster, &["get", "node", "silent"]);
        let tainted = node["spec"]["taints"].as_array().is_some_and(|t| {
            t.iter().any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute")
        });
        tainted.then_some(node)
    });
    let ready = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("Unknown"), Some("NodeStatusUnknown")),
        "{ready}"
    );
    let alive = get_json(&cluster, &["get", "node", "alive"]);
    assert!(alive["spec"]["taints"].as_array().is_none_or(|t| t.is_empty()), "{alive}");
    // A pod tolerating the taint for 1 s is evicted; one with the default 300 s stays.
    eventually(&cluster, "the impatient pod evicted", Duration::from_secs(30), || {
        deleting(&get_json(&cluster, &["get", "pod", "impatient"])).then_some(())
    });
    assert!(!deleting(&get_json(&cluster, &["get", "pod", "patient"])));
    // Deleting the node lets the pod garbage collector remove what was left on it.
    cluster.ok(&["delete", "node", "silent"]);
    eventually(&cluster, "pods of the deleted node gone", Duration::from_secs(30), || {
        let names: Vec<String> =
            items(&cluster, &["get", "pods"]).iter().map(|p| text(p, "/metadata/name").to_string()).collect();
        (!names.iter().any(|n| n == "impatient") && !names.iter().any(|n| n == "patient")).then_some(())
    });
    // The scheduler only uses the live node now.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: 127.0.0.1:5000/busybox:1}]\n";
    assert!(cluster.kubectl_stdin(&["apply", "-f", "-"], pod).status.success());
    let node = eventually(&cluster, "the pod bound", Duration::from_secs(30), || {
        Some(text(&get_json(&cluster, &["get", "pod", "p"]), "/spec/nodeName").to_string()).filter(|n| !n.is_empty())
    });
    assert_eq!(node, "alive");
}

#[test]
fn paused_deployment_scales_but_does_not_roll_out() {
    let cluster = Cluster::start();
    let _kubelets = Heartbeats::start(&cluster, NODES);
    let recreate = DEPLOYMENT.replace("replicas: 3", "replicas: 2\n  strategy: {type: Recreate}");
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &recreate);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut ip = 200;
    rollout_completes(&cluster, &mut ip);
    cluster.ok(&["rollout", "pause", "deployment/web"]);
    cluster.ok(&["set", "image", "deployment/web", "web=127.0.0.1:5000/busybox:2"]);
    cluster.ok(&["scale", "deployment/web", "--replicas=3"]);
    eventually(&cluster, "3 pods of the old template", Duration::from_secs(30), || {
        let deploy = get_json(&cluster, &["get", "deploy", "web"]);
        let paused =
            deploy["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["reason"] == "DeploymentPaused");
        let pods = live_pods(&cluster, "app=web");
        (paused && image_of_pods(&pods) == ["127.0.0.1:5000/busybox:1"; 3]).then_some(())
    });
    assert_eq!(items(&cluster, &["get", "rs", "-l", "app=web"]).len(), 1);
    // Resumed, Recreate stops every old pod before any new one starts.
    cluster.ok(&["rollout", "resume", "deployment/web"]);
    let mut saw_new_with_old = false;
    let mut child = kubectl_child(&cluster, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    let deadline = Instant::now() + Duration::from_secs(70);
    while child.try_wait().expect("rollout status").is_none() {
        assert!(Instant::now() < deadline, "rollout status did not finish\n{}", cluster.log_tail());
        let pods = items(&cluster, &["get", "pods", "-l", "app=web"]);
        let images = image_of_pods(&pods);
        saw_new_with_old |= images.iter().any(|i| i.ends_with(":1")) && images.iter().any(|i| i.ends_with(":2"));
        kubelet_pass(&cluster, "app=web", &mut ip);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(child.wait().expect("rollout status").success());
    assert!(!saw_new_with_old, "Recreate ran old and new pods together");
    assert_eq!(image_of_pods(&live_pods(&cluster, "app=web")), ["127.0.0.1:5000/busybox:2"; 3]);
}

#[test]
fn disruption_budget_counts_healthy_pods() {
    let cluster = Cluster::start();
    let _kubelets = Heartbeats::start(&cluster, NODES);
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], DEPLOYMENT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    cluster.ok(&["create", "poddisruptionbudget", "web", "--selector=app=web", "--min-available=2"]);
    let budget = |cluster: &Cluster| get_json(cluster, &["get", "pdb", "web"])["status"].clone();
    eventually(&cluster, "a budget with no healthy pods", Duration::from_secs(30), || {
        let status = budget(&cluster);
        (status["expectedPods"] == 3 && status["currentHealthy"] == 0 && status["disruptionsAllowed"] == 0)
            .then_some(())
    });
    let mut ip = 150;
    rollout_completes(&cluster, &mut ip);
    let status = eventually(&cluster, "one disruption allowed", Duration::from_secs(30), || {
        let status = budget(&cluster);
        (status["currentHealthy"] == 3).then_some(status)
    });
    assert_eq!(
        (status["desiredHealthy"].as_i64(), status["disruptionsAllowed"].as_i64()),
        (Some(2), Some(1)),
        "{status}"
    );
    let condition = &status["conditions"][0];
    assert_eq!(
        (condition["type"].as_str(), condition["reason"].as_str()),
        (Some("DisruptionAllowed"), Some("SufficientPods"))
    );
    // The one allowed disruption is spent by the first eviction; a second, right
    // after, is refused whatever the controller has recomputed meanwhile.
    let pods = live_pods(&cluster, "app=web");
    let evict = |pod: &str| {
        let body = format!(r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{pod}"}}}}"#);
        cluster.kubectl_stdin(
            &["create", "--raw", &format!("/api/v1/namespaces/default/pods/{pod}/eviction"), "-f", "-"],
            &body,
        )
    };
    let first = evict(text(&pods[0], "/metadata/name"));
    assert!(first.status.success(), "first eviction: {}", String::from_utf8_lossy(&first.stderr));
    let second = evict(text(&pods[1], "/metadata/name"));
    let refusal = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second eviction within the budget's one disruption succeeded");
    assert!(refusal.contains("disruption budget"), "{refusal}");
    let status = budget(&cluster);
    assert_eq!(status["disruptionsAllowed"], 0, "{status}");
}

#[test]
fn scaling_mid_rollout_is_proportional() {
    let cluster = Cluster::start();
    let _kubelets = Heartbeats::start(&cluster, NODES);
    let four =
        DEPLOYMENT.replace("replicas: 3", "replicas: 4\n  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}");
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &four);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut ip = 10;
    rollout_completes(&cluster, &mut ip);
    let old = text(&items(&cluster, &["get", "rs", "-l", "app=web"])[0], "/metadata/name").to_string();
    // The new pod never becomes ready: the rollout stalls at old 4 + new 1.
    cluster.ok(&["set", "image", "deployment/web", "web=127.0.0.1:5000/busybox:2"]);
    let sizes = |cluster: &Cluster| -> (i64, i64) {
        let sets = items(cluster, &["get", "rs", "-l", "app=web"]);
        let size = |old_one: bool| {
            sets.iter()
                .filter(|rs| (text(rs, "/metadata/name") == old) == old_one)
                .map(|rs| rs["spec"]["replicas"].as_i64().unwrap_or(0))
                .sum()
        };
        (size(true), size(false))
    };
    eventually(&cluster, "the stalled rollout", Duration::from_secs(30), || (sizes(&cluster) == (4, 1)).then_some(()));
    cluster.ok(&["scale", "deployment/web", "--replicas=8"]);
    // 9 allowed (8 + surge 1), shared 4:1 against the 5 they were sized for: 7 and 2.
    eventually(&cluster, "proportional sizes", Duration::from_secs(30), || (sizes(&cluster) == (7, 2)).then_some(()));
}

#[test]
fn controllers_hold_a_lease_and_lead_again_right_after_a_restart() {
    let mut cluster = Cluster::start();
    let holder = |cluster: &Cluster| {
        let out = cluster.kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "kube-controller-manager",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = eventually(&cluster, "a lease holder", Duration::from_secs(30), || {
        Some(holder(&cluster)).filter(|h| !h.is_empty())
    });
    cluster.restart();
    // The stopped server released the lease: the new one leads without waiting 15 s for it to expire.
    let started = Instant::now();
    let second = eventually(&cluster, "a new lease holder", Duration::from_secs(30), || {
        Some(holder(&cluster)).filter(|h| !h.is_empty() && *h != first)
    });
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?} to lead again ({second})", started.elapsed());
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], DEPLOYMENT);
    assert!(out.status.success());
    eventually(&cluster, "replica set after the restart", Duration::from_secs(30), || {
        (!items(&cluster, &["get", "rs", "-l", "app=web"]).is_empty()).then_some(())
    });
}

#[test]
fn replica_sets_and_replication_controllers_adopt_and_release_pods() {
    let cluster = Cluster::start();
    let _kubelets = Heartbeats::start(&cluster, NODES);
    let orphans = r#"
apiVersion: v1
kind: Pod
metadata: {name: stray-rs, labels: {app: rs}}
spec:
  containers: [{name: a, image: 127.0.0.1:5000/busybox:1}]
---
apiVersion: v1
kind: Pod
metadata: {name: stray-rc, labels: {app: rc}}
spec:
  containers: [{name: a, image: 127.0.0.1:5000/busybox:1}]
"#;
    assert!(cluster.kubectl_stdin(&["apply", "-f", "-"], orphans).status.success());
    let owners = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  replicas: 2
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec:
      containers: [{name: a, image: 127.0.0.1:5000/busybox:1}]
---
apiVersion: v1
kind: ReplicationController
metadata: {name: rc}
spec:
  replicas: 2
  selector: {app: rc}
  template:
    metadata: {labels: {app: rc}}
    spec:
      containers: [{name: a, image: 127.0.0.1:5000/busybox:1}]
"#;
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], owners);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (app, kind) in [("rs", "ReplicaSet"), ("rc", "ReplicationController")] {
        let pods = eventually(&cluster, &format!("two pods of {kind}"), Duration::from_secs(30), || {
            let pods = live_pods(&cluster, &format!("app={app}"));
            (pods.len() == 2 && pods.iter().all(|p| text(p, "/metadata/ownerReferences/0/kind") == kind))
                .then_some(pods)
        });
        assert!(pods.iter().any(|p| text(p, "/metadata/name") == format!("stray-{app}")), "the orphan was adopted");
        // A pod relabelled out of the selector is released and replaced.
        cluster.ok(&["label", "pod", &format!("stray-{app}"), &format!("app={app}-debug"), "--overwrite"]);
        eventually(&cluster, &format!("the released pod replaced ({kind})"), Duration::from_secs(30), || {
            let released = get_json(&cluster, &["get", "pod", &format!("stray-{app}")]);
            let pods = live_pods(&cluster, &format!("app={app}"));
            (released["metadata"]["ownerReferences"].as_array().is_none_or(|r| r.is_empty()) && pods.len() == 2)
                .then_some(())
        });
    }
    eventually(&cluster, "the RC's status", Duration::from_secs(30), || {
        let rc = get_json(&cluster, &["get", "rc", "rc"]);
        (rc["status"]["replicas"] == 2 && rc["status"]["observedGeneration"] == 1).then_some(())
    });
}
