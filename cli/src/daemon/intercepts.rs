//! The daemon's intercepts: each one injects the sidecar if the workload has none (one
//! rollout), then holds a claim on every Ready pod of the workload through a port-forward
//! to that pod's sidecar, and carries the connections the sidecars send to the local port.
//!
//! The claims follow the pods: a pod watch adds a link for every new Ready pod with the
//! sidecar (a rollout, a `kubectl scale`) and drops the links of pods that go. A link that
//! breaks (API connection cut, pod restarted) is opened again while its pod is Ready; in the
//! meantime that pod's sidecar serves the app, because the sidecar drops a silent session's
//! claims by itself. Leaving, quitting or a crash of the daemon needs nothing in the cluster
//! to change: the links close, and the sidecars go dormant.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tether_tunnel::sidecar::{Link, LinkError};
use tether_tunnel::wire::capability::Capability;
use tether_tunnel::wire::flow::{FlowReply, FlowRequest};
use tether_tunnel::wire::frame::{MAX_FRAME, expect_frame, write_frame};
use tether_tunnel::wire::intercept::{Holder, PING_EVERY, SidecarReply, SidecarRequest};
use tether_tunnel::wire::route::Route;
use tether_tunnel::{FlowStream, Incoming};
use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::cluster::access::{self, Permission};
use crate::cluster::agent::{self, AgentError, Record, SIDECAR};
use crate::cluster::rollout::is_ready;
use crate::cluster::transport::{PodRef, forward_port};
use crate::cluster::workload::{self, Choice, TargetError};
use crate::ipc::{InterceptInfo, InterceptSpec};

/// How long an intercept waits for a claim on every Ready pod.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes per read and write of an intercepted connection (tokio's default is 8 KiB).
const COPY_BUFFER: usize = 256 * 1024;
/// Pause before a broken link to a Ready pod is opened again.
const RELINK_AFTER: Duration = Duration::from_millis(500);

#[derive(Debug, Error)]
pub enum InterceptError {
    #[error(
        "intercepts need a Kubernetes connection; this session reaches its manager directly ({0}). Connect with `tether connect --context ...` instead."
    )]
    NotKubernetes(String),
    #[error(
        "an intercept named {0} is already active; `tether leave {0}` first, or choose another --name"
    )]
    NameTaken(String),
    #[error("no intercept named {name} is active{}", active_list(.active))]
    UnknownIntercept { name: String, active: Vec<String> },
    #[error("no Deployment {workload} in namespace {namespace}{}", deployments_hint(.deployments))]
    UnknownWorkload {
        workload: String,
        namespace: String,
        deployments: Vec<String>,
    },
    #[error("cannot read {what}: {reason}")]
    Read { what: String, reason: String },
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Access(#[from] crate::cluster::access::AccessError),
    #[error(
        "the tether-agent sidecar in deploy/{workload} forwards Service {service}'s ports {ports:?}, not port {port} of Service {wanted}. Run `tether uninstall --agent {workload}` to take it out, then intercept again."
    )]
    OtherPorts {
        workload: String,
        service: String,
        ports: Vec<u16>,
        wanted: String,
        port: u16,
    },
    #[error(
        "port {port} of deploy/{workload} is already intercepted by {holder}{} (pod {pod}); {}",
        taking(.route), next_step(.route)
    )]
    Held {
        workload: String,
        port: u16,
        holder: Box<Holder>,
        route: Option<Box<Route>>,
        pod: String,
    },
    #[error(
        "HTTP filters need the port to speak HTTP, but port {port} of Service {service} declares appProtocol {protocol:?}; intercept it without --http-* flags (or with --mirror alone)"
    )]
    NotHttp {
        service: String,
        port: String,
        protocol: String,
    },
    #[error("the sidecar in pod {pod} cannot take this intercept: {reason}")]
    Refused { pod: String, reason: String },
    #[error(
        "deploy/{workload} has the tether-agent sidecar of ordinary intercepts; --replace needs it out first: when nobody intercepts it any more, `tether uninstall --agent {workload}`, then intercept again"
    )]
    ReplaceOverSidecar { workload: String },
    #[error(
        "deploy/{workload}'s container {container} is stopped by a --replace intercept; `tether list` shows who holds it. When it is left (or after `tether uninstall --agent {workload}`), intercept again"
    )]
    Replaced { workload: String, container: String },
    #[error("no claim on every Ready pod of deploy/{workload} within {} s: {status}", .waited.as_secs())]
    ClaimTimeout {
        workload: String,
        waited: Duration,
        status: String,
    },
    #[error("the intercept was cancelled; deploy/{workload} is as it was")]
    Cancelled { workload: String },
}

