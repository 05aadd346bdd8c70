//! More end-to-end tests of the API server with the real kubectl: RBAC and
//! service-account tokens, dry-run, describe/explain/diff, service address
//! allocation, cascading deletion, namespace termination and bad input.

mod common;

use common::Cluster;
use std::time::{Duration, Instant};

/// Polls `check` until it returns true or 30 s pass.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn exists(cluster: &Cluster, args: &[&str]) -> bool {
    cluster.kubectl(args).status.success()
}

#[test]
fn service_account_tokens_authenticate_and_rbac_decides() {
    let cluster = Cluster::start();
    cluster.ok(&["create", "namespace", "team"]);
    eventually("the default service account", || exists(&cluster, &["get", "sa", "default", "-n", "team"]));
    cluster.ok(&["create", "serviceaccount", "builder", "-n", "team"]);
    let token = cluster.ok(&["create", "token", "builder", "-n", "team"]);
    let as_builder = |args: &[&str]| {
        let server = format!("https://127.0.0.1:{}", cluster.port);
        let mut full = vec![
            "--kubeconfig",
            "/dev/null",
            "--server",
            &server,
            "--insecure-skip-tls-verify",
            "--token",
            token.trim(),
        ];
        full.extend_from_slice(args);
        cluster.kubectl(&full)
    };
    let who = as_builder(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
    assert_eq!(String::from_utf8_lossy(&who.stdout), "system:serviceaccount:team:builder", "{who:?}");
    let denied = as_builder(&["get", "pods", "-n", "team"]);
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        err.contains("Error from server (Forbidden): pods is forbidden: User \"system:serviceaccount:team:builder\" cannot list resource \"pods\" in API group \"\" in the namespace \"team\""),
        "{err}"
    );
    let can_i =
        cluster.kubectl(&["auth", "can-i", "list", "pods", "-n", "team", "--as=system:serviceaccount:team:builder"]);
    assert_eq!(String::from_utf8_lossy(&can_i.stdout).trim(), "no");
    cluster.ok(&[
        "create",
        "rolebinding",
        "builder-view",
        "-n",
        "team",
        "--clusterrole=view",
        "--serviceaccount=team:builder",
    ]);
    let allowed = as_builder(&["get", "pods", "-n", "team"]);
    assert!(allowed.status.success(), "{}", String::from_utf8_lossy(&allowed.stderr));
    let secrets = as_builder(&["get", "secrets", "-n", "team"]);
    assert!(!secrets.status.success(), "view must not read secrets");
    assert_eq!(cluster.ok(&["auth", "can-i", "create", "deployments"]).trim(), "yes");
    // Deleting the service account revokes its tokens, also once it is recreated (new UID).
    cluster.ok(&["delete", "serviceaccount", "builder", "-n", "team"]);
    cluster.ok(&["create", "serviceaccount", "builder", "-n", "team"]);
    let revoked = as_builder(&["get", "pods", "-n", "team"]);
    let err = String::from_utf8_lossy(&revoked.stderr);
    assert!(err.contains("Unauthorized"), "a token of a deleted service account still works: {err}");
    // A pod-bound token lives as long as its pod.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: worker, namespace: team}\nspec: {serviceAccountName: builder, containers: [{name: c, image: x}]}\n";
    let out = cluster.kubectl_stdin(&["create", "-f", "-"], pod);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bound = cluster.ok(&[
        "create",
        "token",
        "builder",
        "-n",
        "team",
        "--bound-object-kind=Pod",
        "--bound-object-name=worker",
    ]);
    let whoami = |token: &str| {
        let server = format!("https://127.0.0.1:{}", cluster.port);
        let args = [
            "--kubeconfig",
            "/dev/null",
            "--server",
            &server,
            "--insecure-skip-tls-verify",
            "--token",
            token,
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.extra.authentication\\.kubernetes\\.io/pod-name}",
        ];
        cluster.kubectl(&args)
    };
    let before = whoami(bound.trim());
    assert_eq!(String::from_utf8_lossy(&before.stdout), "[\"worker\"]", "{}", String::from_utf8_lossy(&before.stderr));
    cluster.ok(&["delete", "pod", "worker", "-n", "team", "--grace-period=0", "--force"]);
    let after = whoami(bound.trim());
    assert!(String::from_utf8_lossy(&after.stderr).contains("Unauthorized"), "a token of a deleted pod still works");
    let other = cluster.fails(&[
        "create",
        "token",
        "default",
        "-n",
        "team",
        "--bound-object-kind=Pod",
        "--bound-object-name=worker",
    ]);
    assert!(other.contains("not found"), "{other}");
}

