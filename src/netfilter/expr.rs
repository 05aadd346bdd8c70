//! Small builders over the `nftables` crate's JSON schema types, so rules
//! read close to nft syntax (`ip daddr 10.43.0.1 tcp dport 80 goto X`).

use crate::server::config::Cidr;
use nftables::expr::{
    BinaryOperation, CT, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, NgMode, Numgen, Payload,
    PayloadField, Prefix, Verdict,
};
use nftables::stmt::{self, JumpTarget, Match, NAT, NATFamily, NATFlag, Operator, Reject, RejectType, Statement};
use nftables::types::RejectCode;
use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;

pub type Expr = Expression<'static>;
pub type Stmt = Statement<'static>;

/// The packet mark bit that asks `masquerading` to masquerade.
pub const MASQUERADE_MARK: u32 = 0x4000;

pub fn text(value: impl Into<String>) -> Expr {
    Expression::String(Cow::Owned(value.into()))
}

pub fn number(value: impl Into<u32>) -> Expr {
    Expression::Number(value.into())
}

/// `ip saddr`, `th dport`, …
pub fn payload(protocol: &'static str, field: &'static str) -> Expr {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
        protocol: Cow::Borrowed(protocol),
        field: Cow::Borrowed(field),
    })))
}

/// `ip daddr` / `ip6 daddr` for an address of that family.
pub fn addr_field(ip: &IpAddr, field: &'static str) -> Expr {
    payload(if ip.is_ipv4() { "ip" } else { "ip6" }, field)
}

pub fn meta(key: MetaKey) -> Expr {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

pub fn concat(parts: Vec<Expr>) -> Expr {
    Expression::Named(NamedExpression::Concat(parts))
}

pub fn prefix(cidr: &Cidr) -> Expr {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(text(cidr.addr.to_string())),
        len: u32::from(cidr.prefix),
    }))
}

/// `ip daddr . meta l4proto . th dport`: the key of the service maps.
pub fn daddr_proto_port() -> Expr {
    concat(vec![payload("ip", "daddr"), meta(MetaKey::L4proto), payload("th", "dport")])
}

/// `meta l4proto . th dport`: the key of the node-port maps.
pub fn proto_port() -> Expr {
    concat(vec![meta(MetaKey::L4proto), payload("th", "dport")])
}

pub fn compare(left: Expr, op: Operator, right: Expr) -> Stmt {
    Statement::Match(Match { left, right, op })
}

pub fn equals(left: Expr, right: Expr) -> Stmt {
    compare(left, Operator::EQ, right)
}

pub fn not_equals(left: Expr, right: Expr) -> Stmt {
    compare(left, Operator::NEQ, right)
}

/// `fib daddr type local`: the destination is one of this node's addresses.
pub fn daddr_is_local() -> Stmt {
    fib_is_local(FibFlag::Daddr)
}

/// `fib saddr type local`: the packet comes from this node itself.
pub fn saddr_is_local() -> Stmt {
    fib_is_local(FibFlag::Saddr)
}

fn fib_is_local(flag: FibFlag) -> Stmt {
    let fib = Fib { result: FibResult::Type, flags: HashSet::from([flag]) };
    equals(Expression::Named(NamedExpression::Fib(fib)), text("local"))
}

/// `ip daddr != 127.0.0.0/8`: never expose services on loopback (CVE-2020-8558).
pub fn daddr_not_loopback() -> Stmt {
    let loopback = Cidr { addr: std::net::Ipv4Addr::new(127, 0, 0, 0), prefix: 8 };
    not_equals(payload("ip", "daddr"), prefix(&loopback))
}

pub fn ct_state_new() -> Stmt {
    let state = Expression::Named(NamedExpression::CT(CT { key: Cow::Borrowed("state"), family: None, dir: None }));
    compare(state, Operator::IN, text("new"))
}

pub fn jump(chain: &str) -> Stmt {
    Statement::Jump(JumpTarget { target: Cow::Owned(chain.to_string()) })
}

pub fn goto(chain: &str) -> Stmt {
    Statement::Goto(JumpTarget { target: Cow::Owned(chain.to_string()) })
}

pub fn goto_verdict(chain: &str) -> Expr {
    Expression::Verdict(Verdict::Goto(JumpTarget { target: Cow::Owned(chain.to_string()) }))
}

