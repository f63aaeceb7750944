//! A [`Plan`] written as nginx configuration: one `server` per host (wildcards as a regex
//! that matches one label, as the Ingress API defines them), a default server for every other
//! host (rules without a host are served there only, as ingress-nginx does), and per route
//! the locations that give nginx's matching the Ingress meaning: an Exact path is
//! `location = PATH`; a Prefix path `/foo` is `location = /foo` plus `location /foo/`, so
//! that `/foobar` does not match; exact locations win over prefixes and the longest prefix
//! wins, as in the API. When two routes would make the same location, an Exact one wins, else
//! the first (older) one. What matches nothing goes to the default backend, else 404.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

use super::plan::{PathType, Plan, Route, Target};

/// Where nginx keeps its files and what it listens on.
#[derive(Debug, Clone)]
pub struct Layout<'a> {
    /// The private directory: pid file, temporary files, the configuration.
    pub dir: &'a Path,
    /// The port Ingress traffic arrives on.
    pub listen: u16,
    /// The port of `/healthz` (the pod's readiness probe).
    pub health: u16,
    /// Workers' `user group` when nginx starts as root.
    pub user: Option<&'a str>,
}

/// The locations a route makes, as nginx's location arguments.
fn locations(route: &Route) -> Vec<String> {
    match route.path_type {
        PathType::Exact => vec![format!("= \"{}\"", route.path)],
        PathType::Prefix if route.path == "/" => vec!["/".to_string()],
        PathType::Prefix => vec![
            format!("= \"{}\"", route.path),
            format!("\"{}/\"", route.path),
        ],
    }
}

fn target(out: &mut String, indent: &str, t: &Target) {
    match t {
        Target::Proxy(addr) => {
            let _ = writeln!(out, "{indent}proxy_pass http://{addr};");
        }
        Target::Unavailable(why) => {
            let why: String = why.chars().filter(|c| !c.is_control()).collect();
            let _ = writeln!(out, "{indent}# {why}");
            let _ = writeln!(out, "{indent}return 503;");
        }
    }
}

/// nginx's `server_name` for an Ingress host.
fn server_name(host: &str) -> String {
    match host.strip_prefix("*.") {
        // One label, as in the API (nginx's own `*.` would match several).
        Some(domain) => format!("~^[^.]+\\.{}$", domain.replace('.', "\\.")),
        None => host.to_string(),
    }
}

/// One server block: its routes, then the fallback.
fn server(
    out: &mut String,
    listen: &str,
    name: &str,
    routes: &[&Route],
    fallback: &Option<Target>,
) {
    let _ = writeln!(out, "    server {{");
    let _ = writeln!(out, "        listen {listen};");
    let _ = writeln!(out, "        server_name {name};");
    let mut taken = BTreeSet::new();
    // Exact routes first: on the same path, Exact wins over Prefix whatever the age.
    let (exact, prefix): (Vec<&Route>, Vec<&Route>) = routes
        .iter()
        .copied()
        .partition(|r| r.path_type == PathType::Exact);
    for route in exact.into_iter().chain(prefix) {
        for loc in locations(route) {
            if !taken.insert(loc.clone()) {
                continue;
            }
            let _ = writeln!(out, "        location {loc} {{");
            let _ = writeln!(out, "            # {}", route.from);
            target(out, "            ", &route.target);
            let _ = writeln!(out, "        }}");
        }
    }
    if !taken.contains("/") {
        let _ = writeln!(out, "        location / {{");
        match fallback {
            Some(t) => target(out, "            ", t),
            None => {
                let _ = writeln!(out, "            return 404;");
            }
        }
        let _ = writeln!(out, "        }}");
    }
    let _ = writeln!(out, "    }}");
}

/// The whole nginx.conf for a plan.
pub fn render(plan: &Plan, layout: &Layout) -> String {
    let dir = layout.dir.display();
    let mut out = String::new();
    out.push_str(
        "# Written by tether-sandbox's ingress controller from the cluster's Ingresses.\n",
    );
    if let Some(user) = layout.user {
        let _ = writeln!(out, "user {user};");
    }
    let _ = write!(
        out,
        "daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr notice;
events {{
    worker_connections 1024;
}}
http {{
    access_log /dev/stdout;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server_names_hash_bucket_size 128;
    # The Host header as the client sent it (port included), else the server's name.
    map $http_host $forwarded_host {{
        \"\" $host;
        default $http_host;
    }}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        \"\" \"\";
    }}
    proxy_http_version 1.1;
    proxy_set_header Host $forwarded_host;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Host $forwarded_host;
    proxy_set_header X-Forwarded-Port $server_port;
    server {{
        listen {health};
        access_log off;
        location = /healthz {{
            return 200 \"ok\\n\";
        }}
        location / {{
            return 404;
        }}
    }}
",
        health = layout.health,
    );
    let any: Vec<&Route> = plan.any_host.iter().collect();
    server(
        &mut out,
        &format!("{} default_server", layout.listen),
        "_",
        &any,
        &plan.default_backend,
    );
    for (host, own) in &plan.hosts {
        let routes: Vec<&Route> = own.iter().collect();
        server(
            &mut out,
            &layout.listen.to_string(),
            &server_name(host),
            &routes,
            &plan.default_backend,
        );
    }
    out.push_str("}\n");
    out
}
