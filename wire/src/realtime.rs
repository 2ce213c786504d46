//! Client and server events of the realtime AIs, one core with a dialect
//! table (protocols.md §6, §7):
//!
//! | | Voice Live 2025-10-01 | OpenAI / Azure OpenAI preview | OpenAI / Azure OpenAI GA |
//! |---|---|---|---|
//! | audio delta | `response.audio.delta` | `response.audio.delta` | `response.output_audio.delta` |
//! | transcript | `response.audio_transcript.*` | same | `response.output_audio_transcript.*` |
//! | session | flat (`input_audio_format`, `modalities`, voice object) | flat | nested `audio.input/output`, `type:"realtime"` |
//!
//! Server events of every dialect decode into one [`ServerEvent`]; unknown
//! event types become [`ServerEvent::Other`], never an error, because the
//! vendors add events without notice (§7.8). Client events are built as JSON
//! text; the per-frame ones (`input_audio_buffer.append`) without building a
//! `serde_json::Value`.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

/// Event names and session shape spoken by a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Azure Voice Live (preview-style names, its own session fields).
    VoiceLive,
    /// OpenAI Realtime GA (OpenAI, Azure OpenAI `/openai/v1`).
    OpenAiGa,
    /// The pre-GA protocol (Azure OpenAI `*-preview` api-versions).
    OpenAiPreview,
}

/// Audio format of the session, both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum AudioFormat {
    /// PCM16 little-endian mono 24 kHz (`AUDIO_MODE=transcode`).
    Pcm16_24k,
    /// G.711 μ-law 8 kHz (`AUDIO_MODE=passthrough`).
    G711Ulaw,
}

/// A voice: OpenAI's by name, or an Azure text-to-speech voice (Voice Live only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Voice {
    /// An OpenAI voice (`alloy`, `marin`, …).
    OpenAi(String),
    /// An Azure voice (`en-US-AriaNeural`, `en-US-Ava:DragonHDLatestNeural`).
    Azure(String),
}

impl Voice {
    /// Azure voice names are locale-prefixed (`en-US-…`); OpenAI's are single words.
    pub fn parse(name: &str) -> Self {
        if name.contains('-') {
            Self::Azure(name.to_string())
        } else {
            Self::OpenAi(name.to_string())
        }
    }

    /// The name as configured.
    pub fn name(&self) -> &str {
        match self {
            Self::OpenAi(n) | Self::Azure(n) => n,
        }
    }

    /// Voice Live's voice object (protocols.md §6.4): `azure-standard` or `openai`.
    fn voice_live_json(&self) -> Value {
        match self {
            Self::Azure(n) => json!({"type": "azure-standard", "name": n}),
            Self::OpenAi(n) => json!({"type": "openai", "name": n}),
        }
    }
}

/// Server VAD settings (protocols.md §6.5, §7.3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Vad {
    /// Activation threshold, 0–1.
    pub threshold: f64,
    /// Audio kept before detected speech, ms.
    pub prefix_padding_ms: u32,
    /// Silence that ends a turn, ms.
    pub silence_duration_ms: u32,
}

impl Default for Vad {
    /// The documented defaults: 0.5, 300 ms, 500 ms (§6.5).
    fn default() -> Self {
        Self {
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
        }
    }
}

/// A function tool the model may call (protocols.md §7.6); one shape in every dialect.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolDef {
    /// Function name.
    pub name: String,
    /// When the model should call it.
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

impl ToolDef {
    /// The tool the agent calls to hang up once the conversation is over.
    pub fn end_call() -> Self {
        Self {
            name: "end_call".into(),
            description: "Hang up the phone call. Call this after you have said goodbye, when the caller is done or asks to end the call.".into(),
            parameters: json!({"type": "object", "properties": {}, "required": []}),
        }
    }

    /// `{"type":"function","name",…}` as the APIs define it.
    pub fn to_json(&self) -> Value {
        json!({
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters
        })
    }
}

/// The tool the agent calls to hang up (see [`ToolDef::end_call`]).
pub fn end_call_tool() -> ToolDef {
    ToolDef::end_call()
}

