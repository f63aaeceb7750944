//! How each [`Event`] reads for people (`--output text`, the default).

use crate::ipc::{SessionState, Status};
use crate::output::Event;

pub fn render(event: &Event) -> String {
    match event {
        Event::Connected(status) => connected(status),
        Event::AlreadyConnected(status) | Event::Status(status) => status_block(status),
        Event::NotConnected => "Not connected.".to_owned(),
        Event::Disconnected {
            manager: Some(manager),
            ..
        } => format!("Disconnected from {manager}; this machine is as it was."),
        Event::Disconnected { manager: None, .. } => "Disconnected.".to_owned(),
        Event::CleanedUp(c) if c.resolv_conf_restored => format!(
            "Cleaned up after a tether daemon (pid {}) that ended without cleaning up: {} restored.",
            c.pid,
            c.resolv_conf.display()
        ),
        Event::CleanedUp(c) => format!(
            "Cleaned up after a tether daemon (pid {}) that ended without cleaning up; {} had been changed by another program and was left as it is.",
            c.pid,
            c.resolv_conf.display()
        ),
        Event::Uninstalled {
            context,
            namespace,
            removed,
        } if removed.is_empty() => {
            format!(
                "Nothing of tether's was installed in namespace {namespace} of context {context}."
            )
        }
        Event::Uninstalled {
            context, removed, ..
        } => format!("Removed from context {context}: {}.", removed.join(", ")),
        Event::Intercepted {
            intercept,
            env_files,
            ..
        } => {
            let mut out = format!(
                "Intercepting {}: Service {} port {} of deploy/{} in {} -> {} ({} pod{}).",
                intercept.name,
                intercept.service,
                port_name(intercept),
                intercept.workload,
                intercept.namespace,
                intercept.local,
                intercept.pods.len(),
                if intercept.pods.len() == 1 { "" } else { "s" },
            );
            if !intercept.route.is_global() || intercept.replace {
                let what = if intercept.replace {
                    format!(
                        "all of {}'s ports; the container is stopped",
                        intercept.container
                    )
                } else {
                    intercept.route.to_string()
                };
                out.push_str(&format!("\n  taking {what}"));
            }
            if let Some(header) = &intercept.header {
                out.push_str(&format!(
                    "\n  tag your requests with the header `{header}` (also in ${})",
                    crate::commands::intercept::HEADER_VARIABLE
                ));
            }
            for f in env_files {
                out.push_str(&format!(
                    "\n  environment of {} written to {}",
                    intercept.container,
                    f.display()
                ));
            }
            out.push_str(&format!(
                "\n`tether leave {}` sends the traffic back to the pods.",
                intercept.name
            ));
            out
        }
        Event::Left { intercept } => format!(
            "Left {}: deploy/{} in {} serves its Service again.",
            intercept.name, intercept.workload, intercept.namespace
        ),
        Event::List {
            namespace,
            workloads,
            ingresses,
        } => list_table(namespace, workloads, ingresses),
        Event::Config { file, settings } => {
            let mut out = match file {
                Some(f) => format!("config file: {}", f.display()),
                None => "config file: none".to_owned(),
            };
            for s in settings {
                let value = match &s.value {
                    serde_json::Value::String(v) => v.clone(),
                    serde_json::Value::Null => "(unset)".to_owned(),
                    other => other.to_string(),
                };
                let source = match s.source {
                    crate::config::file::Source::Flag => "flag",
                    crate::config::file::Source::Environment => "environment",
                    crate::config::file::Source::File => "file",
                    crate::config::file::Source::Default => "default",
                };
                out.push_str(&format!("\n  {:<18} {:<28} {source}", s.key, value));
            }
            out
        }
        Event::Version {
            client,
            daemon,
            manager,
            problems,
        } => {
            let mut out = format!("tether {client}");
            if let Some(d) = daemon {
                out.push_str(&format!("\ndaemon {d}"));
            }
            if let Some(m) = manager {
                out.push_str(&format!("\nmanager (tether-agent) {m}"));
            }
            for p in problems {
                out.push_str(&format!("\nwarning: {p}"));
            }
            out
        }
        Event::Doctor(d) => doctor(d),
        Event::Rbac { yaml, .. } => yaml.trim_end().to_owned(),
        Event::Error { error, .. } => format!("tether: {error}"),
    }
}

