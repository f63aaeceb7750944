//! Bearer tokens the builtin API server accepts besides the admin token: service-account
//! tokens, issued by its TokenRequest API (`serviceaccounts/{name}/token`, which the node's
//! kubelet asks for each pod's, as a real kubelet does, and `kubectl create token` too), and
//! the node's own. A token bound to a pod is accepted only while that pod exists (with that
//! UID), as kube-apiserver checks bound tokens; every token has an expiry. Tokens are not
//! persisted: after a restart the node starts its pods afresh, with fresh tokens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// How long a kubelet's tokens stay valid: it asks for 3607 s, which kube-apiserver (with
/// its default `--service-account-extend-token-expiration`) makes a year, since this node
/// does not refresh them.
pub const KUBELET_EXPIRATION: i64 = 3607;
const EXTENDED: Duration = Duration::from_secs(365 * 24 * 3600);

/// The in-process issuer, for tests of the kubelet without an API server.
impl TokenIssuer for Tokens {
    fn pod_token(
        &self,
        account: ServiceAccount,
        pod_name: &str,
        pod_uid: &str,
    ) -> Result<String, String> {
        let bound = Some(Pod {
            name: pod_name.to_string(),
            uid: pod_uid.to_string(),
        });
        Ok(self.issue(account, bound, EXTENDED))
    }

    fn forget_pod(&self, pod_uid: &str) {
        self.revoke_pod(pod_uid);
    }
}

/// The pod a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub name: String,
    pub uid: String,
}

#[derive(Debug)]
struct Issued {
    account: ServiceAccount,
    bound: Option<Pod>,
    expires: Instant,
}

#[derive(Debug, Default)]
pub struct Tokens {
    by_token: Mutex<HashMap<String, Issued>>,
}

impl Tokens {
    /// Issues a new token for `account`, bound to `bound` if given, valid for `valid_for`.
    pub fn issue(
        &self,
        account: ServiceAccount,
        bound: Option<Pod>,
        valid_for: Duration,
    ) -> String {
        let mut raw = [0u8; 32];
        for chunk in raw.chunks_mut(16) {
            chunk.copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        let token = format!(
            "sbx.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let issued = Issued {
            account,
            bound,
            expires: Instant::now() + valid_for,
        };
        // Poisoning only follows a panic inside these short critical sections.
        self.by_token
            .lock()
            .expect("token lock")
            .insert(token.clone(), issued);
        token
    }

    /// How long a TokenRequest's `expirationSeconds` makes a token valid.
    pub fn validity(expiration_seconds: i64) -> Duration {
        if expiration_seconds == KUBELET_EXPIRATION {
            EXTENDED
        } else {
            Duration::from_secs(expiration_seconds.max(0).unsigned_abs())
        }
    }

    /// Forgets every token issued for a pod.
    pub fn revoke_pod(&self, pod_uid: &str) {
        self.by_token
            .lock()
            .expect("token lock")
            .retain(|_, i| i.bound.as_ref().is_none_or(|p| p.uid != pod_uid));
    }

    /// The account a presented token stands for, if it has not expired and `pod_exists`
    /// says the pod it is bound to (namespace, name, UID) is still there. A token that
    /// fails either is forgotten.
    pub fn check(
        &self,
        presented: &str,
        pod_exists: impl Fn(&str, &str, &str) -> bool,
    ) -> Option<ServiceAccount> {
        let mut map = self.by_token.lock().expect("token lock");
        let key = map
            .keys()
            .find(|t| bool::from(t.as_bytes().ct_eq(presented.as_bytes())))?
            .clone();
        let issued = &map[&key];
        let valid = issued.expires > Instant::now()
            && issued
                .bound
                .as_ref()
                .is_none_or(|p| pod_exists(&issued.account.namespace, &p.name, &p.uid));
        if !valid {
            map.remove(&key);
            return None;
        }
        Some(issued.account.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> Option<Pod> {
        Some(Pod {
            name: "p".into(),
            uid: uid.into(),
        })
    }

    #[test]
    fn bound_tokens_are_accepted_while_their_pod_exists() {
        let tokens = Tokens::default();
        let sa = ServiceAccount {
            namespace: "demo".into(),
            name: "default".into(),
        };
        let hour = Duration::from_secs(3600);
        let t = tokens.issue(sa.clone(), pod("uid-1"), hour);
        let other = tokens.issue(sa.clone(), pod("uid-2"), hour);
        let unbound = tokens.issue(sa.clone(), None, hour);
        assert_ne!(t, other);
        let exists = |_: &str, _: &str, uid: &str| uid != "uid-3";
        assert_eq!(tokens.check(&t, exists), Some(sa.clone()));
        assert_eq!(tokens.check("sbx.nope", exists), None);
        tokens.revoke_pod("uid-1");
        assert_eq!(tokens.check(&t, exists), None);
        assert!(tokens.check(&other, exists).is_some());
        assert!(tokens.check(&other, |_, _, _| false).is_none(), "pod gone");
        assert!(tokens.check(&other, exists).is_none(), "and forgotten");
        assert_eq!(tokens.check(&unbound, |_, _, _| false), Some(sa));
    }

    #[test]
    fn tokens_expire() {
        let tokens = Tokens::default();
        let sa = ServiceAccount {
            namespace: "demo".into(),
            name: "default".into(),
        };
        let t = tokens.issue(sa, None, Duration::ZERO);
        assert_eq!(tokens.check(&t, |_, _, _| true), None);
        assert_eq!(Tokens::validity(KUBELET_EXPIRATION), EXTENDED);
        assert_eq!(Tokens::validity(600), Duration::from_secs(600));
    }
}