/// What a call's AI session is configured with.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// System instructions.
    pub instructions: String,
    /// The agent's voice.
    pub voice: Voice,
    /// Audio format both ways.
    pub audio: AudioFormat,
    /// Input transcription model.
    pub transcription_model: String,
    /// Server VAD; `create_response` and `interrupt_response` are always sent, true.
    pub vad: Vad,
    /// Function tools.
    pub tools: Vec<ToolDef>,
    /// Voice Live: `azure_deep_noise_suppression`.
    pub noise_suppression: bool,
    /// Voice Live: `server_echo_cancellation`.
    pub echo_cancellation: bool,
    /// Voice Live: word timestamps of the agent's audio (`output_audio_timestamp_types: ["word"]`),
    /// for exact barge-in transcripts.
    pub voice_live_word_timestamps: bool,
}

impl SessionConfig {
    /// The bridge's defaults: server VAD, whisper-1, the `end_call` tool.
    pub fn new(instructions: &str, voice: &str, audio: AudioFormat) -> Self {
        Self {
            instructions: instructions.to_string(),
            voice: Voice::parse(voice),
            audio,
            transcription_model: "whisper-1".into(),
            vad: Vad::default(),
            tools: vec![ToolDef::end_call()],
            noise_suppression: true,
            echo_cancellation: true,
            voice_live_word_timestamps: true,
        }
    }
}

fn turn_detection(c: &SessionConfig) -> Value {
    // Both flags are sent explicitly: the Voice Live spec declares them
    // default false while its docs say true (protocols.md §6.5 CONFLICT).
    json!({
        "type": "server_vad",
        "threshold": c.vad.threshold,
        "prefix_padding_ms": c.vad.prefix_padding_ms,
        "silence_duration_ms": c.vad.silence_duration_ms,
        "create_response": true,
        "interrupt_response": true
    })
}

/// `session.update` for the dialect (JSON text). An Azure voice is sent as
/// is to the OpenAI dialects, whose service then answers with a recoverable
/// `invalid_value` error and keeps its default voice.
pub fn session_update(dialect: Dialect, c: &SessionConfig) -> String {
    let tools: Vec<Value> = c.tools.iter().map(ToolDef::to_json).collect();
    let session = match dialect {
        Dialect::OpenAiGa => {
            let format = match c.audio {
                AudioFormat::Pcm16_24k => json!({"type": "audio/pcm", "rate": 24000}),
                AudioFormat::G711Ulaw => json!({"type": "audio/pcmu"}),
            };
            // GA: `output_modalities` is audio *or* text; audio carries its
            // transcript, which is what "text + audio" meant before GA.
            json!({
                "type": "realtime",
                "output_modalities": ["audio"],
                "instructions": c.instructions,
                "audio": {
                    "input": {
                        "format": format,
                        "transcription": {"model": c.transcription_model},
                        "turn_detection": turn_detection(c)
                    },
                    "output": {"format": format, "voice": c.voice.name()}
                },
                "tools": tools,
                "tool_choice": "auto"
            })
        }
        Dialect::OpenAiPreview | Dialect::VoiceLive => {
            let format = match c.audio {
                AudioFormat::Pcm16_24k => "pcm16",
                AudioFormat::G711Ulaw => "g711_ulaw",
            };
            let mut s = json!({
                "modalities": ["text", "audio"],
                "instructions": c.instructions,
                "input_audio_format": format,
                "output_audio_format": format,
                "input_audio_transcription": {"model": c.transcription_model},
                "turn_detection": turn_detection(c),
                "tools": tools,
                "tool_choice": "auto"
            });
            if dialect == Dialect::VoiceLive {
                // Azure voices are objects; OpenAI voices may be too (§6.4).
                s["voice"] = c.voice.voice_live_json();
                if c.audio == AudioFormat::Pcm16_24k {
                    s["input_audio_sampling_rate"] = json!(24000);
                }
                if c.noise_suppression {
                    s["input_audio_noise_reduction"] = json!({"type": "azure_deep_noise_suppression"});
                }
                if c.echo_cancellation {
                    s["input_audio_echo_cancellation"] = json!({"type": "server_echo_cancellation"});
                }
                if c.voice_live_word_timestamps {
                    s["output_audio_timestamp_types"] = json!(["word"]);
                }
            } else {
                s["voice"] = json!(c.voice.name());
            }
            s
        }
    };
    json!({"type": "session.update", "session": session}).to_string()
}

