//! What an intercept targets: the Deployment, the Service that selects it, the Service port
//! and the container port behind it, resolved the way the endpoints controller resolves
//! them, with an error for every way the choice can be wrong or ambiguous.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use thiserror::Error;

use super::agent::SIDECAR;

/// What the user asked for, besides the workload's name.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    pub service: Option<String>,
    /// A Service port's name or number.
    pub port: Option<String>,
    pub container: Option<String>,
}

/// One Service port that leads to a container port of the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// Index in the Service's `spec.ports`.
    pub index: usize,
    pub service_port: u16,
    pub service_port_name: Option<String>,
    /// The container port the Service reaches.
    pub app_port: u16,
    /// The targetPort's name, when the Service targets the port by name.
    pub named: Option<String>,
}

/// The resolved target of an intercept.
#[derive(Debug, Clone)]
pub struct Target {
    pub workload: String,
    pub service: Service,
    pub container: String,
    /// The port that was asked for.
    pub port: Mapped,
    /// Every port of the Service that leads to `container` (the sidecar takes them all, so a
    /// later intercept of another port needs no rollout).
    pub all: Vec<Mapped>,
}

impl Target {
    pub fn service_name(&self) -> &str {
        self.service.metadata.name.as_deref().unwrap_or_default()
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetError {
    #[error(
        "no Service in namespace {namespace} selects deploy/{workload}: there is nothing to intercept. Create one, or check its selector against the pod labels ({labels})."
    )]
    NoService {
        workload: String,
        namespace: String,
        labels: String,
    },
    #[error("{} Services select deploy/{workload}: {}. Choose one with --service.", .services.len(), .services.join(", "))]
    SeveralServices {
        workload: String,
        services: Vec<String>,
    },
    #[error("Service {service} does not select deploy/{workload}; the Services that do: {}.", .selecting.join(", "))]
    NotSelecting {
        service: String,
        workload: String,
        selecting: Vec<String>,
    },
    #[error(
        "Service {service} is headless (clusterIP: None): its clients dial the pods' ports directly, which a sidecar cannot take over without NET_ADMIN. Intercept a Service with a ClusterIP that selects the same pods."
    )]
    Headless { service: String },
    #[error("Service {service} has {} ports ({}); say which with --port LOCAL:PORT.", .ports.len(), .ports.join(", "))]
    SeveralPorts { service: String, ports: Vec<String> },
    #[error("Service {service} has no port {port}; its ports: {}.", .ports.join(", "))]
    UnknownPort {
        service: String,
        port: String,
        ports: Vec<String>,
    },
    #[error("deploy/{workload} has no container {container}; its containers: {}.", .containers.join(", "))]
    UnknownContainer {
        workload: String,
        container: String,
        containers: Vec<String>,
    },
    #[error(
        "no container of deploy/{workload} declares the port named {name} that Service {service} targets, so the Service has no endpoints for it."
    )]
    UnresolvedName {
        workload: String,
        service: String,
        name: String,
    },
    #[error("deploy/{workload} has several containers ({}) and none declares port {port}; choose one with --container.", .containers.join(", "))]
    SeveralContainers {
        workload: String,
        port: u16,
        containers: Vec<String>,
    },
}

