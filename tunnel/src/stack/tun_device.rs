//! Opening the TUN device. It is not persistent: when the process exits, even by SIGKILL,
//! the kernel deletes it together with its addresses and routes.
//!
//! A rootless run creates its device inside a namespace of its own ([`create`]) and hands
//! the descriptor to the daemon outside, which serves it ([`adopt`]).

use std::net::Ipv4Addr;
use std::os::fd::{IntoRawFd, OwnedFd};

use super::StackError;

fn configuration(name: &str, addr: Ipv4Addr, prefix: u8, mtu: u16) -> tun::Configuration {
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
    config
}

fn create_error(name: &str) -> impl FnOnce(tun::Error) -> StackError + '_ {
    move |source| StackError::CreateTun {
        name: name.to_owned(),
        source,
    }
}

/// Creates TUN device `name` with `addr/prefix`, the given MTU, and brings it up.
pub fn open(
    name: &str,
    addr: Ipv4Addr,
    prefix: u8,
    mtu: u16,
) -> Result<tun::AsyncDevice, StackError> {
    tun::create_as_async(&configuration(name, addr, prefix, mtu)).map_err(create_error(name))
}

/// [`open`], as a plain descriptor to pass to another process.
pub fn create(name: &str, addr: Ipv4Addr, prefix: u8, mtu: u16) -> Result<OwnedFd, StackError> {
    let device =
        tun::create(&configuration(name, addr, prefix, mtu)).map_err(create_error(name))?;
    // SAFETY: the device gives up its descriptor, so this is its only owner.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(device.into_raw_fd()) })
}

/// Serves a device another process created and configured (see [`create`]).
pub fn adopt(fd: OwnedFd, mtu: u16) -> Result<tun::AsyncDevice, StackError> {
    let mut config = tun::Configuration::default();
    config
        .raw_fd(fd.into_raw_fd())
        .close_fd_on_drop(true)
        .mtu(mtu);
    tun::create_as_async(&config).map_err(create_error("(inherited)"))
}
