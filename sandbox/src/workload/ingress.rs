//! `ingress-nginx`: an ingress controller with a real proxy. It runs in a pod as an ordinary
//! API client (the pod's in-cluster config: service-account token, KUBERNETES_SERVICE_HOST),
//! keeps reflectors of Ingresses and Services, and on each change plans the routes of the
//! Ingresses of its class ([`plan`]), renders them as nginx configuration ([`render`]), and
//! hands that to the nginx it runs as a child ([`nginx`]), which is reloaded only with a
//! configuration `nginx -t` accepted. Each Ingress it serves gets the load-balancer address
//! of the controller's own Service in `status.loadBalancer`, through the status subresource.
//!
//! Readiness is nginx's own `/healthz` (port [`HEALTH_PORT`]), which answers only once nginx
//! runs a configuration rendered from complete lists.

pub mod nginx;
pub mod plan;
pub mod render;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::time::Instant;

use nginx::{Nginx, NginxError};
use plan::Plan;
use render::Layout;

/// The port of nginx's `/healthz`, the readiness probe's.
pub const HEALTH_PORT: u16 = 10254;
/// How long after a change more changes are waited for, so a burst makes one reload.
const SETTLE: Duration = Duration::from_millis(100);
/// How long after a failed status write the sync runs again.
const RETRY: Duration = Duration::from_secs(1);

/// What the controller serves and where nginx lives.
#[derive(Debug, Clone)]
pub struct Config {
    /// The IngressClass whose Ingresses are served (and those that name none).
    pub class: String,
    /// `namespace/name` of the controller's Service (default: `ingress-nginx-controller` in
    /// the pod's namespace), whose load-balancer address the Ingresses get.
    pub publish_service: Option<String>,
    /// The private directory of nginx's configuration, pid and temporary files.
    pub dir: PathBuf,
    /// The nginx executable.
    pub nginx: String,
    /// The port Ingress traffic arrives on.
    pub port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("cannot reach the API server with the in-cluster configuration: {0}")]
    Client(kube::Error),
    #[error(transparent)]
    Nginx(#[from] NginxError),
    #[error("nginx exited: {0}")]
    Exited(String),
    #[error("the watch of {0} ended")]
    WatchEnded(&'static str),
}

/// The pod's namespace, as the kubelet passes it (or the service account's).
fn own_namespace(client: &kube::Client) -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_string())
}

/// The controller's Service's load-balancer address, as an Ingress status entry.
fn published_address(services: &Store<Service>, publish: &(String, String)) -> Option<Value> {
    let key = reflector::ObjectRef::new(&publish.1).within(&publish.0);
    let svc = services.get(&key)?;
    let first = svc
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .clone();
    match (first.ip, first.hostname) {
        (Some(ip), _) => Some(json!({"ip": ip})),
        (None, Some(hostname)) => Some(json!({"hostname": hostname})),
        (None, None) => None,
    }
}

/// The status each Ingress should have and does not: served ones show `address`, others
/// lose it if they still show it (their class changed).
fn status_changes(
    ingresses: &[Arc<Ingress>],
    served: &[(String, String)],
    address: Option<&Value>,
) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for ing in ingresses {
        let key = (
            ing.metadata.namespace.clone().unwrap_or_default(),
            ing.metadata.name.clone().unwrap_or_default(),
        );
        let current = ing
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.clone())
            .unwrap_or_default();
        let current = serde_json::to_value(&current).unwrap_or_default();
        let ours: Value = json!(address.into_iter().collect::<Vec<_>>());
        let want = if served.contains(&key) {
            ours
        } else if address.is_some() && current == ours {
            json!([])
        } else {
            continue;
        };
        if current != want {
            out.push((key.0, key.1, want));
        }
    }
    out
}

/// Writes the status changes; whether all of them were written.
async fn write_statuses(client: &kube::Client, changes: Vec<(String, String, Value)>) -> bool {
    let mut ok = true;
    for (namespace, name, want) in changes {
        let api: Api<Ingress> = Api::namespaced(client.clone(), &namespace);
        let entries = if want.as_array().is_some_and(|a| a.is_empty()) {
            Value::Null
        } else {
            want.clone()
        };
        let patch = json!({"status": {"loadBalancer": {"ingress": entries}}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => tracing::info!("{namespace}/{name}: status.loadBalancer.ingress {want}"),
            // Deleted meanwhile: the watch says so.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                tracing::warn!("{namespace}/{name}: cannot write the status: {e}");
                ok = false;
            }
        }
    }
    ok
}

/// The proxy's side of a sync: the running configuration, and nginx once it runs.
struct Proxy {
    nginx: Nginx,
    user: Option<&'static str>,
    port: u16,
    child: Option<Child>,
    /// The configuration nginx runs, and the last one it rejected (not tested twice).
    running: Option<String>,
    rejected: Option<String>,
}

impl Proxy {
    fn render(&self, plan: &Plan) -> String {
        render::render(
            plan,
            &Layout {
                dir: &self.nginx.dir,
                listen: self.port,
                health: HEALTH_PORT,
                user: self.user,
            },
        )
    }

