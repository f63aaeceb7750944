//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! which kubectl's typed clients send (`kubectl create service|deployment|configmap|...`).
//!
//! A body is the magic `k8s\0` and a `runtime.Unknown` message wrapping the object's own
//! protobuf. The object is decoded into JSON by walking the wire format with a table of the
//! messages' field numbers and JSON names (from `generated.proto` of the Kubernetes API); the
//! table covers the kinds kubectl creates that tether uses (Ingress included), and
//! `kubectl create token`'s TokenRequest. A field the table does not know is an error (415)
//! naming it, never silently dropped.
//!
//! As in Go, a scalar that is not a pointer is always on the wire, so zero values (`""`, `0`,
//! `false`) are dropped unless the field is a pointer (marked `IntOpt`/`BoolOpt`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::resources::{ResourceType, Shape};

mod schema;

use schema::*;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtoError {
    #[error("the protobuf body is truncated or malformed")]
    Malformed,
    #[error(
        "field {tag} of {message} is not supported in protobuf bodies by tether-sandbox; send JSON"
    )]
    UnknownField { message: &'static str, tag: u64 },
    #[error("protobuf bodies of kind {0} are not supported by tether-sandbox; send JSON")]
    UnsupportedKind(String),
}

impl From<ProtoError> for ApiError {
    fn from(e: ProtoError) -> Self {
        match e {
            ProtoError::Malformed => ApiError::BadRequest(e.to_string()),
            _ => ApiError::UnsupportedMediaType(e.to_string()),
        }
    }
}

/// A cursor over protobuf wire data.
struct Wire<'a> {
    buf: &'a [u8],
}

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.buf.split_first().ok_or(ProtoError::Malformed)?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtoError::Malformed)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.buf.len() < n {
            return Err(ProtoError::Malformed);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// Reads one field: (tag, wire type, varint value or payload).
    fn field(&mut self) -> Result<(u64, Payload<'a>), ProtoError> {
        let key = self.varint()?;
        let payload = match key & 7 {
            0 => Payload::Varint(self.varint()?),
            1 => Payload::Bytes(self.take(8)?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| ProtoError::Malformed)?;
                Payload::Bytes(self.take(len)?)
            }
            5 => Payload::Bytes(self.take(4)?),
            _ => return Err(ProtoError::Malformed),
        };
        Ok((key >> 3, payload))
    }
}

enum Payload<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

impl<'a> Payload<'a> {
    fn bytes(&self) -> Result<&'a [u8], ProtoError> {
        match self {
            Payload::Bytes(b) => Ok(b),
            Payload::Varint(_) => Err(ProtoError::Malformed),
        }
    }

    fn int(&self) -> Result<i64, ProtoError> {
        match self {
            // Protobuf int32/int64 are two's complement in a varint.
            Payload::Varint(v) => Ok(*v as i64),
            Payload::Bytes(_) => Err(ProtoError::Malformed),
        }
    }

    fn string(&self) -> Result<String, ProtoError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| ProtoError::Malformed)
    }
}

/// Decodes a `{key = 1, value = 2}` map entry.
fn map_entry(buf: &[u8]) -> Result<(String, Option<&[u8]>), ProtoError> {
    let mut wire = Wire { buf };
    let (mut key, mut value) = (String::new(), None);
    while !wire.buf.is_empty() {
        match wire.field()? {
            (1, p) => key = p.string()?,
            (2, p) => value = Some(p.bytes()?),
            _ => return Err(ProtoError::Malformed),
        }
    }
    Ok((key, value))
}

/// The first string field of a message (Quantity's `string`).
fn single_string(buf: &[u8]) -> Result<String, ProtoError> {
    let mut wire = Wire { buf };
    let mut out = String::new();
    while !wire.buf.is_empty() {
        if let (1, p) = wire.field()? {
            out = p.string()?;
        }
    }
    Ok(out)
}

fn int_or_string(buf: &[u8]) -> Result<Value, ProtoError> {
    let mut wire = Wire { buf };
    let (mut kind, mut int, mut string) = (0, 0, String::new());
    while !wire.buf.is_empty() {
        match wire.field()? {
            (1, p) => kind = p.int()?,
            (2, p) => int = p.int()?,
            (3, p) => string = p.string()?,
            _ => return Err(ProtoError::Malformed),
        }
    }
    Ok(if kind == 1 {
        json!(string)
    } else {
        json!(int as i32)
    })
}

/// Go's zero time (0001-01-01) marshals as this many seconds; it means "unset".
const GO_ZERO_TIME: i64 = -62_135_596_800;

