//! End-to-end test of the real helm against the API server: install,
//! upgrade, list, get values and uninstall a local chart.

mod common;

use common::Cluster;

fn chart() -> String {
    format!("{}/tests/charts/hello", env!("CARGO_MANIFEST_DIR"))
}

fn helm_ok(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.helm(args);
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.log_tail()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn helm_installs_upgrades_and_uninstalls_a_chart() {
    let cluster = Cluster::start();
    helm_ok(&cluster, &["install", "demo", &chart(), "--namespace", "default"]);
    assert_eq!(cluster.ok(&["get", "cm", "demo-greeting", "-o", "jsonpath={.data.greeting}"]), "hello");
    let list = helm_ok(&cluster, &["list", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["name"], "demo");
    assert_eq!(list[0]["status"], "deployed");

    helm_ok(&cluster, &["upgrade", "demo", &chart(), "--set", "greeting=bonjour", "--set", "replicas=2"]);
    assert_eq!(cluster.ok(&["get", "cm", "demo-greeting", "-o", "jsonpath={.data.greeting}"]), "bonjour");
    assert_eq!(cluster.ok(&["get", "deploy", "demo-web", "-o", "jsonpath={.spec.replicas}"]), "2");
    let history = helm_ok(&cluster, &["history", "demo", "-o", "json"]);
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history.as_array().map(Vec::len), Some(2));

    helm_ok(&cluster, &["uninstall", "demo", "--wait=false"]);
    let err = cluster.fails(&["get", "cm", "demo-greeting"]);
    assert!(err.contains("NotFound"), "{err}");
    let secrets = cluster.ok(&["get", "secrets", "-l", "owner=helm", "-o", "name"]);
    assert_eq!(secrets.trim(), "");
}

#[test]
fn helm_create_chart_installs_rolls_back_and_uninstalls() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let chart = dir.path().join("web");
    let chart = chart.to_str().expect("utf-8 path");
    let out = cluster.helm(&["create", chart]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    helm_ok(&cluster, &["install", "web", chart]);
    assert_eq!(cluster.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "1");
    assert!(cluster.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]).starts_with("10.43."));
    assert_eq!(cluster.ok(&["get", "sa", "web", "-o", "name"]).trim(), "serviceaccount/web");
    helm_ok(&cluster, &["upgrade", "web", chart, "--set", "replicaCount=3"]);
    assert_eq!(cluster.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "3");
    helm_ok(&cluster, &["rollback", "web", "1"]);
    assert_eq!(cluster.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "1");
    let history = helm_ok(&cluster, &["history", "web", "-o", "json"]);
    let history: serde_json::Value = serde_json::from_str(&history).expect("history JSON");
    assert_eq!(history.as_array().map(Vec::len), Some(3));
    helm_ok(&cluster, &["uninstall", "web"]);
    let err = cluster.fails(&["get", "deploy", "web"]);
    assert!(err.contains("NotFound"), "{err}");
}

#[test]
fn the_official_python_client_lists_watches_and_patches() {
    let cluster = Cluster::start();
    let python = std::env::var("KUBE_TEST_PYTHON")
        .unwrap_or_else(|_| format!("{}/.cache/pyclient/bin/python", env!("CARGO_MANIFEST_DIR")));
    assert!(std::path::Path::new(&python).exists(), "{python} not found: run scripts/fetch-python-client.sh");
    let script = format!("{}/tests/python_client.py", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(python).arg(script).arg(&cluster.kubeconfig).output().expect("run python");
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.log_tail()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("python client ok"));
}
