//! The server's sockets: UDP and TCP on each listen address, bound with
//! IP_FREEBIND so the node's DNS address may appear on the bridge after the
//! server starts (the pod network creates it a little later).

use super::error::DnsError;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use tokio::net::{TcpListener, UdpSocket};

/// Bound sockets, one UDP and one TCP per address.
pub struct Bound {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
    /// The addresses bound (with the port chosen when 0 was asked).
    pub addrs: Vec<SocketAddr>,
}

fn socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> Result<Socket, DnsError> {
    let domain = if addr.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, ty, Some(protocol)).map_err(DnsError::socket("create a socket for", addr))?;
    let freebind = if addr.is_ipv4() { socket.set_freebind_v4(true) } else { socket.set_freebind_v6(true) };
    freebind.map_err(DnsError::socket("set IP_FREEBIND for", addr))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(DnsError::socket("set IPV6_V6ONLY for", addr))?;
    }
    socket.set_reuse_address(true).map_err(DnsError::socket("set SO_REUSEADDR for", addr))?;
    socket.set_nonblocking(true).map_err(DnsError::socket("make non-blocking", addr))?;
    socket.bind(&addr.into()).map_err(DnsError::socket("bind", addr))?;
    Ok(socket)
}

pub fn udp(addr: SocketAddr) -> Result<UdpSocket, DnsError> {
    let socket = socket(addr, Type::DGRAM, Protocol::UDP)?;
    UdpSocket::from_std(socket.into()).map_err(DnsError::socket("register the UDP socket", addr))
}

pub fn tcp(addr: SocketAddr) -> Result<TcpListener, DnsError> {
    let socket = socket(addr, Type::STREAM, Protocol::TCP)?;
    socket.listen(1024).map_err(DnsError::socket("listen on", addr))?;
    TcpListener::from_std(socket.into()).map_err(DnsError::socket("register the TCP listener", addr))
}

/// Binds UDP and TCP on every address; port 0 picks one free for both.
pub fn bind_all(listen: &[SocketAddr]) -> Result<Bound, DnsError> {
    let mut bound = Bound { udp: Vec::new(), tcp: Vec::new(), addrs: Vec::new() };
    for addr in listen {
        let mut attempt = 0;
        loop {
            let udp = udp(*addr)?;
            let local = udp.local_addr().map_err(DnsError::socket("read the address of", *addr))?;
            match tcp(local) {
                Ok(tcp) => {
                    bound.udp.push(udp);
                    bound.tcp.push(tcp);
                    bound.addrs.push(local);
                    break;
                }
                // The UDP port picked for 0 may be taken over TCP: pick again.
                Err(_) if addr.port() == 0 && attempt < 10 => attempt += 1,
                Err(err) => return Err(err),
            }
        }
    }
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn port_zero_binds_udp_and_tcp_on_one_port() {
        let bound = bind_all(&["127.0.0.1:0".parse().unwrap()]).unwrap();
        let addr = bound.addrs[0];
        assert_ne!(addr.port(), 0);
        assert_eq!(bound.udp[0].local_addr().unwrap(), addr);
        assert_eq!(bound.tcp[0].local_addr().unwrap(), addr);
    }

    #[tokio::test]
    async fn an_address_the_host_does_not_have_yet_can_be_bound() {
        // TEST-NET-2 is on no interface; IP_FREEBIND lets the bind succeed
        // (nothing can reach it, so this exposes nothing).
        let bound = bind_all(&["198.51.100.77:0".parse().unwrap()]).unwrap();
        assert_eq!(bound.addrs[0].ip().to_string(), "198.51.100.77");
    }
}
