//! The pure arithmetic of Deployment rollouts: the pod-template hash that
//! names ReplicaSets, int-or-percent resolution of maxSurge/maxUnavailable
//! and the rolling-update step (how far to scale the new and old sets).

use serde_json::Value;

/// JSON with object keys sorted, so equal templates hash equally whatever
/// order their fields arrived in.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |hash, b| (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// Upstream's `rand.SafeEncodeString`: no vowels, no look-alike characters.
fn safe_encode(text: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    text.bytes().map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char).collect()
}

/// The `pod-template-hash` of a pod template (and the deployment's collision count).
pub fn template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut text = String::new();
    canonical(template, &mut text);
    if let Some(count) = collision_count {
        text.push_str(&count.to_string());
    }
    safe_encode(&fnv32a(text.as_bytes()).to_string())
}

/// An int-or-percent value against `total`: percentages round up or down.
pub fn resolve(value: Option<&Value>, total: i64, round_up: bool, default: i64) -> i64 {
    match value {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(default),
        Some(Value::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(percent) if round_up => (percent * total + 99) / 100,
            Some(percent) => percent * total / 100,
            None => s.parse().unwrap_or(default),
        },
        _ => default,
    }
}

/// maxSurge and maxUnavailable of a rolling update; both zero becomes (0, 1) as upstream.
pub fn surge_and_unavailable(rolling: Option<&Value>, replicas: i64) -> (i64, i64) {
    let surge = resolve(rolling.and_then(|r| r.get("maxSurge")), replicas, true, 0).max(0);
    let unavailable = resolve(rolling.and_then(|r| r.get("maxUnavailable")), replicas, false, 0).max(0);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable.min(replicas)) }
}

/// A ReplicaSet as the rollout sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Set {
    /// spec.replicas
    pub replicas: i64,
    /// status.availableReplicas
    pub available: i64,
}

/// The new set's target size (upstream `NewRSNewReplicas` for RollingUpdate).
pub fn new_replicas(desired: i64, surge: i64, new: Set, olds: &[Set]) -> i64 {
    if new.replicas >= desired {
        return desired;
    }
    let current: i64 = new.replicas + olds.iter().map(|s| s.replicas).sum::<i64>();
    let max_total = desired + surge;
    if current >= max_total {
        return new.replicas;
    }
    new.replicas + (max_total - current).min(desired - new.replicas)
}

/// The old sets' target sizes (upstream `reconcileOldReplicaSets`): first
/// unavailable old pods go, then available ones while availability allows.
/// `olds` are ordered oldest first.
pub fn old_replicas(desired: i64, unavailable: i64, new: Set, olds: &[Set]) -> Vec<i64> {
    let mut sizes: Vec<i64> = olds.iter().map(|s| s.replicas).collect();
    let old_total: i64 = sizes.iter().sum();
    if old_total == 0 {
        return sizes;
    }
    let all: i64 = new.replicas + old_total;
    let min_available = desired - unavailable;
    let new_unavailable = (new.replicas - new.available).max(0);
    let mut budget = all - min_available - new_unavailable;
    if budget <= 0 {
        return sizes;
    }
    // Unhealthy old pods first: they do not count towards availability.
    for (size, set) in sizes.iter_mut().zip(olds) {
        let unhealthy = (*size - set.available).max(0).min(budget);
        *size -= unhealthy;
        budget -= unhealthy;
    }
    // Then available ones, as long as enough stay available.
    let available: i64 =
        new.available + sizes.iter().zip(olds).map(|(size, set)| set.available.min(*size)).sum::<i64>();
    let mut scale_down = (available - min_available).max(0);
    for size in sizes.iter_mut() {
        let step = (*size).min(scale_down);
        *size -= step;
        scale_down -= step;
    }
    sizes
}

/// A replica set in a proportional scale: its size and its
/// `deployment.kubernetes.io/max-replicas` annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sized {
    pub replicas: i64,
    pub max_replicas: Option<i64>,
}

