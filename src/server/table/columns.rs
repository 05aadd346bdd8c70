//! The columns of `kubectl get` per kind, and the cells of one object.

use super::{Column, age, column};
use serde_json::{Value, json};

const fn int(name: &'static str, priority: u8) -> Column {
    Column { name, kind: "integer", priority }
}

type Cells = fn(&Value) -> Vec<Value>;

fn s<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn n(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn len(obj: &Value, pointer: &str) -> usize {
    match obj.pointer(pointer) {
        Some(Value::Object(map)) => map.len(),
        Some(Value::Array(items)) => items.len(),
        _ => 0,
    }
}

fn or_none(text: String) -> Value {
    if text.is_empty() { json!("<none>") } else { json!(text) }
}

fn name(obj: &Value) -> Value {
    json!(s(obj, "/metadata/name"))
}

fn created(obj: &Value) -> Value {
    age(obj, "/metadata/creationTimestamp")
}

/// The columns and cell function for `group/kind`.
pub fn for_kind(group: &str, kind: &str) -> (Vec<Column>, Cells) {
    match (group, kind) {
        ("", "Pod") => (
            vec![
                column("Name", 0),
                column("Ready", 0),
                column("Status", 0),
                column("Restarts", 0),
                column("Age", 0),
                column("IP", 1),
                column("Node", 1),
                column("Nominated Node", 1),
                column("Readiness Gates", 1),
            ],
            pod_cells,
        ),
        ("", "ComponentStatus") => {
            (vec![column("Name", 0), column("Status", 0), column("Message", 0), column("Error", 0)], |o| {
                let healthy = s(o, "/conditions/0/status") == "True";
                vec![
                    name(o),
                    json!(if healthy { "Healthy" } else { "Unhealthy" }),
                    json!(s(o, "/conditions/0/message")),
                    json!(s(o, "/conditions/0/error")),
                ]
            })
        }
        ("", "Namespace") => (vec![column("Name", 0), column("Status", 0), column("Age", 0)], |o| {
            vec![name(o), json!(s(o, "/status/phase")), created(o)]
        }),
        ("", "Node") => (
            vec![
                column("Name", 0),
                column("Status", 0),
                column("Roles", 0),
                column("Age", 0),
                column("Version", 0),
                column("Internal-IP", 1),
                column("OS-Image", 1),
                column("Kernel-Version", 1),
                column("Container-Runtime", 1),
            ],
            node_cells,
        ),
        ("", "ConfigMap") => (vec![column("Name", 0), int("Data", 0), column("Age", 0)], |o| {
            vec![name(o), json!(len(o, "/data") + len(o, "/binaryData")), created(o)]
        }),
        ("", "Secret") => (vec![column("Name", 0), column("Type", 0), int("Data", 0), column("Age", 0)], |o| {
            vec![name(o), json!(s(o, "/type")), json!(len(o, "/data")), created(o)]
        }),
        ("", "ServiceAccount") => (vec![column("Name", 0), int("Secrets", 0), column("Age", 0)], |o| {
            vec![name(o), json!(len(o, "/secrets")), created(o)]
        }),
        ("", "Service") => (
            vec![
                column("Name", 0),
                column("Type", 0),
                column("Cluster-IP", 0),
                column("External-IP", 0),
                column("Port(s)", 0),
                column("Age", 0),
                column("Selector", 1),
            ],
            service_cells,
        ),
        ("", "Endpoints") => (vec![column("Name", 0), column("Endpoints", 0), column("Age", 0)], endpoints_cells),
        ("", "Event") => (
            vec![
                column("Last Seen", 0),
                column("Type", 0),
                column("Reason", 0),
                column("Object", 0),
                column("Message", 0),
            ],
            event_cells,
        ),
        ("autoscaling", "HorizontalPodAutoscaler") => (
            vec![
                column("Name", 0),
                column("Reference", 0),
                column("Targets", 0),
                column("MinPods", 0),
                int("MaxPods", 0),
                int("Replicas", 0),
                column("Age", 0),
            ],
            super::hpa::cells,
        ),
        ("apps", "Deployment") => (
            vec![
                column("Name", 0),
                column("Ready", 0),
                int("Up-to-date", 0),
                int("Available", 0),
                column("Age", 0),
                column("Containers", 1),
                column("Images", 1),
                column("Selector", 1),
            ],
            |o| {
                let mut cells = vec![
                    name(o),
                    json!(format!("{}/{}", n(o, "/status/readyReplicas"), n(o, "/spec/replicas"))),
                    json!(n(o, "/status/updatedReplicas")),
                    json!(n(o, "/status/availableReplicas")),
                    created(o),
                ];
                cells.extend(containers_images_selector(o));
                cells
            },
        ),
        ("apps", "ReplicaSet") => (
            vec![
                column("Name", 0),
                int("Desired", 0),
                int("Current", 0),
                int("Ready", 0),
                column("Age", 0),
                column("Containers", 1),
                column("Images", 1),
                column("Selector", 1),
            ],
            |o| {
                let mut cells = vec![
                    name(o),
                    json!(n(o, "/spec/replicas")),
                    json!(n(o, "/status/replicas")),
                    json!(n(o, "/status/readyReplicas")),
                    created(o),
                ];
                cells.extend(containers_images_selector(o));
                cells
            },
        ),
        ("apps", "StatefulSet") => (vec![column("Name", 0), column("Ready", 0), column("Age", 0)], |o| {
            vec![name(o), json!(format!("{}/{}", n(o, "/status/readyReplicas"), n(o, "/spec/replicas"))), created(o)]
        }),
        ("apps", "DaemonSet") => (
            vec![
                column("Name", 0),
                int("Desired", 0),
                int("Current", 0),
                int("Ready", 0),
                int("Up-to-date", 0),
                int("Available", 0),
                column("Node Selector", 0),
                column("Age", 0),
            ],
            |o| {
                let selector = o.pointer("/spec/template/spec/nodeSelector").and_then(Value::as_object).map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                });
                vec![
                    name(o),
                    json!(n(o, "/status/desiredNumberScheduled")),
                    json!(n(o, "/status/currentNumberScheduled")),
                    json!(n(o, "/status/numberReady")),
                    json!(n(o, "/status/updatedNumberScheduled")),
                    json!(n(o, "/status/numberAvailable")),
                    or_none(selector.unwrap_or_default()),
                    created(o),
                ]
            },
        ),
        ("batch", "Job") => (
            vec![
                column("Name", 0),
                column("Status", 0),
                column("Completions", 0),
                column("Duration", 0),
                column("Age", 0),
            ],
            job_cells,
        ),
        ("batch", "CronJob") => (
            vec![
                column("Name", 0),
                column("Schedule", 0),
                column("Timezone", 0),
                column("Suspend", 0),
                int("Active", 0),
                column("Last Schedule", 0),
                column("Age", 0),
            ],
            |o| {
                let last = o.pointer("/status/lastScheduleTime").map(|_| age(o, "/status/lastScheduleTime"));
                vec![
                    name(o),
                    json!(s(o, "/spec/schedule")),
                    or_none(s(o, "/spec/timeZone").to_string()),
                    json!(
                        o.pointer("/spec/suspend")
                            .and_then(Value::as_bool)
                            .unwrap_or(false)
                            .to_string()
                            .replace("false", "False")
                            .replace("true", "True")
                    ),
                    json!(len(o, "/status/active")),
                    last.unwrap_or(json!("<none>")),
                    created(o),
                ]
            },
        ),
        ("", "ResourceQuota") => {
            (vec![column("Name", 0), column("Age", 0), column("Request", 0), column("Limit", 0)], |o| {
                let (request, limit) = super::quota::request_limit(o);
                vec![name(o), created(o), json!(request), json!(limit)]
            })
        }
        ("coordination.k8s.io", "Lease") => (vec![column("Name", 0), column("Holder", 0), column("Age", 0)], |o| {
            vec![name(o), json!(s(o, "/spec/holderIdentity")), created(o)]
        }),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            (vec![column("Name", 0), column("Created At", 0)], |o| {
                vec![name(o), json!(s(o, "/metadata/creationTimestamp"))]
            })
        }
        _ => (vec![column("Name", 0), column("Age", 0)], |o| vec![name(o), created(o)]),
    }
}

