//! Asking the API server, before changing anything, whether the user may do what a command
//! needs (SelfSubjectAccessReview, what `kubectl auth can-i` asks), so that a missing grant
//! is one error naming every missing permission instead of a failure half-way.
//!
//! An API server that does not serve the review (it is optional in conformance tests' eyes,
//! and some proxies block it) is not an error: the command then finds out by trying.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;
use thiserror::Error;

use super::client::Cluster;

/// One permission: `verb` on `resource` (with its API group and subresource) in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    pub name: Option<String>,
}

impl Permission {
    pub fn new(verb: &'static str, group: &'static str, resource: &'static str) -> Self {
        Permission {
            verb,
            group,
            resource,
            subresource: None,
            name: None,
        }
    }

    pub fn sub(mut self, subresource: &'static str) -> Self {
        self.subresource = Some(subresource);
        self
    }

    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if let Some(s) = self.subresource {
            write!(f, "/{s}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AccessError {
    #[error("your credentials may not {} in namespace {namespace}. Ask a cluster admin for a Role granting it (`tether rbac -n {namespace}` prints the one tether needs; `kubectl auth can-i --list -n {namespace}` shows what you have); nothing was changed.", join(.missing))]
    Denied {
        namespace: String,
        missing: Vec<String>,
    },
}

fn join(missing: &[String]) -> String {
    match missing {
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
        [] => String::new(),
    }
}

/// Checks every permission; `Ok` also when the API server cannot answer the question.
pub async fn check(
    cluster: &Cluster,
    namespace: &str,
    wanted: &[Permission],
) -> Result<(), AccessError> {
    let api: Api<SelfSubjectAccessReview> = Api::all(cluster.client.clone());
    let mut missing = Vec::new();
    for p in wanted {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.to_owned()),
                    verb: Some(p.verb.to_owned()),
                    group: Some(p.group.to_owned()),
                    resource: Some(p.resource.to_owned()),
                    subresource: p.subresource.map(str::to_owned),
                    name: p.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &review).await {
            Ok(answer) => {
                if !answer.status.is_some_and(|s| s.allowed) {
                    missing.push(p.to_string());
                }
            }
            Err(e) => {
                tracing::debug!("no access review ({e}); the command will find out by trying");
                return Ok(());
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(AccessError::Denied {
            namespace: namespace.to_owned(),
            missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_every_missing_permission() {
        let e = AccessError::Denied {
            namespace: "demo".into(),
            missing: vec![
                Permission::new("patch", "apps", "deployments").to_string(),
                Permission::new("create", "", "pods")
                    .sub("portforward")
                    .to_string(),
            ],
        };
        assert_eq!(
            e.to_string(),
            "your credentials may not patch deployments or create pods/portforward in namespace demo. Ask a cluster admin for a Role granting it (`tether rbac -n demo` prints the one tether needs; `kubectl auth can-i --list -n demo` shows what you have); nothing was changed."
        );
    }
}
