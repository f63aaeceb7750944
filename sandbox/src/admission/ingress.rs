//! Ingresses and IngressClasses (`networking.k8s.io/v1`): the checks kube-apiserver makes
//! that a controller relies on (a rule or a default backend, absolute paths with a known
//! pathType, one port form per backend, valid hosts), and the DefaultIngressClass admission
//! plugin: an Ingress created without a class gets the class marked default, so that every
//! controller agrees on whose it is.

use serde_json::{Value, json};

use crate::error::Cause;
use crate::resources::{self, Shape};
use crate::store::State;

/// The annotation that marks an IngressClass as the cluster's default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The annotation older Ingresses name their class with (still honoured by controllers).
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];

/// Sets `spec.ingressClassName` on a new Ingress that names no class, to the default
/// IngressClass (the newest, when several claim it, as kube-apiserver picks).
pub fn default_class(state: &State, obj: &mut Value) {
    if !obj["spec"]["ingressClassName"].is_null()
        || !obj["metadata"]["annotations"][CLASS_ANNOTATION].is_null()
    {
        return;
    }
    let classes = resources::by_shape(Shape::IngressClass);
    let default = state
        .list(classes, None, None)
        .filter(|c| c.value["metadata"]["annotations"][DEFAULT_CLASS_ANNOTATION] == "true")
        .max_by_key(|c| {
            c.value["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .map(|c| c.name().to_string());
    if let (Some(name), Some(spec)) = (default, obj.get_mut("spec")) {
        spec["ingressClassName"] = json!(name);
    }
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_label)
}

fn host(field: &str, host: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    if host.parse::<std::net::IpAddr>().is_ok() {
        out.push(Cause::invalid_str(
            field,
            host,
            "must be a DNS name, not an IP address",
        ));
    } else if let Some(rest) = host.strip_prefix("*.") {
        if !is_subdomain(rest) {
            out.push(Cause::invalid_str(
                field,
                host,
                "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            ));
        }
    } else if !is_subdomain(host) {
        out.push(Cause::invalid_str(
            field,
            host,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ));
    }
    out
}

fn backend(field: &str, b: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    match (b["service"].is_object(), b["resource"].is_object()) {
        (false, false) => out.push(Cause::invalid(
            field,
            "null",
            "one backend (`service` or `resource`) must be specified",
        )),
        (true, true) => out.push(Cause::invalid(
            field,
            "null",
            "cannot set both `service` and `resource` backends",
        )),
        (true, false) => {
            let svc = &b["service"];
            let at = format!("{field}.service");
            if svc["name"].as_str().is_none_or(str::is_empty) {
                out.push(Cause::required(format!("{at}.name")));
            }
            let port = &svc["port"];
            let name = port["name"].as_str().filter(|n| !n.is_empty());
            let number = port["number"].as_i64().filter(|n| *n != 0);
            match (name, number) {
                (Some(_), Some(_)) => out.push(Cause::invalid(
                    format!("{at}.port"),
                    port,
                    "cannot set both port name & port number",
                )),
                (None, None) => out.push(Cause::invalid(
                    format!("{at}.port"),
                    port,
                    "port name or number is required",
                )),
                (None, Some(n)) if !(1..=65535).contains(&n) => out.push(Cause::invalid(
                    format!("{at}.port.number"),
                    n,
                    "must be between 1 and 65535, inclusive",
                )),
                _ => {}
            }
        }
        (false, true) => {}
    }
    out
}

/// Validates an Ingress's spec.
pub fn validate_ingress(spec: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    let rules = spec["rules"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if spec["defaultBackend"].is_object() {
        out.extend(backend("spec.defaultBackend", &spec["defaultBackend"]));
    } else if rules.is_empty() {
        out.push(Cause::invalid(
            "spec.rules",
            "[]",
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(class) = spec["ingressClassName"].as_str()
        && !is_subdomain(class)
    {
        out.extend(host("spec.ingressClassName", class));
    }
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if let Some(h) = rule["host"].as_str().filter(|h| !h.is_empty()) {
            out.extend(host(&format!("{at}.host"), h));
        }
        if rule["http"].is_null() {
            continue;
        }
        let paths = rule["http"]["paths"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if paths.is_empty() {
            out.push(Cause::required(format!("{at}.http.paths")));
        }
        for (j, p) in paths.iter().enumerate() {
            let pat = format!("{at}.http.paths[{j}]");
            let path = p["path"].as_str().unwrap_or_default();
            match p["pathType"].as_str() {
                None => out.push(Cause {
                    message: "Required value: pathType must be specified".into(),
                    ..Cause::required(format!("{pat}.pathType"))
                }),
                Some(t) if !PATH_TYPES.contains(&t) => {
                    out.push(Cause::unsupported(format!("{pat}.pathType"), t, PATH_TYPES))
                }
                Some("Exact" | "Prefix") if !path.starts_with('/') => out.push(Cause::invalid_str(
                    format!("{pat}.path"),
                    path,
                    "must be an absolute path",
                )),
                Some(_) => {}
            }
            out.extend(backend(&format!("{pat}.backend"), &p["backend"]));
        }
    }
    out
}

/// Validates an IngressClass (its controller is immutable, as in kube-apiserver).
pub fn validate_class(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = Vec::new();
    let controller = obj["spec"]["controller"].as_str().unwrap_or_default();
    if controller.is_empty() {
        out.push(Cause::required("spec.controller"));
    } else if controller.len() > 250 {
        out.push(Cause::invalid_str(
            "spec.controller",
            controller,
            "must be no more than 250 characters",
        ));
    } else if !controller
        .split_once('/')
        .is_some_and(|(domain, path)| is_subdomain(domain) && !path.is_empty())
    {
        out.push(Cause::invalid_str(
            "spec.controller",
            controller,
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        ));
    }
    if let Some(old) = old
        && old["spec"]["controller"] != obj["spec"]["controller"]
    {
        out.push(Cause::immutable(
            "spec.controller",
            &obj["spec"]["controller"],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn an_ingress_needs_rules_or_a_default_backend_and_well_formed_paths() {
        assert_eq!(
            fields(&validate_ingress(&json!({}))),
            ["spec.rules"],
            "nothing to route"
        );
        let ok = json!({"rules": [{"host": "*.example.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"name": "http"}}}},
            {"path": "x", "pathType": "ImplementationSpecific", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
        ]}}]});
        assert!(
            validate_ingress(&ok).is_empty(),
            "{:?}",
            validate_ingress(&ok)
        );
        let bad = json!({"rules": [{"host": "10.0.0.1", "http": {"paths": [
            {"path": "foo", "pathType": "Exact", "backend": {"service": {"name": "web", "port": {"number": 80, "name": "http"}}}},
            {"path": "/", "backend": {"service": {"name": "", "port": {"number": 70000}}}},
            {"path": "/", "pathType": "Regex", "backend": {}}
        ]}}]});
        assert_eq!(
            fields(&validate_ingress(&bad)),
            [
                "spec.rules[0].host",
                "spec.rules[0].http.paths[0].path",
                "spec.rules[0].http.paths[0].backend.service.port",
                "spec.rules[0].http.paths[1].pathType",
                "spec.rules[0].http.paths[1].backend.service.name",
                "spec.rules[0].http.paths[1].backend.service.port.number",
                "spec.rules[0].http.paths[2].pathType",
                "spec.rules[0].http.paths[2].backend",
            ]
        );
    }

    #[test]
    fn an_ingress_class_names_a_controller_that_never_changes() {
        let class = json!({"spec": {"controller": "tether-sandbox/ingress-nginx"}});
        assert!(validate_class(&class, None).is_empty());
        assert_eq!(
            fields(&validate_class(&json!({"spec": {}}), None)),
            ["spec.controller"]
        );
        let other = json!({"spec": {"controller": "example.com/other"}});
        assert_eq!(
            fields(&validate_class(&other, Some(&class))),
            ["spec.controller"]
        );
    }
}
