//! The fixed part of the table: hook chains, the shared verdict maps, the
//! reject / masquerade helpers, pod-egress masquerade and the cluster DNS
//! DNAT. Depends only on [`ProxyConfig`], never on Services.

use super::ProxyConfig;
use super::expr::{self, Stmt};
use super::render::Fragment;
use nftables::expr::MetaKey;
use nftables::types::{NfChainType, NfHook};

pub const SERVICES: &str = "services";
pub const ENDPOINTS_CHECK: &str = "endpoints-check";
pub const REJECT: &str = "reject-chain";
pub const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
pub const MASQUERADING: &str = "masquerading";

/// A chain attached to a netfilter hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookChain {
    pub name: &'static str,
    pub kind: NfChainType,
    pub hook: NfHook,
    pub priority: i32,
}

/// The hook chains: NAT at dstnat/srcnat priority, the no-endpoint checks
/// in the filter hooks just before the default filter priority (reject is
/// only allowed there).
pub const HOOK_CHAINS: [HookChain; 6] = [
    HookChain { name: "nat-prerouting", kind: NfChainType::NAT, hook: NfHook::Prerouting, priority: -100 },
    HookChain { name: "nat-output", kind: NfChainType::NAT, hook: NfHook::Output, priority: -100 },
    HookChain { name: "nat-postrouting", kind: NfChainType::NAT, hook: NfHook::Postrouting, priority: 100 },
    HookChain { name: "filter-input", kind: NfChainType::Filter, hook: NfHook::Input, priority: -10 },
    HookChain { name: "filter-forward", kind: NfChainType::Filter, hook: NfHook::Forward, priority: -10 },
    HookChain { name: "filter-output", kind: NfChainType::Filter, hook: NfHook::Output, priority: -10 },
];

pub fn hook_of(chain: &str) -> Option<&'static HookChain> {
    HOOK_CHAINS.iter().find(|h| h.name == chain)
}

/// The fixed chains and their rules for this configuration.
pub fn render_base(config: &ProxyConfig) -> Fragment {
    let mut fragment = Fragment::default();
    let mut chain = |name: &str, rules: Vec<Vec<Stmt>>| {
        fragment.chains.insert(name.to_string(), rules);
    };
    chain("nat-prerouting", vec![vec![expr::jump(SERVICES)]]);
    chain("nat-output", vec![vec![expr::jump(SERVICES)]]);
    chain("nat-postrouting", postrouting_rules(config));
    for filter in ["filter-input", "filter-forward", "filter-output"] {
        let mut rules = vec![vec![expr::ct_state_new(), expr::jump(ENDPOINTS_CHECK)]];
        if filter == "filter-forward" {
            // NetworkPolicy for pod traffic (bridged traffic too, via br_netfilter).
            rules.push(vec![expr::ct_state_new(), expr::jump(super::policy_render::POLICY_CHAIN)]);
        }
        chain(filter, rules);
    }
    chain(SERVICES, services_rules(config));
    chain(ENDPOINTS_CHECK, endpoints_check_rules(config));
    chain(
        REJECT,
        vec![
            vec![expr::equals(expr::meta(MetaKey::L4proto), expr::text("tcp")), expr::reject_tcp_reset()],
            vec![expr::reject_port_unreachable()],
        ],
    );
    chain(MARK_FOR_MASQUERADE, vec![vec![expr::set_masquerade_mark()]]);
    chain(
        MASQUERADING,
        vec![
            vec![expr::masquerade_mark_unset(), expr::back()],
            vec![expr::clear_masquerade_mark()],
            vec![expr::masquerade(true)],
        ],
    );
    fragment
}

/// Cluster DNS first (it wins over a Service with the same address), then
/// the ClusterIP / external-IP map, then node ports on every node address
/// except loopback (CVE-2020-8558; `route_localnet` stays off).
fn services_rules(config: &ProxyConfig) -> Vec<Vec<Stmt>> {
    let mut rules = Vec::new();
    if let (Some(dns), Some(target)) = (config.cluster_dns, config.dns_target) {
        for protocol in ["udp", "tcp"] {
            rules.push(vec![
                expr::equals(expr::payload("ip", "daddr"), expr::text(dns.to_string())),
                expr::equals(expr::payload(protocol, "dport"), expr::number(53u32)),
                expr::dnat(&target.into(), 53),
            ]);
        }
    }
    rules.push(vec![expr::vmap_lookup(expr::daddr_proto_port(), "service-ips")]);
    rules.push(vec![
        expr::daddr_not_loopback(),
        expr::daddr_is_local(),
        expr::vmap_lookup(expr::proto_port(), "service-nodeports"),
    ]);
    rules
}

/// New connections to a Service without endpoints are refused; other
/// addresses of the service network (no Service) are refused too.
fn endpoints_check_rules(config: &ProxyConfig) -> Vec<Vec<Stmt>> {
    let mut rules = vec![
        vec![expr::vmap_lookup(expr::daddr_proto_port(), "no-endpoint-services")],
        vec![
            expr::daddr_not_loopback(),
            expr::daddr_is_local(),
            expr::vmap_lookup(expr::proto_port(), "no-endpoint-nodeports"),
        ],
    ];
    if let Some(cidr) = &config.service_cidr {
        rules.push(vec![expr::equals(expr::payload("ip", "daddr"), expr::prefix(cidr)), expr::goto(REJECT)]);
    }
    rules
}

/// Marked connections (off-cluster clients, hairpin) and pod traffic
/// leaving the cluster network are masqueraded.
fn postrouting_rules(config: &ProxyConfig) -> Vec<Vec<Stmt>> {
    let mut rules = vec![vec![expr::jump(MASQUERADING)]];
    if let Some(cidr) = &config.cluster_cidr {
        rules.push(vec![
            expr::equals(expr::payload("ip", "saddr"), expr::prefix(cidr)),
            expr::not_equals(expr::payload("ip", "daddr"), expr::prefix(cidr)),
            expr::masquerade(false),
        ]);
    }
    rules
}
