//! Pod status as a kubelet reports it: container states, the pod phase, and the four
//! conditions, whose `lastTransitionTime` only moves when their status does.

use serde_json::{Map, Value, json};

/// How a container run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub container_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: String,
    },
    Terminated(Terminated),
}

impl State {
    pub fn waiting(reason: &str, message: Option<String>) -> Self {
        State::Waiting {
            reason: reason.to_string(),
            message,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            State::Waiting { reason, message } => {
                let mut w = json!({"reason": reason});
                if let Some(m) = message {
                    w["message"] = json!(m);
                }
                json!({"waiting": w})
            }
            State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            State::Terminated(t) => json!({"terminated": terminated_json(t)}),
        }
    }
}

fn terminated_json(t: &Terminated) -> Value {
    let mut v = json!({
        "exitCode": t.exit_code, "reason": t.reason, "startedAt": t.started_at,
        "finishedAt": t.finished_at, "containerID": t.container_id,
    });
    if let Some(s) = t.signal {
        v["signal"] = json!(s);
    }
    if let Some(m) = &t.message {
        v["message"] = json!(m);
    }
    v
}

/// One container's reported status.
#[derive(Debug, Clone)]
pub struct ContainerStatus {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub restart_count: u32,
    pub ready: bool,
    pub state: State,
    pub last_state: Option<Terminated>,
}

impl ContainerStatus {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name, "image": self.image, "imageID": self.image_id,
            "restartCount": self.restart_count, "ready": self.ready,
            "started": matches!(self.state, State::Running { .. }),
            "state": self.state.to_json(),
            "lastState": self.last_state.as_ref().map_or(json!({}), |t| json!({"terminated": terminated_json(t)})),
        });
        if let Some(id) = &self.container_id {
            v["containerID"] = json!(id);
        }
        v
    }
}

/// The pod-level facts besides the containers.
#[derive(Debug, Clone)]
pub struct PodView {
    pub phase: &'static str,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: String,
    pub containers: Vec<ContainerStatus>,
}

/// The pod phase from its containers: `done` (will not run again) and `ever_ran` per
/// container, with the exit code of done ones.
pub fn phase(containers: &[(bool, bool, i32)]) -> &'static str {
    if !containers.is_empty() && containers.iter().all(|(done, _, _)| *done) {
        if containers.iter().all(|(_, _, code)| *code == 0) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if containers.iter().any(|(_, ran, _)| !ran) {
        "Pending"
    } else {
        "Running"
    }
}

fn condition(prev: &Value, kind: &str, ok: bool, reason: Option<&str>, now: &str) -> Value {
    let status = if ok { "True" } else { "False" };
    let old = prev["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind);
    let since = match old {
        Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let mut c =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    c
}

/// The whole `status`, keeping what the previous one had that the kubelet does not own.
pub fn pod_status(prev: &Value, view: &PodView, now: &str) -> Value {
    let mut status: Map<String, Value> = prev.as_object().cloned().unwrap_or_default();
    let terminal = matches!(view.phase, "Succeeded" | "Failed");
    let all_ready = !view.containers.is_empty() && view.containers.iter().all(|c| c.ready);
    let not_ready_reason = if terminal {
        Some("PodCompleted")
    } else if all_ready {
        None
    } else {
        Some("ContainersNotReady")
    };
    let conditions = vec![
        condition(
            prev,
            "PodReadyToStartContainers",
            view.pod_ip.is_some(),
            None,
            now,
        ),
        condition(
            prev,
            "Initialized",
            true,
            terminal.then_some("PodCompleted"),
            now,
        ),
        condition(prev, "Ready", all_ready && !terminal, not_ready_reason, now),
        condition(
            prev,
            "ContainersReady",
            all_ready && !terminal,
            not_ready_reason,
            now,
        ),
        condition(prev, "PodScheduled", true, None, now),
    ];
    status.insert("phase".into(), json!(view.phase));
    status.insert("conditions".into(), json!(conditions));
    status.insert("hostIP".into(), json!(view.host_ip));
    status.insert("hostIPs".into(), json!([{"ip": view.host_ip}]));
    match &view.pod_ip {
        Some(ip) => {
            status.insert("podIP".into(), json!(ip));
            status.insert("podIPs".into(), json!([{"ip": ip}]));
        }
        None => {
            status.remove("podIP");
            status.remove("podIPs");
        }
    }
    status.insert("startTime".into(), json!(view.start_time));
    // The API server sets the class when the pod is created and refuses any change to it.
    status
        .entry("qosClass")
        .or_insert_with(|| json!("BestEffort"));
    status.insert(
        "containerStatuses".into(),
        Value::Array(
            view.containers
                .iter()
                .map(ContainerStatus::to_json)
                .collect(),
        ),
    );
    Value::Object(status)
}

/// Whether two statuses say the same, taking a null field as an absent one: the API's
/// typed clients drop nulls (such as a condition's `lastProbeTime`), so the copy the node
/// gets back is never byte-equal to what it wrote.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let set = |m: &Map<String, Value>| m.iter().filter(|(_, v)| !v.is_null()).count();
            set(a) == set(b)
                && a.iter()
                    .filter(|(_, v)| !v.is_null())
                    .all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(v, w)| same(v, w))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases() {
        assert_eq!(phase(&[(false, false, 0)]), "Pending");
        assert_eq!(phase(&[(false, true, 0), (true, true, 0)]), "Running");
        assert_eq!(phase(&[(true, true, 0), (true, true, 0)]), "Succeeded");
        assert_eq!(phase(&[(true, true, 0), (true, true, 2)]), "Failed");
    }

    #[test]
    fn a_status_survives_the_typed_round_trip() {
        let view = PodView {
            phase: "Pending",
            pod_ip: None,
            host_ip: "10.244.0.1".into(),
            start_time: "2026-12-03T05:45:33Z".into(),
            containers: vec![],
        };
        let written = pod_status(&json!({}), &view, "2026-12-03T05:45:33Z");
        let typed: k8s_openapi::api::core::v1::PodStatus =
            serde_json::from_value(written.clone()).unwrap();
        let copied = serde_json::to_value(typed).unwrap();
        assert_ne!(copied, written, "the typed copy drops lastProbeTime: null");
        assert!(same(&copied, &written) && same(&written, &copied));
        let mut moved = copied.clone();
        moved["phase"] = json!("Running");
        assert!(!same(&moved, &written));
        moved = copied;
        moved["conditions"][0]["reason"] = json!("X");
        assert!(!same(&written, &moved));
    }

    #[test]
    fn transition_times_move_only_on_change() {
        let c = ContainerStatus {
            name: "c".into(),
            image: "i".into(),
            image_id: "i".into(),
            container_id: None,
            restart_count: 0,
            ready: true,
            state: State::Running {
                started_at: "t0".into(),
            },
            last_state: None,
        };
        let view = PodView {
            phase: "Running",
            pod_ip: Some("10.244.0.2".into()),
            host_ip: "10.244.0.1".into(),
            start_time: "t0".into(),
            containers: vec![c],
        };
        let s1 = pod_status(&json!({}), &view, "t1");
        let s2 = pod_status(&s1, &view, "t2");
        assert_eq!(s1, s2);
        let ready = |s: &Value| {
            s["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .cloned()
                .unwrap()
        };
        assert_eq!(ready(&s2)["status"], "True");
        let mut v2 = view.clone();
        v2.containers[0].ready = false;
        let s3 = pod_status(&s2, &v2, "t3");
        assert_eq!(ready(&s3)["lastTransitionTime"], "t3");
        assert_eq!(s3["containerStatuses"][0]["started"], true);
    }
}
