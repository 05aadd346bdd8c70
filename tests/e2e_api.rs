//! End-to-end tests of the API server with the real kubectl: discovery,
//! CRUD, apply (client- and server-side), patches, watch, pagination,
//! errors, authentication and persistence across a restart.

mod common;

use common::Cluster;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
  labels: {app: shop, tier: web}
data:
  color: blue
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: 127.0.0.1:5000/busybox:latest
        command: [httpd, -f, -p, "8080"]
"#;

#[test]
fn kubectl_reads_version_discovery_and_default_namespaces() {
    let cluster = Cluster::start();
    let version = cluster.ok(&["version", "-o", "json"]);
    let version: serde_json::Value = serde_json::from_str(&version).unwrap();
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.34.5+kube");
    let namespaces = cluster.ok(&["get", "namespaces"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(namespaces.lines().any(|l| l.starts_with(ns) && l.contains("Active")), "{namespaces}");
    }
    let resources = cluster.ok(&["api-resources"]);
    assert!(
        resources.lines().any(|l| l.starts_with("deployments") && l.contains("deploy") && l.contains("apps/v1")),
        "{resources}"
    );
    let service = cluster.ok(&["get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"]);
    assert_eq!(service, "10.43.0.1");
    let components = cluster.ok(&["get", "componentstatuses"]);
    for component in ["scheduler", "controller-manager", "etcd-0"] {
        assert!(components.lines().any(|l| l.starts_with(component) && l.contains("Healthy")), "{components}");
    }
}

#[test]
fn apply_get_patch_delete_round_trip() {
    let cluster = Cluster::start();
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], APP);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("namespace/shop created") && stdout.contains("deployment.apps/web created"), "{stdout}");
    let again = cluster.kubectl_stdin(&["apply", "-f", "-"], APP);
    assert!(String::from_utf8_lossy(&again.stdout).contains("configmap/settings unchanged"), "{again:?}");

    let table = cluster.ok(&["get", "configmaps", "-n", "shop"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "DATA", "AGE"]);
    assert!(table.lines().any(|l| l.starts_with("settings") && l.split_whitespace().nth(1) == Some("1")), "{table}");
    let deploy =
        cluster.ok(&["get", "deploy", "web", "-n", "shop", "-o", "jsonpath={.spec.replicas} {.metadata.generation}"]);
    assert_eq!(deploy, "2 1");

    cluster.ok(&["label", "configmap", "settings", "-n", "shop", "release=1"]);
    cluster.ok(&["patch", "configmap", "settings", "-n", "shop", "--type=merge", "-p", r#"{"data":{"size":"L"}}"#]);
    cluster.ok(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        "shop",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/data/color","value":"red"}]"#,
    ]);
    cluster.ok(&["scale", "deployment", "web", "-n", "shop", "--replicas=3"]);
    cluster.ok(&["set", "image", "deployment/web", "-n", "shop", "web=127.0.0.1:5000/busybox:v2"]);
    let cm = cluster.ok(&[
        "get",
        "cm",
        "settings",
        "-n",
        "shop",
        "-o",
        "jsonpath={.data.color} {.data.size} {.metadata.labels.release}",
    ]);
    assert_eq!(cm, "red L 1");
    let deploy = cluster.ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "shop",
        "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.metadata.generation}",
    ]);
    assert_eq!(deploy, "3 127.0.0.1:5000/busybox:v2 3");

    let selected = cluster.ok(&["get", "cm", "-n", "shop", "-l", "tier=web,release in (1,2)", "-o", "name"]);
    assert_eq!(selected.trim(), "configmap/settings");
    let none = cluster.ok(&["get", "cm", "-n", "shop", "-l", "tier,tier!=web", "-o", "name"]);
    assert_eq!(none.trim(), "");
    let others = cluster.ok(&["get", "cm", "-n", "shop", "-l", "tier!=web", "-o", "name"]);
    assert_eq!(others.trim(), "configmap/kube-root-ca.crt");

    let deleted = cluster.ok(&["delete", "configmap", "settings", "-n", "shop"]);
    assert_eq!(deleted.trim(), "configmap \"settings\" deleted from shop namespace");
    let err = cluster.fails(&["get", "configmap", "settings", "-n", "shop"]);
    assert!(err.contains("Error from server (NotFound): configmaps \"settings\" not found"), "{err}");
    let err = cluster.fails(&["create", "configmap", "x", "-n", "nowhere"]);
    assert!(err.contains("namespaces \"nowhere\" not found"), "{err}");
}

#[test]
fn create_conflicts_and_invalid_names_are_reported_like_upstream() {
    let cluster = Cluster::start();
    cluster.ok(&["create", "configmap", "once", "--from-literal=a=1"]);
    let err = cluster.fails(&["create", "configmap", "once", "--from-literal=a=1"]);
    assert!(err.contains("configmaps \"once\" already exists"), "{err}");
    let out =
        cluster.kubectl_stdin(&["create", "-f", "-"], "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: once}\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Error from server (AlreadyExists)"), "{err}");
    let err = cluster.fails(&["create", "configmap", "Bad_Name"]);
    assert!(err.contains("is invalid") && err.contains("metadata.name"), "{err}");
    // A stale resourceVersion on update is a 409 Conflict.
    let stale = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"once","namespace":"default","resourceVersion":"1"},"data":{"a":"2"}}"#;
    let out = cluster.kubectl_stdin(&["replace", "-f", "-"], stale);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Conflict") && err.contains("the object has been modified"), "{err}");
}

