//! TokenRequest (`POST .../serviceaccounts/{name}/token`): a service-account token, bound to
//! a pod when `spec.boundObjectRef` names one, as kube-apiserver issues them. The node's
//! kubelet asks here for each pod's token; `kubectl create token` asks for unbound ones.

use http::Method;
use serde_json::{Value, json};

use super::route::Target;
use super::{Reply, Request, objects, protobuf};
use crate::auth::{Pod, ServiceAccount, Tokens};
use crate::error::{ApiError, Cause};
use crate::resources::{self, Shape};
use crate::store::Store;

/// kube-apiserver's default for `expirationSeconds`.
const DEFAULT_EXPIRATION: i64 = 3600;
/// kube-apiserver's shortest `expirationSeconds`.
const MIN_EXPIRATION: i64 = 600;
/// The audience tokens get by default: the API server's issuer.
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

pub fn handle(
    store: &Store,
    tokens: &Tokens,
    req: &Request,
    target: &Target,
) -> Result<Reply, ApiError> {
    if req.method != Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    let (ns, Some(name)) = (target.ns(), target.name.as_deref()) else {
        return Err(ApiError::UnknownPath);
    };
    // kubectl's typed client sends protobuf, which only knows stored kinds by their type.
    let body = if req
        .content_type
        .starts_with("application/vnd.kubernetes.protobuf")
    {
        protobuf::decode_token_request(&req.body)?
    } else {
        objects::parse_body(req, None)?
    };
    let kind = resources::by_shape(Shape::ServiceAccount);
    if store.read(|s| s.get(kind, ns, name).is_none()) {
        return Err(ApiError::not_found(kind, name));
    }
    let spec = &body["spec"];
    let expiration = spec["expirationSeconds"]
        .as_i64()
        .unwrap_or(DEFAULT_EXPIRATION);
    if expiration < MIN_EXPIRATION {
        return Err(ApiError::Invalid {
            kind: "TokenRequest",
            group: "authentication.k8s.io",
            name: name.to_string(),
            causes: vec![Cause::invalid(
                "spec.expirationSeconds",
                expiration.to_string(),
                "may not specify a duration less than 10 minutes",
            )],
        });
    }
    let bound = match spec["boundObjectRef"].as_object() {
        None => None,
        Some(r) => Some(bound_pod(store, ns, name, r)?),
    };
    let token = tokens.issue(
        ServiceAccount {
            namespace: ns.to_string(),
            name: name.to_string(),
        },
        bound,
        Tokens::validity(expiration),
    );
    let expires = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(expiration))
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut spec = spec.clone();
    if !spec.is_object() {
        spec = json!({});
    }
    spec["expirationSeconds"] = json!(expiration);
    if spec["audiences"].as_array().is_none_or(Vec::is_empty) {
        spec["audiences"] = json!([ISSUER]);
    }
    Ok(Reply::json(
        201,
        &json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": expires},
        }),
    ))
}

/// The pod `reference` names, which must exist (with its UID, when given) and run as the
/// service account `account`, as kube-apiserver requires.
fn bound_pod(
    store: &Store,
    ns: &str,
    account: &str,
    reference: &serde_json::Map<String, Value>,
) -> Result<Pod, ApiError> {
    let kind = reference.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != "Pod" {
        return Err(ApiError::BadRequest(format!(
            "cannot bind token to object of kind {kind:?}: only Pods are served here"
        )));
    }
    let name = reference.get("name").and_then(Value::as_str).unwrap_or("");
    let pods = resources::by_shape(Shape::Pod);
    let pod = store
        .read(|s| s.get(pods, ns, name).cloned())
        .ok_or_else(|| ApiError::not_found(pods, name))?;
    let wanted_uid = reference.get("uid").and_then(Value::as_str).unwrap_or("");
    if !wanted_uid.is_empty() && wanted_uid != pod.uid() {
        return Err(ApiError::Conflict {
            resource: pods.qualified_plural(),
            group: pods.group,
            name: name.to_string(),
            detail: format!(
                "the UID in the bound object reference ({wanted_uid}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        });
    }
    let runs_as = pod.value["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    if runs_as != account {
        return Err(ApiError::BadRequest(format!(
            "cannot bind token for serviceaccount {account:?} to pod running with different serviceaccount name."
        )));
    }
    Ok(Pod {
        name: name.to_string(),
        uid: pod.uid().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::api::route::{self, Query, Route};

    fn store() -> Store {
        let store = Store::new(0);
        let (accounts, pods) = (
            resources::by_shape(Shape::ServiceAccount),
            resources::by_shape(Shape::Pod),
        );
        store
            .write(|s| {
                s.put(
                    accounts,
                    json!({"metadata": {"name": "default", "namespace": "demo", "uid": "sa"}}),
                );
                s.put(
                    pods,
                    json!({"metadata": {"name": "web-1", "namespace": "demo", "uid": "u1"}, "spec": {}}),
                );
                Ok::<_, ()>(())
            })
            .unwrap();
        store
    }

    fn request(store: &Store, tokens: &Tokens, account: &str, body: Value) -> Result<Value, u16> {
        let path = format!("/api/v1/namespaces/demo/serviceaccounts/{account}/token");
        let Ok(Route::Objects(target)) = route::parse(&path) else {
            panic!("{path} is a token request");
        };
        let req = Request {
            method: Method::POST,
            path,
            query: Query::default(),
            content_type: "application/json".into(),
            wants_table: false,
            body: Bytes::from(body.to_string()),
        };
        match handle(store, tokens, &req, &target) {
            Ok(reply) => Ok(serde_json::from_slice(&reply.body).unwrap()),
            Err(e) => Err(e.code()),
        }
    }

    #[test]
    fn tokens_are_issued_bound_to_existing_pods_only() {
        let (store, tokens) = (store(), Tokens::default());
        let bound = |name: &str, uid: &str| json!({"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": name, "uid": uid}}});
        let answer = request(&store, &tokens, "default", bound("web-1", "u1")).unwrap();
        assert_eq!(answer["kind"], "TokenRequest");
        assert_eq!(answer["spec"]["expirationSeconds"], DEFAULT_EXPIRATION);
        let token = answer["status"]["token"].as_str().unwrap();
        let exists = |_: &str, name: &str, uid: &str| name == "web-1" && uid == "u1";
        assert_eq!(tokens.check(token, exists).unwrap().name, "default");
        assert!(tokens.check(token, |_, _, _| false).is_none(), "pod gone");

        assert_eq!(request(&store, &tokens, "nobody", json!({})), Err(404));
        assert_eq!(
            request(&store, &tokens, "default", bound("web-2", "")),
            Err(404)
        );
        assert_eq!(
            request(&store, &tokens, "default", bound("web-1", "u2")),
            Err(409)
        );
        let short = json!({"spec": {"expirationSeconds": 60}});
        assert_eq!(request(&store, &tokens, "default", short), Err(422));
        let unbound = request(&store, &tokens, "default", json!({})).unwrap();
        assert_eq!(
            unbound["spec"]["audiences"],
            json!(["https://kubernetes.default.svc.cluster.local"])
        );
    }
}
