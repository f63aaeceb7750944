use std::net::SocketAddrV4;
use std::process::Command;

use serde_json::json;

use super::super::render::{Layout, render};
use super::*;

fn ingress(namespace: &str, name: &str, created: &str, spec: serde_json::Value) -> Ingress {
    serde_json::from_value(json!({
        "metadata": {"namespace": namespace, "name": name, "creationTimestamp": created},
        "spec": spec,
    }))
    .unwrap()
}

fn service(namespace: &str, name: &str, ip: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"clusterIP": ip, "ports": [
            {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
            {"name": "admin", "port": 9000, "protocol": "TCP"},
        ]},
    }))
    .unwrap()
}

fn backend(name: &str, port: serde_json::Value) -> serde_json::Value {
    json!({"service": {"name": name, "port": port}})
}

fn path(p: &str, t: &str, name: &str) -> serde_json::Value {
    json!({"path": p, "pathType": t, "backend": backend(name, json!({"number": 80}))})
}

fn proxy(ip: &str, port: u16) -> Target {
    Target::Proxy(SocketAddrV4::new(ip.parse().unwrap(), port))
}

fn services() -> Vec<Service> {
    vec![
        service("demo", "web", "10.96.0.20"),
        service("demo", "api", "10.96.0.30"),
        service("other", "web", "10.96.0.40"),
    ]
}

#[test]
fn ingresses_of_other_classes_are_not_served() {
    let with = |class: serde_json::Value, annotation: Option<&str>| {
        let mut i = ingress(
            "demo",
            "i",
            "2024-01-01T00:00:00Z",
            json!({"ingressClassName": class}),
        );
        if let Some(a) = annotation {
            i.metadata.annotations = Some([(CLASS_ANNOTATION.into(), a.into())].into());
        }
        is_ours(&i, "nginx")
    };
    assert!(with(json!("nginx"), None));
    assert!(
        with(json!(null), None),
        "no class: the default controller's"
    );
    assert!(with(json!(null), Some("nginx")));
    assert!(!with(json!(null), Some("traefik")));
    assert!(!with(json!("traefik"), Some("nginx")), "the field wins");
}

#[test]
fn backends_resolve_to_cluster_ips_by_port_number_or_name() {
    let spec = json!({"rules": [{"host": "shop.example.test", "http": {"paths": [
        {"path": "/a", "pathType": "Prefix", "backend": backend("web", json!({"name": "admin"}))},
        {"path": "/b", "pathType": "Prefix", "backend": backend("web", json!({"number": 80}))},
        {"path": "/c", "pathType": "Prefix", "backend": backend("web", json!({"number": 81}))},
        {"path": "/d", "pathType": "Prefix", "backend": backend("gone", json!({"number": 80}))},
    ]}}]});
    let ings = [ingress("demo", "shop", "2024-01-01T00:00:00Z", spec)];
    let svcs = services();
    let p = plan(ings.iter(), svcs.iter(), "nginx");
    let targets: Vec<&Target> = p.hosts["shop.example.test"]
        .iter()
        .map(|r| &r.target)
        .collect();
    assert_eq!(targets[0], &proxy("10.96.0.20", 9000));
    assert_eq!(
        targets[1],
        &proxy("10.96.0.20", 80),
        "the Service's port, not its targetPort"
    );
    assert!(matches!(targets[2], Target::Unavailable(why) if why.contains("81")));
    assert!(matches!(targets[3], Target::Unavailable(why) if why.contains("demo/gone")));
    assert_eq!(p.served, [("demo".to_string(), "shop".to_string())]);
}

#[test]
fn older_ingresses_win_and_the_oldest_default_backend_is_the_default() {
    let newer = ingress(
        "other",
        "b",
        "2024-02-01T00:00:00Z",
        json!({"defaultBackend": backend("web", json!({"number": 80})),
            "rules": [{"host": "shop.example.test", "http": {"paths": [path("/", "Prefix", "web")]}}]}),
    );
    let older = ingress(
        "demo",
        "a",
        "2024-01-01T00:00:00Z",
        json!({"defaultBackend": backend("api", json!({"number": 80})),
            "rules": [{"host": "shop.example.test", "http": {"paths": [path("/", "Prefix", "web")]}}]}),
    );
    let ings = [newer, older];
    let svcs = services();
    let p = plan(ings.iter(), svcs.iter(), "nginx");
    assert_eq!(p.default_backend, Some(proxy("10.96.0.30", 80)));
    let routes = &p.hosts["shop.example.test"];
    assert_eq!(routes[0].from, "demo/a");
    let conf = render_for_test(&p);
    let shop = server_block(&conf, "shop.example.test");
    assert_eq!(shop.matches("location / {").count(), 1, "{shop}");
    assert!(
        shop.contains("# demo/a\n            proxy_pass http://10.96.0.20:80;"),
        "{shop}"
    );
}

fn render_for_test(p: &Plan) -> String {
    render(
        p,
        &Layout {
            dir: std::path::Path::new("/tmp/ingress-test"),
            listen: 80,
            health: 10254,
            user: None,
        },
    )
}

