//! tether-agent: the binary tether runs inside the cluster, as a library so its parts can be
//! tested on their own.
//!
//! Today it has one role, `manager`: it accepts authenticated tunnel sessions from laptops
//! and re-creates their flows inside the cluster (TCP and UDP dials, DNS through the
//! cluster's resolver). [`manager`] holds the accept loop and session setup (its
//! `flows` module the per-flow handlers, `resolv` the cluster domain from /etc/resolv.conf,
//! which `tether_tunnel::resolv` parses);
//! [`discovery`] finds and watches the Service and pod CIDRs sessions must route;
//! [`health`] answers the kubelet's probes.

pub mod discovery;
pub mod health;
pub mod manager;
