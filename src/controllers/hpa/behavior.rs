//! `spec.behavior` of an autoscaler: the stabilization window (the highest
//! recommendation of the last 300 s on the way down, by default) and the
//! scaling policies that limit how fast replicas change, with upstream's
//! defaults (`GenerateHPAScaleUpRules` / `GenerateHPAScaleDownRules`) and
//! its `normalizeDesiredReplicasWithBehaviors`.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: i64,
    pub period_seconds: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub stabilization_seconds: i64,
    pub select: Select,
    pub policies: Vec<Policy>,
}

impl Rules {
    /// Upstream's defaults: up at once, by 4 pods or 100 % per 15 s, whichever is more.
    pub fn default_up() -> Rules {
        Rules {
            stabilization_seconds: 0,
            select: Select::Max,
            policies: vec![
                Policy { kind: PolicyKind::Pods, value: 4, period_seconds: 15 },
                Policy { kind: PolicyKind::Percent, value: 100, period_seconds: 15 },
            ],
        }
    }

    /// Upstream's defaults: down after 300 s of lower recommendations, by up to 100 % per 15 s.
    pub fn default_down() -> Rules {
        Rules {
            stabilization_seconds: 300,
            select: Select::Max,
            policies: vec![Policy { kind: PolicyKind::Percent, value: 100, period_seconds: 15 }],
        }
    }

    /// The rules of `spec.behavior.scaleUp`/`scaleDown` (`rules`), defaults filled in.
    pub fn from_spec(rules: Option<&Value>, defaults: Rules) -> Rules {
        let Some(rules) = rules else { return defaults };
        let stabilization_seconds =
            rules.get("stabilizationWindowSeconds").and_then(Value::as_i64).unwrap_or(defaults.stabilization_seconds);
        let select = match rules.get("selectPolicy").and_then(Value::as_str) {
            Some("Min") => Select::Min,
            Some("Disabled") => Select::Disabled,
            Some(_) => Select::Max,
            None => defaults.select,
        };
        let policies: Vec<Policy> = rules
            .get("policies")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|p| {
                        let kind = match p.get("type").and_then(Value::as_str)? {
                            "Pods" => PolicyKind::Pods,
                            "Percent" => PolicyKind::Percent,
                            _ => return None,
                        };
                        let value = p.get("value").and_then(Value::as_i64)?;
                        let period_seconds = p.get("periodSeconds").and_then(Value::as_i64)?;
                        Some(Policy { kind, value, period_seconds })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let policies = if policies.is_empty() { defaults.policies } else { policies };
        Rules { stabilization_seconds, select, policies }
    }

    fn longest_period(&self) -> i64 {
        self.policies.iter().map(|p| p.period_seconds).max().unwrap_or(0)
    }
}

/// One recommendation or scale event, at a Unix second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timed {
    pub at: i64,
    pub value: i64,
}

/// What the controller remembers of one autoscaler between runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    pub recommendations: Vec<Timed>,
    pub scale_up_events: Vec<Timed>,
    pub scale_down_events: Vec<Timed>,
}

/// Upstream's `stabilizeRecommendationWithBehaviors`: the current count held
/// between the lowest recommendation within the up window and the highest
/// within the down window; records `desired`.
pub fn stabilize(
    memory: &mut Memory,
    now: i64,
    current: i64,
    desired: i64,
    up: &Rules,
    down: &Rules,
) -> (i64, &'static str) {
    let (up_cutoff, down_cutoff) = (now - up.stabilization_seconds, now - down.stabilization_seconds);
    let (mut up_rec, mut down_rec) = (desired, desired);
    let mut old = None;
    for (i, rec) in memory.recommendations.iter().enumerate() {
        if rec.at > up_cutoff {
            up_rec = up_rec.min(rec.value);
        }
        if rec.at > down_cutoff {
            down_rec = down_rec.max(rec.value);
        }
        if rec.at < up_cutoff && rec.at < down_cutoff {
            old = Some(i);
        }
    }
    let recommendation = current.max(up_rec).min(down_rec);
    match old {
        Some(i) => memory.recommendations[i] = Timed { at: now, value: desired },
        None => memory.recommendations.push(Timed { at: now, value: desired }),
    }
    let reason = if desired >= current { "ScaleUpStabilized" } else { "ScaleDownStabilized" };
    (recommendation, reason)
}

fn changed_within(events: &[Timed], now: i64, period: i64) -> i64 {
    events.iter().filter(|e| e.at > now - period).map(|e| e.value).sum()
}

fn up_limit(current: i64, memory: &Memory, now: i64, rules: &Rules) -> i64 {
    let pick: fn(i64, i64) -> i64 = match rules.select {
        Select::Disabled => return current,
        Select::Min => i64::min,
        Select::Max => i64::max,
    };
    let mut result = if rules.select == Select::Min { i64::MAX } else { i64::MIN };
    for policy in &rules.policies {
        let start = current - changed_within(&memory.scale_up_events, now, policy.period_seconds)
            + changed_within(&memory.scale_down_events, now, policy.period_seconds);
        let proposed = match policy.kind {
            PolicyKind::Pods => start + policy.value,
            PolicyKind::Percent => (start as f64 * (1.0 + policy.value as f64 / 100.0)).ceil() as i64,
        };
        result = pick(result, proposed);
    }
    result
}

