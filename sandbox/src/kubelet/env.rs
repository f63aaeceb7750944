//! A container's environment as the kubelet builds it: the Service variables first (every
//! Service of the pod's namespace that exists when the container starts, except headless and
//! ExternalName ones, plus `KUBERNETES_SERVICE_*` from `default/kubernetes`), then `envFrom`,
//! then `env` (later entries win), with `$(VAR)` expansion against what came before.

use std::collections::HashMap;

use base64::Engine;
use serde_json::Value;

use crate::resources::{self, Shape};
use crate::store::State;

/// Why a container's configuration cannot be made (`CreateContainerConfigError`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The pod facts `fieldRef` can read that the stored object may not carry yet.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    pub pod_ip: String,
    pub host_ip: String,
}

/// An ordered environment: names keep their first position, values their last assignment.
#[derive(Debug, Default, Clone)]
pub struct Env {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl Env {
    pub fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.vars[i].1.as_str())
    }

    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    /// Kubernetes' `$(VAR)` expansion: known variables are replaced, `$$` is a literal `$`,
    /// anything else stays as written.
    pub fn expand(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(inner) = after.strip_prefix('(')
                && let Some(end) = inner.find(')')
            {
                let name = &inner[..end];
                match self.get(name) {
                    Some(v) => out.push_str(v),
                    None => {
                        out.push_str("$(");
                        out.push_str(name);
                        out.push(')');
                    }
                }
                rest = &inner[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        out
    }
}

fn env_name(service: &str) -> String {
    service.to_uppercase().replace('-', "_")
}

/// The Docker-link style variables of one Service.
fn service_vars(env: &mut Env, svc: &Value) {
    let spec = &svc["spec"];
    let ip = spec["clusterIP"].as_str().unwrap_or_default();
    if ip.is_empty() || ip == "None" || spec["type"] == "ExternalName" {
        return;
    }
    let Some(ports) = spec["ports"].as_array().filter(|p| !p.is_empty()) else {
        return;
    };
    let name = env_name(svc["metadata"]["name"].as_str().unwrap_or_default());
    env.set(format!("{name}_SERVICE_HOST"), ip.to_string());
    env.set(format!("{name}_SERVICE_PORT"), ports[0]["port"].to_string());
    for p in ports {
        if let Some(pn) = p["name"].as_str().filter(|n| !n.is_empty()) {
            env.set(
                format!("{name}_SERVICE_PORT_{}", env_name(pn)),
                p["port"].to_string(),
            );
        }
    }
    let proto = |p: &Value| p["protocol"].as_str().unwrap_or("TCP").to_lowercase();
    env.set(
        format!("{name}_PORT"),
        format!("{}://{ip}:{}", proto(&ports[0]), ports[0]["port"]),
    );
    for p in ports {
        let (port, pr) = (p["port"].to_string(), proto(p));
        let prefix = format!("{name}_PORT_{port}_{}", pr.to_uppercase());
        env.set(prefix.clone(), format!("{pr}://{ip}:{port}"));
        env.set(format!("{prefix}_PROTO"), pr);
        env.set(format!("{prefix}_PORT"), port);
        env.set(format!("{prefix}_ADDR"), ip.to_string());
    }
}

fn service_env(state: &State, pod: &Value, env: &mut Env) {
    let rt = resources::by_shape(Shape::Service);
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    if pod["spec"]["enableServiceLinks"] != false {
        for svc in state.list(rt, Some(ns), None) {
            if ns == "default" && svc.name() == "kubernetes" {
                continue;
            }
            service_vars(env, &svc.value);
        }
    }
    if let Some(k) = state.get(rt, "default", "kubernetes") {
        service_vars(env, &k.value);
    }
}

/// One key of a ConfigMap or Secret (Secrets' `data` is base64).
fn key_of(obj: &Value, secret: bool, key: &str) -> Option<String> {
    if let Some(s) = obj["data"][key].as_str() {
        return Some(if secret {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            s.to_string()
        });
    }
    if secret {
        return obj["stringData"][key].as_str().map(str::to_string);
    }
    obj["binaryData"][key].as_str().map(|s| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn all_keys(obj: &Value, secret: bool) -> Vec<(String, String)> {
    let mut keys: Vec<String> = ["data", "stringData", "binaryData"]
        .iter()
        .filter_map(|f| obj[*f].as_object())
        .flat_map(|m| m.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| key_of(obj, secret, &k).map(|v| (k, v)))
        .collect()
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

fn field_ref(pod: &Value, facts: &PodFacts, path: &str) -> Result<String, ConfigError> {
    let m = &pod["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let bracket = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => s(&m["name"]),
        "metadata.namespace" => s(&m["namespace"]),
        "metadata.uid" => s(&m["uid"]),
        "spec.nodeName" => s(&pod["spec"]["nodeName"]),
        "spec.serviceAccountName" => s(&pod["spec"]["serviceAccountName"]),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        _ => {
            if let Some(k) = bracket("metadata.labels['") {
                s(&m["labels"][k])
            } else if let Some(k) = bracket("metadata.annotations['") {
                s(&m["annotations"][k])
            } else {
                return Err(ConfigError(format!(
                    "unsupported fieldRef fieldPath {path:?}"
                )));
            }
        }
    })
}

/// Looks up a ConfigMap or Secret; a missing one is an error unless `optional`.
fn source<'a>(
    state: &'a State,
    ns: &str,
    secret: bool,
    name: &str,
) -> Option<&'a std::sync::Arc<crate::store::Stored>> {
    let rt = resources::by_shape(if secret {
        Shape::Secret
    } else {
        Shape::ConfigMap
    });
    state.get(rt, ns, name)
}

fn kind_word(secret: bool) -> &'static str {
    if secret { "secret" } else { "configmap" }
}

