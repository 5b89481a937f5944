//! Protobuf request bodies. Go clients send built-in kinds as protobuf
//! (client-go's default since 1.32) and do not fall back to JSON, so the
//! kinds they write here are decoded, each by a table of its message's
//! fields (`schema.rs`, written by `scripts/protobuf-schema` from the Go
//! types of a Kubernetes release: every built-in kind served here, whole).
//! A body with a field the table does not know (a newer release's) is
//! refused (415), never stored with the field dropped. Responses stay
//! JSON, which those clients accept.
//!
//! The encoding: the magic `k8s\0`, then a `runtime.Unknown` whose `raw`
//! field holds the object's message.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::status::ApiError;

#[cfg(test)]
mod encoded;
mod schema;

use schema::message_of;

const MAGIC: &[u8] = b"k8s\0";

/// A field as it is on the wire.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long".into())
}

/// The fields of one message, in order.
fn fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let (number, wire) = (tag >> 3, tag & 7);
        let field = match wire {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|e| e.to_string())?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or("truncated field")?;
                let bytes = &buf[pos..end];
                pos = end;
                Wire::Bytes(bytes)
            }
            // Fixed-width numbers: no field read here has one, so they
            // are kept only to be refused.
            1 | 5 => {
                let width = if wire == 1 { 8 } else { 4 };
                pos = pos
                    .checked_add(width)
                    .filter(|end| *end <= buf.len())
                    .ok_or("truncated field")?;
                Wire::Fixed
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        out.push((number, field));
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
}

