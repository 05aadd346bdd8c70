//! End-to-end tests of the Job and CronJob controllers with the real kubectl
//! and no node agent: the tests play the kubelet (common::kubelet).

mod common;

use common::Cluster;
use common::kubelet::*;
use serde_json::{Value, json};
use std::time::Duration;

#[test]
fn job_completes_when_its_pod_succeeds() {
    let cluster = Cluster::start();
    let _kubelets = Heartbeats::start(&cluster, NODES);
    let job = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: pi}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: pi, image: 127.0.0.1:5000/busybox:1, command: [sh, -c, "echo 3.14"]}]
"#;
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], job);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let spec = get_json(&cluster, &["get", "job", "pi"])["spec"].clone();
    assert_eq!(
        (spec["completions"].as_i64(), spec["parallelism"].as_i64(), spec["backoffLimit"].as_i64()),
        (Some(1), Some(1), Some(6))
    );
    assert!(spec["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"].is_string(), "{spec}");

    let pod = eventually(&cluster, "the job's pod bound", Duration::from_secs(30), || {
        live_pods(&cluster, "batch.kubernetes.io/job-name=pi")
            .into_iter()
            .find(|p| !text(p, "/spec/nodeName").is_empty())
    });
    let name = text(&pod, "/metadata/name");
    assert!(name.starts_with("pi-"), "{name}");
    cluster.ok(&["patch", "pod", name, "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"phase":"Succeeded","containerStatuses":[{"name":"pi","image":"x","imageID":"","ready":false,"restartCount":0,"state":{"terminated":{"exitCode":0,"reason":"Completed"}}}]}}"#]);
    cluster.ok(&["wait", "--for=condition=complete", "job/pi", "--timeout=30s"]);
    let status = get_json(&cluster, &["get", "job", "pi"])["status"].clone();
    assert_eq!((status["succeeded"].as_i64(), status["active"].as_i64()), (Some(1), Some(0)), "{status}");
    assert!(status["completionTime"].is_string() && status["startTime"].is_string(), "{status}");
    // Only one pod was ever created.
    assert_eq!(items(&cluster, &["get", "pods", "-l", "batch.kubernetes.io/job-name=pi"]).len(), 1);
}

#[test]
fn cronjob_creates_a_job_at_the_next_minute() {
    let cluster = Cluster::start();
    let cronjob = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: tick, image: 127.0.0.1:5000/busybox:1, command: [date]}]
"#;
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], cronjob);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let spec = get_json(&cluster, &["get", "cronjob", "tick"])["spec"].clone();
    assert_eq!(
        (spec["concurrencyPolicy"].as_str(), spec["successfulJobsHistoryLimit"].as_i64()),
        (Some("Allow"), Some(3))
    );
    let job = eventually(&cluster, "a job from the cronjob", Duration::from_secs(75), || {
        items(&cluster, &["get", "jobs"]).into_iter().next()
    });
    let name = text(&job, "/metadata/name");
    let minutes: i64 = name.strip_prefix("tick-").and_then(|m| m.parse().ok()).unwrap_or_default();
    assert!((minutes * 60 - jiff::Timestamp::now().as_second()).abs() < 120, "{name}");
    assert_eq!(text(&job, "/metadata/ownerReferences/0/kind"), "CronJob");
    let status = eventually(&cluster, "cronjob status", Duration::from_secs(30), || {
        let status = get_json(&cluster, &["get", "cronjob", "tick"])["status"].clone();
        (status["active"][0]["name"] == name).then_some(status)
    });
    assert!(status["lastScheduleTime"].is_string(), "{status}");
    // The job runs a pod like any other.
    eventually(&cluster, "the job's pod", Duration::from_secs(30), || {
        (!live_pods(&cluster, &format!("batch.kubernetes.io/job-name={name}")).is_empty()).then_some(())
    });
}

#[test]
fn indexed_job_completes_every_index_and_expires() {
    let cluster = Cluster::start();
    let _kubelets = Heartbeats::start(&cluster, NODES);
    let job = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: sim}
spec:
  completions: 3
  parallelism: 2
  completionMode: Indexed
  ttlSecondsAfterFinished: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: sim, image: 127.0.0.1:5000/busybox:1}]
