//! Which Service holds which pool address, as a pure function of the Services and of what
//! the allocator has handed out so far: the plan says what to write, the caller writes it.
//!
//! The rules are MetalLB's, where it has one:
//!
//! - A Service is ours when its type is LoadBalancer, it names no `loadBalancerClass` (one
//!   that does belongs to another implementation) and it is not being deleted.
//! - An address is held by one Service at a time. What the allocator handed out is
//!   remembered by UID, so a Service deleted and made again under the same name gets a new
//!   address, and two Services created at once never get the same one. After a restart, the
//!   addresses Services already show in `status.loadBalancer.ingress` are taken back, oldest
//!   Service first; a later one showing the same address gets another.
//! - `spec.loadBalancerIP` (deprecated in Kubernetes, still what `kubectl expose
//!   --load-balancer-ip` sets) asks for one address; it is given when it is in the pool and
//!   free, else the Service stays pending. Otherwise the lowest free address is given.
//! - Pool addresses some Service lists in `spec.externalIPs` are not handed out: kube-proxy
//!   would send both to one place.
//! - With no address to give, the Service stays pending (no ingress) and is reported once
//!   per reason, until something changes.
//! - A Service that stops being a LoadBalancer frees its address, and loses it from its
//!   status too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;

/// An inclusive range of addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl Pool {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.first <= ip && ip <= self.last
    }

    fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// A Service, by namespace, name and UID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a Service has no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Every address of the pool is held (or listed as an externalIP).
    PoolFull(Pool),
    /// `spec.loadBalancerIP` names an address outside the pool.
    OutsidePool { wanted: Ipv4Addr, pool: Pool },
    /// `spec.loadBalancerIP` names an address that another Service holds or lists.
    InUse(Ipv4Addr),
    /// `spec.loadBalancerIP` is not an IPv4 address.
    NotIpv4(String),
}

impl fmt::Display for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pending::PoolFull(pool) => write!(f, "no available IPs: the pool {pool} is full"),
            Pending::OutsidePool { wanted, pool } => {
                write!(f, "loadBalancerIP {wanted} is not in the pool {pool}")
            }
            Pending::InUse(ip) => write!(f, "loadBalancerIP {ip} is already in use"),
            Pending::NotIpv4(s) => write!(f, "loadBalancerIP {s:?} is not an IPv4 address"),
        }
    }
}

/// What to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set `status.loadBalancer.ingress` to this address alone.
    Assign(Key, Ipv4Addr),
    /// Empty `status.loadBalancer`: the Service is no longer a LoadBalancer of ours.
    Clear(Key),
    /// Report that the Service stays pending.
    Pending(Key, Pending),
}

/// The allocator's memory between plans.
#[derive(Debug)]
pub struct Allocator {
    pub pool: Pool,
    /// UID → the address handed out.
    held: BTreeMap<String, Ipv4Addr>,
    /// UID → why it is pending, as last reported.
    reported: BTreeMap<String, Pending>,
    /// UID → the address planned for its status that the Services given to `plan` do not
    /// show yet. Without it, every change seen before a write's own comes back would plan
    /// that write again.
    in_flight: BTreeMap<String, Ipv4Addr>,
}

fn key(svc: &Service) -> Key {
    Key {
        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
    }
}

fn ours(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    svc.metadata.deletion_timestamp.is_none()
        && spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        && spec.and_then(|s| s.load_balancer_class.as_ref()).is_none()
}

/// The IPv4 addresses in `status.loadBalancer.ingress`.
fn ingress_ips(svc: &Service) -> Vec<Ipv4Addr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

fn external_ips(svc: &Service) -> impl Iterator<Item = Ipv4Addr> + '_ {
    svc.spec
        .iter()
        .flat_map(|s| s.external_ips.iter().flatten())
        .filter_map(|s| s.parse().ok())
}

/// Oldest first, then by namespace and name, so the outcome does not depend on list order.
fn age_order(a: &&Service, b: &&Service) -> std::cmp::Ordering {
    let created = |s: &Service| s.metadata.creation_timestamp.as_ref().map(|t| t.0);
    created(a)
        .cmp(&created(b))
        .then_with(|| key(a).cmp(&key(b)))
}

impl Allocator {
    pub fn new(pool: Pool) -> Self {
        Allocator {
            pool,
            held: BTreeMap::new(),
            reported: BTreeMap::new(),
            in_flight: BTreeMap::new(),
        }
    }

