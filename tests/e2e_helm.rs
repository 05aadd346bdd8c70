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
