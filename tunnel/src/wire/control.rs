//! The control channel: what the cluster looks like, and keepalives.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{WireError, decode, encode};

/// What the manager knows about the cluster that the laptop needs for routing and DNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClusterInfo {
    /// The cluster's DNS domain, e.g. `cluster.local`.
    pub dns_domain: String,
    /// The search path a pod in the manager's namespace uses.
    pub search: Vec<String>,
    /// Subnets the laptop should route into the tunnel.
    pub subnets: Vec<IpNet>,
}

/// One message on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlMessage {
    ClusterInfo(ClusterInfo),
    Ping { nonce: u64 },
    Pong { nonce: u64 },
}

impl ControlMessage {
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode("control message", bytes)
    }
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cluster_info_round_trips(domain in "[a-z.]{0,20}", search in proptest::collection::vec("[a-z.]{1,20}", 0..4),
                                    nets in proptest::collection::vec((any::<[u8; 4]>(), 0u8..=32), 0..4)) {
            let subnets = nets.into_iter()
                .map(|(a, p)| IpNet::new(std::net::Ipv4Addr::from(a).into(), p).unwrap())
                .collect();
            let msg = ControlMessage::ClusterInfo(ClusterInfo { dns_domain: domain, search, subnets });
            prop_assert_eq!(ControlMessage::decode(&msg.encode()).unwrap(), msg);
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ControlMessage::decode(&bytes);
        }
    }
}
