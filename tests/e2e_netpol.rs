//! End-to-end test of NetworkPolicy enforcement (needs root; skipped with a
//! message otherwise, failed instead when KUBE_TEST_REQUIRE_ROOT=1): the
//! real `kube server` with its agent in a node namespace, busybox httpd and
//! client pods on its bridge, policies applied with kubectl, and every
//! outcome (allowed and denied) checked with `kubectl exec … wget`.

mod common;

use common::agent::{AgentCluster, IMAGE, registry};
use std::time::{Duration, Instant};

/// A pod labelled `app=<app>` running `command`; `probe` adds an HTTP
/// readiness probe on port 8080 (the node probes it through the policy).
fn labelled_pod(cluster: &AgentCluster, name: &str, app: &str, command: &str, probe: bool) -> String {
    let probe = if probe { "    readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}\n" } else { "" };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {app}}}}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {registry}/{IMAGE}\n    command: [sh, -c, {command:?}]\n    ports: [{{name: http, containerPort: 8080}}]\n{probe}",
        node = cluster.node,
        registry = registry(),
    )
}

fn httpd(name: &str) -> String {
    format!("mkdir -p /www && echo hello-from-{name} > /www/index.html && exec httpd -f -p 8080 -h /www")
}

fn wait_running(cluster: &AgentCluster, name: &str) -> String {
    cluster.wait_for(
        &format!("{name} Running"),
        &["get", "pod", name, "--no-headers"],
        Duration::from_secs(60),
        |out| out.split_whitespace().nth(2) == Some("Running"),
    );
    cluster.ok(&["get", "pod", name, "-o", "jsonpath={.status.podIP}"])
}

/// Whether `from` fetches the page of `server` at `ip` within 2 s.
fn fetches(cluster: &AgentCluster, from: &str, ip: &str, server: &str) -> bool {
    let url = format!("http://{ip}:8080/");
    // Debian's static busybox `wget -T` crashes (SIGSEGV): `timeout` bounds it instead.
    let out = cluster.kubectl(&["exec", from, "--", "timeout", "2", "wget", "-qO-", &url]);
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == format!("hello-from-{server}")
}

/// Polls until `from` → `server` is allowed (`want`) or denied; rule changes
/// take a watch event and a sync.
fn expect_reach(cluster: &AgentCluster, from: &str, ip: &str, server: &str, want: bool, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while fetches(cluster, from, ip, server) != want {
        let table = cluster.net.as_ref().map(|net| {
            let out = net.node.exec("nft").args(["list", "table", "inet", "kube-proxy"]).output();
            out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
        });
        assert!(
            Instant::now() < deadline,
            "{when}: {from} → {server} should be {}; rules:\n{}\n{}",
            if want { "allowed" } else { "denied" },
            table.unwrap_or_default(),
            cluster.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

const DENY_INGRESS: &str =
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-ingress}\nspec:\n  podSelector: {}\n";

const ALLOW_CLIENT: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-client}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: client}}}]\n    ports: [{port: http}]\n";

const DENY_CLIENT_EGRESS: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: client-egress}\nspec:\n  podSelector: {matchLabels: {app: client}}\n  policyTypes: [Egress]\n";

#[test]
fn network_policies_allow_and_deny_pod_traffic() {
    if !common::can_run("network_policies_allow_and_deny_pod_traffic", common::agent_unmet()) {
        return;
    }
    let cluster = AgentCluster::start();
    cluster.apply(&labelled_pod(&cluster, "web", "web", &httpd("web"), false));
    cluster.apply(&labelled_pod(&cluster, "client", "client", "exec sleep 3600", false));
    cluster.apply(&labelled_pod(&cluster, "intruder", "intruder", "exec sleep 3600", false));
    let web = wait_running(&cluster, "web");
    wait_running(&cluster, "client");
    wait_running(&cluster, "intruder");

    // No policy: everyone reaches the server.
    expect_reach(&cluster, "client", &web, "web", true, "without policies");
    expect_reach(&cluster, "intruder", &web, "web", true, "without policies");

    // Default deny for ingress: nobody does, but the node's probes still pass.
    cluster.apply(DENY_INGRESS);
    expect_reach(&cluster, "client", &web, "web", false, "with deny-ingress");
    expect_reach(&cluster, "intruder", &web, "web", false, "with deny-ingress");
    cluster.apply(&labelled_pod(&cluster, "probed", "web", &httpd("probed"), true));
    let ready = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.kubectl(&["get", "pod", "probed", "-o", ready]).stdout != b"True" {
        if Instant::now() > deadline {
            let pod = cluster.kubectl(&["get", "pod", "probed", "-o", "yaml"]);
            let lines: Vec<String> =
                cluster.log().lines().filter(|l| l.contains("probed")).map(str::to_string).collect();
            panic!(
                "probed not Ready under deny-ingress (probes come from the node):\n{}\n{}",
                String::from_utf8_lossy(&pod.stdout),
                lines.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // Policies add up: the client (by label, to the named port) gets in, the intruder does not.
    cluster.apply(ALLOW_CLIENT);
    expect_reach(&cluster, "client", &web, "web", true, "with allow-client");
    expect_reach(&cluster, "intruder", &web, "web", false, "with allow-client");
    let listing = cluster.ok(&["get", "networkpolicy"]);
    assert!(listing.contains("allow-client") && listing.contains("deny-ingress"), "{listing}");

    // Policies deleted: open again.
    cluster.ok(&["delete", "networkpolicy", "deny-ingress", "allow-client"]);
    expect_reach(&cluster, "intruder", &web, "web", true, "after deleting the policies");
    expect_reach(&cluster, "client", &web, "web", true, "after deleting the policies");

    // Egress isolation of the client: it cannot get out; others still reach the server.
    cluster.apply(DENY_CLIENT_EGRESS);
    expect_reach(&cluster, "client", &web, "web", false, "with client-egress");
    expect_reach(&cluster, "intruder", &web, "web", true, "with client-egress");
    cluster.ok(&["delete", "networkpolicy", "client-egress"]);
    expect_reach(&cluster, "client", &web, "web", true, "after deleting client-egress");
}
