//! The pure half: a container's environment from the pod and objects already read.
//!
//! The order is the kubelet's (`makeEnvironmentVariables`):
//! 1. `envFrom`, in order: every `data` key of the ConfigMap or Secret, with the entry's
//!    prefix; a later source overrides an earlier one. Keys are taken as they are: the kubelet
//!    stopped skipping names that are not C identifiers with the relaxed environment variable
//!    names of Kubernetes 1.30.
//! 2. `env`, in order, each overriding what came before: a non-empty `value` with its
//!    `$(VAR)` references expanded against the variables defined so far and then the Service
//!    variables; otherwise `valueFrom` (`fieldRef`, `resourceFieldRef`, `configMapKeyRef`,
//!    `secretKeyRef`). An optional reference to a missing object or key defines nothing.
//! 3. The Service variables ([`super::services`]) wherever the container did not define
//!    the same name.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use super::expand::expand;
use super::quantity::{Quantity, QuantityError};
use super::services::service_env;
use super::{Env, EnvError};

/// The objects a container's environment reads, fetched beforehand.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// ConfigMaps of the pod's namespace, by name; a referenced name absent here does not
    /// exist.
    pub config_maps: BTreeMap<String, ConfigMap>,
    /// Secrets of the pod's namespace, by name, likewise.
    pub secrets: BTreeMap<String, Secret>,
    /// The Services of the pod's namespace (needed only when `enableServiceLinks` is on).
    pub services: Vec<Service>,
    /// `default/kubernetes`, if it exists.
    pub kubernetes: Option<Service>,
    /// `status.allocatable` of the pod's Node, when [`Needs::node_allocatable`] says so.
    pub node_allocatable: Option<BTreeMap<String, ApiQuantity>>,
}

/// What to read for [`Inputs`]: names in the pod's namespace, and whether the rest is used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
    /// The namespace's Services are linked (`enableServiceLinks`, true when unset).
    pub service_links: bool,
    /// A `resourceFieldRef` reads a limit the container does not set, so the kubelet would
    /// use the Node's allocatable resources.
    pub node_allocatable: bool,
}

/// The resources whose missing limit the kubelet replaces with the Node's allocatable.
const DEFAULTED_LIMITS: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];
/// The resources a pod-level limit (`spec.resources`) can stand in for.
const POD_LEVEL: [&str; 2] = ["cpu", "memory"];

/// `metadata.namespace`, which every pod read from the API has.
pub(crate) fn namespace(pod: &Pod) -> Result<&str, EnvError> {
    pod.metadata
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .ok_or_else(|| EnvError::Incomplete {
            pod: pod_name(pod),
            field: "metadata.namespace",
        })
}

fn pod_name(pod: &Pod) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    match pod.metadata.namespace.as_deref() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// The container named `name`, an app or an init container, as the kubelet may start both.
pub(crate) fn find_container<'a>(pod: &'a Pod, name: &str) -> Result<&'a Container, EnvError> {
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let init = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    containers
        .iter()
        .chain(init)
        .find(|c| c.name == name)
        .ok_or_else(|| EnvError::NoSuchContainer {
            pod: pod_name(pod),
            container: name.to_string(),
            available: containers
                .iter()
                .chain(init)
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// What [`resolve`] will look at for `container`.
pub fn needs(pod: &Pod, container: &str) -> Result<Needs, EnvError> {
    let this = find_container(pod, container)?;
    let mut needs = Needs {
        service_links: service_links(pod),
        ..Needs::default()
    };
    for from in this.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            needs.config_maps.insert(r.name.clone());
        } else if let Some(r) = &from.secret_ref {
            needs.secrets.insert(r.name.clone());
        }
    }
    for var in this.env.iter().flatten() {
        let Some(source) = var.value_from.as_ref().filter(|_| uses_value_from(var)) else {
            continue;
        };
        // The sources in the order the kubelet tries them.
        if source.field_ref.is_some() {
            // Read from the pod itself.
        } else if let Some(field) = &source.resource_field_ref {
            needs.node_allocatable |= reads_node_allocatable(pod, this, field);
        } else if let Some(r) = &source.config_map_key_ref {
            needs.config_maps.insert(r.name.clone());
        } else if let Some(r) = &source.secret_key_ref {
            needs.secrets.insert(r.name.clone());
        }
    }
    Ok(needs)
}