/// Whether `service` selects the pods of `deploy` (a selector is a subset of the labels).
pub fn selects(service: &Service, deploy: &Deployment) -> bool {
    let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    let labels = template_labels(deploy);
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn template_labels(deploy: &Deployment) -> std::collections::BTreeMap<String, String> {
    deploy
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

/// The workload's own containers (the sidecar is tether's).
pub fn containers(deploy: &Deployment) -> Vec<&Container> {
    deploy
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.iter().filter(|c| c.name != SIDECAR).collect())
        .unwrap_or_default()
}

pub fn name_of(service: &Service) -> String {
    service.metadata.name.clone().unwrap_or_default()
}

/// The IP addresses a load-balancer controller wrote to the Service's status (hostname-only
/// entries, as some clouds give, have no address to dial).
pub fn load_balancer_ips(service: &Service) -> Vec<std::net::IpAddr> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// How a Service port reads in messages: `http (80)` or `80`.
pub fn describe_port(p: &ServicePort) -> String {
    match &p.name {
        Some(n) if !n.is_empty() => format!("{n} ({})", p.port),
        _ => p.port.to_string(),
    }
}

/// Resolves what an intercept of `deploy` with `choice` targets, given the namespace's
/// Services.
pub fn resolve(
    deploy: &Deployment,
    services: &[Service],
    choice: &Choice,
) -> Result<Target, TargetError> {
    let workload = deploy.metadata.name.clone().unwrap_or_default();
    let namespace = deploy.metadata.namespace.clone().unwrap_or_default();
    let selecting: Vec<&Service> = services.iter().filter(|s| selects(s, deploy)).collect();
    let names = || selecting.iter().map(|s| name_of(s)).collect::<Vec<_>>();
    let service = match &choice.service {
        Some(wanted) => selecting
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(wanted))
            .copied()
            .ok_or_else(|| TargetError::NotSelecting {
                service: wanted.clone(),
                workload: workload.clone(),
                selecting: names(),
            })?,
        None => match selecting.as_slice() {
            [] => {
                let labels = template_labels(deploy)
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                return Err(TargetError::NoService {
                    workload,
                    namespace,
                    labels,
                });
            }
            [one] => *one,
            _ => {
                return Err(TargetError::SeveralServices {
                    workload,
                    services: names(),
                });
            }
        },
    };
    let service_name = name_of(service);
    let spec = service.spec.clone().unwrap_or_default();
    if spec.cluster_ip.as_deref() == Some("None") {
        return Err(TargetError::Headless {
            service: service_name,
        });
    }
    let ports = spec.ports.unwrap_or_default();
    let described = || ports.iter().map(describe_port).collect::<Vec<_>>();
    let index = match &choice.port {
        Some(wanted) => ports
            .iter()
            .position(|p| {
                p.name.as_deref() == Some(wanted.as_str()) || p.port.to_string() == *wanted
            })
            .ok_or_else(|| TargetError::UnknownPort {
                service: service_name.clone(),
                port: wanted.clone(),
                ports: described(),
            })?,
        None if ports.len() == 1 => 0,
        None => {
            return Err(TargetError::SeveralPorts {
                service: service_name,
                ports: described(),
            });
        }
    };
    let all_containers = containers(deploy);
    let container = match &choice.container {
        Some(wanted) => Some(
            *all_containers
                .iter()
                .find(|c| &c.name == wanted)
                .ok_or_else(|| TargetError::UnknownContainer {
                    workload: workload.clone(),
                    container: wanted.clone(),
                    containers: all_containers.iter().map(|c| c.name.clone()).collect(),
                })?,
        ),
        None => None,
    };
    let (container, port) = map_port(
        &workload,
        &service_name,
        &ports,
        index,
        &all_containers,
        container,
    )?;
    // The other ports of the Service that lead to the same container.
    let all = (0..ports.len())
        .filter_map(|i| {
            map_port(
                &workload,
                &service_name,
                &ports,
                i,
                &all_containers,
                Some(container),
            )
            .ok()
            .map(|(_, m)| m)
        })
        .collect();
    Ok(Target {
        workload,
        service: service.clone(),
        container: container.name.clone(),
        port,
        all,
    })
}

