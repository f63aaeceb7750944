//! `GET pods/{name}/log`: a container's output as the kubelet wrote it, to
//! `<pod dir>/<container>.log` (the previous instance's is `<container>.previous.log`).
//!
//! Parameters: `container`, `previous`, `tailLines`, `limitBytes` and `follow`. The kubelet
//! keeps raw output without arrival times, so `timestamps`, `sinceSeconds` and `sinceTime` are
//! not applied (whole output is returned).
//!
//! `follow` keeps the file open and sends what is appended until the container ends: its
//! state says terminated, the kubelet renamed the file for a restart (the open handle still
//! reads the old instance to its end), or the pod is gone. It also ends when the client goes.

use std::convert::Infallible;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use super::{Api, Body, Request};
use crate::error::ApiError;
use crate::resources::{self, Shape};
use crate::store::{Store, Stored};

/// How often a follower looks for new output when there was none.
const POLL: Duration = Duration::from_millis(100);
/// The most one read sends at a time.
const CHUNK: usize = 64 * 1024;

/// What the request asked for.
#[derive(Debug, Default, PartialEq)]
struct Options {
    container: Option<String>,
    previous: bool,
    follow: bool,
    tail_lines: Option<usize>,
    limit_bytes: Option<u64>,
}

fn number(req: &Request, key: &str, min: i64) -> Result<Option<i64>, ApiError> {
    let Some(raw) = req.query.get(key) else {
        return Ok(None);
    };
    match raw.parse::<i64>() {
        Ok(n) if n >= min => Ok(Some(n)),
        _ => Err(ApiError::BadRequest(format!(
            "{key}: Invalid value: {raw:?}: must be an integer of at least {min}"
        ))),
    }
}

fn options(req: &Request) -> Result<Options, ApiError> {
    Ok(Options {
        container: req
            .query
            .get("container")
            .filter(|c| !c.is_empty())
            .map(str::to_string),
        previous: req.query.flag("previous"),
        follow: req.query.flag("follow"),
        tail_lines: number(req, "tailLines", 0)?.map(|n| n as usize),
        limit_bytes: number(req, "limitBytes", 1)?.map(|n| n as u64),
    })
}

/// The container a request means: the named one, or the only one.
pub(super) fn container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    match asked {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::BadRequest(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if names.len() == 1 => Ok(names[0].to_string()),
        None => Err(ApiError::BadRequest(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            names.join(" ")
        ))),
    }
}

fn container_status<'a>(pod: &'a Value, container: &str) -> Option<&'a Value> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == container)
}

/// Where `tail` lines before the end of `data` start.
fn tail_start(data: &[u8], tail: usize) -> usize {
    if tail == 0 {
        return data.len();
    }
    // A final newline ends the last line; it does not start an empty one.
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == tail {
                return i + 1;
            }
        }
    }
    0
}

/// Answers `GET .../pods/{name}/log`.
pub fn handle(api: &Api, req: &Request, ns: &str, name: &str) -> Result<Response<Body>, ApiError> {
    let opts = options(req)?;
    let rt = resources::by_shape(Shape::Pod);
    let pod: Arc<Stored> = api
        .store
        .read(|s| s.get(rt, ns, name).cloned())
        .ok_or_else(|| ApiError::not_found(rt, name))?;
    let container = container(&pod.value, name, opts.container.as_deref())?;
    let dir = api.layout.pod_dir(ns, name, pod.uid());
    let path = if opts.previous {
        dir.join(format!("{container}.previous.log"))
    } else {
        dir.join(format!("{container}.log"))
    };
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(_) if opts.previous => {
            return Err(ApiError::BadRequest(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )));
        }
        Err(_) => {
            let reason = container_status(&pod.value, &container)
                .and_then(|s| s["state"]["waiting"]["reason"].as_str())
                .unwrap_or("ContainerCreating");
            return Err(ApiError::BadRequest(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
            )));
        }
    };
    let start = opts.tail_lines.map_or(0, |n| tail_start(&data, n));
    let mut first = Bytes::from(data).slice(start..);
    if let Some(limit) = opts.limit_bytes {
        first.truncate(limit.min(first.len() as u64) as usize);
    }
    let budget = opts.limit_bytes.map(|l| l - first.len() as u64);
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    if opts.follow && !opts.previous && budget != Some(0) {
        let follower = Follower {
            store: api.store.clone(),
            path,
            offset: (start + first.len()) as u64,
            namespace: ns.to_string(),
            name: name.to_string(),
            uid: pod.uid().to_string(),
            container,
            budget,
        };
        let _ = tx.try_send(first);
        tokio::spawn(follower.run(tx));
    } else {
        let _ = tx.try_send(first);
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

/// A `follow` request's reader.
struct Follower {
    store: Arc<Store>,
    path: PathBuf,
    offset: u64,
    namespace: String,
    name: String,
    uid: String,
    container: String,
    /// Bytes still allowed by `limitBytes`.
    budget: Option<u64>,
}

impl Follower {
    async fn run(mut self, tx: mpsc::Sender<Bytes>) {
        let Ok(mut file) = tokio::fs::File::open(&self.path).await else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            // Decided before reading, so output written just before the end is still sent.
            let ended = self.ended(&file).await;
            loop {
                let want = self.budget.map_or(CHUNK, |b| (b as usize).min(CHUNK));
                let n = match file.read(&mut buf[..want]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    return;
                }
                if let Some(b) = self.budget.as_mut() {
                    *b -= n as u64;
                    if *b == 0 {
                        return;
                    }
                }
            }
            if ended {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = tx.closed() => return,
            }
        }
    }

    /// Whether the instance whose output `file` holds has ended.
    async fn ended(&self, file: &tokio::fs::File) -> bool {
        // A restart renames the file away from `path`: then this instance is over.
        let ours = file.metadata().await.ok();
        let current = tokio::fs::metadata(&self.path).await.ok();
        let same_file = match (ours, current) {
            (Some(a), Some(b)) => {
                use std::os::unix::fs::MetadataExt;
                a.ino() == b.ino() && a.dev() == b.dev()
            }
            _ => false,
        };
        if !same_file {
            return true;
        }
        let rt = resources::by_shape(Shape::Pod);
        self.store
            .read(|s| match s.get(rt, &self.namespace, &self.name) {
                Some(pod) if pod.uid() == self.uid => container_status(&pod.value, &self.container)
                    .is_some_and(|st| st["state"]["terminated"].is_object()),
                _ => true,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_counts_lines_from_the_end() {
        let data = b"a\nb\nc\n";
        assert_eq!(&data[tail_start(data, 1)..], b"c\n");
        assert_eq!(&data[tail_start(data, 2)..], b"b\nc\n");
        assert_eq!(&data[tail_start(data, 9)..], b"a\nb\nc\n");
        assert_eq!(&data[tail_start(data, 0)..], b"");
        let open = b"a\nb";
        assert_eq!(&open[tail_start(open, 1)..], b"b");
    }

    #[test]
    fn the_container_is_named_or_the_only_one() {
        let one = serde_json::json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(container(&one, "p", None).unwrap(), "a");
        assert!(container(&one, "p", Some("b")).is_err());
        let two = serde_json::json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let err = container(&two, "p", None).unwrap_err().to_string();
        assert_eq!(
            err,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        assert_eq!(container(&two, "p", Some("b")).unwrap(), "b");
    }
}