fn taking(route: &Option<Box<Route>>) -> String {
    route
        .as_ref()
        .map(|r| format!(", taking {r}"))
        .unwrap_or_default()
}

fn next_step(route: &Option<Box<Route>>) -> &'static str {
    match route {
        Some(r) if !r.is_global() => {
            "choose filters that cannot match the same requests (e.g. another --http-header value), or ask them to `tether leave`"
        }
        _ => "ask them to `tether leave`, or wait until they quit",
    }
}

fn active_list(active: &[String]) -> String {
    if active.is_empty() {
        " (there are none)".into()
    } else {
        format!("; active: {}", active.join(", "))
    }
}

fn deployments_hint(deployments: &[String]) -> String {
    if deployments.is_empty() {
        "; that namespace has no Deployments".into()
    } else {
        format!(
            "; Deployments there: {}. `tether list -n NAMESPACE` shows what can be intercepted.",
            deployments.join(", ")
        )
    }
}

/// What a started intercept reports to the command.
pub struct Started {
    pub info: InterceptInfo,
    pub env: BTreeMap<String, String>,
    pub warnings: Vec<String>,
}

/// How each pod's link stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LinkState {
    Connecting,
    Claimed,
    /// Another claim holds what this one would take (its route, if the sidecar said).
    Held(Holder, Option<Route>),
    /// The sidecar will never take this claim, e.g. it predates filters.
    Refused(String),
    Failed(String),
}

struct Active {
    info: Arc<Mutex<InterceptInfo>>,
    stop: CancellationToken,
}

/// The daemon's intercepts; shared by the socket handlers.
#[derive(Default)]
pub struct Intercepts {
    cluster: Mutex<Option<Cluster>>,
    active: Mutex<BTreeMap<String, Active>>,
    /// Ended by quit: every intercept's links close with it.
    stop: CancellationToken,
}

impl Intercepts {
    pub fn set_cluster(&self, cluster: Cluster) {
        if let Ok(mut c) = self.cluster.lock() {
            *c = Some(cluster.clone());
        }
        tokio::spawn(recover_replaced(cluster));
    }

    fn cluster(&self) -> Option<Cluster> {
        self.cluster.lock().ok()?.clone()
    }

    pub fn list(&self) -> Vec<InterceptInfo> {
        let Ok(active) = self.active.lock() else {
            return Vec::new();
        };
        active
            .values()
            .filter_map(|a| a.info.lock().ok().map(|i| i.clone()))
            .collect()
    }

    /// Ends every intercept (quit); replaced containers are put back (without waiting for
    /// their rollouts).
    pub async fn stop_all(&self) {
        self.stop.cancel();
        let ended: Vec<Active> = match self.active.lock() {
            Ok(mut active) => std::mem::take(&mut *active).into_values().collect(),
            Err(_) => Vec::new(),
        };
        for a in ended {
            a.stop.cancel();
            // put_back logs what it could not restore; quit goes on with the others.
            let _ = self.put_back(&snapshot(&a.info), false).await;
        }
    }

    /// Ends an intercept; a `--replace` one gets its container back, and this waits for
    /// that rollout.
    pub async fn leave(&self, name: &str) -> Result<InterceptInfo, InterceptError> {
        let removed = {
            let mut active = self
                .active
                .lock()
                .map_err(|_| InterceptError::UnknownIntercept {
                    name: name.into(),
                    active: Vec::new(),
                })?;
            match active.remove(name) {
                Some(a) => a,
                None => {
                    return Err(InterceptError::UnknownIntercept {
                        name: name.into(),
                        active: active.keys().cloned().collect(),
                    });
                }
            }
        };
        removed.stop.cancel();
        let info = snapshot(&removed.info);
        self.put_back(&info, true).await?;
        Ok(info)
    }

    /// Restores a replaced workload; nothing for an ordinary intercept, whose sidecar stays.
    async fn put_back(&self, info: &InterceptInfo, wait: bool) -> Result<(), InterceptError> {
        let Some(cluster) = self.cluster().filter(|_| info.replace) else {
            return Ok(());
        };
        let restored = async {
            agent::remove(&cluster, &info.namespace, &info.workload).await?;
            if wait {
                agent::wait_rolled_out(&cluster, &info.namespace, &info.workload, &|_| {}).await?;
                agent::wait_endpoints(&cluster, &info.namespace, &info.service, false, None).await;
            }
            Ok::<(), AgentError>(())
        };
        restored.await.map_err(|e| {
            tracing::error!("cannot put deploy/{} back: {e}", info.workload);
            InterceptError::Agent(e)
        })
    }

