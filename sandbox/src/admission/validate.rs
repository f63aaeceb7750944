//! Validation of names, labels and the required fields of the shapes tether relies on, with
//! the field paths and wording of kube-apiserver's validation.

use serde_json::Value;

use crate::error::{Cause, go_quote};
use crate::resources::{ResourceType, Shape};
use crate::store::selector::LabelSelector;

const LABEL_1123: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_1123: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_1035: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn is_label_1123(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_subdomain(s: &str) -> bool {
    s.split('.').all(is_label_1123)
}

/// DNS-1123 label errors for `value` at `field` (also used for container and port names).
pub fn label_1123(field: &str, value: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    if value.len() > 63 {
        out.push(Cause::invalid_str(
            field,
            value,
            "must be no more than 63 characters",
        ));
    }
    if !is_label_1123(value) {
        out.push(Cause::invalid_str(field, value, LABEL_1123));
    }
    out
}

/// Validates `metadata.name` by the rule the resource type uses.
pub fn name(rt: &ResourceType, name: &str) -> Vec<Cause> {
    let field = "metadata.name";
    let mut out = Vec::new();
    match rt.shape {
        Shape::Namespace => out.extend(label_1123(field, name)),
        Shape::Service => {
            if name.len() > 63 {
                out.push(Cause::invalid_str(
                    field,
                    name,
                    "must be no more than 63 characters",
                ));
            }
            let b = name.as_bytes();
            let ok = !b.is_empty()
                && b[0].is_ascii_lowercase()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[b.len() - 1] != b'-';
            if !ok {
                out.push(Cause::invalid_str(field, name, LABEL_1035));
            }
        }
        Shape::Role | Shape::RoleBinding | Shape::ClusterRole | Shape::ClusterRoleBinding => {
            if name == "." || name == ".." {
                out.push(Cause::invalid_str(
                    field,
                    name,
                    format!("may not be '{name}'"),
                ));
            }
            for bad in ["/", "%"] {
                if name.contains(bad) {
                    out.push(Cause::invalid_str(
                        field,
                        name,
                        format!("may not contain '{bad}'"),
                    ));
                }
            }
        }
        _ => {
            if name.len() > 253 {
                out.push(Cause::invalid_str(
                    field,
                    name,
                    "must be no more than 253 characters",
                ));
            }
            if !is_subdomain(name) {
                out.push(Cause::invalid_str(field, name, SUBDOMAIN_1123));
            }
        }
    }
    out
}

fn qualified_name_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn label_value_ok(s: &str) -> bool {
    s.is_empty() || qualified_name_ok(s)
}

/// Validates label keys and values at `field` (e.g. `metadata.labels`).
pub fn labels(field: &str, labels: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    let Some(map) = labels.as_object() else {
        return out;
    };
    for (k, v) in map {
        let (prefix, name) = k
            .rsplit_once('/')
            .map_or((None, k.as_str()), |(p, n)| (Some(p), n));
        if prefix.is_some_and(|p| !is_subdomain(p)) || !qualified_name_ok(name) {
            out.push(Cause::invalid_str(field, k, QUALIFIED_NAME));
        }
        let v = v.as_str().unwrap_or_default();
        if !label_value_ok(v) {
            out.push(Cause::invalid_str(field, v, LABEL_VALUE));
        }
    }
    out
}

fn port_number(field: &str, v: &Value) -> Option<Cause> {
    match v.as_i64() {
        None => Some(Cause::required(field)),
        Some(n) if !(1..=65535).contains(&n) => Some(Cause::invalid(
            field,
            n,
            "must be between 1 and 65535, inclusive",
        )),
        Some(_) => None,
    }
}

/// Validates a pod spec at `path` (`spec` or `spec.template.spec`).
pub fn pod_spec(path: &str, spec: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    let containers = spec["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if containers.is_empty() {
        out.push(Cause::required(format!("{path}.containers")));
    }
    let init = spec["initContainers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut names: Vec<&str> = Vec::new();
    for (list, items) in [("initContainers", init), ("containers", containers)] {
        for (i, c) in items.iter().enumerate() {
            let at = format!("{path}.{list}[{i}]");
            match c["name"].as_str().filter(|n| !n.is_empty()) {
                None => out.push(Cause::required(format!("{at}.name"))),
                Some(n) => {
                    out.extend(label_1123(&format!("{at}.name"), n));
                    if names.contains(&n) {
                        out.push(Cause::duplicate(format!("{at}.name"), go_quote(n)));
                    }
                    names.push(n);
                }
            }
            if c["image"].as_str().is_none_or(str::is_empty) {
                out.push(Cause::required(format!("{at}.image")));
            }
            for (j, p) in c["ports"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                if let Some(cause) = port_number(
                    &format!("{at}.ports[{j}].containerPort"),
                    &p["containerPort"],
                ) {
                    out.push(cause);
                }
            }
        }
    }
    out
}

/// Validates a Deployment's or ReplicaSet's spec: selector required and matching the template.
pub fn workload_spec(spec: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    let selector = &spec["selector"];
    let empty = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.is_empty())
        && selector["matchExpressions"]
            .as_array()
            .is_none_or(|m| m.is_empty());
    if empty {
        out.push(Cause::required("spec.selector"));
    } else {
        let template_labels = &spec["template"]["metadata"]["labels"];
        let query = LabelSelector::to_query_string(selector);
        let matches = LabelSelector::parse(&query).is_ok_and(|s| s.matches(template_labels));
        if !matches {
            out.push(Cause::invalid(
                "spec.template.metadata.labels",
                format!("map[string]string{}", go_map(template_labels)),
                "`selector` does not match template `labels`",
            ));
        }
    }
    if let Some(r) = spec["replicas"].as_i64()
        && r < 0
    {
        out.push(Cause::invalid(
            "spec.replicas",
            r,
            "must be greater than or equal to 0",
        ));
    }
    out.extend(labels(
        "spec.template.metadata.labels",
        &spec["template"]["metadata"]["labels"],
    ));
    out.extend(pod_spec("spec.template.spec", &spec["template"]["spec"]));
    out
}

/// Formats a string map the way Go's `%#v` does: `{"a":"b", "c":"d"}`.
fn go_map(v: &Value) -> String {
    let items: Vec<String> = v
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    format!(
                        "{}:{}",
                        go_quote(k),
                        go_quote(v.as_str().unwrap_or_default())
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!("{{{}}}", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;
    use serde_json::json;

    #[test]
    fn names_follow_the_type_rules() {
        let svc = resources::find("", "v1", "services").unwrap();
        let cm = resources::find("", "v1", "configmaps").unwrap();
        let ns = resources::find("", "v1", "namespaces").unwrap();
        assert!(name(svc, "web-1").is_empty());
        assert!(
            !name(svc, "1web").is_empty(),
            "DNS-1035 starts with a letter"
        );
        assert!(name(cm, "a.b-c").is_empty());
        assert!(!name(ns, "a.b").is_empty());
        let causes = name(cm, "Bad_Name");
        assert_eq!(causes[0].field, "metadata.name");
        assert!(
            causes[0]
                .message
                .starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain")
        );
        assert!(!name(cm, &"a".repeat(254)).is_empty());
    }

    #[test]
    fn pods_need_containers_with_images() {
        assert_eq!(
            pod_spec("spec", &json!({}))[0],
            Cause::required("spec.containers")
        );
        let causes = pod_spec(
            "spec",
            &json!({"containers": [{"name": "a"}, {"name": "a", "image": "x"}]}),
        );
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["spec.containers[0].image", "spec.containers[1].name"]
        );
    }

    #[test]
    fn workloads_need_a_matching_selector() {
        let spec = json!({"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}}});
        let causes = workload_spec(&spec);
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].message,
            "Invalid value: map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`"
        );
        assert_eq!(
            workload_spec(&json!({}))[0],
            Cause::required("spec.selector")
        );
    }

    #[test]
    fn label_values_are_checked() {
        assert!(
            labels(
                "metadata.labels",
                &json!({"app": "ok", "example.com/x": ""})
            )
            .is_empty()
        );
        assert_eq!(
            labels("metadata.labels", &json!({"app": "not ok"})).len(),
            1
        );
        assert_eq!(
            labels("metadata.labels", &json!({"bad key!": "v"})).len(),
            1
        );
    }
}
