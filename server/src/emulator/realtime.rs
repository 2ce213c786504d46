//! The realtime-AI emulator: a WebSocket server speaking Azure Voice Live and
//! the OpenAI Realtime protocol (GA, and the preview dialect of Azure OpenAI
//! `*-preview` api-versions), over real sockets, for the tests and the
//! no-credentials default.
//!
//! It behaves as protocols.md §6–§7 says the services do:
//! - auth on the upgrade (`api-key` header or `Authorization: Bearer`), HTTP 401 otherwise;
//! - `session.created` first; `session.updated` echoing the effective config;
//! - malformed or unknown client events get an `error` event
//!   (`invalid_request_error`) and the session stays open (§7.4);
//! - an energy VAD on the appended audio, in the session's input format:
//!   `speech_started`, `speech_stopped`, `committed`, `conversation.item.created`,
//!   then the "transcription" (utterance n is line n of the script);
//! - responses in the real event order (§7.8) with audio streamed faster than
//!   real time, in the session's output format, and transcript events;
//! - `interrupt_response`: speech during a response cancels it
//!   (`response.done` status `cancelled`, reason `turn_detected`);
//! - `response.cancel` and `conversation.item.truncate` honoured, with errors
//!   when nothing is active or `audio_end_ms` exceeds the item's audio.
//!
//! Fault knobs ([`RealtimeEmulatorConfig`]) let tests refuse auth, refuse the
//! session, or drop the socket mid-call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::audio::{InboundTranscoder, ulaw_to_linear};
use crate::realtime::protocol::{Dialect, ServerNames, client_event_types, server_names};

/// What the emulated agent says: the greeting, then one reply per callee line.
pub const AGENT_LINES: [&str; 4] = [
    "Hi, this is the assistant from Contoso Clinic. Am I speaking with Sam?",
    "Thanks, Sam. How can I help you today?",
    "Sure. I have Friday at three o'clock available. Does that work for you?",
    "You're all set for Friday at three. Goodbye!",
];

/// The agent's lines as spoken audio (μ-law 8 kHz, see assets/speech/generate_agent.sh).
pub const AGENT_CLIPS: [&[u8]; 4] = [
    include_bytes!("../../assets/speech/agent_0.ulaw"),
    include_bytes!("../../assets/speech/agent_1.ulaw"),
    include_bytes!("../../assets/speech/agent_2.ulaw"),
    include_bytes!("../../assets/speech/agent_3.ulaw"),
];

/// What the emulated callee says (the Twilio emulator's lines), "transcribed"
/// in order.
pub const DEFAULT_SCRIPT: [&str; 3] = [
    "Hello? Yes, this is Sam speaking.",
    "I'd like to move my appointment to Friday afternoon.",
    "Three o'clock works. Thank you, goodbye.",
];

/// Emulator settings.
#[derive(Clone, Debug)]
pub struct RealtimeEmulatorConfig {
    /// Accepted as `api-key` or `Authorization: Bearer`.
    pub api_key: String,
    /// Another accepted bearer token (an Entra ID token in tests).
    pub accepted_bearer: Option<String>,
    /// Transcripts of the callee's utterances, in order.
    pub script: Vec<String>,
    /// Refuse every upgrade with HTTP 401.
    pub reject_auth: bool,
    /// Answer `session.update` with a fatal error and close.
    pub refuse_session: bool,
    /// Close the socket abruptly after this many finished responses.
    pub drop_after_responses: Option<usize>,
    /// How many sessions (the first ones) `drop_after_responses` applies to.
    pub drop_sessions: usize,
    /// After the last agent line, call the `end_call` tool.
    pub end_call_after_last_line: bool,
    /// How much faster than real time agent audio is streamed.
    pub speed: f64,
}

impl Default for RealtimeEmulatorConfig {
    fn default() -> Self {
        Self {
            api_key: random_hex(16),
            accepted_bearer: None,
            script: DEFAULT_SCRIPT.iter().map(|s| s.to_string()).collect(),
            reject_auth: false,
            refuse_session: false,
            drop_after_responses: None,
            drop_sessions: usize::MAX,
            end_call_after_last_line: true,
            speed: 4.0,
        }
    }
}

fn random_hex(bytes: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..bytes).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
}

