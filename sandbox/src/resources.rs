//! The table of resource types the API server serves: group, version, names, scope and the
//! subresources each one has. Discovery, routing, the store and admission all read this one
//! table, so adding a resource type is one entry here plus (if it has a typed shape) one arm in
//! `admission::typed`.

/// The Go type a resource's objects have, which decides how admission decodes, defaults and
/// validates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Namespace,
    Node,
    Pod,
    Service,
    Endpoints,
    EndpointSlice,
    Deployment,
    ReplicaSet,
    ServiceAccount,
    Secret,
    ConfigMap,
    Event,
    Role,
    RoleBinding,
    ClusterRole,
    ClusterRoleBinding,
    ServiceCidr,
    Lease,
    Ingress,
    IngressClass,
}

/// One served resource type.
#[derive(Debug)]
pub struct ResourceType {
    /// Index into [`RESOURCES`]; the store keys objects by it.
    pub id: usize,
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub has_status: bool,
    pub has_scale: bool,
    pub shape: Shape,
    /// Field selector labels besides `metadata.name` and `metadata.namespace`.
    pub fields: &'static [&'static str],
}

impl ResourceType {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The name errors use: `services`, `deployments.apps`.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The kind of the list type, e.g. `ServiceList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

/// Builds one table entry; `id` must equal the entry's index (checked by a unit test).
#[allow(clippy::too_many_arguments)]
const fn rt(
    id: usize,
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    shape: Shape,
) -> ResourceType {
    ResourceType {
        id,
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        categories: &[],
        has_status: false,
        has_scale: false,
        shape,
        fields: &[],
    }
}

const ALL: &[&str] = &["all"];

/// Every served resource type. Order matters only for discovery output.
pub static RESOURCES: [ResourceType; 20] = [
    ResourceType {
        has_status: true,
        fields: &["status.phase"],
        ..rt(
            0,
            "",
            "v1",
            "namespaces",
            "namespace",
            "Namespace",
            false,
            &["ns"],
            Shape::Namespace,
        )
    },
    ResourceType {
        has_status: true,
        fields: &["spec.unschedulable"],
        ..rt(
            1,
            "",
            "v1",
            "nodes",
            "node",
            "Node",
            false,
            &["no"],
            Shape::Node,
        )
    },
    ResourceType {
        has_status: true,
        categories: ALL,
        fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ..rt(2, "", "v1", "pods", "pod", "Pod", true, &["po"], Shape::Pod)
    },
    ResourceType {
        has_status: true,
        categories: ALL,
        fields: &["spec.clusterIP", "spec.type"],
        ..rt(
            3,
            "",
            "v1",
            "services",
            "service",
            "Service",
            true,
            &["svc"],
            Shape::Service,
        )
    },
    rt(
        4,
        "",
        "v1",
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        Shape::Endpoints,
    ),
    rt(
        5,
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
        &[],
        Shape::EndpointSlice,
    ),
    ResourceType {
        has_status: true,
        has_scale: true,
        categories: ALL,
        ..rt(
            6,
            "apps",
            "v1",
            "deployments",
            "deployment",
            "Deployment",
            true,
            &["deploy"],
            Shape::Deployment,
        )
    },
    ResourceType {
        has_status: true,
        has_scale: true,
        categories: ALL,
        fields: &["status.replicas"],
        ..rt(
            7,
            "apps",
            "v1",
            "replicasets",
            "replicaset",
            "ReplicaSet",
            true,
            &["rs"],
            Shape::ReplicaSet,
        )
    },
    rt(
        8,
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        Shape::ServiceAccount,
    ),
    ResourceType {
        fields: &["type"],
        ..rt(
            9,
            "",
            "v1",
            "secrets",
            "secret",
            "Secret",
            true,
            &[],
            Shape::Secret,
        )
    },
    rt(
        10,
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        Shape::ConfigMap,
    ),
    ResourceType {
        fields: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ..rt(
            11,
            "",
            "v1",
            "events",
            "event",
            "Event",
            true,
            &["ev"],
            Shape::Event,
        )
    },
    rt(
        12,
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "role",
        "Role",
        true,
        &[],
        Shape::Role,
    ),
    rt(
        13,
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &[],
        Shape::RoleBinding,
    ),
    rt(
        14,
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        &[],
        Shape::ClusterRole,
    ),
    rt(
        15,
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &[],
        Shape::ClusterRoleBinding,
    ),
    ResourceType {
        has_status: true,
        ..rt(
            16,
            "networking.k8s.io",
            "v1",
            "servicecidrs",
            "servicecidr",
            "ServiceCIDR",
            false,
            &[],
            Shape::ServiceCidr,
        )
    },
    rt(
        17,
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
        &[],
        Shape::Lease,
    ),
    ResourceType {
        has_status: true,
        ..rt(
            18,
            "networking.k8s.io",
            "v1",
            "ingresses",
            "ingress",
            "Ingress",
            true,
            &["ing"],
            Shape::Ingress,
        )
    },
    rt(
        19,
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "ingressclass",
        "IngressClass",
        false,
        &[],
        Shape::IngressClass,
    ),
];

/// The served resource types.
pub fn served() -> impl Iterator<Item = &'static ResourceType> {
    RESOURCES.iter()
}

/// Finds a resource type by group, version and plural name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    served().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource type by its shape.
pub fn by_shape(shape: Shape) -> &'static ResourceType {
    served()
        .find(|r| r.shape == shape)
        // Every shape has an entry in RESOURCES (checked by a unit test).
        .expect("every shape is served")
}

/// The group/versions served, core first, in discovery order.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in served() {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_positions() {
        for (i, r) in RESOURCES.iter().enumerate() {
            assert_eq!(r.id, i, "{}", r.plural);
        }
    }

    #[test]
    fn every_shape_is_served() {
        for shape in [
            Shape::Namespace,
            Shape::Node,
            Shape::Pod,
            Shape::Service,
            Shape::Endpoints,
            Shape::EndpointSlice,
            Shape::Deployment,
            Shape::ReplicaSet,
            Shape::ServiceAccount,
            Shape::Secret,
            Shape::ConfigMap,
            Shape::Event,
            Shape::Role,
            Shape::RoleBinding,
            Shape::ClusterRole,
            Shape::ClusterRoleBinding,
            Shape::ServiceCidr,
            Shape::Lease,
            Shape::Ingress,
            Shape::IngressClass,
        ] {
            assert_eq!(by_shape(shape).shape, shape);
        }
        assert_eq!(
            find("apps", "v1", "deployments").map(|r| r.kind),
            Some("Deployment")
        );
        assert!(find("", "v1", "").is_none());
    }
}
