//! The realtime AI's side (OpenAI GA dialect, protocols.md §6–§8): per call
//! a WebSocket that checks the key, answers `session.update`, and talks in
//! turns: the agent speaks for [`AGENT_SPEAKS`] in deltas of the run's chunk
//! size (the first [`LEAD`] at once, as the service runs ahead of playback,
//! then one chunk per chunk length), the callee barges in (`speech_started`; the service cancels
//! the response itself, `interrupt_response`), speaks for a while, stops, and
//! the agent answers again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};

use crate::{FRAME, Run, serve_until_closed, tone_pcm24k, tone_ulaw};

/// The key the server is configured with.
pub const API_KEY: &str = "loadgen-openai-key";
/// Agent audio per response before the callee interrupts.
const AGENT_SPEAKS: Duration = Duration::from_secs(3);
/// Audio sent at once when a response starts (the service runs ahead of playback).
const LEAD: Duration = Duration::from_millis(200);
/// How long the callee speaks after interrupting.
const CALLEE_SPEAKS: Duration = Duration::from_millis(400);
/// From the callee's end of speech to the agent's next response.
const THINKS: Duration = Duration::from_millis(100);

/// What one call's AI side saw, times in µs since the run started.
#[derive(Default)]
pub struct AiRecord {
    /// The call's key (its instructions).
    pub key: String,
    /// When each `input_audio_buffer.append` arrived.
    pub appends: Vec<u32>,
    /// Per response, when each audio delta was written.
    pub responses: Vec<Vec<u32>>,
    /// When each `speech_started` was written.
    pub speech_started: Vec<u32>,
    /// (when, how late) each paced delta was written after its slot.
    pub lag: Vec<(u32, u32)>,
    /// `conversation.item.truncate` received (one per barge-in expected).
    pub truncates: usize,
}

/// Starts the AI endpoint on 127.0.0.1:0 (`OPENAI_REALTIME_URL` = `ws://addr/v1/realtime`).
pub async fn start(run: Arc<Run>) -> std::io::Result<SocketAddr> {
    let r = run.clone();
    let app = Router::new().route(
        "/v1/realtime",
        axum::routing::get(move |headers: HeaderMap, ws: WebSocketUpgrade| {
            let run = r.clone();
            async move { upgrade(run, headers, ws) }
        }),
    );
    serve_until_closed(&run, app).await
}

fn upgrade(run: Arc<Run>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {API_KEY}"));
    if !ok {
        return (StatusCode::UNAUTHORIZED, "invalid api key").into_response();
    }
    ws.read_buffer_size(8 * 1024).on_upgrade(move |socket| async move {
        let record = session(&run, socket).await;
        run.ai_records.lock().unwrap_or_else(|p| p.into_inner()).push(record);
    })
}

enum Turn {
    /// Before the first `response.create`.
    Idle,
    /// The agent speaks response `n`; `sent` frames so far.
    Speaking { n: usize, sent: usize },
    /// The callee speaks until the instant.
    Listening(Instant),
    /// The service prepares its answer until the instant.
    Thinking(Instant),
}

