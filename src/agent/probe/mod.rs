//! Container probes (startup, liveness, readiness) as the kubelet runs them:
//! the probe specs read from the container, and [`Prober`], the pure state
//! machine over one container run — timing from container start, success
//! and failure thresholds, startup gating the others — that tells the pod
//! worker when the container started, became (not) ready or must be killed.

mod check;
mod runner;

pub use check::Outcome;
pub use runner::{Events, Probing, Update, kill_message, spawn};

use serde_json::Value;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    /// As upstream names it in events ("Liveness probe failed: …").
    pub fn title(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }

    fn field(self) -> &'static str {
        match self {
            Kind::Startup => "startupProbe",
            Kind::Liveness => "livenessProbe",
            Kind::Readiness => "readinessProbe",
        }
    }
}

/// What a probe checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Http { https: bool, host: Option<String>, path: String, port: u16, headers: Vec<(String, String)> },
    Tcp { host: Option<String>, port: u16 },
    Exec { command: Vec<String> },
    Grpc { port: u16, service: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    pub kind: Kind,
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// A port by number, or by the name of one of the container's ports.
fn port(container: &Value, value: Option<&Value>) -> Option<u16> {
    match value? {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.parse().ok().or_else(|| {
            container.get("ports").and_then(Value::as_array)?.iter().find_map(|p| {
                (p.get("name").and_then(Value::as_str) == Some(s.as_str()))
                    .then(|| p.get("containerPort").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok()))
                    .flatten()
            })
        }),
        _ => None,
    }
}

fn action(container: &Value, probe: &Value) -> Option<Action> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    if let Some(http) = probe.get("httpGet") {
        let headers = http
            .get("httpHeaders")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|h| Some((text(h, "name")?, h.get("value").and_then(Value::as_str).unwrap_or("").to_string())))
            .collect();
        let path = text(http, "path").unwrap_or_else(|| "/".into());
        return Some(Action::Http {
            https: text(http, "scheme").is_some_and(|s| s.eq_ignore_ascii_case("https")),
            host: text(http, "host"),
            path: if path.starts_with('/') { path } else { format!("/{path}") },
            port: port(container, http.get("port"))?,
            headers,
        });
    }
    if let Some(tcp) = probe.get("tcpSocket") {
        return Some(Action::Tcp { host: text(tcp, "host"), port: port(container, tcp.get("port"))? });
    }
    if let Some(exec) = probe.get("exec") {
        let command = exec.get("command").and_then(Value::as_array)?;
        return Some(Action::Exec { command: command.iter().filter_map(|s| s.as_str().map(str::to_string)).collect() });
    }
    if let Some(grpc) = probe.get("grpc") {
        return Some(Action::Grpc {
            port: port(container, grpc.get("port"))?,
            service: text(grpc, "service").unwrap_or_default(),
        });
    }
    None
}

/// The container's probes with upstream's defaults (period 10 s, timeout
/// 1 s, success 1, failure 3); probes that name no usable check are skipped.
pub fn specs(container: &Value) -> Vec<ProbeSpec> {
    let mut specs = Vec::new();
    for kind in [Kind::Startup, Kind::Liveness, Kind::Readiness] {
        let Some(probe) = container.get(kind.field()).filter(|p| p.is_object()) else { continue };
        let Some(action) = action(container, probe) else {
            tracing::warn!(probe = kind.field(), "probe without a usable handler; ignored");
            continue;
        };
        let number = |key: &str, default: u64, min: u64| {
            probe.get(key).and_then(Value::as_u64).filter(|n| *n > 0).unwrap_or(default).max(min)
        };
        // Liveness and startup probes succeed after one success, whatever the spec says.
        let success = if kind == Kind::Readiness { number("successThreshold", 1, 1) } else { 1 };
        specs.push(ProbeSpec {
            kind,
            action,
            initial_delay: Duration::from_secs(probe.get("initialDelaySeconds").and_then(Value::as_u64).unwrap_or(0)),
            period: Duration::from_secs(number("periodSeconds", 10, 1)),
            timeout: Duration::from_secs(number("timeoutSeconds", 1, 1)),
            success_threshold: success as u32,
            failure_threshold: number("failureThreshold", 3, 1) as u32,
        });
    }
    specs
}

/// What the pod worker must do after a probe result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Started,
    Ready(bool),
    /// A liveness or startup probe failed: kill the container (restartPolicy decides the rest).
    Kill(Kind),
}

