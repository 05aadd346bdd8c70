//! Unit tests of probe specs and the probe state machine, on a fake clock
//! (durations since container start).

use super::*;
use serde_json::json;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn spec(kind: Kind, delay: u64, period: u64, success: u32, failure: u32) -> ProbeSpec {
    ProbeSpec {
        kind,
        action: Action::Tcp { host: None, port: 80 },
        initial_delay: secs(delay),
        period: secs(period),
        timeout: secs(1),
        success_threshold: success,
        failure_threshold: failure,
    }
}

/// Runs whatever is due with `result(kind, now)` until `until`; returns the effects with their times.
fn drive(prober: &mut Prober, until: Duration, result: impl Fn(Kind, Duration) -> bool) -> Vec<(Duration, Effect)> {
    let mut seen = Vec::new();
    while let Some((kind, at)) = prober.next() {
        if at > until {
            break;
        }
        for effect in prober.observe(kind, result(kind, at), at) {
            seen.push((at, effect));
        }
    }
    seen
}

#[test]
fn reads_probes_with_defaults_and_named_ports() {
    let container = json!({
        "name": "web", "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "healthz", "port": "http", "scheme": "HTTPS",
            "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "successThreshold": 2},
        "livenessProbe": {"tcpSocket": {"port": 81}, "initialDelaySeconds": 5, "periodSeconds": 2,
            "successThreshold": 4, "failureThreshold": 1},
        "startupProbe": {"exec": {"command": ["cat", "/ready"]}, "timeoutSeconds": 3},
    });
    let specs = specs(&container);
    assert_eq!(specs.len(), 3);
    assert_eq!(specs[0].kind, Kind::Startup);
    assert_eq!(specs[0].action, Action::Exec { command: vec!["cat".into(), "/ready".into()] });
    assert_eq!((specs[0].period, specs[0].timeout, specs[0].failure_threshold), (secs(10), secs(3), 3));
    assert_eq!(specs[1].action, Action::Tcp { host: None, port: 81 });
    assert_eq!((specs[1].initial_delay, specs[1].period, specs[1].success_threshold), (secs(5), secs(2), 1));
    assert_eq!(
        specs[2].action,
        Action::Http {
            https: true,
            host: None,
            path: "/healthz".into(),
            port: 8080,
            headers: vec![("X-Probe".into(), "1".into())]
        }
    );
    assert_eq!(specs[2].success_threshold, 2);
    let unknown_port = json!({"livenessProbe": {"tcpSocket": {"port": "nope"}}});
    assert!(super::specs(&unknown_port).is_empty());
}

#[test]
fn no_probes_means_started_and_ready() {
    let prober = Prober::new(Vec::new());
    assert!(prober.started() && prober.ready());
    assert_eq!(prober.next(), None);
}

#[test]
fn readiness_follows_its_thresholds() {
    let mut prober = Prober::new(vec![spec(Kind::Readiness, 3, 1, 2, 3)]);
    assert!(prober.started() && !prober.ready());
    assert_eq!(prober.next(), Some((Kind::Readiness, secs(3))), "waits for the initial delay");
    // Healthy from t=3: ready after two successes in a row (t=4).
    let fail_from = secs(10);
    let effects = drive(&mut prober, secs(20), |_, now| now < fail_from);
    // Failing from t=10: not ready after three failures (t=12).
    assert_eq!(effects, vec![(secs(4), Effect::Ready(true)), (secs(12), Effect::Ready(false))]);
}

#[test]
fn a_success_starts_the_failure_count_over() {
    let mut prober = Prober::new(vec![spec(Kind::Liveness, 0, 1, 1, 3)]);
    // fail, fail, ok, fail, fail, fail → killed at the sixth run only (and no longer ready).
    let effects = drive(&mut prober, secs(30), |_, now| now == secs(2));
    assert_eq!(effects, vec![(secs(5), Effect::Ready(false)), (secs(5), Effect::Kill(Kind::Liveness))]);
    assert_eq!(prober.next(), None, "on hold until the container restarts");
}

#[test]
fn startup_gates_liveness_and_readiness() {
    let mut prober = Prober::new(vec![
        spec(Kind::Startup, 0, 2, 1, 10),
        spec(Kind::Liveness, 1, 5, 1, 1),
        spec(Kind::Readiness, 0, 1, 1, 1),
    ]);
    assert!(!prober.started() && !prober.ready());
    let mut ran = Vec::new();
    // The startup probe passes from t=6; liveness always fails, but only runs once started.
    let started_at = secs(6);
    loop {
        let (kind, at) = prober.next().expect("something to run");
        ran.push((kind, at));
        let ok = match kind {
            Kind::Startup => at >= started_at,
            Kind::Readiness => true,
            Kind::Liveness => false,
        };
        let effects = prober.observe(kind, ok, at);
        if effects.contains(&Effect::Kill(Kind::Liveness)) {
            break;
        }
    }
    assert_eq!(
        ran,
        vec![
            (Kind::Startup, secs(0)),
            (Kind::Startup, secs(2)),
            (Kind::Startup, secs(4)),
            (Kind::Startup, secs(6)),
            (Kind::Liveness, secs(6)),
        ],
        "nothing but the startup probe runs before it succeeds"
    );
    assert!(prober.started());
}

#[test]
fn startup_without_readiness_makes_the_container_ready() {
    let mut prober = Prober::new(vec![spec(Kind::Startup, 0, 1, 1, 3)]);
    assert_eq!(prober.observe(Kind::Startup, true, secs(0)), vec![Effect::Started, Effect::Ready(true)]);
    assert_eq!(prober.next(), None, "a started container is not probed for startup again");
}

#[test]
fn a_failed_startup_probe_kills_the_container() {
    let mut prober = Prober::new(vec![spec(Kind::Startup, 0, 1, 1, 2), spec(Kind::Readiness, 0, 1, 1, 1)]);
    let effects = drive(&mut prober, secs(10), |_, _| false);
    assert_eq!(effects, vec![(secs(1), Effect::Kill(Kind::Startup))]);
    assert!(!prober.ready());
}

#[test]
fn readiness_waits_for_startup_then_reports() {
    let mut prober = Prober::new(vec![spec(Kind::Startup, 0, 1, 1, 5), spec(Kind::Readiness, 0, 1, 1, 1)]);
    let effects = drive(&mut prober, secs(5), |kind, now| kind == Kind::Readiness || now >= secs(2));
    assert_eq!(effects, vec![(secs(2), Effect::Started), (secs(2), Effect::Ready(true))]);
}