/// Upstream's proportional scaling of a deployment scaled mid-rollout: the
/// active sets share the change in proportion to their sizes (against the
/// size they were made for), the remainder going to the largest. `sets` are
/// ordered oldest first; `current_total` stands in for a missing annotation.
pub fn proportional(desired: i64, surge: i64, sets: &[Sized], current_total: i64) -> Vec<i64> {
    let mut sizes: Vec<i64> = sets.iter().map(|s| s.replicas).collect();
    let total: i64 = sizes.iter().filter(|s| **s > 0).sum();
    let allowed = desired + surge;
    let to_add = allowed - total;
    if to_add == 0 {
        return sizes;
    }
    // Largest first; ties go to the newer set when growing, the older when shrinking.
    let mut order: Vec<usize> = (0..sets.len()).collect();
    order.sort_by(|a, b| {
        let by_size = sets[*b].replicas.cmp(&sets[*a].replicas);
        if to_add > 0 { by_size.then(b.cmp(a)) } else { by_size.then(a.cmp(b)) }
    });
    let mut added = 0;
    for &i in &order {
        let set = sets[i];
        if set.replicas == 0 || added == to_add {
            continue;
        }
        let fraction = if desired == 0 {
            -set.replicas
        } else {
            let max = set.max_replicas.filter(|m| *m > 0).unwrap_or(current_total.max(1));
            // Rounded like Go's math.Round on the float ratio.
            let scaled = (set.replicas as f64 * allowed as f64 / max as f64).round() as i64;
            scaled - set.replicas
        };
        let room = to_add - added;
        let proportion = if to_add > 0 { fraction.min(room) } else { fraction.max(room) };
        sizes[i] += proportion;
        added += proportion;
    }
    if let Some(&first) = order.first() {
        sizes[first] = (sizes[first] + to_add - added).max(0);
    }
    sizes.iter().map(|s| (*s).max(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn template_hash_is_stable_and_order_independent() {
        let a = json!({"metadata": {"labels": {"app": "web", "tier": "a"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}});
        let b = json!({"spec": {"containers": [{"image": "nginx", "name": "web"}]}, "metadata": {"labels": {"tier": "a", "app": "web"}}});
        assert_eq!(template_hash(&a, None), template_hash(&b, None));
        assert_eq!(template_hash(&a, None), "746949d958");
        let c = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:2"}]}});
        assert_ne!(template_hash(&a, None), template_hash(&c, None));
        assert_ne!(template_hash(&a, None), template_hash(&a, Some(1)));
        assert!(template_hash(&a, None).chars().all(|ch| "bcdfghjklmnpqrstvwxz2456789".contains(ch)));
    }

    #[test]
    fn percentages_round_like_upstream() {
        assert_eq!(surge_and_unavailable(Some(&json!({"maxSurge": "25%", "maxUnavailable": "25%"})), 3), (1, 0));
        assert_eq!(surge_and_unavailable(Some(&json!({"maxSurge": "25%", "maxUnavailable": "25%"})), 10), (3, 2));
        assert_eq!(surge_and_unavailable(Some(&json!({"maxSurge": 0, "maxUnavailable": 0})), 3), (0, 1));
        assert_eq!(surge_and_unavailable(Some(&json!({"maxSurge": 2, "maxUnavailable": "50%"})), 3), (2, 1));
    }

    #[test]
    fn rolling_update_surges_then_scales_old_down() {
        // 3 replicas, surge 1, unavailable 0: one new pod at a time.
        let old = [Set { replicas: 3, available: 3 }];
        let new = Set { replicas: 0, available: 0 };
        assert_eq!(new_replicas(3, 1, new, &old), 1);
        // The new pod is not available yet: nothing old may go.
        let new = Set { replicas: 1, available: 0 };
        assert_eq!(old_replicas(3, 0, new, &old), [3]);
        assert_eq!(new_replicas(3, 1, new, &old), 1);
        // Once it is available, one old pod goes.
        let new = Set { replicas: 1, available: 1 };
        assert_eq!(old_replicas(3, 0, new, &old), [2]);
        // Scaling an up-to-date deployment moves the new set straight to the target.
        assert_eq!(new_replicas(5, 1, Set { replicas: 3, available: 3 }, &[]), 5);
        assert_eq!(new_replicas(1, 1, Set { replicas: 3, available: 3 }, &[]), 1);
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        // 10 replicas, surge 3: old 8 and new 5 (max 13), scaled to 20 (max 25).
        let sets = [Sized { replicas: 8, max_replicas: Some(13) }, Sized { replicas: 5, max_replicas: Some(13) }];
        let sizes = proportional(20, 5, &sets, 13);
        assert_eq!(sizes.iter().sum::<i64>(), 25);
        assert_eq!(sizes, [15, 10]);
        // Scaling down to 5 (max 7, surge 2).
        let sizes = proportional(5, 2, &sets, 13);
        assert_eq!(sizes.iter().sum::<i64>(), 7);
        assert_eq!(sizes, [4, 3]);
        // Nothing to do when the total already fits.
        assert_eq!(proportional(10, 3, &sets, 13), [8, 5]);
    }

    #[test]
    fn unhealthy_old_pods_go_first() {
        let olds = [Set { replicas: 2, available: 0 }, Set { replicas: 2, available: 2 }];
        let new = Set { replicas: 1, available: 1 };
        // desired 4, unavailable 1: min available 3; all 5; budget 5-3-0 = 2.
        assert_eq!(old_replicas(4, 1, new, &olds), [0, 2]);
    }
}
