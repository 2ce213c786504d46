//! `--json` output: the proto3 JSON mapping, as grpcurl prints it with
//! `-emit-defaults` (camelCase field names, enums by name, 64-bit integers as
//! strings, timestamps in RFC 3339 UTC). Every field is always present so a
//! script can rely on the shape; an unset timestamp is `null`.
//!
//! Written by hand because prost types carry no serde support.

use serde_json::{Map, Value, json};
use voice_agent_proto::v1 as pb;
use voice_agent_proto::v1::call_event::Kind;

/// A `CallEvent` (what `watch` prints, one per line).
pub fn event_json(event: &pb::CallEvent) -> Value {
    let mut out = Map::new();
    out.insert("sequence".into(), uint64(event.sequence));
    out.insert("time".into(), timestamp(event.time.as_ref()));
    // The oneof appears as the one field that is set, named like the field.
    let (name, body) = match &event.kind {
        Some(Kind::Status(s)) => ("status", json!({"status": call_status(s.status), "detail": s.detail})),
        Some(Kind::Transcript(t)) => (
            "transcript",
            json!({"speaker": speaker(t.speaker), "text": t.text, "interrupted": t.interrupted}),
        ),
        Some(Kind::Error(e)) => ("error", json!({"code": e.code, "message": e.message})),
        Some(Kind::Dtmf(d)) => ("dtmf", json!({"digit": d.digit})),
        Some(Kind::Turn(m)) => (
            "turn",
            json!({
                "turnIndex": m.turn_index,
                "firstAudioSentMs": m.first_audio_sent_ms,
                "firstAudioHeardMs": m.first_audio_heard_ms,
            }),
        ),
        Some(Kind::Notice(n)) => ("notice", json!({"code": n.code, "message": n.message})),
        // A kind added to the contract after this client was built.
        None => return Value::Object(out),
    };
    out.insert(name.into(), body);
    Value::Object(out)
}

/// A `Call` record (what `get`, `list` and `hangup` print).
pub fn call_json(call: &pb::Call) -> Value {
    json!({
        "callId": call.call_id,
        "to": call.to,
        "from": call.from,
        "backend": backend(call.backend),
        "status": call_status(call.status),
        "providerCallId": call.provider_call_id,
        "metadata": call.metadata,
        "createdAt": timestamp(call.created_at.as_ref()),
        "answeredAt": timestamp(call.answered_at.as_ref()),
        "endedAt": timestamp(call.ended_at.as_ref()),
        "emulated": call.emulated,
        "endReason": call.end_reason,
        "instructions": call.instructions,
        "voice": call.voice,
        "durationSeconds": call.duration_seconds,
        "answeredBy": call.answered_by,
        "providerErrorCode": call.provider_error_code,
        "turnLatencyP50Ms": call.turn_latency_p50_ms,
        "turnLatencyP95Ms": call.turn_latency_p95_ms,
        "eventCount": uint64(call.event_count),
    })
}

/// A `PlaceCallResponse` (what `call` prints first).
pub fn placed_json(placed: &pb::PlaceCallResponse) -> Value {
    json!({
        "callId": placed.call_id,
        "providerCallId": placed.provider_call_id,
        "status": call_status(placed.status),
        "emulated": placed.emulated,
    })
}

/// A `GetServerInfoResponse` (what `info` prints).
pub fn server_info_json(info: &pb::GetServerInfoResponse) -> Value {
    let backends: Vec<Value> = info
        .backends
        .iter()
        .map(|b| json!({"backend": backend(b.backend), "emulated": b.emulated, "defaultVoice": b.default_voice}))
        .collect();
    json!({
        "backends": backends,
        "defaultBackend": backend(info.default_backend),
        "telephonyEmulated": info.telephony_emulated,
        "defaultGreeting": info.default_greeting,
        "defaultMaxDuration": duration(info.default_max_duration.as_ref()),
        "audioMode": enum_value(pb::AudioMode::try_from(info.audio_mode).ok().map(|m| m.as_str_name()), info.audio_mode),
        "serverVersion": info.server_version,
    })
}

/// proto3 JSON writes a Duration as seconds with an `s` suffix and 0, 3, 6
/// or 9 fractional digits, e.g. "600s" or "1.500s"; unset is `null`.
fn duration(d: Option<&prost_types::Duration>) -> Value {
    let Some(d) = d else { return Value::Null };
    let sign = if d.seconds < 0 || d.nanos < 0 { "-" } else { "" };
    let (seconds, nanos) = (d.seconds.unsigned_abs(), d.nanos.unsigned_abs());
    let fraction = match nanos {
        0 => String::new(),
        n if n % 1_000_000 == 0 => format!(".{:03}", n / 1_000_000),
        n if n % 1_000 == 0 => format!(".{:06}", n / 1_000),
        n => format!(".{n:09}"),
    };
    Value::String(format!("{sign}{seconds}{fraction}s"))
}