#[test]
fn access_reviews_cover_rules_paths_and_other_users() {
    let cluster = Cluster::start();
    cluster.ok(&["create", "serviceaccount", "reader"]);
    cluster.ok(&["create", "role", "pod-reader", "--verb=get,list", "--resource=pods"]);
    cluster.ok(&["create", "rolebinding", "reader", "--role=pod-reader", "--serviceaccount=default:reader"]);
    let reader = "--as=system:serviceaccount:default:reader";
    let rules = cluster.ok(&["auth", "can-i", "--list", reader]);
    let pods = rules.lines().find(|l| l.starts_with("pods ")).unwrap_or_default();
    assert!(pods.ends_with("[get list]"), "the Role's rule is listed: {rules}");
    assert!(rules.lines().any(|l| l.contains("[/healthz]")), "system:public-info-viewer's paths are listed: {rules}");
    assert!(!rules.contains("*.*"), "the reader is no admin: {rules}");
    let can_i = |args: &[&str]| String::from_utf8_lossy(&cluster.kubectl(args).stdout).trim().to_string();
    assert_eq!(can_i(&["auth", "can-i", "get", "/healthz", reader]), "yes");
    assert_eq!(can_i(&["auth", "can-i", "get", "/metrics", reader]), "no");
    assert_eq!(can_i(&["auth", "can-i", "*", "*"]), "yes");
    assert_eq!(can_i(&["auth", "can-i", "*", "*", reader]), "no");
    // Delegated authorization: an admin asks about another user.
    let review = |kind: &str, namespace: &str| {
        format!(
            "apiVersion: authorization.k8s.io/v1\nkind: {kind}\nmetadata: {{namespace: {namespace}}}\n\
             spec: {{user: system:serviceaccount:default:reader, groups: [system:serviceaccounts],\n\
             resourceAttributes: {{namespace: default, verb: list, resource: pods}}}}\n"
        )
    };
    for (kind, namespace, allowed) in
        [("SubjectAccessReview", "default", "true"), ("LocalSubjectAccessReview", "default", "true")]
    {
        let out =
            cluster.kubectl_stdin(&["create", "-f", "-", "-o", "jsonpath={.status.allowed}"], &review(kind, namespace));
        assert_eq!(String::from_utf8_lossy(&out.stdout), allowed, "{kind}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = cluster
        .kubectl_stdin(&["create", "-n", "kube-system", "-f", "-"], &review("LocalSubjectAccessReview", "kube-system"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must match metadata.namespace"), "a local review about another namespace is invalid: {err}");
}

#[test]
fn protobuf_bodies_of_typed_clients_read_like_their_json() {
    let cluster = Cluster::start();
    // kubectl create sends these as application/vnd.kubernetes.protobuf.
    cluster.ok(&["create", "deployment", "web", "--image=x", "--replicas=0"]);
    cluster.ok(&["create", "configmap", "settings", "--from-literal=a=b"]);
    let deployment: serde_json::Value =
        serde_json::from_str(&cluster.ok(&["get", "deployment", "web", "-o", "json"])).expect("deployment JSON");
    assert_eq!(deployment["spec"]["replicas"], 0, "a pointer field's zero is kept: {deployment}");
    let template = &deployment["spec"]["template"];
    for absent in ["/metadata/generation", "/spec/hostNetwork", "/spec/containers/0/stdin", "/spec/containers/0/tty"] {
        assert!(template.pointer(absent).is_none(), "{absent} is not in upstream's JSON: {template}");
    }
    assert!(deployment["spec"].get("minReadySeconds").is_none(), "{deployment}");
    let configmap = cluster.ok(&["get", "configmap", "settings", "-o", "yaml"]);
    assert!(!configmap.contains("generation"), "{configmap}");
}

#[test]
fn dry_run_describe_explain_and_diff() {
    let cluster = Cluster::start();
    let out = cluster.ok(&[
        "create",
        "configmap",
        "dry",
        "--from-literal=a=1",
        "--dry-run=server",
        "-o",
        "jsonpath={.metadata.name}",
    ]);
    assert_eq!(out, "dry");
    assert!(!exists(&cluster, &["get", "cm", "dry"]), "a server dry-run must store nothing");
    cluster.ok(&["create", "configmap", "real", "--from-literal=a=1"]);
    let described = cluster.ok(&["describe", "configmap", "real"]);
    assert!(described.contains("Name:") && described.contains("real") && described.contains("Data"), "{described}");
    let explained = cluster.ok(&["explain", "deployment.spec.replicas"]);
    assert!(
        explained.contains("KIND:") && explained.contains("Deployment") && explained.contains("replicas"),
        "{explained}"
    );
    let manifest =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: real\n  namespace: default\ndata:\n  a: \"2\"\n";
    let diff = cluster.kubectl_stdin(&["diff", "-f", "-"], manifest);
    // kubectl diff exits 1 when there are differences.
    assert_eq!(diff.status.code(), Some(1), "{}", String::from_utf8_lossy(&diff.stderr));
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(text.contains("-  a: \"1\"") && text.contains("+  a: \"2\""), "{text}");
}

#[test]
fn services_get_unique_cluster_ips_and_node_ports() {
    let cluster = Cluster::start();
    cluster.ok(&["create", "service", "clusterip", "one", "--tcp=80:8080"]);
    cluster.ok(&["create", "service", "clusterip", "two", "--tcp=80:8080"]);
    cluster.ok(&["create", "service", "nodeport", "three", "--tcp=80:8080"]);
    let ips = cluster.ok(&["get", "svc", "-o", "jsonpath={range .items[*]}{.spec.clusterIP}{\"\\n\"}{end}"]);
    let ips: Vec<&str> = ips.lines().collect();
    assert_eq!(ips.len(), 4, "{ips:?}");
    let unique: std::collections::HashSet<&&str> = ips.iter().collect();
    assert_eq!(unique.len(), 4, "cluster IPs must be unique: {ips:?}");
    assert!(ips.iter().all(|ip| ip.starts_with("10.43.")), "{ips:?}");
    let node_port: u16 =
        cluster.ok(&["get", "svc", "three", "-o", "jsonpath={.spec.ports[0].nodePort}"]).parse().unwrap();
    assert!((30000..=32767).contains(&node_port));
    let table = cluster.ok(&["get", "svc", "three"]);
    assert!(table.contains(&format!("80:{node_port}/TCP")) && table.contains("NodePort"), "{table}");
    let manifest = "apiVersion: v1\nkind: Service\nmetadata: {name: taken}\nspec:\n  clusterIP: 10.43.0.1\n  ports: [{port: 80}]\n";
    let out = cluster.kubectl_stdin(&["create", "-f", "-"], manifest);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("provided IP is already allocated"), "{err}");
    // A deleted service's address can be requested again.
    let ip = ips.iter().find(|ip| **ip != "10.43.0.1").unwrap().to_string();
    let owner =
        cluster.ok(&["get", "svc", "-o", &format!("jsonpath={{.items[?(@.spec.clusterIP==\"{ip}\")].metadata.name}}")]);
    cluster.ok(&["delete", "svc", owner.trim()]);
    let again = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: again}}\nspec:\n  clusterIP: {ip}\n  ports: [{{port: 80}}]\n"
    );
    let out = cluster.kubectl_stdin(&["create", "-f", "-"], &again);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn owned_configmaps(cluster: &Cluster, suffix: &str) {
    cluster.ok(&["create", "configmap", &format!("owner-{suffix}")]);
    let uid = cluster.ok(&["get", "cm", &format!("owner-{suffix}"), "-o", "jsonpath={.metadata.uid}"]);
    let dependent = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dependent-{suffix}\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: owner-{suffix}, uid: {uid}, blockOwnerDeletion: true}}\n"
    );
    let out = cluster.kubectl_stdin(&["create", "-f", "-"], &dependent);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn cascading_deletion_in_all_three_modes() {
    let cluster = Cluster::start();
    owned_configmaps(&cluster, "bg");
    cluster.ok(&["delete", "cm", "owner-bg", "--cascade=background"]);
    eventually("the background dependent to go", || !exists(&cluster, &["get", "cm", "dependent-bg"]));

    owned_configmaps(&cluster, "orphan");
    cluster.ok(&["delete", "cm", "owner-orphan", "--cascade=orphan"]);
    eventually("the orphaning owner to go", || !exists(&cluster, &["get", "cm", "owner-orphan"]));
    let refs = cluster.ok(&["get", "cm", "dependent-orphan", "-o", "jsonpath={.metadata.ownerReferences}"]);
    assert_eq!(refs, "", "an orphaned dependent keeps no reference to its owner");

    owned_configmaps(&cluster, "fg");
    cluster.ok(&["delete", "cm", "owner-fg", "--cascade=foreground", "--wait=true"]);
    assert!(!exists(&cluster, &["get", "cm", "dependent-fg"]), "foreground deletion removes dependents first");
    assert!(!exists(&cluster, &["get", "cm", "owner-fg"]));
}

