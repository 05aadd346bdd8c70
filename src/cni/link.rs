//! Small rtnetlink helpers the bridge, veth and VXLAN code share: find a
//! link, read its MTU/MAC, bring it up, delete it, add an address.

use super::error::{CniError, Result, errno};
use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};
use std::net::IpAddr;

/// The link named `name`, if it exists.
pub async fn by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    match handle.link().get().match_name(name.to_string()).execute().try_next().await {
        Ok(link) => Ok(link),
        Err(err) if errno(&err) == Some(libc::ENODEV) => Ok(None),
        Err(err) => Err(CniError::netlink(format!("look up link {name}"))(err)),
    }
}

/// The link with index `index`.
pub async fn by_index(handle: &Handle, index: u32) -> Result<Option<LinkMessage>> {
    match handle.link().get().match_index(index).execute().try_next().await {
        Ok(link) => Ok(link),
        Err(err) if errno(&err) == Some(libc::ENODEV) => Ok(None),
        Err(err) => Err(CniError::netlink(format!("look up link #{index}"))(err)),
    }
}

pub fn mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

pub fn mac(link: &LinkMessage) -> Option<Vec<u8>> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => Some(mac.clone()),
        _ => None,
    })
}

pub fn name(link: &LinkMessage) -> String {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Sets the link up (and its MTU, when given).
pub async fn set_up(handle: &Handle, index: u32, mtu: Option<u32>, what: &str) -> Result<()> {
    let mut message = LinkUnspec::new_with_index(index).up();
    if let Some(mtu) = mtu {
        message = message.mtu(mtu);
    }
    handle.link().set(message.build()).execute().await.map_err(CniError::netlink(format!("bring {what} up")))
}

/// Deletes the link named `name`; nothing to do when it does not exist.
pub async fn delete_by_name(handle: &Handle, name: &str) -> Result<bool> {
    let Some(link) = by_name(handle, name).await? else { return Ok(false) };
    match handle.link().del(link.header.index).execute().await {
        Ok(()) => Ok(true),
        Err(err) if errno(&err) == Some(libc::ENODEV) => Ok(false),
        Err(err) => Err(CniError::netlink(format!("delete link {name}"))(err)),
    }
}

/// Adds `ip/prefix` to the link; an address already there is fine.
pub async fn add_address(handle: &Handle, index: u32, ip: IpAddr, prefix: u8, what: &str) -> Result<()> {
    match handle.address().add(index, ip, prefix).execute().await {
        Ok(()) => Ok(()),
        Err(err) if errno(&err) == Some(libc::EEXIST) => Ok(()),
        Err(err) => Err(CniError::netlink(format!("add address {ip}/{prefix} to {what}"))(err)),
    }
}

/// The index of the link holding `ip`, if one does.
pub async fn holding_address(handle: &Handle, ip: IpAddr) -> Result<Option<u32>> {
    let mut addresses = handle.address().get().execute();
    while let Some(message) = addresses.try_next().await.map_err(CniError::netlink("list addresses"))? {
        if message
            .attributes
            .iter()
            .any(|a| matches!(a, AddressAttribute::Address(a) | AddressAttribute::Local(a) if *a == ip))
        {
            return Ok(Some(message.header.index));
        }
    }
    Ok(None)
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = text.split(':').map(|p| u8::from_str_radix(p, 16).ok()).collect::<Option<_>>()?;
    parts.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_round_trip() {
        let mac = parse_mac("0a:1B:02:ff:00:9c").expect("mac");
        assert_eq!(format_mac(&mac), "0a:1b:02:ff:00:9c");
        assert_eq!(parse_mac("0a:1b:02"), None);
        assert_eq!(parse_mac("zz:1b:02:ff:00:9c"), None);
    }
}