    /// Starts an intercept; `progress` hears each step. Cancelling `cancel` (the client went
    /// away) before it is active undoes whatever it changed.
    pub async fn start(
        &self,
        spec: InterceptSpec,
        mode: &str,
        progress: &(dyn Fn(String) + Sync),
        cancel: CancellationToken,
    ) -> Result<Started, InterceptError> {
        let Some(cluster) = self.cluster() else {
            return Err(InterceptError::NotKubernetes(mode.into()));
        };
        let name = spec.name.clone().unwrap_or_else(|| spec.workload.clone());
        if self.active.lock().is_ok_and(|a| a.contains_key(&name)) {
            return Err(InterceptError::NameTaken(name));
        }
        let ns = spec.namespace.clone();
        // What every intercept needs, asked before the first read: in a namespace the user
        // has no rights in, one refusal names all of it (not a 403 on the first read).
        let always = [
            Permission::new("get", "apps", "deployments").named(&spec.workload),
            Permission::new("list", "", "services"),
            Permission::new("watch", "", "pods"),
            Permission::new("create", "", "pods").sub("portforward"),
        ];
        access::check(&cluster, &ns, &always).await?;
        let deploy = read_deployment(&cluster, &ns, &spec.workload).await?;
        let services = read_services(&cluster, &ns).await?;
        let choice = Choice {
            service: spec.service.clone(),
            port: spec.port.clone(),
            container: spec.container.clone(),
        };
        // Targets are chosen on the objects as the user made them, sidecar or not.
        let existing = agent::record_of(&deploy)?;
        let view = match &existing {
            Some(record) => agent::original_view(&deploy, record),
            None => deploy.clone(),
        };
        let services: Vec<Service> = services.iter().map(agent::original_service_view).collect();
        let target = workload::resolve(&view, &services, &choice)?;
        if !spec.route.filter.is_empty() {
            check_speaks_http(&target)?;
        }
        // The changes this intercept will make, asked before anything is done.
        let mut wanted = Vec::new();
        if existing.is_none() {
            wanted.push(Permission::new("patch", "apps", "deployments").named(&spec.workload));
            if !spec.replace && target.all.iter().any(|m| m.named.is_none()) {
                wanted.push(Permission::new("patch", "", "services").named(target.service_name()));
            }
        }
        access::check(&cluster, &ns, &wanted).await?;
        let mut injected = false;
        let me = format!("{}@{}", invoking_user(), host_name());
        let planner = |d: &Deployment, target: &workload::Target, image: &str| {
            if spec.replace {
                agent::plan_replace(d, target, image, &me)
            } else {
                agent::plan(d, target, image)
            }
        };
        let record = match existing {
            Some(record) if record.replace != spec.replace => {
                return Err(if spec.replace {
                    InterceptError::ReplaceOverSidecar {
                        workload: spec.workload.clone(),
                    }
                } else {
                    InterceptError::Replaced {
                        workload: spec.workload.clone(),
                        container: record.container.clone(),
                    }
                });
            }
            Some(record) => {
                check_covers(&record, &target)?;
                record
            }
            None => {
                progress(format!(
                    "Adding the tether-agent sidecar to deploy/{} (one rolling update)",
                    spec.workload
                ));
                let image = agent_image(&cluster).await;
                let plan = planner(&deploy, &target, &image);
                let record = plan.record.clone();
                let applied = agent::patch_deployment(&cluster, &ns, &spec.workload, |d| {
                    match agent::record_of(d)? {
                        // Someone else injected meanwhile; theirs stands.
                        Some(_) => Ok(None),
                        None => Ok(Some(planner(d, &target, &image).deployment)),
                    }
                })
                .await?;
                injected = applied.is_some();
                let rolled = tokio::select! {
                    r = agent::wait_rolled_out(&cluster, &ns, &spec.workload, progress) => r.map_err(InterceptError::from),
                    () = cancel.cancelled() => Err(InterceptError::Cancelled { workload: spec.workload.clone() }),
                };
                let serviced = match (&rolled, &plan.service) {
                    (Ok(()), Some(_)) => {
                        let target = target.clone();
                        let image = image.clone();
                        agent::patch_service(&cluster, &ns, target.service_name(), |s| {
                            let fresh = workload::Target {
                                service: s.clone(),
                                ..target.clone()
                            };
                            let has = s
                                .metadata
                                .annotations
                                .as_ref()
                                .is_some_and(|a| a.contains_key(agent::SERVICE_ANNOTATION));
                            (!has)
                                .then(|| agent::plan(&deploy, &fresh, &image).service)
                                .flatten()
                        })
                        .await
                        .map_err(InterceptError::from)
                    }
                    _ => Ok(()),
                };
                if let Err(e) = rolled.and(serviced) {
                    if injected {
                        progress(format!("Restoring deploy/{}", spec.workload));
                        if let Err(undo) = agent::remove(&cluster, &ns, &spec.workload).await {
                            tracing::error!("cannot restore deploy/{}: {undo}", spec.workload);
                        }
                    }
                    return Err(e);
                }
                // The sidecar's port, except for --replace, which keeps the app's numbers.
                let port = record
                    .forwards
                    .iter()
                    .find(|f| f.app == target.port.app_port)
                    .map(|f| f.listen);
                tokio::select! {
                    () = agent::wait_endpoints(&cluster, &ns, target.service_name(), true, port) => {}
                    () = cancel.cancelled() => {}
                }
                record
            }
        };
        let port = target.port.app_port;
        let forward = record.forwards.iter().find(|f| f.app == port);
        // A replaced container's ports all come here: the asked one to the local port, the
        // others to the same numbers on the local address.
        let ports: Vec<u16> = if record.replace {
            record.forwards.iter().map(|f| f.app).collect()
        } else {
            vec![port]
        };
        let local = SocketAddr::new(spec.address, spec.local_port);
        let info = InterceptInfo {
            name: name.clone(),
            namespace: ns.clone(),
            workload: spec.workload.clone(),
            service: target.service_name().to_owned(),
            service_port: target.port.service_port,
            service_port_name: target.port.service_port_name.clone(),
            container: target.container.clone(),
            app_port: port,
            sidecar_port: forward.map_or(0, |f| f.listen),
            local: local.to_string(),
            pods: Vec::new(),
            route: spec.route.clone(),
            replace: spec.replace,
            header: None,
        };
        let holder = Holder {
            intercept: name.clone(),
            user: invoking_user(),
            host: host_name(),
            local: local.to_string(),
        };
        progress(format!(
            "Claiming port {port} on the Ready pods of deploy/{}",
            spec.workload
        ));
        let info = Arc::new(Mutex::new(info));
        let stop = self.stop.child_token();
        let (states_tx, mut states_rx) = watch::channel(BTreeMap::<String, LinkState>::new());
        let follow = Follow {
            cluster: cluster.clone(),
            deploy: deploy.clone(),
            control: record.control,
            port,
            ports,
            holder,
            route: spec.route.clone(),
            local,
            info: info.clone(),
            states: Arc::new(states_tx),
        };
        tokio::spawn(follow.run(stop.clone()));
        let claimed = tokio::time::timeout(CLAIM_TIMEOUT, async {
            loop {
                let verdict = {
                    let states = states_rx.borrow_and_update();
                    judge(&states)
                };
                match verdict {
                    Some(result) => return result,
                    None => {
                        tokio::select! {
                            changed = states_rx.changed() => if changed.is_err() {
                                return Err("the pod watch ended".to_owned());
                            },
                            () = cancel.cancelled() => return Err("cancelled".to_owned()),
                        }
                    }
                }
            }
        })
        .await;
        let failure = match claimed {
            Ok(Ok(())) => None,
            Ok(Err(e)) if e == "cancelled" => Some(InterceptError::Cancelled {
                workload: spec.workload.clone(),
            }),
            Ok(Err(e)) => Some(held_or(e, &spec.workload, port, &states_rx.borrow())),
            Err(_) => Some(InterceptError::ClaimTimeout {
                workload: spec.workload.clone(),
                waited: CLAIM_TIMEOUT,
                status: describe_states(&states_rx.borrow()),
            }),
        };
        if let Some(e) = failure {
            stop.cancel();
            if injected && let Err(undo) = agent::remove(&cluster, &ns, &spec.workload).await {
                tracing::error!("cannot restore deploy/{}: {undo}", spec.workload);
            }
            return Err(e);
        }
        let mut warnings = Vec::new();
        if crate::namespace::dialer::connect(local).await.is_err() {
            warnings.push(format!(
                "nothing listens on {local} yet: intercepted connections are reset until something does"
            ));
        }
        let env = match first_pod(&cluster, &ns, &info).await {
            Some(mut pod) => {
                if let (Some(app), Some(spec)) =
                    (agent::replaced_container(&record), pod.spec.as_mut())
                {
                    spec.containers.push(app);
                }
                match crate::cluster::env::container_env(&cluster.client, &pod, &target.container)
                    .await
                {
                    Ok(env) => env
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                    Err(e) => {
                        warnings.push(format!(
                            "the environment of {} is not available: {e}",
                            target.container
                        ));
                        BTreeMap::new()
                    }
                }
            }
            None => BTreeMap::new(),
        };
        if cancel.is_cancelled() {
            stop.cancel();
            // Cancelled after the claims: what this request injected goes too.
            // (A replaced container comes back with it.)
            if injected && let Err(undo) = agent::remove(&cluster, &ns, &spec.workload).await {
                tracing::error!("cannot restore deploy/{}: {undo}", spec.workload);
            }
            return Err(InterceptError::Cancelled {
                workload: spec.workload,
            });
        }
        let started = snapshot(&info);
        if let Ok(mut active) = self.active.lock() {
            active.insert(name, Active { info, stop });
        }
        Ok(Started {
            info: started,
            env,
            warnings,
        })
    }
}

