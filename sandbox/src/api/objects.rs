//! Handlers for object requests: get, list, create, update, patch, delete, deletecollection,
//! and the status and scale subresources.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{BufMut, Bytes, BytesMut};
use http::Method;
use serde_json::{Value, json};

use super::route::{Query, Target};
use super::{Reply, Request};
use crate::admission::{self, FieldValidation, Part};
use crate::error::ApiError;
use crate::lifecycle::{self, DeleteOptions};
use crate::patch::{self, PatchType};
use crate::resources::ResourceType;
use crate::store::selector::{FieldSelector, LabelSelector};
use crate::store::{Store, Stored};

/// Label and field selectors of a list, watch or deletecollection.
pub struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn parse(target: &Target, query: &Query) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let fields =
            FieldSelector::parse(query.get("fieldSelector").unwrap_or_default(), target.rt)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(Filter { labels, fields })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(&object["metadata"]["labels"]) && self.fields.matches(object)
    }
}

/// Dispatches a request for objects (not watches) by method and subresource.
pub fn handle(store: &Store, req: &Request, target: &Target) -> Result<Reply, ApiError> {
    let sub = target.subresource.as_deref();
    match (&req.method, target.name.as_deref(), sub) {
        (&Method::GET, None, _) => list(store, req, target),
        (&Method::POST, None, _) => create(store, req, target),
        (&Method::DELETE, None, _) => delete_collection(store, req, target),
        (&Method::GET, Some(_), Some("scale")) => scale_get(store, target),
        (&Method::PUT | &Method::PATCH, Some(_), Some("scale")) => scale_write(store, req, target),
        (&Method::GET, Some(name), _) => get(store, req, target, name),
        (&Method::PUT, Some(name), _) => write(store, req, target, name, None),
        (&Method::PATCH, Some(name), _) => {
            let patch_type = PatchType::from_content_type(&req.content_type)?;
            write(store, req, target, name, Some(patch_type))
        }
        (&Method::DELETE, Some(name), None) => delete(store, req, target, name),
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// Parses a JSON, YAML or (for `rt`'s objects) protobuf request body.
pub fn parse_body(req: &Request, rt: Option<&ResourceType>) -> Result<Value, ApiError> {
    let media = req
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    match (media, rt) {
        ("application/vnd.kubernetes.protobuf", Some(rt)) => super::protobuf::decode(rt, &req.body),
        _ => parse_text_body(req, media),
    }
}

fn parse_text_body(req: &Request, media: &str) -> Result<Value, ApiError> {
    match media {
        "application/yaml" => serde_saphyr::from_slice(&req.body)
            .map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}"))),
        "" | "application/json" | "*/*" => serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::BadRequest(format!("error decoding JSON: {e}"))),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml; got {other:?}"
        ))),
    }
}

fn get(store: &Store, req: &Request, target: &Target, name: &str) -> Result<Reply, ApiError> {
    let obj = store
        .read(|s| s.get(target.rt, target.ns(), name).cloned())
        .ok_or_else(|| ApiError::not_found(target.rt, name))?;
    if req.wants_table {
        let rv = obj.rv;
        return Ok(Reply::json(
            200,
            &super::table::table(target.rt, &[obj], rv, &req.query),
        ));
    }
    Ok(Reply::bytes(200, obj.json.clone()))
}

/// A continue token: the list's resourceVersion and the last key returned.
fn encode_continue(rv: u64, last: &Stored) -> String {
    B64.encode(json!({"rv": rv, "ns": last.namespace(), "name": last.name()}).to_string())
}

fn decode_continue(token: &str) -> Result<(u64, String, String), ApiError> {
    let bad = || ApiError::BadRequest(format!("invalid continue token {token:?}"));
    let raw = B64.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    match (v["rv"].as_u64(), v["ns"].as_str(), v["name"].as_str()) {
        (Some(rv), Some(ns), Some(name)) => Ok((rv, ns.to_string(), name.to_string())),
        _ => Err(bad()),
    }
}