struct Track {
    spec: ProbeSpec,
    /// When it runs next, as time since the container started.
    next_at: Duration,
    /// The result the thresholds let through (`None`: unknown yet).
    result: Option<bool>,
    /// The last raw result and how many times in a row it came.
    last: Option<bool>,
    run: u32,
}

/// The probes of one container run.
pub struct Prober {
    tracks: Vec<Track>,
    started: bool,
    ready: bool,
    /// After a kill nothing runs until the next container run (a new `Prober`).
    on_hold: bool,
}

impl Prober {
    pub fn new(specs: Vec<ProbeSpec>) -> Prober {
        let started = !specs.iter().any(|s| s.kind == Kind::Startup);
        let has_readiness = specs.iter().any(|s| s.kind == Kind::Readiness);
        let tracks = specs
            .into_iter()
            .map(|spec| Track {
                next_at: spec.initial_delay,
                result: match spec.kind {
                    Kind::Liveness => Some(true),
                    Kind::Readiness => Some(false),
                    Kind::Startup => None,
                },
                last: None,
                run: 0,
                spec,
            })
            .collect();
        Prober { tracks, started, ready: started && !has_readiness, on_hold: false }
    }

    /// The probes of an adopted container whose state was `started` and `ready`.
    pub fn resume(specs: Vec<ProbeSpec>, started: bool, ready: bool) -> Prober {
        let mut prober = Prober::new(specs);
        prober.started = started || prober.started;
        prober.ready = ready && prober.started;
        for track in &mut prober.tracks {
            match track.spec.kind {
                Kind::Startup if prober.started => track.result = Some(true),
                Kind::Readiness => track.result = Some(prober.ready),
                _ => {}
            }
        }
        prober
    }

    pub fn started(&self) -> bool {
        self.started
    }

    pub fn ready(&self) -> bool {
        self.ready
    }

    pub fn spec(&self, kind: Kind) -> Option<&ProbeSpec> {
        self.tracks.iter().map(|t| &t.spec).find(|s| s.kind == kind)
    }

    fn eligible(&self, track: &Track) -> bool {
        !self.on_hold && (track.spec.kind == Kind::Startup) != self.started
    }

    /// The probe due first and when (time since container start); `None`
    /// when nothing is left to run.
    pub fn next(&self) -> Option<(Kind, Duration)> {
        self.tracks.iter().filter(|t| self.eligible(t)).min_by_key(|t| t.next_at).map(|t| (t.spec.kind, t.next_at))
    }

    /// Records that `kind` ran at `now` (since container start) with `success`.
    pub fn observe(&mut self, kind: Kind, success: bool, now: Duration) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(index) = self.tracks.iter().position(|t| t.spec.kind == kind) else { return effects };
        if !self.eligible(&self.tracks[index]) {
            return effects;
        }
        let track = &mut self.tracks[index];
        track.next_at = now + track.spec.period;
        if track.last == Some(success) {
            track.run += 1;
        } else {
            track.last = Some(success);
            track.run = 1;
        }
        let threshold = if success { track.spec.success_threshold } else { track.spec.failure_threshold };
        if track.run < threshold || track.result == Some(success) {
            return effects;
        }
        track.result = Some(success);
        match (kind, success) {
            (Kind::Startup, true) => {
                self.started = true;
                effects.push(Effect::Started);
                // The others start now if their initial delay has passed.
                for t in self.tracks.iter_mut().filter(|t| t.spec.kind != Kind::Startup) {
                    t.next_at = t.next_at.max(now);
                }
                let readiness = self.tracks.iter().find(|t| t.spec.kind == Kind::Readiness);
                if readiness.is_none_or(|t| t.result == Some(true)) {
                    self.ready = true;
                    effects.push(Effect::Ready(true));
                }
            }
            (Kind::Readiness, ready) => {
                if self.ready != ready {
                    self.ready = ready;
                    effects.push(Effect::Ready(ready));
                }
            }
            (Kind::Liveness | Kind::Startup, false) => {
                self.on_hold = true;
                if self.ready {
                    self.ready = false;
                    effects.push(Effect::Ready(false));
                }
                effects.push(Effect::Kill(kind));
            }
            (Kind::Liveness, true) => {}
        }
        effects
    }
}

#[cfg(test)]
mod tests;
