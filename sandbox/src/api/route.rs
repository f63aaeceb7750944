//! Request paths and query parameters, parsed into what the handlers need.

use std::collections::HashMap;

use crate::error::ApiError;
use crate::resources::{self, ResourceType, Shape};

/// A path addressing objects of one resource type.
#[derive(Debug, Clone)]
pub struct Target {
    pub rt: &'static ResourceType,
    /// The namespace in the path; None for cluster-scoped types and all-namespaces lists.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    /// The namespace key the store uses ("" for cluster-scoped types).
    pub fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
}

/// What a request path names.
#[derive(Debug)]
pub enum Route {
    Health,
    Version,
    CoreVersions,
    Groups,
    Group(String),
    Resources(String, String),
    OpenApiV2,
    OpenApiV3Root,
    OpenApiV3(String),
    Objects(Target),
}

/// Parses a path; unknown paths and resources are `ApiError::UnknownPath` (404).
pub fn parse(path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["healthz" | "livez" | "readyz", ..] => Ok(Route::Health),
        ["version"] => Ok(Route::Version),
        ["api"] => Ok(Route::CoreVersions),
        ["apis"] => Ok(Route::Groups),
        ["apis", group] => Ok(Route::Group(group.to_string())),
        ["api", "v1"] => Ok(Route::Resources(String::new(), "v1".into())),
        ["apis", group, version] => Ok(Route::Resources(group.to_string(), version.to_string())),
        ["openapi", "v2"] => Ok(Route::OpenApiV2),
        ["openapi", "v3"] => Ok(Route::OpenApiV3Root),
        ["openapi", "v3", rest @ ..] => Ok(Route::OpenApiV3(rest.join("/"))),
        ["api", "v1", rest @ ..] => objects("", "v1", rest),
        ["apis", group, version, rest @ ..] => objects(group, version, rest),
        _ => Err(ApiError::UnknownPath),
    }
}

fn objects(group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    let find = |plural: &str| resources::find(group, version, plural).ok_or(ApiError::UnknownPath);
    let owned = |s: &&str| Some(s.to_string());
    let target = match rest {
        ["namespaces", ns, plural, tail @ ..] if *plural != "status" => {
            let rt = find(plural)?;
            if !rt.namespaced {
                return Err(ApiError::UnknownPath);
            }
            let (name, subresource) = match tail {
                [] => (None, None),
                [name] => (owned(name), None),
                [name, sub] => (owned(name), owned(sub)),
                _ => return Err(ApiError::UnknownPath),
            };
            Target {
                rt,
                namespace: owned(ns),
                name,
                subresource,
            }
        }
        [plural, tail @ ..] => {
            let rt = find(plural)?;
            let (name, subresource) = match tail {
                [] => (None, None),
                // Namespaced objects are addressed only under their namespace.
                [name] if !rt.namespaced => (owned(name), None),
                [name, sub] if !rt.namespaced => (owned(name), owned(sub)),
                _ => return Err(ApiError::UnknownPath),
            };
            Target {
                rt,
                namespace: None,
                name,
                subresource,
            }
        }
        [] => return Err(ApiError::UnknownPath),
    };
    match (target.subresource.as_deref(), target.rt) {
        (None, _) => {}
        (Some("status"), rt) if rt.has_status => {}
        (Some("scale"), rt) if rt.has_scale => {}
        (Some("log" | "portforward" | "exec"), rt) if rt.shape == Shape::Pod => {}
        (Some("token"), rt) if rt.shape == Shape::ServiceAccount => {}
        _ => return Err(ApiError::UnknownPath),
    }
    Ok(Route::Objects(target))
}

/// Query parameters, decoded.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned();
        Query(pairs.collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A boolean parameter: `true`/`1` are true.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    /// A numeric parameter; a malformed value is a 400.
    pub fn number(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| {
                ApiError::BadRequest(format!("invalid value {s:?} for query parameter {key}"))
            }),
        }
    }

    /// Whether `dryRun=All` was asked for.
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::BadRequest(format!(
                "Invalid dry run value: {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        match parse(path).unwrap() {
            Route::Objects(t) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn object_paths() {
        let t = target("/api/v1/namespaces/default/services/web");
        assert_eq!(
            (t.rt.plural, t.ns(), t.name.as_deref()),
            ("services", "default", Some("web"))
        );
        let t = target("/api/v1/namespaces/default");
        assert_eq!(
            (t.rt.plural, t.ns(), t.name.as_deref()),
            ("namespaces", "", Some("default"))
        );
        let t = target("/api/v1/namespaces/x/status");
        assert_eq!(
            (t.name.as_deref(), t.subresource.as_deref()),
            (Some("x"), Some("status"))
        );
        let t = target("/apis/apps/v1/namespaces/a/deployments/web/scale");
        assert_eq!(t.subresource.as_deref(), Some("scale"));
        let t = target("/api/v1/pods");
        assert!(t.namespace.is_none() && t.name.is_none());
    }

    #[test]
    fn unknown_paths_are_404() {
        for path in [
            "/api/v1/widgets",
            "/api/v1/pods/x",
            "/api/v1/namespaces/a/nodes",
            "/apis/apps/v1/namespaces/a/deployments/web/logs",
            "/api/v1/namespaces/a/configmaps/x/status",
            "/apis/apps/v2/deployments",
            "/nope",
        ] {
            assert_eq!(parse(path).unwrap_err().code(), 404, "{path}");
        }
    }

    #[test]
    fn queries_decode() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=1&limit=x",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert!(q.number("limit").is_err());
    }
}
