//! End-to-end tests of images on the node: pulls through a registries.yaml
//! `docker.io` mirror (with a rewrite), and airgap archives (made with
//! skopeo from the node's registry) imported by `kube image import` and
//! from `<data-dir>/agent/images/`, run with no registry for their names.
//! Needs root (skipped otherwise; failed with KUBE_TEST_REQUIRE_ROOT=1).

mod common;

use common::Cluster;
use common::agent::AgentCluster;
use std::process::Command;
use std::time::Duration;

fn can_run(test: &str) -> bool {
    let skopeo = Command::new("sh").args(["-c", "command -v skopeo"]).output().is_ok_and(|o| o.status.success());
    let unmet = common::agent_unmet().or_else(|| (!skopeo).then(|| "skopeo not installed".to_string()));
    common::can_run(test, unmet)
}

fn cluster_with(extra: &[&str]) -> AgentCluster {
    let node = nix::unistd::gethostname().expect("hostname").to_string_lossy().to_lowercase();
    AgentCluster { cluster: Cluster::start_with_agent_and(extra), node }
}

fn pod(cluster: &AgentCluster, name: &str, image: &str, policy: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n    imagePullPolicy: {policy}\n    command: [sh, -c, \"echo up; sleep 3600\"]\n",
        node = cluster.node,
    )
}

fn wait_running(cluster: &AgentCluster, name: &str) {
    cluster.wait_for(
        &format!("{name} Running"),
        &["get", "pod", name, "--no-headers"],
        Duration::from_secs(60),
        |out| {
            let cols: Vec<&str> = out.split_whitespace().collect();
            cols.get(1) == Some(&"1/1") && cols.get(2) == Some(&"Running")
        },
    );
}

#[test]
fn a_docker_io_mirror_serves_docker_io_images() {
    if !can_run("a_docker_io_mirror_serves_docker_io_images") {
        return;
    }
    let config = tempfile::tempdir().expect("tempdir");
    let path = config.path().join("registries.yaml");
    // The node's registry holds `busybox`, docker.io's name is `library/busybox`.
    std::fs::write(
        &path,
        format!(
            "mirrors:\n  docker.io:\n    endpoint:\n      - \"http://{}\"\n    rewrite:\n      \"^library/(.*)\": \"$1\"\n",
            common::NODE_REGISTRY
        ),
    )
    .expect("write registries.yaml");
    let cluster = cluster_with(&["--private-registry", &path.display().to_string()]);
    cluster.apply(&pod(&cluster, "mirrored", "docker.io/library/busybox:latest", "Always"));
    wait_running(&cluster, "mirrored");
    let id = cluster.ok(&["get", "pod", "mirrored", "-o", "jsonpath={.status.containerStatuses[0].imageID}"]);
    assert!(id.starts_with("docker.io/library/busybox@sha256:"), "imageID {id}");
    // Images without a mirror still come from their own registry.
    cluster.apply(&pod(&cluster, "direct", &format!("{}/busybox:latest", common::NODE_REGISTRY), "Always"));
    wait_running(&cluster, "direct");
}

