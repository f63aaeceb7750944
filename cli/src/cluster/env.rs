//! A container's environment as the kubelet gives it to the process, and env files of it.
//!
//! `tether intercept --env-file` hands the local process the environment the intercepted
//! container has: its own `env` and `envFrom`, with the `$(VAR)` expansion, the downward API
//! and the Service variables the kubelet adds. The parts:
//! - [`resolve`](resolve::resolve) is pure: the Pod and the objects it refers to, already
//!   read, in; the [`Env`] out. It follows the kubelet's `makeEnvironmentVariables` rule by
//!   rule ([`resolve`] module) and is tested with typed objects, without a cluster.
//! - [`services`] builds the Service variables (`API_SERVICE_HOST`, `API_PORT_8080_TCP`...),
//!   [`expand`] the `$(VAR)` references, [`quantity`] the arithmetic of `resourceFieldRef`.
//! - [`container_env`] reads what [`needs`](resolve::needs) names, with the user's own
//!   credentials, and maps refusals to errors that name the object and the verb to ask for.
//! - [`Env::render`] writes the docker, compose, sh or JSON syntax ([`render`]).
//!
//! What the kubelet does not decide is not here: the image's own `ENV` lines and the
//! `HOSTNAME` the container runtime sets are not part of the pod spec.

#![cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "used by `tether intercept` (issue 11); remove once the command calls it"
    )
)]

mod expand;
mod quantity;
mod render;
mod resolve;
mod services;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use futures::future::try_join_all;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service};
use kube::Api;
use serde::de::DeserializeOwned;
use thiserror::Error;

use super::client::describe;

pub use render::EnvSyntax;
pub use resolve::{Inputs, Needs, needs, resolve};

/// Environment variables by name, in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    /// Every variable, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The file a reader of `syntax` loads back as exactly these variables.
    pub fn render(&self, syntax: EnvSyntax) -> Result<String, EnvError> {
        render::render(self, syntax)
    }
}

impl FromIterator<(String, String)> for Env {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Env {
            vars: iter.into_iter().collect(),
        }
    }
}

#[derive(Debug, Error)]
pub enum EnvError {
    #[error("pod {pod} has no container {container} (it has: {available})")]
    NoSuchContainer {
        pod: String,
        container: String,
        available: String,
    },
    #[error("pod {pod} has no {field}")]
    Incomplete { pod: String, field: &'static str },
    #[error("{kind} {object} not found; {needed_by}")]
    NotFound {
        kind: &'static str,
        object: String,
        needed_by: String,
    },
    #[error(
        "{kind} {object} has no key {key:?}; variable {var} of container {container} reads it \
         and does not mark it optional"
    )]
    MissingKey {
        kind: &'static str,
        object: String,
        key: String,
        var: String,
        container: String,
    },
    #[error("Secret {object} key {key:?} is binary, not text, and no env file can carry it")]
    NotText { object: String, key: String },
    #[error("variable {var} of container {container}: {reason}")]
    Unresolvable {
        var: String,
        container: String,
        reason: String,
    },
    #[error(
        "variable {var} of container {container} reads a limit the container does not set, \
         which the kubelet takes from the Node's allocatable resources, and the Node was not read"
    )]
    NoAllocatable { var: String, container: String },
    #[error("cannot {action} {what}: forbidden; ask for {verb} on {resource}{scope}")]
    Forbidden {
        action: &'static str,
        what: String,
        verb: &'static str,
        resource: &'static str,
        scope: String,
        // Boxed: kube's error is large, and every fallible call here returns this enum.
        #[source]
        source: Box<kube::Error>,
    },
    #[error("cannot {action} {what}: {reason}")]
    Api {
        action: &'static str,
        what: String,
        reason: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("cannot write {key} in {syntax} syntax: {reason}; use the {instead} syntax")]
    Unrepresentable {
        key: String,
        syntax: EnvSyntax,
        reason: String,
        instead: &'static str,
    },
    #[error("cannot encode the environment as JSON")]
    Json(#[source] serde_json::Error),
}

