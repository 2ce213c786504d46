//! Wire format: the outcome webhook messages, no I/O. A committed change of
//! a call's status makes one `call.status_changed` message per target URL,
//! and a terminal status one `call.ended` after it; the store writes them to
//! its outbox in the transaction of the change ([`crate::store`]), so a
//! message exists exactly when the status change it reports does.
//!
//! Body (Standard Webhooks' recommended shape):
//! `{"type": "call.status_changed" | "call.ended", "timestamp": RFC 3339, "data": {…}}`,
//! the `data` fields listed in docs/contract.md ("Outcome webhooks"). The
//! body is made once, when the message is stored, so every retry sends the
//! same bytes under the same `webhook-id`. A `call.ended` body is bounded
//! ([`MAX_TRANSCRIPT_BYTES`], [`MAX_TOOL_CALLS`], [`MAX_TOOL_TEXT`]):
//! whatever was cut is flagged `transcript_truncated` / `tool_calls_truncated`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::call::payload_caps::cap;
use crate::call::{CallEvent, CallRecord, EventKind, Speaker};

/// `type` of the message of every status change.
pub const STATUS_CHANGED: &str = "call.status_changed";
/// `type` of the message of a call's end (after its last `call.status_changed`).
pub const ENDED: &str = "call.ended";
/// Most bytes of transcript text in a `call.ended` (the latest utterances are dropped beyond it).
pub const MAX_TRANSCRIPT_BYTES: usize = 64 * 1024;
/// Most tool calls listed in a `call.ended`.
pub const MAX_TOOL_CALLS: usize = 32;
/// Most bytes of a tool call's arguments, and of its output, in a `call.ended`.
pub const MAX_TOOL_TEXT: usize = 2 * 1024;
/// Most events of the log a `call.ended` is made from (the store reads no more).
pub const MAX_LOG_EVENTS: usize = 5000;

/// A message to store in the outbox, for one target URL.
#[derive(Clone, Debug, PartialEq)]
pub struct NewMessage {
    /// `webhook-id`: the same on every attempt (receivers deduplicate on it).
    pub message_id: String,
    /// Where it goes.
    pub url: String,
    /// [`STATUS_CHANGED`] or [`ENDED`].
    pub event_type: &'static str,
    /// The JSON body, signed as it is.
    pub body: String,
}

/// True when a change with these events makes messages for this call (the
/// store reads the call's log only then).
pub fn makes_messages(record: &CallRecord, events: &[CallEvent]) -> bool {
    !record.webhooks.is_empty() && events.iter().any(|e| matches!(e.kind, EventKind::Status { .. }))
}

/// True when a change with these events ends the call (its `call.ended` needs the log).
pub fn ends(events: &[CallEvent]) -> bool {
    events.iter().any(|e| e.kind.terminal_status().is_some())
}

/// The messages a committed change makes, in order: for each status event,
/// its `call.status_changed`, and after a terminal one the `call.ended`
/// (from `log`, the call's whole event log with this change's events; only
/// read when [`ends`]). `link_base` makes the recording link absolute
/// (PUBLIC_URL). One message id per message, shared by its targets.
pub fn messages(record: &CallRecord, events: &[CallEvent], log: &[CallEvent], link_base: &str) -> Vec<NewMessage> {
    let mut out = Vec::new();
    if record.webhooks.is_empty() {
        return out;
    }
    let mut push = |event_type: &'static str, time: DateTime<Utc>, data: Value| {
        let message_id = crate::webhook_signing::new_message_id();
        let body = json!({
            "type": event_type,
            "timestamp": time.to_rfc3339_opts(SecondsFormat::Millis, true),
            "data": data,
        })
        .to_string();
        for url in &record.webhooks {
            out.push(NewMessage {
                message_id: message_id.clone(),
                url: url.clone(),
                event_type,
                body: body.clone(),
            });
        }
    };
    for ev in events {
        let EventKind::Status { status, detail } = &ev.kind else {
            continue;
        };
        push(
            STATUS_CHANGED,
            ev.time,
            json!({
                "call_id": record.call_id,
                "status": crate::store::status_text(*status),
                "detail": detail,
                "sequence": ev.sequence,
                "to": record.to,
                "metadata": record.metadata,
            }),
        );
        if status.is_terminal() {
            push(ENDED, ev.time, ended_data(record, log, link_base));
        }
    }
    out
}

