//! The kubeconfig `up` writes: cluster (server URL and CA), admin user (bearer token) and a
//! context, all named `tether-sandbox`, made the current context. An existing file at the
//! path keeps its other clusters, users and contexts.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::pki::{self, PkiError};

pub const NAME: &str = "tether-sandbox";
const USER: &str = "tether-sandbox-admin";

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} exists but is not a kubeconfig this tool can merge into ({detail}); pass --kubeconfig with another path"
    )]
    Unparsable { path: PathBuf, detail: String },
    #[error("cannot write the kubeconfig: {0}")]
    Write(#[from] PkiError),
    #[error("cannot render YAML: {0}")]
    Render(String),
}

/// Replaces the entry called `name` in the list `doc[key]`, or appends it.
fn upsert(doc: &mut Value, key: &str, name: &str, entry: Value) {
    if !doc[key].is_array() {
        doc[key] = json!([]);
    }
    // Made an array just above.
    let list = doc[key].as_array_mut().expect("list");
    match list.iter_mut().find(|e| e["name"] == name) {
        Some(existing) => *existing = entry,
        None => list.push(entry),
    }
}

/// Writes (or merges into) the kubeconfig at `path`.
pub fn write(path: &Path, server: &str, ca_pem: &str, token: &str) -> Result<(), KubeconfigError> {
    let mut doc = match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            let doc: Value =
                serde_saphyr::from_str(&text).map_err(|e| KubeconfigError::Unparsable {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                })?;
            if !doc.is_object() {
                return Err(KubeconfigError::Unparsable {
                    path: path.to_path_buf(),
                    detail: "not a mapping".into(),
                });
            }
            doc
        }
        Ok(_) => json!({}),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(source) => {
            return Err(KubeconfigError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    doc["apiVersion"] = json!("v1");
    doc["kind"] = json!("Config");
    upsert(
        &mut doc,
        "clusters",
        NAME,
        json!({"name": NAME, "cluster": {"server": server, "certificate-authority-data": B64.encode(ca_pem)}}),
    );
    upsert(
        &mut doc,
        "users",
        USER,
        json!({"name": USER, "user": {"token": token}}),
    );
    upsert(
        &mut doc,
        "contexts",
        NAME,
        json!({"name": NAME, "context": {"cluster": NAME, "user": USER, "namespace": "default"}}),
    );
    doc["current-context"] = json!(NAME);
    if doc.get("preferences").is_none() {
        doc["preferences"] = json!({});
    }
    let yaml = serde_saphyr::to_string(&doc).map_err(|e| KubeconfigError::Render(e.to_string()))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| {
            KubeconfigError::Write(PkiError::Io {
                path: parent.to_path_buf(),
                source,
            })
        })?;
    }
    pki::write_private(path, &yaml)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_into_an_existing_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster:\n    server: https://x\n").unwrap();
        write(&path, "https://127.0.0.1:1234", "PEM", "tok").unwrap();
        write(&path, "https://127.0.0.1:5678", "PEM", "tok").unwrap();
        let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let clusters = doc["clusters"].as_array().unwrap();
        assert_eq!(clusters.len(), 2);
        assert_eq!(clusters[1]["cluster"]["server"], "https://127.0.0.1:5678");
        assert_eq!(doc["current-context"], NAME);
        assert_eq!(doc["users"][0]["user"]["token"], "tok");
        std::fs::write(&path, "- just\n- a list\n").unwrap();
        assert!(write(&path, "https://127.0.0.1:1", "PEM", "tok").is_err());
    }
}
