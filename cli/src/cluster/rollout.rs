//! Waiting for the manager: the Deployment's rollout and a Ready pod of the current template.
//!
//! Waits watch the objects (kube-runtime watchers feeding reflector stores) and re-evaluate on
//! every change, with a deadline that says what was still missing. Pod problems that will not
//! go away on their own (an image that cannot be pulled, a crash loop, a missing Secret) end
//! the wait at once with the kubelet's message; those that might (unschedulable while the
//! cluster scales up) are shown while waiting and named if the deadline passes.

use std::time::Duration;

use futures::{FutureExt, StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use thiserror::Error;
use tokio::time::Instant;

use super::manifests::{self, NAME};

#[derive(Debug, Error)]
pub enum RolloutError {
    #[error("the manager pod {pod} cannot start: {problem}")]
    PodFailed { pod: String, problem: String },
    #[error("the manager Deployment cannot roll out: {0}")]
    DeploymentFailed(String),
    #[error("no Ready manager pod after {} s: {status}", .waited.as_secs())]
    Timeout { waited: Duration, status: String },
}

/// Why a pod is not running, in the kubelet's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodProblem {
    /// The wait cannot succeed until someone fixes this.
    pub fatal: bool,
    pub text: String,
}

/// Container states after which the pod does not become Ready without outside help.
const FATAL_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Ready and not being deleted.
pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What keeps a pod from running, if anything does.
pub fn pod_problem(pod: &Pod) -> Option<PodProblem> {
    let status = pod.status.as_ref()?;
    for cs in status.container_statuses.iter().flatten() {
        let Some(waiting) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.as_deref().unwrap_or_default();
        if FATAL_WAITING.contains(&reason) {
            let mut text = format!("container {} is {reason}", cs.name);
            if let Some(message) = waiting.message.as_deref().filter(|m| !m.is_empty()) {
                text.push_str(&format!(": {message}"));
            }
            // A crash loop's cause is in how the last run ended.
            if let Some(last) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
                text.push_str(&format!(" (last exit code {}", last.exit_code));
                if let Some(message) = last.message.as_deref().filter(|m| !m.is_empty()) {
                    text.push_str(&format!(": {}", message.trim()));
                }
                text.push(')');
            }
            return Some(PodProblem { fatal: true, text });
        }
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    unschedulable.map(|c| PodProblem {
        fatal: false,
        text: format!(
            "unschedulable: {}",
            c.message.as_deref().unwrap_or("no node fits the pod")
        ),
    })
}

/// `Ok(())` when the Deployment's rollout is complete (as `kubectl rollout status` decides),
/// else what is still missing.
pub fn rollout_status(deploy: &Deployment) -> Result<(), String> {
    let generation = deploy.metadata.generation.unwrap_or(0);
    let status = deploy.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < generation {
        return Err("the Deployment's new spec is not yet picked up by its controller".into());
    }
    let wanted = deploy.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < wanted {
        Err(format!("{updated} of {wanted} new replicas created"))
    } else if total > updated {
        Err(format!(
            "{} old replicas pending termination",
            total - updated
        ))
    } else if available < updated {
        Err(format!("{available} of {updated} new replicas available"))
    } else {
        Ok(())
    }
}