/// Puts back the workloads that a `--replace` intercept of this user on this machine left
/// without their container when its daemon died (SIGKILL, a crash, a reboot): their
/// sidecars hold no claim any more. Someone else's, or one still held, is left alone.
async fn recover_replaced(cluster: Cluster) {
    let me = format!("{}@{}", invoking_user(), host_name());
    // Listing every namespace may be forbidden; the connection's namespace is then the one
    // a developer most likely replaced something in.
    let found = match agent::injected(&cluster, None).await {
        Ok(found) => found,
        Err(_) => agent::injected(&cluster, Some(&cluster.namespace))
            .await
            .unwrap_or_default(),
    };
    let mut candidates = found;
    // A daemon killed moments ago may still hold claims until the sidecar notices the
    // silence, so those are looked at once more after that.
    for pass in 0..2 {
        if pass == 1 {
            if candidates.is_empty() {
                return;
            }
            tokio::time::sleep(2 * tether_tunnel::wire::intercept::LIVENESS).await;
        }
        let mut held = Vec::new();
        for (ns, name) in candidates {
            let Ok(deploy) = Api::<Deployment>::namespaced(cluster.client.clone(), &ns)
                .get(&name)
                .await
            else {
                continue;
            };
            let Ok(Some(record)) = agent::record_of(&deploy) else {
                continue;
            };
            if !record.replace || record.holder.as_deref() != Some(me.as_str()) {
                continue;
            }
            match crate::cluster::sidecars::any_claims(&cluster, &deploy, record.control).await {
                Some(false) => {}
                _ => {
                    held.push((ns, name));
                    continue;
                }
            }
            tracing::warn!(
                "deploy/{name} in {ns} was left replaced by an earlier session of this machine; putting its container back"
            );
            if let Err(e) = agent::remove(&cluster, &ns, &name).await {
                tracing::error!("cannot put deploy/{name} back: {e}");
            }
        }
        candidates = held;
    }
}

