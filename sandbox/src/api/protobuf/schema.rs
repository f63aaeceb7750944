//! The protobuf messages tether-sandbox decodes: field numbers and JSON names from the
//! Kubernetes API's `generated.proto` files, for the kinds kubectl's typed clients create.

/// How a field is decoded.
#[derive(Debug, Clone, Copy)]
pub enum F {
    Str,
    Int,
    /// A pointer: zero is a value.
    IntOpt,
    Bool,
    BoolOpt,
    StrList,
    Msg(&'static Msg),
    MsgList(&'static Msg),
    /// An embedded message whose fields JSON has in the parent (Go's `json:",inline"`).
    Inline(&'static Msg),
    StrMap,
    BytesMap,
    QuantityMap,
    IntOrString,
    Time,
    /// Accepted and left out (status, managedFields: the server sets them).
    Skip,
}

#[derive(Debug)]
pub struct Msg {
    pub name: &'static str,
    pub fields: &'static [(u64, &'static str, F)],
}

pub static OWNER_REF: Msg = Msg {
    name: "OwnerReference",
    fields: &[
        (5, "apiVersion", F::Str),
        (1, "kind", F::Str),
        (3, "name", F::Str),
        (4, "uid", F::Str),
        (6, "controller", F::BoolOpt),
        (7, "blockOwnerDeletion", F::BoolOpt),
    ],
};
pub static OBJECT_META: Msg = Msg {
    name: "ObjectMeta",
    fields: &[
        (1, "name", F::Str),
        (2, "generateName", F::Str),
        (3, "namespace", F::Str),
        (4, "selfLink", F::Str),
        (5, "uid", F::Str),
        (6, "resourceVersion", F::Str),
        (7, "generation", F::Int),
        (8, "creationTimestamp", F::Time),
        (9, "deletionTimestamp", F::Time),
        (10, "deletionGracePeriodSeconds", F::IntOpt),
        (11, "labels", F::StrMap),
        (12, "annotations", F::StrMap),
        (13, "ownerReferences", F::MsgList(&OWNER_REF)),
        (14, "finalizers", F::StrList),
        (17, "managedFields", F::Skip),
    ],
};
pub static SELECTOR_REQ: Msg = Msg {
    name: "LabelSelectorRequirement",
    fields: &[
        (1, "key", F::Str),
        (2, "operator", F::Str),
        (3, "values", F::StrList),
    ],
};
pub static LABEL_SELECTOR: Msg = Msg {
    name: "LabelSelector",
    fields: &[
        (1, "matchLabels", F::StrMap),
        (2, "matchExpressions", F::MsgList(&SELECTOR_REQ)),
    ],
};
pub static LOCAL_REF: Msg = Msg {
    name: "LocalObjectReference",
    fields: &[(1, "name", F::Str)],
};
pub static OBJECT_REF: Msg = Msg {
    name: "ObjectReference",
    fields: &[
        (1, "kind", F::Str),
        (2, "namespace", F::Str),
        (3, "name", F::Str),
        (4, "uid", F::Str),
        (5, "apiVersion", F::Str),
        (6, "resourceVersion", F::Str),
        (7, "fieldPath", F::Str),
    ],
};

pub static SERVICE_PORT: Msg = Msg {
    name: "ServicePort",
    fields: &[
        (1, "name", F::Str),
        (2, "protocol", F::Str),
        (6, "appProtocol", F::Str),
        (3, "port", F::Int),
        (4, "targetPort", F::IntOrString),
        (5, "nodePort", F::Int),
    ],
};
pub static SERVICE_SPEC: Msg = Msg {
    name: "ServiceSpec",
    fields: &[
        (1, "ports", F::MsgList(&SERVICE_PORT)),
        (2, "selector", F::StrMap),
        (3, "clusterIP", F::Str),
        (18, "clusterIPs", F::StrList),
        (4, "type", F::Str),
        (5, "externalIPs", F::StrList),
        (7, "sessionAffinity", F::Str),
        (8, "loadBalancerIP", F::Str),
        (9, "loadBalancerSourceRanges", F::StrList),
        (10, "externalName", F::Str),
        (11, "externalTrafficPolicy", F::Str),
        (12, "healthCheckNodePort", F::Int),
        (13, "publishNotReadyAddresses", F::Bool),
        (19, "ipFamilies", F::StrList),
        (17, "ipFamilyPolicy", F::Str),
        (20, "allocateLoadBalancerNodePorts", F::BoolOpt),
        (21, "loadBalancerClass", F::Str),
        (22, "internalTrafficPolicy", F::Str),
        (23, "trafficDistribution", F::Str),
    ],
};
pub static SERVICE: Msg = Msg {
    name: "Service",
    fields: &[
        (1, "metadata", F::Msg(&OBJECT_META)),
        (2, "spec", F::Msg(&SERVICE_SPEC)),
        (3, "status", F::Skip),
    ],
};
pub static NAMESPACE_SPEC: Msg = Msg {
    name: "NamespaceSpec",
    fields: &[(1, "finalizers", F::StrList)],
};
pub static NAMESPACE: Msg = Msg {
    name: "Namespace",
    fields: &[
        (1, "metadata", F::Msg(&OBJECT_META)),
        (2, "spec", F::Msg(&NAMESPACE_SPEC)),
        (3, "status", F::Skip),
    ],
};
pub static CONFIG_MAP: Msg = Msg {
    name: "ConfigMap",
    fields: &[
        (1, "metadata", F::Msg(&OBJECT_META)),
        (4, "immutable", F::BoolOpt),
        (2, "data", F::StrMap),
        (3, "binaryData", F::BytesMap),
    ],
};
pub static SECRET: Msg = Msg {
    name: "Secret",
    fields: &[
        (1, "metadata", F::Msg(&OBJECT_META)),
        (5, "immutable", F::BoolOpt),
        (2, "data", F::BytesMap),
        (4, "stringData", F::StrMap),
        (3, "type", F::Str),
    ],
};
pub static SERVICE_ACCOUNT: Msg = Msg {
    name: "ServiceAccount",
    fields: &[
        (1, "metadata", F::Msg(&OBJECT_META)),
        (2, "secrets", F::MsgList(&OBJECT_REF)),
        (3, "imagePullSecrets", F::MsgList(&LOCAL_REF)),
        (4, "automountServiceAccountToken", F::BoolOpt),
    ],
};

pub static CONTAINER_PORT: Msg = Msg {
    name: "ContainerPort",
    fields: &[
        (1, "name", F::Str),
        (2, "hostPort", F::Int),
        (3, "containerPort", F::Int),
        (4, "protocol", F::Str),
        (5, "hostIP", F::Str),
    ],
};
pub static ENV_VAR: Msg = Msg {
    name: "EnvVar",
    fields: &[(1, "name", F::Str), (2, "value", F::Str)],
};
pub static RESOURCES: Msg = Msg {
    name: "ResourceRequirements",
    fields: &[
        (1, "limits", F::QuantityMap),
        (2, "requests", F::QuantityMap),
    ],
};
pub static CONTAINER: Msg = Msg {
    name: "Container",
    fields: &[
        (1, "name", F::Str),
        (2, "image", F::Str),
        (3, "command", F::StrList),
        (4, "args", F::StrList),
        (5, "workingDir", F::Str),
        (6, "ports", F::MsgList(&CONTAINER_PORT)),
        (7, "env", F::MsgList(&ENV_VAR)),
        (8, "resources", F::Msg(&RESOURCES)),
        (13, "terminationMessagePath", F::Str),
        (20, "terminationMessagePolicy", F::Str),
        (14, "imagePullPolicy", F::Str),
        (16, "stdin", F::Bool),
        (17, "stdinOnce", F::Bool),
        (18, "tty", F::Bool),
    ],
};
pub static POD_SPEC: Msg = Msg {
    name: "PodSpec",
    fields: &[
        (20, "initContainers", F::MsgList(&CONTAINER)),
        (2, "containers", F::MsgList(&CONTAINER)),
        (3, "restartPolicy", F::Str),
        (4, "terminationGracePeriodSeconds", F::IntOpt),
        (5, "activeDeadlineSeconds", F::IntOpt),
        (6, "dnsPolicy", F::Str),
        (7, "nodeSelector", F::StrMap),
        (8, "serviceAccountName", F::Str),
        (9, "serviceAccount", F::Str),
        (21, "automountServiceAccountToken", F::BoolOpt),
        (10, "nodeName", F::Str),
        (11, "hostNetwork", F::Bool),
        (12, "hostPID", F::Bool),
        (13, "hostIPC", F::Bool),
        (27, "shareProcessNamespace", F::BoolOpt),
        (29, "runtimeClassName", F::Str),
        (35, "setHostnameAsFQDN", F::BoolOpt),
        (37, "hostUsers", F::BoolOpt),
        (15, "imagePullSecrets", F::MsgList(&LOCAL_REF)),
        (16, "hostname", F::Str),
        (17, "subdomain", F::Str),
        (19, "schedulerName", F::Str),
        (24, "priorityClassName", F::Str),
        (25, "priority", F::IntOpt),
        (30, "enableServiceLinks", F::BoolOpt),
        (31, "preemptionPolicy", F::Str),
    ],
};
pub static POD_TEMPLATE: Msg = Msg {
    name: "PodTemplateSpec",
    fields: &[
        (1, "metadata", F::Msg(&OBJECT_META)),
        (2, "spec", F::Msg(&POD_SPEC)),
    ],
};
pub static ROLLING_UPDATE: Msg = Msg {
    name: "RollingUpdateDeployment",
    fields: &[
        (1, "maxUnavailable", F::IntOrString),
        (2, "maxSurge", F::IntOrString),
    ],
};
pub static STRATEGY: Msg = Msg {
    name: "DeploymentStrategy",
    fields: &[
        (1, "type", F::Str),
        (2, "rollingUpdate", F::Msg(&ROLLING_UPDATE)),
    ],
};
pub static DEPLOYMENT_SPEC: Msg = Msg {
    name: "DeploymentSpec",
    fields: &[
        (1, "replicas", F::IntOpt),
        (2, "selector", F::Msg(&LABEL_SELECTOR)),
        (3, "template", F::Msg(&POD_TEMPLATE)),
        (4, "strategy", F::Msg(&STRATEGY)),
        (5, "minReadySeconds", F::Int),
        (6, "revisionHistoryLimit", F::IntOpt),
        (7, "paused", F::Bool),
        (9, "progressDeadlineSeconds", F::IntOpt),
    ],
};
pub static DEPLOYMENT: Msg = Msg {
    name: "Deployment",
    fields: &[
        (1, "metadata", F::Msg(&OBJECT_META)),
        (2, "spec", F::Msg(&DEPLOYMENT_SPEC)),
        (3, "status", F::Skip),
    ],
};

pub static BOUND_OBJECT_REF: Msg = Msg {
    name: "BoundObjectReference",
    fields: &[
        (1, "kind", F::Str),
        (2, "apiVersion", F::Str),
        (3, "name", F::Str),
        (4, "uid", F::Str),
    ],
};
pub static TOKEN_REQUEST_SPEC: Msg = Msg {
    name: "TokenRequestSpec",
    fields: &[
        (1, "audiences", F::StrList),
        (4, "expirationSeconds", F::IntOpt),
        (3, "boundObjectRef", F::Msg(&BOUND_OBJECT_REF)),
    ],
};
/// `kubectl create token`'s body (the `serviceaccounts/token` subresource).
pub static TOKEN_REQUEST: Msg = Msg {
    name: "TokenRequest",
    fields: &[
        (1, "metadata", F::Msg(&OBJECT_META)),
        (2, "spec", F::Msg(&TOKEN_REQUEST_SPEC)),
        (3, "status", F::Skip),
    ],
};
pub static TYPED_LOCAL_REF: Msg = Msg {
    name: "TypedLocalObjectReference",
    fields: &[
        (1, "apiGroup", F::Str),
        (2, "kind", F::Str),
        (3, "name", F::Str),
    ],
};
pub static SERVICE_BACKEND_PORT: Msg = Msg {
    name: "ServiceBackendPort",
    fields: &[(1, "name", F::Str), (2, "number", F::Int)],
};
pub static INGRESS_SERVICE_BACKEND: Msg = Msg {
    name: "IngressServiceBackend",
    fields: &[
        (1, "name", F::Str),
        (2, "port", F::Msg(&SERVICE_BACKEND_PORT)),
    ],
};
pub static INGRESS_BACKEND: Msg = Msg {
    name: "IngressBackend",
    fields: &[
        (4, "service", F::Msg(&INGRESS_SERVICE_BACKEND)),
        (3, "resource", F::Msg(&TYPED_LOCAL_REF)),
    ],
};
pub static HTTP_INGRESS_PATH: Msg = Msg {
    name: "HTTPIngressPath",
    fields: &[
        (1, "path", F::Str),
        (3, "pathType", F::Str),
        (2, "backend", F::Msg(&INGRESS_BACKEND)),
    ],
};
pub static HTTP_INGRESS_RULE_VALUE: Msg = Msg {
    name: "HTTPIngressRuleValue",
    fields: &[(1, "paths", F::MsgList(&HTTP_INGRESS_PATH))],
};
pub static INGRESS_RULE_VALUE: Msg = Msg {
    name: "IngressRuleValue",
    fields: &[(1, "http", F::Msg(&HTTP_INGRESS_RULE_VALUE))],
};
pub static INGRESS_RULE: Msg = Msg {
    name: "IngressRule",
    fields: &[
        (1, "host", F::Str),
        (2, "ingressRuleValue", F::Inline(&INGRESS_RULE_VALUE)),
    ],
};
pub static INGRESS_TLS: Msg = Msg {
    name: "IngressTLS",
    fields: &[(1, "hosts", F::StrList), (2, "secretName", F::Str)],
};
pub static INGRESS_SPEC: Msg = Msg {
    name: "IngressSpec",
    fields: &[
        (4, "ingressClassName", F::Str),
        (1, "defaultBackend", F::Msg(&INGRESS_BACKEND)),
        (2, "tls", F::MsgList(&INGRESS_TLS)),
        (3, "rules", F::MsgList(&INGRESS_RULE)),
    ],
};
pub static INGRESS: Msg = Msg {
    name: "Ingress",
    fields: &[
        (1, "metadata", F::Msg(&OBJECT_META)),
        (2, "spec", F::Msg(&INGRESS_SPEC)),
        (3, "status", F::Skip),
    ],
};
