//! Answers one DNS query from a [`Zone`], as CoreDNS's kubernetes plugin does (with
//! `pods insecure` and fallthrough for reverse names it does not know): a pure function, so
//! every record kind is unit-tested without sockets.
//!
//! Names under `cluster.local`:
//! - `svc.ns.svc` → ClusterIPs; headless → published endpoint addresses; ExternalName → CNAME.
//! - `host.svc.ns.svc` → a headless Service's endpoint with that hostname (or dashed address).
//! - `_port._proto.svc.ns.svc` → SRV, with A records of the targets as additionals.
//! - `a-b-c-d.ns.pod` → a.b.c.d.
//! - Names that are ancestors of records (`svc`, `ns.svc`, `_tcp.svc.ns.svc`, the apex) exist
//!   without records of their own: NODATA. Anything else is NXDOMAIN. Both carry the SOA.
//!
//! PTR names of ClusterIPs and headless endpoints are answered; every other name goes to the
//! upstream resolver.

use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::zone::{Endpoint, Kind, Service, Zone};
use crate::alloc::KUBE_DNS_IP;

/// The cluster domain.
pub const DOMAIN: &str = "cluster.local";
/// Time to live of every answer (CoreDNS's default for the kubernetes plugin).
pub const TTL: u32 = 5;
/// The UDP payload size advertised in responses to EDNS queries (the DNS flag day value).
pub const EDNS_PAYLOAD: u16 = 1232;

/// What to do with a query.
#[derive(Debug)]
pub enum Outcome {
    Reply(Message),
    /// The name is outside what cluster DNS knows: ask the upstream resolver.
    Forward,
}

/// The records of one name, or why there are none.
enum Found {
    Records {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    NoData,
    NxDomain,
}

impl Found {
    fn answers(answers: Vec<Record>) -> Found {
        Found::Records {
            answers,
            additionals: Vec::new(),
        }
    }
}

/// An empty response to `query` with the header bits a server copies.
pub fn response_to(query: &Message, code: ResponseCode) -> Message {
    let mut resp = Message::response(query.metadata.id, query.metadata.op_code);
    resp.metadata = Metadata::response_from_request(&query.metadata);
    // Cluster DNS recurses (through the upstream) for names outside the zone.
    resp.metadata.recursion_available = true;
    resp.metadata.response_code = code;
    resp.queries = query.queries.clone();
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        resp.edns = Some(edns);
    }
    resp
}

/// Answers a parsed query.
pub fn answer(zone: &Zone, query: &Message) -> Outcome {
    if query.metadata.message_type != MessageType::Query {
        return Outcome::Reply(response_to(query, ResponseCode::FormErr));
    }
    if query.metadata.op_code != OpCode::Query {
        return Outcome::Reply(response_to(query, ResponseCode::NotImp));
    }
    let [q] = query.queries.as_slice() else {
        return Outcome::Reply(response_to(query, ResponseCode::FormErr));
    };
    let lower = q.name().to_lowercase();
    let labels: Vec<String> = lower
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let found = if let Some(rel) = labels.strip_suffix(&["cluster", "local"]) {
        if !matches!(q.query_class(), DNSClass::IN | DNSClass::ANY) {
            return Outcome::Reply(response_to(query, ResponseCode::Refused));
        }
        in_cluster(zone, rel, q)
    } else if let Some(found) = reverse(zone, &labels, q) {
        found
    } else {
        return Outcome::Forward;
    };
    let mut resp = response_to(query, ResponseCode::NoError);
    resp.metadata.authoritative = true;
    match found {
        Found::Records {
            answers,
            additionals,
        } if !answers.is_empty() => {
            resp.answers = answers;
            resp.additionals = additionals;
        }
        Found::Records { .. } | Found::NoData => resp.authorities.push(soa(zone)),
        Found::NxDomain => {
            resp.metadata.response_code = ResponseCode::NXDomain;
            resp.authorities.push(soa(zone));
        }
    }
    Outcome::Reply(resp)
}

/// A name below the cluster domain, from labels (`["ns", "dns"]` → `ns.dns.cluster.local.`).
fn zone_name(rel: &str) -> Option<Name> {
    Name::from_ascii(format!("{rel}.{DOMAIN}.")).ok()
}

