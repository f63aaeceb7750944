//! The traffic manager's objects, as the shared install contract defines them.
//!
//! Every object carries `app.kubernetes.io/part-of: tether` (so uninstall only ever removes
//! tether's own objects) and `app.kubernetes.io/managed-by: tether`; the namespace carries the
//! latter only when tether created it, which is how uninstall knows whether to delete it.
//! The Deployment and its pod template also carry the version label and a digest of the
//! template, which is how a later install tells "already installed" from "needs a rollout".

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Namespace,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, SecretKeySelector, SecurityContext, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The name of the Deployment, ServiceAccount, ClusterRole and ClusterRoleBinding.
pub const NAME: &str = "tether-manager";
/// Where the manager goes unless `--manager-namespace` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "tether";
/// The Secret holding the session token, and its key.
pub const TOKEN_SECRET: &str = "tether-manager-token";
pub const TOKEN_KEY: &str = "token";
/// The manager's tunnel port (bound to the pod's loopback: reached only by port-forward).
pub const TUNNEL_PORT: u16 = 8022;
/// The manager's health port (readiness probe).
pub const HEALTH_PORT: u16 = 8081;
/// This build's version, which is the manager version it installs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The image repository of the agent; the tag is [`VERSION`].
pub const IMAGE_REPOSITORY: &str = "ghcr.io/tether-dev/tether-agent";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
pub const LABEL_VERSION: &str = "app.kubernetes.io/version";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Digest of the pod template tether last wrote (on the Deployment and its pods).
pub const ANNOTATION_TEMPLATE: &str = "tether.dev/template-digest";

/// The label selector of manager pods.
pub fn pod_selector() -> String {
    format!("{LABEL_NAME}={NAME}")
}

/// The default image for this build.
pub fn default_image() -> String {
    format!("{IMAGE_REPOSITORY}:{VERSION}")
}

fn labels(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    [(LABEL_PART_OF, "tether"), (LABEL_MANAGED_BY, "tether")]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: Some(labels(&[(LABEL_NAME, NAME)])),
        ..Default::default()
    }
}

/// The namespace, marked as created by tether.
pub fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(&[])),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn service_account(namespace: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(NAME, Some(namespace)),
        ..Default::default()
    }
}

/// Read-only access to what the manager routes, plus `create` on Services, which it uses only
/// with `dryRun=All` to learn the service CIDR from the API server's validation message.
pub fn cluster_role() -> ClusterRole {
    let rule = |group: &str, resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    };
    let read = ["get", "list", "watch"];
    ClusterRole {
        metadata: meta(NAME, None),
        rules: Some(vec![
            rule("", &["services", "pods", "nodes"], &read),
            rule("discovery.k8s.io", &["endpointslices"], &read),
            rule("networking.k8s.io", &["servicecidrs"], &read),
            rule("", &["services"], &["create"]),
        ]),
        ..Default::default()
    }
}

pub fn cluster_role_binding(namespace: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(NAME, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: NAME.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: NAME.into(),
            namespace: Some(namespace.into()),
            ..Default::default()
        }]),
    }
}

pub fn token_secret(namespace: &str, token: &str) -> Secret {
    Secret {
        metadata: meta(TOKEN_SECRET, Some(namespace)),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_string(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// The manager Deployment running `image`, labelled with `version`.
pub fn deployment(namespace: &str, image: &str, version: &str) -> Deployment {
    let selector = BTreeMap::from([(LABEL_NAME.to_string(), NAME.to_string())]);
    let mut template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(&[(LABEL_NAME, NAME), (LABEL_VERSION, version)])),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(NAME.into()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                run_as_group: Some(65532),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            containers: vec![manager_container(image)],
            ..Default::default()
        }),
    };
    let digest = template_digest(&template);
    if let Some(meta) = template.metadata.as_mut() {
        meta.annotations = Some(BTreeMap::from([(
            ANNOTATION_TEMPLATE.to_string(),
            digest.clone(),
        )]));
    }
    let mut metadata = meta(NAME, Some(namespace));
    metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(LABEL_VERSION.into(), version.into());
    metadata.annotations = Some(BTreeMap::from([(ANNOTATION_TEMPLATE.to_string(), digest)]));
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            template,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The manager's one container: tunnel on loopback only, health on the pod IP for the
/// kubelet, the token from the Secret, locked down.
fn manager_container(image: &str) -> Container {
    Container {
        name: "manager".into(),
        image: Some(image.into()),
        args: Some(
            [
                "manager",
                "--listen",
                &format!("127.0.0.1:{TUNNEL_PORT}"),
                "--health-listen",
                &format!("0.0.0.0:{HEALTH_PORT}"),
                "--discover",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect(),
        ),
        env: Some(vec![EnvVar {
            name: "TETHER_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: TOKEN_SECRET.into(),
                    key: TOKEN_KEY.into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![
            ContainerPort {
                name: Some("tunnel".into()),
                container_port: TUNNEL_PORT.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("health".into()),
                container_port: HEALTH_PORT.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".into()),
                port: IntOrString::Int(HEALTH_PORT.into()),
                ..Default::default()
            }),
            period_seconds: Some(2),
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(quantities("10m", "32Mi")),
            limits: Some(quantities("500m", "128Mi")),
            ..Default::default()
        }),
        security_context: Some(locked_down()),
        ..Default::default()
    }
}

/// CPU and memory quantities, for requests and limits.
pub fn quantities(cpu: &str, memory: &str) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".to_string(), Quantity(cpu.into())),
        ("memory".to_string(), Quantity(memory.into())),
    ])
}

/// How tether's containers run (the manager and the sidecar): no root, no privilege
/// escalation, no capabilities, a read-only root filesystem.
pub fn locked_down() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A digest of the pod template as tether writes it (FNV-1a over its JSON): equal digests
/// mean nothing to roll out. The server adds defaults to what it stores, so comparing the
/// stored template itself would always see a difference.
fn template_digest(template: &PodTemplateSpec) -> String {
    // Serializing a typed object to JSON cannot fail (no maps with non-string keys).
    let json = serde_json::to_vec(template).expect("a pod template serializes");
    let hash = json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The session token a manager's Secret holds, if it holds one.
pub fn token_of(secret: &Secret) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(TOKEN_KEY)
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// The template digest tether recorded on a Deployment or pod.
pub fn recorded_digest(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(ANNOTATION_TEMPLATE)
        .map(String::as_str)
}

/// The value of `label` on an object.
pub fn label<'a>(meta: &'a ObjectMeta, label: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(label).map(String::as_str)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn the_digest_follows_the_image_and_version() {
        let a = deployment("tether", "img:1", "0.1.0");
        let b = deployment("other-ns", "img:1", "0.1.0");
        let c = deployment("tether", "img:2", "0.1.0");
        let d = deployment("tether", "img:1", "0.2.0");
        let digest = |d: &Deployment| recorded_digest(&d.metadata).unwrap().to_string();
        assert_eq!(
            digest(&a),
            digest(&b),
            "the namespace is not in the template"
        );
        assert_ne!(digest(&a), digest(&c));
        assert_ne!(digest(&a), digest(&d));
    }

    #[test]
    fn the_manager_runs_locked_down() {
        let d = deployment("tether", "img:1", "0.1.0");
        let pod = d.spec.unwrap().template.spec.unwrap();
        let psc = pod.security_context.unwrap();
        assert_eq!(
            (psc.run_as_non_root, psc.run_as_user),
            (Some(true), Some(65532))
        );
        let sc = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    }
}
