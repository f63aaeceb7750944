//! One pod's worker: a task that owns the pod from binding to removal. It sets up the pod's
//! network and files, starts each container (after resolving its image and environment),
//! restarts exited ones per `restartPolicy` with back-off, follows probe results, writes the
//! status when it changes, and on deletion stops the containers (SIGTERM, the grace period,
//! SIGKILL), tears the pod down and removes the object. Starting things is in [`start`].

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustix::process::Signal;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

mod start;

use super::status::{self, ContainerStatus, PodView, State, Terminated};
use super::{Shared, files, process};
use crate::admission;
use crate::lifecycle::finalizers;
use crate::node::netns::Netns;
use crate::resources::{self, Shape};
use crate::store::Stored;

/// First restart back-off; it doubles up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A run this long resets the back-off.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How soon a container whose configuration is missing (ConfigMap, Secret) is tried again.
const CONFIG_RETRY: Duration = Duration::from_secs(2);
/// How long to wait for processes to be reaped after SIGKILL before tearing down anyway.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);

/// From waiting threads and probe tasks to the worker; `run` tells which container run a
/// message is about, so late news from an earlier run is ignored.
enum Msg {
    Exited {
        idx: usize,
        run: u64,
        status: std::io::Result<std::process::ExitStatus>,
    },
    Ready {
        idx: usize,
        run: u64,
        ready: bool,
    },
    Unhealthy {
        idx: usize,
        run: u64,
    },
}

struct Container {
    spec: Value,
    name: String,
    image: String,
    image_id: String,
    restart_count: u32,
    run: u64,
    state: State,
    last: Option<Terminated>,
    ready: bool,
    pid: Option<i32>,
    started: Option<Instant>,
    /// When to (re)try starting; None when nothing is due.
    next_start: Option<Instant>,
    backoff: Option<Duration>,
    pull_backoff: Duration,
    /// Will not run again.
    done: bool,
    ever_ran: bool,
    probes: Vec<JoinHandle<()>>,
    /// When SIGKILL follows the SIGTERM already sent.
    kill_at: Option<Instant>,
    /// SIGKILL was sent; past `kill_at` again, the process is given up on.
    killed: bool,
    env: Vec<(String, String)>,
}

impl Container {
    fn container_id(&self, uid: &str) -> String {
        format!("sandbox://{uid}/{}/{}", self.name, self.run)
    }

    fn stop_probes(&mut self) {
        for p in self.probes.drain(..) {
            p.abort();
        }
    }
}

struct Worker {
    shared: Arc<Shared>,
    pod: Arc<Stored>,
    uid: String,
    ns: String,
    name: String,
    pod_dir: PathBuf,
    net: Option<(Netns, Ipv4Addr)>,
    net_retry: Option<Instant>,
    /// When the service-account token is renewed (None: the pod has none).
    token_refresh: Option<Instant>,
    mounts: files::MountPlan,
    start_time: String,
    containers: Vec<Container>,
    msgs_tx: mpsc::UnboundedSender<Msg>,
    terminating: bool,
    /// A terminal pod found at start: nothing runs again, nothing is written.
    idle: bool,
}

fn restart_policy(pod: &Value) -> &str {
    pod["spec"]["restartPolicy"].as_str().unwrap_or("Always")
}

fn hostname(pod: &Value) -> String {
    let h = pod["spec"]["hostname"]
        .as_str()
        .filter(|h| !h.is_empty())
        .or(pod["metadata"]["name"].as_str())
        .unwrap_or("pod");
    h.chars().take(63).collect()
}