fn apex() -> Name {
    // A constant that parses.
    zone_name("x")
        .map(|n| n.base_name())
        .unwrap_or_else(Name::root)
}

fn soa(zone: &Zone) -> Record {
    let mname = zone_name("ns.dns").unwrap_or_else(Name::root);
    let rname = zone_name("hostmaster").unwrap_or_else(Name::root);
    let soa = SOA::new(mname, rname, zone.serial, 7200, 1800, 86400, TTL);
    Record::from_rdata(apex(), TTL, RData::SOA(soa))
}

fn a(name: &Name, ip: Ipv4Addr) -> Record {
    Record::from_rdata(name.clone(), TTL, RData::A(A(ip)))
}

fn ip_record(name: &Name, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(v4) => a(name, v4),
        IpAddr::V6(v6) => Record::from_rdata(name.clone(), TTL, RData::AAAA(AAAA(v6))),
    }
}

fn in_cluster(zone: &Zone, rel: &[&str], q: &Query) -> Found {
    let qtype = q.query_type();
    let name = q.name();
    match rel {
        [] => match qtype {
            RecordType::SOA => Found::answers(vec![soa(zone)]),
            RecordType::NS => {
                let ns = zone_name("ns.dns").unwrap_or_else(Name::root);
                Found::Records {
                    answers: vec![Record::from_rdata(
                        name.clone(),
                        TTL,
                        RData::NS(NS(ns.clone())),
                    )],
                    additionals: vec![a(&ns, KUBE_DNS_IP)],
                }
            }
            _ => Found::NoData,
        },
        ["svc" | "pod" | "dns"] => Found::NoData,
        ["ns", "dns"] => match qtype {
            RecordType::A | RecordType::ANY => Found::answers(vec![a(name, KUBE_DNS_IP)]),
            _ => Found::NoData,
        },
        [ns, "svc" | "pod"] if zone.namespaces.contains(*ns) => Found::NoData,
        [svc, ns, "svc"] => match zone.service(ns, svc) {
            Some(service) => service_records(service, svc, ns, None, q),
            None => Found::NxDomain,
        },
        [label, svc, ns, "svc"] => match zone.service(ns, svc) {
            Some(service)
                if service.kind == Kind::Headless && service.published().next().is_none() =>
            {
                Found::NxDomain
            }
            Some(service) if label.starts_with('_') => {
                let proto = &label[1..];
                let has = service.ports.iter().any(|p| p.protocol == proto)
                    || service
                        .published()
                        .any(|e| e.ports.iter().any(|p| p.protocol == proto));
                if has { Found::NoData } else { Found::NxDomain }
            }
            Some(service) if service.kind == Kind::Headless => {
                let ips: Vec<Record> = service
                    .published()
                    .filter(|e| e.label() == *label)
                    .map(|e| a(name, e.ip))
                    .collect();
                if ips.is_empty() {
                    Found::NxDomain
                } else if matches!(qtype, RecordType::A | RecordType::ANY) {
                    Found::answers(ips)
                } else {
                    Found::NoData
                }
            }
            _ => Found::NxDomain,
        },
        [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            match zone.service(ns, svc) {
                Some(service) => {
                    service_records(service, svc, ns, Some((&port[1..], &proto[1..])), q)
                }
                None => Found::NxDomain,
            }
        }
        [ip, _, "pod"] => match parse_dashed(ip) {
            Some(ip) if matches!(qtype, RecordType::A | RecordType::ANY) => {
                Found::answers(vec![a(name, ip)])
            }
            Some(_) => Found::NoData,
            None => Found::NxDomain,
        },
        _ => Found::NxDomain,
    }
}

/// `10-244-0-5` → 10.244.0.5.
fn parse_dashed(label: &str) -> Option<Ipv4Addr> {
    let parts: Vec<u8> = label
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [a, b, c, d] = parts.as_slice() else {
        return None;
    };
    Some(Ipv4Addr::new(*a, *b, *c, *d))
}