/// The text of the `server` block whose `server_name` is `name`.
fn server_block(conf: &str, name: &str) -> String {
    let start = conf
        .find(&format!("server_name {name};"))
        .unwrap_or_else(|| panic!("no server {name} in\n{conf}"));
    let end = conf[start..]
        .find("\n    }\n")
        .map_or(conf.len(), |e| start + e);
    conf[start..end].to_string()
}

#[test]
fn prefix_paths_match_whole_elements_and_exact_wins_a_tie() {
    let spec = json!({"rules": [{"host": "shop.example.test", "http": {"paths": [
        path("/foo/", "Prefix", "web"),
        path("/foo", "Exact", "api"),
        path("/bar", "ImplementationSpecific", "api"),
        path("/baz/", "Exact", "web"),
    ]}}]});
    let ings = [ingress("demo", "shop", "2024-01-01T00:00:00Z", spec)];
    let svcs = services();
    let conf = render_for_test(&plan(ings.iter(), svcs.iter(), "nginx"));
    let shop = server_block(&conf, "shop.example.test");
    // Exact /foo took `= /foo` although listed after the Prefix; the Prefix keeps `/foo/`.
    let exact_foo = shop.find("location = \"/foo\" {").unwrap();
    assert!(shop[exact_foo..].starts_with(
        "location = \"/foo\" {\n            # demo/shop\n            proxy_pass http://10.96.0.30:80;"
    ));
    assert_eq!(shop.matches("location = \"/foo\"").count(), 1);
    assert!(shop.contains("location \"/foo/\" {"), "{shop}");
    // ImplementationSpecific is Prefix; a trailing slash of an Exact path is kept.
    assert!(shop.contains("location = \"/bar\" {") && shop.contains("location \"/bar/\" {"));
    assert!(shop.contains("location = \"/baz/\" {") && !shop.contains("location \"/baz/\" {"));
    // Nothing makes `location /foo` (which would match /foobar); unmatched paths get 404.
    assert!(!shop.contains("location \"/foo\" {"));
    assert!(
        shop.contains("location / {\n            return 404;"),
        "{shop}"
    );
}

#[test]
fn hosts_wildcards_and_rules_without_a_host() {
    let spec = json!({"rules": [
        {"host": "*.example.test", "http": {"paths": [path("/", "Prefix", "web")]}},
        {"http": {"paths": [path("/any", "Exact", "api")]}},
    ], "defaultBackend": backend("web", json!({"name": "http"}))});
    let ings = [ingress("demo", "wild", "2024-01-01T00:00:00Z", spec)];
    let svcs = services();
    let p = plan(ings.iter(), svcs.iter(), "nginx");
    let conf = render_for_test(&p);
    // One label only, as the API's wildcard (nginx's `*.` would match several).
    let wild = server_block(&conf, "~^[^.]+\\.example\\.test$");
    assert!(
        wild.contains("location / {\n            # demo/wild"),
        "{wild}"
    );
    let default = server_block(&conf, "_");
    assert!(default.contains("location = \"/any\""), "{default}");
    assert!(
        default.contains("location / {\n            proxy_pass http://10.96.0.20:80;"),
        "unmatched requests go to the default backend: {default}"
    );
    assert!(
        !wild.contains("/any"),
        "host-less rules stay in the default server"
    );
}

#[test]
fn unsafe_paths_are_left_out_not_written() {
    let spec = json!({"rules": [{"http": {"paths": [
        path("/a;b", "Prefix", "web"),
        path("/ok", "Prefix", "web"),
    ]}}]});
    let ings = [ingress("demo", "x", "2024-01-01T00:00:00Z", spec)];
    let svcs = services();
    let p = plan(ings.iter(), svcs.iter(), "nginx");
    assert_eq!(p.any_host.len(), 1);
    assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
}

/// The rendered configuration is one nginx accepts (when nginx is installed).
#[test]
fn nginx_accepts_the_rendered_configuration() {
    if Command::new("nginx").arg("-v").output().is_err() {
        eprintln!("nginx is not installed; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = json!({"defaultBackend": backend("gone", json!({"number": 80})), "rules": [
        {"host": "*.example.test", "http": {"paths": [path("/", "Prefix", "web")]}},
        {"host": "shop.example.test", "http": {"paths": [
            path("/foo", "Prefix", "web"), path("/foo", "Exact", "api"), path("/x/y", "Exact", "web")]}},
        {"http": {"paths": [path("/", "Prefix", "api")]}},
    ]});
    let ings = [ingress("demo", "all", "2024-01-01T00:00:00Z", spec)];
    let svcs = services();
    let conf = render(
        &plan(ings.iter(), svcs.iter(), "nginx"),
        &Layout {
            dir: dir.path(),
            listen: 18080,
            health: 18081,
            user: None,
        },
    );
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, &conf).unwrap();
    let out = Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&path)
        .args(["-e", "stderr"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{conf}",
        String::from_utf8_lossy(&out.stderr)
    );
}
