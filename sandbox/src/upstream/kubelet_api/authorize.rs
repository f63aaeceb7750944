//! The kubelet API's authorization, as a kubelet with `--authorization-mode=Webhook` does it:
//! each request becomes the attributes kubelets use (verb from the method, resource
//! `nodes`, subresource `proxy` for exec, attach, port-forward and container logs, the
//! node's name), and the API server is asked with a SubjectAccessReview whether the caller
//! may. Answers are cached as the kubelet caches them (five minutes when allowed, thirty
//! seconds when denied), so a burst of port-forwards costs one review.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Method;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::bootstrap::NODE_NAME;

const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);

/// Who the caller is: the identity of the one client certificate the kubelet API accepts.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub groups: Vec<String>,
}

/// What a request asks for, in the kubelet's words.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: &'static str,
    pub subresource: &'static str,
}

impl Attributes {
    /// The kubelet's mapping of a request (`pkg/kubelet/server/auth.go`).
    pub fn of(method: &Method, path: &str) -> Attributes {
        let verb = match *method {
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "get",
        };
        let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
        let subresource = if under("/stats") {
            "stats"
        } else if under("/metrics") {
            "metrics"
        } else if under("/logs") {
            "log"
        } else {
            "proxy"
        };
        Attributes { verb, subresource }
    }
}

pub struct Authorizer {
    /// The node's client: nodes may create SubjectAccessReviews.
    client: kube::Client,
    caller: Caller,
    answers: Mutex<HashMap<Attributes, (bool, Instant)>>,
}

/// Why a request was not let through, in the kubelet's words.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("Forbidden (user={user}, verb={verb}, resource=nodes, subresource(s)=[{subresource}])")]
    Forbidden {
        user: String,
        verb: &'static str,
        subresource: &'static str,
    },
    #[error(
        "Authorization error (user={user}, verb={verb}, resource=nodes, subresource(s)=[{subresource}]): {detail}"
    )]
    Error {
        user: String,
        verb: &'static str,
        subresource: &'static str,
        detail: String,
    },
}

impl std::fmt::Debug for Authorizer {
    // kube::Client is not Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    pub fn new(client: kube::Client, caller: Caller) -> Self {
        Authorizer {
            client,
            caller,
            answers: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, attrs: &Attributes) -> Option<bool> {
        // Poisoning only follows a panic inside these one-line critical sections.
        let answers = self.answers.lock().expect("authorizer lock");
        let (allowed, at) = answers.get(attrs)?;
        let ttl = if *allowed { ALLOWED_TTL } else { DENIED_TTL };
        (at.elapsed() < ttl).then_some(*allowed)
    }

    /// Whether the caller may do `attrs` on this node.
    pub async fn check(&self, attrs: Attributes) -> Result<(), Refusal> {
        let allowed = match self.cached(&attrs) {
            Some(allowed) => allowed,
            None => {
                let allowed = self.review(&attrs).await?;
                self.answers
                    .lock()
                    .expect("authorizer lock")
                    .insert(attrs.clone(), (allowed, Instant::now()));
                allowed
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(Refusal::Forbidden {
                user: self.caller.user.clone(),
                verb: attrs.verb,
                subresource: attrs.subresource,
            })
        }
    }

    async fn review(&self, attrs: &Attributes) -> Result<bool, Refusal> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(self.caller.user.clone()),
                groups: Some(self.caller.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(attrs.verb.into()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(attrs.subresource.into()),
                    name: Some(NODE_NAME.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &review).await {
            Ok(answer) => Ok(answer.status.is_some_and(|s| s.allowed)),
            Err(e) => Err(Refusal::Error {
                user: self.caller.user.clone(),
                verb: attrs.verb,
                subresource: attrs.subresource,
                detail: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_the_kubelets_attributes() {
        let cases = [
            (Method::POST, "/exec/demo/web-1/web", "create", "proxy"),
            (Method::GET, "/exec/demo/web-1/web", "get", "proxy"),
            (Method::POST, "/portForward/demo/web-1", "create", "proxy"),
            (Method::GET, "/containerLogs/demo/web-1/web", "get", "proxy"),
            (Method::GET, "/stats/summary", "get", "stats"),
            (Method::GET, "/metrics", "get", "metrics"),
            (Method::GET, "/logs/syslog", "get", "log"),
            (Method::GET, "/logsfoo", "get", "proxy"),
        ];
        for (method, path, verb, subresource) in cases {
            assert_eq!(
                Attributes::of(&method, path),
                Attributes { verb, subresource },
                "{method} {path}"
            );
        }
    }

    #[test]
    fn refusals_read_as_the_kubelets() {
        let refused = Refusal::Forbidden {
            user: "kube-apiserver-kubelet-client".into(),
            verb: "create",
            subresource: "proxy",
        };
        assert_eq!(
            refused.to_string(),
            "Forbidden (user=kube-apiserver-kubelet-client, verb=create, resource=nodes, subresource(s)=[proxy])"
        );
    }
}
