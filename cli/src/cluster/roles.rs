//! The RBAC a developer needs to use tether, as typed objects (`tether rbac` prints them).
//!
//! Two parts, as a cluster admin grants them: a Role in the developer's own namespace with
//! the verbs `intercept`, `leave`, `run`, `list`, `doctor` and `uninstall --agent` use
//! there; and, once per developer, read access to the manager an admin installed (what
//! `connect` checks) and `pods/portforward` to reach it. Installing or upgrading the manager
//! needs far more (namespaces, ClusterRoles, Deployments) and stays with the admin.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use super::manifests::{self, LABEL_PART_OF};

/// Who the Roles are bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    User(String),
    Group(String),
    /// A ServiceAccount: its namespace and name.
    ServiceAccount(String, String),
}

impl Who {
    /// `NAMESPACE:NAME` or `NAMESPACE/NAME`, as `kubectl create rolebinding --serviceaccount`.
    pub fn service_account(s: &str) -> Option<Who> {
        let (ns, name) = s.split_once(':').or_else(|| s.split_once('/'))?;
        (!ns.is_empty() && !name.is_empty()).then(|| Who::ServiceAccount(ns.into(), name.into()))
    }

    fn subject(&self) -> Subject {
        let (kind, name, namespace, api_group) = match self {
            Who::User(n) => (
                "User",
                n.clone(),
                None,
                Some("rbac.authorization.k8s.io".into()),
            ),
            Who::Group(n) => (
                "Group",
                n.clone(),
                None,
                Some("rbac.authorization.k8s.io".into()),
            ),
            Who::ServiceAccount(ns, n) => ("ServiceAccount", n.clone(), Some(ns.clone()), None),
        };
        Subject {
            kind: kind.into(),
            name,
            namespace,
            api_group,
        }
    }

    /// A name part for the bindings, one per subject.
    fn slug(&self) -> String {
        let raw = match self {
            Who::User(n) => format!("user-{n}"),
            Who::Group(n) => format!("group-{n}"),
            Who::ServiceAccount(ns, n) => format!("sa-{ns}-{n}"),
        };
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect()
    }
}

/// One of the objects, for printing in order.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RbacObject {
    Role(Role),
    RoleBinding(RoleBinding),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
}

pub const DEVELOPER_ROLE: &str = "tether-developer";

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |v: &[&str]| Some(v.iter().map(|s| (*s).to_owned()).collect());
    PolicyRule {
        api_groups: strings(groups),
        resources: strings(resources),
        verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

fn named(mut r: PolicyRule, names: &[&str]) -> PolicyRule {
    r.resource_names = Some(names.iter().map(|s| (*s).to_owned()).collect());
    r
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_owned),
        labels: Some(BTreeMap::from([(
            LABEL_PART_OF.to_owned(),
            "tether".to_owned(),
        )])),
        ..ObjectMeta::default()
    }
}

/// The developer's rights in `namespace`.
pub fn developer_role(namespace: &str) -> Role {
    Role {
        metadata: meta(DEVELOPER_ROLE, Some(namespace)),
        rules: Some(vec![
            // The sidecar goes in (and out) with a patch of the Deployment; rollouts are
            // followed through its ReplicaSets.
            rule(
                &["apps"],
                &["deployments", "replicasets"],
                &["get", "list", "watch", "patch", "update"],
            ),
            // A numeric targetPort is moved to the sidecar by patching the Service.
            rule(
                &[""],
                &["services"],
                &["get", "list", "watch", "patch", "update"],
            ),
            rule(
                &[""],
                &["pods", "events", "configmaps"],
                &["get", "list", "watch"],
            ),
            // The container's environment (--env-file) reads the Secrets it refers to.
            rule(&[""], &["secrets"], &["get"]),
            // Each intercepted pod's sidecar is reached through a port-forward.
            rule(&[""], &["pods/portforward"], &["get", "create"]),
            rule(&[""], &["pods/log"], &["get"]),
            // The intercept waits on the Service's endpoints; doctor reads them.
            rule(
                &["discovery.k8s.io"],
                &["endpointslices"],
                &["get", "list", "watch"],
            ),
        ]),
    }
}

fn user_name(manager_namespace: &str) -> String {
    match manager_namespace {
        manifests::DEFAULT_NAMESPACE => "tether-user".to_owned(),
        other => format!("tether-user-{other}"),
    }
}

