//! `tether doctor`: the steps a person takes when a Service does not answer, walked in
//! order, stopping at the first that fails. Each step is a [`Step`] that says what it found
//! and, when something is wrong, what to do; a [`Diagnosis`] holds the walk of each Service
//! the target names (a Deployment names every Service that selects it).
//!
//! Steps 1-5 read the API (the Service, its pods, their readiness, the EndpointSlices, the
//! containers' ports). Steps 6-7 dial from inside the cluster through a session of the
//! doctor's own with the traffic manager ([`probe::Inside`]), so they work without a
//! connection; step 8 dials from this machine and needs one. Nothing is written anywhere.
//!
//! - [`similar`]: near names and labels, for typos;
//! - [`pods`]: why a pod is not ready;
//! - [`probe`]: the dials and DNS queries.

pub mod pods;
pub mod probe;
pub mod similar;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;
use thiserror::Error;

use crate::cluster::Cluster;
use crate::cluster::rollout::is_ready;
use crate::cluster::workload;
use probe::{Answer, Http, Inside};

/// What `tether doctor` looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Service(String),
    Deployment(String),
}

impl Target {
    /// `svc/NAME`, `deploy/NAME` (and their long forms), or a bare Service name.
    pub fn parse(s: &str) -> Result<Target, String> {
        let (kind, name) = match s.split_once('/') {
            Some((kind, name)) => (Some(kind), name),
            None => (None, s),
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !valid {
            return Err(format!(
                "{name:?} is not a Kubernetes object name (lowercase letters, digits, '-' and '.')"
            ));
        }
        match kind {
            None | Some("svc" | "service" | "services") => Ok(Target::Service(name.into())),
            Some("deploy" | "deployment" | "deployments") => Ok(Target::Deployment(name.into())),
            Some(other) => Err(format!(
                "tether doctor looks at Services and Deployments, not {other:?}: give svc/NAME or deploy/NAME"
            )),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Service(n) => write!(f, "svc/{n}"),
            Target::Deployment(n) => write!(f, "deploy/{n}"),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Passed,
    /// Passed, with something the user should know (the Service still works).
    Warned,
    Failed,
    /// Not checked, and `details` says why.
    Skipped,
}

/// One step of the walk.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Step {
    pub step: u8,
    /// What the step checks.
    pub check: String,
    pub outcome: Outcome,
    pub details: Vec<String>,
    /// What to do, when the step failed or warned.
    pub fix: Option<String>,
}

/// The walk for one Service.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServiceWalk {
    pub service: String,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Diagnosis {
    pub namespace: String,
    pub target: String,
    pub services: Vec<ServiceWalk>,
    /// No step failed.
    pub healthy: bool,
}

#[derive(Debug, Error)]
pub enum DoctorError {
    #[error("cannot read {what} in namespace {namespace}: {}", crate::cluster::client::describe(.source))]
    Read {
        what: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

const CHECKS: [&str; 8] = [
    "the Service exists",
    "its selector matches pods",
    "a matching pod is ready",
    "the EndpointSlices hold the ready pods",
    "the targetPort exists on the pods' containers",
    "each endpoint answers from inside the cluster",
    "the ClusterIP, the DNS name and the node and load-balancer addresses answer",
    "the name and address answer from this machine",
];

/// The steps of one walk so far; `push` says whether the walk goes on.
#[derive(Default)]
struct Steps(Vec<Step>);

impl Steps {
    fn push(
        &mut self,
        step: u8,
        outcome: Outcome,
        details: Vec<String>,
        fix: Option<String>,
    ) -> bool {
        self.0.push(Step {
            step,
            check: CHECKS[usize::from(step) - 1].into(),
            outcome,
            details,
            fix,
        });
        outcome != Outcome::Failed
    }
}

/// What the walk can use.
pub struct Doctor<'a> {
    pub cluster: &'a Cluster,
    pub namespace: String,
    /// The session for steps 6-7, or why there is none.
    pub inside: Result<Inside, String>,
    /// Whether step 8 can run: `Err` says why not.
    pub laptop: Result<(), String>,
}

/// A ready endpoint: its address, its pod, and the port each Service port goes to there.
struct Endpoint {
    ip: IpAddr,
    pod: Option<String>,
    ports: BTreeMap<String, u16>,
}

impl Doctor<'_> {
    fn read(&self, what: &'static str) -> impl Fn(kube::Error) -> DoctorError + '_ {
        move |source| DoctorError::Read {
            what,
            namespace: self.namespace.clone(),
            source,
        }
    }

    pub async fn diagnose(&self, target: &Target) -> Result<Diagnosis, DoctorError> {
        let client = self.cluster.client.clone();
        let ns = &self.namespace;
        let services = Api::<Service>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(self.read("Services"))?
            .items;
        let pods = Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(self.read("Pods"))?
            .items;
        let mut walks = Vec::new();
        match target {
            Target::Service(name) => {
                match services.iter().find(|s| workload::name_of(s) == *name) {
                    Some(svc) => walks.push(self.walk(svc, &pods).await?),
                    None => walks.push(ServiceWalk {
                        service: name.clone(),
                        steps: vec![self.missing_service(name, &services).await],
                    }),
                }
            }
            Target::Deployment(name) => {
                let deployments = Api::<Deployment>::namespaced(client.clone(), ns)
                    .list(&ListParams::default())
                    .await
                    .map_err(self.read("Deployments"))?
                    .items;
                let step = |details, fix| Step {
                    step: 1,
                    check: CHECKS[0].into(),
                    outcome: Outcome::Failed,
                    details,
                    fix: Some(fix),
                };
                match deployments
                    .iter()
                    .find(|d| d.metadata.name.as_deref() == Some(name))
                {
                    None => {
                        let names = deployments
                            .iter()
                            .filter_map(|d| d.metadata.name.as_deref());
                        let near = similar::near_names(name, names);
                        let mut details = vec![format!("no Deployment {name} in namespace {ns}")];
                        if !near.is_empty() {
                            details.push(format!("near names: {}", near.join(", ")));
                        }
                        walks.push(ServiceWalk {
                            service: String::new(),
                            steps: vec![step(details, "check the name and the namespace (-n); `tether list -n NAMESPACE` lists the Deployments".into())],
                        });
                    }
                    Some(d) => {
                        let selecting: Vec<&Service> = services
                            .iter()
                            .filter(|s| workload::selects(s, d))
                            .collect();
                        if selecting.is_empty() {
                            walks.push(ServiceWalk {
                                service: String::new(),
                                steps: vec![step(
                                    vec![format!("no Service in namespace {ns} selects deploy/{name}")],
                                    format!("expose it: kubectl -n {ns} expose deploy/{name} --port=PORT"),
                                )],
                            });
                        }
                        for svc in selecting {
                            walks.push(self.walk(svc, &pods).await?);
                        }
                    }
                }
            }
        }
        let healthy = walks
            .iter()
            .all(|w| w.steps.iter().all(|s| s.outcome != Outcome::Failed));
        Ok(Diagnosis {
            namespace: ns.clone(),
            target: target.to_string(),
            services: walks,
            healthy,
        })
    }

    /// Step 1 failed: the names near `name` here, and Services of that name elsewhere.
    async fn missing_service(&self, name: &str, services: &[Service]) -> Step {
        let ns = &self.namespace;
        let mut details = vec![format!("no Service {name} in namespace {ns}")];
        let here = similar::near_names(
            name,
            services.iter().filter_map(|s| s.metadata.name.as_deref()),
        );
        if !here.is_empty() {
            details.push(format!("near names in {ns}: {}", here.join(", ")));
        }
        // Listing every namespace may be forbidden to a namespace-limited user: then only
        // this namespace is searched.
        if let Ok(all) = Api::<Service>::all(self.cluster.client.clone())
            .list(&ListParams::default())
            .await
        {
            let elsewhere: BTreeSet<String> = all
                .items
                .iter()
                .filter(|s| s.metadata.namespace.as_deref() != Some(ns.as_str()))
                .filter(|s| {
                    let n = s.metadata.name.as_deref().unwrap_or_default();
                    n == name || similar::is_near(name, n)
                })
                .map(|s| {
                    format!(
                        "{} in namespace {}",
                        s.metadata.name.clone().unwrap_or_default(),
                        s.metadata.namespace.clone().unwrap_or_default()
                    )
                })
                .collect();
            if !elsewhere.is_empty() {
                details.push(format!(
                    "elsewhere: {}",
                    elsewhere.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Step {
            step: 1,
            check: CHECKS[0].into(),
            outcome: Outcome::Failed,
            details,
            fix: Some(
                "check the name and the namespace: `tether doctor svc/NAME -n NAMESPACE`".into(),
            ),
        }
    }

    async fn walk(&self, svc: &Service, pods: &[Pod]) -> Result<ServiceWalk, DoctorError> {
        let mut steps = Steps::default();
        self.walk_steps(svc, pods, &mut steps).await?;
        Ok(ServiceWalk {
            service: workload::name_of(svc),
            steps: steps.0,
        })
    }

    async fn walk_steps(
        &self,
        svc: &Service,
        pods: &[Pod],
        steps: &mut Steps,
    ) -> Result<(), DoctorError> {
        let ns = &self.namespace;
        let name = workload::name_of(svc);
        let spec = svc.spec.clone().unwrap_or_default();
        let kind = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
        let cluster_ip: Option<IpAddr> = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok());
        let ports = spec.ports.clone().unwrap_or_default();
        let port_list: Vec<String> = ports.iter().map(describe_port).collect();
        steps.push(
            1,
            Outcome::Passed,
            vec![format!(
                "{kind} Service {name}{}, ports {}",
                cluster_ip
                    .map(|ip| format!(" at {ip}"))
                    .unwrap_or_else(|| " (headless)".into()),
                if port_list.is_empty() {
                    "none".into()
                } else {
                    port_list.join(", ")
                }
            )],
            None,
        );
        if kind == "ExternalName" {
            let external = spec.external_name.clone().unwrap_or_default();
            for step in 2..=6 {
                steps.push(
                    step,
                    Outcome::Skipped,
                    vec![format!(
                        "an ExternalName Service has no pods: its name is an alias of {external}"
                    )],
                    None,
                );
            }
            return self.addresses(svc, &[], steps).await;
        }

        // 2: the selector.
        let selector = spec.selector.clone().unwrap_or_default();
        let matching: Vec<&Pod> = pods
            .iter()
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                let labels = p.metadata.labels.clone().unwrap_or_default();
                !matches!(phase, Some("Succeeded" | "Failed"))
                    && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect();
        let selector_text = selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        if selector.is_empty() {
            steps.push(
                2,
                Outcome::Skipped,
                vec![
                    "no selector: its endpoints are the EndpointSlices someone else writes".into(),
                ],
                None,
            );
            steps.push(
                3,
                Outcome::Skipped,
                vec!["no selector: no pods to look at".into()],
                None,
            );
        } else if matching.is_empty() {
            let mut details = similar::near_labels(&selector, pods);
            if details.is_empty() {
                details.push(format!(
                    "selector {selector_text} matches no pod in namespace {ns}"
                ));
            }
            steps.push(
                2,
                Outcome::Failed,
                details,
                Some(format!(
                    "make the selector match the pods' labels: kubectl -n {ns} edit svc/{name} (`kubectl -n {ns} get pods --show-labels` shows them)"
                )),
            );
            return Ok(());
        } else {
            let names: Vec<String> = matching
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            steps.push(
                2,
                Outcome::Passed,
                vec![format!(
                    "selector {selector_text} matches {} pods: {}",
                    names.len(),
                    names.join(", ")
                )],
                None,
            );
            // 3: readiness.
            let (ready, not_ready): (Vec<&Pod>, Vec<&Pod>) =
                matching.iter().partition(|p| is_ready(p));
            let mut details = vec![format!(
                "{} of {} matching pods are ready",
                ready.len(),
                matching.len()
            )];
            for p in &not_ready {
                details
                    .extend(pods::why_not_ready(self.cluster, p, self.inside.as_ref().ok()).await);
            }
            let goes_on = match (ready.is_empty(), not_ready.is_empty()) {
                (false, true) => steps.push(3, Outcome::Passed, details, None),
                (false, false) => steps.push(
                    3,
                    Outcome::Warned,
                    details,
                    Some("the Service sends nothing to the pods that are not ready; fix their readiness probe or the app, or take them out of the selector".into()),
                ),
                (true, _) => steps.push(
                    3,
                    Outcome::Failed,
                    details,
                    Some(format!(
                        "make a pod pass its readiness probe: see `kubectl -n {ns} describe pod` and `kubectl -n {ns} logs` for the pods above"
                    )),
                ),
            };
            if !goes_on {
                return Ok(());
            }
        }

        // 4: the EndpointSlices.
        let slices = Api::<EndpointSlice>::namespaced(self.cluster.client.clone(), ns)
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
            .await
            .map_err(self.read("EndpointSlices"))?
            .items;
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for slice in &slices {
            let slice_ports: BTreeMap<String, u16> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        p.name.clone().unwrap_or_default(),
                        u16::try_from(p.port?).ok()?,
                    ))
                })
                .collect();
            for e in &slice.endpoints {
                if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for address in &e.addresses {
                    if let Ok(ip) = address.parse() {
                        endpoints.push(Endpoint {
                            ip,
                            pod: e.target_ref.as_ref().and_then(|t| t.name.clone()),
                            ports: slice_ports.clone(),
                        });
                    }
                }
            }
        }
        let ready_pods: Vec<&Pod> = matching.iter().copied().filter(|p| is_ready(p)).collect();
        let missing: Vec<String> = ready_pods
            .iter()
            .filter(|p| {
                let ip = p
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_deref())
                    .and_then(|ip| ip.parse::<IpAddr>().ok());
                !endpoints
                    .iter()
                    .any(|e| Some(e.ip) == ip || e.pod == p.metadata.name)
            })
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let listed: Vec<String> = endpoints
            .iter()
            .map(|e| match &e.pod {
                Some(p) => format!("{} ({p})", e.ip),
                None => e.ip.to_string(),
            })
            .collect();
        let fix_endpoints = Some(format!(
            "the endpoints controller (in kube-controller-manager) writes them: check that it runs; `kubectl -n {ns} get endpointslices -l kubernetes.io/service-name={name}` shows them"
        ));
        if endpoints.is_empty() || !missing.is_empty() {
            let mut details = vec![format!(
                "{} EndpointSlices with ready endpoints: {}",
                slices.len(),
                if listed.is_empty() {
                    "none".into()
                } else {
                    listed.join(", ")
                }
            )];
            if !missing.is_empty() {
                details.push(format!(
                    "ready pods they do not hold: {}",
                    missing.join(", ")
                ));
            }
            steps.push(4, Outcome::Failed, details, fix_endpoints);
            return Ok(());
        }
        steps.push(
            4,
            Outcome::Passed,
            vec![format!("ready endpoints: {}", listed.join(", "))],
            None,
        );

        // 5: the target ports, on each ready pod's containers.
        if selector.is_empty() {
            steps.push(
                5,
                Outcome::Skipped,
                vec!["no selector: the EndpointSlices' ports are used as they are".into()],
                None,
            );
        } else {
            let mut problems = Vec::new();
            let mut details = Vec::new();
            for p in &ready_pods {
                let pod_name = p.metadata.name.clone().unwrap_or_default();
                let containers = p
                    .spec
                    .as_ref()
                    .map(|s| s.containers.clone())
                    .unwrap_or_default();
                let declared: Vec<String> = containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .map(|cp| match &cp.name {
                        Some(n) => format!(
                            "{n} {}/{}",
                            cp.container_port,
                            cp.protocol.clone().unwrap_or_else(|| "TCP".into())
                        ),
                        None => format!(
                            "{}/{}",
                            cp.container_port,
                            cp.protocol.clone().unwrap_or_else(|| "TCP".into())
                        ),
                    })
                    .collect();
                let declared_text = if declared.is_empty() {
                    "none".to_owned()
                } else {
                    declared.join(", ")
                };
                for sp in &ports {
                    let target = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
                    match target {
                        IntOrString::String(port_name) => {
                            match containers.iter().find_map(|c| pods::named_port(c, &port_name)) {
                                Some(n) => details.push(format!("{}: targetPort {port_name} is {n} on {pod_name}", describe_port(sp))),
                                None => problems.push(format!(
                                    "{}: targetPort {port_name:?} names no port of pod {pod_name}'s containers; they declare: {declared_text}",
                                    describe_port(sp)
                                )),
                            }
                        }
                        IntOrString::Int(n) => {
                            let is_declared = containers
                                .iter()
                                .flat_map(|c| c.ports.iter().flatten())
                                .any(|cp| cp.container_port == n);
                            if is_declared {
                                details.push(format!(
                                    "{}: targetPort {n} is declared on {pod_name}",
                                    describe_port(sp)
                                ));
                            } else if declared.is_empty() {
                                details.push(format!("{}: no container of {pod_name} declares ports; the app must listen on {n}", describe_port(sp)));
                            } else {
                                problems.push(format!(
                                    "{}: no container of pod {pod_name} declares targetPort {n}; they declare: {declared_text}",
                                    describe_port(sp)
                                ));
                            }
                        }
                    }
                }
            }
            if !problems.is_empty() {
                problems.dedup();
                steps.push(
                    5,
                    Outcome::Failed,
                    problems,
                    Some(format!(
                        "set the Service's targetPort to a port the containers declare (kubectl -n {ns} edit svc/{name}), or declare the port the app listens on in the Deployment"
                    )),
                );
                return Ok(());
            }
            details.dedup();
            steps.push(5, Outcome::Passed, details, None);
        }

        // 6: each ready endpoint, from inside the cluster.
        match &self.inside {
            Err(why) => {
                steps.push(6, Outcome::Skipped, vec![why.clone()], None);
            }
            Ok(inside) => {
                let mut ok = Vec::new();
                let mut bad = Vec::new();
                let mut warn = Vec::new();
                for e in &endpoints {
                    for sp in ports.iter().filter(|p| is_tcp(p)) {
                        let Some(port) =
                            e.ports.get(sp.name.as_deref().unwrap_or_default()).copied()
                        else {
                            continue;
                        };
                        let target = SocketAddr::new(e.ip, port);
                        let who = match &e.pod {
                            Some(p) => format!("{p} at {target}"),
                            None => target.to_string(),
                        };
                        let host = format!("{name}.{ns}");
                        let http = speaks_http(sp).then_some(Http {
                            host: &host,
                            path: "/",
                        });
                        match inside.check(target, http).await {
                            Ok(answer) => {
                                let line = format!("{who}: {}", describe_answer(&answer));
                                if matches!(answer, Answer::Http(s) if s >= 500) {
                                    warn.push(line);
                                } else {
                                    ok.push(line);
                                }
                            }
                            Err(why) => bad.push(format!("{who}: {why}")),
                        }
                    }
                }
                let goes_on = if !bad.is_empty() {
                    steps.push(
                        6,
                        Outcome::Failed,
                        bad.into_iter().chain(ok).collect(),
                        Some(format!(
                            "the app does not listen where the Service sends it: check that it listens on 0.0.0.0 (not 127.0.0.1) at that port, and `kubectl -n {ns} logs` of the pod"
                        )),
                    )
                } else if !warn.is_empty() {
                    steps.push(
                        6,
                        Outcome::Warned,
                        warn.into_iter().chain(ok).collect(),
                        Some("the app answers with a server error: see its logs".into()),
                    )
                } else {
                    steps.push(6, Outcome::Passed, ok, None)
                };
                if !goes_on {
                    return Ok(());
                }
            }
        }
        self.addresses(svc, &endpoints, steps).await
    }

    /// Steps 7 and 8: the Service's own addresses and name, from inside and from here.
    async fn addresses(
        &self,
        svc: &Service,
        endpoints: &[Endpoint],
        steps: &mut Steps,
    ) -> Result<(), DoctorError> {
        let ns = &self.namespace;
        let name = workload::name_of(svc);
        let spec = svc.spec.clone().unwrap_or_default();
        let cluster_ip: Option<IpAddr> = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok());
        let external = spec.external_name.clone();
        let tcp_ports: Vec<ServicePort> = spec
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(is_tcp)
            .collect();
        let host = format!("{name}.{ns}");
        // What the name should resolve to: the ClusterIP, else (headless) the pods.
        let expected: Vec<IpAddr> = match cluster_ip {
            Some(ip) => vec![ip],
            None => endpoints.iter().map(|e| e.ip).collect(),
        };
        match &self.inside {
            Err(why) => {
                steps.push(7, Outcome::Skipped, vec![why.clone()], None);
            }
            Ok(inside) => {
                let mut ok = Vec::new();
                let mut bad = Vec::new();
                let mut fix = None;
                if let Some(ip) = cluster_ip {
                    for sp in &tcp_ports {
                        let target = SocketAddr::new(ip, port_of(sp));
                        let http = speaks_http(sp).then_some(Http {
                            host: &host,
                            path: "/",
                        });
                        match inside.check(target, http).await {
                            Ok(a) => {
                                ok.push(format!("ClusterIP {target}: {}", describe_answer(&a)))
                            }
                            Err(why) => {
                                bad.push(format!("ClusterIP {target}: {why}"));
                                fix.get_or_insert("the endpoints answer but the ClusterIP does not: kube-proxy on the nodes does not forward it; check kube-proxy's logs".to_owned());
                            }
                        }
                    }
                }
                let fqdn = format!("{name}.{ns}.svc.{}", inside.dns_domain);
                match inside.resolve(&fqdn).await {
                    Ok(found) => match &external {
                        Some(ext)
                            if found.cname.as_deref().map(|c| c.trim_end_matches('.'))
                                == Some(ext.trim_end_matches('.')) =>
                        {
                            ok.push(format!("{fqdn} is an alias of {ext}"));
                        }
                        Some(ext) => bad.push(format!(
                            "{fqdn} is not an alias of {ext} in the cluster's DNS ({:?})",
                            found.cname
                        )),
                        None if expected.iter().any(|ip| found.addresses.contains(ip)) => {
                            ok.push(format!("{fqdn} resolves to {}", join(&found.addresses)));
                        }
                        None => {
                            bad.push(format!(
                                "{fqdn} resolves to {}, not {}",
                                if found.addresses.is_empty() {
                                    "nothing".into()
                                } else {
                                    join(&found.addresses)
                                },
                                join(&expected)
                            ));
                            fix.get_or_insert("the cluster's DNS does not know the Service: check the kube-dns (CoreDNS) pods in kube-system and their logs".to_owned());
                        }
                    },
                    Err(why) => {
                        bad.push(format!("{fqdn} does not resolve: {why}"));
                        fix.get_or_insert("the cluster's DNS does not know the Service: check the kube-dns (CoreDNS) pods in kube-system and their logs".to_owned());
                    }
                }
                let (node_ok, node_bad) =
                    self.node_and_balancer(inside, svc, &tcp_ports, &host).await;
                ok.extend(node_ok);
                if !node_bad.is_empty() {
                    fix.get_or_insert("kube-proxy does not forward the node port or the load balancer's address: check kube-proxy's logs, and the load-balancer controller for a pending address".to_owned());
                }
                bad.extend(node_bad);
                let outcome = if bad.is_empty() {
                    Outcome::Passed
                } else {
                    Outcome::Failed
                };
                if !steps.push(7, outcome, bad.into_iter().chain(ok).collect(), fix) {
                    return Ok(());
                }
            }
        }

        // 8: from this machine.
        if let Err(why) = &self.laptop {
            steps.push(8, Outcome::Skipped, vec![why.clone()], None);
            return Ok(());
        }
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        if let Some(ip) = cluster_ip {
            for sp in &tcp_ports {
                let target = SocketAddr::new(ip, port_of(sp));
                let http = speaks_http(sp).then_some(Http {
                    host: &host,
                    path: "/",
                });
                match probe::from_laptop(target, http).await {
                    Ok(a) => ok.push(format!("{target}: {}", describe_answer(&a))),
                    Err(why) => bad.push(format!("{target}: {why}")),
                }
            }
        }
        match probe::resolve_from_laptop(&host).await {
            Ok(found) if external.is_some() && !found.is_empty() => {
                ok.push(format!("{host} resolves to {}", join(&found)))
            }
            Ok(found) if expected.iter().any(|ip| found.contains(ip)) => {
                ok.push(format!("{host} resolves to {}", join(&found)))
            }
            Ok(found) => bad.push(format!(
                "{host} resolves to {} here, not {}",
                if found.is_empty() {
                    "nothing".into()
                } else {
                    join(&found)
                },
                join(&expected)
            )),
            Err(why) => bad.push(format!("{host} does not resolve here: {why}")),
        }
        let (outcome, fix) = if bad.is_empty() {
            (Outcome::Passed, None)
        } else {
            (Outcome::Failed, Some("the cluster answers but this machine does not reach it: `tether status` shows what is routed and how DNS is set up; `tether quit` then `tether connect` sets them up again".to_owned()))
        };
        steps.push(8, outcome, bad.into_iter().chain(ok).collect(), fix);
        Ok(())
    }