/// The grace period of a pod being deleted: `deletionGracePeriodSeconds`, else
/// `terminationGracePeriodSeconds`, else 30 s.
fn grace(pod: &Value) -> Duration {
    let secs = pod["metadata"]["deletionGracePeriodSeconds"]
        .as_u64()
        .or(pod["spec"]["terminationGracePeriodSeconds"].as_u64())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

fn being_deleted(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
}

impl Worker {
    fn new(shared: Arc<Shared>, pod: Arc<Stored>, msgs_tx: mpsc::UnboundedSender<Msg>) -> Self {
        let v = &pod.value;
        let (uid, ns, name) = (
            pod.uid().to_string(),
            pod.namespace().to_string(),
            pod.name().to_string(),
        );
        let prev = &v["status"]["containerStatuses"];
        let containers = v["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let cname = c["name"].as_str().unwrap_or_default().to_string();
                let restart_count = prev
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|s| s["name"] == cname.as_str())
                    .and_then(|s| s["restartCount"].as_u64())
                    .unwrap_or(0) as u32;
                let image = c["image"].as_str().unwrap_or_default().to_string();
                Container {
                    spec: c.clone(),
                    name: cname,
                    image_id: String::new(),
                    image,
                    restart_count,
                    run: 0,
                    state: State::waiting("ContainerCreating", None),
                    last: None,
                    ready: false,
                    pid: None,
                    started: None,
                    next_start: Some(Instant::now()),
                    backoff: None,
                    pull_backoff: BACKOFF,
                    done: false,
                    ever_ran: false,
                    probes: Vec::new(),
                    kill_at: None,
                    killed: false,
                    env: Vec::new(),
                }
            })
            .collect();
        let phase = v["status"]["phase"].as_str().unwrap_or_default();
        Worker {
            pod_dir: shared.layout.pod_dir(&ns, &name, &uid),
            start_time: v["status"]["startTime"]
                .as_str()
                .map_or_else(admission::now, str::to_string),
            idle: matches!(phase, "Succeeded" | "Failed"),
            shared,
            pod,
            uid,
            ns,
            name,
            net: None,
            net_retry: Some(Instant::now()),
            token_refresh: None,
            mounts: files::MountPlan::default(),
            containers,
            msgs_tx,
            terminating: false,
        }
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Ready { idx, run, ready } => {
                if let Some(c) = self.containers.get_mut(idx)
                    && c.run == run
                    && c.pid.is_some()
                    && !self.terminating
                {
                    c.ready = ready;
                }
            }
            Msg::Unhealthy { idx, run } => {
                let grace = self.pod.value["spec"]["terminationGracePeriodSeconds"]
                    .as_u64()
                    .unwrap_or(30);
                if let Some(c) = self.containers.get_mut(idx)
                    && c.run == run
                    && let Some(pid) = c.pid
                    && c.kill_at.is_none()
                {
                    tracing::info!(
                        "pod {}/{} container {} failed its liveness probe, restarting",
                        self.ns,
                        self.name,
                        c.name
                    );
                    c.stop_probes();
                    c.ready = false;
                    process::signal_group(pid, Signal::TERM);
                    c.kill_at = Some(Instant::now() + Duration::from_secs(grace));
                }
            }
            Msg::Exited { idx, run, status } => self.on_exit(idx, run, status),
        }
    }

    fn on_exit(&mut self, idx: usize, run: u64, status: std::io::Result<std::process::ExitStatus>) {
        let uid = self.uid.clone();
        let policy = restart_policy(&self.pod.value).to_string();
        let terminating = self.terminating;
        let Some(c) = self.containers.get_mut(idx).filter(|c| c.run == run) else {
            return;
        };
        if let Some(pid) = c.pid.take() {
            self.shared.exec_targets.stopped(&uid, &c.name);
            // Whatever the main process left behind in its group goes with it.
            process::signal_group(pid, Signal::KILL);
        }
        c.stop_probes();
        c.ready = false;
        c.kill_at = None;
        c.killed = false;
        let (exit_code, signal) = match status.map(process::outcome) {
            Ok(process::ExecOutcome::Exited(code)) => (code, None),
            Ok(process::ExecOutcome::Signaled(sig)) => (128 + sig, Some(sig)),
            _ => (-1, None),
        };
        let started_at = match &c.state {
            State::Running { started_at } => started_at.clone(),
            _ => admission::now(),
        };
        let term = Terminated {
            exit_code,
            signal,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at,
            finished_at: admission::now(),
            container_id: c.container_id(&uid),
        };
        let restart = !terminating
            && match policy.as_str() {
                "Never" => false,
                "OnFailure" => exit_code != 0,
                _ => true,
            };
        if !restart {
            c.done = true;
            c.state = State::Terminated(term);
            return;
        }
        if c.started.is_some_and(|s| s.elapsed() >= BACKOFF_RESET) {
            c.backoff = None;
        }
        c.last = Some(term);
        match c.backoff {
            None => {
                c.backoff = Some(BACKOFF);
                c.next_start = Some(Instant::now());
                c.state = State::waiting("ContainerCreating", None);
            }
            Some(delay) => {
                c.backoff = Some((delay * 2).min(MAX_BACKOFF));
                c.next_start = Some(Instant::now() + delay);
                c.state = State::waiting(
                    "CrashLoopBackOff",
                    Some(format!(
                        "back-off {}s restarting failed container={} pod={}_{}({uid})",
                        delay.as_secs(),
                        c.name,
                        self.name,
                        self.ns
                    )),
                );
            }
        }
    }

    /// SIGTERM to every running container; SIGKILL follows after `grace`.
    fn stop_all(&mut self, grace: Duration) {
        let kill_at = Instant::now() + grace;
        for c in &mut self.containers {
            c.stop_probes();
            c.ready = false;
            c.next_start = None;
            if let Some(pid) = c.pid {
                let signal = if grace.is_zero() {
                    Signal::KILL
                } else {
                    Signal::TERM
                };
                process::signal_group(pid, signal);
                c.kill_at = Some(c.kill_at.map_or(kill_at, |k| k.min(kill_at)));
            } else if !c.done {
                c.done = true;
            }
        }
    }

    /// SIGKILL for containers whose grace period is over.
    fn kill_overdue(&mut self) {
        let now = Instant::now();
        for c in &mut self.containers {
            if let (Some(pid), Some(at)) = (c.pid, c.kill_at)
                && at <= now
            {
                process::signal_group(pid, Signal::KILL);
                if c.killed {
                    tracing::warn!(
                        "container {} (pid {pid}) survived SIGKILL; giving up on it",
                        c.name
                    );
                    c.pid = None;
                    c.kill_at = None;
                    c.done = true;
                    self.shared.exec_targets.stopped(&self.uid, &c.name);
                } else {
                    c.killed = true;
                    c.kill_at = Some(now + REAP_TIMEOUT);
                }
            }
        }
    }

    fn running(&self) -> bool {
        self.containers.iter().any(|c| c.pid.is_some())
    }

    fn next_deadline(&self) -> Option<Instant> {
        let starts = self
            .containers
            .iter()
            .filter(|c| !self.terminating && !c.done && c.pid.is_none())
            .filter_map(|c| c.next_start);
        let kills = self.containers.iter().filter_map(|c| c.kill_at);
        let net = self
            .net_retry
            .filter(|_| self.net.is_none() && !self.terminating);
        let token = self.token_refresh.filter(|_| !self.terminating);
        starts.chain(kills).chain(net).chain(token).min()
    }

    fn view(&self) -> PodView {
        let done: Vec<(bool, bool, i32)> = self
            .containers
            .iter()
            .map(|c| {
                let code = match &c.state {
                    State::Terminated(t) => t.exit_code,
                    _ => 0,
                };
                (c.done, c.ever_ran, code)
            })
            .collect();
        PodView {
            phase: status::phase(&done),
            pod_ip: self.net.as_ref().map(|(_, ip)| ip.to_string()),
            host_ip: crate::node::NODE_IP.to_string(),
            start_time: self.start_time.clone(),
            containers: self
                .containers
                .iter()
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    image_id: c.image_id.clone(),
                    container_id: c.ever_ran.then(|| c.container_id(&self.uid)),
                    restart_count: c.restart_count,
                    ready: c.ready && c.pid.is_some(),
                    state: c.state.clone(),
                    last_state: c.last.clone(),
                })
                .collect(),
        }
    }

    /// Writes the status when it differs from the stored one.
    fn write_status(&self) {
        if self.idle {
            return;
        }
        let view = self.view();
        let rt = resources::by_shape(Shape::Pod);
        let _ = self.shared.store.write(|s| {
            let Some(cur) = s
                .get(rt, &self.ns, &self.name)
                .filter(|p| p.uid() == self.uid)
            else {
                return Ok::<_, ()>(());
            };
            let new = status::pod_status(&cur.value["status"], &view, &admission::now());
            if status::same(&cur.value["status"], &new) {
                return Ok(());
            }
            let mut value = cur.value.clone();
            value["status"] = new;
            s.put(rt, value);
            Ok(())
        });
    }

    /// Removes the network, the pod's runtime files and tokens, and (when asked) the object:
    /// at once without finalizers, else it is marked for immediate removal and left to them.
    async fn teardown(&mut self, remove_object: bool) {
        let (shared, uid, pod_dir) = (self.shared.clone(), self.uid.clone(), self.pod_dir.clone());
        let _ = tokio::task::spawn_blocking(move || {
            shared.net.remove_pod(&uid);
            files::remove_runtime(&pod_dir);
        })
        .await;
        self.shared.tokens.forget_pod(&self.uid);
        self.shared.exec_targets.pod_gone(&self.uid);
        if !remove_object {
            return;
        }
        self.write_status();
        let rt = resources::by_shape(Shape::Pod);
        let _ = self.shared.store.write(|s| {
            let Some(cur) = s
                .get(rt, &self.ns, &self.name)
                .filter(|p| p.uid() == self.uid)
                .cloned()
            else {
                return Ok::<_, ()>(());
            };
            if finalizers(&cur.value).is_empty() {
                s.remove(rt, &self.ns, &self.name);
            } else if cur.value["metadata"]["deletionGracePeriodSeconds"] != 0 {
                let mut value = cur.value.clone();
                value["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                s.put(rt, value);
            }
            Ok(())
        });
        tracing::info!("pod {}/{} stopped and removed", self.ns, self.name);
    }
}

