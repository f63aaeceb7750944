//! From Ingresses and Services to routes: which Ingresses are the controller's, which host
//! and path each rule claims, and which ClusterIP and port each backend is. Pure, so the
//! rules of precedence are tested without a cluster; [`super::render`] writes the result as
//! nginx configuration.
//!
//! Precedence follows the Ingress API: older Ingresses win a conflict (creation time, then
//! namespace/name), rules without a host serve requests whose host no rule names, and the
//! default backend is the oldest Ingress's `defaultBackend`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddrV4;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

/// The annotation older Ingresses name their class with.
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// How a path matches, as the Ingress API defines it (ImplementationSpecific is Prefix here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathType {
    Exact,
    /// Element-wise: `/foo` matches `/foo` and `/foo/bar`, not `/foobar`.
    Prefix,
}

/// Where matched requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Service's ClusterIP and port.
    Proxy(SocketAddrV4),
    /// A backend that cannot be reached (answered with 503, as ingress-nginx does); why.
    Unavailable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Absolute; a Prefix path has no trailing `/` except the root itself.
    pub path: String,
    pub path_type: PathType,
    pub target: Target,
    /// `namespace/name` of the Ingress that asked for it.
    pub from: String,
}

/// Everything the proxy serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Host (exact, or `*.domain`) → its own routes, in precedence order.
    pub hosts: BTreeMap<String, Vec<Route>>,
    /// Routes of rules without a host: for hosts that no rule names.
    pub any_host: Vec<Route>,
    /// What answers when no route matches (None: 404).
    pub default_backend: Option<Target>,
    /// `(namespace, name)` of every Ingress served, for their status.
    pub served: Vec<(String, String)>,
    /// Rules left out, with why (logged by the controller).
    pub skipped: Vec<String>,
}

/// Whether an Ingress belongs to the controller of `class`: it names the class (field or
/// old annotation), or names none.
pub fn is_ours(ing: &Ingress, class: &str) -> bool {
    let field = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    let annotation = ing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLASS_ANNOTATION))
        .map(String::as_str);
    match (field, annotation) {
        (Some(c), _) => c == class,
        (None, Some(c)) => c == class,
        (None, None) => true,
    }
}

/// The characters a path or host may have to be written into nginx's configuration as they
/// are: anything that could end a token, a block or a quoted string is refused instead.
fn safe(s: &str) -> bool {
    s.bytes().all(|b| {
        b.is_ascii_graphic()
            && !matches!(b, b'"' | b'\'' | b'\\' | b';' | b'{' | b'}' | b'#' | b'$')
    })
}

fn normalize(path: &str, path_type: PathType) -> String {
    match path_type {
        PathType::Exact => path.to_string(),
        PathType::Prefix => {
            let trimmed = path.trim_end_matches('/');
            if trimmed.is_empty() {
                "/".to_string()
            } else {
                trimmed.to_string()
            }
        }
    }
}

type Services<'a> = HashMap<(&'a str, &'a str), &'a Service>;

/// The ClusterIP and port a backend names, or why there is none.
fn resolve(namespace: &str, backend: &IngressBackend, services: &Services) -> Target {
    let Some(svc_backend) = &backend.service else {
        return Target::Unavailable("resource backends are not supported".into());
    };
    let name = svc_backend.name.as_str();
    let Some(svc) = services.get(&(namespace, name)) else {
        return Target::Unavailable(format!("service {namespace}/{name} not found"));
    };
    let spec = svc.spec.clone().unwrap_or_default();
    let Some(ip) = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
    else {
        return Target::Unavailable(format!(
            "service {namespace}/{name} has no ClusterIP (headless or ExternalName)"
        ));
    };
    let wanted = svc_backend.port.as_ref();
    let ports = spec.ports.unwrap_or_default();
    let port = ports.iter().find(|p| {
        p.protocol.as_deref().unwrap_or("TCP") == "TCP"
            && match wanted {
                Some(w) => match (&w.name, w.number) {
                    (Some(n), _) if !n.is_empty() => p.name.as_deref() == Some(n),
                    (_, Some(number)) => p.port == number,
                    _ => false,
                },
                None => false,
            }
    });
    match port.and_then(|p| u16::try_from(p.port).ok()) {
        Some(port) => Target::Proxy(SocketAddrV4::new(ip, port)),
        None => Target::Unavailable(format!(
            "service {namespace}/{name} has no TCP port {}",
            wanted
                .map(|w| w
                    .name
                    .clone()
                    .unwrap_or_else(|| w.number.unwrap_or_default().to_string()))
                .unwrap_or_default()
        )),
    }
}

/// Sorts Ingresses oldest first, the order in which they win conflicts.
fn by_age<'a>(ingresses: impl Iterator<Item = &'a Ingress>) -> Vec<&'a Ingress> {
    let mut out: Vec<&Ingress> = ingresses.collect();
    out.sort_by_key(|i| {
        (
            i.metadata.creation_timestamp.as_ref().map(|t| t.0),
            i.metadata.namespace.clone().unwrap_or_default(),
            i.metadata.name.clone().unwrap_or_default(),
        )
    });
    out
}

/// The routes the Ingresses of `class` ask for, with Services resolved.
pub fn plan<'a>(
    ingresses: impl Iterator<Item = &'a Ingress>,
    services: impl Iterator<Item = &'a Service>,
    class: &str,
) -> Plan {
    let services: Services = services
        .filter_map(|s| {
            Some((
                (
                    s.metadata.namespace.as_deref()?,
                    s.metadata.name.as_deref()?,
                ),
                s,
            ))
        })
        .collect();
    let mut plan = Plan::default();
    let ours = by_age(ingresses.filter(|i| is_ours(i, class)));
    for ing in ours {
        let namespace = ing.metadata.namespace.clone().unwrap_or_default();
        let name = ing.metadata.name.clone().unwrap_or_default();
        let from = format!("{namespace}/{name}");
        let Some(spec) = &ing.spec else { continue };
        if plan.default_backend.is_none()
            && let Some(b) = &spec.default_backend
        {
            plan.default_backend = Some(resolve(&namespace, b, &services));
        }
        for rule in spec.rules.iter().flatten() {
            let host = rule.host.clone().unwrap_or_default().to_ascii_lowercase();
            if !host.is_empty() && !safe(&host) {
                plan.skipped
                    .push(format!("{from}: host {host:?} cannot be served"));
                continue;
            }
            for p in rule.http.iter().flat_map(|h| &h.paths) {
                let path_type = match p.path_type.as_str() {
                    "Exact" => PathType::Exact,
                    _ => PathType::Prefix,
                };
                let raw = p.path.clone().unwrap_or_default();
                let raw = if raw.is_empty() { "/".to_string() } else { raw };
                if !raw.starts_with('/') || !safe(&raw) {
                    plan.skipped
                        .push(format!("{from}: path {raw:?} cannot be served"));
                    continue;
                }
                let route = Route {
                    path: normalize(&raw, path_type),
                    path_type,
                    target: resolve(&namespace, &p.backend, &services),
                    from: from.clone(),
                };
                if host.is_empty() {
                    plan.any_host.push(route);
                } else {
                    plan.hosts.entry(host.clone()).or_default().push(route);
                }
            }
        }
        plan.served.push((namespace, name));
    }
    plan
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
