//! Readiness and liveness probes, as the kubelet runs them: `tcpSocket` and `httpGet` dial the
//! pod's IP from inside the pod's network namespace (named ports resolve to the container's
//! ports; HTTP 200–399 passes; `https` is checked as far as the TCP connect, as the sandbox
//! does not verify certificates anyway), `exec` runs a command in the container's namespaces
//! (exit 0 passes). Timing follows the Kubernetes defaults (period 10 s, timeout 1 s, success
//! 1, failure 3, no initial delay).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;

use super::images;
use super::process::{self, ExecOutcome};
use crate::node::netns::Netns;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    Tcp {
        host: Option<IpAddr>,
        port: u16,
    },
    Http {
        host: Option<IpAddr>,
        port: u16,
        path: String,
        https: bool,
        headers: Vec<(String, String)>,
    },
    Exec {
        command: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub handler: Handler,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// Resolves an int-or-string port against the container's named ports.
fn port(v: &Value, container: &Value) -> Result<u16, String> {
    if let Some(n) = v.as_u64() {
        return u16::try_from(n).map_err(|_| format!("invalid port {n}"));
    }
    let name = v.as_str().unwrap_or_default();
    if let Ok(n) = name.parse::<u16>() {
        return Ok(n);
    }
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| format!("port {name:?} is not a named port of the container"))
}

fn secs(v: &Value, default: u64, min: u64) -> Duration {
    Duration::from_secs(v.as_u64().unwrap_or(default).max(min))
}

impl Probe {
    /// The probe a container spec describes (None when the field is absent).
    pub fn parse(spec: &Value, container: &Value) -> Result<Option<Probe>, String> {
        if !spec.is_object() {
            return Ok(None);
        }
        let host = |h: &Value| h.as_str().and_then(|s| s.parse::<IpAddr>().ok());
        let handler = if let Some(t) = spec.get("tcpSocket") {
            Handler::Tcp {
                host: host(&t["host"]),
                port: port(&t["port"], container)?,
            }
        } else if let Some(h) = spec.get("httpGet") {
            Handler::Http {
                host: host(&h["host"]),
                port: port(&h["port"], container)?,
                path: h["path"].as_str().unwrap_or("/").to_string(),
                https: h["scheme"] == "HTTPS",
                headers: h["httpHeaders"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| {
                        Some((
                            x["name"].as_str()?.to_string(),
                            x["value"].as_str()?.to_string(),
                        ))
                    })
                    .collect(),
            }
        } else if let Some(e) = spec.get("exec") {
            Handler::Exec {
                command: e["command"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect(),
            }
        } else {
            return Err("the probe has no handler (tcpSocket, httpGet or exec)".into());
        };
        Ok(Some(Probe {
            handler,
            initial_delay: secs(&spec["initialDelaySeconds"], 0, 0),
            period: secs(&spec["periodSeconds"], 10, 1),
            timeout: secs(&spec["timeoutSeconds"], 1, 1),
            success_threshold: spec["successThreshold"].as_u64().unwrap_or(1).max(1) as u32,
            failure_threshold: spec["failureThreshold"].as_u64().unwrap_or(3).max(1) as u32,
        }))
    }
}

/// What a probe acts on: the pod's network and the container's process and environment.
#[derive(Debug, Clone)]
pub struct Target {
    pub netns: Netns,
    pub ip: Ipv4Addr,
    pub pid: i32,
    pub env: Vec<(String, String)>,
}

fn http_get(
    netns: &Netns,
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> bool {
    let Ok(mut s) = netns.connect_tcp(addr, timeout) else {
        return false;
    };
    if s.set_nonblocking(false).is_err()
        || s.set_read_timeout(Some(timeout)).is_err()
        || s.set_write_timeout(Some(timeout)).is_err()
    {
        return false;
    }
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("host") {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    if !has("user-agent") {
        req.push_str("User-Agent: kube-probe/1.33\r\n");
    }
    if !has("accept") {
        req.push_str("Accept: */*\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .is_some_and(|c| (200..400).contains(&c))
}

/// Runs the probe once (blocking); true when it passes.
pub fn check(probe: &Probe, target: &Target) -> bool {
    let addr = |host: &Option<IpAddr>, port: u16| {
        SocketAddr::new(host.unwrap_or(IpAddr::V4(target.ip)), port)
    };
    match &probe.handler {
        Handler::Tcp { host, port } => target
            .netns
            .connect_tcp(addr(host, *port), probe.timeout)
            .is_ok(),
        Handler::Http {
            host,
            port,
            https: true,
            ..
        } => target
            .netns
            .connect_tcp(addr(host, *port), probe.timeout)
            .is_ok(),
        Handler::Http {
            host,
            port,
            path,
            headers,
            ..
        } => http_get(
            &target.netns,
            addr(host, *port),
            path,
            headers,
            probe.timeout,
        ),
        Handler::Exec { command } => {
            let Some((first, rest)) = command.split_first() else {
                return false;
            };
            let Some(exe) = images::lookup_path(first) else {
                return false;
            };
            matches!(
                process::exec_in(target.pid, &exe, rest, &target.env, probe.timeout),
                Ok(ExecOutcome::Exited(0))
            )
        }
    }
}

/// Runs a probe until the task is aborted, calling `report` each time its result flips:
/// from `initial` (false for readiness, true for liveness) after `successThreshold` passes
/// or `failureThreshold` failures in a row.
pub async fn run(probe: Probe, target: Target, initial: bool, report: impl Fn(bool) + Send) {
    tokio::time::sleep(probe.initial_delay).await;
    let (mut state, mut passes, mut failures) = (initial, 0u32, 0u32);
    loop {
        let (p, t) = (probe.clone(), target.clone());
        let ok = tokio::task::spawn_blocking(move || check(&p, &t))
            .await
            .unwrap_or(false);
        if ok {
            passes += 1;
            failures = 0;
        } else {
            failures += 1;
            passes = 0;
        }
        let next = if ok && passes >= probe.success_threshold {
            true
        } else if !ok && failures >= probe.failure_threshold {
            false
        } else {
            state
        };
        if next != state {
            state = next;
            report(state);
        }
        tokio::time::sleep(probe.period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_with_defaults_and_named_ports() {
        let c = json!({"ports": [{"name": "http", "containerPort": 8080}]});
        let p = Probe::parse(
            &json!({"httpGet": {"port": "http", "path": "/healthz"}}),
            &c,
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.period, Duration::from_secs(10));
        assert_eq!(p.failure_threshold, 3);
        assert!(matches!(p.handler, Handler::Http { port: 8080, .. }));
        assert!(Probe::parse(&json!({"tcpSocket": {"port": "nope"}}), &c).is_err());
        assert_eq!(Probe::parse(&Value::Null, &c), Ok(None));
    }
}