#[test]
fn a_deleted_namespace_terminates_and_removes_its_content() {
    let cluster = Cluster::start();
    cluster.ok(&["create", "namespace", "doomed"]);
    cluster.ok(&["create", "configmap", "inside", "-n", "doomed"]);
    cluster.ok(&["create", "secret", "generic", "hidden", "-n", "doomed", "--from-literal=k=v"]);
    cluster.ok(&["delete", "namespace", "doomed", "--wait=true", "--timeout=60s"]);
    assert!(!exists(&cluster, &["get", "namespace", "doomed"]));
    // Recreating it starts empty (but for the per-namespace defaults).
    cluster.ok(&["create", "namespace", "doomed"]);
    let left = cluster.ok(&[
        "get",
        "cm,secret",
        "-n",
        "doomed",
        "-o",
        "name",
        "--field-selector=metadata.name!=kube-root-ca.crt",
    ]);
    assert_eq!(left.trim(), "");
}

#[test]
fn bad_input_gets_upstream_errors_and_changes_nothing() {
    let cluster = Cluster::start();
    let raw = |args: &[&str]| String::from_utf8_lossy(&cluster.kubectl(args).stderr).into_owned();
    let err = raw(&["get", "pods", "-l", "a in (b"]);
    assert!(err.contains("BadRequest") || err.contains("unable to parse requirement"), "{err}");
    let err = raw(&["get", "--raw", "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=abc"]);
    assert!(err.contains("invalid resource version") || err.contains("BadRequest"), "{err}");
    let wrong_kind = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wrong.json");
    std::fs::write(&file, r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#).unwrap();
    let err = raw(&["create", "--raw", "/api/v1/namespaces/default/configmaps", "-f", file.to_str().unwrap()]);
    assert!(err.contains("does not match the expected kind"), "{err}");
    let big = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"k\":\"{}\"}}}}",
        "x".repeat(4 << 20)
    );
    std::fs::write(&file, big).unwrap();
    let err = raw(&["create", "--raw", "/api/v1/namespaces/default/configmaps", "-f", file.to_str().unwrap()]);
    assert!(err.contains("Request entity too large") || err.contains("413"), "{err}");
    let _ = wrong_kind;
    let typo = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo}\ndata: {k: v}\ndatta: {k: v}\n";
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], typo);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("strict decoding error: unknown field \"datta\""), "{err}");
    let names = cluster.ok(&["get", "cm", "-o", "name", "--field-selector=metadata.name!=kube-root-ca.crt"]);
    assert_eq!(names.trim(), "", "rejected requests stored nothing");
    assert_eq!(cluster.ok(&["get", "--raw", "/readyz"]), "ok", "the server keeps serving");
    let out = cluster.kubectl_stdin(&["apply", "--validate=warn", "-f", "-"], typo);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field \"datta\""), "{out:?}");
}