fn down_limit(current: i64, memory: &Memory, now: i64, rules: &Rules) -> i64 {
    let pick: fn(i64, i64) -> i64 = match rules.select {
        Select::Disabled => return current,
        Select::Min => i64::max,
        Select::Max => i64::min,
    };
    let mut result = if rules.select == Select::Min { i64::MIN } else { i64::MAX };
    for policy in &rules.policies {
        let start = current - changed_within(&memory.scale_up_events, now, policy.period_seconds)
            + changed_within(&memory.scale_down_events, now, policy.period_seconds);
        let proposed = match policy.kind {
            PolicyKind::Pods => start - policy.value,
            PolicyKind::Percent => (start as f64 * (1.0 - policy.value as f64 / 100.0)) as i64,
        };
        result = pick(result, proposed);
    }
    result
}

/// Upstream's `convertDesiredReplicasWithBehaviorRate`: `desired` limited by
/// the policies and min/max, with the ScalingLimited reason and message.
pub fn limit(
    memory: &Memory,
    now: i64,
    (current, desired, min, max): (i64, i64, i64, i64),
    up: &Rules,
    down: &Rules,
) -> (i64, &'static str, &'static str) {
    if desired > current {
        let scale_up = up_limit(current, memory, now, up).max(current);
        let (allowed, reason, message) = if max > scale_up {
            (scale_up, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
        } else {
            (max, "TooManyReplicas", "the desired replica count is more than the maximum replica count")
        };
        if desired > allowed {
            return (allowed, reason, message);
        }
    } else if desired < current {
        let scale_down = down_limit(current, memory, now, down).min(current);
        let (allowed, reason, message) = if min < scale_down {
            (scale_down, "ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate")
        } else {
            (min, "TooFewReplicas", "the desired replica count is less than the minimum replica count")
        };
        if desired < allowed {
            return (allowed, reason, message);
        }
    }
    (desired, "DesiredWithinRange", "the desired count is within the acceptable range")
}

/// Records a scale from `from` to `to`, dropping events older than the longest policy period.
pub fn record_scale(memory: &mut Memory, now: i64, from: i64, to: i64, up: &Rules, down: &Rules) {
    let (up_keep, down_keep) = (up.longest_period(), down.longest_period());
    memory.scale_up_events.retain(|e| e.at > now - up_keep);
    memory.scale_down_events.retain(|e| e.at > now - down_keep);
    if to > from {
        memory.scale_up_events.push(Timed { at: now, value: to - from });
    } else if to < from {
        memory.scale_down_events.push(Timed { at: now, value: from - to });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_take_the_spec_and_fill_defaults() {
        let down = Rules::from_spec(Some(&json!({"stabilizationWindowSeconds": 0})), Rules::default_down());
        assert_eq!(down.stabilization_seconds, 0);
        assert_eq!(down.policies, Rules::default_down().policies);
        let up = Rules::from_spec(
            Some(&json!({"selectPolicy": "Min", "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]})),
            Rules::default_up(),
        );
        assert_eq!(up.select, Select::Min);
        assert_eq!(up.policies, vec![Policy { kind: PolicyKind::Pods, value: 1, period_seconds: 60 }]);
        assert_eq!(Rules::from_spec(None, Rules::default_down()).stabilization_seconds, 300);
    }

    #[test]
    fn scale_down_waits_for_the_window() {
        let (up, down) = (Rules::default_up(), Rules::default_down());
        let mut memory = Memory::default();
        assert_eq!(stabilize(&mut memory, 0, 3, 3, &up, &down).0, 3);
        // Load dropped: the recommendation of 1 is held at 3 for 300 s.
        assert_eq!(stabilize(&mut memory, 15, 3, 1, &up, &down), (3, "ScaleDownStabilized"));
        assert_eq!(stabilize(&mut memory, 290, 3, 1, &up, &down).0, 3);
        assert_eq!(stabilize(&mut memory, 301, 3, 1, &up, &down).0, 1);
        // Without a window the drop applies at once.
        let none = Rules { stabilization_seconds: 0, ..Rules::default_down() };
        let mut fresh = Memory::default();
        stabilize(&mut fresh, 0, 3, 3, &up, &none);
        assert_eq!(stabilize(&mut fresh, 15, 3, 1, &up, &none).0, 1);
        // Scaling up is not held back by default.
        assert_eq!(stabilize(&mut fresh, 30, 1, 5, &up, &none), (5, "ScaleUpStabilized"));
    }

    #[test]
    fn policies_limit_the_rate_and_min_max_the_range() {
        let (up, down) = (Rules::default_up(), Rules::default_down());
        let memory = Memory::default();
        // From 1: max(1 + 4, 2 × 1) = 5 per period.
        assert_eq!(
            limit(&memory, 0, (1, 10, 1, 20), &up, &down),
            (5, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
        );
        assert_eq!(limit(&memory, 0, (1, 4, 1, 3), &up, &down).0, 3);
        assert_eq!(limit(&memory, 0, (1, 4, 1, 3), &up, &down).1, "TooManyReplicas");
        assert_eq!(limit(&memory, 0, (3, 2, 1, 3), &up, &down).1, "DesiredWithinRange");
        assert_eq!(
            limit(&memory, 0, (3, 0, 1, 3), &up, &down),
            (1, "TooFewReplicas", "the desired replica count is less than the minimum replica count")
        );
        // A scale-up within the period counts against the next one.
        let mut recent = Memory::default();
        record_scale(&mut recent, 0, 1, 5, &up, &down);
        assert_eq!(limit(&recent, 10, (5, 20, 1, 20), &up, &down).0, 5);
        assert_eq!(limit(&recent, 16, (5, 20, 1, 20), &up, &down).0, 10);
        let one_pod = Rules { policies: vec![Policy { kind: PolicyKind::Pods, value: 1, period_seconds: 60 }], ..down };
        assert_eq!(limit(&Memory::default(), 0, (5, 1, 1, 5), &up, &one_pod).1, "ScaleDownLimit");
    }
}