fn snapshot(info: &Arc<Mutex<InterceptInfo>>) -> InterceptInfo {
    info.lock()
        .map(|i| i.clone())
        .unwrap_or_else(|e| e.into_inner().clone())
}

/// `Some(Ok)` once every Ready sidecar pod is claimed (and there is one), `Some(Err)` when a
/// pod is held by someone else.
fn judge(states: &BTreeMap<String, LinkState>) -> Option<Result<(), String>> {
    if states
        .values()
        .any(|s| matches!(s, LinkState::Held(..) | LinkState::Refused(_)))
    {
        return Some(Err("held".into()));
    }
    (!states.is_empty() && states.values().all(|s| *s == LinkState::Claimed)).then_some(Ok(()))
}

fn held_or(
    reason: String,
    workload: &str,
    port: u16,
    states: &BTreeMap<String, LinkState>,
) -> InterceptError {
    for (pod, s) in states {
        match s {
            LinkState::Held(holder, route) => {
                return InterceptError::Held {
                    workload: workload.into(),
                    port,
                    holder: Box::new(holder.clone()),
                    route: route.clone().map(Box::new),
                    pod: pod.clone(),
                };
            }
            LinkState::Refused(reason) => {
                return InterceptError::Refused {
                    pod: pod.clone(),
                    reason: reason.clone(),
                };
            }
            _ => {}
        }
    }
    {
        InterceptError::ClaimTimeout {
            workload: workload.into(),
            waited: Duration::ZERO,
            status: reason,
        }
    }
}

