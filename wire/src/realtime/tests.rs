//! What we send is checked against the vendors' own machine-readable specs in
//! the repository's `specs/` (OpenAI's OpenAPI, GA and the last preview; the Voice Live
//! SDK model dump), not against our memory of them.

use serde_json::Value;

use super::*;
use crate::specs::{GA, PREVIEW, VOICE_LIVE, declared, resolve, spec_path, validate, vl_enum};

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

/// A session with the built-in `end_call`, a caller's tool with parameters,
/// and the built-in `transfer_call` of a call with transfer targets (its
/// shape as the server's `call::lifecycle::transfer::tool_parameters` makes
/// it: a `number` enum described), as a PlaceCall with `tools` and
/// `transfer_targets` configures it: every spec check below covers them too.
fn config(audio: AudioFormat, voice: &str) -> SessionConfig {
    let mut c = SessionConfig::new("You are a test agent.", voice, audio);
    c.tools.push(ToolDef {
        name: "order_status".into(),
        description: "Look up the delivery status of an order.".into(),
        parameters: serde_json::json!({
            "type": "object",
            "properties": {"order_id": {"type": "string", "description": "The order number"}},
            "required": ["order_id"]
        }),
    });
    c.tools.push(ToolDef {
        name: "transfer_call".into(),
        description: "Hand the call over to a person.".into(),
        parameters: serde_json::json!({
            "type": "object",
            "properties": {"number": {"type": "string", "enum": ["+15550120", "+15550122"],
                "description": "Who to transfer to; one of: +15550120: billing; +15550122: sales"}},
            "required": ["number"]
        }),
    });
    c
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

pub(crate) fn assert_fields(obj: &Value, model: &str) {
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
        let tools = s["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 3, "end_call, the caller's tool and transfer_call");
        for t in tools {
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
        (
            function_call_item("call_1", "order_status", r#"{"order_id":"A1"}"#),
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
fn the_delta_fast_path_agrees_with_the_general_parser() {
    for ty in ["response.output_audio.delta", "response.audio.delta"] {
        let text = format!(
            r#"{{"type":"{ty}","event_id":"e","response_id":"r","item_id":"i","output_index":0,"content_index":0,"delta":"AAA="}}"#
        );
        let fast = parse_audio_delta(&text).unwrap();
        let ServerEvent::AudioDelta {
            response_id,
            item_id,
            delta,
        } = parse_server_event(&text).unwrap()
        else {
            panic!("not a delta: {text}")
        };
        assert_eq!(
            (fast.response_id.as_ref(), fast.item_id.as_ref(), fast.delta.as_ref()),
            (response_id.as_str(), item_id.as_str(), delta.as_str())
        );
    }
    for other in [
        r#"{"type":"response.output_audio_transcript.delta","item_id":"i","delta":"the audio.delta word"}"#,
        r#"{"type":"response.audio_timestamp.delta","item_id":"i","text":"Hi","audio_offset_ms":0,"audio_duration_ms":5}"#,
        r#"{"type":"response.output_audio.delta","delta":7}"#,
        r#"{"type":"session.updated","session":{}}"#,
    ] {
        assert_eq!(parse_audio_delta(other), None, "{other}");
    }
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

/// The event types a union schema (`RealtimeServerEvent`, `RealtimeClientEvent`) lists.
pub(crate) fn event_names(doc: &Value, union: &str) -> Vec<String> {
    doc["components"]["schemas"][union]["anyOf"]
        .as_array()
        .unwrap_or_else(|| panic!("{union} is not a union"))
        .iter()
        .filter_map(|branch| resolve(doc, branch)["properties"]["type"]["enum"][0].as_str())
        .map(str::to_string)
        .collect()
}

/// Server event types each dialect's decoder must understand.
fn decoded(dialect: Dialect) -> Vec<&'static str> {
    let mut names = vec![
        "session.created",
        "session.updated",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "response.created",
        "response.output_item.added",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.failed",
        "response.function_call_arguments.done",
        "response.done",
        "conversation.item.truncated",
        "error",
    ];
    let n = server_names(dialect);
    names.extend([n.audio_delta, n.audio_done, n.transcript_delta, n.transcript_done]);
    if dialect == Dialect::VoiceLive {
        names.extend(["response.audio_timestamp.delta", "warning"]);
    }
    names
}

#[test]
fn decoded_server_events_exist_in_each_dialects_spec() {
    let ga = event_names(&GA, "RealtimeServerEvent");
    let preview = event_names(&PREVIEW, "RealtimeServerEvent");
    let vl = vl_enum("ServerEventType");
    assert!(ga.len() > 30 && preview.len() > 25, "{} {}", ga.len(), preview.len());
    for d in [Dialect::OpenAiGa, Dialect::OpenAiPreview, Dialect::VoiceLive] {
        let spec = match d {
            Dialect::OpenAiGa => &ga,
            Dialect::OpenAiPreview => &preview,
            Dialect::VoiceLive => &vl,
        };
        for name in decoded(d) {
            assert!(spec.iter().any(|s| s == name), "{name} is not a {d:?} server event");
            let e = parse_server_event(&format!(r#"{{"type":"{name}"}}"#)).unwrap();
            assert!(!matches!(e, ServerEvent::Other(_)), "{name} decodes to Other");
        }
    }
    // The renamed events really are dialect-specific (§7.2).
    assert!(!ga.iter().any(|s| s == "response.audio.delta"));
    assert!(!preview.iter().any(|s| s == "response.output_audio.delta"));
}

#[test]
fn client_event_types_are_client_events_of_each_dialect() {
    let ga = event_names(&GA, "RealtimeClientEvent");
    let preview = event_names(&PREVIEW, "RealtimeClientEvent");
    let vl = vl_enum("ClientEventType");
    for (d, spec) in [
        (Dialect::OpenAiGa, &ga),
        (Dialect::OpenAiPreview, &preview),
        (Dialect::VoiceLive, &vl),
    ] {
        for ty in client_event_types(d) {
            assert!(spec.iter().any(|s| s == ty), "{ty} is not a {d:?} client event");
        }
    }
}

/// Every client event we can build, for a dialect.
fn built_client_events(d: Dialect) -> Vec<String> {
    vec![
        session_update(d, &config(AudioFormat::G711Ulaw, "alloy")),
        input_audio_append("//////8="),
        input_audio_commit(),
        response_create(None),
        response_create(Some("Say goodbye.")),
        response_cancel(None),
        response_cancel(Some("resp_1")),
        item_truncate("item_1", 0, 1500),
        function_call_output("call_1", r#"{"ok":true}"#),
        function_call_item("call_1", "order_status", r#"{"order_id":"A1"}"#),
        user_text_item("The caller pressed 5."),
        restore_item(d, "user", "Hello?"),
        restore_item(d, "assistant", "Hi, this is the assistant."),
    ]
}

#[test]
fn preview_client_events_match_the_preview_schemas() {
    for text in built_client_events(Dialect::OpenAiPreview) {
        let v: Value = serde_json::from_str(&text).unwrap();
        validate(&PREVIEW, "RealtimeClientEvent", &v);
        let ty = v["type"].as_str().unwrap();
        assert!(client_event_types(Dialect::OpenAiPreview).contains(&ty));
    }
    for text in built_client_events(Dialect::OpenAiGa) {
        let v: Value = serde_json::from_str(&text).unwrap();
        validate(&GA, "RealtimeClientEvent", &v);
    }
}

#[test]
fn voice_live_client_events_match_the_sdk_models() {
    let model_of = |ty: &str| -> String {
        VOICE_LIVE["models"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(name, m)| name.starts_with("ClientEvent") && m["discriminator_value"] == ty)
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| panic!("no Voice Live model for {ty}"))
    };
    for text in built_client_events(Dialect::VoiceLive) {
        let v: Value = serde_json::from_str(&text).unwrap();
        let ty = v["type"].as_str().unwrap();
        assert!(vl_enum("ClientEventType").iter().any(|t| t == ty));
        assert_fields(&v, &model_of(ty));
        if let Some(item) = v.get("item") {
            let model = match (item["type"].as_str(), item["role"].as_str()) {
                (Some("function_call_output"), _) => "FunctionCallOutputItem",
                (Some("function_call"), _) => "FunctionCallItem",
                (Some("message"), Some("user")) => "UserMessageItem",
                (Some("message"), Some("assistant")) => "AssistantMessageItem",
                other => panic!("unexpected item {other:?}"),
            };
            assert_fields(item, model);
            for part in item["content"].as_array().into_iter().flatten() {
                let part_model = match part["type"].as_str() {
                    Some("input_text") => "InputTextContentPart",
                    Some("text") => "OutputTextContentPart",
                    other => panic!("unexpected content part {other:?}"),
                };
                assert_fields(part, part_model);
                assert!(vl_enum("ContentPartType").iter().any(|t| part["type"] == t.as_str()));
            }
        }
        if let Some(r) = v.get("response") {
            assert_fields(r, "ResponseCreateParams");
        }
    }
}

#[test]
fn voice_live_session_update_has_the_shape_of_the_official_example() {
    let example: Value = serde_json::from_str(
        &std::fs::read_to_string(spec_path("voicelive_examples/SessionInitialization.2025-10-01.json")).unwrap(),
    )
    .unwrap();
    let theirs = example["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["event"]["type"] == "session.update")
        .map(|m| &m["event"]["session"])
        .unwrap();
    let ours: Value = serde_json::from_str(&session_update(
        Dialect::VoiceLive,
        &config(AudioFormat::Pcm16_24k, "shimmer"),
    ))
    .unwrap();
    let ours = &ours["session"];
    // Same value kinds where both send a field, and the turn detection keys
    // they send are a subset of ours.
    for (k, v) in theirs.as_object().unwrap() {
        if let Some(o) = ours.get(k) {
            let kind = |v: &Value| std::mem::discriminant(&std::mem::take(&mut v.clone()));
            let same = kind(v) == kind(o) || (k == "voice" && o.is_object()); // voice: string or object (§6.4)
            assert!(same, "{k}: example {v}, ours {o}");
        }
    }
    for k in theirs["turn_detection"].as_object().unwrap().keys() {
        assert!(ours["turn_detection"].get(k).is_some(), "turn_detection.{k}");
    }
    assert_eq!(ours["modalities"], theirs["modalities"]);
    assert_eq!(ours["voice"], serde_json::json!({"type": "openai", "name": "shimmer"}));
}

#[test]
fn voices_and_tools() {
    assert_eq!(
        Voice::parse("en-US-AriaNeural"),
        Voice::Azure("en-US-AriaNeural".into())
    );
    assert_eq!(Voice::parse("marin"), Voice::OpenAi("marin".into()));
    let tool = ToolDef::end_call().to_json();
    assert_eq!(tool["type"], "function");
    assert_eq!(tool["name"], "end_call");
    assert_eq!(tool["parameters"]["type"], "object");
    let mut c = config(AudioFormat::G711Ulaw, "alloy");
    c.vad = Vad {
        threshold: 0.6,
        prefix_padding_ms: 200,
        silence_duration_ms: 700,
    };
    c.noise_suppression = false;
    c.echo_cancellation = false;
    c.voice_live_word_timestamps = false;
    let v: Value = serde_json::from_str(&session_update(Dialect::VoiceLive, &c)).unwrap();
    let s = &v["session"];
    assert_eq!(s["turn_detection"]["threshold"], 0.6);
    assert_eq!(s["turn_detection"]["silence_duration_ms"], 700);
    assert!(s.get("input_audio_noise_reduction").is_none());
    assert!(s.get("input_audio_echo_cancellation").is_none());
    assert!(s.get("output_audio_timestamp_types").is_none());
    assert!(
        s.get("input_audio_sampling_rate").is_none(),
        "μ-law: no sampling rate (§6.4)"
    );
    let ga: Value = serde_json::from_str(&session_update(Dialect::OpenAiGa, &c)).unwrap();
    assert_eq!(
        ga["session"]["audio"]["input"]["turn_detection"]["prefix_padding_ms"],
        200
    );
    assert_eq!(
        ga["session"]["audio"]["input"]["format"],
        serde_json::json!({"type": "audio/pcmu"})
    );
    let pv: Value = serde_json::from_str(&session_update(Dialect::OpenAiPreview, &c)).unwrap();
    assert_eq!(pv["session"]["input_audio_format"], "g711_ulaw");
    assert_eq!(pv["session"]["voice"], "alloy");
}

#[test]
fn every_decoded_event_carries_its_fields() {
    let cases = [
        (
            r#"{"type":"input_audio_buffer.speech_started","audio_start_ms":1000,"item_id":"u1"}"#,
            ServerEvent::SpeechStarted {
                audio_start_ms: 1000,
                item_id: "u1".into(),
            },
        ),
        (
            r#"{"type":"input_audio_buffer.committed","previous_item_id":null,"item_id":"u1"}"#,
            ServerEvent::Committed {
                item_id: "u1".into(),
                previous_item_id: None,
            },
        ),
        (
            r#"{"type":"response.output_item.added","response_id":"r","output_index":1,"item":{"id":"fc","type":"function_call","call_id":"c","name":"end_call","arguments":""}}"#,
            ServerEvent::OutputItemAdded {
                response_id: "r".into(),
                item_id: "fc".into(),
                kind: ItemKind::FunctionCall,
                name: Some("end_call".into()),
                call_id: Some("c".into()),
            },
        ),
        (
            r#"{"type":"response.function_call_arguments.done","response_id":"r","item_id":"fc","call_id":"c","name":"end_call","arguments":"{}"}"#,
            ServerEvent::FunctionCallArgumentsDone {
                response_id: "r".into(),
                item_id: "fc".into(),
                call_id: "c".into(),
                name: "end_call".into(),
                arguments: "{}".into(),
            },
        ),
        (
            r#"{"type":"conversation.item.input_audio_transcription.failed","item_id":"u1","content_index":0,"error":{"type":"transcription_error","code":"audio_unintelligible","message":"Audio unintelligible"}}"#,
            ServerEvent::InputTranscriptionFailed {
                item_id: "u1".into(),
                error: "Audio unintelligible".into(),
            },
        ),
        (
            r#"{"type":"response.audio_timestamp.delta","response_id":"r","item_id":"a1","output_index":0,"content_index":0,"audio_offset_ms":120,"audio_duration_ms":300,"text":"Hello","timestamp_type":"word"}"#,
            ServerEvent::WordTimestamp {
                item_id: "a1".into(),
                text: "Hello".into(),
                audio_offset_ms: 120,
                audio_duration_ms: 300,
            },
        ),
        (
            r#"{"type":"conversation.item.truncated","item_id":"a1","content_index":0,"audio_end_ms":1500}"#,
            ServerEvent::ItemTruncated {
                item_id: "a1".into(),
                audio_end_ms: 1500,
            },
        ),
        (
            r#"{"type":"warning","warning":{"message":"slow down","code":"rate"}}"#,
            ServerEvent::Warning {
                message: "slow down".into(),
                code: Some("rate".into()),
            },
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse_server_event(text).unwrap(), want, "{text}");
    }
    // A base64 delta with an escaped slash still decodes (borrowing falls back to a copy).
    let e = parse_server_event(r#"{"type":"response.audio.delta","response_id":"r","item_id":"i","delta":"ab\/c"}"#)
        .unwrap();
    assert!(matches!(e, ServerEvent::AudioDelta { ref delta, .. } if delta == "ab/c"));
}