/// Runs one pod until it is removed. `pod_rx` carries the pod as stored; None once it has been
/// deleted from the store outright.
pub(super) async fn run(shared: Arc<Shared>, mut pod_rx: watch::Receiver<Option<Arc<Stored>>>) {
    let Some(pod) = pod_rx.borrow_and_update().clone() else {
        return;
    };
    let (msgs_tx, mut msgs_rx) = mpsc::unbounded_channel();
    let mut w = Worker::new(shared, pod, msgs_tx);
    let mut gone = false;
    loop {
        if gone && !w.terminating {
            w.terminating = true;
            w.stop_all(Duration::ZERO);
        }
        if !gone && being_deleted(&w.pod.value) && !w.terminating {
            w.terminating = true;
            w.stop_all(grace(&w.pod.value));
        }
        if w.terminating && !w.running() {
            w.teardown(!gone).await;
            return;
        }
        if !w.terminating && !w.idle {
            w.ensure_net().await;
            w.refresh_token().await;
            w.start_due().await;
        }
        if !gone {
            w.write_status();
        }
        let deadline = w.next_deadline();
        tokio::select! {
            changed = pod_rx.changed(), if !gone => {
                match changed.ok().and_then(|()| pod_rx.borrow_and_update().clone()) {
                    Some(p) => w.pod = p,
                    None => gone = true,
                }
            }
            Some(msg) = msgs_rx.recv() => w.on_msg(msg),
            () = sleep_until(deadline) => w.kill_overdue(),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
