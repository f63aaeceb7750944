//! The Kubernetes REST API: routing ([`route`]), discovery ([`discovery`]), object requests
//! ([`objects`]), watches ([`watch`]), server-side printing ([`table`]) and the pod
//! subresources that reach into the node ([`logs`], and [`portforward`] and [`exec`], which
//! the server hands the raw request because they upgrade the connection), and TokenRequest
//! ([`token`]). The HTTP server
//! ([`crate::server`]) authenticates a request, collects its body and hands it here.

pub mod discovery;
pub mod exec;
pub mod logs;
pub mod objects;
pub mod portforward;
pub mod protobuf;
pub mod route;
pub mod table;
pub mod token;
pub mod watch;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::error::ApiError;
use crate::store::Store;
use route::{Query, Route};

/// Response bodies: whole documents or watch streams.
pub type Body = BoxBody<Bytes, Infallible>;

/// A request with its body collected.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: Query,
    pub content_type: String,
    /// Whether the client asked for a `meta.k8s.io` Table (`kubectl get`).
    pub wants_table: bool,
    pub body: Bytes,
}

impl Request {
    pub fn new(parts: &http::request::Parts, body: Bytes) -> Self {
        let header = |name: header::HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let accept = header(header::ACCEPT);
        Request {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            query: Query::parse(parts.uri.query()),
            content_type: header(header::CONTENT_TYPE),
            wants_table: accept.split(',').any(|a| a.contains("as=Table")),
            body,
        }
    }
}

/// A whole JSON response.
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub body: Bytes,
    pub warnings: Vec<String>,
    pub content_type: &'static str,
}

impl Reply {
    pub fn bytes(code: u16, body: Bytes) -> Self {
        Reply {
            code,
            body,
            warnings: Vec::new(),
            content_type: "application/json",
        }
    }

    /// A plain-text answer (health checks).
    pub fn text(code: u16, body: &'static str) -> Self {
        Reply {
            content_type: "text/plain; charset=utf-8",
            ..Reply::bytes(code, Bytes::from_static(body.as_bytes()))
        }
    }

    pub fn json(code: u16, value: &Value) -> Self {
        Reply::bytes(code, Bytes::from(value.to_string()))
    }

    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }

    pub fn into_response(self) -> Response<Body> {
        let mut resp = Response::new(Full::new(self.body).boxed());
        *resp.status_mut() =
            StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        for w in self.warnings {
            let quoted = crate::error::go_quote(&w);
            if let Ok(v) = HeaderValue::from_str(&format!("299 - {quoted}")) {
                resp.headers_mut().append(header::WARNING, v);
            }
        }
        resp
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Self {
        Reply::json(e.code(), &e.status())
    }
}

/// What the API needs besides the store.
#[derive(Debug)]
pub struct Api {
    pub store: Arc<Store>,
    /// `host:port` of the API server, for `/api`'s serverAddressByClientCIDRs.
    pub address: String,
    /// Namespace names and pod directories, for pods/log and pods/portforward.
    pub layout: Arc<crate::node::Layout>,
    /// The running containers, for pods/exec (the kubelet keeps it).
    pub exec_targets: Arc<crate::kubelet::exec::ExecTargets>,
    /// The service-account tokens TokenRequest issues.
    pub tokens: Arc<crate::auth::Tokens>,
}

impl Api {
    /// Answers one authenticated request.
    pub fn handle(&self, req: Request) -> Response<Body> {
        match self.route(&req) {
            Ok(Answer::Whole(reply)) => reply.into_response(),
            Ok(Answer::Stream(resp)) => resp,
            Err(e) => Reply::from(e).into_response(),
        }
    }

    fn route(&self, req: &Request) -> Result<Answer, ApiError> {
        let route = route::parse(&req.path)?;
        let read_only = req.method == Method::GET || req.method == Method::HEAD;
        let whole = |v: Value| Ok(Answer::Whole(Reply::json(200, &v)));
        match route {
            Route::Objects(target) if target.subresource.as_deref() == Some("log") => {
                if !read_only {
                    return Err(ApiError::MethodNotAllowed);
                }
                let (ns, name) = (target.namespace.as_deref(), target.name.as_deref());
                let (Some(ns), Some(name)) = (ns, name) else {
                    return Err(ApiError::UnknownPath);
                };
                Ok(Answer::Stream(logs::handle(self, req, ns, name)?))
            }
            Route::Objects(target) if target.subresource.as_deref() == Some("token") => Ok(
                Answer::Whole(token::handle(&self.store, &self.tokens, req, &target)?),
            ),
            Route::Objects(target) => {
                if req.method == Method::GET && target.name.is_none() && req.query.flag("watch") {
                    return Ok(Answer::Stream(watch::start(
                        self.store.clone(),
                        req,
                        &target,
                    )?));
                }
                Ok(Answer::Whole(objects::handle(&self.store, req, &target)?))
            }
            _ if !read_only => Err(ApiError::MethodNotAllowed),
            Route::Health => Ok(Answer::Whole(Reply::text(200, "ok"))),
            Route::Version => whole(discovery::version()),
            Route::CoreVersions => whole(discovery::core_versions(&self.address)),
            Route::Groups => whole(discovery::groups()),
            Route::Group(g) => whole(discovery::group(&g)?),
            Route::Resources(g, v) => whole(discovery::resource_list(&g, &v)?),
            // No OpenAPI v2: clients fall back to the v3 documents or to their built-in types.
            Route::OpenApiV2 => Err(ApiError::UnknownPath),
            Route::OpenApiV3Root => whole(discovery::openapi_v3_root()),
            Route::OpenApiV3(gv) => whole(discovery::openapi_v3(&gv)?),
        }
    }
}

enum Answer {
    Whole(Reply),
    Stream(Response<Body>),
}
