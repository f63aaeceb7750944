//! Everything tether prints as a result, one variant per kind of result and one shape per
//! variant. `--output json` prints each as one object whose `event` field names the
//! variant; `--output yaml` prints the same fields as a YAML document. The shapes are
//! documented, with an example of each, in `docs/events.md`; the tests below and the
//! end-to-end scenarios check real output against that page.

use serde::Serialize;

use crate::commands::list::Listed;
use crate::ipc::{InterceptInfo, Status};
use crate::system::leftovers::Cleanup;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// `tether connect` is done: traffic flows.
    Connected(Box<Status>),
    /// `tether connect` found a session already running (exit code 3).
    AlreadyConnected(Box<Status>),
    /// `tether status` while a daemon runs.
    Status(Box<Status>),
    /// `tether status` or `tether quit` with no daemon running and nothing to clean up.
    NotConnected,
    /// `tether quit` stopped the daemon; `manager` is unknown while it was still connecting.
    Disconnected { pid: u32, manager: Option<String> },
    /// What a daemon that died without cleaning up had left was undone.
    CleanedUp(Cleanup),
    /// `tether uninstall` removed these objects (`kind/name`, or `kind/namespace/name`).
    Uninstalled {
        context: String,
        namespace: String,
        removed: Vec<String>,
    },
    /// `tether intercept` is done: every Ready pod sends new connections to `local`.
    Intercepted {
        intercept: Box<InterceptInfo>,
        /// The env files written.
        env_files: Vec<std::path::PathBuf>,
        warnings: Vec<String>,
    },
    /// `tether leave`: the pods serve the Service again.
    Left { intercept: Box<InterceptInfo> },
    /// `tether list`.
    List {
        namespace: String,
        workloads: Vec<Listed>,
        /// The namespace's Ingresses: their hosts and address.
        ingresses: Vec<crate::commands::list::ListedIngress>,
    },
    /// `tether config view`: the config file (null when there is none) and every setting.
    Config {
        file: Option<std::path::PathBuf>,
        settings: Vec<crate::config::file::Setting>,
    },
    /// `tether version`: this build's, and with a session the daemon's and the manager's.
    Version {
        client: String,
        daemon: Option<String>,
        manager: Option<String>,
        problems: Vec<String>,
    },
    /// `tether doctor`: the walk of each Service, up to its first failed step.
    Doctor(Box<crate::doctor::Diagnosis>),
    /// `tether rbac`: the Roles (and bindings) for a developer; `yaml` is what text output
    /// prints, for `kubectl apply -f -`.
    Rbac {
        namespace: String,
        manager_namespace: String,
        objects: Vec<crate::cluster::roles::RbacObject>,
        #[serde(skip)]
        yaml: String,
    },
    /// A command failed (printed on stderr).
    Error { error: String, exit_code: u8 },
}

#[cfg(test)]
mod tests {
    use tether_tests::events::{documented, same_shape};

    use super::*;

    fn status() -> Box<Status> {
        Box::new(crate::ipc::tests::example())
    }

    fn every_event() -> Vec<Event> {
        vec![
            Event::Connected(status()),
            Event::AlreadyConnected(status()),
            Event::Status(status()),
            Event::NotConnected,
            Event::Disconnected {
                pid: 4242,
                manager: Some("10.0.0.5:8022".into()),
            },
            Event::CleanedUp(Cleanup {
                pid: 4242,
                resolv_conf: "/etc/resolv.conf".into(),
                resolv_conf_restored: true,
            }),
            Event::Uninstalled {
                context: "tether-sandbox".into(),
                namespace: "tether".into(),
                removed: vec!["deployment/tether-manager".into()],
            },
            Event::Intercepted {
                intercept: Box::new(crate::ipc::tests::intercept_example()),
                env_files: vec!["web.env".into()],
                warnings: vec!["nothing listens on 127.0.0.1:8080 yet: intercepted connections are reset until something does".into()],
            },
            Event::Left {
                intercept: Box::new(crate::ipc::tests::intercept_example()),
            },
            Event::List {
                namespace: "demo".into(),
                workloads: vec![crate::commands::list::Listed {
                    name: "web".into(),
                    kind: "Deployment".into(),
                    services: vec![crate::commands::list::ListedService {
                        name: "web".into(),
                        ports: vec!["http (80) -> http".into()],
                    }],
                    agent: "active".into(),
                    intercepts: vec![crate::commands::list::ListedIntercept {
                        name: "web".into(),
                        port: 8080,
                        held_by: "dev@laptop".into(),
                        local: "127.0.0.1:8080".into(),
                        pods: vec!["web-5d8c7b9f4-abcde".into()],
                        route: "x-dev=alice".into(),
                        matched: 12,
                        dropped: 0,
                    }],
                    not_http: 0,
                }],
                ingresses: vec![crate::commands::list::ListedIngress {
                    name: "shop".into(),
                    hosts: vec!["shop.example.test".into()],
                    address: "198.51.100.128".into(),
                }],
            },
            Event::Config {
                file: Some("/home/dev/.config/tether/config.yaml".into()),
                settings: vec![crate::config::file::Setting {
                    key: "namespace".into(),
                    value: "demo".into(),
                    source: crate::config::file::Source::File,
                }],
            },
            Event::Version {
                client: "0.1.0".into(),
                daemon: Some("0.1.0".into()),
                manager: Some("0.1.0".into()),
                problems: vec!["the daemon runs tether 0.1.0 and this is tether 0.2.0: run `tether quit` and connect again to use this build".into()],
            },
            Event::Doctor(Box::new(crate::doctor::tests::example())),
            {
                let objects = crate::cluster::roles::objects("dev", "tether", None);
                let yaml = crate::cluster::roles::to_yaml(&objects).unwrap();
                Event::Rbac {
                    namespace: "dev".into(),
                    manager_namespace: "tether".into(),
                    objects,
                    yaml,
                }
            },
            Event::Error {
                error: "not connected".into(),
                exit_code: 1,
            },
        ]
    }

    #[test]
    fn every_event_has_the_documented_shape() {
        let documented = documented();
        let events = every_event();
        assert_eq!(
            documented.len(),
            events.len(),
            "one example per event in docs/events.md"
        );
        for event in events {
            let json = serde_json::to_value(&event).unwrap();
            let name = json["event"].as_str().unwrap().to_owned();
            let example = documented
                .get(&name)
                .unwrap_or_else(|| panic!("docs/events.md does not document {name}"));
            if let Err(difference) = same_shape(example, &json) {
                panic!("{name}: {difference}\ndocumented: {example}\nprinted: {json}");
            }
        }
    }

    #[test]
    fn yaml_carries_the_same_fields() {
        let yaml = serde_saphyr::to_string(&Event::Status(status())).unwrap();
        assert!(yaml.starts_with("event: status\n"), "{yaml}");
        assert!(yaml.contains("device_address: 198.18.0.1/30"), "{yaml}");
        assert!(yaml.contains("mode: resolv-conf"), "{yaml}");
    }
}
