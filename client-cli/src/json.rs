//! `--json` output: the proto3 JSON mapping, as grpcurl prints it with
//! `-emit-defaults` (camelCase field names, enums by name, or by number for a
//! value this build does not know, 64-bit integers as strings, timestamps in
//! RFC 3339 UTC). Every field is always present so a script can rely on the
//! shape; an unset message field (e.g. a timestamp) is `null`.
//!
//! prost-reflect does the mapping from the contract's own descriptor set (the
//! one the proto crate embeds for reflection), so a field added to the
//! contract shows up here with no code. It leaves an unset message field out
//! where grpcurl prints `null`; [`add_nulls`] puts those back.
//!
//! (pbjson was the other candidate; its generated code fails on an enum value
//! newer than the client, and pbjson-types writes timestamps as `+00:00`
//! rather than `Z`, both unlike grpcurl.)

use std::sync::LazyLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, ReflectMessage, SerializeOptions};
use serde_json::Value;
use voice_agent_proto::v1 as pb;

/// Why a message could not be written as JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The embedded descriptor set did not load (a build defect).
    #[error("the contract's descriptors are unreadable: {0}")]
    Descriptors(String),
    /// The descriptor set lacks a message type (a build defect).
    #[error("{0} is not in the contract's descriptors")]
    UnknownMessage(&'static str),
    /// The message did not decode against its descriptor.
    #[error("cannot read {name}: {source}")]
    Decode {
        name: &'static str,
        source: prost::DecodeError,
    },
    /// The JSON mapping refused a value (e.g. a timestamp out of its range).
    #[error("cannot write {name} as JSON: {source}")]
    Serialize {
        name: &'static str,
        source: serde_json::Error,
    },
}