/// What one emulated session saw (for tests).
#[derive(Clone, Debug, Default)]
pub struct SessionReport {
    /// The dialect chosen by the path.
    pub dialect: Option<Dialect>,
    /// The last `session.update` received.
    pub session_update: Option<Value>,
    /// Number of `input_audio_buffer.append` events.
    pub appends: usize,
    /// Input audio received, ms.
    pub input_ms: u64,
    /// `conversation.item.truncate` requests honoured: (item, audio_end_ms).
    pub truncates: Vec<(String, u64)>,
    /// `response.cancel` requests honoured.
    pub cancels: usize,
    /// Codes of the `error` events sent.
    pub errors_sent: Vec<String>,
    /// Responses finished (any status).
    pub responses: usize,
    /// Callee utterances detected.
    pub utterances: usize,
    /// Every client event type received, in order.
    pub received: Vec<String>,
}

/// A running emulator.
#[derive(Clone)]
pub struct RealtimeEmulatorHandle {
    addr: SocketAddr,
    config: Arc<RealtimeEmulatorConfig>,
    sessions: Arc<Mutex<Vec<Arc<Mutex<SessionReport>>>>>,
    shutdown: CancellationToken,
}

impl RealtimeEmulatorHandle {
    /// `ws://127.0.0.1:port`.
    pub fn url_base(&self) -> url::Url {
        url::Url::parse(&format!("ws://{}", self.addr)).expect("a socket address makes a valid URL")
    }
    /// The accepted API key.
    pub fn api_key(&self) -> &str {
        &self.config.api_key
    }
    /// Reports of every session so far.
    pub fn sessions(&self) -> Vec<SessionReport> {
        let list = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        list.iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }
    /// Stops the server and every session.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

#[derive(Clone)]
struct Shared {
    config: Arc<RealtimeEmulatorConfig>,
    sessions: Arc<Mutex<Vec<Arc<Mutex<SessionReport>>>>>,
    shutdown: CancellationToken,
}

/// Starts the emulator on 127.0.0.1:0.
pub async fn start(config: RealtimeEmulatorConfig) -> std::io::Result<RealtimeEmulatorHandle> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shared = Shared {
        config: Arc::new(config),
        sessions: Arc::default(),
        shutdown: CancellationToken::new(),
    };
    let app = Router::new().fallback(upgrade).with_state(shared.clone());
    let stop = shared.shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok(RealtimeEmulatorHandle {
        addr,
        config: shared.config,
        sessions: shared.sessions,
        shutdown: shared.shutdown,
    })
}

fn dialect_for(path: &str, query: &str) -> Option<Dialect> {
    match path.trim_end_matches('/') {
        "/voice-live/realtime" if query.contains("api-version=") => Some(Dialect::VoiceLive),
        "/v1/realtime" | "/openai/v1/realtime" => Some(Dialect::OpenAiGa),
        // The preview path needs a preview api-version and a deployment (§7.1).
        "/openai/realtime" if query.contains("-preview") && query.contains("deployment=") => {
            Some(Dialect::OpenAiPreview)
        }
        _ => None,
    }
}

fn http_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({"error": {"code": code, "message": message}}).to_string(),
    )
        .into_response()
}

async fn upgrade(
    State(shared): State<Shared>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Some(dialect) = dialect_for(uri.path(), uri.query().unwrap_or("")) else {
        return http_error(StatusCode::NOT_FOUND, "404", "Resource not found");
    };
    let config = &shared.config;
    let api_key = headers.get("api-key").and_then(|v| v.to_str().ok());
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let authorised = !config.reject_auth
        && (api_key == Some(config.api_key.as_str())
            || bearer == Some(config.api_key.as_str())
            || (bearer.is_some() && bearer == config.accepted_bearer.as_deref()));
    if !authorised {
        return http_error(
            StatusCode::UNAUTHORIZED,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint.",
        );
    }
    let Ok(ws) = ws else {
        return http_error(StatusCode::BAD_REQUEST, "400", "expected a WebSocket upgrade");
    };
    let report = Arc::new(Mutex::new(SessionReport {
        dialect: Some(dialect),
        ..Default::default()
    }));
    let index = {
        let mut sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.push(report.clone());
        sessions.len() - 1
    };
    ws.on_upgrade(move |socket| async move {
        Session::new(dialect, shared.config.clone(), report, index)
            .run(socket, shared.shutdown.clone())
            .await;
    })
}

