//! One test per record kind and per way a name can be missing.

use serde_json::{Value, json};

use super::*;

fn zone() -> Zone {
    let services = [
        json!({"metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                          {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
        json!({"metadata": {"namespace": "default", "name": "db"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
        json!({"metadata": {"namespace": "default", "name": "all"},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": true}}),
        json!({"metadata": {"namespace": "default", "name": "none"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
        json!({"metadata": {"namespace": "default", "name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}}),
    ];
    let slice = |svc: &str, endpoints: Value| {
        json!({"metadata": {"namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": "pg", "port": 5433, "protocol": "TCP"}],
            "endpoints": endpoints})
    };
    let slices = [
        slice(
            "db",
            json!([{"addresses": ["10.244.0.5"], "hostname": "db-0"},
                   {"addresses": ["10.244.0.6"]},
                   {"addresses": ["10.244.0.7"], "conditions": {"ready": false}}]),
        ),
        slice(
            "all",
            json!([{"addresses": ["10.244.0.8"], "conditions": {"ready": false}}]),
        ),
    ];
    let namespaces = [
        json!({"metadata": {"name": "default"}}),
        json!({"metadata": {"name": "empty"}}),
    ];
    Zone::build(&services, &slices, &namespaces, 42)
}

fn ask(name: &str, qtype: RecordType) -> Message {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    match answer(&zone(), &q) {
        Outcome::Reply(r) => {
            assert_eq!(r.metadata.id, q.metadata.id);
            assert_eq!(r.queries, q.queries);
            r
        }
        Outcome::Forward => panic!("{name} was forwarded"),
    }
}

fn data(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| r.data.to_string()).collect()
}

fn nodata(r: &Message) {
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty(), "{:?}", r.answers);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
}

fn nxdomain(r: &Message) {
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
}

#[test]
fn cluster_ip_service_a_and_nodata_for_aaaa() {
    let r = ask("Web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert_eq!(data(&r.answers), ["10.96.0.20"]);
    assert_eq!(r.answers[0].ttl, TTL);
    assert_eq!(
        r.answers[0].name.to_string(),
        "Web.default.svc.cluster.local."
    );
    nodata(&ask("web.default.svc.cluster.local.", RecordType::AAAA));
    nodata(&ask("web.default.svc.cluster.local.", RecordType::TXT));
}

#[test]
fn headless_service_lists_ready_endpoints_unless_publishing_not_ready() {
    let r = ask("db.default.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&r.answers), ["10.244.0.5", "10.244.0.6"]);
    let r = ask("all.default.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&r.answers), ["10.244.0.8"]);
    // No ready endpoints: the name does not exist (the Kubernetes DNS specification).
    nxdomain(&ask("none.default.svc.cluster.local.", RecordType::A));
    nxdomain(&ask(
        "_pg._tcp.none.default.svc.cluster.local.",
        RecordType::SRV,
    ));
}

#[test]
fn endpoint_hostnames_and_dashed_addresses_under_a_headless_service() {
    let r = ask("db-0.db.default.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&r.answers), ["10.244.0.5"]);
    let r = ask("10-244-0-6.db.default.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&r.answers), ["10.244.0.6"]);
    nxdomain(&ask(
        "10-244-0-7.db.default.svc.cluster.local.",
        RecordType::A,
    ));
    nxdomain(&ask("db-1.db.default.svc.cluster.local.", RecordType::A));
    nodata(&ask("db-0.db.default.svc.cluster.local.", RecordType::AAAA));
}

#[test]
fn external_name_is_a_cname_not_chased() {
    let r = ask("ext.default.svc.cluster.local.", RecordType::A);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(data(&r.answers), ["example.com."]);
}

#[test]
fn srv_for_a_cluster_ip_service_targets_the_service() {
    let r = ask("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        data(&r.answers),
        ["0 100 80 web.default.svc.cluster.local."]
    );
    assert_eq!(data(&r.additionals), ["10.96.0.20"]);
    let r = ask("_dns._udp.web.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        data(&r.answers),
        ["0 100 53 web.default.svc.cluster.local."]
    );
    let r = ask("web.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(r.answers.len(), 2);
    nxdomain(&ask(
        "_http._udp.web.default.svc.cluster.local.",
        RecordType::SRV,
    ));
    nodata(&ask("_tcp.web.default.svc.cluster.local.", RecordType::SRV));
    nxdomain(&ask("_sctp.web.default.svc.cluster.local.", RecordType::A));
    nodata(&ask(
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::A,
    ));
}

#[test]
fn srv_for_a_headless_service_targets_each_endpoint() {
    let r = ask("_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        data(&r.answers),
        [
            "0 50 5433 db-0.db.default.svc.cluster.local.",
            "0 50 5433 10-244-0-6.db.default.svc.cluster.local."
        ]
    );
    assert_eq!(data(&r.additionals), ["10.244.0.5", "10.244.0.6"]);
    assert_eq!(
        r.additionals[0].name.to_string(),
        "db-0.db.default.svc.cluster.local."
    );
}

#[test]
fn pod_names_resolve_to_their_address() {
    let r = ask("10-244-0-9.default.pod.cluster.local.", RecordType::A);
    assert_eq!(data(&r.answers), ["10.244.0.9"]);
    nxdomain(&ask("10-244-0.default.pod.cluster.local.", RecordType::A));
    nxdomain(&ask(
        "10-244-0-300.default.pod.cluster.local.",
        RecordType::A,
    ));
    nodata(&ask(
        "10-244-0-9.default.pod.cluster.local.",
        RecordType::AAAA,
    ));
}

#[test]
fn ancestors_of_records_are_nodata_and_the_rest_nxdomain() {
    nodata(&ask("cluster.local.", RecordType::A));
    nodata(&ask("svc.cluster.local.", RecordType::A));
    nodata(&ask("pod.cluster.local.", RecordType::A));
    nodata(&ask("default.svc.cluster.local.", RecordType::A));
    nodata(&ask("empty.svc.cluster.local.", RecordType::A));
    nxdomain(&ask("nope.svc.cluster.local.", RecordType::A));
    nxdomain(&ask("missing.default.svc.cluster.local.", RecordType::A));
    nxdomain(&ask("web.empty.svc.cluster.local.", RecordType::A));
    nxdomain(&ask("foo.cluster.local.", RecordType::A));
    nxdomain(&ask("a.b.c.d.e.f.cluster.local.", RecordType::A));
}

#[test]
fn the_apex_has_soa_and_ns() {
    let r = ask("cluster.local.", RecordType::SOA);
    assert_eq!(r.answers[0].record_type(), RecordType::SOA);
    let RData::SOA(soa) = &r.answers[0].data else {
        panic!("not an SOA");
    };
    assert_eq!(soa.serial, 42);
    assert_eq!(soa.minimum, TTL);
    let r = ask("cluster.local.", RecordType::NS);
    assert_eq!(data(&r.answers), ["ns.dns.cluster.local."]);
    assert_eq!(data(&r.additionals), ["10.96.0.10"]);
    let r = ask("ns.dns.cluster.local.", RecordType::A);
    assert_eq!(data(&r.answers), ["10.96.0.10"]);
}

#[test]
fn reverse_names_of_service_and_endpoint_addresses() {
    let r = ask("20.0.96.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(data(&r.answers), ["web.default.svc.cluster.local."]);
    let r = ask("5.0.244.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(data(&r.answers), ["db-0.db.default.svc.cluster.local."]);
}

#[test]
fn names_outside_the_zone_are_forwarded() {
    for name in [
        "example.com.",
        "1.1.168.192.in-addr.arpa.",
        "99.0.96.10.in-addr.arpa.",
    ] {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        assert!(matches!(answer(&zone(), &q), Outcome::Forward), "{name}");
    }
}

#[test]
fn odd_queries_get_errors() {
    let z = zone();
    let mut q = Message::query();
    let reply = |q: &Message| match answer(&z, q) {
        Outcome::Reply(r) => r.metadata.response_code,
        Outcome::Forward => panic!("forwarded"),
    };
    assert_eq!(reply(&q), ResponseCode::FormErr, "no question");
    let question = Query::query(
        Name::from_ascii("web.default.svc.cluster.local.").unwrap(),
        RecordType::A,
    );
    q.add_query(question.clone());
    q.add_query(question);
    assert_eq!(reply(&q), ResponseCode::FormErr, "two questions");
    q.queries.truncate(1);
    q.metadata.op_code = OpCode::Status;
    assert_eq!(reply(&q), ResponseCode::NotImp);
}

#[test]
fn edns_queries_get_edns_answers() {
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii("web.default.svc.cluster.local.").unwrap(),
        RecordType::A,
    ));
    q.set_edns(Edns::new());
    let Outcome::Reply(r) = answer(&zone(), &q) else {
        panic!("forwarded");
    };
    assert_eq!(r.edns.map(|e| e.max_payload()), Some(EDNS_PAYLOAD));
}