/// Records of a Service's own name, or of its SRV name when `port` (name, protocol) is given.
fn service_records(
    service: &Service,
    svc: &str,
    ns: &str,
    port: Option<(&str, &str)>,
    q: &Query,
) -> Found {
    let name = q.name();
    let qtype = q.query_type();
    let Some(svc_name) = zone_name(&format!("{svc}.{ns}.svc")) else {
        return Found::NxDomain;
    };
    let wanted =
        |p: &super::zone::Port| port.is_none_or(|(n, proto)| p.name == n && p.protocol == proto);
    if let Kind::ExternalName(target) = &service.kind {
        // CoreDNS answers the CNAME for the Service's name, whatever the type; SRV names of an
        // ExternalName Service have no records.
        if port.is_some() {
            return Found::NxDomain;
        }
        let target = target.trim_end_matches('.');
        return match Name::from_ascii(format!("{target}.")) {
            Ok(target) => Found::answers(vec![Record::from_rdata(
                name.clone(),
                TTL,
                RData::CNAME(CNAME(target)),
            )]),
            Err(_) => Found::NoData,
        };
    }
    // A headless Service without published endpoints has no records at or below its name:
    // NXDOMAIN, as kube-dns and CoreDNS answer and the Kubernetes DNS specification says.
    if service.kind == Kind::Headless && service.published().next().is_none() {
        return Found::NxDomain;
    }
    if qtype == RecordType::SRV {
        let mut srvs: Vec<(u16, Name)> = Vec::new();
        let mut additionals = Vec::new();
        match &service.kind {
            Kind::ClusterIp(ips) => {
                srvs.extend(
                    service
                        .ports
                        .iter()
                        .filter(|p| wanted(p))
                        .map(|p| (p.port, svc_name.clone())),
                );
                if !srvs.is_empty() {
                    additionals.extend(ips.iter().map(|ip| ip_record(&svc_name, *ip)));
                }
            }
            _ => {
                for e in service.published() {
                    let Ok(target) = svc_name.prepend_label(e.label()) else {
                        continue;
                    };
                    let before = srvs.len();
                    srvs.extend(
                        e.ports
                            .iter()
                            .filter(|p| wanted(p))
                            .map(|p| (p.port, target.clone())),
                    );
                    if srvs.len() > before {
                        additionals.push(a(&target, e.ip));
                    }
                }
            }
        }
        if srvs.is_empty() && port.is_some() {
            return Found::NxDomain;
        }
        // Equal weights that add up to about 100, as CoreDNS gives them.
        let weight = u16::try_from(100 / srvs.len().max(1)).unwrap_or(1).max(1);
        let answers = srvs
            .into_iter()
            .map(|(p, target)| {
                Record::from_rdata(
                    name.clone(),
                    TTL,
                    RData::SRV(SRV::new(0, weight, p, target)),
                )
            })
            .collect();
        return Found::Records {
            answers,
            additionals,
        };
    }
    if port.is_some() {
        return Found::NoData;
    }
    let addresses: Vec<IpAddr> = match &service.kind {
        Kind::ClusterIp(ips) => ips.clone(),
        _ => {
            let mut ips: Vec<IpAddr> = Vec::new();
            for ip in service.published().map(|e: &Endpoint| IpAddr::V4(e.ip)) {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
            ips
        }
    };
    let answers = addresses
        .into_iter()
        .filter(|ip| match qtype {
            RecordType::A => ip.is_ipv4(),
            RecordType::AAAA => ip.is_ipv6(),
            RecordType::ANY => true,
            _ => false,
        })
        .map(|ip| ip_record(name, ip))
        .collect();
    Found::answers(answers)
}

/// PTR answers for ClusterIPs and headless endpoints; `None` sends the query upstream.
fn reverse(zone: &Zone, labels: &[&str], q: &Query) -> Option<Found> {
    let [d, c, b, a, "in-addr", "arpa"] = labels else {
        return None;
    };
    let octets: Vec<u8> = [a, b, c, d]
        .iter()
        .map(|o| o.parse().ok())
        .collect::<Option<_>>()?;
    let ip = Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]);
    let target = zone.reverse(ip).and_then(|rel| zone_name(&rel))?;
    Some(match q.query_type() {
        RecordType::PTR | RecordType::ANY => Found::answers(vec![Record::from_rdata(
            q.name().clone(),
            TTL,
            RData::PTR(PTR(target)),
        )]),
        _ => Found::NoData,
    })
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