/// proto3 JSON writes 64-bit integers as strings (JavaScript numbers lose
/// precision beyond 2^53).
fn uint64(n: u64) -> Value {
    Value::String(n.to_string())
}

/// RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits, as protojson does.
fn timestamp(ts: Option<&prost_types::Timestamp>) -> Value {
    ts.and_then(crate::render::to_datetime)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
        .unwrap_or(Value::Null)
}

/// proto3 JSON writes an enum value this client does not know as its number.
fn enum_value(name: Option<&'static str>, raw: i32) -> Value {
    name.map_or_else(|| Value::from(raw), |n| Value::String(n.to_string()))
}

fn call_status(raw: i32) -> Value {
    enum_value(pb::CallStatus::try_from(raw).ok().map(|s| s.as_str_name()), raw)
}

fn speaker(raw: i32) -> Value {
    enum_value(pb::Speaker::try_from(raw).ok().map(|s| s.as_str_name()), raw)
}

fn backend(raw: i32) -> Value {
    enum_value(pb::Backend::try_from(raw).ok().map(|b| b.as_str_name()), raw)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        })));
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
        })));
        assert_eq!(t["transcript"]["speaker"], "SPEAKER_AGENT");
        assert_eq!(t["transcript"]["text"], "Hi \"there\"");
        assert_eq!(t["transcript"]["interrupted"], true);
        let m = event_json(&event(Kind::Turn(pb::TurnMetrics {
            turn_index: 2,
            first_audio_sent_ms: 410,
            first_audio_heard_ms: 590,
        })));
        assert_eq!(
            m["turn"],
            json!({"turnIndex": 2, "firstAudioSentMs": 410, "firstAudioHeardMs": 590})
        );
        let n = event_json(&event(Kind::Notice(pb::Notice {
            code: "emulated".into(),
            message: "m".into(),
        })));
        assert_eq!(n["notice"]["code"], "emulated");
        let d = event_json(&event(Kind::Dtmf(pb::Dtmf { digit: "#".into() })));
        assert_eq!(d["dtmf"]["digit"], "#");
    }

    #[test]
    fn unknown_enum_values_become_numbers_and_unknown_kinds_are_bare() {
        let v = event_json(&event(Kind::Status(pb::StatusChanged {
            status: 42,
            detail: String::new(),
        })));
        assert_eq!(v["status"]["status"], 42);
        let bare = event_json(&pb::CallEvent {
            sequence: u64::MAX,
            time: None,
            kind: None,
        });
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
        let v = call_json(&call);
        assert_eq!(v["callId"], "c1");
        assert_eq!(v["backend"], "BACKEND_GPT_REALTIME");
        assert_eq!(v["status"], "CALL_STATUS_COMPLETED");
        assert_eq!(v["metadata"]["team"], "ops");
        assert_eq!(v["createdAt"], "2023-11-14T22:13:20Z");
        assert_eq!(v["answeredAt"], Value::Null);
        assert_eq!(v["eventCount"], "12");
        assert_eq!(v["emulated"], true);
        assert_eq!(v.as_object().map(|o| o.len()), Some(20));
    }

    #[test]
    fn server_info_has_every_field() {
        let v = server_info_json(&pb::GetServerInfoResponse {
            backends: vec![pb::BackendInfo {
                backend: pb::Backend::GptRealtime as i32,
                emulated: false,
                default_voice: "alloy".into(),
            }],
            default_backend: pb::Backend::GptRealtime as i32,
            telephony_emulated: true,
            default_greeting: "Hi".into(),
            default_max_duration: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
            audio_mode: pb::AudioMode::Passthrough as i32,
            server_version: "1.2.3".into(),
        });
        assert_eq!(
            v,
            json!({
                "backends": [{"backend": "BACKEND_GPT_REALTIME", "emulated": false, "defaultVoice": "alloy"}],
                "defaultBackend": "BACKEND_GPT_REALTIME",
                "telephonyEmulated": true,
                "defaultGreeting": "Hi",
                "defaultMaxDuration": "600s",
                "audioMode": "AUDIO_MODE_PASSTHROUGH",
                "serverVersion": "1.2.3",
            })
        );
        let unset = server_info_json(&pb::GetServerInfoResponse::default());
        assert_eq!(unset["defaultMaxDuration"], Value::Null);
        assert_eq!(unset["backends"], json!([]));
        assert_eq!(unset["audioMode"], "AUDIO_MODE_UNSPECIFIED");
    }

    #[test]
    fn durations_match_protojson() {
        let d = |seconds, nanos| duration(Some(&prost_types::Duration { seconds, nanos }));
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
        });
        assert_eq!(
            v,
            json!({"callId": "c1", "providerCallId": "CA00", "status": "CALL_STATUS_QUEUED", "emulated": true})
        );
    }
}
