//! What we send is checked against the vendors' own machine-readable specs in
//! `shared/specs/` (OpenAI's OpenAPI, GA and the last preview; the Voice Live
//! SDK model dump), not against our memory of them.

use std::path::PathBuf;
use std::sync::LazyLock;

use serde_json::Value;

use super::*;

fn spec_path(name: &str) -> PathBuf {
    let start = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    start
        .ancestors()
        .map(|d| d.join("shared").join("specs"))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| panic!("no shared/specs above {}", start.display()))
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

static GA: LazyLock<Value> = LazyLock::new(|| load_yaml("openai_openapi.yaml"));
static PREVIEW: LazyLock<Value> = LazyLock::new(|| load_yaml("openai_openapi_2025-04-29_realtime-preview.yaml"));
static VOICE_LIVE: LazyLock<Value> = LazyLock::new(|| {
    let text = std::fs::read_to_string(spec_path("voicelive_sdk_models_azure-ai-voicelive-1.3.1.json")).unwrap();
    serde_json::from_str(&text).unwrap()
});

/// Validates `instance` against `#/components/schemas/{schema}` of an OpenAPI document.
fn validate(doc: &Value, schema: &str, instance: &Value) {
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
fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    while let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let path = r.trim_start_matches("#/");
        schema = path.split('/').fold(doc, |v, k| &v[k]);
    }
    schema
}