fn doctor(d: &crate::doctor::Diagnosis) -> String {
    use crate::doctor::Outcome;
    let mut out = format!("{} in namespace {}", d.target, d.namespace);
    for walk in &d.services {
        if !walk.service.is_empty() && d.target != format!("svc/{}", walk.service) {
            out.push_str(&format!("\nsvc/{}", walk.service));
        }
        for s in &walk.steps {
            let mark = match s.outcome {
                Outcome::Passed => "ok  ",
                Outcome::Warned => "warn",
                Outcome::Failed => "FAIL",
                Outcome::Skipped => "skip",
            };
            out.push_str(&format!("\n  {mark} {}. {}", s.step, s.check));
            for line in &s.details {
                out.push_str(&format!("\n         {line}"));
            }
            if let Some(fix) = &s.fix {
                out.push_str(&format!("\n       → {fix}"));
            }
        }
    }
    out.push_str(match d.healthy {
        true => "\nno step failed",
        false => "\na step failed: the first FAIL above is where to look",
    });
    out
}

fn port_name(i: &crate::ipc::InterceptInfo) -> String {
    match &i.service_port_name {
        Some(n) => format!("{n} ({})", i.service_port),
        None => i.service_port.to_string(),
    }
}

fn list_table(
    namespace: &str,
    workloads: &[crate::commands::list::Listed],
    ingresses: &[crate::commands::list::ListedIngress],
) -> String {
    let mut out = workloads_table(namespace, workloads);
    for i in ingresses {
        out.push_str(&format!(
            "\ningress/{} {} -> {}",
            i.name,
            if i.hosts.is_empty() {
                "(any host)".to_owned()
            } else {
                i.hosts.join(",")
            },
            if i.address.is_empty() {
                "(no address yet)"
            } else {
                &i.address
            }
        ));
    }
    out
}