/// A progress deadline the Deployment controller reported: the rollout has given up.
fn rollout_failed(deploy: &Deployment) -> Option<String> {
    let conditions = deploy.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| {
            c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
        .map(|c| {
            c.message
                .clone()
                .unwrap_or_else(|| "progress deadline exceeded".into())
        })
}

/// Waits until the manager Deployment has rolled out the template with `digest` (any
/// template when `None`: a manager tether did not write) and one of its pods is Ready;
/// returns that pod. `status` is called with what is still missing each
/// time that changes.
pub async fn wait_for_manager(
    client: kube::Client,
    namespace: &str,
    digest: Option<&str>,
    timeout: Duration,
    status: &mut dyn FnMut(String),
) -> Result<Pod, RolloutError> {
    let deadline = Instant::now() + timeout;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod_client = client.clone();
    let deployments: Api<Deployment> = Api::namespaced(client, namespace);
    let (pod_store, pod_writer) = reflector::store();
    let (deploy_store, deploy_writer) = reflector::store();
    let pod_events = reflector::reflector(
        pod_writer,
        watcher(
            pods,
            watcher::Config::default().labels(&manifests::pod_selector()),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()))
    .boxed();
    let deploy_events = reflector::reflector(
        deploy_writer,
        watcher(
            deployments,
            watcher::Config::default().fields(&format!("metadata.name={NAME}")),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()))
    .boxed();
    let mut events = stream::select(pod_events, deploy_events);
    let mut last = String::from("watching the manager's Deployment and pods");
    loop {
        // Until both initial lists are in, the stores' emptiness means nothing.
        let verdict = if listed(&pod_store) && listed(&deploy_store) {
            evaluate(&pod_store, &deploy_store, digest)
        } else {
            Verdict::Pending(last.clone())
        };
        match verdict {
            Verdict::Done(pod) => return Ok(Pod::clone(&pod)),
            Verdict::Failed(e) => return Err(e),
            Verdict::Pending(now) => {
                if now != last {
                    status(now.clone());
                    last = now;
                }
            }
        }
        match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) => {
                let why = diagnose(&pod_client, namespace, &pod_store, digest).await;
                return Err(RolloutError::Timeout {
                    waited: timeout,
                    status: format!("{last}{why}"),
                });
            }
            Ok(None) => {
                // Watchers with a backoff do not end; treat it like a deadline anyway.
                return Err(RolloutError::Timeout {
                    waited: timeout,
                    status: last,
                });
            }
            Ok(Some(Err(e))) => {
                // The watcher retries on its own; keep the error for the deadline message.
                tracing::debug!("watch error while waiting for the manager: {e}");
                last = format!("cannot watch the manager: {e}");
            }
            Ok(Some(Ok(()))) => {}
        }
    }
}

/// Why the manager's pods are not Ready, as a person would find out with `kubectl describe`
/// and `kubectl logs`: each container's state and restarts, the pod's latest events (a failing
/// readiness probe's last result is one), and the manager's last log lines. Empty when there
/// is nothing to add; what cannot be read is left out.
async fn diagnose(
    client: &kube::Client,
    namespace: &str,
    pods: &Store<Pod>,
    digest: Option<&str>,
) -> String {
    use k8s_openapi::api::core::v1::Event;
    let mut out = String::new();
    for pod in pods.state().iter().filter(|p| {
        !is_ready(p)
            && p.metadata.deletion_timestamp.is_none()
            && (digest.is_none() || manifests::recorded_digest(&p.metadata) == digest)
    }) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        out.push_str(&format!(". Pod {name}:"));
        for c in pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
        {
            let state = match c.state.as_ref() {
                Some(s) if s.running.is_some() && !c.ready => {
                    "running but not Ready (its readiness probe fails)".to_owned()
                }
                Some(s) if s.running.is_some() => "running".to_owned(),
                Some(s) => match (&s.waiting, &s.terminated) {
                    (Some(w), _) => format!("waiting ({})", w.reason.clone().unwrap_or_default()),
                    (_, Some(t)) => format!(
                        "terminated ({}, exit code {})",
                        t.reason.clone().unwrap_or_default(),
                        t.exit_code
                    ),
                    _ => "in no known state".to_owned(),
                },
                None => "not started".to_owned(),
            };
            out.push_str(&format!(
                " container {} is {state}, {} restarts;",
                c.name, c.restart_count
            ));
        }
        let events: Api<Event> = Api::namespaced(client.clone(), namespace);
        let selector = format!("involvedObject.name={name}");
        if let Ok(list) = events.list(&ListParams::default().fields(&selector)).await {
            let mut items = list.items;
            items.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
            for e in items.iter().rev().take(3) {
                out.push_str(&format!(
                    " event {}: {};",
                    e.reason.clone().unwrap_or_default(),
                    e.message.clone().unwrap_or_default().trim()
                ));
            }
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let params = kube::api::LogParams {
            tail_lines: Some(5),
            ..Default::default()
        };
        if let Ok(logs) = api.logs(&name, &params).await {
            let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
            if !lines.is_empty() {
                out.push_str(&format!(" its last log lines: {}", lines.join(" | ")));
            }
        }
    }
    out
}