    /// Each NodePort on the first node's address, and each load-balancer address.
    async fn node_and_balancer(
        &self,
        inside: &Inside,
        svc: &Service,
        ports: &[ServicePort],
        host: &str,
    ) -> (Vec<String>, Vec<String>) {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        let spec = svc.spec.clone().unwrap_or_default();
        if ports.iter().any(|p| p.node_port.is_some()) {
            // Nodes are cluster-scoped: a namespace-limited user may not list them.
            match Api::<Node>::all(self.cluster.client.clone())
                .list(&ListParams::default())
                .await
            {
                Ok(nodes) => {
                    let address = nodes.items.iter().find_map(|n| {
                        n.status
                            .as_ref()?
                            .addresses
                            .as_ref()?
                            .iter()
                            .find(|a| a.type_ == "InternalIP")
                            .and_then(|a| a.address.parse::<IpAddr>().ok())
                    });
                    for sp in ports {
                        let (Some(node_port), Some(ip)) = (sp.node_port, address) else {
                            continue;
                        };
                        let Ok(node_port) = u16::try_from(node_port) else {
                            continue;
                        };
                        let target = SocketAddr::new(ip, node_port);
                        let http = speaks_http(sp).then_some(Http { host, path: "/" });
                        match inside.check(target, http).await {
                            Ok(a) => ok.push(format!("NodePort {target}: {}", describe_answer(&a))),
                            Err(why) => bad.push(format!("NodePort {target}: {why}")),
                        }
                    }
                }
                Err(e) => ok.push(format!(
                    "NodePort not checked: cannot list the nodes ({})",
                    crate::cluster::client::describe(&e)
                )),
            }
        }
        if spec.type_.as_deref() == Some("LoadBalancer") {
            let ingress = workload::load_balancer_ips(svc);
            if ingress.is_empty() {
                bad.push("LoadBalancer: no address assigned (pending): the cluster has no load-balancer controller, or its pool is exhausted".into());
            }
            for ip in ingress {
                for sp in ports {
                    let target = SocketAddr::new(ip, port_of(sp));
                    let http = speaks_http(sp).then_some(Http { host, path: "/" });
                    match inside.check(target, http).await {
                        Ok(a) => ok.push(format!("LoadBalancer {target}: {}", describe_answer(&a))),
                        Err(why) => bad.push(format!("LoadBalancer {target}: {why}")),
                    }
                }
            }
        }
        (ok, bad)
    }
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn port_of(p: &ServicePort) -> u16 {
    u16::try_from(p.port).unwrap_or_default()
}

fn is_tcp(p: &ServicePort) -> bool {
    p.protocol.as_deref().unwrap_or("TCP") == "TCP"
}

/// `http (80) -> http`.
fn describe_port(p: &ServicePort) -> String {
    let target = match &p.target_port {
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
        None => p.port.to_string(),
    };
    format!("{} -> {target}", workload::describe_port(p))
}

/// Whether a GET is worth sending: the port says it is HTTP by its appProtocol or name,
/// or is one of HTTP's usual ports.
pub fn speaks_http(p: &ServicePort) -> bool {
    let named = |s: &str| {
        s == "http" || s.starts_with("http-") || s.starts_with("http/") || s == "kubernetes.io/h2c"
    };
    p.app_protocol.as_deref().is_some_and(named)
        || p.name.as_deref().is_some_and(named)
        || (p.app_protocol.is_none() && matches!(p.port, 80 | 8080))
}

fn describe_answer(a: &Answer) -> String {
    match a {
        Answer::Connected => "accepts connections".into(),
        Answer::Http(status) => format!("GET / answers {status}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The walk docs/events.md shows.
    pub fn example() -> Diagnosis {
        Diagnosis {
            namespace: "demo".into(),
            target: "svc/web".into(),
            services: vec![ServiceWalk {
                service: "web".into(),
                steps: vec![
                    Step {
                        step: 1,
                        check: CHECKS[0].into(),
                        outcome: Outcome::Passed,
                        details: vec!["ClusterIP Service web at 10.96.0.12, ports http (80) -> http".into()],
                        fix: None,
                    },
                    Step {
                        step: 2,
                        check: CHECKS[1].into(),
                        outcome: Outcome::Failed,
                        details: vec!["selector app=wbe matches no pod; 2 pods have app=web".into()],
                        fix: Some("make the selector match the pods' labels: kubectl -n demo edit svc/web (`kubectl -n demo get pods --show-labels` shows them)".into()),
                    },
                ],
            }],
            healthy: false,
        }
    }

    #[test]
    fn targets_are_services_unless_named_deployments() {
        assert_eq!(Target::parse("web"), Ok(Target::Service("web".into())));
        assert_eq!(Target::parse("svc/web"), Ok(Target::Service("web".into())));
        assert_eq!(
            Target::parse("service/web"),
            Ok(Target::Service("web".into()))
        );
        assert_eq!(
            Target::parse("deploy/web"),
            Ok(Target::Deployment("web".into()))
        );
        assert_eq!(
            Target::parse("deployments/web").map(|t| t.to_string()),
            Ok("deploy/web".into())
        );
        let err = Target::parse("pod/web").unwrap_err();
        assert!(err.contains("svc/NAME or deploy/NAME"), "{err}");
        assert!(Target::parse("svc/Web").is_err());
        assert!(Target::parse("svc/").is_err());
    }

    fn port(value: serde_json::Value) -> ServicePort {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn http_is_asked_of_ports_that_say_so() {
        assert!(speaks_http(&port(
            serde_json::json!({"name": "http", "port": 9000})
        )));
        assert!(speaks_http(&port(serde_json::json!({"port": 80}))));
        assert!(speaks_http(&port(
            serde_json::json!({"appProtocol": "http", "port": 1234})
        )));
        assert!(!speaks_http(&port(
            serde_json::json!({"name": "postgres", "port": 5432})
        )));
        assert!(!speaks_http(&port(
            serde_json::json!({"name": "https", "port": 443})
        )));
        assert!(!speaks_http(&port(
            serde_json::json!({"appProtocol": "grpc", "port": 8080})
        )));
    }

    #[test]
    fn a_failed_step_ends_the_walk() {
        let mut steps = Steps::default();
        assert!(steps.push(1, Outcome::Passed, vec![], None));
        assert!(steps.push(2, Outcome::Warned, vec![], None));
        assert!(steps.push(3, Outcome::Skipped, vec![], None));
        assert!(!steps.push(4, Outcome::Failed, vec![], None));
        assert_eq!(steps.0[3].check, CHECKS[3]);
    }
}