#[test]
fn airgap_archives_run_without_a_registry() {
    if !can_run("airgap_archives_run_without_a_registry") {
        return;
    }
    let cluster = cluster_with(&[]);
    let dir = cluster.dir.path().to_path_buf();
    let net = cluster.net.as_ref().expect("node namespace");
    let skopeo = |dest: String| {
        let out = net
            .node
            .enter("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false"])
            .arg(format!("docker://{}/busybox:latest", common::NODE_REGISTRY))
            .arg(dest)
            .output()
            .expect("run skopeo");
        assert!(out.status.success(), "skopeo: {}", String::from_utf8_lossy(&out.stderr));
    };
    // `kube image import` with the agent running, then `kube image ls`.
    let saved = dir.join("saved.tar");
    skopeo(format!("docker-archive:{}:docker.io/library/airgap:v1", saved.display()));
    let out = Command::new(env!("CARGO_BIN_EXE_kube"))
        .args(["image", "import", "--data-dir"])
        .arg(&dir)
        .arg(&saved)
        .output()
        .expect("kube image import");
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("unpacking docker.io/library/airgap:v1"));
    let out =
        Command::new(env!("CARGO_BIN_EXE_kube")).args(["image", "ls", "--data-dir"]).arg(&dir).output().expect("ls");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"], "{table}");
    let row = table.lines().find(|l| l.starts_with("docker.io/library/airgap ")).unwrap_or_else(|| panic!("{table}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], "v1");
    assert_eq!(cols[2].len(), 13, "{row}");
    assert!(cols[3].ends_with("MB") || cols[3].ends_with("kB"), "{row}");
    cluster.apply(&pod(&cluster, "imported", "docker.io/library/airgap:v1", "Never"));
    wait_running(&cluster, "imported");

    // An OCI archive dropped into the airgap folder is picked up by the running agent.
    let staged = dir.join("offline.tar");
    skopeo(format!("oci-archive:{}:example.com/offline/busybox:v2", staged.display()));
    std::fs::rename(&staged, dir.join("agent/images/offline.tar")).expect("drop the archive");
    cluster.apply(&pod(&cluster, "dropped", "example.com/offline/busybox:v2", "IfNotPresent"));
    wait_running(&cluster, "dropped");

    // Never with an image that is not there: upstream's reason and message.
    cluster.apply(&pod(&cluster, "absent", "example.com/none/busybox:v3", "Never"));
    cluster.wait_for(
        "absent ErrImageNeverPull",
        &["get", "pod", "absent", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}"],
        Duration::from_secs(30),
        |out| out == "ErrImageNeverPull: Container image \"example.com/none/busybox:v3\" is not present with pull policy of Never",
    );
}

/// A docker-registry inside the node namespace that wants a password, stopped by PID when dropped.
struct AuthRegistry(Option<std::process::Child>);

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            common::stop_child(child, Duration::from_secs(5));
        }
    }
}

#[test]
fn pull_secrets_open_a_registry_that_wants_a_password() {
    if !can_run("pull_secrets_open_a_registry_that_wants_a_password") {
        return;
    }
    const AUTH_REGISTRY: &str = "127.0.0.1:5001";
    let config = tempfile::tempdir().expect("tempdir");
    let registries = config.path().join("registries.yaml");
    std::fs::write(
        &registries,
        format!("mirrors:\n  \"{AUTH_REGISTRY}\":\n    endpoint: [\"http://{AUTH_REGISTRY}\"]\n"),
    )
    .expect("write registries.yaml");
    let cluster = cluster_with(&["--private-registry", &registries.display().to_string()]);
    let htpasswd = config.path().join("htpasswd");
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    std::fs::write(&htpasswd, format!("puller:{hash}\n")).expect("htpasswd");
    let registry_config = config.path().join("auth-registry.yml");
    std::fs::write(
        &registry_config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    readonly:\n      enabled: true\nhttp:\n  addr: {AUTH_REGISTRY}\n  secret: kube-test-auth-registry\nauth:\n  htpasswd:\n    realm: kube-test\n    path: {}\n",
            common::registry_storage().display(),
            htpasswd.display()
        ),
    )
    .expect("registry config");
    let net = cluster.net.as_ref().expect("node namespace");
    let log = std::fs::File::create(config.path().join("auth-registry.log")).expect("log");
    let _registry = AuthRegistry(Some(
        net.node
            .enter("docker-registry")
            .arg("serve")
            .arg(&registry_config)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry"),
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !net.node.connects(AUTH_REGISTRY) {
        assert!(std::time::Instant::now() < deadline, "the auth registry did not answer");
        std::thread::sleep(Duration::from_millis(50));
    }
    let image = format!("{AUTH_REGISTRY}/busybox:latest");

    // Without credentials: refused, with upstream's reasons.
    cluster.apply(&pod(&cluster, "denied", &image, "Always"));
    cluster.wait_for(
        "denied ImagePullBackOff",
        &["get", "pod", "denied", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason} {.status.containerStatuses[0].state.waiting.message}"],
        Duration::from_secs(30),
        |out| out.starts_with("ImagePullBackOff Back-off pulling image") && out.contains("401 Unauthorized"),
    );

    // With a dockerconfigjson secret in imagePullSecrets: runs.
    cluster.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={AUTH_REGISTRY}"),
        "--docker-username=puller",
        "--docker-password=s3cret",
    ]);
    let with_secret = pod(&cluster, "allowed", &image, "Always")
        .replace("  containers:\n", "  imagePullSecrets: [{name: regcred}]\n  containers:\n");
    cluster.apply(&with_secret);
    wait_running(&cluster, "allowed");
}
