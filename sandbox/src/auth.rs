//! Bearer tokens the API server accepts besides the admin token: one per running pod, for
//! the pod's service account, written into the pod at
//! `/var/run/secrets/kubernetes.io/serviceaccount/token` by the kubelet. They live as long as
//! the pod's containers do and are never persisted (pods restart with fresh tokens).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use subtle::ConstantTimeEq;

/// Who a service-account token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

/// Where the kubelet gets a pod's service-account token: the builtin API server's own
/// [`Tokens`], or TokenRequest on an upstream API server ([`crate::upstream`]).
pub trait TokenIssuer: Send + Sync + std::fmt::Debug {
    /// A token for `account`, bound to the pod `pod_name` with UID `pod_uid`. Blocks (called
    /// from the kubelet's blocking pod set-up).
    fn pod_token(
        &self,
        account: ServiceAccount,
        pod_name: &str,
        pod_uid: &str,
    ) -> Result<String, String>;
    /// The pod is gone: its tokens need not stay valid.
    fn forget_pod(&self, pod_uid: &str);
}

impl TokenIssuer for Tokens {
    fn pod_token(&self, account: ServiceAccount, _: &str, pod_uid: &str) -> Result<String, String> {
        Ok(self.issue(account, pod_uid))
    }

    fn forget_pod(&self, pod_uid: &str) {
        self.revoke_pod(pod_uid);
    }
}

#[derive(Debug, Default)]
pub struct Tokens {
    by_token: Mutex<HashMap<String, (ServiceAccount, String)>>,
}

impl Tokens {
    /// Issues a new token for `account` on behalf of the pod with UID `pod_uid`.
    pub fn issue(&self, account: ServiceAccount, pod_uid: &str) -> String {
        let mut raw = [0u8; 32];
        for chunk in raw.chunks_mut(16) {
            chunk.copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        let token = format!(
            "sbx.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        self.by_token
            .lock()
            .expect("token lock")
            .insert(token.clone(), (account, pod_uid.to_string()));
        token
    }

    /// Forgets every token issued for a pod.
    pub fn revoke_pod(&self, pod_uid: &str) {
        self.by_token
            .lock()
            .expect("token lock")
            .retain(|_, (_, uid)| uid != pod_uid);
    }

    /// The account a presented token stands for.
    pub fn check(&self, presented: &str) -> Option<ServiceAccount> {
        let map = self.by_token.lock().expect("token lock");
        map.iter()
            .find(|(t, _)| bool::from(t.as_bytes().ct_eq(presented.as_bytes())))
            .map(|(_, (sa, _))| sa.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_are_accepted_until_revoked() {
        let tokens = Tokens::default();
        let sa = ServiceAccount {
            namespace: "demo".into(),
            name: "default".into(),
        };
        let t = tokens.issue(sa.clone(), "uid-1");
        let other = tokens.issue(sa.clone(), "uid-2");
        assert_ne!(t, other);
        assert_eq!(tokens.check(&t), Some(sa));
        assert_eq!(tokens.check("sbx.nope"), None);
        tokens.revoke_pod("uid-1");
        assert_eq!(tokens.check(&t), None);
        assert!(tokens.check(&other).is_some());
    }
}