fn containers_images_selector(o: &Value) -> Vec<Value> {
    let containers = o.pointer("/spec/template/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(c, "/image")).collect();
    let selector = o.pointer("/spec/selector/matchLabels").and_then(Value::as_object).map(|m| {
        m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(",")
    });
    vec![json!(names.join(",")), json!(images.join(",")), or_none(selector.unwrap_or_default())]
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let statuses = o.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
    let total = len(o, "/spec/containers");
    let ready = statuses.iter().filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true)).count();
    let restarts: i64 = statuses.iter().map(|c| n(c, "/restartCount")).sum();
    let mut status = s(o, "/status/reason").to_string();
    if status.is_empty() {
        status = s(o, "/status/phase").to_string();
    }
    for container in &statuses {
        let waiting = s(container, "/state/waiting/reason");
        let terminated = s(container, "/state/terminated/reason");
        if !waiting.is_empty() {
            status = waiting.to_string();
        } else if !terminated.is_empty() {
            status = terminated.to_string();
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        status = "Terminating".into();
    }
    if status.is_empty() {
        status = "Pending".into();
    }
    vec![
        name(o),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts.to_string()),
        created(o),
        or_none(s(o, "/status/podIP").to_string()),
        or_none(s(o, "/spec/nodeName").to_string()),
        or_none(s(o, "/status/nominatedNodeName").to_string()),
        json!("<none>"),
    ]
}