fn time(buf: &[u8]) -> Result<Option<Value>, ProtoError> {
    let mut wire = Wire { buf };
    let mut seconds = 0;
    while !wire.buf.is_empty() {
        if let (1, p) = wire.field()? {
            seconds = p.int()?;
        }
    }
    if seconds == GO_ZERO_TIME {
        return Ok(None);
    }
    let ts = jiff::Timestamp::from_second(seconds).map_err(|_| ProtoError::Malformed)?;
    Ok(Some(json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())))
}

fn message(buf: &[u8], msg: &'static Msg) -> Result<Map<String, Value>, ProtoError> {
    let mut out = Map::new();
    let mut wire = Wire { buf };
    while !wire.buf.is_empty() {
        let (tag, payload) = wire.field()?;
        let &(_, name, kind) =
            msg.fields
                .iter()
                .find(|(t, _, _)| *t == tag)
                .ok_or(ProtoError::UnknownField {
                    message: msg.name,
                    tag,
                })?;
        let name = name.to_string();
        match kind {
            F::Str => {
                let s = payload.string()?;
                if !s.is_empty() {
                    out.insert(name, json!(s));
                }
            }
            F::Int | F::IntOpt => {
                let n = payload.int()?;
                if n != 0 || matches!(kind, F::IntOpt) {
                    out.insert(name, json!(n));
                }
            }
            F::Bool | F::BoolOpt => {
                let b = payload.int()? != 0;
                if b || matches!(kind, F::BoolOpt) {
                    out.insert(name, json!(b));
                }
            }
            F::StrList => push(&mut out, name, json!(payload.string()?)),
            F::Msg(inner) => {
                out.insert(name, Value::Object(message(payload.bytes()?, inner)?));
            }
            F::Inline(inner) => out.extend(message(payload.bytes()?, inner)?),
            F::MsgList(inner) => push(
                &mut out,
                name,
                Value::Object(message(payload.bytes()?, inner)?),
            ),
            F::StrMap | F::BytesMap | F::QuantityMap => {
                let (key, value) = map_entry(payload.bytes()?)?;
                let value = value.unwrap_or_default();
                let value = match kind {
                    F::BytesMap => json!(B64.encode(value)),
                    F::QuantityMap => json!(single_string(value)?),
                    _ => {
                        json!(String::from_utf8(value.to_vec()).map_err(|_| ProtoError::Malformed)?)
                    }
                };
                let map = out.entry(name).or_insert_with(|| json!({}));
                if let Some(m) = map.as_object_mut() {
                    m.insert(key, value);
                }
            }
            F::IntOrString => {
                out.insert(name, int_or_string(payload.bytes()?)?);
            }
            F::Time => {
                if let Some(t) = time(payload.bytes()?)? {
                    out.insert(name, t);
                }
            }
            F::Skip => {}
        }
    }
    Ok(out)
}

fn push(out: &mut Map<String, Value>, name: String, item: Value) {
    let list = out.entry(name).or_insert_with(|| json!([]));
    if let Some(items) = list.as_array_mut() {
        items.push(item);
    }
}

/// Decodes a protobuf request body for a resource type into its JSON form.
pub fn decode(rt: &ResourceType, body: &[u8]) -> Result<Value, ApiError> {
    let schema = match rt.shape {
        Shape::Service => &SERVICE,
        Shape::Namespace => &NAMESPACE,
        Shape::ConfigMap => &CONFIG_MAP,
        Shape::Secret => &SECRET,
        Shape::ServiceAccount => &SERVICE_ACCOUNT,
        Shape::Deployment => &DEPLOYMENT,
        Shape::Ingress => &INGRESS,
        _ => return Err(ProtoError::UnsupportedKind(rt.kind.to_string()).into()),
    };
    decode_as(body, schema, &rt.api_version(), rt.kind)
}

/// A TokenRequest (the body of `serviceaccounts/{name}/token`, not a stored kind).
pub fn decode_token_request(body: &[u8]) -> Result<Value, ApiError> {
    decode_as(
        body,
        &TOKEN_REQUEST,
        "authentication.k8s.io/v1",
        "TokenRequest",
    )
}

