//! Decoding request bodies through the k8s-openapi types, as a real API server decodes into its
//! Go types: shape errors become 400 BadRequest, unknown fields are dropped (with a warning, or
//! an error under `fieldValidation=Strict`), and what is stored is the typed object serialized
//! back, so its shape is exactly the API's.

use k8s_openapi::api::{apps, autoscaling, coordination, core, discovery, networking, rbac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::resources::{ResourceType, Shape};

/// How to treat fields the type does not have (the `fieldValidation` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::BadRequest(format!(
                "fieldValidation parameter unsupported: {other}; valid values: Ignore, Warn, Strict"
            ))),
        }
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(value: Value) -> Result<Value, serde_json::Error> {
    let typed: T = serde_json::from_value(value)?;
    serde_json::to_value(typed)
}

/// The typed round trip for one shape.
fn round_trip_shape(shape: Shape, value: Value) -> Result<Value, serde_json::Error> {
    match shape {
        Shape::Namespace => round_trip::<core::v1::Namespace>(value),
        Shape::Node => round_trip::<core::v1::Node>(value),
        Shape::Pod => round_trip::<core::v1::Pod>(value),
        Shape::Service => round_trip::<core::v1::Service>(value),
        Shape::Endpoints => round_trip::<core::v1::Endpoints>(value),
        Shape::EndpointSlice => round_trip::<discovery::v1::EndpointSlice>(value),
        Shape::Deployment => round_trip::<apps::v1::Deployment>(value),
        Shape::ReplicaSet => round_trip::<apps::v1::ReplicaSet>(value),
        Shape::ServiceAccount => round_trip::<core::v1::ServiceAccount>(value),
        Shape::Secret => round_trip::<core::v1::Secret>(value),
        Shape::ConfigMap => round_trip::<core::v1::ConfigMap>(value),
        Shape::Event => round_trip::<core::v1::Event>(value),
        Shape::Role => round_trip::<rbac::v1::Role>(value),
        Shape::RoleBinding => round_trip::<rbac::v1::RoleBinding>(value),
        Shape::ClusterRole => round_trip::<rbac::v1::ClusterRole>(value),
        Shape::ClusterRoleBinding => round_trip::<rbac::v1::ClusterRoleBinding>(value),
        Shape::ServiceCidr => round_trip::<networking::v1::ServiceCIDR>(value),
        Shape::Lease => round_trip::<coordination::v1::Lease>(value),
        Shape::Ingress => round_trip::<networking::v1::Ingress>(value),
        Shape::IngressClass => round_trip::<networking::v1::IngressClass>(value),
    }
}

/// Paths (`spec.foo`) present in `input` with a non-null value but absent from `output`.
fn unknown_fields(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match o.get(k) {
                    None if !v.is_null() => out.push(p),
                    Some(ov) => unknown_fields(v, ov, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            for (n, (iv, ov)) in i.iter().zip(o).enumerate() {
                unknown_fields(iv, ov, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// Checks the body's `apiVersion`/`kind` (filling them in when missing, as the server decodes
/// into the type the URL names) and decodes it through the typed shape.
///
/// Returns the normalized object and the warnings to send.
pub fn decode(
    rt: &ResourceType,
    mut value: Value,
    fv: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let Some(obj) = value.as_object_mut() else {
        return Err(ApiError::BadRequest(format!(
            "{} in version \"{}\" cannot be handled as a {}: expected a JSON object",
            rt.kind, rt.version, rt.kind
        )));
    };
    let api_version = rt.api_version();
    fill_type(obj, &api_version, rt.kind)?;
    let input = value.clone();
    let output = round_trip_shape(rt.shape, value).map_err(|e| {
        ApiError::BadRequest(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            rt.kind, rt.version, rt.kind
        ))
    })?;
    Ok((output.clone(), field_findings(&input, &output, fv)?))
}

/// Decodes an autoscaling/v1 Scale body.
pub fn decode_scale(
    mut value: Value,
    fv: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let Some(obj) = value.as_object_mut() else {
        return Err(ApiError::BadRequest(
            "Scale in version \"v1\" cannot be handled as a Scale".into(),
        ));
    };
    fill_type(obj, "autoscaling/v1", "Scale")?;
    let input = value.clone();
    let output = round_trip::<autoscaling::v1::Scale>(value).map_err(|e| {
        ApiError::BadRequest(format!(
            "Scale in version \"v1\" cannot be handled as a Scale: {e}"
        ))
    })?;
    Ok((output.clone(), field_findings(&input, &output, fv)?))
}

fn fill_type(obj: &mut Map<String, Value>, api_version: &str, kind: &str) -> Result<(), ApiError> {
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("apiVersion".into(), Value::String(api_version.to_string()));
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("kind".into(), Value::String(kind.to_string()));
        }
        Some(k) if k == kind => {}
        Some(k) => {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({kind})"
            )));
        }
    }
    Ok(())
}

fn field_findings(
    input: &Value,
    output: &Value,
    fv: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    if fv == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let mut unknown = Vec::new();
    unknown_fields(input, output, "", &mut unknown);
    let messages: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if fv == FieldValidation::Strict && !messages.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "strict decoding error: {}",
            messages.join(", ")
        )));
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;
    use serde_json::json;

    #[test]
    fn unknown_fields_warn_or_fail() {
        let svc = resources::find("", "v1", "services").unwrap();
        let body = json!({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 80, "bogus": 1}], "nope": true}});
        let (out, warnings) = decode(svc, body.clone(), FieldValidation::Warn).unwrap();
        assert_eq!(out["kind"], "Service");
        assert_eq!(out["apiVersion"], "v1");
        assert!(out["spec"].get("nope").is_none());
        assert_eq!(
            warnings,
            vec![
                r#"unknown field "spec.nope""#,
                r#"unknown field "spec.ports[0].bogus""#
            ]
        );
        let err = decode(svc, body, FieldValidation::Strict).unwrap_err();
        assert_eq!(err.code(), 400);
        assert!(
            err.to_string()
                .starts_with("strict decoding error: unknown field")
        );
    }

    #[test]
    fn wrong_shapes_are_bad_requests() {
        let deploy = resources::find("apps", "v1", "deployments").unwrap();
        for body in [
            json!({"spec": {"replicas": "three"}}),
            json!([1, 2]),
            json!({"kind": "Service"}),
            json!({"apiVersion": "v1"}),
        ] {
            let err = decode(deploy, body, FieldValidation::Warn).unwrap_err();
            assert_eq!(err.code(), 400, "{err}");
        }
    }
}
