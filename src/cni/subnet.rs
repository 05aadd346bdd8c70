//! An IP subnet (`10.42.0.0/24`, `fd00::/64`) with the address arithmetic
//! IPAM and routing need; IPv4 and IPv6 alike (numbers are u128).

use super::error::{CniError, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    /// The network address (host bits zero).
    pub addr: IpAddr,
    pub prefix: u8,
}

fn bits(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn to_number(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_number(ipv4: bool, n: u128) -> IpAddr {
    if ipv4 { IpAddr::V4(Ipv4Addr::from(n as u32)) } else { IpAddr::V6(Ipv6Addr::from(n)) }
}

impl Subnet {
    /// Parses `addr/prefix`; host bits must be zero.
    pub fn parse(text: &str) -> Result<Subnet> {
        let bad = |message: &str| CniError::Subnet { text: text.into(), message: message.into() };
        let (addr, prefix) = text.trim().split_once('/').ok_or_else(|| bad("expected address/prefix"))?;
        let addr: IpAddr = addr.parse().map_err(|_| bad("bad address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
        if prefix > bits(addr) {
            return Err(bad("prefix length too long"));
        }
        let subnet = Subnet { addr, prefix };
        if subnet.network() != addr {
            return Err(bad("host bits are set"));
        }
        Ok(subnet)
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    fn host_bits(&self) -> u32 {
        u32::from(bits(self.addr) - self.prefix)
    }

    fn mask(&self) -> u128 {
        let all = if self.is_ipv4() { u128::from(u32::MAX) } else { u128::MAX };
        all.checked_shl(self.host_bits()).unwrap_or(0) & all
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        from_number(self.is_ipv4(), to_number(self.addr) & self.mask())
    }

    /// The `n`th address of the subnet (0 = the network address); `None` past its end.
    pub fn nth(&self, n: u128) -> Option<IpAddr> {
        (n < self.size()).then(|| from_number(self.is_ipv4(), (to_number(self.addr) & self.mask()) + n))
    }

    /// How many addresses the subnet spans (saturating for a whole IPv6 space).
    pub fn size(&self) -> u128 {
        1u128.checked_shl(self.host_bits()).unwrap_or(u128::MAX)
    }

    /// The position of `ip` in the subnet, if it is inside.
    pub fn index_of(&self, ip: IpAddr) -> Option<u128> {
        (ip.is_ipv4() == self.is_ipv4() && to_number(ip) & self.mask() == to_number(self.addr) & self.mask())
            .then(|| to_number(ip) - (to_number(self.addr) & self.mask()))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.index_of(ip).is_some()
    }

    /// The gateway of a pod subnet: its first usable address.
    pub fn gateway(&self) -> Option<IpAddr> {
        self.nth(1)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_arithmetic() {
        let net = Subnet::parse("10.42.3.0/24").expect("parse");
        assert_eq!(net.size(), 256);
        assert_eq!(net.gateway(), Some("10.42.3.1".parse().expect("ip")));
        assert_eq!(net.nth(255), Some("10.42.3.255".parse().expect("ip")));
        assert_eq!(net.nth(256), None);
        assert_eq!(net.index_of("10.42.3.7".parse().expect("ip")), Some(7));
        assert!(!net.contains("10.42.4.7".parse().expect("ip")));
        assert!(!net.contains("::1".parse().expect("ip")));
        assert_eq!(net.to_string(), "10.42.3.0/24");
    }

    #[test]
    fn ipv6_arithmetic_and_errors() {
        let net = Subnet::parse("fd00:42::/64").expect("parse");
        assert_eq!(net.gateway(), Some("fd00:42::1".parse().expect("ip")));
        assert_eq!(net.index_of("fd00:42::ff".parse().expect("ip")), Some(255));
        assert!(Subnet::parse("10.42.0.1/24").is_err_and(|e| e.to_string().contains("host bits")));
        assert!(Subnet::parse("10.42.0.0/33").is_err());
        assert!(Subnet::parse("10.42.0.0").is_err());
        assert_eq!(Subnet::parse("0.0.0.0/0").expect("all").size(), 1 << 32);
    }
}