#[test]
fn watches_and_lists_behind_the_history_window_get_410() {
    let cluster = Cluster::start_with(&["--history-window-seconds", "1"]);
    cluster.ok(&["create", "configmap", "first"]);
    let first: i64 = cluster.ok(&["get", "cm", "first", "-o", "jsonpath={.metadata.resourceVersion}"]).parse().unwrap();
    // Automatic compaction moves past `first` once newer revisions are older than the window.
    let mut i = 0;
    eventually("compaction past the first write", || {
        i += 1;
        cluster.ok(&["create", "configmap", &format!("later-{i}")]);
        // A watch after `first` needs revision first+1: wait until that one is compacted too.
        let next = first + 1;
        let out = cluster.kubectl(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/configmaps?resourceVersion={next}&resourceVersionMatch=Exact"),
        ]);
        String::from_utf8_lossy(&out.stderr).contains("Error from server (Expired)")
    });
    let watch = cluster.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={first}&timeoutSeconds=5"),
    ]);
    let event: serde_json::Value = serde_json::from_str(watch.trim()).expect("one ERROR event");
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert!(
        event["object"]["message"].as_str().unwrap().starts_with(&format!("too old resource version: {first} (")),
        "{event}"
    );
}

#[test]
fn pods_get_qos_class_default_tolerations_and_scheduled_on_binding() {
    let cluster = Cluster::start();
    let manifest = r#"
apiVersion: v1
kind: Pod
metadata: {name: guaranteed}
spec: {containers: [{name: c, image: x, resources: {limits: {cpu: "1", memory: 64Mi}}}]}
---
apiVersion: v1
kind: Pod
metadata: {name: burstable}
spec: {containers: [{name: c, image: x, resources: {requests: {memory: 1Mi}}}]}
---
apiVersion: v1
kind: Pod
metadata: {name: besteffort}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: rc}
spec: {replicas: 0, template: {metadata: {labels: {app: rc}}, spec: {containers: [{name: c, image: x}]}}}
"#;
    let out = cluster.kubectl_stdin(&["create", "-f", "-"], manifest);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let jsonpath = "jsonpath={range .items[*]}{.metadata.name}={.status.qosClass} {end}";
    assert_eq!(
        cluster.ok(&["get", "pods", "-o", jsonpath]).trim(),
        "besteffort=BestEffort burstable=Burstable guaranteed=Guaranteed"
    );
    // Requests default to limits.
    assert_eq!(
        cluster.ok(&["get", "pod", "guaranteed", "-o", "jsonpath={.spec.containers[0].resources.requests.memory}"]),
        "64Mi"
    );
    // DefaultTolerationSeconds: 300 s for not-ready and unreachable nodes.
    let tolerations = cluster.ok(&[
        "get",
        "pod",
        "besteffort",
        "-o",
        "jsonpath={range .spec.tolerations[*]}{.key}:{.effect}:{.tolerationSeconds} {end}",
    ]);
    assert_eq!(
        tolerations.trim(),
        "node.kubernetes.io/not-ready:NoExecute:300 node.kubernetes.io/unreachable:NoExecute:300"
    );
    // A ReplicationController's empty selector and labels come from its template.
    assert_eq!(cluster.ok(&["get", "rc", "rc", "-o", "jsonpath={.spec.selector.app}/{.metadata.labels.app}"]), "rc/rc");
    // The binding sets PodScheduled=True.
    let node = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n";
    let out = cluster.kubectl_stdin(&["create", "-f", "-"], node);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let binding =
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"besteffort"},"target":{"kind":"Node","name":"n1"}}"#;
    let out = cluster
        .kubectl_stdin(&["create", "--raw", "/api/v1/namespaces/default/pods/besteffort/binding", "-f", "-"], binding);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let scheduled = cluster.ok(&[
        "get",
        "pod",
        "besteffort",
        "-o",
        "jsonpath={.spec.nodeName} {.status.conditions[?(@.type==\"PodScheduled\")].status}",
    ]);
    assert_eq!(scheduled, "n1 True");
}

#[test]
fn lists_of_objects_are_validated_and_applied() {
    let cluster = Cluster::start();
    // kubectl validates a `kind: List` against the protobuf OpenAPI v2 document.
    let list = |data_key: &str| {
        format!(
            "apiVersion: v1\nkind: List\nitems:\n- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: a}}, {data_key}: {{x: \"1\"}}}}\n"
        )
    };
    let typo = cluster.kubectl_stdin(&["apply", "-f", "-"], &list("dat"));
    let err = String::from_utf8_lossy(&typo.stderr);
    assert!(!typo.status.success() && err.contains(r#"unknown field "dat" in io.k8s.api.core.v1.ConfigMap"#), "{err}");
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &list("data"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(cluster.ok(&["get", "cm", "a", "-o", "jsonpath={.data.x}"]), "1");
}
