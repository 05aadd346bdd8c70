//! `kube certificate check` and `kube certificate rotate` against a real
//! server: the certificates are listed with their expiry, a running server
//! refuses a rotation, and after one the restarted server serves (and writes
//! the admin kubeconfig with) newly issued certificates from the same CA.

mod common;

use common::Cluster;
use std::process::{Command, Output};

fn kube_certificate(command: &str, cluster: &Cluster) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kube"))
        .args(["certificate", command, "--data-dir"])
        .arg(cluster.dir.path())
        .output()
        .expect("run kube certificate")
}

fn read(cluster: &Cluster, file: &str) -> String {
    std::fs::read_to_string(cluster.dir.path().join(file)).unwrap_or_else(|err| panic!("{file}: {err}"))
}

#[test]
fn certificates_are_listed_and_rotated_across_a_restart() {
    let mut cluster = Cluster::start();
    let check = kube_certificate("check", &cluster);
    let table = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let serving = table.lines().find(|l| l.starts_with("tls/serving.crt")).unwrap_or_else(|| panic!("{table}"));
    assert!(serving.contains("kube-apiserver") && serving.ends_with("OK"), "{table}");
    assert!(table.lines().next().is_some_and(|h| h.starts_with("FILE")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("tls/ca.crt")), "{table}");
    cluster.ok(&["create", "configmap", "before-rotation"]);

    let refused = kube_certificate("rotate", &cluster);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is running"), "{refused:?}");

    let (ca, serving, admin) =
        (read(&cluster, "tls/ca.crt"), read(&cluster, "tls/serving.crt"), read(&cluster, "tls/client-admin.crt"));
    cluster.stop();
    let rotated = kube_certificate("rotate", &cluster);
    let said = String::from_utf8_lossy(&rotated.stdout).into_owned();
    assert!(rotated.status.success(), "{said}{}", String::from_utf8_lossy(&rotated.stderr));
    assert!(said.contains("serving") && said.contains("client-admin"), "{said}");
    cluster.restart();
    assert_eq!(read(&cluster, "tls/ca.crt"), ca, "the CA is kept");
    assert_ne!(read(&cluster, "tls/serving.crt"), serving, "a new serving certificate");
    assert_ne!(read(&cluster, "tls/client-admin.crt"), admin, "a new admin certificate");
    assert!(read(&cluster, "admin.kubeconfig").contains("client-certificate-data"));
    cluster.ok(&["get", "configmap", "before-rotation"]);
}