    /// The address handed to the Service of `uid`, if any.
    #[cfg(test)]
    pub fn held(&self, uid: &str) -> Option<Ipv4Addr> {
        self.held.get(uid).copied()
    }

    /// What to write so that `services` (every Service in the cluster) match the rules.
    pub fn plan(&mut self, services: &[Service]) -> Vec<Action> {
        let mut mine: Vec<&Service> = services.iter().filter(|s| ours(s)).collect();
        mine.sort_by(age_order);
        let live: BTreeSet<String> = mine.iter().map(|s| key(s).uid).collect();
        self.held.retain(|uid, _| live.contains(uid));
        self.reported.retain(|uid, _| live.contains(uid));
        self.in_flight.retain(|uid, _| live.contains(uid));
        let wanted = |s: &Service| s.spec.as_ref().and_then(|s| s.load_balancer_ip.clone());
        // A Service that now asks for another address than it holds gives its own back.
        for svc in &mine {
            let uid = key(svc).uid;
            if let (Some(w), Some(held)) = (wanted(svc), self.held.get(&uid))
                && w.parse::<Ipv4Addr>().ok() != Some(*held)
            {
                self.held.remove(&uid);
            }
        }
        let reserved: BTreeSet<Ipv4Addr> = services
            .iter()
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .flat_map(external_ips)
            .filter(|ip| self.pool.contains(*ip))
            .collect();

        // Taken back from the status, after a restart of the allocator.
        for svc in &mine {
            let uid = key(svc).uid;
            if self.held.contains_key(&uid) {
                continue;
            }
            let taken: BTreeSet<Ipv4Addr> = self.held.values().copied().collect();
            let shown = ingress_ips(svc).into_iter().find(|ip| {
                self.pool.contains(*ip)
                    && !taken.contains(ip)
                    && wanted(svc).is_none_or(|w| w.parse() == Ok(*ip))
            });
            if let Some(ip) = shown {
                self.held.insert(uid, ip);
            }
        }

        let mut actions = Vec::new();
        for svc in &mine {
            let k = key(svc);
            if !self.held.contains_key(&k.uid) {
                match self.pick(wanted(svc), &reserved) {
                    Ok(ip) => {
                        self.held.insert(k.uid.clone(), ip);
                        self.reported.remove(&k.uid);
                    }
                    Err(why) => {
                        if self.reported.get(&k.uid) != Some(&why) {
                            self.reported.insert(k.uid.clone(), why.clone());
                            actions.push(Action::Pending(k.clone(), why));
                        }
                        // A pending Service shows no address, not even a stale one.
                        if !ingress_ips(svc).is_empty() {
                            actions.push(Action::Clear(k));
                        }
                        continue;
                    }
                }
            }
            let ip = self.held[&k.uid];
            if ingress_ips(svc) == [ip] {
                self.in_flight.remove(&k.uid);
            } else if self.in_flight.get(&k.uid) != Some(&ip) {
                self.in_flight.insert(k.uid.clone(), ip);
                actions.push(Action::Assign(k, ip));
            }
        }

        for svc in services {
            let spec_type = svc.spec.as_ref().and_then(|s| s.type_.as_deref());
            if svc.metadata.deletion_timestamp.is_none()
                && spec_type != Some("LoadBalancer")
                && ingress_ips(svc).iter().any(|ip| self.pool.contains(*ip))
            {
                actions.push(Action::Clear(key(svc)));
            }
        }
        actions
    }

    /// The write of `Assign` for `uid` failed: the next plan makes it again.
    pub fn not_written(&mut self, uid: &str) {
        self.in_flight.remove(uid);
    }

    fn pick(
        &self,
        wanted: Option<String>,
        reserved: &BTreeSet<Ipv4Addr>,
    ) -> Result<Ipv4Addr, Pending> {
        let taken: BTreeSet<Ipv4Addr> = self.held.values().copied().collect();
        let free = |ip: &Ipv4Addr| !taken.contains(ip) && !reserved.contains(ip);
        match wanted {
            Some(w) => {
                let ip: Ipv4Addr = w.parse().map_err(|_| Pending::NotIpv4(w.clone()))?;
                if !self.pool.contains(ip) {
                    Err(Pending::OutsidePool {
                        wanted: ip,
                        pool: self.pool,
                    })
                } else if free(&ip) {
                    Ok(ip)
                } else {
                    Err(Pending::InUse(ip))
                }
            }
            None => self
                .pool
                .addresses()
                .find(free)
                .ok_or(Pending::PoolFull(self.pool)),
        }
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
