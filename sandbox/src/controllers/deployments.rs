//! The Deployment controller: one ReplicaSet per pod template (`<deploy>-<pod-template-hash>`),
//! rolled out by `RollingUpdate` (maxSurge/maxUnavailable) or `Recreate`, with the revision
//! annotations `kubectl rollout history/undo` read, old ReplicaSets pruned to
//! `revisionHistoryLimit`, and the status `kubectl rollout status` waits on.
//!
//! The arithmetic follows kube-controller-manager's `deployment/rolling.go`: the new
//! ReplicaSet grows while the total stays within `replicas + maxSurge`; old ones shrink only
//! while at least `replicas - maxUnavailable` pods stay available.

use std::sync::Arc;

use serde_json::{Value, json};

use super::Controller;
use super::objects::{self, annotation, controller_ref, controller_uid, set_annotation};
use crate::admission::Part;
use crate::error::ApiError;
use crate::lifecycle::{self, DeleteOptions};
use crate::resources::{self, Shape};
use crate::store::{Event, EventType, State, Store, Stored};

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX: &str = "deployment.kubernetes.io/max-replicas";
/// Deployment annotations that are not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED,
    MAX,
];

pub struct Deployments;

/// The pod-template-hash of a template, as Kubernetes renders it: FNV-1a (32 bit) of the
/// template (here its canonical JSON) and the collision count, its decimal form mapped onto
/// the safe alphabet.
pub fn template_hash(template: &Value, collision_count: Option<i64>) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    // serde_json's maps are sorted, so this serialization is canonical.
    feed(template.to_string().as_bytes());
    if let Some(c) = collision_count {
        feed(&(c as u32).to_le_bytes());
    }
    hash.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// A ReplicaSet's template without its pod-template-hash label, to compare with the
/// Deployment's.
fn template_without_hash(rs: &Value) -> Value {
    let mut t = rs["spec"]["template"].clone();
    if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
        labels.remove(HASH_LABEL);
    }
    t
}

/// An int-or-percent of `total` (maxSurge rounds up, maxUnavailable down).
fn int_or_percent(v: &Value, total: i64, round_up: bool, default_percent: i64) -> i64 {
    let percent = |p: i64| {
        if round_up {
            (p * total + 99) / 100
        } else {
            p * total / 100
        }
    };
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0).max(0),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<i64>().ok())
            .map_or_else(|| percent(default_percent), percent)
            .max(0),
        _ => percent(default_percent),
    }
}

/// (maxSurge, maxUnavailable) for `desired` replicas; Recreate has neither.
fn fenceposts(d: &Value, desired: i64) -> (i64, i64) {
    let strategy = &d["spec"]["strategy"];
    if strategy["type"] == "Recreate" {
        return (0, 0);
    }
    let ru = &strategy["rollingUpdate"];
    let surge = int_or_percent(&ru["maxSurge"], desired, true, 25);
    let mut unavailable = int_or_percent(&ru["maxUnavailable"], desired, false, 25);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(desired))
}

fn replicas(rs: &Value) -> i64 {
    rs["spec"]["replicas"].as_i64().unwrap_or(0)
}

fn status_count(rs: &Value, field: &str) -> i64 {
    rs["status"][field].as_i64().unwrap_or(0)
}