/// What connecting to the manager in `manager_namespace` needs: cluster-scoped reads of
/// the manager's namespace and ClusterRole (the install check), and in its namespace the
/// token, the pods, and the port-forward.
pub fn user_roles(manager_namespace: &str) -> (ClusterRole, Role) {
    let name = user_name(manager_namespace);
    let cluster = ClusterRole {
        metadata: meta(&name, None),
        rules: Some(vec![
            named(rule(&[""], &["namespaces"], &["get"]), &[manager_namespace]),
            named(
                rule(
                    &["rbac.authorization.k8s.io"],
                    &["clusterroles", "clusterrolebindings"],
                    &["get"],
                ),
                &[manifests::NAME],
            ),
        ]),
        ..ClusterRole::default()
    };
    let role = Role {
        metadata: meta(&name, Some(manager_namespace)),
        rules: Some(vec![
            named(
                rule(&[""], &["serviceaccounts"], &["get"]),
                &[manifests::NAME],
            ),
            named(
                rule(&[""], &["secrets"], &["get"]),
                &[manifests::TOKEN_SECRET],
            ),
            rule(
                &["apps"],
                &["deployments", "replicasets"],
                &["get", "list", "watch"],
            ),
            rule(&[""], &["pods", "events"], &["get", "list", "watch"]),
            rule(&[""], &["pods/portforward"], &["get", "create"]),
        ]),
    };
    (cluster, role)
}

/// Every object, bound to `who` when given, in the order to apply them.
pub fn objects(namespace: &str, manager_namespace: &str, who: Option<&Who>) -> Vec<RbacObject> {
    let (cluster_role, manager_role) = user_roles(manager_namespace);
    let user = user_name(manager_namespace);
    let mut out = vec![
        RbacObject::Role(developer_role(namespace)),
        RbacObject::ClusterRole(cluster_role),
        RbacObject::Role(manager_role),
    ];
    if let Some(who) = who {
        let role_ref = |kind: &str, name: &str| RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: kind.into(),
            name: name.into(),
        };
        let binding = |name: &str, ns: &str, role: &str| RoleBinding {
            metadata: meta(&format!("{name}-{}", who.slug()), Some(ns)),
            role_ref: role_ref("Role", role),
            subjects: Some(vec![who.subject()]),
        };
        out.push(RbacObject::RoleBinding(binding(
            DEVELOPER_ROLE,
            namespace,
            DEVELOPER_ROLE,
        )));
        out.push(RbacObject::ClusterRoleBinding(ClusterRoleBinding {
            metadata: meta(&format!("{user}-{}", who.slug()), None),
            role_ref: role_ref("ClusterRole", &user),
            subjects: Some(vec![who.subject()]),
        }));
        out.push(RbacObject::RoleBinding(binding(
            &user,
            manager_namespace,
            &user,
        )));
    }
    out
}

/// The objects as YAML documents (k8s-openapi writes their apiVersion and kind), for
/// `kubectl apply -f -`.
pub fn to_yaml(objects: &[RbacObject]) -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string_multiple(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_accounts_are_namespace_and_name() {
        assert_eq!(
            Who::service_account("dev:alice"),
            Some(Who::ServiceAccount("dev".into(), "alice".into()))
        );
        assert_eq!(
            Who::service_account("dev/alice"),
            Some(Who::ServiceAccount("dev".into(), "alice".into()))
        );
        assert_eq!(Who::service_account("alice"), None);
        assert_eq!(Who::service_account("dev:"), None);
    }

    #[test]
    fn bindings_come_only_with_a_subject_and_are_named_for_it() {
        assert_eq!(objects("dev", "tether", None).len(), 3);
        let all = objects(
            "dev",
            "tether",
            Some(&Who::User("alice@example.com".into())),
        );
        assert_eq!(all.len(), 6);
        let yaml = to_yaml(&all).unwrap();
        assert!(
            yaml.contains("name: tether-developer-user-alice-example.com"),
            "{yaml}"
        );
        assert!(yaml.contains("kind: ClusterRoleBinding"), "{yaml}");
        assert_eq!(
            yaml.matches("\n---\n").count() + usize::from(yaml.starts_with("---")),
            5,
            "{yaml}"
        );
        // Every document is an object kubectl can apply.
        for doc in yaml.split("---\n") {
            let v: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
            assert_eq!(v["apiVersion"], "rbac.authorization.k8s.io/v1", "{doc}");
            assert!(v["kind"].is_string(), "{doc}");
        }
    }

    #[test]
    fn another_manager_namespace_gets_roles_of_its_own() {
        let (cluster, role) = user_roles("tools");
        assert_eq!(cluster.metadata.name.as_deref(), Some("tether-user-tools"));
        assert_eq!(role.metadata.namespace.as_deref(), Some("tools"));
    }
}