/// `input_audio_buffer.append` with base64 audio (base64 needs no JSON escaping).
pub fn input_audio_append(b64: &str) -> String {
    let mut s = String::with_capacity(b64.len() + 48);
    s.push_str(r#"{"type":"input_audio_buffer.append","audio":""#);
    s.push_str(b64);
    s.push_str(r#""}"#);
    s
}

/// [`input_audio_append`] of raw audio, base64-encoded in place.
pub fn input_audio_append_bytes(audio: &[u8]) -> String {
    let mut s = String::with_capacity(audio.len().div_ceil(3) * 4 + 48);
    s.push_str(r#"{"type":"input_audio_buffer.append","audio":""#);
    B64.encode_string(audio, &mut s);
    s.push_str(r#""}"#);
    s
}

/// `input_audio_buffer.commit`.
pub fn input_audio_commit() -> String {
    r#"{"type":"input_audio_buffer.commit"}"#.to_string()
}

/// `response.create`, optionally with instructions for this response only.
pub fn response_create(instructions: Option<&str>) -> String {
    match instructions {
        None => r#"{"type":"response.create"}"#.to_string(),
        Some(i) => json!({"type": "response.create", "response": {"instructions": i}}).to_string(),
    }
}

/// `response.cancel` (of a given response, or the active one).
pub fn response_cancel(response_id: Option<&str>) -> String {
    match response_id {
        None => r#"{"type":"response.cancel"}"#.to_string(),
        Some(id) => json!({"type": "response.cancel", "response_id": id}).to_string(),
    }
}

/// `conversation.item.truncate`: the callee heard `audio_end_ms` of the item.
pub fn item_truncate(item_id: &str, content_index: u32, audio_end_ms: u64) -> String {
    json!({
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": content_index,
        "audio_end_ms": audio_end_ms
    })
    .to_string()
}

/// The result of a function call.
pub fn function_call_output(call_id: &str, output: &str) -> String {
    json!({
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": call_id, "output": output}
    })
    .to_string()
}

/// A function call of the agent, to restore on a new session (after a
/// reconnect) so that its pending output still has a call to answer.
pub fn function_call_item(call_id: &str, name: &str, arguments: &str) -> String {
    json!({
        "type": "conversation.item.create",
        "item": {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}
    })
    .to_string()
}

/// A user text message (e.g. a DTMF key press told to the agent).
pub fn user_text_item(text: &str) -> String {
    json!({
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    })
    .to_string()
}

/// A past message, to restore a conversation on a new session.
pub fn restore_item(dialect: Dialect, role: &str, text: &str) -> String {
    let content_type = match (role, dialect) {
        ("assistant", Dialect::OpenAiGa) => "output_text",
        ("assistant", _) => "text",
        _ => "input_text",
    };
    json!({
        "type": "conversation.item.create",
        "item": {"type": "message", "role": role, "content": [{"type": content_type, "text": text}]}
    })
    .to_string()
}

/// Kind of an output item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemKind {
    /// An assistant message (audio + transcript).
    Message,
    /// A function call.
    FunctionCall,
    /// Anything else.
    Other,
}

/// A server event, normalised across dialects.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerEvent {
    /// `session.created`.
    SessionCreated,
    /// `session.updated`.
    SessionUpdated,
    /// The callee started speaking.
    SpeechStarted {
        /// Position in the input audio, ms.
        audio_start_ms: u64,
        /// The user item being created.
        item_id: String,
    },
    /// The callee stopped speaking.
    SpeechStopped {
        /// Position in the input audio, ms.
        audio_end_ms: u64,
        /// The user item.
        item_id: String,
    },
    /// The input buffer became a user item.
    Committed {
        /// The new item.
        item_id: String,
        /// The item before it.
        previous_item_id: Option<String>,
    },
    /// A response started.
    ResponseCreated {
        /// Its id.
        response_id: String,
    },
    /// A response produced an item.
    OutputItemAdded {
        /// The response.
        response_id: String,
        /// The item.
        item_id: String,
        /// Message or function call.
        kind: ItemKind,
        /// Function name (function calls).
        name: Option<String>,
        /// Function call id (function calls).
        call_id: Option<String>,
    },
    /// Agent audio (base64 in the session's output format).
    AudioDelta {
        /// The response.
        response_id: String,
        /// The assistant item.
        item_id: String,
        /// Base64 audio.
        delta: String,
    },
    /// The item's audio is complete.
    AudioDone {
        /// The response.
        response_id: String,
        /// The item.
        item_id: String,
    },
    /// Part of the agent's transcript.
    TranscriptDelta {
        /// The item.
        item_id: String,
        /// Text.
        delta: String,
    },
    /// The agent's whole transcript of an item.
    TranscriptDone {
        /// The response.
        response_id: String,
        /// The item.
        item_id: String,
        /// Text.
        transcript: String,
    },
    /// The callee's words.
    InputTranscriptionCompleted {
        /// The user item.
        item_id: String,
        /// Text.
        transcript: String,
    },
    /// The callee's words could not be transcribed.
    InputTranscriptionFailed {
        /// The user item.
        item_id: String,
        /// Why.
        error: String,
    },
    /// The model finished a function call's arguments.
    FunctionCallArgumentsDone {
        /// The response.
        response_id: String,
        /// The function call item.
        item_id: String,
        /// Call id for the output.
        call_id: String,
        /// Function name.
        name: String,
        /// JSON arguments.
        arguments: String,
    },
    /// A response ended.
    ResponseDone {
        /// The response.
        response_id: String,
        /// `completed | cancelled | failed | incomplete`.
        status: String,
        /// Reason for cancelled/incomplete, if any.
        reason: Option<String>,
    },
    /// The server truncated an item.
    ItemTruncated {
        /// The item.
        item_id: String,
        /// Where, ms.
        audio_end_ms: u64,
    },
    /// Voice Live word timing of the agent's audio (`response.audio_timestamp.delta`).
    WordTimestamp {
        /// The item.
        item_id: String,
        /// The word.
        text: String,
        /// Start within the item's audio, ms.
        audio_offset_ms: u64,
        /// Duration, ms.
        audio_duration_ms: u64,
    },
    /// An error.
    Error {
        /// `invalid_request_error`, `server_error`, …
        r#type: String,
        /// Machine code.
        code: Option<String>,
        /// Text.
        message: String,
        /// The offending parameter.
        param: Option<String>,
        /// The client event that caused it.
        event_id: Option<String>,
    },
    /// A warning (does not interrupt the conversation).
    Warning {
        /// Text.
        message: String,
        /// Code.
        code: Option<String>,
    },
    /// Any other event type.
    Other(String),
}

/// A server event that is not JSON or has no `type`.
#[derive(Debug, thiserror::Error)]
#[error("unreadable realtime event: {0}")]
pub struct ProtocolError(String);

#[derive(Deserialize, Default)]
struct RawItem {
    #[serde(default)]
    id: String,
    #[serde(rename = "type", default)]
    kind: String,
    name: Option<String>,
    call_id: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawStatusDetails {
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawResponse {
    #[serde(default)]
    id: String,
    #[serde(default)]
    status: String,
    status_details: Option<RawStatusDetails>,
}

#[derive(Deserialize, Default)]
struct RawError {
    #[serde(rename = "type", default)]
    kind: String,
    code: Option<String>,
    #[serde(default)]
    message: String,
    param: Option<String>,
    event_id: Option<String>,
}

/// Every field any event we decode carries; one pass, borrowed where possible.
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    delta: Option<Cow<'a, str>>,
    item_id: Option<String>,
    response_id: Option<String>,
    previous_item_id: Option<String>,
    transcript: Option<String>,
    audio_start_ms: Option<u64>,
    audio_end_ms: Option<u64>,
    audio_offset_ms: Option<u64>,
    audio_duration_ms: Option<u64>,
    text: Option<String>,
    call_id: Option<String>,
    name: Option<String>,
    arguments: Option<String>,
    item: Option<RawItem>,
    response: Option<RawResponse>,
    error: Option<RawError>,
    warning: Option<RawError>,
}

/// An audio delta borrowed from its event's text: the one event that comes
/// many times a second, so the bridge reads it without copying the audio.
#[derive(Debug, PartialEq)]
pub struct AudioDeltaRef<'a> {
    /// The response it belongs to.
    pub response_id: Cow<'a, str>,
    /// The output item it belongs to.
    pub item_id: Cow<'a, str>,
    /// Base64 audio in the session's output format.
    pub delta: Cow<'a, str>,
}

#[derive(Deserialize)]
struct RawDelta<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    response_id: Cow<'a, str>,
    #[serde(borrow, default)]
    item_id: Cow<'a, str>,
    #[serde(borrow)]
    delta: Cow<'a, str>,
}

/// `response.output_audio.delta` (GA) or `response.audio.delta` (preview,
/// Voice Live); `None` for any other event, which [`parse_server_event`] reads.
pub fn parse_audio_delta(text: &str) -> Option<AudioDeltaRef<'_>> {
    // Cheap pre-check: other events skip the second parse.
    if !text.contains("audio.delta") {
        return None;
    }
    let raw: RawDelta<'_> = serde_json::from_str(text).ok()?;
    matches!(
        raw.kind.as_ref(),
        "response.output_audio.delta" | "response.audio.delta"
    )
    .then_some(AudioDeltaRef {
        response_id: raw.response_id,
        item_id: raw.item_id,
        delta: raw.delta,
    })
}