fn node_cells(o: &Value) -> Vec<Value> {
    let conditions = o.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let ready = conditions.iter().find(|c| s(c, "/type") == "Ready").map(|c| s(c, "/status") == "True");
    let mut status = match ready {
        Some(true) => "Ready".to_string(),
        Some(false) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let roles: Vec<&str> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| labels.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/")).collect())
        .unwrap_or_default();
    let internal_ip = o
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| s(x, "/type") == "InternalIP"))
        .map(|x| s(x, "/address").to_string())
        .unwrap_or_default();
    vec![
        name(o),
        json!(status),
        or_none(roles.join(",")),
        created(o),
        json!(s(o, "/status/nodeInfo/kubeletVersion")),
        or_none(internal_ip),
        json!(s(o, "/status/nodeInfo/osImage")),
        json!(s(o, "/status/nodeInfo/kernelVersion")),
        json!(s(o, "/status/nodeInfo/containerRuntimeVersion")),
    ]
}

fn service_cells(o: &Value) -> Vec<Value> {
    let kind = match s(o, "/spec/type") {
        "" => "ClusterIP",
        other => other,
    };
    let ports: Vec<String> = o
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    let protocol = match s(p, "/protocol") {
                        "" => "TCP",
                        other => other,
                    };
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(node_port) => format!("{}:{node_port}/{protocol}", n(p, "/port")),
                        None => format!("{}/{protocol}", n(p, "/port")),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let external: Vec<String> = o
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .map(|i| i.iter().map(|x| s(x, "/ip").to_string()).collect())
        .unwrap_or_default();
    let external = match (external.is_empty(), kind) {
        (false, _) => external.join(","),
        (true, "LoadBalancer") => "<pending>".to_string(),
        _ => String::new(),
    };
    let selector = o.pointer("/spec/selector").and_then(Value::as_object).map(|m| {
        m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(",")
    });
    vec![
        name(o),
        json!(kind),
        or_none(s(o, "/spec/clusterIP").to_string()),
        or_none(external),
        or_none(ports.join(",")),
        created(o),
        or_none(selector.unwrap_or_default()),
    ]
}

fn endpoints_cells(o: &Value) -> Vec<Value> {
    let mut endpoints = Vec::new();
    for subset in o.pointer("/subsets").and_then(Value::as_array).into_iter().flatten() {
        for address in subset.get("addresses").and_then(Value::as_array).into_iter().flatten() {
            for port in subset.get("ports").and_then(Value::as_array).into_iter().flatten() {
                endpoints.push(format!("{}:{}", s(address, "/ip"), n(port, "/port")));
            }
        }
    }
    vec![name(o), or_none(endpoints.join(",")), created(o)]
}

fn event_cells(o: &Value) -> Vec<Value> {
    let last_seen = if o.pointer("/lastTimestamp").and_then(Value::as_str).is_some() {
        age(o, "/lastTimestamp")
    } else {
        age(o, "/eventTime")
    };
    let object = format!("{}/{}", s(o, "/involvedObject/kind").to_lowercase(), s(o, "/involvedObject/name"));
    vec![last_seen, json!(s(o, "/type")), json!(s(o, "/reason")), json!(object), json!(s(o, "/message"))]
}

fn job_cells(o: &Value) -> Vec<Value> {
    let conditions = o.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let has = |t: &str| conditions.iter().any(|c| s(c, "/type") == t && s(c, "/status") == "True");
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else {
        "Running"
    };
    let completions = o.pointer("/spec/completions").and_then(Value::as_i64).unwrap_or(1);
    let duration = match (
        o.pointer("/status/startTime").and_then(Value::as_str),
        o.pointer("/status/completionTime").and_then(Value::as_str),
    ) {
        (Some(start), Some(end)) => match (start.parse::<jiff::Timestamp>(), end.parse::<jiff::Timestamp>()) {
            (Ok(a), Ok(b)) => json!(super::human_duration(b.as_second() - a.as_second())),
            _ => json!(""),
        },
        (Some(_), None) => age(o, "/status/startTime"),
        _ => json!(""),
    };
    vec![name(o), json!(status), json!(format!("{}/{completions}", n(o, "/status/succeeded"))), duration, created(o)]
}