async fn session(run: &Run, socket: WebSocket) -> AiRecord {
    let (mut sink, mut source) = socket.split();
    let mut record = AiRecord::default();
    let capacity = run.expected_frames();
    record.appends.reserve(capacity);
    record.lag.reserve(capacity);
    let frames_per_chunk = (run.ai_chunk.as_millis() / FRAME.as_millis()).max(1) as usize;
    let tone = if run.pcm { tone_pcm24k() } else { tone_ulaw() };
    let delta = B64.encode(tone.repeat(frames_per_chunk));
    let agent_chunks = (AGENT_SPEAKS.as_millis() / run.ai_chunk.as_millis()).max(1) as usize;
    let lead_chunks = (LEAD.as_millis() / run.ai_chunk.as_millis()).max(1) as usize;
    let created = r#"{"type":"session.created","event_id":"event_0","session":{"type":"realtime","object":"realtime.session","id":"sess_loadgen"}}"#;
    if sink.send(Message::Text(created.into())).await.is_err() {
        return record;
    }
    let mut turn = Turn::Idle;
    let mut tick = tokio::time::interval_at(run.phase_start(&run.ai_phase, run.ai_chunk), run.ai_chunk);
    let sending = run.stop_sending.clone();
    loop {
        tokio::select! {
            scheduled = tick.tick(), if !sending.is_cancelled() && !matches!(turn, Turn::Idle) => {
                if let Some(k) = &run.chaos
                    && k.roll_ai_drop(run.ai_chunk)
                {
                    // The service goes away: half the time with a close frame, half the time without.
                    if crate::chaos::coin() {
                        let _ = sink.send(Message::Close(None)).await;
                    }
                    return record;
                }
                let now = Instant::now();
                let mut out: Vec<String> = Vec::new();
                match &mut turn {
                    Turn::Idle => {}
                    Turn::Speaking { n, sent } => {
                        // The first tick of a response sends the lead at once.
                        let count = if *sent == 0 { lead_chunks } else { 1 };
                        let r = &mut record.responses[*n];
                        for _ in 0..count {
                            *sent += 1;
                            out.push(format!(
                                r#"{{"type":"response.output_audio.delta","event_id":"ev_{n}_{sent}","response_id":"resp_{n}","item_id":"item_{n}","output_index":0,"content_index":0,"delta":"{delta}"}}"#
                            ));
                            r.push(run.us_at(now));
                            if *sent % 5 == 0 {
                                out.push(format!(
                                    r#"{{"type":"response.output_audio_transcript.delta","event_id":"tr_{n}_{sent}","response_id":"resp_{n}","item_id":"item_{n}","output_index":0,"content_index":0,"delta":"word{sent} "}}"#
                                ));
                            }
                        }
                        if *sent > lead_chunks {
                            let late = now.saturating_duration_since(scheduled.into_std()).as_micros() as u32;
                            record.lag.push((run.us_at(now), late));
                        }
                        if *sent >= agent_chunks {
                            // The callee barges in; the service cancels the response itself.
                            record.speech_started.push(run.us_at(now));
                            out.push(format!(r#"{{"type":"input_audio_buffer.speech_started","event_id":"ss_{n}","audio_start_ms":{},"item_id":"in_{n}"}}"#, *n * 3500));
                            out.push(format!(r#"{{"type":"response.output_audio_transcript.done","event_id":"td_{n}","response_id":"resp_{n}","item_id":"item_{n}","output_index":0,"content_index":0,"transcript":"an agent reply that the callee interrupts"}}"#));
                            out.push(format!(r#"{{"type":"response.done","event_id":"rd_{n}","response":{{"id":"resp_{n}","object":"realtime.response","status":"cancelled","status_details":{{"type":"cancelled","reason":"turn_detected"}},"output":[]}}}}"#));
                            turn = Turn::Listening(now + CALLEE_SPEAKS);
                        }
                    }
                    Turn::Listening(until) => {
                        if now >= *until {
                            let n = record.responses.len() - 1;
                            out.push(format!(r#"{{"type":"input_audio_buffer.speech_stopped","event_id":"sp_{n}","audio_end_ms":{},"item_id":"in_{n}"}}"#, n * 3500 + 400));
                            out.push(format!(r#"{{"type":"input_audio_buffer.committed","event_id":"co_{n}","previous_item_id":null,"item_id":"in_{n}"}}"#));
                            out.push(format!(r#"{{"type":"conversation.item.input_audio_transcription.completed","event_id":"it_{n}","item_id":"in_{n}","content_index":0,"transcript":"the callee interrupts"}}"#));
                            turn = Turn::Thinking(now + THINKS);
                        }
                    }
                    Turn::Thinking(until) => {
                        if now >= *until {
                            out.extend(start_response(&mut record));
                            turn = Turn::Speaking { n: record.responses.len() - 1, sent: 0 };
                        }
                    }
                }
                for m in out {
                    if sink.feed(Message::Text(m.into())).await.is_err() {
                        return record;
                    }
                }
                if sink.flush().await.is_err() {
                    return record;
                }
            }
            msg = source.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let t = text.as_str();
                    if t.starts_with(r#"{"type":"input_audio_buffer.append""#) {
                        record.appends.push(run.us());
                    } else if t.contains(r#""type":"conversation.item.truncate""#) {
                        record.truncates += 1;
                    } else if t.contains(r#""type":"session.update""#) {
                        let v: serde_json::Value = serde_json::from_str(t).unwrap_or_default();
                        record.key = v["session"]["instructions"].as_str().unwrap_or_default().to_string();
                        let updated = r#"{"type":"session.updated","event_id":"event_1","session":{"type":"realtime","object":"realtime.session","id":"sess_loadgen"}}"#;
                        if sink.send(Message::Text(updated.into())).await.is_err() {
                            return record;
                        }
                    } else if t.contains(r#""type":"response.create""#) && matches!(turn, Turn::Idle) {
                        run.ai_started.fetch_add(1, Ordering::Relaxed);
                        for m in start_response(&mut record) {
                            if sink.feed(Message::Text(m.into())).await.is_err() {
                                return record;
                            }
                        }
                        let _ = sink.flush().await;
                        turn = Turn::Speaking { n: record.responses.len() - 1, sent: 0 };
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return record,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// `response.created` and the output item of a new response.
fn start_response(record: &mut AiRecord) -> [String; 2] {
    let n = record.responses.len();
    record.responses.push(Vec::with_capacity(150));
    [
        format!(
            r#"{{"type":"response.created","event_id":"rc_{n}","response":{{"id":"resp_{n}","object":"realtime.response","status":"in_progress","output":[]}}}}"#
        ),
        format!(
            r#"{{"type":"response.output_item.added","event_id":"oi_{n}","response_id":"resp_{n}","output_index":0,"item":{{"id":"item_{n}","object":"realtime.item","type":"message","status":"in_progress","role":"assistant","content":[]}}}}"#
        ),
    ]
}