    /// Brings nginx to the plan's configuration, or keeps the one it runs when nginx rejects
    /// the new one. Without any running yet, a rejected plan starts nginx with no routes.
    async fn apply(&mut self, plan: &Plan) -> Result<(), IngressError> {
        let text = self.render(plan);
        if self.running.as_ref() == Some(&text) || self.rejected.as_ref() == Some(&text) {
            return Ok(());
        }
        match self.nginx.install(&text).await {
            Ok(()) => {
                self.rejected = None;
                self.run(text)?;
                tracing::info!(
                    "nginx configured: {} hosts, {} routes without a host, default backend {}",
                    plan.hosts.len(),
                    plan.any_host.len(),
                    if plan.default_backend.is_some() {
                        "set"
                    } else {
                        "none (404)"
                    }
                );
            }
            Err(NginxError::Invalid(why)) => {
                tracing::warn!(
                    "nginx rejected the new configuration, keeping the running one: {why}"
                );
                self.rejected = Some(text);
                if self.child.is_none() {
                    let empty = self.render(&Plan::default());
                    self.nginx.install(&empty).await?;
                    self.run(empty)?;
                }
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    fn run(&mut self, text: String) -> Result<(), IngressError> {
        match &self.child {
            Some(child) => nginx::reload(child)?,
            None => self.child = Some(self.nginx.start()?),
        }
        self.running = Some(text);
        Ok(())
    }
}

async fn exited(child: Option<&mut Child>) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(child) => child.wait().await,
        None => std::future::pending().await,
    }
}

async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs the controller until `stopped` completes; nginx is stopped with it.
pub async fn serve(cfg: &Config, stopped: impl Future<Output = ()>) -> Result<(), IngressError> {
    let client = kube::Client::try_default()
        .await
        .map_err(IngressError::Client)?;
    let publish = match cfg
        .publish_service
        .as_deref()
        .and_then(|p| p.split_once('/'))
    {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (
            own_namespace(&client),
            "ingress-nginx-controller".to_string(),
        ),
    };
    let nginx = Nginx {
        bin: cfg.nginx.clone(),
        dir: cfg.dir.clone(),
    };
    nginx.prepare()?;
    let user = rustix::process::geteuid()
        .is_root()
        .then_some("nobody nogroup");
    let mut proxy = Proxy {
        nginx,
        user,
        port: cfg.port,
        child: None,
        running: None,
        rejected: None,
    };
    tracing::info!(
        "ingress controller for class {:?} on port {}; addresses from service {}/{}",
        cfg.class,
        cfg.port,
        publish.0,
        publish.1
    );

    let (ingresses, ing_writer) = reflector::store::<Ingress>();
    let (services, svc_writer) = reflector::store::<Service>();
    let ing_watch = watcher(
        Api::<Ingress>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(ing_writer);
    let svc_watch = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(svc_writer);
    let mut ing_watch = std::pin::pin!(ing_watch);
    let mut svc_watch = std::pin::pin!(svc_watch);
    let mut stopped = std::pin::pin!(stopped);
    let (mut ing_synced, mut svc_synced) = (false, false);
    // When the next sync is due (a change settled, or a failed write to retry).
    let mut due: Option<Instant> = None;
    let result = loop {
        let sync_at = due.filter(|_| ing_synced && svc_synced);
        tokio::select! {
            event = ing_watch.next() => match event {
                Some(Ok(watcher::Event::InitDone)) => ing_synced = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::debug!("watch of ingresses: {e}"),
                None => break Err(IngressError::WatchEnded("ingresses")),
            },
            event = svc_watch.next() => match event {
                Some(Ok(watcher::Event::InitDone)) => svc_synced = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::debug!("watch of services: {e}"),
                None => break Err(IngressError::WatchEnded("services")),
            },
            status = exited(proxy.child.as_mut()) => {
                let why = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                break Err(IngressError::Exited(why));
            }
            () = until(sync_at) => {
                due = None;
                let ing_state = ingresses.state();
                let svc_state = services.state();
                let plan = plan::plan(
                    ing_state.iter().map(AsRef::as_ref),
                    svc_state.iter().map(AsRef::as_ref),
                    &cfg.class,
                );
                for why in &plan.skipped {
                    tracing::warn!("left out: {why}");
                }
                if let Err(e) = proxy.apply(&plan).await {
                    break Err(e);
                }
                let address = published_address(&services, &publish);
                let changes = status_changes(&ing_state, &plan.served, address.as_ref());
                if !write_statuses(&client, changes).await {
                    due = Some(Instant::now() + RETRY);
                }
                continue;
            }
            () = &mut stopped => break Ok(()),
        }
        // A change: sync once the burst it belongs to has settled.
        if due.is_none() {
            due = Some(Instant::now() + SETTLE);
        }
    };
    if let Some(child) = proxy.child.take() {
        nginx::stop(child).await;
    }
    result
}