"#;
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], job);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let index = |p: &Value| text(p, "/metadata/annotations/batch.kubernetes.io~1job-completion-index").to_string();
    let succeed = |pod: &Value| {
        cluster.ok(&[
            "patch",
            "pod",
            text(pod, "/metadata/name"),
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Succeeded"}}"#,
        ]);
    };
    // Two at a time: indexes 0 and 1 first.
    let pods = eventually(&cluster, "two indexed pods", Duration::from_secs(30), || {
        let pods = live_pods(&cluster, "batch.kubernetes.io/job-name=sim");
        (pods.len() == 2).then_some(pods)
    });
    let mut indexes: Vec<String> = pods.iter().map(index).collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1"]);
    assert!(pods.iter().all(|p| text(p, "/spec/hostname") == format!("sim-{}", index(p))));
    succeed(&pods[0]);
    let third = eventually(&cluster, "the pod of index 2", Duration::from_secs(30), || {
        live_pods(&cluster, "batch.kubernetes.io/job-name=sim").into_iter().find(|p| index(p) == "2")
    });
    eventually(&cluster, "the first completed index", Duration::from_secs(30), || {
        let status = get_json(&cluster, &["get", "job", "sim"])["status"].clone();
        (status["completedIndexes"] == index(&pods[0]) && status["succeeded"] == 1).then_some(())
    });
    succeed(&pods[1]);
    succeed(&third);
    // The job may already be gone (ttlSecondsAfterFinished: 1) by the time
    // kubectl looks, so completion is read from its event, which outlives it.
    eventually(&cluster, "the job's Completed event", Duration::from_secs(30), || {
        let events = cluster.ok(&[
            "get",
            "events",
            "--field-selector=involvedObject.kind=Job,involvedObject.name=sim",
            "-o",
            "json",
        ]);
        events.contains("\"reason\": \"Completed\"").then_some(())
    });
    eventually(&cluster, "the job deleted after its TTL", Duration::from_secs(30), || {
        (!cluster.ok(&["get", "jobs", "-o", "name"]).contains("job.batch/sim")).then_some(())
    });
}

#[test]
fn pod_failure_policy_fails_a_job_early() {
    let cluster = Cluster::start();
    let _kubelets = Heartbeats::start(&cluster, NODES);
    let job = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: strict}
spec:
  backoffLimit: 6
  podFailurePolicy:
    rules:
    - action: FailJob
      onExitCodes: {containerName: main, operator: In, values: [42]}
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: 127.0.0.1:5000/busybox:1}]
"#;
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], job);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pod = eventually(&cluster, "the job's pod", Duration::from_secs(30), || {
        live_pods(&cluster, "batch.kubernetes.io/job-name=strict").into_iter().next()
    });
    let failed = json!({"status": {"phase": "Failed", "containerStatuses": [{"name": "main", "image": "x", "imageID": "",
        "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 42, "reason": "Error"}}}]}});
    cluster.ok(&[
        "patch",
        "pod",
        text(&pod, "/metadata/name"),
        "--subresource=status",
        "--type=merge",
        "-p",
        &failed.to_string(),
    ]);
    cluster.ok(&["wait", "--for=condition=failed", "job/strict", "--timeout=30s"]);
    let job = get_json(&cluster, &["get", "job", "strict"]);
    let condition = job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Failed")
        .cloned()
        .unwrap_or_default();
    assert_eq!(condition["reason"], "PodFailurePolicy", "{condition}");
    assert!(
        text(&condition, "/message").contains("failed with exit code 42 matching FailJob rule at index 0"),
        "{condition}"
    );
    // No replacement pod was started.
    assert_eq!(items(&cluster, &["get", "pods", "-l", "batch.kubernetes.io/job-name=strict"]).len(), 1);
}

#[test]
fn success_policy_completes_an_indexed_job_early() {
    let cluster = Cluster::start();
    let _kubelets = Heartbeats::start(&cluster, NODES);
    let job = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: leader}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  successPolicy:
    rules: [{succeededIndexes: "0"}]
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: 127.0.0.1:5000/busybox:1}]
"#;
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], job);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let leader = eventually(&cluster, "three pods", Duration::from_secs(30), || {
        let pods = live_pods(&cluster, "batch.kubernetes.io/job-name=leader");
        (pods.len() == 3)
            .then(|| {
                pods.into_iter().find(|p| text(p, "/metadata/labels/batch.kubernetes.io~1job-completion-index") == "0")
            })
            .flatten()
    });
    cluster.ok(&[
        "patch",
        "pod",
        text(&leader, "/metadata/name"),
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Succeeded"}}"#,
    ]);
    cluster.ok(&["wait", "--for=condition=complete", "job/leader", "--timeout=30s"]);
    let job = get_json(&cluster, &["get", "job", "leader"]);
    let complete = job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Complete")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (complete["reason"].as_str(), complete["message"].as_str()),
        (Some("SuccessPolicy"), Some("Matched rules at index 0"))
    );
    // The other indexes were stopped.
    eventually(&cluster, "the other pods stopped", Duration::from_secs(30), || {
        live_pods(&cluster, "batch.kubernetes.io/job-name=leader")
            .iter()
            .all(|p| text(p, "/status/phase") == "Succeeded")
            .then_some(())
    });
}
