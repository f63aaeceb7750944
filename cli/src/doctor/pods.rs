//! Why a pod is not ready, in the words a person would gather with `kubectl describe` and
//! `kubectl logs`: its containers' states and restarts, its readiness probe and what that
//! probe gets when the doctor asks the same thing from inside the cluster, and the last
//! lines of its log.

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::LogParams;

use super::probe::{Answer, Http, Inside};
use crate::cluster::Cluster;

/// Log lines shown for a pod that is not ready.
const LOG_LINES: i64 = 5;

/// Sentences about `pod`, each prefixed with its name.
pub async fn why_not_ready(cluster: &Cluster, pod: &Pod, inside: Option<&Inside>) -> Vec<String> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut out = Vec::new();
    let status = pod.status.clone().unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_some() {
        out.push(format!("pod {name}: terminating"));
    }
    let phase = status.phase.clone().unwrap_or_else(|| "Unknown".into());
    if phase != "Running" {
        out.push(format!("pod {name}: phase {phase}"));
    }
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let mut not_ready = None;
    for cs in status.container_statuses.iter().flatten() {
        let mut what = Vec::new();
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            what.push(format!(
                "waiting: {}{}",
                w.reason.clone().unwrap_or_default(),
                w.message
                    .as_ref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ));
        }
        if cs.restart_count > 0 {
            let last = cs
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| {
                    format!(
                        ", last exit {} ({})",
                        t.exit_code,
                        t.reason.clone().unwrap_or_else(|| "no reason given".into())
                    )
                })
                .unwrap_or_default();
            what.push(format!("{} restarts{last}", cs.restart_count));
        }
        if !cs.ready {
            not_ready.get_or_insert(cs.name.clone());
            what.push("not ready".into());
        }
        if !what.is_empty() {
            out.push(format!(
                "pod {name}, container {}: {}",
                cs.name,
                what.join("; ")
            ));
        }
    }
    let container = not_ready
        .as_deref()
        .and_then(|n| containers.iter().find(|c| c.name == n))
        .or(containers.first());
    if let Some(c) = container {
        if let Some(probe) = &c.readiness_probe {
            let ip = status.pod_ip.clone().unwrap_or_default();
            let mut line = format!("pod {name}: readiness probe {}", describe_probe(probe, c));
            if let Some(result) = reprobe(probe, c, &ip, inside).await {
                line.push_str(&format!("; asked now from inside the cluster: {result}"));
            }
            out.push(line);
        }
        out.extend(last_log_lines(cluster, pod, &c.name).await);
    }
    out
}

/// `http-get :8080/healthz`, `tcp-socket :9090`, `exec [cat /tmp/ready]`.
pub fn describe_probe(probe: &Probe, container: &Container) -> String {
    let timing = format!(
        " every {}s, {} failures make it unready",
        probe.period_seconds.unwrap_or(10),
        probe.failure_threshold.unwrap_or(3)
    );
    let what = if let Some(h) = &probe.http_get {
        format!(
            "http-get :{}{}",
            port_text(&h.port, container),
            h.path.clone().unwrap_or_else(|| "/".into())
        )
    } else if let Some(t) = &probe.tcp_socket {
        format!("tcp-socket :{}", port_text(&t.port, container))
    } else if let Some(e) = &probe.exec {
        format!("exec {:?}", e.command.clone().unwrap_or_default())
    } else if let Some(g) = &probe.grpc {
        format!("grpc :{}", g.port)
    } else {
        "of no kind tether knows".into()
    };
    what + &timing
}

fn port_text(port: &IntOrString, container: &Container) -> String {
    match port {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => match named_port(container, s) {
            Some(n) => format!("{n} ({s})"),
            None => format!("{s} (a name no port of the container has)"),
        },
    }
}

pub fn named_port(container: &Container, name: &str) -> Option<i32> {
    container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

/// What the probe gets now, asked through the manager: HTTP and TCP probes only.
async fn reprobe(
    probe: &Probe,
    c: &Container,
    ip: &str,
    inside: Option<&Inside>,
) -> Option<String> {
    let inside = inside?;
    let ip: std::net::IpAddr = ip.parse().ok()?;
    let resolve = |p: &IntOrString| match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(s) => named_port(c, s).and_then(|n| u16::try_from(n).ok()),
    };
    let (port, http) = match (&probe.http_get, &probe.tcp_socket) {
        (Some(h), _) => (
            resolve(&h.port)?,
            Some(h.path.clone().unwrap_or_else(|| "/".into())),
        ),
        (None, Some(t)) => (resolve(&t.port)?, None),
        _ => return None,
    };
    let target = std::net::SocketAddr::new(ip, port);
    let host = target.to_string();
    let request = http.as_deref().map(|path| Http { host: &host, path });
    Some(match (inside.check(target, request).await, http) {
        (Err(e), _) => e,
        (Ok(_), None) => "the port accepts connections".into(),
        (Ok(Answer::Http(status)), Some(path)) if (200..400).contains(&status) => {
            format!("GET {path} answers {status}")
        }
        (Ok(Answer::Http(status)), Some(path)) => {
            format!("GET {path} answers {status} (the kubelet counts 200-399 as ready)")
        }
        (Ok(Answer::Connected), Some(path)) => format!("GET {path} gets no HTTP answer"),
    })
}

async fn last_log_lines(cluster: &Cluster, pod: &Pod, container: &str) -> Vec<String> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &namespace);
    let params = LogParams {
        container: Some(container.to_owned()),
        tail_lines: Some(LOG_LINES),
        ..LogParams::default()
    };
    match pods.logs(&name, &params).await {
        Ok(log) if log.trim().is_empty() => vec![format!("pod {name}: its log is empty")],
        Ok(log) => std::iter::once(format!("pod {name}: last lines of its log:"))
            .chain(log.lines().map(|l| format!("  {l}")))
            .collect(),
        Err(e) => vec![format!(
            "pod {name}: cannot read its log: {}",
            crate::cluster::client::describe(&e)
        )],
    }
}
