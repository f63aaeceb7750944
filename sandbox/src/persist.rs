//! Durability: the store is written to `<state-dir>/state.json` a moment after it changes
//! (writes are coalesced) and when the server stops, atomically (temporary file, fsync,
//! rename). The next start loads it; a file that does not parse is an error that names the
//! file, never silently replaced.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::resources::{self, ResourceType};
use crate::store::Store;

const FORMAT_VERSION: u64 = 1;
/// How long after a change the snapshot is written (more changes meanwhile join it).
const DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the state file {path} is corrupt ({detail}); move it away to start with an empty cluster"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

fn type_key(rt: &ResourceType) -> String {
    format!("{}/{}", rt.api_version(), rt.plural)
}

/// Loads a snapshot into a new store; no file means an empty store.
pub fn load(dir: &Path) -> Result<Store, PersistError> {
    let path = state_file(dir);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Store::new(0)),
        Err(source) => return Err(PersistError::Read { path, source }),
    };
    let corrupt = |detail: String| PersistError::Corrupt {
        path: path.clone(),
        detail,
    };
    let doc: Value = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
    if doc["version"].as_u64() != Some(FORMAT_VERSION) {
        return Err(corrupt(format!(
            "unknown format version {}",
            doc["version"]
        )));
    }
    let rv = doc["resourceVersion"]
        .as_u64()
        .ok_or_else(|| corrupt("no resourceVersion".into()))?;
    let entries = doc["objects"]
        .as_array()
        .ok_or_else(|| corrupt("no objects list".into()))?;
    let mut objects = Vec::with_capacity(entries.len());
    for entry in entries {
        let key = entry["type"].as_str().unwrap_or_default();
        let rt = resources::served()
            .find(|rt| type_key(rt) == key)
            .ok_or_else(|| corrupt(format!("unknown resource type {key:?}")))?;
        let object = &entry["object"];
        if object["metadata"]["name"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            return Err(corrupt(format!("a {key} object without a name")));
        }
        objects.push((rt, object.clone()));
    }
    let store = Store::new(rv);
    store.load(objects);
    Ok(store)
}

/// Serializes snapshot writers (the debounced writer and the final write on exit).
static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Writes the store's current contents.
pub fn save(store: &Store, dir: &Path) -> Result<(), PersistError> {
    // A writer that panicked left at most a temporary file behind; writing again is fine.
    let _writing = WRITING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (rv, objects) = store.read(|s| {
        let objects: Vec<(&'static ResourceType, Arc<crate::store::Stored>)> =
            s.all().map(|(rt, o)| (rt, o.clone())).collect();
        (s.rv(), objects)
    });
    let mut out: Vec<u8> = Vec::with_capacity(
        objects
            .iter()
            .map(|(_, o)| o.json.len() + 64)
            .sum::<usize>()
            + 64,
    );
    out.extend_from_slice(
        format!("{{\"version\":{FORMAT_VERSION},\"resourceVersion\":{rv},\"objects\":[").as_bytes(),
    );
    for (i, (rt, obj)) in objects.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",\n");
        }
        out.extend_from_slice(format!("{{\"type\":\"{}\",\"object\":", type_key(rt)).as_bytes());
        out.extend_from_slice(&obj.json);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}\n");
    let path = state_file(dir);
    let tmp = path.with_extension("json.tmp");
    let io = |source| PersistError::Write {
        path: path.clone(),
        source,
    };
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&out).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Writes a snapshot shortly after every change, until the task is dropped.
pub async fn run(store: Arc<Store>, dir: PathBuf) {
    loop {
        store.changed().await;
        tokio::time::sleep(DEBOUNCE).await;
        let (store, dir) = (store.clone(), dir.clone());
        let saved = tokio::task::spawn_blocking(move || save(&store, &dir)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("{e}"),
            Err(e) => tracing::error!("snapshot task failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snapshots_round_trip_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = load(dir.path()).unwrap();
        let svc = resources::find("", "v1", "services").unwrap();
        store
            .write(|s| {
                s.put(svc, json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"clusterIP": "10.96.3.3"}}));
                Ok::<_, ()>(())
            })
            .unwrap();
        save(&store, dir.path()).unwrap();
        let again = load(dir.path()).unwrap();
        assert_eq!(again.read(|s| s.rv()), 1);
        assert!(again.read(|s| s.get(svc, "default", "web").is_some()));
        assert!(again.read(|s| s.alloc.ip_holder("10.96.3.3".parse().unwrap()).is_some()));

        std::fs::write(state_file(dir.path()), "{not json").unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("is corrupt"), "{err}");
    }
}
