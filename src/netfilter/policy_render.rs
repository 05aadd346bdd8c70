//! NetworkPolicy decisions rendered as nft chains. Pure.
//!
//! `filter-forward` jumps to `pod-policy` for new connections (replies of
//! allowed ones pass as established). `pod-policy` dispatches by address
//! with one verdict map per direction, so a packet's cost does not grow with
//! the number of pods or policies:
//!
//! ```text
//! chain pod-policy {
//!     fib saddr type local return                   # the node itself (probes)
//!     ip daddr vmap { 10.42.0.5 : jump ingress-default/web, … }
//!     ip saddr vmap { 10.42.0.7 : jump egress-default/client, … }
//! }
//! chain ingress-default/web {
//!     ip saddr { 10.42.0.6, 10.42.1.9 } tcp dport 80 return   # one rule per allowed peer
//!     drop
//! }
//! ```
//!
//! A rule `return`s when it allows, so a packet between two isolated local
//! pods passes the destination's ingress chain and then the source's
//! egress chain; the last rule of each per-pod chain drops.

use super::expr::{self, Expr, Stmt};
use super::model::Protocol;
use super::policy_model::{Allow, Peer, PodPolicy, PortRange};
use super::render::Fragment;
use nftables::expr::{Expression, NamedExpression, Range, SetItem};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The chain `filter-forward` jumps to; always present (empty without policies).
pub const POLICY_CHAIN: &str = "pod-policy";

/// The chains for this node's isolated pods.
pub fn render_policies(pods: &[PodPolicy]) -> Fragment {
    let mut fragment = Fragment::default();
    let mut ingress_map = Vec::new();
    let mut egress_map = Vec::new();
    for pod in pods {
        if let Some(allows) = &pod.ingress {
            let chain = format!("ingress-{}", pod.pod);
            fragment.chains.insert(chain.clone(), pod_rules(allows, "saddr"));
            ingress_map.push((pod.ip, chain));
        }
        if let Some(allows) = &pod.egress {
            let chain = format!("egress-{}", pod.pod);
            fragment.chains.insert(chain.clone(), pod_rules(allows, "daddr"));
            egress_map.push((pod.ip, chain));
        }
    }
    let mut dispatch = Vec::new();
    if !ingress_map.is_empty() || !egress_map.is_empty() {
        dispatch.push(vec![expr::saddr_is_local(), expr::back()]);
    }
    for (field, map) in [("daddr", ingress_map), ("saddr", egress_map)] {
        if !map.is_empty() {
            dispatch.push(vec![jump_map(expr::payload("ip", field), &map)]);
        }
    }
    fragment.chains.insert(POLICY_CHAIN.to_string(), dispatch);
    fragment
}

/// `KEY vmap { ip : jump chain, … }`.
fn jump_map(key: Expr, entries: &[(Ipv4Addr, String)]) -> Stmt {
    let items =
        entries.iter().map(|(ip, chain)| SetItem::Mapping(expr::text(ip.to_string()), jump_verdict(chain))).collect();
    Stmt::VerdictMap(nftables::stmt::VerdictMap { key, data: Expression::Named(NamedExpression::Set(items)) })
}

fn jump_verdict(chain: &str) -> Expr {
    Expression::Verdict(nftables::expr::Verdict::Jump(nftables::stmt::JumpTarget {
        target: std::borrow::Cow::Owned(chain.to_string()),
    }))
}

/// One `… return` rule per allowed (peer, protocol), then `drop`. `field`
/// is the peer's side: `saddr` for ingress, `daddr` for egress.
fn pod_rules(allows: &[Allow], field: &'static str) -> Vec<Vec<Stmt>> {
    let mut rules = Vec::new();
    for allow in allows {
        let peer = peer_match(&allow.peer, field);
        match &allow.ports {
            None => rules.push([peer, vec![expr::back()]].concat()),
            Some(ranges) => {
                let mut by_protocol: BTreeMap<Protocol, Vec<PortRange>> = BTreeMap::new();
                for range in ranges {
                    by_protocol.entry(range.protocol).or_default().push(*range);
                }
                let by_protocol = by_protocol.into_iter().map(|(protocol, ranges)| (protocol, merged(ranges)));
                for (protocol, ranges) in by_protocol {
                    rules.push([peer.clone(), port_match(protocol, &ranges), vec![expr::back()]].concat());
                }
            }
        }
    }
    rules.push(vec![expr::drop()]);
    rules
}

/// Overlapping or adjacent ranges joined (nft refuses overlapping set elements).
fn merged(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort();
    let mut joined: Vec<PortRange> = Vec::new();
    for range in ranges {
        match joined.last_mut() {
            Some(last) if u32::from(range.first) <= u32::from(last.last) + 1 => last.last = last.last.max(range.last),
            _ => joined.push(range),
        }
    }
    joined
}

fn prefix(addr: Ipv4Addr, len: u8) -> Expr {
    expr::prefix(&crate::server::config::Cidr { addr, prefix: len })
}

fn peer_match(peer: &Peer, field: &'static str) -> Vec<Stmt> {
    let field = || expr::payload("ip", field);
    match peer {
        Peer::Any => Vec::new(),
        Peer::Pods(ips) if ips.len() == 1 => {
            ips.iter().map(|ip| expr::equals(field(), expr::text(ip.to_string()))).collect()
        }
        Peer::Pods(ips) => {
            let items = ips.iter().map(|ip| SetItem::Element(expr::text(ip.to_string()))).collect();
            vec![expr::equals(field(), Expression::Named(NamedExpression::Set(items)))]
        }
        Peer::Block { cidr, except } => {
            let mut stmts = vec![expr::equals(field(), prefix(cidr.0, cidr.1))];
            if !except.is_empty() {
                let items = except.iter().map(|(addr, len)| SetItem::Element(prefix(*addr, *len))).collect();
                stmts.push(expr::not_equals(field(), Expression::Named(NamedExpression::Set(items))));
            }
            stmts
        }
    }
}

/// `tcp dport 80`, `tcp dport { 80, 8000-8080 }`, or `meta l4proto tcp`
/// when every port of the protocol is allowed.
fn port_match(protocol: Protocol, ranges: &[PortRange]) -> Vec<Stmt> {
    if ranges.iter().any(|r| r.first == 0 && r.last == u16::MAX) {
        return vec![expr::equals(expr::meta(nftables::expr::MetaKey::L4proto), expr::text(protocol.nft()))];
    }
    let port = |range: &PortRange| -> Expr {
        if range.first == range.last {
            expr::number(range.first)
        } else {
            Expression::Range(Box::new(Range { range: [expr::number(range.first), expr::number(range.last)] }))
        }
    };
    let dport = expr::payload(protocol.nft(), "dport");
    let value = match ranges {
        [single] => port(single),
        _ => Expression::Named(NamedExpression::Set(ranges.iter().map(|r| SetItem::Element(port(r))).collect())),
    };
    vec![expr::equals(dport, value)]
}
