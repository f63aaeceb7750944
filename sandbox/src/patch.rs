//! PATCH bodies: JSON merge patch (RFC 7386) and JSON patch (RFC 6902) with the `json-patch`
//! crate, strategic merge patch with [`strategic`]. Server-side apply is not supported and gets
//! 415, as from a server without it.

pub mod strategic;

use serde_json::Value;

use crate::error::ApiError;

/// The patch formats, by Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json; got {other:?}"
            ))),
        }
    }
}

/// Applies a patch body to the current object.
pub fn apply(current: &Value, patch_type: PatchType, body: &[u8]) -> Result<Value, ApiError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("error decoding patch: {e}")))?;
    match patch_type {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::BadRequest(
                    "json: cannot unmarshal into Go value: the patch is not a JSON object".into(),
                ));
            }
            let mut out = current.clone();
            json_patch::merge(&mut out, &patch);
            Ok(out)
        }
        PatchType::Json => {
            let ops: json_patch::Patch =
                serde_json::from_value(patch).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            let mut out = current.clone();
            // A failed `test` operation or a missing path is the client's error, which
            // kube-apiserver answers without saying which (422, no causes).
            json_patch::patch(&mut out, &ops).map_err(|e| {
                tracing::debug!("JSON patch not applied: {e}");
                ApiError::InvalidRequest
            })?;
            Ok(out)
        }
        PatchType::Strategic => {
            strategic::apply(current, &patch).map_err(|e| ApiError::BadRequest(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_types_select_the_patch_format() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8").unwrap(),
            PatchType::Merge
        );
        assert_eq!(
            PatchType::from_content_type("application/json-patch+json").unwrap(),
            PatchType::Json
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml")
                .unwrap_err()
                .code(),
            415
        );
    }

    #[test]
    fn merge_and_json_patches() {
        let obj = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}});
        let out = apply(
            &obj,
            PatchType::Merge,
            br#"{"metadata":{"labels":{"a":null,"b":"2"}}}"#,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        let out = apply(
            &obj,
            PatchType::Json,
            br#"[{"op":"replace","path":"/spec/replicas","value":3}]"#,
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(
            apply(
                &obj,
                PatchType::Json,
                br#"[{"op":"test","path":"/spec/replicas","value":9}]"#
            )
            .unwrap_err()
            .code(),
            422
        );
        assert_eq!(
            apply(&obj, PatchType::Json, br#"{"op":"add"}"#)
                .unwrap_err()
                .code(),
            400
        );
        assert_eq!(
            apply(&obj, PatchType::Merge, b"not json")
                .unwrap_err()
                .code(),
            400
        );
        assert_eq!(
            apply(&obj, PatchType::Strategic, b"[]").unwrap_err().code(),
            400
        );
    }
}