fn describe_states(states: &BTreeMap<String, LinkState>) -> String {
    if states.is_empty() {
        return "no Ready pod with the sidecar".into();
    }
    states
        .iter()
        .map(|(pod, s)| match s {
            LinkState::Connecting => format!("{pod}: connecting"),
            LinkState::Claimed => format!("{pod}: claimed"),
            LinkState::Held(h, _) => format!("{pod}: held by {h}"),
            LinkState::Refused(e) => format!("{pod}: refused: {e}"),
            LinkState::Failed(e) => format!("{pod}: {e}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Filters read HTTP; a port that declares another protocol would never match them.
fn check_speaks_http(target: &workload::Target) -> Result<(), InterceptError> {
    let port = target
        .service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.get(target.port.index));
    let Some(protocol) = port.and_then(|p| p.app_protocol.as_deref()) else {
        return Ok(());
    };
    const HTTP: [&str; 6] = [
        "http",
        "h2c",
        "grpc",
        "kubernetes.io/h2c",
        "kubernetes.io/ws",
        "http2",
    ];
    if HTTP.iter().any(|h| h.eq_ignore_ascii_case(protocol)) {
        return Ok(());
    }
    Err(InterceptError::NotHttp {
        service: target.service_name().to_owned(),
        port: target
            .port
            .service_port_name
            .clone()
            .unwrap_or_else(|| target.port.service_port.to_string()),
        protocol: protocol.to_owned(),
    })
}

fn check_covers(record: &Record, target: &workload::Target) -> Result<(), InterceptError> {
    let covered = record.service == target.service_name()
        || record
            .forwards
            .iter()
            .any(|f| f.app == target.port.app_port);
    if covered
        && record
            .forwards
            .iter()
            .any(|f| f.app == target.port.app_port)
    {
        return Ok(());
    }
    Err(InterceptError::OtherPorts {
        workload: target.workload.clone(),
        service: record.service.clone(),
        ports: record.forwards.iter().map(|f| f.app).collect(),
        wanted: target.service_name().to_owned(),
        port: target.port.service_port,
    })
}

fn read_error(what: String) -> impl FnOnce(kube::Error) -> InterceptError {
    move |e| InterceptError::Read {
        what,
        reason: crate::cluster::client::describe(&e),
    }
}

async fn read_deployment(
    cluster: &Cluster,
    ns: &str,
    name: &str,
) -> Result<Deployment, InterceptError> {
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    match api.get(name).await {
        Ok(d) => Ok(d),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let deployments = api
                .list(&Default::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter_map(|d| d.metadata.name.clone())
                        .collect()
                })
                .unwrap_or_default();
            Err(InterceptError::UnknownWorkload {
                workload: name.into(),
                namespace: ns.into(),
                deployments,
            })
        }
        Err(e) => Err(read_error(format!("deploy/{name} in namespace {ns}"))(e)),
    }
}

async fn read_services(cluster: &Cluster, ns: &str) -> Result<Vec<Service>, InterceptError> {
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), ns);
    api.list(&Default::default())
        .await
        .map(|l| l.items)
        .map_err(read_error(format!("the Services in namespace {ns}")))
}

/// The image of the installed manager, so the sidecar runs the same build; else this
/// build's default.
async fn agent_image(cluster: &Cluster) -> String {
    let ns = crate::cluster::manifests::DEFAULT_NAMESPACE;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    api.get(crate::cluster::manifests::NAME)
        .await
        .ok()
        .and_then(|d| d.spec?.template.spec?.containers.into_iter().next()?.image)
        .unwrap_or_else(crate::cluster::manifests::default_image)
}

async fn first_pod(cluster: &Cluster, ns: &str, info: &Arc<Mutex<InterceptInfo>>) -> Option<Pod> {
    let pod = info.lock().ok()?.pods.first()?.clone();
    Api::<Pod>::namespaced(cluster.client.clone(), ns)
        .get(&pod)
        .await
        .ok()
}

/// The user who asked for the intercept (not root, when the daemon runs under sudo).
fn invoking_user() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw()))
}

fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Holds the claims of one intercept while its pods come and go.
struct Follow {
    cluster: Cluster,
    deploy: Deployment,
    control: u16,
    /// The port asked for, which goes to `local`.
    port: u16,
    /// Every port to claim.
    ports: Vec<u16>,
    holder: Holder,
    route: Route,
    local: SocketAddr,
    info: Arc<Mutex<InterceptInfo>>,
    states: Arc<watch::Sender<BTreeMap<String, LinkState>>>,
}