impl From<JsonError> for std::io::Error {
    fn from(e: JsonError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

static POOL: LazyLock<Result<DescriptorPool, prost_reflect::DescriptorError>> =
    LazyLock::new(|| DescriptorPool::decode(voice_agent_proto::FILE_DESCRIPTOR_SET));

/// A `CallEvent` (what `watch` prints, one per line).
pub fn event_json(event: &pb::CallEvent) -> Result<Value, JsonError> {
    to_json("voiceagent.v1.CallEvent", event)
}

/// A `Call` record (what `get`, `list` and `hangup` print).
pub fn call_json(call: &pb::Call) -> Result<Value, JsonError> {
    to_json("voiceagent.v1.Call", call)
}

/// A `PlaceCallResponse` (what `call` prints first).
pub fn placed_json(placed: &pb::PlaceCallResponse) -> Result<Value, JsonError> {
    to_json("voiceagent.v1.PlaceCallResponse", placed)
}

/// A `GetServerInfoResponse` (what `info` prints).
pub fn server_info_json(info: &pb::GetServerInfoResponse) -> Result<Value, JsonError> {
    to_json("voiceagent.v1.GetServerInfoResponse", info)
}

/// `message`, known to the contract as `name`, in the proto3 JSON mapping
/// with every field present.
fn to_json(name: &'static str, message: &impl Message) -> Result<Value, JsonError> {
    let pool = POOL.as_ref().map_err(|e| JsonError::Descriptors(e.to_string()))?;
    let descriptor = pool.get_message_by_name(name).ok_or(JsonError::UnknownMessage(name))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .map_err(|source| JsonError::Decode { name, source })?;
    let options = SerializeOptions::new().skip_default_fields(false);
    let mut json = dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|source| JsonError::Serialize { name, source })?;
    add_nulls(&dynamic, &mut json);
    Ok(json)
}

/// Adds `null` for every unset singular message field of `message` (and of
/// the messages inside it), as grpcurl's `-emit-defaults` does. The members
/// of a oneof stay absent but for the one that is set, as in grpcurl.
fn add_nulls(message: &DynamicMessage, json: &mut Value) {
    let Value::Object(object) = json else { return };
    for field in message.descriptor().fields() {
        let Kind::Message(kind) = field.kind() else { continue };
        if field.is_map() || field.containing_oneof().is_some_and(|o| !o.is_synthetic()) {
            continue;
        }
        // Well-known types are written as strings: nothing inside to fill.
        let plain = !kind.full_name().starts_with("google.protobuf.");
        let value = message.get_field(&field);
        let Some(slot) = object.get_mut(field.json_name()) else {
            if !field.is_list() && !message.has_field(&field) {
                object.insert(field.json_name().to_string(), Value::Null);
            }
            continue;
        };
        match (value.as_list(), slot) {
            (Some(items), Value::Array(slots)) if plain => {
                for (item, slot) in items.iter().zip(slots) {
                    if let Some(m) = item.as_message() {
                        add_nulls(m, slot);
                    }
                }
            }
            (None, slot) if plain => {
                if let Some(m) = value.as_message() {
                    add_nulls(m, slot);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use voice_agent_proto::v1::call_event::Kind;

    fn event(kind: Kind) -> pb::CallEvent {
        pb::CallEvent {
            sequence: 7,
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 120_000_000,
            }),
            kind: Some(kind),
        }
    }

    #[test]
    fn status_event_matches_grpcurl() {
        let v = event_json(&event(Kind::Status(pb::StatusChanged {
            status: pb::CallStatus::Ringing as i32,
            detail: String::new(),
        })))
        .unwrap();
        assert_eq!(
            v,
            json!({
                "sequence": "7",
                "time": "2023-11-14T22:13:20.120Z",
                "status": {"status": "CALL_STATUS_RINGING", "detail": ""},
            })
        );
    }

    #[test]
    fn transcript_turn_and_notice_use_camel_case() {
        let t = event_json(&event(Kind::Transcript(pb::Transcript {
            speaker: pb::Speaker::Agent as i32,
            text: "Hi \"there\"".into(),
            interrupted: true,
        })))
        .unwrap();
        assert_eq!(t["transcript"]["speaker"], "SPEAKER_AGENT");
        assert_eq!(t["transcript"]["text"], "Hi \"there\"");
        assert_eq!(t["transcript"]["interrupted"], true);
        let m = event_json(&event(Kind::Turn(pb::TurnMetrics {
            turn_index: 2,
            first_audio_sent_ms: 410,
            first_audio_heard_ms: 590,
        })))
        .unwrap();
        assert_eq!(
            m["turn"],
            json!({"turnIndex": 2, "firstAudioSentMs": 410, "firstAudioHeardMs": 590})
        );
        let n = event_json(&event(Kind::Notice(pb::Notice {
            code: "emulated".into(),
            message: "m".into(),
        })))
        .unwrap();
        assert_eq!(n["notice"]["code"], "emulated");
        let d = event_json(&event(Kind::Dtmf(pb::Dtmf { digit: "#".into() }))).unwrap();
        assert_eq!(d["dtmf"]["digit"], "#");
    }

    #[test]
    fn unknown_enum_values_become_numbers_and_unknown_kinds_are_bare() {
        let v = event_json(&event(Kind::Status(pb::StatusChanged {
            status: 42,
            detail: String::new(),
        })))
        .unwrap();
        assert_eq!(v["status"]["status"], 42);
        let bare = event_json(&pb::CallEvent {
            sequence: u64::MAX,
            time: None,
            kind: None,
        })
        .unwrap();
        assert_eq!(bare, json!({"sequence": "18446744073709551615", "time": null}));
    }

    #[test]
    fn call_record_has_every_field() {
        let call = pb::Call {
            call_id: "c1".into(),
            to: "+14155551212".into(),
            backend: pb::Backend::GptRealtime as i32,
            status: pb::CallStatus::Completed as i32,
            metadata: [("team".to_string(), "ops".to_string())].into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            emulated: true,
            event_count: 12,
            ..Default::default()
        };
        let v = call_json(&call).unwrap();
        assert_eq!(v["callId"], "c1");
        assert_eq!(v["backend"], "BACKEND_GPT_REALTIME");
        assert_eq!(v["status"], "CALL_STATUS_COMPLETED");
        assert_eq!(v["metadata"]["team"], "ops");
        assert_eq!(v["createdAt"], "2023-11-14T22:13:20Z");
        assert_eq!(v["answeredAt"], Value::Null);
        assert_eq!(v["eventCount"], "12");
        assert_eq!(v["emulated"], true);
        assert_eq!(v["recordingUrl"], "");
        assert_eq!(v["recording"], Value::Null);
        assert_eq!(v["tools"], json!([]));
        assert_eq!(v["toolTimeout"], Value::Null);
        assert_eq!(v["voicemail"], Value::Null);
        assert_eq!(v["webhooks"], json!([]));
        assert_eq!(v["transferTargets"], json!([]));
        assert_eq!(v["transfer"], Value::Null);
        // The 20 fields of before, recordingUrl, recording, tools, toolTimeout,
        // voicemail, webhooks, transferTargets, transfer.
        assert_eq!(v.as_object().map(|o| o.len()), Some(28));
    }

    #[test]
    fn server_info_has_every_field() {
        let v = server_info_json(&pb::GetServerInfoResponse {
            backends: vec![pb::BackendInfo {
                backend: pb::Backend::GptRealtime as i32,
                emulated: false,
                default_voice: "alloy".into(),
                display_name: "gpt-realtime".into(),
            }],
            default_backend: pb::Backend::GptRealtime as i32,
            telephony_emulated: true,
            default_greeting: "Hi".into(),
            default_max_duration: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
            audio_mode: pb::AudioMode::Passthrough as i32,
            server_version: "1.2.3".into(),
            limits: Some(pb::PlaceCallLimits {
                max_voice_bytes: 128,
                longest_max_duration: Some(prost_types::Duration {
                    seconds: 14_400,
                    nanos: 0,
                }),
                ..Default::default()
            }),
        })
        .unwrap();
        assert_eq!(
            v,
            json!({
                "backends": [{"backend": "BACKEND_GPT_REALTIME", "emulated": false, "defaultVoice": "alloy", "displayName": "gpt-realtime"}],
                "defaultBackend": "BACKEND_GPT_REALTIME",
                "telephonyEmulated": true,
                "defaultGreeting": "Hi",
                "defaultMaxDuration": "600s",
                "audioMode": "AUDIO_MODE_PASSTHROUGH",
                "serverVersion": "1.2.3",
                "limits": {
                    "minToDigits": 0,
                    "maxToDigits": 0,
                    "maxInstructionsBytes": 0,
                    "maxVoiceBytes": 128,
                    "maxGreetingBytes": 0,
                    "maxMetadataEntries": 0,
                    "maxMetadataKeyBytes": 0,
                    "maxMetadataValueBytes": 0,
                    "shortestMaxDuration": null,
                    "longestMaxDuration": "14400s",
                },
            })
        );
        let unset = server_info_json(&pb::GetServerInfoResponse::default()).unwrap();
        assert_eq!(unset["defaultMaxDuration"], Value::Null);
        assert_eq!(unset["backends"], json!([]));
        assert_eq!(unset["audioMode"], "AUDIO_MODE_UNSPECIFIED");
        assert_eq!(unset["limits"], Value::Null);
    }

    #[test]
    fn durations_match_protojson() {
        let d = |seconds, nanos| {
            server_info_json(&pb::GetServerInfoResponse {
                default_max_duration: Some(prost_types::Duration { seconds, nanos }),
                ..Default::default()
            })
            .unwrap()["defaultMaxDuration"]
                .clone()
        };
        assert_eq!(d(600, 0), "600s");
        assert_eq!(d(1, 500_000_000), "1.500s");
        assert_eq!(d(0, 1_000), "0.000001s");
        assert_eq!(d(0, 1), "0.000000001s");
        assert_eq!(d(-1, -500_000_000), "-1.500s");
        assert_eq!(d(0, -5_000_000), "-0.005s");
    }

    #[test]
    fn placed_call_uses_full_enum_names() {
        let v = placed_json(&pb::PlaceCallResponse {
            call_id: "c1".into(),
            provider_call_id: "CA00".into(),
            status: pb::CallStatus::Queued as i32,
            emulated: true,
        })
        .unwrap();
        assert_eq!(
            v,
            json!({"callId": "c1", "providerCallId": "CA00", "status": "CALL_STATUS_QUEUED", "emulated": true})
        );
    }
}