/// Every property the schema (or any of its anyOf/oneOf/allOf branches) declares.
fn declared(doc: &Value, schema: &Value) -> Vec<(String, Value)> {
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

/// Strictness the schemas lack (no `additionalProperties: false`): every key
/// we send must be a declared property, recursively.
fn assert_known_keys(doc: &Value, schema: &Value, instance: &Value, path: &str) {
    let Some(obj) = instance.as_object() else {
        if let (Some(items), Some(arr)) = (resolve(doc, schema).get("items"), instance.as_array()) {
            for (i, v) in arr.iter().enumerate() {
                assert_known_keys(doc, items, v, &format!("{path}[{i}]"));
            }
        }
        return;
    };
    let props = declared(doc, schema);
    if props.is_empty() {
        return; // free-form object (e.g. JSON Schema of tool parameters)
    }
    for (k, v) in obj {
        let candidates: Vec<&Value> = props.iter().filter(|(n, _)| n == k).map(|(_, s)| s).collect();
        assert!(!candidates.is_empty(), "{path}.{k} is not a field of the spec");
        // Descend into the first branch that knows this value's keys.
        let sub = candidates
            .iter()
            .find(|s| {
                v.as_object()
                    .is_none_or(|o| o.keys().all(|kk| declared(doc, s).iter().any(|(n, _)| n == kk)))
            })
            .unwrap_or(&candidates[0]);
        assert_known_keys(doc, sub, v, &format!("{path}.{k}"));
    }
}

fn config(audio: AudioFormat, voice: &str) -> SessionConfig {
    SessionConfig::new("You are a test agent.", voice, audio)
}

#[test]
fn ga_session_update_matches_the_openai_spec() {
    for audio in [AudioFormat::Pcm16_24k, AudioFormat::G711Ulaw] {
        let msg: Value = serde_json::from_str(&session_update(Dialect::OpenAiGa, &config(audio, "marin"))).unwrap();
        validate(&GA, "RealtimeClientEventSessionUpdate", &msg);
        let schema = &GA["components"]["schemas"]["RealtimeClientEventSessionUpdate"];
        assert_known_keys(&GA, schema, &msg, "");
        let td = &msg["session"]["audio"]["input"]["turn_detection"];
        assert_eq!(td["create_response"], true);
        assert_eq!(td["interrupt_response"], true);
    }
    let ulaw: Value = serde_json::from_str(&session_update(
        Dialect::OpenAiGa,
        &config(AudioFormat::G711Ulaw, "alloy"),
    ))
    .unwrap();
    assert_eq!(ulaw["session"]["audio"]["output"]["format"]["type"], "audio/pcmu");
}

#[test]
fn preview_session_update_matches_the_preview_spec() {
    for audio in [AudioFormat::Pcm16_24k, AudioFormat::G711Ulaw] {
        let msg: Value =
            serde_json::from_str(&session_update(Dialect::OpenAiPreview, &config(audio, "alloy"))).unwrap();
        validate(&PREVIEW, "RealtimeClientEventSessionUpdate", &msg);
        let schema = &PREVIEW["components"]["schemas"]["RealtimeClientEventSessionUpdate"];
        assert_known_keys(&PREVIEW, schema, &msg, "");
        assert_eq!(msg["session"]["modalities"], serde_json::json!(["text", "audio"]));
    }
}

fn vl_fields(model: &str) -> Vec<String> {
    VOICE_LIVE["models"][model]["fields"]
        .as_object()
        .unwrap_or_else(|| panic!("no model {model}"))
        .keys()
        .cloned()
        .collect()
}

fn vl_enum(name: &str) -> Vec<String> {
    VOICE_LIVE["enums"][name]
        .as_array()
        .unwrap_or_else(|| panic!("no enum {name}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn assert_fields(obj: &Value, model: &str) {
    let fields = vl_fields(model);
    for k in obj.as_object().unwrap().keys() {
        assert!(fields.contains(k), "{k} is not a wire field of Voice Live {model}");
    }
}

#[test]
fn voice_live_session_update_matches_the_sdk_models() {
    for (audio, voice, voice_model) in [
        (AudioFormat::Pcm16_24k, "en-US-AriaNeural", "AzureStandardVoice"),
        (AudioFormat::G711Ulaw, "alloy", "OpenAIVoice"),
    ] {
        let msg: Value = serde_json::from_str(&session_update(Dialect::VoiceLive, &config(audio, voice))).unwrap();
        assert_fields(&msg, "ClientEventSessionUpdate");
        assert!(vl_enum("ClientEventType").contains(&"session.update".to_string()));
        let s = &msg["session"];
        assert_fields(s, "RequestSession");
        assert_fields(&s["voice"], voice_model);
        assert_fields(&s["turn_detection"], "ServerVad");
        assert_fields(&s["input_audio_transcription"], "AudioInputTranscriptionOptions");
        assert_fields(&s["input_audio_noise_reduction"], "AudioNoiseReduction");
        assert_fields(&s["input_audio_echo_cancellation"], "AudioEchoCancellation");
        for t in &s["tools"].as_array().unwrap()[..] {
            assert_fields(t, "FunctionTool");
        }
        let formats = vl_enum("InputAudioFormat");
        assert!(formats.contains(&s["input_audio_format"].as_str().unwrap().to_string()));
        assert!(vl_enum("OutputAudioFormat").contains(&s["output_audio_format"].as_str().unwrap().to_string()));
        for m in s["modalities"].as_array().unwrap() {
            assert!(vl_enum("Modality").contains(&m.as_str().unwrap().to_string()));
        }
        assert!(vl_enum("AudioTimestampType").contains(&"word".to_string()));
        assert!(vl_enum("TurnDetectionType").contains(&"server_vad".to_string()));
        assert_eq!(s["turn_detection"]["create_response"], true);
        assert_eq!(s["turn_detection"]["interrupt_response"], true);
        assert_eq!(s["input_audio_noise_reduction"]["type"], "azure_deep_noise_suppression");
        assert_eq!(s["input_audio_echo_cancellation"]["type"], "server_echo_cancellation");
    }
    // The official example's session keys are a subset of what the model allows,
    // which keeps this check honest about the dump's shape.
    let example: Value = serde_json::from_str(
        &std::fs::read_to_string(spec_path("voicelive_examples/SessionInitialization.2025-10-01.json")).unwrap(),
    )
    .unwrap();
    let update = example["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["event"]["type"] == "session.update")
        .expect("the example sends a session.update");
    assert_fields(&update["event"]["session"], "RequestSession");
}

#[test]
fn client_events_match_their_schemas() {
    let cases = [
        (
            input_audio_append("//////8="),
            "RealtimeClientEventInputAudioBufferAppend",
        ),
        (
            item_truncate("item_1", 0, 1500),
            "RealtimeClientEventConversationItemTruncate",
        ),
        (response_cancel(Some("resp_1")), "RealtimeClientEventResponseCancel"),
        (response_cancel(None), "RealtimeClientEventResponseCancel"),
        (response_create(None), "RealtimeClientEventResponseCreate"),
        (
            response_create(Some("Say goodbye.")),
            "RealtimeClientEventResponseCreate",
        ),
        (
            function_call_output("call_1", "{}"),
            "RealtimeClientEventConversationItemCreate",
        ),
        (user_text_item("DTMF 5"), "RealtimeClientEventConversationItemCreate"),
        (
            restore_item(Dialect::OpenAiGa, "assistant", "Hi"),
            "RealtimeClientEventConversationItemCreate",
        ),
        (input_audio_commit(), "RealtimeClientEventInputAudioBufferCommit"),
    ];
    for (text, schema) in cases {
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        validate(&GA, schema, &v);
        let ty = v["type"].as_str().unwrap();
        for d in [Dialect::VoiceLive, Dialect::OpenAiGa, Dialect::OpenAiPreview] {
            assert!(client_event_types(d).contains(&ty), "{ty} in {d:?}");
        }
        assert!(
            vl_enum("ClientEventType").contains(&ty.to_string()),
            "{ty} is a Voice Live client event"
        );
    }
}

#[test]
fn server_event_names_exist_in_each_dialect() {
    let names: Value = serde_json::from_str(
        &std::fs::read_to_string(spec_path("openai_realtime_event_names_preview_vs_ga.json")).unwrap(),
    )
    .unwrap();
    let text = names.to_string();
    let vl = vl_enum("ServerEventType");
    for d in [Dialect::OpenAiGa, Dialect::OpenAiPreview, Dialect::VoiceLive] {
        let n = server_names(d);
        for name in [n.audio_delta, n.audio_done, n.transcript_delta, n.transcript_done] {
            assert!(
                text.contains(&format!("\"{name}\"")),
                "{name} ({d:?}) is a known event name"
            );
            if d == Dialect::VoiceLive {
                assert!(vl.contains(&name.to_string()), "{name} is a Voice Live server event");
            }
        }
    }
    assert!(vl.contains(&"response.audio_timestamp.delta".to_string()));
}

#[test]
fn both_dialects_decode_to_the_same_events() {
    for ty in ["response.output_audio.delta", "response.audio.delta"] {
        let e = parse_server_event(&format!(
            r#"{{"type":"{ty}","event_id":"e","response_id":"r","item_id":"i","output_index":0,"content_index":0,"delta":"AAA="}}"#
        ))
        .unwrap();
        assert_eq!(
            e,
            ServerEvent::AudioDelta {
                response_id: "r".into(),
                item_id: "i".into(),
                delta: "AAA=".into()
            }
        );
    }
    for ty in [
        "response.output_audio_transcript.done",
        "response.audio_transcript.done",
    ] {
        let e = parse_server_event(&format!(
            r#"{{"type":"{ty}","response_id":"r","item_id":"i","transcript":"Hi"}}"#
        ))
        .unwrap();
        assert!(matches!(e, ServerEvent::TranscriptDone { ref transcript, .. } if transcript == "Hi"));
    }
    let e = parse_server_event(
        r#"{"type":"response.done","response":{"id":"r","status":"cancelled","status_details":{"type":"cancelled","reason":"turn_detected"}}}"#,
    )
    .unwrap();
    assert_eq!(
        e,
        ServerEvent::ResponseDone {
            response_id: "r".into(),
            status: "cancelled".into(),
            reason: Some("turn_detected".into())
        }
    );
    let e = parse_server_event(
        r#"{"type":"error","event_id":"x","error":{"type":"invalid_request_error","code":"invalid_event","message":"bad","param":null,"event_id":"c1"}}"#,
    )
    .unwrap();
    assert!(matches!(e, ServerEvent::Error { ref code, .. } if code.as_deref() == Some("invalid_event")));
    assert_eq!(
        parse_server_event(r#"{"type":"rate_limits.updated","rate_limits":[]}"#).unwrap(),
        ServerEvent::Other("rate_limits.updated".into())
    );
    assert!(parse_server_event("not json").is_err());
    assert!(parse_server_event(r#"{"no":"type"}"#).is_err());
    assert!(is_fatal_error("invalid_request_error", Some("session_expired")));
    assert!(!is_fatal_error("invalid_request_error", Some("invalid_value")));
}

#[test]
fn the_spec_checks_can_fail() {
    let mut msg: Value = serde_json::from_str(&session_update(
        Dialect::OpenAiGa,
        &config(AudioFormat::Pcm16_24k, "marin"),
    ))
    .unwrap();
    msg["session"]["audio"]["input"]["format"]["rate"] = serde_json::json!(16000);
    let bad_rate = std::panic::catch_unwind(|| validate(&GA, "RealtimeClientEventSessionUpdate", &msg));
    assert!(
        bad_rate.is_err(),
        "a 16 kHz PCM format must be rejected (GA allows only 24 kHz)"
    );
    let mut msg: Value = serde_json::from_str(&session_update(
        Dialect::OpenAiGa,
        &config(AudioFormat::Pcm16_24k, "marin"),
    ))
    .unwrap();
    msg["session"]["input_audio_format"] = serde_json::json!("pcm16");
    let schema = &GA["components"]["schemas"]["RealtimeClientEventSessionUpdate"];
    let preview_field = std::panic::catch_unwind(|| assert_known_keys(&GA, schema, &msg, ""));
    assert!(
        preview_field.is_err(),
        "a preview-only field must be caught in a GA session"
    );
}