/// Whether a reflector store holds a complete initial list.
pub(crate) fn listed<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.wait_until_ready().now_or_never().is_some()
}

enum Verdict {
    Done(std::sync::Arc<Pod>),
    Pending(String),
    Failed(RolloutError),
}

fn evaluate(pods: &Store<Pod>, deployments: &Store<Deployment>, digest: Option<&str>) -> Verdict {
    let Some(deploy) = deployments.state().into_iter().next() else {
        return Verdict::Pending("the manager Deployment does not exist (yet)".into());
    };
    if let Some(message) = rollout_failed(&deploy) {
        return Verdict::Failed(RolloutError::DeploymentFailed(message));
    }
    let current: Vec<_> = pods
        .state()
        .into_iter()
        .filter(|p| digest.is_none() || manifests::recorded_digest(&p.metadata) == digest)
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let mut problem = None;
    for pod in &current {
        if let Some(p) = pod_problem(pod) {
            let name = pod.metadata.name.clone().unwrap_or_default();
            if p.fatal {
                return Verdict::Failed(RolloutError::PodFailed {
                    pod: name,
                    problem: p.text,
                });
            }
            problem = Some(format!("pod {name} is {}", p.text));
        }
    }
    let ready = current.iter().find(|p| is_ready(p));
    match (rollout_status(&deploy), ready) {
        (Ok(()), Some(pod)) => Verdict::Done(pod.clone()),
        (Err(missing), _) => Verdict::Pending(problem.unwrap_or(missing)),
        (Ok(()), None) => Verdict::Pending(problem.unwrap_or_else(|| {
            if current.is_empty() {
                "no manager pod of the current version yet".into()
            } else {
                "the manager pod is not Ready yet".into()
            }
        })),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn image_pull_failures_are_fatal_with_the_kubelets_message() {
        let p = pod(serde_json::json!({"status": {"containerStatuses": [{
            "name": "manager", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}
        }]}}));
        let problem = pod_problem(&p).unwrap();
        assert!(problem.fatal);
        assert_eq!(
            problem.text,
            "container manager is ImagePullBackOff: Back-off pulling image \"x\""
        );
    }

    #[test]
    fn unschedulable_is_reported_but_not_fatal() {
        let p = pod(serde_json::json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient cpu."
        }]}}));
        let problem = pod_problem(&p).unwrap();
        assert!(!problem.fatal);
        assert!(
            problem.text.contains("Insufficient cpu"),
            "{}",
            problem.text
        );
    }

    #[test]
    fn rollout_needs_updated_and_available_replicas() {
        let d = |status: serde_json::Value| -> Deployment {
            serde_json::from_value(serde_json::json!({
                "metadata": {"generation": 2}, "spec": {"replicas": 1, "selector": {}, "template": {}},
                "status": status
            }))
            .unwrap()
        };
        assert!(rollout_status(&d(serde_json::json!({"observedGeneration": 1}))).is_err());
        assert!(
            rollout_status(&d(
                serde_json::json!({"observedGeneration": 2, "replicas": 2,
                "updatedReplicas": 1, "availableReplicas": 2})
            ))
            .unwrap_err()
            .contains("old replicas")
        );
        assert!(
            rollout_status(&d(
                serde_json::json!({"observedGeneration": 2, "replicas": 1,
                "updatedReplicas": 1, "availableReplicas": 1})
            ))
            .is_ok()
        );
    }
}
