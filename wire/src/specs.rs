//! The vendors' machine-readable specs in the repository's `specs/` folder
//! (OpenAI's OpenAPI, GA and the last preview; the Voice Live SDK model dump;
//! Twilio's OpenAPI and signature vectors), loaded for tests: what we send and
//! what the emulators send is checked against them, not against our memory of
//! them. Test support only (feature `specs`); it panics on a missing file.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use serde_json::Value;

/// Path of a file in the repository's `specs/` folder (its README says
/// where each file came from).
pub fn spec_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("specs")
        .join(name)
}

fn load_yaml(name: &str) -> Value {
    // The spec writes i64 bounds rounded through a float (…776000), which no
    // YAML integer type holds: put the exact bounds back.
    let text = std::fs::read_to_string(spec_path(name))
        .unwrap()
        .replace("-9223372036854776000", "-9223372036854775808")
        .replace("9223372036854776000", "9223372036854775807");
    yaml_to_json(serde_norway::from_str(&text).unwrap())
}

/// YAML → JSON by hand: the OpenAI spec has integers (e.g. i64::MIN bounds)
/// that a direct serde_json conversion refuses.
fn yaml_to_json(v: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                serde_json::Number::from_f64(n.as_f64().unwrap_or(0.0)).map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(a) => Value::Array(a.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => serde_norway::to_string(&other).unwrap_or_default().trim().to_string(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => yaml_to_json(t.value),
    }
}

pub static GA: LazyLock<Value> = LazyLock::new(|| load_yaml("openai_openapi.yaml"));
pub static PREVIEW: LazyLock<Value> = LazyLock::new(|| load_yaml("openai_openapi_2025-04-29_realtime-preview.yaml"));
pub static VOICE_LIVE: LazyLock<Value> = LazyLock::new(|| {
    let text = std::fs::read_to_string(spec_path("voicelive_sdk_models_azure-ai-voicelive-1.3.1.json")).unwrap();
    serde_json::from_str(&text).unwrap()
});

/// Validates `instance` against `#/components/schemas/{schema}` of an OpenAPI document.
pub fn validate(doc: &Value, schema: &str, instance: &Value) {
    let root = serde_json::json!({
        "$ref": format!("#/components/schemas/{schema}"),
        "components": doc["components"].clone(),
    });
    let validator = jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{schema}: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{schema} rejects {instance}:\n{}", errors.join("\n"));
}

/// Resolves `$ref`s to the schema object.
pub fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    while let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let path = r.trim_start_matches("#/");
        schema = path.split('/').fold(doc, |v, k| &v[k]);
    }
    schema
}

/// Every property the schema (or any of its anyOf/oneOf/allOf branches) declares.
pub fn declared(doc: &Value, schema: &Value) -> Vec<(String, Value)> {
    let schema = resolve(doc, schema);
    let mut out = Vec::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        out.extend(props.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array) {
            for b in branches {
                out.extend(declared(doc, b));
            }
        }
    }
    out
}

/// The values of a Voice Live SDK enum.
pub fn vl_enum(name: &str) -> Vec<String> {
    VOICE_LIVE["enums"][name]
        .as_array()
        .unwrap_or_else(|| panic!("no enum {name}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}
