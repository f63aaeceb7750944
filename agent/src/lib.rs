//! tether-agent: the binary tether runs inside the cluster, as a library so its parts can be
//! tested on their own.
//!
//! It has two roles. `manager`: it accepts authenticated tunnel sessions from laptops
//! and re-creates their flows inside the cluster (TCP and UDP dials, DNS through the
//! cluster's resolver). [`manager`] holds the accept loop and session setup (its
//! `flows` module the per-flow handlers, `resolv` the cluster domain from /etc/resolv.conf,
//! which `tether_tunnel::resolv` parses);
//! [`discovery`] finds and watches the Service and pod CIDRs sessions must route;
//! [`health`] answers the kubelet's probes. `sidecar` ([`sidecar`]): injected into a
//! workload's pods by `tether intercept`, it owns the ports the Service targets and forwards
//! each connection to the app or, while a laptop holds a claim, to that laptop.

pub mod discovery;
pub mod health;
pub mod manager;
pub mod sidecar;