/// `enableServiceLinks`, which the API defaults to true.
fn service_links(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true)
}

/// A literal value wins over `valueFrom`, as long as it is not empty.
fn uses_value_from(var: &EnvVar) -> bool {
    var.value.as_deref().is_none_or(str::is_empty) && var.value_from.is_some()
}

/// The environment of `container` in `pod`, as the kubelet would give it.
pub fn resolve(pod: &Pod, container: &str, inputs: &Inputs) -> Result<Env, EnvError> {
    let this = find_container(pod, container)?;
    let namespace = namespace(pod)?;
    let services = service_env(
        namespace,
        service_links(pod),
        &inputs.services,
        inputs.kubernetes.as_ref(),
    );
    let resolver = Resolver {
        pod,
        namespace,
        container: this,
        inputs,
    };
    // What the container defines itself; a later definition replaces an earlier one.
    let mut own: BTreeMap<String, String> = BTreeMap::new();
    for from in this.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match inputs.config_maps.get(&r.name) {
                Some(cm) => {
                    for (key, value) in cm.data.iter().flatten() {
                        own.insert(format!("{prefix}{key}"), value.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(resolver.not_found("ConfigMap", &r.name)),
            }
        } else if let Some(r) = &from.secret_ref {
            match inputs.secrets.get(&r.name) {
                Some(secret) => {
                    for (key, value) in secret.data.iter().flatten() {
                        let text = resolver.text(&r.name, key, &value.0)?;
                        own.insert(format!("{prefix}{key}"), text);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(resolver.not_found("Secret", &r.name)),
            }
        }
    }
    for var in this.env.iter().flatten() {
        let value = match var.value.as_deref() {
            Some(literal) if !literal.is_empty() => expand(literal, |name| {
                own.get(name)
                    .or_else(|| services.get(name))
                    .map(String::as_str)
            }),
            _ => match resolver.value_from(var)? {
                Some(value) => value,
                // An optional reference to something missing defines nothing.
                None => continue,
            },
        };
        own.insert(var.name.clone(), value);
    }
    let mut env = services;
    env.extend(own);
    Ok(Env { vars: env })
}

struct Resolver<'a> {
    pod: &'a Pod,
    namespace: &'a str,
    container: &'a Container,
    inputs: &'a Inputs,
}

impl Resolver<'_> {
    fn not_found(&self, kind: &'static str, name: &str) -> EnvError {
        EnvError::NotFound {
            kind,
            object: format!("{}/{name}", self.namespace),
            needed_by: format!(
                "container {} reads it and does not mark it optional",
                self.container.name
            ),
        }
    }

    fn missing_key(&self, kind: &'static str, name: &str, key: &str, var: &str) -> EnvError {
        EnvError::MissingKey {
            kind,
            object: format!("{}/{name}", self.namespace),
            key: key.to_string(),
            var: var.to_string(),
            container: self.container.name.clone(),
        }
    }

    fn unresolvable(&self, var: &str, reason: String) -> EnvError {
        EnvError::Unresolvable {
            var: var.to_string(),
            container: self.container.name.clone(),
            reason,
        }
    }

    /// A Secret value as text; the kubelet passes bytes, an env file needs UTF-8.
    fn text(&self, secret: &str, key: &str, bytes: &[u8]) -> Result<String, EnvError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| EnvError::NotText {
            object: format!("{}/{secret}", self.namespace),
            key: key.to_string(),
        })
    }

    /// The value `valueFrom` gives, or None where an optional reference finds nothing.
    fn value_from(&self, var: &EnvVar) -> Result<Option<String>, EnvError> {
        let Some(source) = &var.value_from else {
            return Ok(Some(String::new()));
        };
        if let Some(field) = &source.field_ref {
            return self.field(&var.name, field).map(Some);
        }
        if let Some(field) = &source.resource_field_ref {
            return self.resource(&var.name, field).map(Some);
        }
        if let Some(r) = &source.config_map_key_ref {
            let optional = r.optional == Some(true);
            let Some(cm) = self.inputs.config_maps.get(&r.name) else {
                return if optional {
                    Ok(None)
                } else {
                    Err(self.not_found("ConfigMap", &r.name))
                };
            };
            return match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                Some(value) => Ok(Some(value.clone())),
                None if optional => Ok(None),
                None => Err(self.missing_key("ConfigMap", &r.name, &r.key, &var.name)),
            };
        }
        if let Some(r) = &source.secret_key_ref {
            let optional = r.optional == Some(true);
            let Some(secret) = self.inputs.secrets.get(&r.name) else {
                return if optional {
                    Ok(None)
                } else {
                    Err(self.not_found("Secret", &r.name))
                };
            };
            return match secret.data.as_ref().and_then(|d| d.get(&r.key)) {
                Some(value) => self.text(&r.name, &r.key, &value.0).map(Some),
                None if optional => Ok(None),
                None => Err(self.missing_key("Secret", &r.name, &r.key, &var.name)),
            };
        }
        // A `valueFrom` naming no source is rejected by the API; the kubelet would set "".
        Ok(Some(String::new()))
    }

    /// A `fieldRef`: the pod fields the downward API offers to environment variables.
    fn field(&self, var: &str, selector: &ObjectFieldSelector) -> Result<String, EnvError> {
        if let Some(version) = selector.api_version.as_deref().filter(|v| !v.is_empty())
            && version != "v1"
        {
            return Err(
                self.unresolvable(var, format!("unsupported fieldRef apiVersion {version:?}"))
            );
        }
        let pod = self.pod;
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let path = selector.field_path.as_str();
        if let Some((map, key)) = subscript(path) {
            let found = match map {
                "metadata.labels" => meta.labels.as_ref(),
                "metadata.annotations" => meta.annotations.as_ref(),
                _ => {
                    return Err(self.unresolvable(var, format!("unsupported fieldRef {path:?}")));
                }
            };
            // A label or annotation that is not there reads as empty.
            return Ok(found.and_then(|m| m.get(key)).cloned().unwrap_or_default());
        }
        let text = |s: Option<&String>| s.cloned().unwrap_or_default();
        let pod_ips = || -> Vec<String> {
            let listed = status
                .and_then(|s| s.pod_ips.as_deref())
                .unwrap_or_default();
            match (listed, status.and_then(|s| s.pod_ip.as_ref())) {
                ([], Some(ip)) => vec![ip.clone()],
                (ips, _) => ips.iter().map(|ip| ip.ip.clone()).collect(),
            }
        };
        let host_ips = || -> Vec<String> {
            let listed = status
                .and_then(|s| s.host_ips.as_deref())
                .unwrap_or_default();
            match (listed, status.and_then(|s| s.host_ip.as_ref())) {
                ([], Some(ip)) => vec![ip.clone()],
                (ips, _) => ips.iter().map(|ip| ip.ip.clone()).collect(),
            }
        };
        Ok(match path {
            "metadata.name" => text(meta.name.as_ref()),
            "metadata.namespace" => text(meta.namespace.as_ref()),
            "metadata.uid" => text(meta.uid.as_ref()),
            // `spec.host` is the old name the API still converts.
            "spec.nodeName" | "spec.host" => text(spec.and_then(|s| s.node_name.as_ref())),
            "spec.serviceAccountName" => text(spec.and_then(|s| s.service_account_name.as_ref())),
            "spec.terminationGracePeriodSeconds" => spec
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .to_string(),
            // The first IP is the one of the node's preferred family, as the kubelet sorts
            // them in the status it writes.
            "status.podIP" => pod_ips().into_iter().next().unwrap_or_default(),
            "status.podIPs" => pod_ips().join(","),
            "status.hostIP" => host_ips().into_iter().next().unwrap_or_default(),
            "status.hostIPs" => host_ips().join(","),
            _ => return Err(self.unresolvable(var, format!("unsupported fieldRef {path:?}"))),
        })
    }

    /// A `resourceFieldRef`: a limit or request of this or another container, divided by
    /// the divisor and rounded up.
    fn resource(&self, var: &str, selector: &ResourceFieldSelector) -> Result<String, EnvError> {
        let (target, defaulted) = match selector.container_name.as_deref() {
            None | Some("") => (self.container, true),
            Some(name) => target_container(self.pod, name).ok_or_else(|| {
                self.unresolvable(var, format!("no container {name:?} in the pod"))
            })?,
        };
        let bad = |e: QuantityError| self.unresolvable(var, e.to_string());
        let divisor = match &selector.divisor {
            Some(d) => Quantity::parse(&d.0).map_err(bad)?,
            None => Quantity::ONE,
        };
        // A zero divisor is the API's way of leaving it unset.
        let divisor = if divisor.is_zero() {
            Quantity::ONE
        } else {
            divisor
        };
        let unsupported =
            || self.unresolvable(var, format!("unsupported resource {:?}", selector.resource));
        let (kind, name) = selector.resource.split_once('.').ok_or_else(unsupported)?;
        if !(DEFAULTED_LIMITS.contains(&name) || name.starts_with("hugepages-")) {
            return Err(unsupported());
        }
        let resources = target.resources.as_ref();
        let value = match kind {
            "requests" => resources
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(name))
                .cloned(),
            "limits" => match own_limit(target, name) {
                Some(limit) => Some(limit.clone()),
                None if defaulted && DEFAULTED_LIMITS.contains(&name) => {
                    self.limit_fallback(var, name)?
                }
                None => None,
            },
            _ => return Err(unsupported()),
        };
        match value {
            Some(q) => Quantity::parse(&q.0)
                .and_then(|q| q.ceil_div(&divisor))
                .map_err(bad),
            None => Ok("0".into()),
        }
    }

    /// What the kubelet puts in place of a missing limit: the pod-level limit where the pod
    /// sets one, else the Node's allocatable; nothing where the Node lists no such resource.
    fn limit_fallback(&self, var: &str, name: &str) -> Result<Option<ApiQuantity>, EnvError> {
        let pod_level = pod_limit(self.pod, name);
        match (&self.inputs.node_allocatable, pod_level) {
            // The kubelet replaces only resources the Node lists.
            (Some(allocatable), pod_level) => Ok(allocatable
                .get(name)
                .map(|cap| pod_level.unwrap_or(cap).clone())),
            // Without the Node, assume it lists cpu and memory, as every Node does.
            (None, Some(limit)) => Ok(Some(limit.clone())),
            (None, None) => Err(EnvError::NoAllocatable {
                var: var.to_string(),
                container: self.container.name.clone(),
            }),
        }
    }
}