/// Builds the environment of one container.
pub fn build(
    state: &State,
    pod: &Value,
    container: &Value,
    facts: &PodFacts,
) -> Result<Env, ConfigError> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut env = Env::default();
    service_env(state, pod, &mut env);
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or_default();
        let (secret, r) = if from["secretRef"].is_object() {
            (true, &from["secretRef"])
        } else {
            (false, &from["configMapRef"])
        };
        let name = r["name"].as_str().unwrap_or_default();
        match source(state, ns, secret, name) {
            Some(obj) => {
                for (k, v) in all_keys(&obj.value, secret) {
                    let key = format!("{prefix}{k}");
                    if is_env_name(&key) {
                        env.set(key, v);
                    }
                }
            }
            None if r["optional"] == true => {}
            None => {
                return Err(ConfigError(format!(
                    "{} \"{name}\" not found",
                    kind_word(secret)
                )));
            }
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let Some(name) = var["name"].as_str() else {
            continue;
        };
        let vf = &var["valueFrom"];
        let value = if let Some(v) = var["value"].as_str() {
            env.expand(v)
        } else if let Some(path) = vf["fieldRef"]["fieldPath"].as_str() {
            field_ref(pod, facts, path)?
        } else if vf["configMapKeyRef"].is_object() || vf["secretKeyRef"].is_object() {
            let secret = vf["secretKeyRef"].is_object();
            let r = if secret {
                &vf["secretKeyRef"]
            } else {
                &vf["configMapKeyRef"]
            };
            let (src, key) = (
                r["name"].as_str().unwrap_or_default(),
                r["key"].as_str().unwrap_or_default(),
            );
            let optional = r["optional"] == true;
            match source(state, ns, secret, src) {
                None if optional => continue,
                None => {
                    return Err(ConfigError(format!(
                        "{} \"{src}\" not found",
                        kind_word(secret)
                    )));
                }
                Some(obj) => match key_of(&obj.value, secret, key) {
                    Some(v) => v,
                    None if optional => continue,
                    None => {
                        return Err(ConfigError(format!(
                            "couldn't find key {key} in {} {ns}/{src}",
                            if secret { "Secret" } else { "ConfigMap" }
                        )));
                    }
                },
            }
        } else {
            // resourceFieldRef and empty values: the sandbox sets no limits, so empty.
            String::new()
        };
        env.set(name.to_string(), value);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use serde_json::json;

    fn put(store: &Store, shape: Shape, v: Value) {
        store
            .write(|s| Ok::<_, ()>(s.put(resources::by_shape(shape), v)))
            .unwrap();
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let mut env = Env::default();
        env.set("A".into(), "x".into());
        assert_eq!(env.expand("$(A)-$(B)-$$(A)-$-$(A"), "x-$(B)-$(A)-$-$(A");
    }

    #[test]
    fn builds_services_sources_and_fields() {
        let store = Store::new(0);
        put(
            &store,
            Shape::Service,
            json!({"metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}}),
        );
        put(
            &store,
            Shape::Service,
            json!({"metadata": {"name": "my-db", "namespace": "n"},
            "spec": {"clusterIP": "10.96.0.7", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}}),
        );
        put(
            &store,
            Shape::Service,
            json!({"metadata": {"name": "headless", "namespace": "n"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
        );
        put(
            &store,
            Shape::ConfigMap,
            json!({"metadata": {"name": "cm", "namespace": "n"}, "data": {"k": "v", "bad key": "x"}}),
        );
        put(
            &store,
            Shape::Secret,
            json!({"metadata": {"name": "s", "namespace": "n"}, "data": {"pw": "aHVudGVyMg=="}}),
        );
        let pod = json!({"metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"app": "web"}},
            "spec": {"nodeName": "sandbox", "serviceAccountName": "default"}});
        let c = json!({"envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
            "env": [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "URL", "value": "http://$(IP):$(MY_DB_SERVICE_PORT)"},
                    {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": true}}}]});
        let facts = PodFacts {
            pod_ip: "10.244.0.5".into(),
            host_ip: "10.244.0.1".into(),
        };
        let env = store.read(|s| build(s, &pod, &c, &facts)).unwrap();
        assert_eq!(env.get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(env.get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(env.get("MY_DB_SERVICE_PORT_PG"), Some("5432"));
        assert_eq!(env.get("MY_DB_PORT_5432_TCP_ADDR"), Some("10.96.0.7"));
        assert_eq!(env.get("MY_DB_PORT"), Some("tcp://10.96.0.7:5432"));
        assert_eq!(env.get("HEADLESS_SERVICE_HOST"), None);
        assert_eq!(env.get("CM_k"), Some("v"));
        assert_eq!(env.get("PW"), Some("hunter2"));
        assert_eq!(env.get("APP"), Some("web"));
        assert_eq!(env.get("URL"), Some("http://10.244.0.5:5432"));
        assert_eq!(env.get("OPT"), None);
        let missing = json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]});
        assert_eq!(
            store
                .read(|s| build(s, &pod, &missing, &facts))
                .unwrap_err(),
            ConfigError("configmap \"nope\" not found".into())
        );
    }
}
