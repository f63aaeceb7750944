//! Classifying packets from the TUN device and building the UDP packets sent back to it.
//! Parsing uses smoltcp's checked views: a malformed packet is classified as `Drop`.

use std::net::{SocketAddr, SocketAddrV4};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
    TcpPacket, UdpPacket, UdpRepr,
};

/// What the stack should do with one packet from the TUN device.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// A TCP SYN opening a new connection from `src` to `dst`.
    TcpSyn { src: SocketAddr, dst: SocketAddr },
    /// Any other TCP segment: smoltcp handles it.
    Tcp,
    /// A UDP datagram.
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: &'a [u8],
    },
    /// Not something tether carries (ICMP, IPv6 for now, fragments, garbage).
    Drop,
}

pub fn classify(packet: &[u8]) -> Inbound<'_> {
    let Ok(ip) = Ipv4Packet::new_checked(packet) else {
        return Inbound::Drop;
    };
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Inbound::Drop;
    }
    let src = ip.src_addr();
    let dst = ip.dst_addr();
    let header_len = usize::from(ip.header_len());
    let total = usize::from(ip.total_len()).min(packet.len());
    let Some(payload) = packet.get(header_len..total) else {
        return Inbound::Drop;
    };
    match ip.next_header() {
        IpProtocol::Tcp => match TcpPacket::new_checked(payload) {
            Ok(tcp) if tcp.syn() && !tcp.ack() => Inbound::TcpSyn {
                src: SocketAddrV4::new(src, tcp.src_port()).into(),
                dst: SocketAddrV4::new(dst, tcp.dst_port()).into(),
            },
            Ok(_) => Inbound::Tcp,
            Err(_) => Inbound::Drop,
        },
        IpProtocol::Udp => match UdpPacket::new_checked(payload) {
            Ok(udp) => {
                let len = usize::from(udp.len()).min(payload.len());
                Inbound::Udp {
                    src: SocketAddrV4::new(src, udp.src_port()).into(),
                    dst: SocketAddrV4::new(dst, udp.dst_port()).into(),
                    payload: &payload[8.min(len)..len],
                }
            }
            Err(_) => Inbound::Drop,
        },
        _ => Inbound::Drop,
    }
}

/// Builds an IPv4 UDP packet; `None` when the addresses are not both IPv4 or the payload
/// does not fit in one IPv4 packet.
pub fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        return None;
    };
    let udp = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    let udp_len = udp.header_len() + payload.len();
    let ip = Ipv4Repr {
        src_addr: *src.ip(),
        dst_addr: *dst.ip(),
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: 64,
    };
    let total = ip.buffer_len() + udp_len;
    if total > usize::from(u16::MAX) {
        return None;
    }
    let mut buf = vec![0u8; total];
    let caps = ChecksumCapabilities::default();
    let mut ip_packet = Ipv4Packet::new_unchecked(&mut buf[..]);
    ip.emit(&mut ip_packet, &caps);
    let mut udp_packet = UdpPacket::new_unchecked(ip_packet.payload_mut());
    udp.emit(
        &mut udp_packet,
        &IpAddress::Ipv4(*src.ip()),
        &IpAddress::Ipv4(*dst.ip()),
        payload.len(),
        |out| out.copy_from_slice(payload),
        &caps,
    );
    Some(buf)
}

/// An ICMP "host unreachable" about `original` (an IPv4 packet from the laptop), as a router
/// would send it: the laptop's connect() then fails with "No route to host" at once.
pub fn host_unreachable(original: &[u8]) -> Option<Vec<u8>> {
    let ip = Ipv4Packet::new_checked(original).ok()?;
    let header = Ipv4Repr::parse(&ip, &ChecksumCapabilities::ignored()).ok()?;
    // RFC 792: the original IP header and the first 8 bytes of its payload.
    let payload = ip.payload();
    let icmp = Icmpv4Repr::DstUnreachable {
        reason: Icmpv4DstUnreachable::HostUnreachable,
        header,
        data: &payload[..payload.len().min(8)],
    };
    let reply = Ipv4Repr {
        src_addr: header.dst_addr,
        dst_addr: header.src_addr,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let mut buf = vec![0u8; reply.buffer_len() + icmp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut reply_packet = Ipv4Packet::new_unchecked(&mut buf[..]);
    reply.emit(&mut reply_packet, &caps);
    icmp.emit(
        &mut Icmpv4Packet::new_unchecked(reply_packet.payload_mut()),
        &caps,
    );
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn udp_round_trip() {
        let src: SocketAddr = "10.1.2.3:5353".parse().unwrap();
        let dst: SocketAddr = "10.9.8.7:53".parse().unwrap();
        let packet = udp_packet(src, dst, b"hello").unwrap();
        assert_eq!(
            classify(&packet),
            Inbound::Udp {
                src,
                dst,
                payload: b"hello"
            }
        );
    }

    #[test]
    fn host_unreachable_quotes_the_original() {
        let src: SocketAddr = "10.1.2.3:40000".parse().unwrap();
        let dst: SocketAddr = "10.9.8.7:80".parse().unwrap();
        let original = udp_packet(src, dst, b"payload!and more").unwrap();
        let icmp = host_unreachable(&original).unwrap();
        let ip = Ipv4Packet::new_checked(&icmp[..]).unwrap();
        assert_eq!(ip.next_header(), IpProtocol::Icmp);
        assert_eq!(IpAddress::Ipv4(ip.dst_addr()), IpAddress::from(src.ip()));
        // smoltcp's own parser insists on a complete quoted packet, so read the fields: type
        // 3 (destination unreachable), code 1 (host), then the quoted header and 8 bytes.
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(
            icmp.msg_type(),
            smoltcp::wire::Icmpv4Message::DstUnreachable
        );
        assert_eq!(icmp.msg_code(), 1);
        assert_eq!(&icmp.data()[..28], &original[..28]);
        assert_eq!(icmp.data().len(), 28);
        assert!(host_unreachable(b"junk").is_none());
    }

    #[test]
    fn oversized_payload_is_refused() {
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        assert!(udp_packet(a, a, &vec![0u8; 70_000]).is_none());
    }

    proptest! {
        #[test]
        fn classify_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = classify(&bytes);
        }

        #[test]
        fn classify_never_panics_on_mangled_ipv4(mut bytes in proptest::collection::vec(any::<u8>(), 20..96),
                                                  proto in prop_oneof![Just(6u8), Just(17u8)]) {
            bytes[0] = 0x45;
            bytes[9] = proto;
            let _ = classify(&bytes);
        }
    }
}
