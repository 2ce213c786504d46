//! The realtime-AI emulator: a WebSocket server speaking Azure Voice Live and
//! the OpenAI Realtime protocol (GA, and the preview dialect of Azure OpenAI
//! `*-preview` api-versions), over real sockets, for the tests and the
//! no-credentials default.
//!
//! It behaves as protocols.md §6–§7 says the services do:
//! - the path picks the dialect (§6.1, §7.1); auth on the upgrade (`api-key`
//!   header or query, `Authorization: Bearer`), HTTP 401 otherwise;
//! - `session.created` first; `session.update` validated (unknown fields,
//!   formats, voices) and answered with `session.updated` echoing the
//!   effective config;
//! - malformed, unknown or incomplete client events get an `error` event
//!   (`invalid_request_error`) and the session stays open (§7.4);
//! - an energy VAD on the appended audio, in the session's input format,
//!   with `server_vad` semantics: `speech_started`, `speech_stopped`,
//!   `committed`, the user item, then the "transcription" (utterance n is
//!   line n of the script) and, with `create_response`, a response;
//! - responses in the real event order (§7.8), audio streamed faster than
//!   real time in the session's output format, transcript events, and Voice
//!   Live word timestamps when asked for;
//! - `interrupt_response`: speech during a response cancels it
//!   (`response.done` status `cancelled`, reason `turn_detected`);
//! - `response.cancel` and `conversation.item.truncate` honoured, with errors
//!   when nothing is active or `audio_end_ms` exceeds the item's audio.
//!
//! - tools: when the session offers tools besides `end_call` (a PlaceCall's
//!   `tools`), the callee's second line is taken as a question only they can
//!   answer (an order status, say): the agent's response to it calls every
//!   such tool at once (parallel function calls with sample arguments from
//!   their schemas), waits for the `function_call_output`s and the client's
//!   `response.create`, and its reply says the outputs ("Here is what I
//!   found: …", in the transcript; the audio is the stock clip).
//!
//! - transfers: when the session offers `transfer_call` (a PlaceCall with
//!   `transfer_targets`), the reply to the callee's second line is the
//!   hand-off sentence ([`HANDOFF_LINE`]) followed by a `transfer_call`
//!   function call naming the first number of the tool's `number` enum
//!   (this takes the place of the caller-tools round).
//!
//! Fault knobs ([`RealtimeEmulatorConfig`]) let tests refuse auth, refuse the
//! session, drop the socket mid-call, stop reading it, have the agent hang
//! up, or have it talk on and on.

mod session;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use voice_agent_wire::realtime::Dialect;

use session::Session;

/// What the emulated agent says: the greeting, then one reply per callee line.
pub const AGENT_LINES: [&str; 4] = [
    "Hi, this is the assistant from Contoso Clinic. Am I speaking with Sam?",
    "Thanks, Sam. How can I help you today?",
    "Sure. I have Friday at three o'clock available. Does that work for you?",
    "You're all set for Friday at three. Goodbye!",
];

/// What the agent says instead of reply 2 when the session offers
/// `transfer_call` (the audio is reply 2's clip); `transfer_call` follows.
pub const HANDOFF_LINE: &str = "Let me transfer you to a colleague who can help with that. One moment please.";

/// The agent's lines as spoken audio (μ-law 8 kHz, see assets/speech/generate_agent.sh).
pub const AGENT_CLIPS: [&[u8]; 4] = [
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/speech/agent_0.ulaw")),
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/speech/agent_1.ulaw")),
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/speech/agent_2.ulaw")),
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/speech/agent_3.ulaw")),
];

/// What the emulated callee says (the Twilio emulator's lines), "transcribed"
/// in order; utterances beyond the script are "(inaudible)".
pub const DEFAULT_SCRIPT: [&str; 3] = [
    "Hello? Yes, this is Sam speaking.",
    "I'd like to move my appointment to Friday afternoon.",
    "Three o'clock works. Thank you, goodbye.",
];

/// Emulator settings and fault knobs.
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
    /// After this many finished responses, stop reading the socket and say
    /// nothing more, as a hung service would: the client's writes back up.
    /// The socket stays open.
    pub stall_after_responses: Option<usize>,
    /// After the last agent line, call the `end_call` tool (§7.6).
    pub end_call_after_last_line: bool,
    /// How much faster than real time agent audio is streamed.
    pub speed: f64,
    /// Each reply (every line after the greeting) says its clip this many
    /// times over: a long-winded agent, whose audio can outrun a callee
    /// that stopped reading. 1: once.
    pub reply_repeats: usize,
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
            stall_after_responses: None,
            end_call_after_last_line: true,
            speed: 4.0,
            reply_repeats: 1,
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
    /// `response.instructions` of every `response.create` that had them, in
    /// order (the emulator's speech does not follow them: it has no TTS).
    pub response_instructions: Vec<String>,
    /// Callee utterances detected.
    pub utterances: usize,
    /// The session stopped reading (`stall_after_responses`).
    pub stalled: bool,
    /// Every client event type received, in order.
    pub received: Vec<String>,
    /// The W3C `traceparent` header of the WebSocket handshake, if it had one.
    pub traceparent: Option<String>,
    /// Responses that called the caller's tools.
    pub tool_rounds: usize,
    /// `transfer_call` function calls the agent made.
    pub transfers: usize,
}

type Reports = Arc<Mutex<Vec<Arc<Mutex<SessionReport>>>>>;

/// A running emulator.
#[derive(Clone)]
pub struct RealtimeEmulatorHandle {
    addr: SocketAddr,
    config: Arc<RealtimeEmulatorConfig>,
    sessions: Reports,
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
    /// Reports of every session so far, in connection order.
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
    sessions: Reports,
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

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// The dialect a path speaks and the model it names (§6.1, §7.1).
fn route(path: &str, query: &str) -> Option<(Dialect, String)> {
    let model = || query_param(query, "model").map(str::to_string);
    match path.trim_end_matches('/') {
        "/voice-live/realtime" if query_param(query, "api-version").is_some() => Some((Dialect::VoiceLive, model()?)),
        "/v1/realtime" | "/openai/v1/realtime" => Some((Dialect::OpenAiGa, model()?)),
        // The preview path needs a preview api-version and a deployment; the
        // GA path must not carry an api-version (else 401, §7.1) but we only
        // route by path here.
        "/openai/realtime" if query_param(query, "api-version").is_some_and(|v| v.ends_with("-preview")) => {
            Some((Dialect::OpenAiPreview, query_param(query, "deployment")?.to_string()))
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
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let query = uri.query().unwrap_or("");
    let Some((dialect, model)) = route(uri.path(), query) else {
        return http_error(StatusCode::NOT_FOUND, "404", "Resource not found");
    };
    let config = &shared.config;
    let api_key = headers.get("api-key").and_then(|v| v.to_str().ok());
    // Azure services also take the key as a query parameter (§6.1, §7.1).
    let query_key = match dialect {
        Dialect::OpenAiGa if uri.path().starts_with("/v1/") => None,
        _ => query_param(query, "api-key"),
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let authorised = !config.reject_auth
        && (api_key == Some(config.api_key.as_str())
            || query_key == Some(config.api_key.as_str())
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
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        ..Default::default()
    }));
    let index = {
        let mut sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.push(report.clone());
        sessions.len() - 1
    };
    ws.on_upgrade(move |socket| async move {
        Session::new(dialect, &model, shared.config.clone(), report, index)
            .run(socket, shared.shutdown.clone())
            .await;
    })
}