fn time(t: Option<DateTime<Utc>>) -> Value {
    t.map(|t| Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

fn millis_between(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Value {
    match (a, b) {
        (Some(a), Some(b)) => json!((b - a).num_milliseconds().max(0)),
        _ => Value::Null,
    }
}

/// `call.ended`'s data: the record as it ended, its transcript and tool calls.
fn ended_data(record: &CallRecord, log: &[CallEvent], link_base: &str) -> Value {
    let mut transcript = Vec::new();
    let mut transcript_bytes = 0;
    let mut transcript_truncated = false;
    let mut tool_calls: Vec<Value> = Vec::new();
    let mut tool_calls_truncated = false;
    for ev in log {
        match &ev.kind {
            EventKind::Transcript {
                speaker,
                text,
                interrupted,
            } => {
                if transcript_bytes + text.len() > MAX_TRANSCRIPT_BYTES {
                    transcript_truncated = true;
                    continue;
                }
                transcript_bytes += text.len();
                transcript.push(json!({
                    "role": match speaker { Speaker::Callee => "callee", Speaker::Agent => "agent" },
                    "text": text,
                    "interrupted": interrupted,
                    "time": time(Some(ev.time)),
                }));
            }
            EventKind::ToolCall {
                tool_call_id,
                name,
                arguments,
                ..
            } => {
                if tool_calls.len() >= MAX_TOOL_CALLS {
                    tool_calls_truncated = true;
                    continue;
                }
                let mut arguments = arguments.clone();
                cap(&mut arguments, MAX_TOOL_TEXT);
                tool_calls.push(json!({
                    "tool_call_id": tool_call_id,
                    "name": name,
                    "arguments": arguments,
                    "output": Value::Null,
                    "outcome": Value::Null,
                }));
            }
            EventKind::ToolResult {
                tool_call_id,
                output,
                outcome,
                ..
            } => {
                if let Some(call) = tool_calls
                    .iter_mut()
                    .rev()
                    .find(|c| c["tool_call_id"] == json!(tool_call_id))
                {
                    let mut output = output.clone();
                    cap(&mut output, MAX_TOOL_TEXT);
                    call["output"] = json!(output);
                    call["outcome"] = serde_json::to_value(outcome).unwrap_or(Value::Null);
                }
            }
            _ => {}
        }
    }
    let base = link_base.trim_end_matches('/');
    let recording_url = record
        .recording
        .as_ref()
        .and_then(|r| r.url(&record.call_id))
        .map(|path| format!("{base}{path}"));
    json!({
        "call_id": record.call_id,
        "to": record.to,
        "from": record.from,
        "backend": record.backend.as_str(),
        "status": crate::store::status_text(record.status),
        "end_reason": record.end_reason,
        "provider_error_code": record.provider_error_code,
        "answered_by": record.answered_by,
        "metadata": record.metadata,
        "created_at": time(Some(record.created_at)),
        "answered_at": time(record.answered_at),
        "ended_at": time(record.ended_at),
        "ring_duration_ms": millis_between(Some(record.created_at), record.answered_at.or(record.ended_at)),
        "talk_duration_ms": millis_between(record.answered_at, record.ended_at),
        "total_duration_ms": millis_between(Some(record.created_at), record.ended_at),
        "provider_duration_seconds": record.duration_seconds,
        "recording_url": recording_url,
        "transcript": transcript,
        "transcript_truncated": transcript_truncated,
        "tool_calls": tool_calls,
        "tool_calls_truncated": tool_calls_truncated,
        "transfer": record.transfer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{CallStatus, RecordingInfo, RecordingState};

    fn ev(sequence: u64, kind: EventKind) -> CallEvent {
        CallEvent {
            sequence,
            time: Utc::now(),
            kind,
        }
    }

    fn status(sequence: u64, status: CallStatus) -> CallEvent {
        ev(
            sequence,
            EventKind::Status {
                status,
                detail: String::new(),
            },
        )
    }

    #[test]
    fn the_end_says_how_a_transfer_went() {
        use crate::call::{TransferBy, TransferInfo, TransferState};
        let mut rec = CallRecord {
            webhooks: vec!["https://a.example/h".into()],
            transfer: Some(TransferInfo {
                target: "+15550122".into(),
                state: TransferState::Busy,
                by: TransferBy::Agent,
                reason: "the line was busy".into(),
            }),
            ..CallRecord::for_tests()
        };
        let end = status(4, CallStatus::Completed);
        rec.apply(&end.kind, end.time);
        let out = messages(&rec, std::slice::from_ref(&end), &[], "http://x");
        let ended: Value = serde_json::from_str(&out.last().unwrap().body).unwrap();
        assert_eq!(ended["type"], "call.ended");
        assert_eq!(
            ended["data"]["transfer"],
            json!({"target": "+15550122", "state": "busy", "by": "agent", "reason": "the line was busy"})
        );
    }

    #[test]
    fn no_targets_no_messages() {
        let rec = CallRecord::for_tests();
        let events = [status(1, CallStatus::Ringing)];
        assert!(!makes_messages(&rec, &events));
        assert!(messages(&rec, &events, &[], "http://x").is_empty());
    }

    #[test]
    fn a_status_change_makes_one_message_per_target_sharing_its_id() {
        let rec = CallRecord {
            webhooks: vec!["https://a.example/h".into(), "https://b.example/h".into()],
            ..CallRecord::for_tests()
        };
        let events = [status(3, CallStatus::Ringing)];
        assert!(makes_messages(&rec, &events));
        let out = messages(&rec, &events, &[], "http://x");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].message_id, out[1].message_id);
        assert_ne!(out[0].url, out[1].url);
        let body: Value = serde_json::from_str(&out[0].body).unwrap();
        assert_eq!(body["type"], STATUS_CHANGED);
        assert_eq!(body["data"]["status"], "ringing");
        assert_eq!(body["data"]["sequence"], 3);
        assert!(DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn the_end_follows_its_status_change_with_transcript_tools_and_an_absolute_recording_link() {
        let mut rec = CallRecord {
            webhooks: vec!["https://a.example/h".into()],
            answered_by: "human".into(),
            recording: Some(RecordingInfo {
                state: RecordingState::Complete,
                error: String::new(),
                duration_ms: 1000,
                file: true,
            }),
            ..CallRecord::for_tests()
        };
        let end = status(6, CallStatus::Completed);
        rec.apply(&end.kind, end.time);
        let log = vec![
            ev(
                1,
                EventKind::Transcript {
                    speaker: Speaker::Agent,
                    text: "hello".into(),
                    interrupted: false,
                },
            ),
            ev(
                2,
                EventKind::ToolCall {
                    tool_call_id: "t1".into(),
                    name: "lookup".into(),
                    arguments: "x".repeat(10_000),
                    by_url: false,
                },
            ),
            ev(
                3,
                EventKind::ToolResult {
                    tool_call_id: "t1".into(),
                    name: "lookup".into(),
                    output: "{\"ok\":1}".into(),
                    outcome: crate::call::tools::ToolOutcome::Answered,
                    wait_ms: 5,
                },
            ),
            ev(
                4,
                EventKind::Transcript {
                    speaker: Speaker::Callee,
                    text: "y".repeat(MAX_TRANSCRIPT_BYTES),
                    interrupted: false,
                },
            ),
            end.clone(),
        ];
        let out = messages(&rec, std::slice::from_ref(&end), &log, "https://pub.example/");
        assert_eq!(
            out.iter().map(|m| m.event_type).collect::<Vec<_>>(),
            [STATUS_CHANGED, ENDED]
        );
        assert_ne!(out[0].message_id, out[1].message_id);
        let data = &serde_json::from_str::<Value>(&out[1].body).unwrap()["data"];
        assert_eq!(data["status"], "completed");
        assert_eq!(data["answered_by"], "human");
        assert_eq!(data["transfer"], Value::Null, "never transferred");
        assert_eq!(
            data["recording_url"],
            format!("https://pub.example/recordings/{}.wav", rec.call_id)
        );
        assert_eq!(data["transcript"].as_array().unwrap().len(), 1);
        assert_eq!(data["transcript"][0]["role"], "agent");
        assert_eq!(data["transcript_truncated"], true);
        assert_eq!(data["tool_calls"][0]["outcome"], "answered");
        assert_eq!(data["tool_calls"][0]["output"], "{\"ok\":1}");
        assert!(data["tool_calls"][0]["arguments"].as_str().unwrap().len() <= MAX_TOOL_TEXT);
        assert!(data["total_duration_ms"].is_number());
    }
}
