//! One emulated realtime session: a state machine fed client events and the
//! clock, producing server events. The socket loop is [`Session::run`]; every
//! handler only pushes JSON text onto `out`, so the protocol logic has no I/O.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{AGENT_CLIPS, AGENT_LINES, RealtimeEmulatorConfig, SessionReport, random_hex};
use voice_agent_audio::{InboundTranscoder, ulaw_to_linear};
use voice_agent_wire::realtime::{Dialect, ServerNames, client_event_types, server_names};

/// The agent clips as PCM16 24 kHz, converted once for every PCM session.
static PCM_CLIPS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    AGENT_CLIPS
        .iter()
        .map(|clip| {
            let mut pcm = Vec::with_capacity(clip.len() * 6);
            InboundTranscoder::new().process(clip, &mut pcm);
            pcm
        })
        .collect()
});

/// Session fields each dialect accepts in `session.update`: the GA
/// `RealtimeSessionCreateRequestGA`, the preview `RealtimeSessionCreateRequest`,
/// and Voice Live's `RequestSession` (tests check these against the specs).
pub(super) const GA_SESSION_FIELDS: &[&str] = &[
    "type",
    "output_modalities",
    "model",
    "instructions",
    "audio",
    "include",
    "tracing",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "max_output_tokens",
    "truncation",
    "prompt",
];
pub(super) const PREVIEW_SESSION_FIELDS: &[&str] = &[
    "modalities",
    "model",
    "instructions",
    "voice",
    "input_audio_format",
    "output_audio_format",
    "input_audio_transcription",
    "turn_detection",
    "input_audio_noise_reduction",
    "tools",
    "tool_choice",
    "temperature",
    "max_response_output_tokens",
];
pub(super) const VOICE_LIVE_SESSION_FIELDS: &[&str] = &[
    "animation",
    "avatar",
    "include",
    "input_audio_echo_cancellation",
    "input_audio_format",
    "input_audio_noise_reduction",
    "input_audio_sampling_rate",
    "input_audio_transcription",
    "instructions",
    "interim_response",
    "max_response_output_tokens",
    "metadata",
    "modalities",
    "model",
    "output_audio_format",
    "output_audio_timestamp_types",
    "parallel_tool_calls",
    "reasoning_effort",
    "temperature",
    "tool_choice",
    "tools",
    "turn_detection",
    "voice",
];

/// Milliseconds of audio per VAD decision.
const VAD_BLOCK_MS: u64 = 10;
/// Agent audio per delta event.
const CHUNK_MS: usize = 100;
/// OpenAI refuses to commit less than this much audio.
const MIN_COMMIT_MS: u64 = 100;

/// Server VAD as configured by the session (§6.5, §7.3).
#[derive(Clone, Copy, Debug)]
struct VadSettings {
    threshold: f64,
    prefix_ms: u64,
    silence_ms: u64,
    create_response: bool,
    interrupt_response: bool,
}

/// What the effective session config means for the emulator.
#[derive(Clone, Copy, Debug)]
struct Settings {
    /// Input is PCM16 (else μ-law 8 kHz).
    input_pcm: bool,
    /// Input samples per ms (PCM16 may be 8, 16 or 24 kHz in Voice Live, §6.4).
    input_per_ms: usize,
    /// Output is PCM16 24 kHz (else μ-law 8 kHz).
    output_pcm: bool,
    /// `None`: turn detection off, the client commits and asks for responses.
    vad: Option<VadSettings>,
    /// Voice Live `output_audio_timestamp_types: ["word"]`.
    word_timestamps: bool,
}

/// An agent response being streamed.
struct ActiveResponse {
    id: String,
    item_id: String,
    clip: usize,
    /// How many times over the clip is said (`reply_repeats`).
    repeats: usize,
    bytes_per_ms: usize,
    sent: usize,
    words_sent: usize,
    next_at: Instant,
    end_call: bool,
    /// After this response's audio: call `transfer_call` with this number.
    transfer_to: Option<String>,
    /// What the agent says (the line, or the line built from tool outputs).
    text: String,
}

impl ActiveResponse {
    fn clip(&self, output_pcm: bool) -> &'static [u8] {
        if output_pcm {
            &PCM_CLIPS[self.clip]
        } else {
            AGENT_CLIPS[self.clip]
        }
    }

    /// Length of the whole response's audio: the clip, `repeats` times.
    fn audio_len(&self, output_pcm: bool) -> usize {
        self.clip(output_pcm).len() * self.repeats
    }

    /// Bytes `from..to` of the response's audio (borrowed unless they
    /// span the end of one saying of the clip and the start of the next).
    fn audio(&self, output_pcm: bool, from: usize, to: usize) -> Cow<'static, [u8]> {
        let clip = self.clip(output_pcm);
        let start = from % clip.len();
        if start + (to - from) <= clip.len() {
            Cow::Borrowed(&clip[start..start + (to - from)])
        } else {
            Cow::Owned((from..to).map(|i| clip[i % clip.len()]).collect())
        }
    }
}

/// What the conversation holds about an item (for truncate/retrieve/delete).
struct ItemInfo {
    item: Value,
    /// Assistant audio generated so far, ms (only assistant audio can be truncated).
    audio_ms: Option<u64>,
}

/// The reply before which the agent calls the caller's tools: the answer to
/// the callee's second line, their question.
const TOOL_LINE: usize = 2;

/// Where the session is with the caller's tools.
enum ToolRound {
    /// Not called yet.
    NotYet,
    /// Called; the outputs received so far.
    Waiting {
        call_ids: Vec<String>,
        outputs: Vec<String>,
    },
    /// Spoken (or not offered).
    Done,
}

/// How the socket ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Keep going.
    No,
    /// A close frame after the queued events (the service ending the session).
    Close,
    /// Vanish without a close frame (a crash or network loss).
    Drop,
}