/// Decodes a server event of any dialect.
pub fn parse_server_event(text: &str) -> Result<ServerEvent, ProtocolError> {
    let raw: Raw<'_> = serde_json::from_str(text).map_err(|e| ProtocolError(e.to_string()))?;
    let s = |v: Option<String>| v.unwrap_or_default();
    Ok(match raw.kind.as_ref() {
        "response.output_audio.delta" | "response.audio.delta" => ServerEvent::AudioDelta {
            response_id: s(raw.response_id),
            item_id: s(raw.item_id),
            delta: raw.delta.map(Cow::into_owned).unwrap_or_default(),
        },
        "session.created" => ServerEvent::SessionCreated,
        "session.updated" => ServerEvent::SessionUpdated,
        "input_audio_buffer.speech_started" => ServerEvent::SpeechStarted {
            audio_start_ms: raw.audio_start_ms.unwrap_or(0),
            item_id: s(raw.item_id),
        },
        "input_audio_buffer.speech_stopped" => ServerEvent::SpeechStopped {
            audio_end_ms: raw.audio_end_ms.unwrap_or(0),
            item_id: s(raw.item_id),
        },
        "input_audio_buffer.committed" => ServerEvent::Committed {
            item_id: s(raw.item_id),
            previous_item_id: raw.previous_item_id,
        },
        "response.created" => ServerEvent::ResponseCreated {
            response_id: raw.response.map(|r| r.id).unwrap_or_default(),
        },
        "response.output_item.added" => {
            let item = raw.item.unwrap_or_default();
            ServerEvent::OutputItemAdded {
                response_id: s(raw.response_id),
                item_id: item.id,
                kind: match item.kind.as_str() {
                    "message" => ItemKind::Message,
                    "function_call" => ItemKind::FunctionCall,
                    _ => ItemKind::Other,
                },
                name: item.name,
                call_id: item.call_id,
            }
        }
        "response.output_audio.done" | "response.audio.done" => ServerEvent::AudioDone {
            response_id: s(raw.response_id),
            item_id: s(raw.item_id),
        },
        "response.output_audio_transcript.delta" | "response.audio_transcript.delta" => ServerEvent::TranscriptDelta {
            item_id: s(raw.item_id),
            delta: raw.delta.map(Cow::into_owned).unwrap_or_default(),
        },
        "response.output_audio_transcript.done" | "response.audio_transcript.done" => ServerEvent::TranscriptDone {
            response_id: s(raw.response_id),
            item_id: s(raw.item_id),
            transcript: s(raw.transcript),
        },
        "conversation.item.input_audio_transcription.completed" => ServerEvent::InputTranscriptionCompleted {
            item_id: s(raw.item_id),
            transcript: s(raw.transcript),
        },
        "conversation.item.input_audio_transcription.failed" => ServerEvent::InputTranscriptionFailed {
            item_id: s(raw.item_id),
            error: raw.error.map(|e| e.message).unwrap_or_default(),
        },
        "response.function_call_arguments.done" => ServerEvent::FunctionCallArgumentsDone {
            response_id: s(raw.response_id),
            item_id: s(raw.item_id),
            call_id: s(raw.call_id),
            name: s(raw.name),
            arguments: s(raw.arguments),
        },
        "response.done" => {
            let r = raw.response.unwrap_or_default();
            ServerEvent::ResponseDone {
                response_id: r.id,
                status: r.status,
                reason: r.status_details.and_then(|d| d.reason),
            }
        }
        "conversation.item.truncated" => ServerEvent::ItemTruncated {
            item_id: s(raw.item_id),
            audio_end_ms: raw.audio_end_ms.unwrap_or(0),
        },
        "response.audio_timestamp.delta" => ServerEvent::WordTimestamp {
            item_id: s(raw.item_id),
            text: s(raw.text),
            audio_offset_ms: raw.audio_offset_ms.unwrap_or(0),
            audio_duration_ms: raw.audio_duration_ms.unwrap_or(0),
        },
        "error" => {
            let e = raw.error.unwrap_or_default();
            ServerEvent::Error {
                r#type: e.kind,
                code: e.code,
                message: e.message,
                param: e.param,
                event_id: e.event_id,
            }
        }
        "warning" => {
            let w = raw.warning.unwrap_or_default();
            ServerEvent::Warning {
                message: w.message,
                code: w.code,
            }
        }
        other => ServerEvent::Other(other.to_string()),
    })
}