/// `metadata.labels['app']` as (`metadata.labels`, `app`).
fn subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (map, key) = inner.split_once("['")?;
    (!map.is_empty()).then_some((map, key))
}

/// A container named by `resourceFieldRef.containerName`, and whether its missing limits are
/// defaulted: the kubelet defaults those of the app containers, not of init containers.
fn target_container<'a>(pod: &'a Pod, name: &str) -> Option<(&'a Container, bool)> {
    let spec = pod.spec.as_ref()?;
    if let Some(c) = spec.containers.iter().find(|c| c.name == name) {
        return Some((c, true));
    }
    let init = spec.init_containers.as_deref().unwrap_or_default();
    init.iter().find(|c| c.name == name).map(|c| (c, false))
}

/// The container's own limit, unless it is missing or zero.
fn own_limit<'a>(container: &'a Container, name: &str) -> Option<&'a ApiQuantity> {
    container
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get(name)
        .filter(|q| nonzero(q))
}

/// The pod-level limit (`spec.resources.limits`) for a resource it may set.
fn pod_limit<'a>(pod: &'a Pod, name: &str) -> Option<&'a ApiQuantity> {
    if !POD_LEVEL.contains(&name) {
        return None;
    }
    pod.spec
        .as_ref()?
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get(name)
        .filter(|q| nonzero(q))
}

/// Whether a quantity counts as set; one that does not parse is left for [`resolve`] to
/// report.
fn nonzero(q: &ApiQuantity) -> bool {
    !Quantity::parse(&q.0).is_ok_and(|q| q.is_zero())
}

/// Whether resolving `field` of `this` would fall back to the Node's allocatable.
fn reads_node_allocatable(pod: &Pod, this: &Container, field: &ResourceFieldSelector) -> bool {
    let Some(("limits", name)) = field.resource.split_once('.') else {
        return false;
    };
    if !DEFAULTED_LIMITS.contains(&name) {
        return false;
    }
    let target = match field.container_name.as_deref() {
        None | Some("") => this,
        Some(other) => match target_container(pod, other) {
            Some((c, true)) => c,
            // Init containers keep their missing limits; an unknown container is an error
            // that resolving reports.
            _ => return false,
        },
    };
    own_limit(target, name).is_none() && pod_limit(pod, name).is_none()
}
