//! API server benchmark: list latency with 5,000 Services and watch fan-out to 50 watchers,
//! measured with kube-rs over HTTPS against a sandbox started with `tether-sandbox up`.
//!
//! Run with `cargo bench -p tether-sandbox` (release build); prints one table.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, Config};
use serde_json::json;
use tokio::sync::Barrier;

const SERVICES: usize = 5_000;
const LISTS: usize = 20;
const WATCHERS: usize = 50;
const EVENTS: usize = 200;

struct Sandbox(tempfile::TempDir);

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_tether-sandbox"))
            .arg("down")
            .arg("--state-dir")
            .arg(self.0.path())
            .output();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_tether-sandbox"))
        .arg("up")
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .expect("up");
    assert!(
        out.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sandbox = Sandbox(dir);
    let kubeconfig = kube::config::Kubeconfig::read_from(sandbox.0.path().join("kubeconfig"))
        .expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let client = Client::try_from(config).expect("client");

    // 5,000 Services, 16 requests in flight.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    stream::iter(0..SERVICES)
        .map(|i| {
            let services = services.clone();
            async move {
                let svc: Service = serde_json::from_value(json!({
                    "metadata": {"name": format!("svc-{i}"), "labels": {"bench": "yes"}},
                    "spec": {"selector": {"app": format!("a{i}")}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
                }))
                .expect("service");
                services.create(&PostParams::default(), &svc).await.expect("create service");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let create_time = started.elapsed();

    let mut lists = Vec::with_capacity(LISTS);
    let mut count = 0;
    for _ in 0..LISTS {
        let t = Instant::now();
        count = services
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len();
        lists.push(t.elapsed());
    }
    lists.sort();
    assert!(count > SERVICES, "listed {count}");
    // The same list as raw bytes: the server's part, without the client decoding 5,000 objects.
    let mut raw_lists = Vec::with_capacity(LISTS);
    let mut raw_len = 0;
    for _ in 0..LISTS {
        let request = http::Request::get("/api/v1/namespaces/default/services")
            .body(Vec::new())
            .expect("request");
        let t = Instant::now();
        raw_len = client.request_text(request).await.expect("raw list").len();
        raw_lists.push(t.elapsed());
    }
    raw_lists.sort();
    let t = Instant::now();
    let selected = services
        .list(&ListParams::default().labels("bench=yes").limit(500))
        .await
        .expect("list page");
    let page_time = t.elapsed();
    assert_eq!(selected.items.len(), 500);

    // 50 watchers; each measures when every event arrives after its create returned.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let ready = Arc::new(Barrier::new(WATCHERS + 1));
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let (cms, rv, ready) = (cms.clone(), rv.clone(), ready.clone());
        watchers.push(tokio::spawn(async move {
            let mut events = cms
                .watch(&WatchParams::default().timeout(290), &rv)
                .await
                .expect("watch")
                .boxed();
            ready.wait().await;
            let mut arrivals: Vec<(String, Instant)> = Vec::with_capacity(EVENTS);
            while arrivals.len() < EVENTS {
                match events.try_next().await.expect("watch event") {
                    Some(WatchEvent::Added(cm)) => {
                        arrivals.push((cm.metadata.name.unwrap_or_default(), Instant::now()))
                    }
                    Some(_) => {}
                    None => panic!("watch ended early"),
                }
            }
            arrivals
        }));
    }
    ready.wait().await;
    let mut created_at = std::collections::HashMap::new();
    let fan_started = Instant::now();
    for i in 0..EVENTS {
        let name = format!("cm-{i}");
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": name}, "data": {"i": i.to_string()}}),
        )
        .expect("cm");
        let t = Instant::now();
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("create configmap");
        created_at.insert(name, t);
    }
    let mut delays = Vec::with_capacity(WATCHERS * EVENTS);
    for w in watchers {
        for (name, at) in w.await.expect("watcher") {
            delays.push(at.saturating_duration_since(created_at[&name]));
        }
    }
    let fan_total = fan_started.elapsed();
    delays.sort();

    println!();
    println!("tether-sandbox API benchmark (kube-rs over HTTPS, loopback)");
    println!("{:<44} {:>12}", "measure", "value");
    println!(
        "{:<44} {:>12}",
        format!("create {SERVICES} Services (16 in flight)"),
        format!("{:.0}/s", SERVICES as f64 / create_time.as_secs_f64())
    );
    println!(
        "{:<44} {:>12}",
        format!("list {count} Services, p50 of {LISTS}"),
        ms(percentile(&lists, 0.5))
    );
    println!(
        "{:<44} {:>12}",
        format!("list {count} Services, p95 of {LISTS}"),
        ms(percentile(&lists, 0.95))
    );
    println!(
        "{:<44} {:>12}",
        format!("same list as raw JSON ({} KiB), p50", raw_len / 1024),
        ms(percentile(&raw_lists, 0.5))
    );
    println!(
        "{:<44} {:>12}",
        "list 500 by label selector (limit=500)",
        ms(page_time)
    );
    println!(
        "{:<44} {:>12}",
        format!("watch fan-out {WATCHERS}x{EVENTS}: create sent->event p50"),
        ms(percentile(&delays, 0.5))
    );
    println!(
        "{:<44} {:>12}",
        format!("watch fan-out {WATCHERS}x{EVENTS}: create sent->event p99"),
        ms(percentile(&delays, 0.99))
    );
    println!(
        "{:<44} {:>12}",
        format!("watch fan-out {WATCHERS}x{EVENTS}: max"),
        ms(*delays.last().expect("delays"))
    );
    println!(
        "{:<44} {:>12}",
        format!("{EVENTS} creates delivered to all {WATCHERS}"),
        ms(fan_total)
    );
    drop(sandbox);
}