fn workloads_table(namespace: &str, workloads: &[crate::commands::list::Listed]) -> String {
    if workloads.is_empty() {
        return format!("No Deployments in namespace {namespace}.");
    }
    let mut out = format!(
        "{:<24} {:<36} {:<8} INTERCEPTS",
        "WORKLOAD", "SERVICES", "AGENT"
    );
    for w in workloads {
        let services = if w.services.is_empty() {
            "(none)".to_owned()
        } else {
            w.services
                .iter()
                .map(|s| format!("{} {}", s.name, s.ports.join(",")))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let intercepts = if w.intercepts.is_empty() {
            "-".to_owned()
        } else {
            w.intercepts
                .iter()
                .map(|i| {
                    let mut line =
                        format!("{} :{} by {} -> {}", i.name, i.port, i.held_by, i.local);
                    if i.route != "all traffic" {
                        line.push_str(&format!(" [{}]", i.route));
                    }
                    if i.dropped > 0 {
                        line.push_str(&format!(" ({} copies dropped)", i.dropped));
                    }
                    line
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        out.push_str(&format!(
            "\ndeploy/{:<17} {:<36} {:<8} {}",
            w.name, services, w.agent, intercepts
        ));
        if w.not_http > 0 {
            out.push_str(&format!(
                "\n  {} connection{} not HTTP went to the app past the filters",
                w.not_http,
                if w.not_http == 1 { "" } else { "s" }
            ));
        }
    }
    out
}

fn connected(s: &Status) -> String {
    let to = match (&s.context, &s.cluster) {
        (Some(context), Some(server)) => format!(
            "the cluster of context {context} ({server}) through the manager {}",
            s.manager.address
        ),
        _ => format!("the manager at {}", s.manager.address),
    };
    format!(
        "Connected to {to} (tether-agent {}).\n  \
         device {} {}, routing {}\n  \
         DNS {} ({}), cluster domain {}, search {}\n\
         `tether status` shows the connection, `tether quit` ends it.",
        s.manager.version,
        s.device,
        s.device_address,
        list(&s.routes, "nothing"),
        s.dns.server,
        dns_mode(s),
        s.dns.domain,
        s.dns.search.join(" "),
    )
}

fn status_block(s: &Status) -> String {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let since = s
        .connected_since
        .map_or_else(|| "-".to_owned(), |at| since(at, jiff::Timestamp::now()));
    let context = match (&s.context, &s.cluster, &s.namespace) {
        (None, None, None) => String::new(),
        _ => format!(
            "\n  Context:     {}, cluster {}, namespace {}",
            or_dash(&s.context),
            or_dash(&s.cluster),
            or_dash(&s.namespace)
        ),
    };
    let device_place = match &s.rootless {
        Some(r) => format!(
            " in the rootless namespace of pid {} (this machine's loopback there: {})",
            r.helper_pid, r.host_address
        ),
        None => String::new(),
    };
    format!(
        "{state} ({mode}) to the manager at {addr}, tether-agent {version}{context}\n  \
         Device:      {device} {device_address}{device_place}\n  \
         Routes:      {routes}\n  \
         DNS:         {dns_mode}, server {server}, domain {domain}, search {search}\n  \
         Since:       {since}, reconnects {reconnects}\n  \
         Open flows:  {flows}\n  \
         Daemon:      pid {pid}, log {log}{ingress}",
        state = match s.state {
            SessionState::Connecting => "Connecting",
            SessionState::Connected => "Connected",
            SessionState::Reconnecting => "Reconnecting",
        },
        mode = match s.mode {
            crate::ipc::Mode::Direct => "direct",
            crate::ipc::Mode::Kubernetes => "kubernetes",
        },
        addr = s.manager.address,
        version = s.manager.version,
        device = s.device,
        device_address = s.device_address,
        routes = list(&s.routes, "none"),
        dns_mode = dns_mode(s),
        server = s.dns.server,
        domain = s.dns.domain,
        search = s.dns.search.join(" "),
        reconnects = s.reconnects,
        flows = s.open_flows,
        pid = s.pid,
        log = s.log.display(),
        ingress = ingress_hosts(s),
    )
}

/// `Ingress:     shop.example.test -> 10.96.0.40 (demo/shop)`, one host a line.
fn ingress_hosts(s: &Status) -> String {
    s.ingress_hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            format!(
                "\n  {:<12} {} -> {} ({}{})",
                if i == 0 { "Ingress:" } else { "" },
                h.host,
                h.address,
                h.ingress,
                if h.precedence == "override" {
                    ", over public DNS"
                } else {
                    ""
                }
            )
        })
        .collect()
}

fn dns_mode(s: &Status) -> &'static str {
    s.dns.mode.as_str()
}

fn list(items: &[ipnet::IpNet], empty: &str) -> String {
    if items.is_empty() {
        empty.to_owned()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A time as "2025-01-02T03:04:05Z (5m 3s ago)".
fn since(at: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let seconds = now.duration_since(at).as_secs().max(0);
    let ago = match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    };
    let at = at
        .round(jiff::Unit::Second)
        .map_or_else(|_| at.to_string(), |t| t.to_string());
    format!("{at} ({ago} ago)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_the_largest_units() {
        let at: jiff::Timestamp = "2026-01-01T00:00:00.4Z".parse().unwrap();
        let later = |s: i64| at + jiff::SignedDuration::from_secs(s);
        assert_eq!(since(at, later(5)), "2026-01-01T00:00:00Z (5s ago)");
        assert_eq!(since(at, later(303)), "2026-01-01T00:00:00Z (5m 3s ago)");
        assert_eq!(since(at, later(7260)), "2026-01-01T00:00:00Z (2h 1m ago)");
    }
}
