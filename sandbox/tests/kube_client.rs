//! kube-rs against a sandbox: list, watch through kube-runtime's watcher, patch, conflicts,
//! and a watch resumed from a resourceVersion the server no longer has.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use serde_json::json;
use tether_tests::sandbox::Sandbox;

const WAIT: Duration = Duration::from_secs(20);

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": "demo"}}, "data": {"k": "v"}}),
    )
    .unwrap()
}

#[tokio::test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
async fn list_watch_and_patch() {
    let sb = Sandbox::start();
    let client = sb.client().await;
    let services: Api<Service> = Api::all(client.clone());
    let names: Vec<String> = services
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    assert!(
        names.contains(&"kubernetes".to_string()) && names.contains(&"kube-dns".to_string()),
        "{names:?}"
    );

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut events = watcher(cms.clone(), watcher::Config::default().labels("app=demo")).boxed();
    // The initial list (empty) completes before anything is created.
    loop {
        match tokio::time::timeout(WAIT, events.try_next())
            .await
            .expect("watcher init")
            .unwrap()
        {
            Some(watcher::Event::InitDone) => break,
            Some(_) => {}
            None => panic!("watch ended"),
        }
    }
    cms.create(&PostParams::default(), &config_map("watched"))
        .await
        .unwrap();
    let applied = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(watcher::Event::Apply(cm)) = events.try_next().await.unwrap() {
                return cm;
            }
        }
    })
    .await
    .expect("the watcher saw the new ConfigMap");
    assert_eq!(applied.metadata.name.as_deref(), Some("watched"));

    // Merge and strategic patches.
    let patched = cms
        .patch(
            "watched",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k2": "v2"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.data.unwrap().get("k2").map(String::as_str),
        Some("v2")
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deploy)
        .await
        .unwrap();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "busybox"}]}}}});
    let patched = deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let containers = patched.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(
        containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        vec!["web", "sidecar"]
    );

    // Replacing with a stale resourceVersion is a 409 Conflict.
    let mut stale = cms.get("watched").await.unwrap();
    cms.patch(
        "watched",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k3": "v3"}})),
    )
    .await
    .unwrap();
    stale.data = None;
    match cms.replace("watched", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"))
        }
        other => panic!("expected a conflict, got {other:?}"),
    }

    // The watcher saw the deletion.
    cms.delete("watched", &Default::default()).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(watcher::Event::Delete(cm)) = events.try_next().await.unwrap() {
                assert_eq!(cm.metadata.name.as_deref(), Some("watched"));
                return;
            }
        }
    })
    .await
    .expect("the watcher saw the deletion");
}

#[tokio::test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
async fn watch_bookmarks_and_expired_resource_versions() {
    let sb = Sandbox::start();
    let client = sb.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &config_map("a"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();

    // Resuming from a resourceVersion replays what happened after it; bookmarks follow.
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"n": "1"}})),
    )
    .await
    .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let first = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .expect("an event")
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, WatchEvent::Modified(ref cm) if cm.data.as_ref().unwrap()["n"] == "1"),
        "{first:?}"
    );
    let bookmark = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .expect("a bookmark")
        .unwrap()
        .unwrap();
    assert!(matches!(bookmark, WatchEvent::Bookmark(_)), "{bookmark:?}");
    drop(stream);

    // After a restart the history is gone: the old resourceVersion is 410 Expired.
    drop(client);
    sb.down();
    sb.up();
    let client = sb.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    assert!(cms.get("a").await.is_ok(), "objects survive a restart");
    let mut stream = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let event = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .expect("an event")
        .unwrap()
        .unwrap();
    match event {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 Expired, got {other:?}"),
    }
}
