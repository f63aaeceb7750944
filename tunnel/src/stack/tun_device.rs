//! Opening the TUN device. It is not persistent: when the process exits, even by SIGKILL,
//! the kernel deletes it together with its addresses and routes.

use std::net::Ipv4Addr;

use super::StackError;

/// Creates TUN device `name` with `addr/prefix`, the given MTU, and brings it up.
pub fn open(
    name: &str,
    addr: Ipv4Addr,
    prefix: u8,
    mtu: u16,
) -> Result<tun::AsyncDevice, StackError> {
    let mask = Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(prefix.min(32)))
            .unwrap_or(0),
    );
    let mut config = tun::Configuration::default();
    config
        .tun_name(name)
        .address(addr)
        .netmask(mask)
        .mtu(mtu)
        .up();
    tun::create_as_async(&config).map_err(|source| StackError::CreateTun {
        name: name.to_owned(),
        source,
    })
}