/// The environment of `container` in `pod`, as the kubelet gives it to the process.
///
/// Reads, with the client's credentials: the ConfigMaps and Secrets the container refers to,
/// the Services of the pod's namespace (unless `enableServiceLinks` is false),
/// `default/kubernetes`, and the pod's Node only when a `resourceFieldRef` falls back to its
/// allocatable resources. The reads run concurrently.
pub async fn container_env(
    client: &kube::Client,
    pod: &Pod,
    container: &str,
) -> Result<Env, EnvError> {
    let needs: Needs = needs(pod, container)?;
    let namespace = resolve::namespace(pod)?;
    // Only a limit the container leaves unset sends the kubelet to the Node; reading Nodes
    // is a cluster-wide grant many developers lack, so it is asked for only then.
    let node_name = if needs.node_allocatable {
        let name = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        Some(
            name.filter(|n| !n.is_empty())
                .ok_or_else(|| EnvError::Incomplete {
                    pod: format!(
                        "{namespace}/{}",
                        pod.metadata.name.as_deref().unwrap_or_default()
                    ),
                    field: "spec.nodeName (it is not scheduled yet)",
                })?,
        )
    } else {
        None
    };

    let config_map_api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let secret_api = Api::<Secret>::namespaced(client.clone(), namespace);
    let service_api = Api::<Service>::namespaced(client.clone(), namespace);
    let default_service_api = Api::<Service>::namespaced(client.clone(), "default");
    let node_api = Api::<Node>::all(client.clone());
    let in_namespace = Scope::Namespace(namespace);

    let config_maps = try_join_all(needs.config_maps.iter().map(|name| {
        let found = get(
            &config_map_api,
            name,
            "ConfigMap",
            "configmaps",
            in_namespace,
        );
        async move { found.await.map(|cm| (name, cm)) }
    }));
    let secrets = try_join_all(needs.secrets.iter().map(|name| {
        let found = get(&secret_api, name, "Secret", "secrets", in_namespace);
        async move { found.await.map(|secret| (name, secret)) }
    }));
    let services = async {
        if !needs.service_links {
            return Ok(Vec::new());
        }
        service_api
            .list(&Default::default())
            .await
            .map(|list| list.items)
            .map_err(|source| {
                api_error(
                    source,
                    Action::List,
                    format!("Services in namespace {namespace}"),
                    "services",
                    in_namespace,
                )
            })
    };
    let kubernetes = get(
        &default_service_api,
        "kubernetes",
        "Service",
        "services",
        Scope::Namespace("default"),
    );
    let node = async {
        let Some(name) = node_name else {
            return Ok(None);
        };
        match get(&node_api, name, "Node", "nodes", Scope::Cluster).await? {
            Some(node) => Ok(Some(
                node.status.and_then(|s| s.allocatable).unwrap_or_default(),
            )),
            None => Err(EnvError::NotFound {
                kind: "Node",
                object: name.to_string(),
                needed_by: format!(
                    "container {container} reads a limit it does not set, which the kubelet \
                     takes from the Node"
                ),
            }),
        }
    };
    let (config_maps, secrets, services, kubernetes, node_allocatable) =
        futures::try_join!(config_maps, secrets, services, kubernetes, node)?;

    let inputs = Inputs {
        config_maps: config_maps
            .into_iter()
            .filter_map(|(name, cm)| Some((name.clone(), cm?)))
            .collect(),
        secrets: secrets
            .into_iter()
            .filter_map(|(name, s)| Some((name.clone(), s?)))
            .collect(),
        services,
        kubernetes,
        node_allocatable,
    };
    resolve(pod, container, &inputs)
}

/// Where a verb applies, for the RBAC hint.
#[derive(Debug, Clone, Copy)]
enum Scope<'a> {
    Namespace(&'a str),
    Cluster,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Get,
    List,
}

/// One object, or None when it does not exist (whether that is an error is the resolver's
/// call: an optional reference may name a missing object).
async fn get<K>(
    api: &Api<K>,
    name: &str,
    kind: &'static str,
    resource: &'static str,
    scope: Scope<'_>,
) -> Result<Option<K>, EnvError>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.map_err(|source| {
        let what = match scope {
            Scope::Namespace(ns) => format!("{kind} {ns}/{name}"),
            Scope::Cluster => format!("{kind} {name}"),
        };
        api_error(source, Action::Get, what, resource, scope)
    })
}

fn api_error(
    source: kube::Error,
    action: Action,
    what: String,
    resource: &'static str,
    scope: Scope<'_>,
) -> EnvError {
    let (action, verb) = match action {
        Action::Get => ("read", "get"),
        Action::List => ("list", "list"),
    };
    match &source {
        kube::Error::Api(status) if status.code == 403 => EnvError::Forbidden {
            action,
            what,
            verb,
            resource,
            scope: match scope {
                Scope::Namespace(ns) => format!(" in namespace {ns}"),
                Scope::Cluster => " (cluster-wide)".to_string(),
            },
            source: Box::new(source),
        },
        _ => EnvError::Api {
            action,
            what,
            reason: describe(&source),
            source: Box::new(source),
        },
    }
}