pub(super) struct Session {
    dialect: Dialect,
    names: ServerNames,
    config: Arc<RealtimeEmulatorConfig>,
    report: Arc<Mutex<SessionReport>>,
    /// Position of this session among all the emulator served.
    index: usize,
    out: Vec<String>,
    next_id: u64,
    /// The effective session object, echoed in `session.created/updated`.
    session: Value,
    settings: Settings,
    // VAD state, positions in ms of all audio appended.
    input_ms: u64,
    block_energy: f64,
    block_samples: usize,
    buffer_start_ms: u64,
    in_speech: bool,
    speech_start_ms: u64,
    last_voice_ms: u64,
    speech_item: String,
    // Conversation.
    items: HashMap<String, ItemInfo>,
    last_item: Option<String>,
    utterances: usize,
    lines_spoken: usize,
    active: Option<ActiveResponse>,
    responses_done: usize,
    /// The one round of calls of the caller's tools (before reply [`TOOL_LINE`]).
    tool_round: ToolRound,
    exit: Exit,
    /// Stopped reading the socket (`stall_after_responses`).
    stalled: bool,
}

impl Session {
    pub(super) fn new(
        dialect: Dialect,
        model: &str,
        config: Arc<RealtimeEmulatorConfig>,
        report: Arc<Mutex<SessionReport>>,
        index: usize,
    ) -> Self {
        let session = default_session(dialect, model, &format!("sess_{}", random_hex(8)));
        let mut s = Self {
            dialect,
            names: server_names(dialect),
            config,
            report,
            index,
            out: Vec::new(),
            next_id: 0,
            session,
            settings: Settings {
                input_pcm: true,
                input_per_ms: 24,
                output_pcm: true,
                vad: None,
                word_timestamps: false,
            },
            input_ms: 0,
            block_energy: 0.0,
            block_samples: 0,
            buffer_start_ms: 0,
            in_speech: false,
            speech_start_ms: 0,
            last_voice_ms: 0,
            speech_item: String::new(),
            items: HashMap::new(),
            last_item: None,
            utterances: 0,
            lines_spoken: 0,
            active: None,
            responses_done: 0,
            tool_round: ToolRound::NotYet,
            exit: Exit::No,
            stalled: false,
        };
        if let Ok(settings) = s.settings_of(&s.session.clone()) {
            s.settings = settings;
        }
        s
    }