/// `KEY vmap @MAP`.
pub fn vmap_lookup(key: Expr, map: &str) -> Stmt {
    Statement::VerdictMap(stmt::VerdictMap { key, data: text(format!("@{map}")) })
}

/// `numgen random mod N == 0`: true for one packet in `modulus`.
pub fn one_in(modulus: u32) -> Stmt {
    let random = Numgen { mode: NgMode::Random, ng_mod: modulus, offset: None };
    equals(Expression::Named(NamedExpression::Numgen(random)), number(0u32))
}

/// A uniform random `goto` among `chains`: rule i (of N) takes `1/(N-i)` of
/// what reaches it, the last takes the rest. Rules rather than one
/// `numgen … vmap { … }`: each anonymous map makes the kernel walk the whole
/// transaction when binding it, so a full rebuild grew quadratically
/// (10,000 Services: 212 s instead of ~20 s).
pub fn random_goto(chains: &[String]) -> Vec<Vec<Stmt>> {
    let count = u32::try_from(chains.len()).unwrap_or(u32::MAX);
    chains
        .iter()
        .zip(0u32..)
        .map(|(chain, index)| {
            let remaining = count - index;
            if remaining > 1 { vec![one_in(remaining), goto(chain)] } else { vec![goto(chain)] }
        })
        .collect()
}

/// `meta mark set meta mark | 0x4000`.
pub fn set_masquerade_mark() -> Stmt {
    let value = BinaryOperation::OR(vec![meta(MetaKey::Mark), number(MASQUERADE_MARK)]);
    Statement::Mangle(stmt::Mangle { key: meta(MetaKey::Mark), value: Expression::BinaryOperation(Box::new(value)) })
}

/// `meta mark set meta mark ^ 0x4000`.
pub fn clear_masquerade_mark() -> Stmt {
    let value = BinaryOperation::XOR(meta(MetaKey::Mark), number(MASQUERADE_MARK));
    Statement::Mangle(stmt::Mangle { key: meta(MetaKey::Mark), value: Expression::BinaryOperation(Box::new(value)) })
}

/// `meta mark & 0x4000 == 0`.
pub fn masquerade_mark_unset() -> Stmt {
    let masked = BinaryOperation::AND(meta(MetaKey::Mark), number(MASQUERADE_MARK));
    equals(Expression::BinaryOperation(Box::new(masked)), number(0u32))
}

pub fn masquerade(fully_random: bool) -> Stmt {
    let flags = fully_random.then(|| HashSet::from([NATFlag::FullyRandom]));
    Statement::Masquerade(Some(NAT { addr: None, family: None, port: None, flags }))
}

/// `dnat ip to ADDR:PORT` (an `meta l4proto` match must come before it).
pub fn dnat(ip: &IpAddr, port: u16) -> Stmt {
    let family = if ip.is_ipv4() { NATFamily::IP } else { NATFamily::IP6 };
    Statement::DNAT(Some(NAT {
        addr: Some(text(ip.to_string())),
        family: Some(family),
        port: Some(number(port)),
        flags: None,
    }))
}

pub fn reject_tcp_reset() -> Stmt {
    Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None)))
}

pub fn reject_port_unreachable() -> Stmt {
    Statement::Reject(Some(Reject::new(Some(RejectType::ICMPX), Some(RejectCode::PortUnreach))))
}

/// `update @SET { ip saddr }`: remember the client (session affinity).
pub fn remember_client(set: &str) -> Stmt {
    Statement::Set(stmt::Set {
        op: stmt::SetOp::Update,
        elem: payload("ip", "saddr"),
        set: Cow::Owned(format!("@{set}")),
    })
}

/// `ip saddr @SET`.
pub fn client_in(set: &str) -> Stmt {
    equals(payload("ip", "saddr"), text(format!("@{set}")))
}

/// `return`.
pub fn back() -> Stmt {
    Statement::Return(None)
}

pub fn drop() -> Stmt {
    Statement::Drop(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_goto_gives_each_chain_an_equal_share() {
        let chains: Vec<String> = ["a", "b", "c"].iter().map(|c| c.to_string()).collect();
        let rules = random_goto(&chains);
        assert_eq!(rules, vec![vec![one_in(3), goto("a")], vec![one_in(2), goto("b")], vec![goto("c")]]);
        // a: 1/3; b: 2/3 · 1/2 = 1/3; c: the remaining 1/3.
        assert_eq!(random_goto(&chains[..1]), vec![vec![goto("a")]]);
    }
}
