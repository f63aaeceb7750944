//! Errors the API answers with, and their `Status` bodies worded as a real API server words
//! them (kubectl prints `Error from server (<reason>): <message>`).

use serde_json::{Value, json};

use crate::resources::ResourceType;

/// One entry of `details.causes` in a 422 Invalid Status.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueDuplicate`, ...
    pub reason: &'static str,
    /// The field path, e.g. `spec.ports[0].port`.
    pub field: String,
    /// The message without the field, e.g. `Required value`.
    pub message: String,
}

impl Cause {
    pub fn required(field: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }

    /// `Invalid value: <value>: <detail>`, where `value` is already formatted the Go way.
    pub fn invalid(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        detail: impl std::fmt::Display,
    ) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value}: {detail}"),
        }
    }

    pub fn invalid_str(
        field: impl Into<String>,
        value: &str,
        detail: impl std::fmt::Display,
    ) -> Self {
        Self::invalid(field, go_quote(value), detail)
    }

    pub fn unsupported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
        Cause {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                go_quote(value),
                list.join(", ")
            ),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Self {
        Cause {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {value}"),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {}", detail.into()),
        }
    }

    pub fn immutable(field: impl Into<String>, value: impl std::fmt::Display) -> Self {
        Self::invalid(field, value, "field is immutable")
    }
}

/// Quotes a string like Go's `%q`.
pub fn go_quote(s: &str) -> String {
    // JSON string escaping matches Go's %q for everything the API carries.
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// A failed API request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        resource: String,
        group: &'static str,
        name: String,
    },
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        resource: String,
        group: &'static str,
        name: String,
    },
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {detail}")]
    Conflict {
        resource: String,
        group: &'static str,
        name: String,
        detail: String,
    },
    #[error("{}", invalid_message(kind, name, causes))]
    Invalid {
        kind: &'static str,
        group: &'static str,
        name: String,
        causes: Vec<Cause>,
    },
    /// A request that cannot be applied (e.g. a failing JSON patch `test`): kube-apiserver's
    /// words exactly, which say no more.
    #[error("the server rejected our request due to an error in our request")]
    InvalidRequest,
    #[error("{0}")]
    BadRequest(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("the server could not find the requested resource")]
    UnknownPath,
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Expired(String),
}

fn invalid_message(kind: &str, name: &str, causes: &[Cause]) -> String {
    let parts: Vec<String> = causes
        .iter()
        .map(|c| {
            if c.field.is_empty() {
                c.message.clone()
            } else {
                format!("{}: {}", c.field, c.message)
            }
        })
        .collect();
    match parts.as_slice() {
        [one] => format!("{kind} \"{name}\" is invalid: {one}"),
        _ => format!("{kind} \"{name}\" is invalid: [{}]", parts.join(", ")),
    }
}

impl ApiError {
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        ApiError::NotFound {
            resource: rt.qualified_plural(),
            group: rt.group,
            name: name.to_string(),
        }
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        ApiError::AlreadyExists {
            resource: rt.qualified_plural(),
            group: rt.group,
            name: name.to_string(),
        }
    }

    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        ApiError::Conflict {
            resource: rt.qualified_plural(),
            group: rt.group,
            name: name.to_string(),
            detail: "the object has been modified; please apply your changes to the latest version and try again"
                .into(),
        }
    }

    pub fn invalid(rt: &ResourceType, name: &str, causes: Vec<Cause>) -> Self {
        ApiError::Invalid {
            kind: rt.kind,
            group: rt.group,
            name: name.to_string(),
            causes,
        }
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } | ApiError::UnknownPath => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Invalid { .. } | ApiError::InvalidRequest => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::MethodNotAllowed => 405,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Expired(_) => 410,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::UnknownPath => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } | ApiError::InvalidRequest => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Expired(_) => "Expired",
        }
    }

    fn details(&self) -> Option<Value> {
        let with_group = |mut v: Value, group: &str| {
            if !group.is_empty() {
                v["group"] = json!(group);
            }
            v
        };
        match self {
            ApiError::NotFound {
                resource,
                group,
                name,
            }
            | ApiError::AlreadyExists {
                resource,
                group,
                name,
            }
            | ApiError::Conflict {
                resource,
                group,
                name,
                ..
            } => {
                let kind = resource.split('.').next().unwrap_or(resource);
                Some(with_group(json!({"name": name, "kind": kind}), group))
            }
            ApiError::Invalid {
                kind,
                group,
                name,
                causes,
            } => {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                Some(with_group(
                    json!({"name": name, "kind": kind, "causes": causes}),
                    group,
                ))
            }
            ApiError::UnknownPath => Some(json!({})),
            _ => None,
        }
    }

    /// The `Status` object sent as the response body (and in watch ERROR events).
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        if let Some(details) = self.details() {
            status["details"] = details;
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;

    #[test]
    fn not_found_is_worded_like_kube_apiserver() {
        let svc = resources::find("", "v1", "services").unwrap();
        let err = ApiError::not_found(svc, "x");
        assert_eq!(err.to_string(), r#"services "x" not found"#);
        assert_eq!(
            err.status()["details"],
            json!({"name": "x", "kind": "services"})
        );
        let deploy = resources::find("apps", "v1", "deployments").unwrap();
        let err = ApiError::not_found(deploy, "web");
        assert_eq!(err.to_string(), r#"deployments.apps "web" not found"#);
        assert_eq!(err.status()["details"]["group"], "apps");
    }

    #[test]
    fn invalid_lists_causes() {
        let svc = resources::find("", "v1", "services").unwrap();
        let one = ApiError::invalid(svc, "x", vec![Cause::required("spec.ports")]);
        assert_eq!(
            one.to_string(),
            r#"Service "x" is invalid: spec.ports: Required value"#
        );
        let two = ApiError::invalid(svc, "x", vec![Cause::required("a"), Cause::required("b")]);
        assert_eq!(
            two.to_string(),
            r#"Service "x" is invalid: [a: Required value, b: Required value]"#
        );
        assert_eq!(two.status()["code"], 422);
        assert_eq!(two.status()["details"]["causes"][1]["field"], "b");
    }
}