fn revision(rs: &Value) -> i64 {
    annotation(rs, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// What one pass works with: the Deployment and its ReplicaSets, re-read after each write.
struct Rollout<'a> {
    state: &'a mut State,
    ns: String,
    d: Value,
    desired: i64,
    surge: i64,
    unavailable: i64,
}

impl Rollout<'_> {
    fn owned(&self) -> Vec<Arc<Stored>> {
        let rs_rt = resources::by_shape(Shape::ReplicaSet);
        let uid = self.d["metadata"]["uid"].as_str().unwrap_or_default();
        let mut list: Vec<Arc<Stored>> = self
            .state
            .list(rs_rt, Some(&self.ns), None)
            .filter(|rs| controller_uid(&rs.value) == Some(uid))
            .cloned()
            .collect();
        list.sort_by(|a, b| {
            a.value["metadata"]["creationTimestamp"]
                .as_str()
                .cmp(&b.value["metadata"]["creationTimestamp"].as_str())
                .then_with(|| a.name().cmp(b.name()))
        });
        list
    }

    /// (new ReplicaSet, old ones).
    fn split(&self) -> (Option<Arc<Stored>>, Vec<Arc<Stored>>) {
        let template = &self.d["spec"]["template"];
        let (new, old): (Vec<_>, Vec<_>) = self
            .owned()
            .into_iter()
            .partition(|rs| template_without_hash(&rs.value) == *template);
        (new.into_iter().next(), old)
    }

    /// Sets a ReplicaSet's replicas (and the annotations that record why), when they differ.
    fn scale(&mut self, rs: &Value, to: i64) -> Result<(), ApiError> {
        let rs_rt = resources::by_shape(Shape::ReplicaSet);
        let Some(current) = self
            .state
            .get(
                rs_rt,
                &self.ns,
                rs["metadata"]["name"].as_str().unwrap_or_default(),
            )
            .cloned()
        else {
            return Ok(());
        };
        let mut new = current.value.clone();
        new["spec"]["replicas"] = json!(to.max(0));
        set_annotation(&mut new, DESIRED, &self.desired.to_string());
        set_annotation(&mut new, MAX, &(self.desired + self.surge).to_string());
        if new != current.value {
            objects::update(self.state, rs_rt, &current.value, new, Part::Main)?;
        }
        Ok(())
    }

    /// Creates the ReplicaSet for the current template (with 0 replicas; scaling follows).
    fn create_new(&mut self, revision: i64) -> Result<Option<Arc<Stored>>, ApiError> {
        let rs_rt = resources::by_shape(Shape::ReplicaSet);
        let collisions = self.d["status"]["collisionCount"].as_i64();
        let hash = template_hash(&self.d["spec"]["template"], collisions);
        let name = format!(
            "{}-{hash}",
            self.d["metadata"]["name"].as_str().unwrap_or_default()
        );
        if self.state.get(rs_rt, &self.ns, &name).is_some() {
            // Another template hashed to this name: count the collision, retry next pass.
            let dep_rt = resources::by_shape(Shape::Deployment);
            let mut d = self.d.clone();
            d["status"]["collisionCount"] = json!(collisions.unwrap_or(0) + 1);
            objects::update(self.state, dep_rt, &self.d, d, Part::Status)?;
            return Ok(None);
        }
        let mut template = self.d["spec"]["template"].clone();
        template["metadata"]["labels"][HASH_LABEL] = json!(hash);
        let mut selector = self.d["spec"]["selector"].clone();
        selector["matchLabels"][HASH_LABEL] = json!(hash);
        let mut annotations = serde_json::Map::new();
        if let Some(a) = self.d["metadata"]["annotations"].as_object() {
            for (k, v) in a.iter().filter(|(k, _)| !NOT_COPIED.contains(&k.as_str())) {
                annotations.insert(k.clone(), v.clone());
            }
        }
        annotations.insert(REVISION.into(), json!(revision.to_string()));
        annotations.insert(DESIRED.into(), json!(self.desired.to_string()));
        annotations.insert(MAX.into(), json!((self.desired + self.surge).to_string()));
        let body = json!({
            "metadata": {
                "name": name,
                "labels": template["metadata"]["labels"],
                "annotations": annotations,
                "ownerReferences": [controller_ref(resources::by_shape(Shape::Deployment), &self.d)],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": self.d["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                "selector": selector,
                "template": template,
            },
        });
        let ns = self.ns.clone();
        Ok(Some(objects::create(self.state, rs_rt, &ns, body)?))
    }

    fn rolling(&mut self, new: &Value, old: &[Arc<Stored>]) -> Result<(), ApiError> {
        let all_total = |old: &[Arc<Stored>], new_replicas: i64| {
            old.iter().map(|rs| replicas(&rs.value)).sum::<i64>() + new_replicas
        };
        let mut new_replicas = replicas(new);
        if new_replicas > self.desired {
            new_replicas = self.desired;
            self.scale(new, new_replicas)?;
        } else if new_replicas < self.desired {
            let room = self.desired + self.surge - all_total(old, new_replicas);
            let up = room.min(self.desired - new_replicas);
            if up > 0 {
                new_replicas += up;
                self.scale(new, new_replicas)?;
            }
        }
        let old_total: i64 = old.iter().map(|rs| replicas(&rs.value)).sum();
        if old_total == 0 {
            return Ok(());
        }
        let min_available = self.desired - self.unavailable;
        let new_unavailable = new_replicas - status_count(new, "availableReplicas");
        let mut budget = all_total(old, new_replicas) - min_available - new_unavailable;
        // Unhealthy old pods go first: removing them costs no availability.
        let mut old_now: Vec<(Value, i64)> = old
            .iter()
            .map(|rs| (rs.value.clone(), replicas(&rs.value)))
            .collect();
        for (rs, r) in old_now.iter_mut() {
            if budget <= 0 {
                break;
            }
            let unhealthy = (*r - status_count(rs, "availableReplicas")).max(0);
            let down = unhealthy.min(budget);
            if down > 0 {
                *r -= down;
                budget -= down;
                self.scale(rs, *r)?;
            }
        }
        let available: i64 = old
            .iter()
            .map(|rs| status_count(&rs.value, "availableReplicas"))
            .sum::<i64>()
            + status_count(new, "availableReplicas");
        let mut excess = available - min_available;
        for (rs, r) in old_now.iter_mut() {
            if excess <= 0 {
                break;
            }
            let down = (*r).min(excess);
            if down > 0 {
                *r -= down;
                excess -= down;
                self.scale(rs, *r)?;
            }
        }
        Ok(())
    }

    fn recreate(&mut self, new: &Value, old: &[Arc<Stored>]) -> Result<(), ApiError> {
        for rs in old {
            self.scale(&rs.value, 0)?;
        }
        let pod_rt = resources::by_shape(Shape::Pod);
        let old_uids: Vec<&str> = old.iter().map(|rs| rs.uid()).collect();
        let old_pods_left = self.state.list(pod_rt, Some(&self.ns), None).any(|p| {
            controller_uid(&p.value).is_some_and(|u| old_uids.contains(&u))
                && !matches!(
                    p.value["status"]["phase"].as_str(),
                    Some("Succeeded" | "Failed")
                )
        });
        if !old_pods_left {
            self.scale(new, self.desired)?;
        }
        Ok(())
    }

    /// Deletes the oldest fully scaled-down ReplicaSets beyond `revisionHistoryLimit`.
    fn prune(&mut self, old: &[Arc<Stored>]) -> Result<(), ApiError> {
        let limit = self.d["spec"]["revisionHistoryLimit"]
            .as_i64()
            .unwrap_or(10);
        let mut idle: Vec<&Arc<Stored>> = old
            .iter()
            .filter(|rs| {
                replicas(&rs.value) == 0
                    && status_count(&rs.value, "replicas") == 0
                    && !objects::terminating(&rs.value)
            })
            .collect();
        let extra = usize::try_from(idle.len() as i64 - limit.max(0)).unwrap_or(0);
        idle.sort_by_key(|rs| revision(&rs.value));
        let rs_rt = resources::by_shape(Shape::ReplicaSet);
        for rs in idle.into_iter().take(extra) {
            lifecycle::delete(
                self.state,
                rs_rt,
                &self.ns,
                rs.name(),
                &DeleteOptions::default(),
            )?;
        }
        Ok(())
    }

    /// Writes the Deployment's revision annotation and status, when they changed.
    fn write_status(&mut self, new_rs_name: Option<&str>, created: bool) -> Result<(), ApiError> {
        let dep_rt = resources::by_shape(Shape::Deployment);
        let name = self.d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let Some(current) = self.state.get(dep_rt, &self.ns, &name).cloned() else {
            return Ok(());
        };
        let (new, old) = self.split();
        let mut d = current.value.clone();
        if let Some(new) = &new
            && !objects::terminating(&d)
        {
            let rev = annotation(&new.value, REVISION).unwrap_or("1").to_string();
            if set_annotation(&mut d, REVISION, &rev) {
                d = objects::update(self.state, dep_rt, &current.value, d, Part::Main)?
                    .value
                    .clone();
            }
        }
        let all: Vec<&Value> = old.iter().chain(new.iter()).map(|rs| &rs.value).collect();
        let sum = |f: &dyn Fn(&Value) -> i64| all.iter().map(|rs| f(rs)).sum::<i64>();
        let total_spec = sum(&replicas);
        let available = sum(&|rs| status_count(rs, "availableReplicas"));
        let actual = sum(&|rs| status_count(rs, "replicas"));
        let updated = new
            .as_ref()
            .map_or(0, |rs| status_count(&rs.value, "replicas"));
        let now = crate::admission::now();
        let mut status = json!({
            "observedGeneration": d["metadata"]["generation"],
            "replicas": actual,
            "updatedReplicas": updated,
            "readyReplicas": sum(&|rs| status_count(rs, "readyReplicas")),
            "availableReplicas": available,
            "unavailableReplicas": (total_spec - available).max(0),
        });
        if let Some(c) = d["status"].get("collisionCount") {
            status["collisionCount"] = c.clone();
        }
        let min_available = self.desired - self.unavailable;
        let available_cond = if available >= min_available {
            (
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        } else {
            (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        };
        let mut conditions = objects::set_condition(
            &d["status"]["conditions"],
            json!({"type": "Available", "status": available_cond.0, "reason": available_cond.1,
                "message": available_cond.2, "lastUpdateTime": now}),
            &now,
        );
        let rs_name = new_rs_name.unwrap_or_default();
        let complete = updated == self.desired
            && actual == self.desired
            && available == self.desired
            && old
                .iter()
                .all(|rs| status_count(&rs.value, "replicas") == 0);
        let progressing = if d["spec"]["paused"] == true {
            (
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".to_string(),
            )
        } else if complete && new.is_some() {
            (
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            )
        } else if created {
            (
                "True",
                "NewReplicaSetCreated",
                format!("Created new replica set \"{rs_name}\""),
            )
        } else if new.is_some() {
            (
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{rs_name}\" is progressing."),
            )
        } else {
            ("Unknown", "", String::new())
        };
        if !progressing.1.is_empty() {
            conditions = objects::set_condition(
                &conditions,
                json!({"type": "Progressing", "status": progressing.0, "reason": progressing.1,
                    "message": progressing.2, "lastUpdateTime": now}),
                &now,
            );
        }
        // Available first, then Progressing, as kubectl describe shows them.
        let mut list = conditions.as_array().cloned().unwrap_or_default();
        list.sort_by_key(|c| c["type"] != "Available");
        status["conditions"] = json!(list);
        if d["status"] != status {
            let mut next = d.clone();
            next["status"] = status;
            objects::update(self.state, dep_rt, &d, next, Part::Status)?;
        }
        Ok(())
    }
}

/// One pass over one Deployment.
pub fn reconcile(state: &mut State, ns: &str, name: &str) -> Result<(), ApiError> {
    let dep_rt = resources::by_shape(Shape::Deployment);
    let Some(d) = state.get(dep_rt, ns, name).cloned() else {
        return Ok(());
    };
    let d = d.value.clone();
    let desired = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let (surge, unavailable) = fenceposts(&d, desired);
    let mut r = Rollout {
        state,
        ns: ns.to_string(),
        d,
        desired,
        surge,
        unavailable,
    };
    if objects::terminating(&r.d) {
        return r.write_status(None, false);
    }
    let (mut new, old) = r.split();
    let max_old_revision = old.iter().map(|rs| revision(&rs.value)).max().unwrap_or(0);
    let paused = r.d["spec"]["paused"] == true;
    let mut created = false;
    if new.is_none() && !paused {
        new = r.create_new(max_old_revision + 1)?;
        created = new.is_some();
    }
    let Some(new) = new else {
        return r.write_status(None, false);
    };
    // A template rolled back to (kubectl rollout undo) becomes the newest revision again.
    if revision(&new.value) <= max_old_revision && !paused {
        let rs_rt = resources::by_shape(Shape::ReplicaSet);
        let mut v = new.value.clone();
        set_annotation(&mut v, REVISION, &(max_old_revision + 1).to_string());
        objects::update(r.state, rs_rt, &new.value, v, Part::Main)?;
    }
    let rs_name = new.name().to_string();
    let active_old: Vec<Arc<Stored>> = old
        .iter()
        .filter(|rs| replicas(&rs.value) > 0)
        .cloned()
        .collect();
    if paused {
        if active_old.is_empty() {
            r.scale(&new.value, desired)?;
        }
    } else if r.d["spec"]["strategy"]["type"] == "Recreate" {
        r.recreate(&new.value, &old)?;
    } else if active_old.is_empty() {
        r.scale(&new.value, desired)?;
    } else {
        r.rolling(&new.value, &old)?;
    }
    r.prune(&old)?;
    r.write_status(Some(&rs_name), created)
}

fn log(ns: &str, name: &str, result: Result<(), ApiError>) {
    if let Err(e) = result {
        tracing::warn!("deployment controller ({ns}/{name}): {e}");
    }
}

impl Controller for Deployments {
    /// Pods become available `minReadySeconds` after turning ready, with no event to say so.
    fn period(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(2))
    }

    fn resync(&mut self, store: &Store) {
        let dep_rt = resources::by_shape(Shape::Deployment);
        let all: Vec<(String, String)> = store.read(|s| {
            s.list(dep_rt, None, None)
                .map(|o| (o.namespace().to_string(), o.name().to_string()))
                .collect()
        });
        for (ns, name) in all {
            log(&ns, &name, store.write(|s| reconcile(s, &ns, &name)));
        }
    }

    fn on_event(&mut self, store: &Store, event: &Event) {
        let obj = &event.object;
        let ns = obj.namespace().to_string();
        let name = match event.resource.shape {
            Shape::Deployment => Some(obj.name().to_string()),
            Shape::ReplicaSet => {
                objects::controller_name(&obj.value, "Deployment").map(str::to_string)
            }
            // Recreate waits for the old pods to be gone.
            Shape::Pod if event.kind == EventType::Deleted => {
                let rs_rt = resources::by_shape(Shape::ReplicaSet);
                objects::controller_name(&obj.value, "ReplicaSet").and_then(|rs| {
                    store.read(|s| {
                        s.get(rs_rt, &ns, rs).and_then(|rs| {
                            objects::controller_name(&rs.value, "Deployment").map(str::to_string)
                        })
                    })
                })
            }
            _ => None,
        };
        if let Some(name) = name {
            log(&ns, &name, store.write(|s| reconcile(s, &ns, &name)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenceposts_round_as_kubernetes() {
        let d = |surge: Value, unavailable: Value| {
            json!({"spec": {"strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}})
        };
        assert_eq!(fenceposts(&d(json!("25%"), json!("25%")), 3), (1, 0));
        assert_eq!(fenceposts(&d(json!("25%"), json!("25%")), 10), (3, 2));
        assert_eq!(fenceposts(&d(json!(0), json!(0)), 3), (0, 1));
        assert_eq!(fenceposts(&d(json!(2), json!("50%")), 5), (2, 2));
        assert_eq!(
            fenceposts(&json!({"spec": {"strategy": {"type": "Recreate"}}}), 3),
            (0, 0)
        );
    }

    #[test]
    fn hashes_are_stable_safe_and_collision_aware() {
        let t = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}});
        let h = template_hash(&t, None);
        assert_eq!(h, template_hash(&t.clone(), None));
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_ne!(h, template_hash(&t, Some(1)));
        assert_ne!(h, template_hash(&json!({"metadata": {}}), None));
    }
}