impl Follow {
    async fn run(self, stop: CancellationToken) {
        let ns = self.deploy.metadata.namespace.clone().unwrap_or_default();
        let selector = selector_of(&self.deploy);
        let pods: Api<Pod> = Api::namespaced(self.cluster.client.clone(), &ns);
        let (store, writer) = reflector::store();
        let mut events = reflector::reflector(
            writer,
            watcher(pods, watcher::Config::default().labels(&selector)),
        )
        .default_backoff()
        .boxed();
        let this = Arc::new(self);
        let mut links: BTreeMap<String, (String, CancellationToken)> = BTreeMap::new();
        loop {
            tokio::select! {
                event = events.next() => match event {
                    None => break,
                    Some(Err(e)) => tracing::debug!("pod watch error: {e}"),
                    Some(Ok(_)) => {
                        if crate::cluster::rollout::listed(&store) {
                            this.reconcile(&store, &mut links, &stop);
                        }
                    }
                },
                () = stop.cancelled() => break,
            }
        }
        for (_, (_, token)) in links {
            token.cancel();
        }
    }

    /// One link per Ready pod that has the sidecar; none for the others.
    fn reconcile(
        self: &Arc<Self>,
        store: &Store<Pod>,
        links: &mut BTreeMap<String, (String, CancellationToken)>,
        stop: &CancellationToken,
    ) {
        let wanted: BTreeMap<String, PodRef> = store
            .state()
            .iter()
            .filter(|p| is_ready(p) && has_sidecar(p))
            .filter_map(|p| {
                Some((
                    p.metadata.name.clone()?,
                    PodRef {
                        namespace: p.metadata.namespace.clone()?,
                        name: p.metadata.name.clone()?,
                        uid: p.metadata.uid.clone()?,
                    },
                ))
            })
            .collect();
        links.retain(|name, (uid, token)| {
            let keep = wanted.get(name).is_some_and(|p| &p.uid == uid);
            if !keep {
                token.cancel();
                self.states.send_modify(|s| {
                    s.remove(name);
                });
            }
            keep
        });
        for (name, pod) in wanted {
            if links.contains_key(&name) {
                continue;
            }
            let token = stop.child_token();
            links.insert(name.clone(), (pod.uid.clone(), token.clone()));
            self.states.send_modify(|s| {
                s.insert(name.clone(), LinkState::Connecting);
            });
            tokio::spawn(self.clone().hold(pod, token));
        }
        self.publish_claimed();
    }

    /// The intercept's `pods` are the claimed ones of the link states.
    fn publish_claimed(&self) {
        let claimed: Vec<String> = self
            .states
            .borrow()
            .iter()
            .filter(|(_, s)| **s == LinkState::Claimed)
            .map(|(p, _)| p.clone())
            .collect();
        if let Ok(mut info) = self.info.lock() {
            info.pods = claimed;
        }
    }

    fn set(&self, pod: &str, state: LinkState) {
        self.states.send_modify(|s| {
            if let Some(slot) = s.get_mut(pod) {
                *slot = state;
            }
        });
        self.publish_claimed();
    }