fn list(store: &Store, req: &Request, target: &Target) -> Result<Reply, ApiError> {
    let filter = Filter::parse(target, &req.query)?;
    let limit = req
        .query
        .number("limit")?
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    let cont = req
        .query
        .get("continue")
        .filter(|s| !s.is_empty())
        .map(decode_continue)
        .transpose()?;
    let ns = target.namespace.as_deref();
    let (items, rv, more) = store.read(|s| {
        let after = cont.as_ref().map(|(_, n, m)| (n.as_str(), m.as_str()));
        let mut items: Vec<Arc<Stored>> = Vec::new();
        let mut more = false;
        for obj in s.list(target.rt, ns, after) {
            if !filter.matches(&obj.value) {
                continue;
            }
            if limit.is_some_and(|l| items.len() == l) {
                more = true;
                break;
            }
            items.push(obj.clone());
        }
        // A continued list reports the resourceVersion of its first page.
        (items, cont.as_ref().map_or(s.rv(), |(rv, _, _)| *rv), more)
    });
    let next = if more {
        items.last().map(|last| encode_continue(rv, last))
    } else {
        None
    };
    if req.wants_table {
        let mut table = super::table::table(target.rt, &items, rv, &req.query);
        if let Some(next) = next {
            table["metadata"]["continue"] = json!(next);
        }
        return Ok(Reply::json(200, &table));
    }
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(next) = next {
        meta["continue"] = json!(next);
    }
    let head = json!({"kind": target.rt.list_kind(), "apiVersion": target.rt.api_version(), "metadata": meta}).to_string();
    let mut out = BytesMut::with_capacity(
        head.len() + items.iter().map(|i| i.json.len() + 1).sum::<usize>() + 16,
    );
    // `head` is a JSON object: drop its closing brace and append the items.
    out.put_slice(&head.as_bytes()[..head.len() - 1]);
    out.put_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(&item.json);
    }
    out.put_slice(b"]}");
    Ok(Reply::bytes(200, out.freeze()))
}

fn create(store: &Store, req: &Request, target: &Target) -> Result<Reply, ApiError> {
    let body = parse_body(req, Some(target.rt))?;
    let fv = FieldValidation::parse(req.query.get("fieldValidation"))?;
    let dry_run = req.query.dry_run()?;
    let rt = target.rt;
    let ns = target.ns().to_string();
    let (obj, warnings) = store.write(|s| {
        let (obj, warnings) = admission::admit_create(s, rt, &ns, body, fv)?;
        if dry_run {
            return Ok((Bytes::from(obj.to_string()), warnings));
        }
        Ok::<_, ApiError>((s.put(rt, obj).json.clone(), warnings))
    })?;
    Ok(Reply::bytes(201, obj).with_warnings(warnings))
}

/// What a PUT or PATCH does to the current object.
enum Change {
    Replace(Value),
    Patch(PatchType),
}

impl Change {
    /// `rt` is the type of the body (None for Scale bodies).
    fn of(
        req: &Request,
        patch_type: Option<PatchType>,
        rt: Option<&ResourceType>,
    ) -> Result<Self, ApiError> {
        match patch_type {
            Some(pt) => Ok(Change::Patch(pt)),
            None => Ok(Change::Replace(parse_body(req, rt)?)),
        }
    }

    fn apply(&self, current: &Value, req: &Request) -> Result<Value, ApiError> {
        match self {
            Change::Replace(v) => Ok(v.clone()),
            Change::Patch(pt) => patch::apply(current, *pt, &req.body),
        }
    }
}

