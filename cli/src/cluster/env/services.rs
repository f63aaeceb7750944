//! The Service variables the kubelet gives every container (the Docker-links convention).
//!
//! Which Services: `kubernetes` from the `default` namespace always, whatever
//! `enableServiceLinks` says, because in-cluster clients find the API server through it; and,
//! when `enableServiceLinks` is true (the API's default), every Service of the pod's own
//! namespace. A Service of the pod's namespace that is itself named `kubernetes` takes the
//! place of the one in `default`. Only Services with a cluster IP count: headless ones
//! (`clusterIP: None`) and ExternalName ones (no cluster IP) give nothing.
//!
//! For a Service `my-db` at 10.96.0.7 with ports `pg` 5432/TCP and 9187/UDP:
//! ```text
//! MY_DB_SERVICE_HOST=10.96.0.7              the cluster IP
//! MY_DB_SERVICE_PORT=5432                   the first port
//! MY_DB_SERVICE_PORT_PG=5432                one per named port
//! MY_DB_PORT=tcp://10.96.0.7:5432           the first port as a URL
//! MY_DB_PORT_5432_TCP=tcp://10.96.0.7:5432  and for every port:
//! MY_DB_PORT_5432_TCP_PROTO=tcp
//! MY_DB_PORT_5432_TCP_PORT=5432
//! MY_DB_PORT_5432_TCP_ADDR=10.96.0.7
//! MY_DB_PORT_9187_UDP=udp://10.96.0.7:9187 ...
//! ```
//! An IPv6 cluster IP is bracketed in the URLs (`tcp://[fd00::7]:5432`) and bare elsewhere.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

/// The namespace and name of the Service that is always linked.
const API_SERVICE: (&str, &str) = ("default", "kubernetes");

/// The Service variables of a container in `namespace`. `services` are that namespace's
/// Services (others are ignored); `kubernetes` is `default/kubernetes`, if it exists.
pub(crate) fn service_env(
    namespace: &str,
    links: bool,
    services: &[Service],
    kubernetes: Option<&Service>,
) -> BTreeMap<String, String> {
    // By name, as the kubelet keys them: a name appears once.
    let mut linked: BTreeMap<&str, &Service> = BTreeMap::new();
    if links {
        for service in services {
            let in_namespace = service.metadata.namespace.as_deref().unwrap_or(namespace);
            if in_namespace == namespace
                && cluster_ip(service).is_some()
                && let Some(name) = service.metadata.name.as_deref()
            {
                linked.insert(name, service);
            }
        }
    }
    if let Some(api) = kubernetes.filter(|s| cluster_ip(s).is_some()) {
        linked.entry(API_SERVICE.1).or_insert(api);
    }
    let mut env = BTreeMap::new();
    for (name, service) in linked {
        add_service(&mut env, name, service);
    }
    env
}

/// The cluster IP that makes a Service linkable: set, and not `None` (headless).
fn cluster_ip(service: &Service) -> Option<&str> {
    service
        .spec
        .as_ref()?
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

/// A Service or port name as a variable name: upper case, `-` as `_`.
fn env_name(name: &str) -> String {
    name.to_uppercase().replace('-', "_")
}

fn add_service(env: &mut BTreeMap<String, String>, name: &str, service: &Service) {
    let (Some(ip), Some(ports)) = (
        cluster_ip(service),
        service.spec.as_ref().and_then(|s| s.ports.as_deref()),
    ) else {
        return;
    };
    // A Service with a cluster IP has at least one port (API validation); without one the
    // kubelet would have nothing to put in X_SERVICE_PORT either.
    let Some(first) = ports.first() else {
        return;
    };
    let prefix = env_name(name);
    // URLs need the brackets of an IPv6 address, as Go's net.JoinHostPort adds them.
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    env.insert(format!("{prefix}_SERVICE_HOST"), ip.to_string());
    env.insert(format!("{prefix}_SERVICE_PORT"), first.port.to_string());
    for port in ports {
        if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            env.insert(
                format!("{prefix}_SERVICE_PORT_{}", env_name(port_name)),
                port.port.to_string(),
            );
        }
    }
    for (i, port) in ports.iter().enumerate() {
        let protocol = port.protocol.as_deref().filter(|p| !p.is_empty());
        let protocol = protocol.unwrap_or("TCP");
        let (lower, upper) = (protocol.to_lowercase(), protocol.to_uppercase());
        let url = format!("{lower}://{host}:{}", port.port);
        if i == 0 {
            env.insert(format!("{prefix}_PORT"), url.clone());
        }
        let base = format!("{prefix}_PORT_{}_{upper}", port.port);
        env.insert(format!("{base}_PROTO"), lower);
        env.insert(format!("{base}_PORT"), port.port.to_string());
        env.insert(format!("{base}_ADDR"), ip.to_string());
        env.insert(base, url);
    }
}
