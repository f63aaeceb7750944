//! Starting a pod: its network, files and token, then each container (image, environment,
//! command, log, probes).

use std::net::Ipv4Addr;

use serde_json::Value;
use tokio::time::Instant;

use super::{BACKOFF, CONFIG_RETRY, MAX_BACKOFF, Msg, State, Worker, hostname};
use crate::admission;
use crate::auth::ServiceAccount;
use crate::kubelet::{env, exec, files, images, probe, process};
use crate::node::netns::Netns;

/// When a pod's token is renewed: at 80% of the lifetime the kubelet asks for (what a
/// kubelet's token manager does; the API server may make the token last longer).
const TOKEN_REFRESH: std::time::Duration =
    std::time::Duration::from_secs(crate::auth::KUBELET_EXPIRATION as u64 * 4 / 5);
/// How soon a failed refresh is tried again.
const TOKEN_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// The service account a pod runs as.
fn service_account(pod: &Value) -> &str {
    pod["spec"]["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

impl Worker {
    /// Sets up the network, the pod's files and its token.
    pub(super) async fn ensure_net(&mut self) {
        if self.net.is_some() || self.net_retry.is_none_or(|t| t > Instant::now()) {
            return;
        }
        let v = self.pod.value.clone();
        let (shared, uid, ns, pod_dir) = (
            self.shared.clone(),
            self.uid.clone(),
            self.ns.clone(),
            self.pod_dir.clone(),
        );
        let result = tokio::task::spawn_blocking(move || {
            // The token first: when the API server does not issue one (yet), the pod is set
            // up on the next try, and no network is left behind meanwhile.
            let token = if v["spec"]["automountServiceAccountToken"] != false {
                let account = service_account(&v);
                let pod_name = v["metadata"]["name"].as_str().unwrap_or_default();
                let account = ServiceAccount {
                    namespace: ns.clone(),
                    name: account.to_string(),
                };
                Some(shared.tokens.pod_token(account, pod_name, &uid)?)
            } else {
                None
            };
            let (netns, ip) = shared.net.add_pod(&uid)?;
            let ip_text = ip.to_string();
            let host = hostname(&v);
            let aliases = v["spec"]["hostAliases"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    let names = a["hostnames"].as_array().into_iter().flatten();
                    (
                        a["ip"].as_str().unwrap_or_default().to_string(),
                        names
                            .filter_map(|n| n.as_str().map(str::to_string))
                            .collect(),
                    )
                })
                .collect();
            let plan = files::write(
                &pod_dir,
                &files::PodFiles {
                    namespace: &ns,
                    hostname: &host,
                    subdomain: v["spec"]["subdomain"].as_str(),
                    pod_ip: &ip_text,
                    host_aliases: aliases,
                    token: token.as_deref(),
                    ca_pem: &shared.ca_pem,
                },
            )
            .map_err(|e| format!("cannot write the pod's files in {}: {e}", pod_dir.display()))?;
            Ok::<_, String>((netns, ip, plan, token.is_some()))
        })
        .await
        .unwrap_or_else(|e| Err(format!("pod setup panicked: {e}")));
        match result {
            Ok((netns, ip, plan, has_token)) => {
                self.net = Some((netns, ip));
                self.mounts = plan;
                self.net_retry = None;
                self.token_refresh = has_token.then(|| Instant::now() + TOKEN_REFRESH);
            }
            Err(e) => {
                tracing::warn!("pod {}/{}: network setup failed: {e}", self.ns, self.name);
                self.net_retry = Some(Instant::now() + BACKOFF);
                for c in &mut self.containers {
                    c.state = State::waiting("ContainerCreating", Some(e.clone()));
                }
            }
        }
    }

    /// Asks for a fresh service-account token once the current one is due for refresh, as a
    /// kubelet renews projected tokens, and puts it in place; a failed request keeps the
    /// current token and is tried again shortly.
    pub(super) async fn refresh_token(&mut self) {
        if self.token_refresh.is_none_or(|t| t > Instant::now()) {
            return;
        }
        let v = self.pod.value.clone();
        let (shared, uid, ns, pod_dir) = (
            self.shared.clone(),
            self.uid.clone(),
            self.ns.clone(),
            self.pod_dir.clone(),
        );
        let refreshed = tokio::task::spawn_blocking(move || {
            let account = ServiceAccount {
                namespace: ns,
                name: service_account(&v).to_string(),
            };
            let pod_name = v["metadata"]["name"].as_str().unwrap_or_default();
            let token = shared.tokens.pod_token(account, pod_name, &uid)?;
            files::write_token(&pod_dir, &token).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("token refresh panicked: {e}")));
        self.token_refresh = Some(match refreshed {
            Ok(()) => Instant::now() + TOKEN_REFRESH,
            Err(e) => {
                tracing::warn!(
                    "pod {}/{}: cannot refresh its token: {e}",
                    self.ns,
                    self.name
                );
                Instant::now() + TOKEN_RETRY
            }
        });
    }

    pub(super) async fn start_due(&mut self) {
        let Some((netns, ip)) = self.net.clone() else {
            return;
        };
        let now = Instant::now();
        for idx in 0..self.containers.len() {
            let c = &self.containers[idx];
            if c.done || c.pid.is_some() || c.next_start.is_none_or(|t| t > now) {
                continue;
            }
            self.start(idx, &netns, ip).await;
        }
    }

    async fn start(&mut self, idx: usize, netns: &Netns, ip: Ipv4Addr) {
        let shared = self.shared.clone();
        let pod = self.pod.value.clone();
        let c = &mut self.containers[idx];
        c.next_start = None;
        let entry = match images::entrypoint(&c.image, &shared.layout.state_dir) {
            Ok(e) => e,
            Err(e) => {
                let reason = if matches!(&c.state, State::Waiting { reason, .. } if reason == "ErrImagePull" || reason == "ImagePullBackOff")
                {
                    "ImagePullBackOff"
                } else {
                    "ErrImagePull"
                };
                c.state = State::waiting(reason, Some(e.to_string()));
                c.next_start = Some(Instant::now() + c.pull_backoff);
                c.pull_backoff = (c.pull_backoff * 2).min(MAX_BACKOFF);
                return;
            }
        };
        c.pull_backoff = BACKOFF;
        c.image_id = match &entry.exe {
            Some(exe) => format!("sandbox://{}", exe.display()),
            None => format!("sandbox://{}", c.image),
        };
        let facts = env::PodFacts {
            pod_ip: ip.to_string(),
            host_ip: crate::node::NODE_IP.to_string(),
        };
        let built = shared.store.read(|s| env::build(s, &pod, &c.spec, &facts));
        let mut environment = match built {
            Ok(e) => e,
            Err(e) => {
                c.state = State::waiting("CreateContainerConfigError", Some(e.0));
                c.next_start = Some(Instant::now() + CONFIG_RETRY);
                return;
            }
        };
        let host = hostname(&pod);
        if environment.get("PATH").is_none() {
            environment.set(
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
        }
        if environment.get("HOSTNAME").is_none() {
            environment.set("HOSTNAME".into(), host.clone());
        }
        if environment.get("HOME").is_none() {
            environment.set("HOME".into(), "/root".into());
        }
        let strings = |v: &Value| -> Option<Vec<String>> {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(|s| environment.expand(s)))
                    .collect()
            })
        };
        let (command, args) = (strings(&c.spec["command"]), strings(&c.spec["args"]));
        let resolved = match images::resolve(&entry, command.as_deref(), args.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                c.state = State::waiting("RunContainerError", Some(e.to_string()));
                let delay = c.backoff.unwrap_or(BACKOFF);
                c.backoff = Some((delay * 2).min(MAX_BACKOFF));
                c.next_start = Some(Instant::now() + delay);
                return;
            }
        };
        let log = self.pod_dir.join(format!("{}.log", c.name));
        let working_dir = exec::working_dir(c.spec["workingDir"].as_str());
        let launch = process::Launch {
            exe: resolved.exe,
            args: resolved.args,
            env: environment.vars().to_vec(),
            netns: netns.clone(),
            hostname: host,
            mounts: self.mounts.clone(),
            working_dir: c.spec["workingDir"].as_str().map(str::to_string),
            log: log.clone(),
        };
        let run = c.run + 1;
        let restarting = c.ever_ran;
        let msgs_tx = self.msgs_tx.clone();
        let spawned = tokio::task::spawn_blocking(move || {
            if restarting {
                let previous = log.with_extension("previous.log");
                let _ = std::fs::rename(&log, previous);
            }
            process::spawn(&launch, move |status| {
                let _ = msgs_tx.send(Msg::Exited { idx, run, status });
            })
            .map(|pid| (pid, launch.env))
        })
        .await;
        let c = &mut self.containers[idx];
        let (pid, env_vars) = match spawned {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::warn!("pod {}/{}: {e}", self.ns, self.name);
                c.state = State::waiting("RunContainerError", Some(e.to_string()));
                let delay = c.backoff.unwrap_or(BACKOFF);
                c.backoff = Some((delay * 2).min(MAX_BACKOFF));
                c.next_start = Some(Instant::now() + delay);
                return;
            }
            Err(e) => {
                c.state = State::waiting("RunContainerError", Some(e.to_string()));
                c.next_start = Some(Instant::now() + BACKOFF);
                return;
            }
        };
        if restarting {
            c.restart_count += 1;
        }
        c.run = run;
        c.ever_ran = true;
        c.pid = Some(pid);
        c.started = Some(Instant::now());
        c.state = State::Running {
            started_at: admission::now(),
        };
        c.env = env_vars;
        // `kubectl exec` joins this process, with exactly its environment and directory.
        let exec_target = exec::Target {
            pid,
            env: c.env.clone(),
            working_dir,
        };
        shared.exec_targets.started(&self.uid, &c.name, exec_target);
        let target = probe::Target {
            netns: netns.clone(),
            ip,
            pid,
            env: c.env.clone(),
        };
        let readiness = probe::Probe::parse(&c.spec["readinessProbe"], &c.spec);
        let liveness = probe::Probe::parse(&c.spec["livenessProbe"], &c.spec);
        c.ready = !matches!(readiness, Ok(Some(_)));
        for (what, r) in [("readiness", &readiness), ("liveness", &liveness)] {
            if let Err(e) = r {
                tracing::warn!(
                    "pod {}/{} container {}: {what} probe ignored: {e}",
                    self.ns,
                    self.name,
                    c.name
                );
            }
        }
        if let Ok(Some(p)) = readiness {
            let tx = self.msgs_tx.clone();
            c.probes.push(tokio::spawn(probe::run(
                p,
                target.clone(),
                false,
                move |ready| {
                    let _ = tx.send(Msg::Ready { idx, run, ready });
                },
            )));
        }
        if let Ok(Some(p)) = liveness {
            let tx = self.msgs_tx.clone();
            c.probes
                .push(tokio::spawn(probe::run(p, target, true, move |alive| {
                    if !alive {
                        let _ = tx.send(Msg::Unhealthy { idx, run });
                    }
                })));
        }
    }
}
