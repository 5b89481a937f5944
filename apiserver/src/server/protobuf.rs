//! Protobuf request bodies. Go clients send built-in kinds as protobuf
//! (client-go's default since 1.32) and do not fall back to JSON, so the
//! kinds they write here are decoded: Secret and ConfigMap (Helm keeps its
//! releases in them). Responses stay JSON, which those clients accept.
//!
//! The encoding: the magic `k8s\0`, then a `runtime.Unknown` whose `raw`
//! field holds the object's message.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::status::ApiError;

const MAGIC: &[u8] = b"k8s\0";

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
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
fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let (number, wire) = (tag >> 3, tag & 7);
        let field = match wire {
            0 => Field::Varint(varint(buf, &mut pos)?),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|e| e.to_string())?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or("truncated field")?;
                let bytes = &buf[pos..end];
                pos = end;
                Field::Bytes(bytes)
            }
            1 => {
                pos += 8;
                continue;
            }
            5 => {
                pos += 4;
                continue;
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

/// A `map<string, V>` entry: key 1, value 2.
fn entry(bytes: &[u8], value_as_bytes: bool) -> Result<(String, Value), String> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (1, Field::Bytes(b)) => key = text(b)?,
            (2, Field::Bytes(b)) if value_as_bytes => {
                value = Value::String(base64::engine::general_purpose::STANDARD.encode(b));
            }
            (2, Field::Bytes(b)) => value = Value::String(text(b)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn insert_entry(
    map: &mut Map<String, Value>,
    name: &str,
    bytes: &[u8],
    as_bytes: bool,
) -> Result<(), String> {
    let (key, value) = entry(bytes, as_bytes)?;
    map.entry(name)
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or("not a map")?
        .insert(key, value);
    Ok(())
}

/// `meta.v1.Time`: seconds 1, nanos 2, as RFC 3339.
fn time(bytes: &[u8]) -> Result<Value, String> {
    let mut seconds = 0i64;
    for (number, field) in fields(bytes)? {
        if let (1, Field::Varint(v)) = (number, field) {
            seconds = v as i64;
        }
    }
    k8s_openapi::jiff::Timestamp::from_second(seconds)
        .map(|t| Value::String(t.to_string()))
        .map_err(|e| e.to_string())
}

fn object_meta(bytes: &[u8]) -> Result<Value, String> {
    let mut meta = Map::new();
    for (number, field) in fields(bytes)? {
        let name = match number {
            1 => "name",
            2 => "generateName",
            3 => "namespace",
            5 => "uid",
            6 => "resourceVersion",
            _ => "",
        };
        match (number, field) {
            (1..=3 | 5 | 6, Field::Bytes(b)) => {
                meta.insert(name.into(), Value::String(text(b)?));
            }
            (7, Field::Varint(v)) => {
                meta.insert("generation".into(), json!(v));
            }
            (8, Field::Bytes(b)) => {
                meta.insert("creationTimestamp".into(), time(b)?);
            }
            (11, Field::Bytes(b)) => insert_entry(&mut meta, "labels", b, false)?,
            (12, Field::Bytes(b)) => insert_entry(&mut meta, "annotations", b, false)?,
            (14, Field::Bytes(b)) => {
                let finalizers = meta.entry("finalizers").or_insert_with(|| json!([]));
                if let Some(list) = finalizers.as_array_mut() {
                    list.push(Value::String(text(b)?));
                }
            }
            _ => {}
        }
    }
    Ok(Value::Object(meta))
}

/// A Secret (`data` 2 as bytes, `type` 3, `stringData` 4, `immutable` 5)
/// or a ConfigMap (`data` 2, `binaryData` 3 as bytes, `immutable` 4).
fn body(kind: &str, bytes: &[u8]) -> Result<Map<String, Value>, String> {
    let mut object = Map::new();
    for (number, field) in fields(bytes)? {
        match (kind, number, field) {
            (_, 1, Field::Bytes(b)) => {
                object.insert("metadata".into(), object_meta(b)?);
            }
            ("Secret", 2, Field::Bytes(b)) => insert_entry(&mut object, "data", b, true)?,
            ("Secret", 3, Field::Bytes(b)) => {
                object.insert("type".into(), Value::String(text(b)?));
            }
            ("Secret", 4, Field::Bytes(b)) => insert_entry(&mut object, "stringData", b, false)?,
            ("Secret", 5, Field::Varint(v)) | ("ConfigMap", 4, Field::Varint(v)) => {
                object.insert("immutable".into(), Value::Bool(v != 0));
            }
            ("ConfigMap", 2, Field::Bytes(b)) => insert_entry(&mut object, "data", b, false)?,
            ("ConfigMap", 3, Field::Bytes(b)) => insert_entry(&mut object, "binaryData", b, true)?,
            _ => {}
        }
    }
    Ok(object)
}

/// The `kind` and `raw` message of the k8s protobuf envelope.
fn unwrap(bytes: &[u8]) -> Result<(String, String, &[u8]), String> {
    let envelope = bytes
        .strip_prefix(MAGIC)
        .ok_or("missing the k8s protobuf magic")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (number, field) in fields(envelope)? {
        match (number, field) {
            (1, Field::Bytes(type_meta)) => {
                for (n, f) in fields(type_meta)? {
                    match (n, f) {
                        (1, Field::Bytes(b)) => api_version = text(b)?,
                        (2, Field::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
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
            (4, Field::Bytes(b)) => {
                options.insert(
                    "propagationPolicy".into(),
                    Value::String(text(b).map_err(bad)?),
                );
            }
            (5, Field::Bytes(b)) => dry_run.push(Value::String(text(b).map_err(bad)?)),
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
    if !matches!(kind.as_str(), "Secret" | "ConfigMap") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "protobuf bodies are accepted for Secrets and ConfigMaps; send {kind} as application/json"
        )));
    }
    let mut object = body(&kind, raw).map_err(bad)?;
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
        let type_meta = [bytes(1, b"apps/v1"), bytes(2, b"Deployment")].concat();
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
}
