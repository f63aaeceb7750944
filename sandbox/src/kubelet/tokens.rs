//! Service-account tokens for the node's pods from the API server's TokenRequest API,
//! bound to the pod, as the kubelet gets them for projected service-account volumes.

use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount as ServiceAccountObject;
use kube::api::{Api, PostParams};

use crate::auth::{ServiceAccount, TokenIssuer};

/// The kubelet's own request: 3607 seconds is the value kube-apiserver recognises as a
/// kubelet's and extends (the token is then valid for a year); the node still refreshes it
/// as a kubelet does, at 80% of the requested lifetime (see the pod worker).
const EXPIRATION_SECONDS: i64 = crate::auth::KUBELET_EXPIRATION;

const LAG_WAIT: Duration = Duration::from_secs(1);
const LAG_STEP: Duration = Duration::from_millis(50);

pub struct TokenRequests {
    /// The node's client (the Node authorizer lets it ask for its pods' accounts only).
    pub client: kube::Client,
    pub runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for TokenRequests {
    // kube::Client is not Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenRequests")
    }
}

impl TokenIssuer for TokenRequests {
    fn pod_token(
        &self,
        account: ServiceAccount,
        pod_name: &str,
        pod_uid: &str,
    ) -> Result<String, String> {
        let api: Api<ServiceAccountObject> =
            Api::namespaced(self.client.clone(), &account.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod_name.into()),
                    uid: Some(pod_uid.into()),
                }),
                expiration_seconds: Some(EXPIRATION_SECONDS),
            },
            ..Default::default()
        };
        // Right after a pod is bound, the Node authorizer may not know yet that this node
        // may ask for its account's token (403): asked again for up to a second, as for the
        // pod's ConfigMaps and Secrets (see `mirror`), before the pod's set-up backs off.
        let started = Instant::now();
        let created = loop {
            let created = self.runtime.block_on(api.create_token_request(
                &account.name,
                &PostParams::default(),
                &request,
            ));
            match created {
                Err(kube::Error::Api(s)) if s.code == 403 && started.elapsed() < LAG_WAIT => {
                    std::thread::sleep(LAG_STEP);
                }
                other => break other,
            }
        };
        match created {
            Ok(r) => r
                .status
                .map(|s| s.token)
                .ok_or_else(|| "TokenRequest answered without a token".to_string()),
            Err(e) => Err(format!(
                "cannot get a token for service account {}/{}: {e}",
                account.namespace, account.name
            )),
        }
    }

    // Bound tokens end with their pod: the API server stops accepting them once the pod is
    // deleted.
    fn forget_pod(&self, _: &str) {}
}