/// PUT (patch_type None) or PATCH of an object or its status.
fn write(
    store: &Store,
    req: &Request,
    target: &Target,
    name: &str,
    patch_type: Option<PatchType>,
) -> Result<Reply, ApiError> {
    let fv = FieldValidation::parse(req.query.get("fieldValidation"))?;
    let dry_run = req.query.dry_run()?;
    let part = if target.subresource.as_deref() == Some("status") {
        Part::Status
    } else {
        Part::Main
    };
    let change = Change::of(req, patch_type, Some(target.rt))?;
    let rt = target.rt;
    let (obj, warnings) = store.write(|s| {
        let old = s
            .get(rt, target.ns(), name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        let new = change.apply(&old.value, req)?;
        let (obj, warnings) = admission::admit_update(s, rt, &old.value, new, part, fv)?;
        if dry_run {
            return Ok((Bytes::from(obj.to_string()), warnings));
        }
        Ok::<_, ApiError>((lifecycle::store_update(s, rt, obj).json.clone(), warnings))
    })?;
    Ok(Reply::bytes(200, obj).with_warnings(warnings))
}

/// Delete options from the body and the query, as kubectl and client-go send them.
fn delete_options(req: &Request) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions::parse(
        &req.body,
        req.query.get("propagationPolicy"),
        req.query.get("orphanDependents"),
        req.query.get("gracePeriodSeconds"),
    )?;
    opts.dry_run |= req.query.dry_run()?;
    Ok(opts)
}

fn delete(store: &Store, req: &Request, target: &Target, name: &str) -> Result<Reply, ApiError> {
    let opts = delete_options(req)?;
    let gone = store.write(|s| lifecycle::delete(s, target.rt, target.ns(), name, &opts))?;
    Ok(Reply::bytes(200, gone.json.clone()))
}

fn delete_collection(store: &Store, req: &Request, target: &Target) -> Result<Reply, ApiError> {
    let filter = Filter::parse(target, &req.query)?;
    let opts = delete_options(req)?;
    let rt = target.rt;
    let ns = target.namespace.as_deref();
    let deleted = store.write(|s| {
        let names: Vec<(String, String)> = s
            .list(rt, ns, None)
            .filter(|o| filter.matches(&o.value))
            .map(|o| (o.namespace().to_string(), o.name().to_string()))
            .collect();
        let mut out = Vec::new();
        for (n, m) in names {
            out.push(lifecycle::delete(s, rt, &n, &m, &opts)?.value.clone());
        }
        Ok::<_, ApiError>(out)
    })?;
    let list = json!({"kind": rt.list_kind(), "apiVersion": rt.api_version(), "metadata": {}, "items": deleted});
    Ok(Reply::json(200, &list))
}

/// The autoscaling/v1 Scale view of a Deployment or ReplicaSet.
fn scale_of(obj: &Value) -> Value {
    let selector = LabelSelector::to_query_string(&obj["spec"]["selector"]);
    let meta = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

fn scale_get(store: &Store, target: &Target) -> Result<Reply, ApiError> {
    let name = target.name.as_deref().unwrap_or_default();
    let obj = store
        .read(|s| s.get(target.rt, target.ns(), name).cloned())
        .ok_or_else(|| ApiError::not_found(target.rt, name))?;
    Ok(Reply::json(200, &scale_of(&obj.value)))
}

fn scale_write(store: &Store, req: &Request, target: &Target) -> Result<Reply, ApiError> {
    let fv = FieldValidation::parse(req.query.get("fieldValidation"))?;
    let dry_run = req.query.dry_run()?;
    let name = target.name.as_deref().unwrap_or_default();
    let rt = target.rt;
    let patch_type = if req.method == Method::PATCH {
        Some(PatchType::from_content_type(&req.content_type)?)
    } else {
        None
    };
    let change = Change::of(req, patch_type, None)?;
    let scale = store.write(|s| {
        let old = s
            .get(rt, target.ns(), name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        let new = change.apply(&scale_of(&old.value), req)?;
        let (new, _) = admission::typed::decode_scale(new, fv)?;
        if let Some(rv) = new["metadata"]["resourceVersion"]
            .as_str()
            .filter(|s| !s.is_empty())
            && rv != old.rv.to_string()
        {
            return Err(ApiError::conflict(rt, name));
        }
        let replicas = new["spec"]["replicas"].as_i64().unwrap_or(0);
        let mut updated = old.value.clone();
        updated["spec"]["replicas"] = json!(replicas);
        let (updated, _) = admission::admit_update(
            s,
            rt,
            &old.value,
            updated,
            Part::Main,
            FieldValidation::Ignore,
        )?;
        if dry_run {
            return Ok(scale_of(&updated));
        }
        Ok::<_, ApiError>(scale_of(&s.put(rt, updated).value))
    })?;
    Ok(Reply::json(200, &scale))
}
