//! Watches: a stream of `{"type": ..., "object": ...}` lines, one per event, starting from
//! synthetic ADDED events (no resourceVersion) or from the history after a resourceVersion,
//! then live events from the store's broadcast. Objects that stop (or start) matching the
//! selectors are reported as DELETED (or ADDED), as the watch cache does. BOOKMARK events are
//! sent every few seconds when asked for. A resourceVersion older than the history gets one
//! ERROR event with a 410 Expired Status, as from kube-apiserver.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use super::objects::Filter;
use super::route::{Query, Target};
use super::{Body, Request, table};
use crate::error::ApiError;
use crate::resources::ResourceType;
use crate::store::{Event, EventType, Store, Stored};

/// How often bookmarks are sent to watches that allow them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(2);
/// How long a watch lasts when the client sets no timeoutSeconds.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What one watch sends: type, namespace and selectors, and how objects are shown.
struct Watch {
    rt: &'static ResourceType,
    namespace: Option<String>,
    filter: Filter,
    table: bool,
    query: Query,
}

impl Watch {
    fn line(&self, kind: &str, object: &Stored) -> Bytes {
        if self.table {
            let mut t = json!({
                "kind": "Table",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": object.rv.to_string()},
                "columnDefinitions": table::column_definitions(self.rt),
                "rows": [table::row(self.rt, &object.value, &self.query)],
            });
            if kind == "BOOKMARK" {
                t = object.value.clone();
            }
            return Bytes::from(format!("{{\"type\":\"{kind}\",\"object\":{t}}}\n"));
        }
        let mut out = BytesMut::with_capacity(object.json.len() + 32);
        out.put_slice(b"{\"type\":\"");
        out.put_slice(kind.as_bytes());
        out.put_slice(b"\",\"object\":");
        out.put_slice(&object.json);
        out.put_slice(b"}\n");
        out.freeze()
    }

    fn in_scope(&self, object: &Stored) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| ns == object.namespace())
    }

    /// The line to send for an event, if any.
    fn event(&self, event: &Event) -> Option<Bytes> {
        if event.resource.id != self.rt.id || !self.in_scope(&event.object) {
            return None;
        }
        let now = self.filter.matches(&event.object.value);
        let before = event
            .previous
            .as_ref()
            .map(|p| self.filter.matches(&p.value));
        let kind = match (event.kind, before, now) {
            (EventType::Added, _, true) => "ADDED",
            (EventType::Deleted, _, true) => "DELETED",
            (EventType::Modified, Some(true) | None, true) => "MODIFIED",
            (EventType::Modified, Some(false), true) => "ADDED",
            (EventType::Modified, Some(true), false) => "DELETED",
            _ => return None,
        };
        Some(self.line(kind, &event.object))
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": meta});
        Bytes::from(format!("{{\"type\":\"BOOKMARK\",\"object\":{obj}}}\n"))
    }
}

fn error_line(e: &ApiError) -> Bytes {
    Bytes::from(format!(
        "{{\"type\":\"ERROR\",\"object\":{}}}\n",
        e.status()
    ))
}

/// Starts a watch and returns the streaming response.
pub fn start(
    store: Arc<Store>,
    req: &Request,
    target: &Target,
) -> Result<Response<Body>, ApiError> {
    let filter = Filter::parse(target, &req.query)?;
    let rv = match req.query.get("resourceVersion").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {s}")))?,
        ),
    };
    let bookmarks = req.query.flag("allowWatchBookmarks");
    let send_initial = req.query.flag("sendInitialEvents");
    let timeout = req
        .query
        .number("timeoutSeconds")?
        .filter(|t| *t > 0)
        .map_or(DEFAULT_TIMEOUT, |t| Duration::from_secs(t as u64));
    let watch = Watch {
        rt: target.rt,
        namespace: target.namespace.clone(),
        filter,
        table: req.wants_table,
        query: Query::parse(Some(&format!(
            "includeObject={}",
            req.query.get("includeObject").unwrap_or("Metadata")
        ))),
    };
    // No resourceVersion (or "0"): start with the current objects as ADDED events.
    let initial = send_initial || rv.is_none_or(|rv| rv == 0);
    let from = if initial { None } else { rv };
    let (first, subscription) = store.read(|s| {
        let sub = s.subscribe(from);
        let mut first: Vec<Bytes> = Vec::new();
        if let (true, Ok(_)) = (initial, &sub) {
            for obj in s.list(watch.rt, watch.namespace.as_deref(), None) {
                if watch.filter.matches(&obj.value) {
                    first.push(watch.line("ADDED", obj));
                }
            }
        }
        (first, sub)
    });
    let (lines_tx, lines_rx) = mpsc::channel::<Bytes>(256);
    match subscription {
        Err(too_old) => {
            let err = ApiError::Expired(too_old.to_string());
            // A fresh channel has room for one line.
            let _ = lines_tx.try_send(error_line(&err));
        }
        Ok(mut sub) => {
            // A watch from a resourceVersion not reached yet starts there.
            sub.rv = sub.rv.max(from.unwrap_or(0));
            tokio::spawn(run(
                watch,
                first,
                sub,
                lines_tx,
                bookmarks,
                send_initial,
                timeout,
            ));
        }
    }
    let stream = futures::stream::unfold(lines_rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, Infallible>(Frame::data(line)), rx))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

/// Sends a watch's lines until the client goes, the timeout passes, or it falls too far behind.
async fn run(
    watch: Watch,
    first: Vec<Bytes>,
    sub: crate::store::Subscription,
    lines_tx: mpsc::Sender<Bytes>,
    bookmarks: bool,
    send_initial: bool,
    timeout: Duration,
) {
    let mut events_rx = sub.events_rx;
    // The resourceVersion up to which this watch has seen every event.
    let mut seen = sub.rv;
    for line in first {
        if lines_tx.send(line).await.is_err() {
            return;
        }
    }
    for event in &sub.replay {
        if let Some(line) = watch.event(event)
            && lines_tx.send(line).await.is_err()
        {
            return;
        }
    }
    if send_initial && bookmarks && lines_tx.send(watch.bookmark(seen, true)).await.is_err() {
        return;
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + BOOKMARK_INTERVAL,
        BOOKMARK_INTERVAL,
    );
    loop {
        tokio::select! {
            received = events_rx.recv() => match received {
                Ok(event) => {
                    if event.object.rv <= seen {
                        continue;
                    }
                    seen = event.object.rv;
                    if let Some(line) = watch.event(&event)
                        && lines_tx.send(line).await.is_err()
                    {
                        return;
                    }
                }
                // Fell behind or the store is gone: end the watch; the client resumes from
                // its last resourceVersion.
                Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => return,
            },
            _ = ticks.tick(), if bookmarks => {
                if lines_tx.send(watch.bookmark(seen, false)).await.is_err() {
                    return;
                }
            }
            _ = lines_tx.closed() => return,
            _ = &mut deadline => return,
        }
    }
}