#[test]
fn server_side_apply_owns_and_removes_fields() {
    let cluster = Cluster::start();
    let first = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\n  labels: {a: '1', b: '2'}\ndata: {k: v}\n";
    let out = cluster.kubectl_stdin(&["apply", "--server-side", "--field-manager=tool", "-f", "-"], first);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let second = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\n  labels: {a: '1'}\ndata: {k: w}\n";
    let out = cluster.kubectl_stdin(&["apply", "--server-side", "--field-manager=tool", "-f", "-"], second);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = cluster.ok(&[
        "get",
        "cm",
        "owned",
        "-o",
        "jsonpath={.metadata.labels} {.data.k} {.metadata.managedFields[0].manager}",
    ]);
    assert_eq!(got, r#"{"a":"1"} w tool"#);
    let other = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\ndata: {k: x}\n";
    let out = cluster.kubectl_stdin(&["apply", "--server-side", "--field-manager=other", "-f", "-"], other);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("conflict"), "{out:?}");
}

#[test]
fn watch_streams_changes_and_pagination_walks_every_page() {
    let cluster = Cluster::start();
    cluster.ok(&["create", "configmap", "page-0", "--from-literal=i=x"]);
    let mut watch = Command::new(common::client("kubectl"))
        .args(["get", "configmaps", "--watch", "--output-watch-events", "--no-headers"])
        .args(["--field-selector", "metadata.name!=kube-root-ca.crt"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kubectl watch");
    let mut lines = BufReader::new(watch.stdout.take().expect("watch stdout")).lines();
    let mut next_event = || {
        let line = lines.next().expect("watch ended early").expect("watch output");
        let columns: Vec<String> = line.split_whitespace().take(2).map(str::to_string).collect();
        columns.join(" ")
    };
    // The initial list arrives as ADDED before any change is made.
    assert_eq!(next_event(), "ADDED page-0");
    for i in 1..5 {
        cluster.ok(&["create", "configmap", &format!("page-{i}"), "--from-literal=i=x"]);
    }
    cluster.ok(&["label", "configmap", "page-1", "seen=yes"]);
    cluster.ok(&["delete", "configmap", "page-0"]);
    let seen: Vec<String> = (0..6).map(|_| next_event()).collect();
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(
        seen,
        ["ADDED page-1", "ADDED page-2", "ADDED page-3", "ADDED page-4", "MODIFIED page-1", "DELETED page-0"]
    );

    let paged = cluster.ok(&[
        "get",
        "configmaps",
        "--chunk-size=1",
        "-o",
        "name",
        "--field-selector=metadata.name!=kube-root-ca.crt",
    ]);
    let names: Vec<&str> = paged.lines().collect();
    assert_eq!(names, ["configmap/page-1", "configmap/page-2", "configmap/page-3", "configmap/page-4"]);
}

#[test]
fn anonymous_requests_are_unauthorized() {
    let cluster = Cluster::start();
    let server = format!("https://127.0.0.1:{}", cluster.port);
    let out = Command::new(common::client("kubectl"))
        .args([
            "--kubeconfig",
            "/dev/null",
            "--server",
            &server,
            "--insecure-skip-tls-verify",
            "--token",
            "not-a-token",
        ])
        .args(["get", "namespaces"])
        .output()
        .expect("run kubectl");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("You must be logged in to the server"), "{err}");
    // Without any credentials every path, health included, answers 401 with a Status.
    for path in ["/healthz", "/api", "/api/v1/namespaces"] {
        let out = Command::new("curl").args(["-sk", &format!("{server}{path}")]).output().expect("run curl");
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a Status body");
        assert_eq!((status["kind"].as_str(), status["code"].as_i64()), (Some("Status"), Some(401)), "{path}");
    }
}

#[test]
fn objects_survive_a_restart() {
    let mut cluster = Cluster::start();
    cluster.ok(&["create", "configmap", "durable", "--from-literal=k=v"]);
    let before = cluster.ok(&["get", "cm", "durable", "-o", "jsonpath={.metadata.uid} {.metadata.resourceVersion}"]);
    cluster.restart();
    let after = cluster.ok(&["get", "cm", "durable", "-o", "jsonpath={.metadata.uid} {.metadata.resourceVersion}"]);
    assert_eq!(before, after);
    cluster.ok(&["create", "configmap", "later"]);
    let rv: i64 = cluster.ok(&["get", "cm", "later", "-o", "jsonpath={.metadata.resourceVersion}"]).parse().unwrap();
    let old: i64 = before.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(rv > old, "revisions keep growing across restarts: {rv} <= {old}");
}