/// Decodes the envelope and the object in it as `schema`; `api_version` and `kind` stand in
/// when the envelope leaves them out.
fn decode_as(
    body: &[u8],
    schema: &'static Msg,
    default_api_version: &str,
    default_kind: &str,
) -> Result<Value, ApiError> {
    let envelope = body.strip_prefix(b"k8s\0").ok_or(ProtoError::Malformed)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    let mut wire = Wire { buf: envelope };
    while !wire.buf.is_empty() {
        match wire.field()? {
            (1, p) => {
                let mut meta = Wire { buf: p.bytes()? };
                while !meta.buf.is_empty() {
                    match meta.field()? {
                        // runtime.TypeMeta: apiVersion = 1, kind = 2.
                        (1, v) => api_version = v.string()?,
                        (2, k) => kind = k.string()?,
                        _ => {}
                    }
                }
            }
            (2, p) => raw = p.bytes()?,
            _ => {}
        }
    }
    let mut object = message(raw, schema)?;
    object.insert(
        "apiVersion".into(),
        json!(if api_version.is_empty() {
            default_api_version.to_string()
        } else {
            api_version
        }),
    );
    object.insert(
        "kind".into(),
        json!(if kind.is_empty() {
            default_kind.to_string()
        } else {
            kind
        }),
    );
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(tag: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(tag << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn int_field(tag: u64, v: u64, out: &mut Vec<u8>) {
        varint(tag << 3, out);
        varint(v, out);
    }

    /// A Service as kubectl's typed client encodes it.
    fn service_body() -> Vec<u8> {
        let mut meta = Vec::new();
        bytes_field(1, b"x", &mut meta);
        bytes_field(3, b"", &mut meta);
        let mut label = Vec::new();
        bytes_field(1, b"app", &mut label);
        bytes_field(2, b"x", &mut label);
        bytes_field(11, &label, &mut meta);
        let mut target = Vec::new();
        int_field(1, 0, &mut target);
        int_field(2, 8080, &mut target);
        let mut port = Vec::new();
        bytes_field(1, b"80-80", &mut port);
        bytes_field(2, b"TCP", &mut port);
        int_field(3, 80, &mut port);
        bytes_field(4, &target, &mut port);
        int_field(5, 0, &mut port);
        let mut spec = Vec::new();
        bytes_field(1, &port, &mut spec);
        bytes_field(3, b"1.1.1.1", &mut spec);
        bytes_field(4, b"ClusterIP", &mut spec);
        int_field(13, 0, &mut spec);
        let mut svc = Vec::new();
        bytes_field(1, &meta, &mut svc);
        bytes_field(2, &spec, &mut svc);
        bytes_field(3, &[], &mut svc);
        let mut type_meta = Vec::new();
        bytes_field(1, b"v1", &mut type_meta);
        bytes_field(2, b"Service", &mut type_meta);
        let mut envelope = b"k8s\0".to_vec();
        bytes_field(1, &type_meta, &mut envelope);
        bytes_field(2, &svc, &mut envelope);
        envelope
    }

    #[test]
    fn decodes_a_service() {
        let svc = resources::find("", "v1", "services").unwrap();
        let v = decode(svc, &service_body()).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "labels": {"app": "x"}},
                "spec": {"ports": [{"name": "80-80", "protocol": "TCP", "port": 80, "targetPort": 8080}], "clusterIP": "1.1.1.1", "type": "ClusterIP"}})
        );
    }

    #[test]
    fn decodes_kubectl_create_tokens_request() {
        let mut bound = Vec::new();
        bytes_field(1, b"Pod", &mut bound);
        bytes_field(3, b"web-1", &mut bound);
        bytes_field(4, b"u-1", &mut bound);
        let mut spec = Vec::new();
        bytes_field(1, b"api", &mut spec);
        bytes_field(3, &bound, &mut spec);
        int_field(4, 3600, &mut spec);
        let mut request = Vec::new();
        bytes_field(1, &[], &mut request);
        bytes_field(2, &spec, &mut request);
        bytes_field(3, &[], &mut request);
        let mut envelope = b"k8s\0".to_vec();
        bytes_field(2, &request, &mut envelope);
        assert_eq!(
            decode_token_request(&envelope).unwrap(),
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "metadata": {},
                "spec": {"audiences": ["api"], "expirationSeconds": 3600,
                    "boundObjectRef": {"kind": "Pod", "name": "web-1", "uid": "u-1"}}})
        );
    }

    #[test]
    fn malformed_and_unknown_input_is_an_error() {
        let svc = resources::find("", "v1", "services").unwrap();
        let body = service_body();
        for cut in [3, 10, body.len() - 1] {
            assert!(decode(svc, &body[..cut]).is_err(), "cut at {cut}");
        }
        let mut unknown = b"k8s\0".to_vec();
        let mut obj = Vec::new();
        int_field(99, 1, &mut obj);
        bytes_field(2, &obj, &mut unknown);
        assert_eq!(decode(svc, &unknown).unwrap_err().code(), 415);
        let pods = resources::find("", "v1", "pods").unwrap();
        assert_eq!(decode(pods, &body).unwrap_err().code(), 415);
    }
}