/// What a protobuf field holds, and how it reads as JSON.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    /// `bytes`, as base64 in JSON.
    Bytes,
    Bool,
    /// A Go `bool` JSON leaves out when false (`omitempty`).
    Flag,
    Int,
    /// A Go number JSON leaves out when zero (`omitempty`).
    Count,
    /// `intstr.IntOrString` (type 1, intVal 2, strVal 3): a number or a
    /// string in JSON.
    IntOrString,
    /// `meta.v1.MicroTime`: as `Time`, with microseconds.
    MicroTime,
    /// `meta.v1.Time` (seconds 1, nanos 2), RFC 3339; empty is no time.
    Time,
    /// `map<string, string>` (entries of key 1, value 2).
    TextMap,
    /// `map<string, bytes>`.
    BytesMap,
    /// `map<string, resource.Quantity>`: quantities as their strings.
    QuantityMap,
    /// `map<string, message { repeated string items = 1 }>`: lists.
    TextListMap,
    /// `resource.Quantity`, as its string.
    Quantity,
    /// Bytes holding JSON (`RawExtension`, `FieldsV1`), as that JSON.
    Raw,
    Message(&'static [Field]),
    /// An embedded Go struct: a message of its own in protobuf whose
    /// fields JSON writes inline.
    Inline(&'static [Field]),
}

/// One field of a message: its number, its JSON name, what it holds and
/// whether it repeats.
#[derive(Clone, Copy)]
struct Field(u64, &'static str, Kind, bool);

const fn one(number: u64, name: &'static str, kind: Kind) -> Field {
    Field(number, name, kind, false)
}

const fn many(number: u64, name: &'static str, kind: Kind) -> Field {
    Field(number, name, kind, true)
}

/// `resource.Quantity`: its string.
const QUANTITY: &[Field] = &[one(1, "string", Kind::Text)];

/// The message a list is wrapped in as a map's value.
const ITEMS: &[Field] = &[many(1, "items", Kind::Text)];

/// `runtime.RawExtension` and `meta.v1.FieldsV1`: JSON as bytes.
const RAW: &[Field] = &[one(1, "raw", Kind::Bytes)];

/// One message as JSON. A field this schema does not know is an error,
/// never dropped: a body is stored whole or not at all.
fn message(bytes: &[u8], schema: &[Field]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (number, value) in fields(bytes)? {
        let Some(&Field(_, name, kind, repeated)) = schema.iter().find(|f| f.0 == number) else {
            return Err(format!("field {number} is not one Gantry reads"));
        };
        let Some(value) = scalar(value, kind)? else {
            continue;
        };
        // Go writes unset strings as empty ones, which its JSON leaves
        // out (in a list, "" is a value: the core API group).
        if !repeated && value.as_str() == Some("") {
            continue;
        }
        match (kind, repeated) {
            (Kind::Inline(_), _) => {
                if let Value::Object(inline) = value {
                    out.extend(inline);
                }
            }
            (Kind::TextMap | Kind::BytesMap | Kind::QuantityMap | Kind::TextListMap, _) => {
                let map = out.entry(name).or_insert_with(|| json!({}));
                if let (Some(map), Value::Object(entry)) = (map.as_object_mut(), value) {
                    map.extend(entry);
                }
            }
            (_, true) => {
                let list = out.entry(name).or_insert_with(|| json!([]));
                if let Some(list) = list.as_array_mut() {
                    list.push(value);
                }
            }
            (_, false) => {
                out.insert(name.into(), value);
            }
        }
    }
    Ok(out)
}

/// One field's value as JSON (a map field: its one entry as an object);
/// `None` for an empty time.
fn scalar(value: Wire<'_>, kind: Kind) -> Result<Option<Value>, String> {
    let wrong = || "a field of the wrong wire type".to_owned();
    Ok(Some(match (kind, value) {
        (Kind::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        (Kind::Flag, Wire::Varint(0)) | (Kind::Count, Wire::Varint(0)) => return Ok(None),
        (Kind::Flag, Wire::Varint(_)) => Value::Bool(true),
        #[allow(clippy::cast_possible_wrap)]
        (Kind::Count, Wire::Varint(v)) => json!(v as i64),
        (Kind::IntOrString, Wire::Bytes(b)) => {
            let schema = [
                one(1, "type", Kind::Int),
                one(2, "intVal", Kind::Int),
                one(3, "strVal", Kind::Text),
            ];
            let parts = message(b, &schema)?;
            match parts.get("type").and_then(Value::as_i64) {
                Some(1) => parts.get("strVal").cloned().unwrap_or(json!("")),
                _ => parts.get("intVal").cloned().unwrap_or(json!(0)),
            }
        }
        (Kind::MicroTime, Wire::Bytes(b)) => return timestamp(b, true),
        // int32 and int64 are both two's complement varints.
        #[allow(clippy::cast_possible_wrap)]
        (Kind::Int, Wire::Varint(v)) => json!(v as i64),
        (Kind::Text, Wire::Bytes(b)) => Value::String(text(b)?),
        (Kind::Bytes, Wire::Bytes(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Kind::Time, Wire::Bytes(b)) => return timestamp(b, false),
        (
            Kind::TextMap | Kind::BytesMap | Kind::QuantityMap | Kind::TextListMap,
            Wire::Bytes(b),
        ) => {
            let (value_kind, empty) = match kind {
                Kind::BytesMap => (Kind::Bytes, json!("")),
                Kind::QuantityMap => (Kind::Quantity, json!("")),
                Kind::TextListMap => (Kind::Message(ITEMS), json!({"items": []})),
                _ => (Kind::Text, json!("")),
            };
            let entry = message(b, &[one(1, "key", Kind::Text), one(2, "value", value_kind)])?;
            let key = entry.get("key").and_then(Value::as_str).unwrap_or_default();
            let mut value = entry.get("value").cloned().unwrap_or(empty);
            if let Some(items) = value.get_mut("items") {
                value = items.take();
            }
            json!({ key: value })
        }
        (Kind::Quantity, Wire::Bytes(b)) => {
            message(b, QUANTITY)?.remove("string").unwrap_or(json!(""))
        }
        (Kind::Raw, Wire::Bytes(b)) => {
            let raw = message(b, RAW)?;
            let Some(encoded) = raw.get("raw").and_then(Value::as_str) else {
                return Ok(None);
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| e.to_string())?;
            serde_json::from_slice(&bytes).map_err(|e| format!("raw JSON: {e}"))?
        }
        (Kind::Message(schema) | Kind::Inline(schema), Wire::Bytes(b)) => {
            Value::Object(message(b, schema)?)
        }
        _ => return Err(wrong()),
    }))
}

/// `meta.v1.Time` or `MicroTime` (seconds 1, nanos 2) as RFC 3339: to
/// the second, or with `micro`seconds. Go writes a zero time as an empty
/// message: no time.
fn timestamp(bytes: &[u8], micro: bool) -> Result<Option<Value>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let parts = message(
        bytes,
        &[one(1, "seconds", Kind::Int), one(2, "nanos", Kind::Int)],
    )?;
    let seconds = parts.get("seconds").and_then(Value::as_i64).unwrap_or(0);
    let nanos = parts.get("nanos").and_then(Value::as_i64).unwrap_or(0);
    let at = k8s_openapi::jiff::Timestamp::new(seconds, i32::try_from(nanos).unwrap_or(0))
        .map_err(|e| e.to_string())?;
    let format = if micro {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(Some(Value::String(at.strftime(format).to_string())))
}

/// The `kind` and `raw` message of the k8s protobuf envelope.
fn unwrap(bytes: &[u8]) -> Result<(String, String, &[u8]), String> {
    let envelope = bytes
        .strip_prefix(MAGIC)
        .ok_or("missing the k8s protobuf magic")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (number, field) in fields(envelope)? {
        match (number, field) {
            (1, Wire::Bytes(type_meta)) => {
                for (n, f) in fields(type_meta)? {
                    match (n, f) {
                        (1, Wire::Bytes(b)) => api_version = text(b)?,
                        (2, Wire::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    Ok((api_version, kind, raw))
}

/// `DeleteOptions` sent as protobuf: its `propagationPolicy` (field 4).
///
/// # Errors
/// 400 for a malformed body.
pub(super) fn delete_options(bytes: &[u8]) -> Result<Value, ApiError> {
    let bad =
        |e: String| ApiError::BadRequest(format!("the protobuf DeleteOptions do not decode: {e}"));
    let (_, _, raw) = unwrap(bytes).map_err(bad)?;
    let mut options = Map::new();
    let mut dry_run = Vec::new();
    for (number, field) in fields(raw).map_err(bad)? {
        match (number, field) {
            (4, Wire::Bytes(b)) => {
                options.insert(
                    "propagationPolicy".into(),
                    Value::String(text(b).map_err(bad)?),
                );
            }
            (5, Wire::Bytes(b)) => dry_run.push(Value::String(text(b).map_err(bad)?)),
            _ => {}
        }
    }
    if !dry_run.is_empty() {
        options.insert("dryRun".into(), Value::Array(dry_run));
    }
    Ok(Value::Object(options))
}

/// A protobuf request body as the JSON object it encodes.
///
/// # Errors
/// 415 for kinds not decoded here, 400 for a malformed body.
pub(super) fn decode(bytes: &[u8]) -> Result<Value, ApiError> {
    let bad = |e: String| ApiError::BadRequest(format!("the protobuf body does not decode: {e}"));
    let (api_version, kind, raw) = unwrap(bytes).map_err(bad)?;
    let Some(schema) = message_of(&api_version, &kind) else {
        return Err(ApiError::UnsupportedMediaType(format!(
            "protobuf bodies of {api_version} {kind} are not read here; send application/json"
        )));
    };
    let mut object = message(raw, schema).map_err(|e| {
        ApiError::UnsupportedMediaType(format!(
            "the protobuf {kind} cannot be read whole ({e}); send application/json"
        ))
    })?;
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(number: u64, wire: u64) -> Vec<u8> {
        encode_varint((number << 3) | wire)
    }

    fn encode_varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes(number: u64, value: &[u8]) -> Vec<u8> {
        let mut out = tag(number, 2);
        out.extend(encode_varint(value.len() as u64));
        out.extend(value);
        out
    }

    fn entry(key: &str, value: &[u8]) -> Vec<u8> {
        [bytes(1, key.as_bytes()), bytes(2, value)].concat()
    }

    #[test]
    fn decodes_a_secret_as_client_go_encodes_it() {
        let meta = [
            bytes(1, b"sh.helm.release.v1.demo.v1"),
            bytes(3, b"default"),
            bytes(6, b"42"),
            bytes(11, &entry("owner", b"helm")),
        ]
        .concat();
        let secret = [
            bytes(1, &meta),
            bytes(2, &entry("release", b"\x01\x02")),
            bytes(3, b"helm.sh/release.v1"),
        ]
        .concat();
        let type_meta = [bytes(1, b"v1"), bytes(2, b"Secret")].concat();
        let body = [MAGIC.to_vec(), bytes(1, &type_meta), bytes(2, &secret)].concat();
        let decoded = decode(&body).expect("decodes");
        assert_eq!(
            decoded,
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
                "metadata": {"name": "sh.helm.release.v1.demo.v1", "namespace": "default",
                             "resourceVersion": "42", "labels": {"owner": "helm"}},
                "data": {"release": "AQI="}
            })
        );
    }

    #[test]
    fn reads_the_propagation_policy_of_delete_options() {
        let options = [bytes(1, &encode_varint(0)), bytes(4, b"Foreground")].concat();
        let type_meta = [bytes(1, b"v1"), bytes(2, b"DeleteOptions")].concat();
        let body = [MAGIC.to_vec(), bytes(1, &type_meta), bytes(2, &options)].concat();
        assert_eq!(
            delete_options(&body).expect("decodes"),
            json!({"propagationPolicy": "Foreground"})
        );
    }

    #[test]
    fn refuses_other_kinds_and_garbage() {
        let type_meta = [bytes(1, b"batch/v1"), bytes(2, b"Job")].concat();
        let body = [MAGIC.to_vec(), bytes(1, &type_meta)].concat();
        assert!(matches!(
            decode(&body),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            decode(b"k8s\0\x0a\xff"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(decode(b"{}"), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn decodes_a_namespace_and_a_role_binding_as_kubectl_create_writes_them() {
        let meta = [bytes(1, b"prod"), bytes(2, b""), bytes(8, b"")].concat();
        let namespace = [bytes(1, &meta), bytes(2, b""), bytes(3, b"")].concat();
        let type_meta = [bytes(1, b"v1"), bytes(2, b"Namespace")].concat();
        let body = [MAGIC.to_vec(), bytes(1, &type_meta), bytes(2, &namespace)].concat();
        assert_eq!(
            decode(&body).expect("decodes"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"},
                   "spec": {}, "status": {}})
        );

        let subject = [
            bytes(1, b"ServiceAccount"),
            bytes(2, b""),
            bytes(3, b"robot"),
            bytes(4, b"prod"),
        ]
        .concat();
        let role_ref = [
            bytes(1, b"rbac.authorization.k8s.io"),
            bytes(2, b"Role"),
            bytes(3, b"reader"),
        ]
        .concat();
        let binding = [
            bytes(1, &bytes(1, b"robot-reads")),
            bytes(2, &subject),
            bytes(3, &role_ref),
        ]
        .concat();
        let type_meta = [
            bytes(1, b"rbac.authorization.k8s.io/v1"),
            bytes(2, b"RoleBinding"),
        ]
        .concat();
        let body = [MAGIC.to_vec(), bytes(1, &type_meta), bytes(2, &binding)].concat();
        assert_eq!(
            decode(&body).expect("decodes"),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "robot-reads"},
                   "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "prod"}],
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}})
        );

        // A rule's "" is the core API group, kept.
        let rule = [bytes(1, b"get"), bytes(2, b""), bytes(3, b"configmaps")].concat();
        let role = [bytes(1, &bytes(1, b"reader")), bytes(2, &rule)].concat();
        let type_meta = [bytes(1, b"rbac.authorization.k8s.io/v1"), bytes(2, b"Role")].concat();
        let body = [MAGIC.to_vec(), bytes(1, &type_meta), bytes(2, &role)].concat();
        assert_eq!(
            decode(&body).expect("decodes")["rules"],
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]}])
        );
    }

    #[test]
    fn decodes_a_lease_as_client_go_leader_election_writes_it() {
        // renewTime 1764662400.123456789 s; leaseTransitions 0 is a value.
        let renew = [
            tag(1, 0),
            encode_varint(1_764_662_400),
            tag(2, 0),
            encode_varint(123_456_789),
        ]
        .concat();
        let spec = [
            bytes(1, b"controller-1"),
            tag(2, 0),
            encode_varint(15),
            bytes(3, b""),
            bytes(4, &renew),
            tag(5, 0),
            encode_varint(0),
        ]
        .concat();
        let lease = [bytes(1, &bytes(1, b"gantry-controller")), bytes(2, &spec)].concat();
        let type_meta = [bytes(1, b"coordination.k8s.io/v1"), bytes(2, b"Lease")].concat();
        let body = [MAGIC.to_vec(), bytes(1, &type_meta), bytes(2, &lease)].concat();
        assert_eq!(
            decode(&body).expect("decodes")["spec"],
            json!({"holderIdentity": "controller-1", "leaseDurationSeconds": 15,
                   "renewTime": "2025-12-02T08:00:00.123456Z", "leaseTransitions": 0})
        );
    }

    #[test]
    fn a_service_port_target_is_a_number_or_a_name() {
        let by_number = [tag(1, 0), encode_varint(0), tag(2, 0), encode_varint(8080)].concat();
        let by_name = [tag(1, 0), encode_varint(1), bytes(3, b"http")].concat();
        let port = |target: &[u8]| {
            [
                tag(3, 0),
                encode_varint(80),
                bytes(4, target),
                tag(5, 0),
                encode_varint(0),
            ]
            .concat()
        };
        let spec = [
            bytes(1, &port(&by_number)),
            bytes(1, &port(&by_name)),
            tag(13, 0),
            encode_varint(0),
        ]
        .concat();
        let service = [bytes(1, &bytes(1, b"web")), bytes(2, &spec)].concat();
        let type_meta = [bytes(1, b"v1"), bytes(2, b"Service")].concat();
        let body = [MAGIC.to_vec(), bytes(1, &type_meta), bytes(2, &service)].concat();
        assert_eq!(
            decode(&body).expect("decodes")["spec"],
            json!({"ports": [{"port": 80, "targetPort": 8080}, {"port": 80, "targetPort": "http"}]}),
            "nodePort 0 and publishNotReadyAddresses false are left out, as Go's JSON leaves them"
        );
    }

    #[test]
    fn a_field_not_read_here_refuses_the_body_rather_than_dropping_the_field() {
        // ObjectMeta has no field 99.
        let meta = [bytes(1, b"prod"), bytes(99, b"")].concat();
        let type_meta = [bytes(1, b"v1"), bytes(2, b"Namespace")].concat();
        let body = [
            MAGIC.to_vec(),
            bytes(1, &type_meta),
            bytes(2, &bytes(1, &meta)),
        ]
        .concat();
        assert!(
            matches!(decode(&body), Err(ApiError::UnsupportedMediaType(m)) if m.contains("field 99"))
        );
        // So is a fixed-width number where none is expected.
        let fixed = [tag(9, 1), vec![0; 8]].concat();
        let body = [MAGIC.to_vec(), bytes(1, &type_meta), bytes(2, &fixed)].concat();
        assert!(matches!(
            decode(&body),
            Err(ApiError::UnsupportedMediaType(_))
        ));
    }
}