/// An agent response being streamed.
struct ActiveResponse {
    id: String,
    item_id: String,
    line: usize,
    audio: Vec<u8>,
    bytes_per_ms: usize,
    sent: usize,
    transcript: String,
    words_sent: usize,
    next_at: Instant,
    end_call: bool,
}

struct Session {
    dialect: Dialect,
    names: ServerNames,
    config: Arc<RealtimeEmulatorConfig>,
    report: Arc<Mutex<SessionReport>>,
    out: Vec<String>,
    next_id: u64,
    pcm: bool,
    threshold: f64,
    prefix_ms: u64,
    silence_ms: u64,
    create_response: bool,
    interrupt_response: bool,
    word_timestamps: bool,
    input_ms: u64,
    in_speech: bool,
    speech_start_ms: u64,
    last_voice_ms: u64,
    speech_item: String,
    last_item: Option<String>,
    utterances: usize,
    lines_spoken: usize,
    active: Option<ActiveResponse>,
    /// Audio duration of every assistant item, for truncate checks.
    item_audio_ms: HashMap<String, u64>,
    responses_done: usize,
    drop_now: bool,
    /// Position of this session among all the emulator served.
    index: usize,
}

impl Session {
    fn new(
        dialect: Dialect,
        config: Arc<RealtimeEmulatorConfig>,
        report: Arc<Mutex<SessionReport>>,
        index: usize,
    ) -> Self {
        Self {
            dialect,
            names: server_names(dialect),
            config,
            report,
            out: Vec::new(),
            next_id: 0,
            pcm: true,
            threshold: 0.5,
            prefix_ms: 300,
            silence_ms: 500,
            create_response: true,
            interrupt_response: true,
            word_timestamps: false,
            input_ms: 0,
            in_speech: false,
            speech_start_ms: 0,
            last_voice_ms: 0,
            speech_item: String::new(),
            last_item: None,
            utterances: 0,
            lines_spoken: 0,
            active: None,
            item_audio_ms: HashMap::new(),
            responses_done: 0,
            drop_now: false,
            index,
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{:06}{}", self.next_id, &random_hex(4))
    }

    fn emit(&mut self, mut event: Value) {
        let id = self.id("event");
        event["event_id"] = json!(id);
        self.out.push(event.to_string());
    }

    fn report(&self, f: impl FnOnce(&mut SessionReport)) {
        f(&mut self.report.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn error(&mut self, code: &str, message: &str, param: Option<&str>, event_id: Option<&str>) {
        self.report(|r| r.errors_sent.push(code.to_string()));
        self.emit(json!({
            "type": "error",
            "error": {"type": "invalid_request_error", "code": code, "message": message,
                      "param": param, "event_id": event_id}
        }));
    }

    fn session_object(&self) -> Value {
        match self.dialect {
            Dialect::OpenAiGa => {
                let format = if self.pcm {
                    json!({"type": "audio/pcm", "rate": 24000})
                } else {
                    json!({"type": "audio/pcmu"})
                };
                json!({"type": "realtime", "object": "realtime.session", "id": "sess_emulated",
                       "model": "gpt-realtime", "output_modalities": ["audio"],
                       "audio": {"input": {"format": format, "turn_detection": self.vad_json()},
                                 "output": {"format": format, "voice": "alloy"}}})
            }
            _ => {
                let format = if self.pcm { "pcm16" } else { "g711_ulaw" };
                json!({"id": "sess_emulated", "object": "realtime.session", "model": "gpt-realtime",
                       "modalities": ["text", "audio"], "input_audio_format": format,
                       "output_audio_format": format, "turn_detection": self.vad_json()})
            }
        }
    }

    fn vad_json(&self) -> Value {
        json!({"type": "server_vad", "threshold": self.threshold, "prefix_padding_ms": self.prefix_ms,
               "silence_duration_ms": self.silence_ms, "create_response": self.create_response,
               "interrupt_response": self.interrupt_response})
    }

    async fn run(mut self, socket: WebSocket, shutdown: CancellationToken) {
        let (mut sink, mut stream) = socket.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Option<String>>();
        // `None` = drop the connection without a close frame (a crash, not a goodbye).
        let writer = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    Some(text) => {
                        if sink.send(Message::Text(text.into())).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                }
            }
            let _ = sink.close().await;
        });
        let session = self.session_object();
        self.emit(json!({"type": "session.created", "session": session}));
        loop {
            for m in self.out.drain(..) {
                let _ = tx.send(Some(m));
            }
            if self.drop_now {
                let _ = tx.send(None);
                break;
            }
            let next_chunk = self.active.as_ref().map(|a| a.next_at);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = async { tokio::time::sleep_until(next_chunk.unwrap_or_else(Instant::now)).await }, if next_chunk.is_some() => {
                    self.stream_chunk();
                }
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(text))) => self.on_client_event(&text),
                    Some(Ok(Message::Binary(_))) => self.error("invalid_json", "Binary frames are not supported.", None, None),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        }
        drop(tx);
        let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
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
        let Some(ty) = event.get("type").and_then(Value::as_str).map(str::to_string) else {
            self.error(
                "invalid_event",
                "The 'type' field is missing.",
                None,
                event_id.as_deref(),
            );
            return;
        };
        self.report(|r| r.received.push(ty.clone()));
        if !client_event_types(self.dialect).contains(&ty.as_str()) {
            let msg = format!(
                "Invalid value: '{ty}'. Supported values are: {}.",
                client_event_types(self.dialect).join(", ")
            );
            self.error("invalid_value", &msg, Some("type"), event_id.as_deref());
            return;
        }
        let eid = event_id.as_deref();
        match ty.as_str() {
            "session.update" => self.on_session_update(&event, eid),
            "input_audio_buffer.append" => match event.get("audio").and_then(Value::as_str) {
                None => self.error(
                    "missing_required_parameter",
                    "Missing required parameter: 'audio'.",
                    Some("audio"),
                    eid,
                ),
                Some(b64) => match B64.decode(b64) {
                    Ok(bytes) => self.on_audio(&bytes),
                    Err(_) => self.error("invalid_value", "Invalid base64 audio.", Some("audio"), eid),
                },
            },
            "input_audio_buffer.commit" => self.error(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: the buffer is empty (server VAD commits it).",
                None,
                eid,
            ),
            "input_audio_buffer.clear" => self.emit(json!({"type": "input_audio_buffer.cleared"})),
            "response.create" => {
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
                    _ => self.error(
                        "response_cancel_not_active",
                        "Cancellation failed: no active response found.",
                        None,
                        eid,
                    ),
                }
            }
            "conversation.item.truncate" => self.on_truncate(&event, eid),
            "conversation.item.create" => {
                let Some(item) = event.get("item") else {
                    self.error(
                        "missing_required_parameter",
                        "Missing required parameter: 'item'.",
                        Some("item"),
                        eid,
                    );
                    return;
                };
                // A restored conversation (after a reconnect) moves the script on.
                match item.get("role").and_then(Value::as_str) {
                    Some("user") => self.utterances += 1,
                    Some("assistant") => self.lines_spoken += 1,
                    _ => {}
                }
                let id = self.id("item");
                let mut item = item.clone();
                item["id"] = json!(id);
                let previous = self.last_item.clone();
                self.last_item = Some(id);
                self.emit(json!({"type": "conversation.item.created", "previous_item_id": previous, "item": item}));
            }
            other => self.emit(json!({"type": format!("{other}.ignored")})),
        }
    }

    fn on_session_update(&mut self, event: &Value, eid: Option<&str>) {
        let Some(s) = event.get("session").filter(|s| s.is_object()) else {
            self.error(
                "missing_required_parameter",
                "Missing required parameter: 'session'.",
                Some("session"),
                eid,
            );
            return;
        };
        self.report(|r| r.session_update = Some(event.clone()));
        if self.config.refuse_session {
            self.report(|r| r.errors_sent.push("session_failed".into()));
            self.emit(
                json!({"type": "error", "error": {"type": "server_error", "code": "session_failed",
                "message": "The session could not be configured (emulated refusal).", "param": null, "event_id": eid}}),
            );
            self.drop_now = true;
            return;
        }
        let (format, td) = match self.dialect {
            Dialect::OpenAiGa => {
                if s.get("type").and_then(Value::as_str) != Some("realtime") {
                    self.error(
                        "missing_required_parameter",
                        "Missing required parameter: 'session.type'.",
                        Some("session.type"),
                        eid,
                    );
                    return;
                }
                let f = s
                    .pointer("/audio/input/format/type")
                    .and_then(Value::as_str)
                    .unwrap_or("audio/pcm");
                (
                    if f == "audio/pcmu" { "g711_ulaw" } else { "pcm16" },
                    s.pointer("/audio/input/turn_detection"),
                )
            }
            _ => (
                s.get("input_audio_format").and_then(Value::as_str).unwrap_or("pcm16"),
                s.get("turn_detection"),
            ),
        };
        match format {
            "pcm16" => self.pcm = true,
            "g711_ulaw" => self.pcm = false,
            other => {
                let msg = format!("Invalid value: '{other}'. Supported values are: 'pcm16', 'g711_ulaw'.");
                self.error("invalid_value", &msg, Some("session.input_audio_format"), eid);
                return;
            }
        }
        if let Some(td) = td {
            self.threshold = td.get("threshold").and_then(Value::as_f64).unwrap_or(self.threshold);
            self.prefix_ms = td
                .get("prefix_padding_ms")
                .and_then(Value::as_u64)
                .unwrap_or(self.prefix_ms);
            self.silence_ms = td
                .get("silence_duration_ms")
                .and_then(Value::as_u64)
                .unwrap_or(self.silence_ms);
            self.create_response = td
                .get("create_response")
                .and_then(Value::as_bool)
                .unwrap_or(self.create_response);
            self.interrupt_response = td
                .get("interrupt_response")
                .and_then(Value::as_bool)
                .unwrap_or(self.interrupt_response);
        }
        self.word_timestamps = self.dialect == Dialect::VoiceLive
            && s.get("output_audio_timestamp_types")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|v| v == "word"));
        let session = self.session_object();
        self.emit(json!({"type": "session.updated", "session": session}));
    }

    /// Energy VAD over 10 ms blocks of the appended audio.
    fn on_audio(&mut self, bytes: &[u8]) {
        let samples: Vec<i16> = if self.pcm {
            bytes
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect()
        } else {
            bytes.iter().map(|&b| ulaw_to_linear(b)).collect()
        };
        let rate = if self.pcm { 24 } else { 8 }; // samples per ms
        self.report(|r| r.appends += 1);
        // The threshold (0–1) maps onto RMS: 0.5 ≈ −30 dBFS, well above line
        // noise and well below speech.
        let level = 2000.0 * self.threshold;
        for block in samples.chunks(rate * 10) {
            let ms = (block.len() / rate) as u64;
            let rms = (block.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / block.len().max(1) as f64).sqrt();
            self.input_ms += ms;
            if rms > level {
                self.last_voice_ms = self.input_ms;
                if !self.in_speech {
                    self.in_speech = true;
                    self.speech_start_ms = self.input_ms.saturating_sub(ms + self.prefix_ms);
                    self.speech_item = self.id("item");
                    let item = self.speech_item.clone();
                    self.emit(json!({"type": "input_audio_buffer.speech_started",
                        "audio_start_ms": self.speech_start_ms, "item_id": item}));
                    if self.interrupt_response && self.active.is_some() {
                        self.finish_response("cancelled", Some("turn_detected"));
                    }
                }
            } else if self.in_speech && self.input_ms - self.last_voice_ms >= self.silence_ms {
                self.end_of_speech();
            }
        }
        let input_ms = self.input_ms;
        self.report(|r| r.input_ms = input_ms);
    }

    fn end_of_speech(&mut self) {
        self.in_speech = false;
        let item = self.speech_item.clone();
        self.emit(
            json!({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": self.last_voice_ms, "item_id": item}),
        );
        let previous = self.last_item.replace(item.clone());
        self.emit(json!({"type": "input_audio_buffer.committed", "previous_item_id": previous, "item_id": item}));
        self.emit(
            json!({"type": "conversation.item.created", "previous_item_id": previous,
            "item": {"id": item, "object": "realtime.item", "type": "message", "status": "completed",
                     "role": "user", "content": [{"type": "input_audio", "transcript": null}]}}),
        );
        let transcript = self
            .config
            .script
            .get(self.utterances)
            .cloned()
            .unwrap_or_else(|| "(inaudible)".into());
        self.utterances += 1;
        let n = self.utterances;
        self.report(|r| r.utterances = n);
        self.emit(json!({"type": "conversation.item.input_audio_transcription.completed",
            "item_id": item, "content_index": 0, "transcript": transcript}));
        if self.create_response && self.active.is_none() {
            self.start_response();
        }
    }

    fn start_response(&mut self) {
        // Line 0 is the greeting; reply k answers utterance k.
        let line = self
            .utterances
            .min(AGENT_LINES.len() - 1)
            .max(if self.lines_spoken == 0 { 0 } else { 1 });
        let id = self.id("resp");
        let item_id = self.id("item");
        let clip = AGENT_CLIPS[line];
        let (audio, bytes_per_ms) = if self.pcm {
            let mut pcm = Vec::with_capacity(clip.len() * 6);
            InboundTranscoder::new().process(clip, &mut pcm);
            (pcm, 48)
        } else {
            (clip.to_vec(), 8)
        };
        let modalities = if self.dialect == Dialect::OpenAiGa {
            json!(["audio"])
        } else {
            json!(["text", "audio"])
        };
        self.emit(
            json!({"type": "response.created", "response": {"object": "realtime.response", "id": id,
            "status": "in_progress", "status_details": null, "output": [], "output_modalities": modalities}}),
        );
        let previous = self.last_item.replace(item_id.clone());
        self.emit(
            json!({"type": "response.output_item.added", "response_id": id, "output_index": 0,
            "item": {"id": item_id, "object": "realtime.item", "type": "message", "status": "in_progress",
                     "role": "assistant", "content": []}}),
        );
        self.emit(
            json!({"type": "conversation.item.created", "previous_item_id": previous,
            "item": {"id": item_id, "object": "realtime.item", "type": "message", "status": "in_progress",
                     "role": "assistant", "content": []}}),
        );
        self.emit(
            json!({"type": "response.content_part.added", "response_id": id, "item_id": item_id,
            "output_index": 0, "content_index": 0, "part": {"type": self.names.audio_part, "transcript": ""}}),
        );
        self.lines_spoken += 1;
        let end_call = self.config.end_call_after_last_line && line == AGENT_LINES.len() - 1;
        self.active = Some(ActiveResponse {
            id,
            item_id,
            line,
            audio,
            bytes_per_ms,
            sent: 0,
            transcript: AGENT_LINES[line].to_string(),
            words_sent: 0,
            next_at: Instant::now(),
            end_call,
        });
    }

    /// Sends the next 100 ms of the active response's audio (and its words).
    fn stream_chunk(&mut self) {
        let Some(mut a) = self.active.take() else { return };
        let chunk = 100 * a.bytes_per_ms;
        let end = (a.sent + chunk).min(a.audio.len());
        let delta = B64.encode(&a.audio[a.sent..end]);
        self.emit(
            json!({"type": self.names.audio_delta, "response_id": a.id, "item_id": a.item_id,
            "output_index": 0, "content_index": 0, "delta": delta}),
        );
        // Words are released in proportion to the audio sent (an approximation
        // of real word timing; say so to anyone reading the timestamps).
        let words: Vec<&str> = a.transcript.split(' ').collect();
        let total_ms = (a.audio.len() / a.bytes_per_ms) as u64;
        let due = (words.len() * end).div_ceil(a.audio.len().max(1));
        let chars_total: usize = words.iter().map(|w| w.len() + 1).sum();
        while a.words_sent < due.min(words.len()) {
            let i = a.words_sent;
            let piece = if i == 0 {
                words[i].to_string()
            } else {
                format!(" {}", words[i])
            };
            self.emit(
                json!({"type": self.names.transcript_delta, "response_id": a.id, "item_id": a.item_id,
                "output_index": 0, "content_index": 0, "delta": piece}),
            );
            if self.word_timestamps {
                let before: usize = words[..i].iter().map(|w| w.len() + 1).sum();
                let offset = total_ms * before as u64 / chars_total as u64;
                let duration = total_ms * (words[i].len() + 1) as u64 / chars_total as u64;
                self.emit(json!({"type": "response.audio_timestamp.delta", "response_id": a.id,
                    "item_id": a.item_id, "output_index": 0, "content_index": 0, "audio_offset_ms": offset,
                    "audio_duration_ms": duration, "text": words[i], "timestamp_type": "word"}));
            }
            a.words_sent += 1;
        }
        a.sent = end;
        self.item_audio_ms
            .insert(a.item_id.clone(), (a.sent / a.bytes_per_ms) as u64);
        let step = Duration::from_secs_f64(0.1 / self.config.speed.max(0.1));
        a.next_at += step;
        let done = a.sent >= a.audio.len();
        self.active = Some(a);
        if done {
            self.finish_response("completed", None);
        }
    }

    fn finish_response(&mut self, status: &str, reason: Option<&str>) {
        let Some(a) = self.active.take() else { return };
        let heard_text = if status == "completed" {
            a.transcript.clone()
        } else {
            a.transcript.split(' ').take(a.words_sent).collect::<Vec<_>>().join(" ")
        };
        self.emit(
            json!({"type": self.names.audio_done, "response_id": a.id, "item_id": a.item_id,
            "output_index": 0, "content_index": 0}),
        );
        self.emit(
            json!({"type": self.names.transcript_done, "response_id": a.id, "item_id": a.item_id,
            "output_index": 0, "content_index": 0, "transcript": heard_text}),
        );
        self.emit(
            json!({"type": "response.content_part.done", "response_id": a.id, "item_id": a.item_id,
            "output_index": 0, "content_index": 0, "part": {"type": self.names.audio_part, "transcript": heard_text}}),
        );
        let message = json!({"id": a.item_id, "object": "realtime.item", "type": "message",
            "status": if status == "completed" { "completed" } else { "incomplete" }, "role": "assistant",
            "content": [{"type": self.names.audio_part, "transcript": heard_text}]});
        self.emit(
            json!({"type": "response.output_item.done", "response_id": a.id, "output_index": 0, "item": message}),
        );
        let mut output = vec![message];
        if a.end_call && status == "completed" {
            let fc_id = self.id("item");
            let call_id = self.id("call");
            let fc = json!({"id": fc_id, "object": "realtime.item", "type": "function_call", "status": "in_progress",
                "call_id": call_id, "name": "end_call", "arguments": ""});
            self.emit(
                json!({"type": "response.output_item.added", "response_id": a.id, "output_index": 1, "item": fc}),
            );
            self.emit(
                json!({"type": "response.function_call_arguments.delta", "response_id": a.id,
                "item_id": fc_id, "output_index": 1, "call_id": call_id, "delta": "{}"}),
            );
            self.emit(
                json!({"type": "response.function_call_arguments.done", "response_id": a.id,
                "item_id": fc_id, "output_index": 1, "call_id": call_id, "name": "end_call", "arguments": "{}"}),
            );
            let mut done = fc.clone();
            done["status"] = json!("completed");
            done["arguments"] = json!("{}");
            self.emit(json!({"type": "response.output_item.done", "response_id": a.id, "output_index": 1, "item": done.clone()}));
            output.push(done);
        }
        let details = reason.map(|r| json!({"type": status, "reason": r}));
        self.emit(
            json!({"type": "response.done", "response": {"object": "realtime.response", "id": a.id,
            "status": status, "status_details": details, "output": output,
            "usage": {"total_tokens": 120, "input_tokens": 80, "output_tokens": 40}}}),
        );
        let _ = a.line;
        self.responses_done += 1;
        let n = self.responses_done;
        self.report(|r| r.responses = n);
        if self.index < self.config.drop_sessions && self.config.drop_after_responses.is_some_and(|limit| n >= limit) {
            self.drop_now = true;
        }
    }

    fn on_truncate(&mut self, event: &Value, eid: Option<&str>) {
        let item = event.get("item_id").and_then(Value::as_str);
        let end = event.get("audio_end_ms").and_then(Value::as_u64);
        let (Some(item), Some(end)) = (item, end) else {
            self.error(
                "missing_required_parameter",
                "Missing required parameter: 'item_id' or 'audio_end_ms'.",
                Some("item_id"),
                eid,
            );
            return;
        };
        let Some(&duration) = self.item_audio_ms.get(item) else {
            let msg = format!("Item with item_id '{item}' not found or is not an assistant audio item.");
            self.error("item_not_found", &msg, Some("item_id"), eid);
            return;
        };
        if end > duration {
            let msg = format!("audio_end_ms {end} is longer than the item's audio ({duration} ms).");
            self.error("invalid_value", &msg, Some("audio_end_ms"), eid);
            return;
        }
        self.item_audio_ms.insert(item.to_string(), end);
        let item = item.to_string();
        self.report(|r| r.truncates.push((item.clone(), end)));
        self.emit(
            json!({"type": "conversation.item.truncated", "item_id": item, "content_index": 0, "audio_end_ms": end}),
        );
    }
}