    /// Holds the claim on one pod until `stop`, opening the link again when it breaks.
    async fn hold(self: Arc<Self>, pod: PodRef, stop: CancellationToken) {
        loop {
            let result = tokio::select! {
                r = self.claim_once(&pod, &stop) => r,
                () = stop.cancelled() => return,
            };
            match result {
                Ok(()) => return,
                Err(Broken::Held(holder, route)) => {
                    self.set(&pod.name, LinkState::Held(holder, route));
                    return;
                }
                Err(Broken::Refused(reason)) => {
                    self.set(&pod.name, LinkState::Refused(reason));
                    return;
                }
                Err(Broken::Other(reason)) => {
                    tracing::info!(%pod, "link to the sidecar broken: {reason}");
                    self.set(&pod.name, LinkState::Failed(reason));
                }
            }
            tokio::select! {
                () = tokio::time::sleep(RELINK_AFTER) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// One link: claim, serve, ping; `Ok` when stopped (after releasing the claim).
    async fn claim_once(&self, pod: &PodRef, stop: &CancellationToken) -> Result<(), Broken> {
        let stream = forward_port(&self.cluster, pod, self.control)
            .await
            .map_err(|e| Broken::Other(e.to_string()))?;
        let mut link = Link::open(stream).await.map_err(Broken::link)?;
        if !self.route.is_global() && !link.accepted.capabilities.contains(Capability::HttpRoutes) {
            let workload = self.deploy.metadata.name.as_deref().unwrap_or_default();
            return Err(Broken::Refused(format!(
                "it was injected by a tether older than HTTP filters and mirrors (version {}); run `tether uninstall --agent {workload}`, then intercept again",
                link.accepted.peer.software
            )));
        }
        for &port in &self.ports {
            // A global claim is the one older sidecars know too.
            let claim = if self.route.is_global() {
                SidecarRequest::Claim {
                    port,
                    holder: self.holder.clone(),
                }
            } else {
                SidecarRequest::ClaimRoute {
                    port,
                    holder: self.holder.clone(),
                    route: self.route.clone(),
                }
            };
            match link.request(&claim).await.map_err(Broken::link)? {
                SidecarReply::Claimed { .. } => {}
                SidecarReply::Held { by, .. } => return Err(Broken::Held(by, None)),
                SidecarReply::Overlaps { by, route, .. } => {
                    return Err(Broken::Held(by, Some(route)));
                }
                SidecarReply::Refused { reason, .. } => return Err(Broken::Refused(reason)),
                other => {
                    return Err(Broken::Other(format!(
                        "the sidecar refused the claim: {other:?}"
                    )));
                }
            }
        }
        tracing::info!(%pod, port = self.port, "claimed");
        self.set(&pod.name, LinkState::Claimed);
        let incoming = link
            .take_incoming()
            .ok_or_else(|| Broken::Other("no incoming streams".into()))?;
        let serve = serve_incoming(incoming, self.local, self.port);
        tokio::pin!(serve);
        let mut tick = tokio::time::interval(PING_EVERY);
        let mut nonce = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    nonce += 1;
                    match link.request(&SidecarRequest::Ping { nonce }).await.map_err(Broken::link)? {
                        SidecarReply::Pong { .. } => {}
                        other => return Err(Broken::Other(format!("unexpected reply {other:?}"))),
                    }
                }
                () = &mut serve => return Err(Broken::Other("the sidecar closed the session".into())),
                () = stop.cancelled() => {
                    let release = async {
                        for &port in &self.ports {
                            link.request(&SidecarRequest::Release { port }).await?;
                        }
                        Ok::<(), LinkError>(())
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(2), release).await;
                    return Ok(());
                }
            }
        }
    }
}

enum Broken {
    Held(Holder, Option<Route>),
    Refused(String),
    Other(String),
}

impl Broken {
    fn link(e: LinkError) -> Broken {
        Broken::Other(e.to_string())
    }
}

/// The label selector of the Deployment's pods, as a query string.
fn selector_of(deploy: &Deployment) -> String {
    let Some(selector) = deploy.spec.as_ref().map(|s| &s.selector) else {
        return String::new();
    };
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

fn has_sidecar(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .is_some_and(|s| s.containers.iter().any(|c| c.name == SIDECAR))
}

/// Dials the local port for every connection a sidecar sends: `local` for the app port
/// asked for (`port`), the same number on `local`'s address for a replaced container's
/// other ports.
async fn serve_incoming(mut incoming: Incoming, local: SocketAddr, port: u16) {
    while let Some(stream) = incoming.next().await {
        tokio::spawn(serve_one(stream, local, port));
    }
}

async fn serve_one(mut stream: FlowStream, local: SocketAddr, port: u16) {
    let Ok(frame) = expect_frame(&mut stream, MAX_FRAME, "flow request").await else {
        return;
    };
    let Ok(FlowRequest::Tcp { target }) = FlowRequest::decode(&frame) else {
        return;
    };
    let local = if target.port() == port {
        local
    } else {
        SocketAddr::new(local.ip(), target.port())
    };
    match crate::namespace::dialer::connect(local).await {
        Ok(mut conn) => {
            let _ = conn.set_nodelay(true);
            if write_frame(&mut stream, &FlowReply::Ready.encode())
                .await
                .is_ok()
            {
                let _ = tokio::io::copy_bidirectional_with_sizes(
                    &mut stream,
                    &mut conn,
                    COPY_BUFFER,
                    COPY_BUFFER,
                )
                .await;
            }
        }
        Err(e) => {
            tracing::debug!(%local, "intercepted connection refused locally: {e}");
            let _ = write_frame(&mut stream, &FlowReply::from_io_error(&e).encode()).await;
        }
    }
}