    pub(super) async fn run(mut self, socket: WebSocket, shutdown: CancellationToken) {
        let (mut sink, mut stream) = socket.split();
        // A writer task so a slow client never blocks the state machine;
        // `None` asks it to vanish without a close frame.
        let (tx, mut rx) = mpsc::unbounded_channel::<Option<String>>();
        let writer = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let Some(text) = msg else { return };
                if sink.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        });
        let session = self.session.clone();
        self.emit(json!({"type": "session.created", "session": session}));
        loop {
            for m in self.out.drain(..) {
                let _ = tx.send(Some(m));
            }
            match self.exit {
                Exit::No => {}
                Exit::Close => break,
                Exit::Drop => {
                    let _ = tx.send(None);
                    break;
                }
            }
            let next_chunk = self.active.as_ref().map(|a| a.next_at);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(next_chunk.unwrap_or_else(Instant::now)), if next_chunk.is_some() => {
                    self.stream_chunk();
                }
                msg = stream.next(), if !self.stalled => match msg {
                    Some(Ok(Message::Text(text))) => self.on_client_event(&text),
                    Some(Ok(Message::Binary(_))) => {
                        self.error("invalid_json", "Binary frames are not supported; send JSON text.", None, None);
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        }
        drop(tx);
        let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{:06}{}", self.next_id, random_hex(4))
    }

    fn emit(&mut self, mut event: Value) {
        let id = self.id("event");
        event["event_id"] = json!(id);
        self.out.push(event.to_string());
    }

    fn report(&self, f: impl FnOnce(&mut SessionReport)) {
        f(&mut self.report.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// A recoverable `invalid_request_error`: the session stays open (§7.4).
    fn error(&mut self, code: &str, message: &str, param: Option<&str>, event_id: Option<&str>) {
        self.report(|r| r.errors_sent.push(code.to_string()));
        let mut error = json!({"type": "invalid_request_error", "code": code, "message": message,
            "param": param, "event_id": event_id});
        if self.dialect == Dialect::OpenAiPreview
            && let Some(e) = error.as_object_mut()
        {
            // The preview schema types these as plain strings (GA: nullable).
            e.retain(|_, v| !v.is_null());
        }
        self.emit(json!({"type": "error", "error": error}));
    }

    fn on_client_event(&mut self, text: &str) {
        let Ok(event) = serde_json::from_str::<Value>(text) else {
            self.error(
                "invalid_json",
                "We could not parse the JSON body of your request.",
                None,
                None,
            );
            return;
        };
        let event_id = event.get("event_id").and_then(Value::as_str).map(str::to_string);
        let eid = event_id.as_deref();
        let Some(ty) = event.get("type").and_then(Value::as_str) else {
            // The exact error of §7.4's example.
            self.error("invalid_event", "The 'type' field is missing.", None, eid);
            return;
        };
        self.report(|r| r.received.push(ty.to_string()));
        let known = client_event_types(self.dialect);
        if !known.contains(&ty) {
            let msg = format!("Invalid value: '{ty}'. Supported values are: '{}'.", known.join("', '"));
            self.error("invalid_value", &msg, Some("type"), eid);
            return;
        }
        match ty {
            "session.update" => self.on_session_update(&event, eid),
            "input_audio_buffer.append" => match event.get("audio").and_then(Value::as_str) {
                None => self.missing("audio", eid),
                Some(b64) => match B64.decode(b64) {
                    Ok(bytes) => self.on_audio(&bytes),
                    Err(_) => self.error("invalid_value", "Invalid base64 audio.", Some("audio"), eid),
                },
            },
            "input_audio_buffer.commit" => self.on_commit(eid),
            "input_audio_buffer.clear" => {
                self.in_speech = false;
                self.buffer_start_ms = self.input_ms;
                self.emit(json!({"type": "input_audio_buffer.cleared"}));
            }
            "response.create" => {
                if let Some(i) = event.pointer("/response/instructions").and_then(Value::as_str) {
                    let i = i.to_string();
                    self.report(|r| r.response_instructions.push(i));
                }
                if self.active.is_some() {
                    self.error(
                        "conversation_already_has_active_response",
                        "Conversation already has an active response in progress.",
                        None,
                        eid,
                    );
                } else {
                    self.start_response();
                }
            }
            "response.cancel" => {
                let wanted = event.get("response_id").and_then(Value::as_str);
                match &self.active {
                    Some(a) if wanted.is_none_or(|w| w == a.id) => {
                        self.report(|r| r.cancels += 1);
                        self.finish_response("cancelled", Some("client_cancelled"));
                    }
                    // If nothing is in progress the session stays usable (§7.5).
                    _ => self.error(
                        "response_cancel_not_active",
                        "Cancellation failed: no active response found.",
                        None,
                        eid,
                    ),
                }
            }
            "conversation.item.truncate" => self.on_truncate(&event, eid),
            "conversation.item.create" => self.on_item_create(&event, eid),
            "conversation.item.retrieve" | "conversation.item.delete" => {
                let Some(item_id) = event.get("item_id").and_then(Value::as_str) else {
                    return self.missing("item_id", eid);
                };
                let item_id = item_id.to_string();
                if ty == "conversation.item.delete" {
                    if self.items.remove(&item_id).is_none() {
                        return self.item_not_found(&item_id, eid);
                    }
                    self.emit(json!({"type": "conversation.item.deleted", "item_id": item_id}));
                } else {
                    let Some(info) = self.items.get(&item_id) else {
                        return self.item_not_found(&item_id, eid);
                    };
                    let item = info.item.clone();
                    self.emit(json!({"type": "conversation.item.retrieved", "item": item}));
                }
            }
            // `output_audio_buffer.clear` is a GA/preview client event, but
            // only for WebRTC and SIP (§7.2): on a WebSocket it is an error.
            _ => self.error(
                "invalid_value",
                &format!("'{ty}' is only supported for WebRTC and SIP connections."),
                Some("type"),
                eid,
            ),
        }
    }

    fn missing(&mut self, param: &str, eid: Option<&str>) {
        let msg = format!("Missing required parameter: '{param}'.");
        self.error("missing_required_parameter", &msg, Some(param), eid);
    }

    fn item_not_found(&mut self, item_id: &str, eid: Option<&str>) {
        let msg = format!("Item with item_id '{item_id}' not found.");
        self.error("item_not_found", &msg, Some("item_id"), eid);
    }

    /// Applies a `session.update`: the whole update is refused (and nothing
    /// changes) if any part is invalid, as the services do.
    fn on_session_update(&mut self, event: &Value, eid: Option<&str>) {
        let Some(update) = event.get("session").filter(|s| s.is_object()) else {
            return self.missing("session", eid);
        };
        self.report(|r| r.session_update = Some(event.clone()));
        if self.config.refuse_session {
            self.report(|r| r.errors_sent.push("session_failed".into()));
            self.emit(
                json!({"type": "error", "error": {"type": "server_error", "code": "session_failed",
                "message": "The session could not be configured (emulated refusal).", "param": null,
                "event_id": eid}}),
            );
            self.exit = Exit::Close;
            return;
        }
        let allowed = match self.dialect {
            Dialect::OpenAiGa => GA_SESSION_FIELDS,
            Dialect::OpenAiPreview => PREVIEW_SESSION_FIELDS,
            Dialect::VoiceLive => VOICE_LIVE_SESSION_FIELDS,
        };
        let mut fields = update.as_object().into_iter().flatten();
        if let Some((k, _)) = fields.find(|(k, _)| !allowed.contains(&k.as_str())) {
            let msg = format!("Unknown parameter: 'session.{k}'.");
            return self.error("unknown_parameter", &msg, Some(&format!("session.{k}")), eid);
        }
        if self.dialect == Dialect::OpenAiGa && update.get("type").and_then(Value::as_str) != Some("realtime") {
            // GA requires `session.type` (§7.3).
            return self.missing("session.type", eid);
        }
        if let Some(m) = update.get("model")
            && m != &self.session["model"]
        {
            let msg = "Cannot update a session's model.";
            return self.error("invalid_value", msg, Some("session.model"), eid);
        }
        let mut merged = self.session.clone();
        if let (Some(target), Some(update)) = (merged.as_object_mut(), update.as_object()) {
            merge(target, update);
        }
        match self.settings_of(&merged) {
            Ok(settings) => {
                self.settings = settings;
                self.session = merged;
                let session = self.session.clone();
                self.emit(json!({"type": "session.updated", "session": session}));
            }
            Err((param, msg)) => self.error("invalid_value", &msg, Some(&param), eid),
        }
    }

    /// What an effective session means, or the parameter that is invalid.
    fn settings_of(&self, s: &Value) -> Result<Settings, (String, String)> {
        let bad = |param: &str, msg: String| Err((param.to_string(), msg));
        let (input, output, td, voice, voice_param) = match self.dialect {
            Dialect::OpenAiGa => (
                ga_format(&s["audio"]["input"]["format"]),
                ga_format(&s["audio"]["output"]["format"]),
                &s["audio"]["input"]["turn_detection"],
                &s["audio"]["output"]["voice"],
                "session.audio.output.voice",
            ),
            _ => (
                flat_format(&s["input_audio_format"]),
                flat_format(&s["output_audio_format"]),
                &s["turn_detection"],
                &s["voice"],
                "session.voice",
            ),
        };
        let (input_param, output_param) = match self.dialect {
            Dialect::OpenAiGa => ("session.audio.input.format", "session.audio.output.format"),
            _ => ("session.input_audio_format", "session.output_audio_format"),
        };
        let Some(input_pcm) = input else {
            return bad(
                input_param,
                format!("Unsupported input audio format {}.", s_of(s, input_param)),
            );
        };
        let Some(output_pcm) = output else {
            return bad(
                output_param,
                format!("Unsupported output audio format {}.", s_of(s, output_param)),
            );
        };
        // Voice Live's PCM16 input may be 8, 16 or 24 kHz; μ-law only 8 kHz
        // (the spec's list, §6.4). The OpenAI services have no such field.
        let rate = s.get("input_audio_sampling_rate").and_then(Value::as_u64);
        let allowed: &[u64] = if input_pcm { &[8000, 16000, 24000] } else { &[8000] };
        if let Some(r) = rate.filter(|r| !allowed.contains(r)) {
            return bad(
                "session.input_audio_sampling_rate",
                format!("Invalid input_audio_sampling_rate {r} for this input format."),
            );
        }
        let input_per_ms = if input_pcm {
            rate.map_or(24, |r| r as usize / 1000)
        } else {
            8
        };
        // Azure voices exist only in Voice Live (§6.4); the OpenAI services
        // know a fixed list of single-word names.
        match (self.dialect, voice) {
            (Dialect::VoiceLive, Value::Object(v)) => {
                let known = ["openai", "azure-standard", "azure-custom", "azure-personal"];
                if !v
                    .get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| known.contains(&t))
                {
                    return bad(
                        "session.voice.type",
                        format!("Invalid voice type {}.", v.get("type").unwrap_or(&Value::Null)),
                    );
                }
                if v.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                    return bad("session.voice.name", "Voice name cannot be empty.".into());
                }
            }
            (_, Value::String(name)) if name.contains('-') && self.dialect != Dialect::VoiceLive => {
                return bad(
                    voice_param,
                    format!("Invalid value: '{name}'. Azure voices are not supported here."),
                );
            }
            (_, Value::String(_) | Value::Null) => {}
            (_, other) => return bad(voice_param, format!("Invalid voice {other}.")),
        }
        let vad = match td {
            Value::Null => None,
            Value::Object(t) => {
                let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
                let kinds: &[&str] = match self.dialect {
                    Dialect::VoiceLive => &[
                        "server_vad",
                        "semantic_vad",
                        "azure_semantic_vad",
                        "azure_semantic_vad_en",
                        "azure_semantic_vad_multilingual",
                    ],
                    _ => &["server_vad", "semantic_vad"],
                };
                if !kinds.contains(&kind) {
                    let msg = format!(
                        "Invalid value: '{kind}'. Supported values are: '{}'.",
                        kinds.join("', '")
                    );
                    let param = match self.dialect {
                        Dialect::OpenAiGa => "session.audio.input.turn_detection.type",
                        _ => "session.turn_detection.type",
                    };
                    return bad(param, msg);
                }
                // Semantic VADs are approximated by the energy VAD.
                let f = |k: &str| t.get(k).and_then(Value::as_f64);
                let u = |k: &str| t.get(k).and_then(Value::as_u64);
                let b = |k: &str| t.get(k).and_then(Value::as_bool).unwrap_or(true);
                let threshold = f("threshold").unwrap_or(0.5);
                if !(0.0..=1.0).contains(&threshold) {
                    return bad(
                        "turn_detection.threshold",
                        format!("threshold {threshold} is not within 0–1."),
                    );
                }
                Some(VadSettings {
                    threshold,
                    prefix_ms: u("prefix_padding_ms").unwrap_or(300),
                    // The GA spec text says 500 ms; its own example shows 200 (§10.8).
                    silence_ms: u("silence_duration_ms").unwrap_or(500),
                    create_response: b("create_response"),
                    interrupt_response: b("interrupt_response"),
                })
            }
            other => return bad("turn_detection", format!("Invalid turn_detection {other}.")),
        };
        let word_timestamps = self.dialect == Dialect::VoiceLive
            && s["output_audio_timestamp_types"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == "word"));
        Ok(Settings {
            input_pcm,
            input_per_ms,
            output_pcm,
            vad,
            word_timestamps,
        })
    }

    /// Energy VAD over 10 ms blocks of the appended audio, carried across appends.
    fn on_audio(&mut self, bytes: &[u8]) {
        self.report(|r| r.appends += 1);
        if self.settings.input_pcm {
            let per_ms = self.settings.input_per_ms;
            for c in bytes.chunks_exact(2) {
                self.vad_sample(i16::from_le_bytes([c[0], c[1]]), per_ms);
            }
        } else {
            for &b in bytes {
                self.vad_sample(ulaw_to_linear(b), 8);
            }
        }
        let input_ms = self.input_ms;
        self.report(|r| r.input_ms = input_ms);
    }

    fn vad_sample(&mut self, sample: i16, per_ms: usize) {
        self.block_energy += f64::from(sample) * f64::from(sample);
        self.block_samples += 1;
        if self.block_samples < per_ms * VAD_BLOCK_MS as usize {
            return;
        }
        let rms = (self.block_energy / self.block_samples as f64).sqrt();
        self.block_energy = 0.0;
        self.block_samples = 0;
        self.input_ms += VAD_BLOCK_MS;
        // The threshold (0–1) maps onto block RMS: 0.5 ≈ −30 dBFS, well above
        // line noise and well below speech. Voice is tracked without turn
        // detection too, so a manual commit knows whether it holds speech.
        let threshold = self.settings.vad.map_or(0.5, |v| v.threshold);
        let voiced = rms > 2000.0 * threshold;
        if voiced {
            self.last_voice_ms = self.input_ms;
        }
        let Some(vad) = self.settings.vad else { return };
        if voiced {
            if !self.in_speech {
                self.in_speech = true;
                // Includes the prefix padding, as the services report it (§7.5).
                self.speech_start_ms = (self.input_ms - VAD_BLOCK_MS)
                    .saturating_sub(vad.prefix_ms)
                    .max(self.buffer_start_ms);
                self.speech_item = self.id("item");
                let item = self.speech_item.clone();
                self.emit(json!({"type": "input_audio_buffer.speech_started",
                    "audio_start_ms": self.speech_start_ms, "item_id": item}));
                if vad.interrupt_response && self.active.is_some() {
                    self.finish_response("cancelled", Some("turn_detected"));
                }
            }
        } else if self.in_speech && self.input_ms - self.last_voice_ms >= vad.silence_ms {
            self.in_speech = false;
            let item = self.speech_item.clone();
            self.emit(json!({"type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": self.last_voice_ms, "item_id": item}));
            self.commit_user_item(item, true);
            if vad.create_response && self.active.is_none() {
                self.start_response();
            }
        }
    }

    /// A manual commit: allowed with or without turn detection, if the
    /// buffer holds enough audio.
    fn on_commit(&mut self, eid: Option<&str>) {
        let buffered = self.input_ms - self.buffer_start_ms;
        if buffered < MIN_COMMIT_MS {
            let msg = format!(
                "Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms of audio, but buffer only has {buffered}ms of audio."
            );
            return self.error("input_audio_buffer_commit_empty", &msg, None, eid);
        }
        let speech = self.in_speech || self.last_voice_ms > self.buffer_start_ms;
        let item = if self.in_speech {
            self.in_speech = false;
            self.speech_item.clone()
        } else {
            self.id("item")
        };
        self.commit_user_item(item, speech);
    }

    /// The buffer becomes a user item, "transcribed" from the script.
    fn commit_user_item(&mut self, item_id: String, speech: bool) {
        self.buffer_start_ms = self.input_ms;
        let previous = self.last_item.replace(item_id.clone());
        self.emit(json!({"type": "input_audio_buffer.committed", "previous_item_id": previous, "item_id": item_id}));
        let transcript = if speech {
            let line = self.config.script.get(self.utterances).cloned();
            self.utterances += 1;
            let n = self.utterances;
            self.report(|r| r.utterances = n);
            line.unwrap_or_else(|| "(inaudible)".into())
        } else {
            String::new()
        };
        let item = json!({"id": item_id, "object": "realtime.item", "type": "message", "status": "completed",
            "role": "user", "content": [{"type": "input_audio", "transcript": transcript}]});
        self.item_added(previous, item.clone(), true);
        self.items.insert(item_id.clone(), ItemInfo { item, audio_ms: None });
        let mut done = json!({"type": "conversation.item.input_audio_transcription.completed",
            "item_id": item_id, "content_index": 0, "transcript": transcript});
        if self.dialect == Dialect::OpenAiGa {
            // GA requires `usage` here (§7.4 example).
            done["usage"] = json!({"type": "tokens", "total_tokens": 22, "input_tokens": 13,
                "input_token_details": {"text_tokens": 0, "audio_tokens": 13}, "output_tokens": 9});
        }
        self.emit(done);
    }

    /// GA announces items with `conversation.item.added` (+ `.done` once
    /// complete); the preview protocol and Voice Live with `.created` (§7.2).
    fn item_added(&mut self, previous: Option<String>, item: Value, complete: bool) {
        if self.dialect == Dialect::OpenAiGa {
            self.emit(json!({"type": "conversation.item.added", "previous_item_id": previous, "item": item.clone()}));
            if complete {
                self.emit(json!({"type": "conversation.item.done", "previous_item_id": previous, "item": item}));
            }
        } else {
            self.emit(json!({"type": "conversation.item.created", "previous_item_id": previous, "item": item}));
        }
    }

    fn on_item_create(&mut self, event: &Value, eid: Option<&str>) {
        let Some(item) = event.get("item").filter(|i| i.is_object()) else {
            return self.missing("item", eid);
        };
        let kind = item.get("type").and_then(Value::as_str);
        let required: &[&str] = match kind {
            Some("message") => &["role", "content"],
            Some("function_call_output") => &["call_id", "output"],
            Some("function_call") => &["call_id", "name", "arguments"],
            Some(other) => {
                let msg = format!(
                    "Invalid value: '{other}'. Supported values are: 'message', 'function_call', 'function_call_output'."
                );
                return self.error("invalid_value", &msg, Some("item.type"), eid);
            }
            None => return self.missing("item.type", eid),
        };
        if let Some(field) = required.iter().find(|f| item.get(**f).is_none()) {
            return self.missing(&format!("item.{field}"), eid);
        }
        if let Some(p) = event.get("previous_item_id").and_then(Value::as_str)
            && p != "root"
            && !self.items.contains_key(p)
        {
            let msg = format!("Previous item with item_id '{p}' not found.");
            return self.error("item_not_found", &msg, Some("previous_item_id"), eid);
        }
        if let (Some("function_call_output"), ToolRound::Waiting { call_ids, outputs }) = (kind, &mut self.tool_round)
            && let Some(call_id) = item.get("call_id").and_then(Value::as_str)
            && call_ids.iter().any(|c| c == call_id)
        {
            outputs.push(
                item.get("output")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        // A restored conversation (after a reconnect) moves the script on.
        match item.get("role").and_then(Value::as_str) {
            Some("user") => self.utterances += 1,
            Some("assistant") => self.lines_spoken += 1,
            _ => {}
        }
        let id = match item.get("id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => self.id("item"),
        };
        let mut item = item.clone();
        item["id"] = json!(id);
        item["object"] = json!("realtime.item");
        item["status"] = json!("completed");
        let previous = self.last_item.replace(id.clone());
        self.items.insert(
            id,
            ItemInfo {
                item: item.clone(),
                audio_ms: None,
            },
        );
        self.item_added(previous, item, true);
    }

    fn start_response(&mut self) {
        // Line 0 is the greeting; reply k answers utterance k.
        let line = self
            .utterances
            .min(AGENT_LINES.len() - 1)
            .max(usize::from(self.lines_spoken > 0));
        // The callee's second line asks what only the caller's tools know:
        // with tools offered, the agent calls them first, and its reply
        // says what they answered (over the same clip of audio).
        let mut text = AGENT_LINES[line].to_string();
        // With transfer targets offered, the callee's question is one for a
        // person: the agent says the hand-off sentence, then calls
        // `transfer_call` with the first target (before any caller tool).
        let transfer_to = if line == TOOL_LINE {
            self.transfer_target()
        } else {
            None
        };
        if transfer_to.is_some() {
            text = super::HANDOFF_LINE.to_string();
        } else if line == TOOL_LINE {
            match std::mem::replace(&mut self.tool_round, ToolRound::Done) {
                ToolRound::NotYet => {
                    let tools = self.caller_tools();
                    if !tools.is_empty() {
                        return self.call_tools(tools);
                    }
                    self.tool_round = ToolRound::NotYet;
                }
                ToolRound::Waiting { outputs, .. } if !outputs.is_empty() => {
                    text = format!("Here is what I found: {}", outputs.join(" and "));
                }
                other => self.tool_round = other,
            }
        }
        let id = self.id("resp");
        let item_id = self.id("item");
        let bytes_per_ms = if self.settings.output_pcm { 48 } else { 8 };
        let modalities = match self.dialect {
            Dialect::OpenAiGa => json!({"output_modalities": ["audio"]}),
            _ => json!({"modalities": ["text", "audio"]}),
        };
        let mut response = json!({"object": "realtime.response", "id": id, "status": "in_progress",
            "status_details": null, "output": []});
        for (k, v) in modalities.as_object().into_iter().flatten() {
            response[k.as_str()] = v.clone();
        }
        self.emit(json!({"type": "response.created", "response": response}));
        let item = json!({"id": item_id, "object": "realtime.item", "type": "message", "status": "in_progress",
            "role": "assistant", "content": []});
        self.emit(
            json!({"type": "response.output_item.added", "response_id": id, "output_index": 0,
            "item": item.clone()}),
        );
        let previous = self.last_item.replace(item_id.clone());
        self.item_added(previous, item.clone(), false);
        self.items.insert(
            item_id.clone(),
            ItemInfo {
                item,
                audio_ms: Some(0),
            },
        );
        // Content part events say `audio` in both specs' schemas (GA
        // `RealtimeServerEventResponseContentPartAdded`); only GA items say
        // `output_audio`. CONFLICT with the §7.8 fixture: the schema wins.
        self.emit(
            json!({"type": "response.content_part.added", "response_id": id, "item_id": item_id,
            "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}}),
        );
        self.lines_spoken += 1;
        self.active = Some(ActiveResponse {
            id,
            item_id,
            clip: line,
            // The greeting (line 0) is said once whatever the knob says.
            repeats: if line == 0 { 1 } else { self.config.reply_repeats.max(1) },
            bytes_per_ms,
            sent: 0,
            words_sent: 0,
            next_at: Instant::now(),
            end_call: self.config.end_call_after_last_line && line == AGENT_LINES.len() - 1,
            transfer_to,
            text,
        });
    }

    /// The first number the session's `transfer_call` tool offers (its
    /// `number` enum), if the tool is offered.
    fn transfer_target(&self) -> Option<String> {
        self.session["tools"]
            .as_array()?
            .iter()
            .find(|t| t["type"] == "function" && t["name"] == "transfer_call")?["parameters"]["properties"]["number"]
            ["enum"][0]
            .as_str()
            .map(str::to_string)
    }

    /// The caller's tools the session offers (all but the built-in ones).
    fn caller_tools(&self) -> Vec<Value> {
        self.session["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| {
                t["type"] == "function"
                    && t["name"]
                        .as_str()
                        .is_some_and(|n| n != "end_call" && n != "transfer_call")
            })
            .cloned()
            .collect()
    }

    /// A response that only calls every caller tool (parallel calls, as the
    /// models make them, §7.6), then ends; the agent speaks once the client
    /// sent the outputs and asked for a response.
    fn call_tools(&mut self, tools: Vec<Value>) {
        let id = self.id("resp");
        let mut response = json!({"object": "realtime.response", "id": id, "status": "in_progress",
            "status_details": null, "output": []});
        match self.dialect {
            Dialect::OpenAiGa => response["output_modalities"] = json!(["audio"]),
            _ => response["modalities"] = json!(["text", "audio"]),
        }
        self.emit(json!({"type": "response.created", "response": response}));
        let mut output = vec![];
        let mut call_ids = vec![];
        for (index, tool) in tools.iter().enumerate() {
            let name = tool["name"].as_str().unwrap_or_default().to_string();
            let arguments = sample_arguments(&tool["parameters"]).to_string();
            let fc = self.function_call(&id, index, &name, &arguments);
            call_ids.push(fc["call_id"].as_str().unwrap_or_default().to_string());
            output.push(fc);
        }
        self.emit(
            json!({"type": "response.done", "response": {"object": "realtime.response", "id": id,
            "status": "completed", "status_details": null, "output": output}}),
        );
        self.tool_round = ToolRound::Waiting {
            call_ids,
            outputs: vec![],
        };
        self.report(|r| r.tool_rounds += 1);
    }

    /// Sends the next 100 ms of the active response's audio, and the words
    /// of the transcript due by then.
    fn stream_chunk(&mut self) {
        let Some(mut a) = self.active.take() else { return };
        let audio_len = a.audio_len(self.settings.output_pcm);
        let end = (a.sent + CHUNK_MS * a.bytes_per_ms).min(audio_len);
        let delta = B64.encode(a.audio(self.settings.output_pcm, a.sent, end));
        self.emit(
            json!({"type": self.names.audio_delta, "response_id": a.id, "item_id": a.item_id,
            "output_index": 0, "content_index": 0, "delta": delta}),
        );
        // Word timing is approximated: the clip's duration is split among the
        // words in proportion to their length (plus one for the space), and a
        // word is released once the audio up to its end has been sent.
        let text = a.text.clone();
        let words: Vec<&str> = text.split(' ').collect();
        let total_ms = (audio_len / a.bytes_per_ms) as u64;
        let sent_ms = (end / a.bytes_per_ms) as u64;
        let weights: u64 = words.iter().map(|w| w.len() as u64 + 1).sum();
        while a.words_sent < words.len() {
            let i = a.words_sent;
            let before: u64 = words[..i].iter().map(|w| w.len() as u64 + 1).sum();
            let offset = total_ms * before / weights;
            let duration = total_ms * (words[i].len() as u64 + 1) / weights;
            if offset + duration > sent_ms && end < audio_len {
                break;
            }
            let piece = if i == 0 {
                words[i].to_string()
            } else {
                format!(" {}", words[i])
            };
            self.emit(
                json!({"type": self.names.transcript_delta, "response_id": a.id, "item_id": a.item_id,
                "output_index": 0, "content_index": 0, "delta": piece}),
            );
            if self.settings.word_timestamps {
                self.emit(json!({"type": "response.audio_timestamp.delta", "response_id": a.id,
                    "item_id": a.item_id, "output_index": 0, "content_index": 0, "audio_offset_ms": offset,
                    "audio_duration_ms": duration, "text": words[i], "timestamp_type": "word"}));
            }
            a.words_sent += 1;
        }
        a.sent = end;
        if let Some(info) = self.items.get_mut(&a.item_id) {
            info.audio_ms = Some(sent_ms);
        }
        a.next_at += Duration::from_secs_f64(CHUNK_MS as f64 / 1000.0 / self.config.speed.max(0.1));
        let done = a.sent >= audio_len;
        self.active = Some(a);
        if done {
            self.finish_response("completed", None);
        }
    }

    /// Ends the active response: the closing events of its item, the
    /// `end_call` tool call after the last line, and `response.done`.
    fn finish_response(&mut self, status: &str, reason: Option<&str>) {
        let Some(a) = self.active.take() else { return };
        let completed = status == "completed";
        // What was said: the whole line, or the words sent before the cut.
        let said = if completed {
            a.text.clone()
        } else {
            a.text.split(' ').take(a.words_sent).collect::<Vec<_>>().join(" ")
        };
        let ids = json!({"response_id": a.id, "item_id": a.item_id, "output_index": 0, "content_index": 0});
        let with = |ty: &str, extra: Value| {
            let mut e = ids.clone();
            e["type"] = json!(ty);
            for (k, v) in extra.as_object().into_iter().flatten() {
                e[k.as_str()] = v.clone();
            }
            e
        };
        self.emit(with(self.names.audio_done, json!({})));
        self.emit(with(self.names.transcript_done, json!({"transcript": said})));
        if self.settings.word_timestamps {
            self.emit(with("response.audio_timestamp.done", json!({})));
        }
        self.emit(with(
            "response.content_part.done",
            json!({"part": {"type": "audio", "transcript": said}}),
        ));
        let content = json!({"type": self.names.audio_part, "transcript": said});
        let message = json!({"id": a.item_id, "object": "realtime.item", "type": "message",
            "status": if completed { "completed" } else { "incomplete" }, "role": "assistant", "content": [content]});
        self.emit(
            json!({"type": "response.output_item.done", "response_id": a.id, "output_index": 0,
            "item": message.clone()}),
        );
        if self.dialect == Dialect::OpenAiGa {
            self.emit(json!({"type": "conversation.item.done", "item": message.clone()}));
        }
        if let Some(info) = self.items.get_mut(&a.item_id) {
            info.item = message.clone();
        }
        let mut output = vec![message];
        if a.end_call && completed {
            output.push(self.end_call(&a.id));
        }
        if let Some(number) = a.transfer_to.as_deref().filter(|_| completed) {
            let arguments = json!({ "number": number }).to_string();
            output.push(self.function_call(&a.id, 1, "transfer_call", &arguments));
            self.report(|r| r.transfers += 1);
        }
        let details = reason.map(|r| json!({"type": status, "reason": r}));
        self.emit(
            json!({"type": "response.done", "response": {"object": "realtime.response", "id": a.id,
            "status": status, "status_details": details, "output": output,
            "usage": {"total_tokens": 120, "input_tokens": 80, "output_tokens": 40,
                      "input_token_details": {"cached_tokens": 0, "text_tokens": 60, "audio_tokens": 20},
                      "output_token_details": {"text_tokens": 10, "audio_tokens": 30}}}}),
        );
        self.responses_done += 1;
        let n = self.responses_done;
        self.report(|r| r.responses = n);
        if self.index < self.config.drop_sessions && self.config.drop_after_responses.is_some_and(|limit| n >= limit) {
            self.exit = Exit::Drop;
        }
        if self.config.stall_after_responses.is_some_and(|limit| n >= limit) {
            self.stalled = true;
            self.report(|r| r.stalled = true);
        }
    }

    /// The `end_call` function call as the second output of a response (§7.6).
    fn end_call(&mut self, response_id: &str) -> Value {
        self.function_call(response_id, 1, "end_call", "{}")
    }

    /// A function call as output `index` of a response, in the real event
    /// order (§7.6): item added, arguments delta and done, item done.
    fn function_call(&mut self, response_id: &str, index: usize, name: &str, arguments: &str) -> Value {
        let fc_id = self.id("item");
        let call_id = self.id("call");
        let mut fc = json!({"id": fc_id, "object": "realtime.item", "type": "function_call",
            "status": "in_progress", "call_id": call_id, "name": name, "arguments": ""});
        self.emit(
            json!({"type": "response.output_item.added", "response_id": response_id, "output_index": index,
            "item": fc.clone()}),
        );
        let previous = self.last_item.replace(fc_id.clone());
        self.item_added(previous, fc.clone(), false);
        self.emit(
            json!({"type": "response.function_call_arguments.delta", "response_id": response_id,
            "item_id": fc_id, "output_index": index, "call_id": call_id, "delta": arguments}),
        );
        self.emit(
            json!({"type": "response.function_call_arguments.done", "response_id": response_id,
            "item_id": fc_id, "output_index": index, "call_id": call_id, "name": name, "arguments": arguments}),
        );
        fc["status"] = json!("completed");
        fc["arguments"] = json!(arguments);
        self.emit(
            json!({"type": "response.output_item.done", "response_id": response_id, "output_index": index,
            "item": fc.clone()}),
        );
        if self.dialect == Dialect::OpenAiGa {
            self.emit(json!({"type": "conversation.item.done", "item": fc.clone()}));
        }
        self.items.insert(
            fc_id,
            ItemInfo {
                item: fc.clone(),
                audio_ms: None,
            },
        );
        fc
    }

    /// `conversation.item.truncate`: only assistant audio, only up to what
    /// was generated (§7.5).
    fn on_truncate(&mut self, event: &Value, eid: Option<&str>) {
        let Some(item_id) = event.get("item_id").and_then(Value::as_str) else {
            return self.missing("item_id", eid);
        };
        let Some(content_index) = event.get("content_index").and_then(Value::as_u64) else {
            return self.missing("content_index", eid);
        };
        let Some(end) = event.get("audio_end_ms").and_then(Value::as_u64) else {
            return self.missing("audio_end_ms", eid);
        };
        let item_id = item_id.to_string();
        let Some(info) = self.items.get(&item_id) else {
            return self.item_not_found(&item_id, eid);
        };
        let Some(duration) = info.audio_ms else {
            let msg = format!("Item '{item_id}' is not an assistant message with audio; only those can be truncated.");
            return self.error("invalid_value", &msg, Some("item_id"), eid);
        };
        if content_index != 0 {
            let msg = format!("Content part {content_index} not found (audio is content part 0).");
            return self.error("invalid_value", &msg, Some("content_index"), eid);
        }
        if end > duration {
            let msg = format!("Audio content of {duration}ms is shorter than {end}ms.");
            return self.error("invalid_value", &msg, Some("audio_end_ms"), eid);
        }
        if let Some(info) = self.items.get_mut(&item_id) {
            info.audio_ms = Some(end);
        }
        self.report(|r| r.truncates.push((item_id.clone(), end)));
        self.emit(
            json!({"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0,
            "audio_end_ms": end}),
        );
    }
}

/// Merges an update into the effective session: objects key by key (GA's
/// nested `audio`), everything else replaced; `null` clears (§7.3), and a
/// cleared field is left out of the echo, as the schemas allow no nulls.
/// Arguments that fit a tool's parameter schema: a sample value per property.
fn sample_arguments(schema: &Value) -> Value {
    let mut args = serde_json::Map::new();
    for (k, p) in schema["properties"].as_object().into_iter().flatten() {
        let v = match p["type"].as_str() {
            Some("string") => json!("A1234"),
            Some("integer") | Some("number") => json!(1),
            Some("boolean") => json!(true),
            _ => Value::Null,
        };
        args.insert(k.clone(), v);
    }
    Value::Object(args)
}

fn merge(target: &mut serde_json::Map<String, Value>, update: &serde_json::Map<String, Value>) {
    for (k, v) in update {
        match (target.get_mut(k), v) {
            (_, Value::Null) => {
                target.remove(k);
            }
            (Some(Value::Object(t)), Value::Object(u)) => merge(t, u),
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}

/// GA format object → PCM (true) / μ-law (false); `None` if unsupported here.
fn ga_format(f: &Value) -> Option<bool> {
    match f["type"].as_str()? {
        // "only 24 kHz" (§7.3)
        "audio/pcm" => f.get("rate").is_none_or(|r| r == 24000).then_some(true),
        "audio/pcmu" => Some(false),
        _ => None,
    }
}

/// Preview / Voice Live format name → PCM (true) / μ-law (false).
fn flat_format(f: &Value) -> Option<bool> {
    match f.as_str()? {
        "pcm16" => Some(true),
        "g711_ulaw" => Some(false),
        _ => None,
    }
}

/// A value by its `session.a.b` parameter path, for error messages.
fn s_of(s: &Value, param: &str) -> String {
    let pointer = param.trim_start_matches("session").replace('.', "/");
    s.pointer(&pointer).unwrap_or(&Value::Null).to_string()
}

/// The session a dialect starts with (as in each spec's `session.created` example).
fn default_session(dialect: Dialect, model: &str, id: &str) -> Value {
    let vad = json!({"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
        "silence_duration_ms": 500, "create_response": true, "interrupt_response": true});
    match dialect {
        Dialect::OpenAiGa => {
            let pcm = json!({"type": "audio/pcm", "rate": 24000});
            // The spec's example shows `null` for unset fields (transcription,
            // tracing, …) but its schema allows none: they are left out.
            json!({"type": "realtime", "object": "realtime.session", "id": id, "model": model,
                "output_modalities": ["audio"], "instructions": "", "tools": [], "tool_choice": "auto",
                "max_output_tokens": "inf",
                "audio": {"input": {"format": pcm, "turn_detection": vad},
                          "output": {"format": pcm, "voice": "marin", "speed": 1.0}}})
        }
        Dialect::OpenAiPreview | Dialect::VoiceLive => {
            // Azure names deployments freely; the session reports the model
            // behind it, which the preview schema enumerates.
            let model = if dialect == Dialect::OpenAiPreview {
                "gpt-4o-realtime-preview"
            } else {
                model
            };
            json!({"id": id, "object": "realtime.session", "model": model, "modalities": ["text", "audio"],
                "instructions": "", "voice": "alloy", "input_audio_format": "pcm16", "output_audio_format": "pcm16",
                "turn_detection": vad, "tools": [], "tool_choice": "auto",
                "temperature": 0.8, "max_response_output_tokens": "inf"})
        }
    }
}