/// Whether an `error` event means the session cannot go on. The specs list no
/// fatal errors and say "most errors are recoverable and the session will
/// stay open" (protocols.md §7.4); these are the ones after which nothing the
/// client sends can help: credentials, quota, an expired or broken session.
pub fn is_fatal_error(error_type: &str, code: Option<&str>) -> bool {
    matches!(error_type, "authentication_error" | "permission_error")
        || matches!(
            code,
            Some(
                "session_expired"
                    | "invalid_api_key"
                    | "insufficient_quota"
                    | "session_failed"
                    | "authentication_error"
                    | "permission_denied"
            )
        )
}

/// The client event types a dialect accepts (for the emulator and the tests).
pub fn client_event_types(dialect: Dialect) -> &'static [&'static str] {
    match dialect {
        Dialect::VoiceLive => &[
            "session.update",
            "input_audio_buffer.append",
            "input_audio_buffer.commit",
            "input_audio_buffer.clear",
            "conversation.item.create",
            "conversation.item.retrieve",
            "conversation.item.truncate",
            "conversation.item.delete",
            "response.create",
            "response.cancel",
        ],
        Dialect::OpenAiGa | Dialect::OpenAiPreview => &[
            "session.update",
            "input_audio_buffer.append",
            "input_audio_buffer.commit",
            "input_audio_buffer.clear",
            "conversation.item.create",
            "conversation.item.retrieve",
            "conversation.item.truncate",
            "conversation.item.delete",
            "response.create",
            "response.cancel",
            "output_audio_buffer.clear",
        ],
    }
}

/// Server event names for the agent's audio and transcript in a dialect.
pub struct ServerNames {
    /// Audio delta.
    pub audio_delta: &'static str,
    /// Audio done.
    pub audio_done: &'static str,
    /// Transcript delta.
    pub transcript_delta: &'static str,
    /// Transcript done.
    pub transcript_done: &'static str,
    /// Content part type of assistant audio.
    pub audio_part: &'static str,
}

/// The dialect table for server events (§7.2).
pub fn server_names(dialect: Dialect) -> ServerNames {
    match dialect {
        Dialect::OpenAiGa => ServerNames {
            audio_delta: "response.output_audio.delta",
            audio_done: "response.output_audio.done",
            transcript_delta: "response.output_audio_transcript.delta",
            transcript_done: "response.output_audio_transcript.done",
            audio_part: "output_audio",
        },
        Dialect::VoiceLive | Dialect::OpenAiPreview => ServerNames {
            audio_delta: "response.audio.delta",
            audio_done: "response.audio.done",
            transcript_delta: "response.audio_transcript.delta",
            transcript_done: "response.audio_transcript.done",
            audio_part: "audio",
        },
    }
}

#[cfg(test)]
pub(crate) mod tests;