/// The container and container port that Service port `index` leads to.
fn map_port<'a>(
    workload: &str,
    service: &str,
    ports: &[ServicePort],
    index: usize,
    containers: &[&'a Container],
    chosen: Option<&'a Container>,
) -> Result<(&'a Container, Mapped), TargetError> {
    let p = &ports[index];
    let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
    let declares =
        |c: &Container, f: &dyn Fn(&k8s_openapi::api::core::v1::ContainerPort) -> bool| {
            c.ports.as_deref().unwrap_or_default().iter().any(f)
        };
    let mapped = |app_port: i32, named: Option<String>| Mapped {
        index,
        service_port: p.port as u16,
        service_port_name: p.name.clone().filter(|n| !n.is_empty()),
        app_port: app_port as u16,
        named,
    };
    match target {
        IntOrString::String(name) => {
            let candidates: Vec<&&Container> = containers
                .iter()
                .filter(|c| chosen.is_none_or(|ch| ch.name == c.name))
                .collect();
            for c in candidates {
                if let Some(cp) = c
                    .ports
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                {
                    return Ok((c, mapped(cp.container_port, Some(name))));
                }
            }
            Err(TargetError::UnresolvedName {
                workload: workload.into(),
                service: service.into(),
                name,
            })
        }
        IntOrString::Int(number) => {
            if let Some(c) = chosen {
                return Ok((c, mapped(number, None)));
            }
            let declaring: Vec<&&Container> = containers
                .iter()
                .filter(|c| declares(c, &|cp| cp.container_port == number))
                .collect();
            match (declaring.as_slice(), containers) {
                ([one], _) => Ok((one, mapped(number, None))),
                ([], [only]) => Ok((only, mapped(number, None))),
                _ => Err(TargetError::SeveralContainers {
                    workload: workload.into(),
                    port: number as u16,
                    containers: containers.iter().map(|c| c.name.clone()).collect(),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub fn deploy(value: serde_json::Value) -> Deployment {
        serde_json::from_value(value).unwrap()
    }

    pub fn web() -> Deployment {
        deploy(json!({
            "metadata": {"name": "web", "namespace": "demo"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web", "track": "stable"}},
                "spec": {"containers": [{"name": "http-echo", "image": "x",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}}}]}}}
        }))
    }

    pub fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    fn web_service() -> Service {
        service(
            json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
            "clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        )
    }

    #[test]
    fn a_named_target_port_resolves_to_the_container_declaring_it() {
        let t = resolve(&web(), &[web_service()], &Choice::default()).unwrap();
        assert_eq!(t.container, "http-echo");
        assert_eq!(t.port.app_port, 8080);
        assert_eq!(t.port.named.as_deref(), Some("http"));
        assert_eq!(t.all, vec![t.port.clone()]);
    }

    #[test]
    fn ambiguity_and_mistakes_are_errors_that_name_the_choices() {
        let other = service(
            json!({"metadata": {"name": "web-admin"}, "spec": {"selector": {"track": "stable"},
            "clusterIP": "10.96.0.21", "ports": [{"name": "a", "port": 1, "targetPort": 8080}, {"name": "b", "port": 2, "targetPort": 9}]}}),
        );
        let services = [web_service(), other];
        let err = resolve(&web(), &services, &Choice::default()).unwrap_err();
        assert!(matches!(err, TargetError::SeveralServices { .. }), "{err}");
        assert!(err.to_string().contains("web, web-admin"));

        let admin = Choice {
            service: Some("web-admin".into()),
            ..Default::default()
        };
        let err = resolve(&web(), &services, &admin).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Service web-admin has 2 ports (a (1), b (2)); say which with --port LOCAL:PORT."
        );
        let b = Choice {
            port: Some("b".into()),
            ..admin.clone()
        };
        // Port 9 is declared by no container, and there is only one: it is that one's.
        let t = resolve(&web(), &services, &b).unwrap();
        assert_eq!((t.port.app_port, t.port.named.clone()), (9, None));
        let unknown = Choice {
            port: Some("grpc".into()),
            ..admin
        };
        assert!(matches!(
            resolve(&web(), &services, &unknown).unwrap_err(),
            TargetError::UnknownPort { .. }
        ));

        let none = service(
            json!({"metadata": {"name": "db"}, "spec": {"selector": {"app": "db"}, "ports": [{"port": 1}]}}),
        );
        assert!(matches!(
            resolve(&web(), &[none], &Choice::default()).unwrap_err(),
            TargetError::NoService { .. }
        ));
        let headless = service(
            json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
            "clusterIP": "None", "ports": [{"port": 80}]}}),
        );
        assert!(matches!(
            resolve(&web(), &[headless], &Choice::default()).unwrap_err(),
            TargetError::Headless { .. }
        ));
    }
}
