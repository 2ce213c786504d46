//! Server configuration from the environment (and `.env`, loaded by `main`).
//!
//! Names are those of contract §3, shared with the seed Python sample so that
//! its `.env` works unchanged. Parsing is pure: it reads variables through a
//! lookup function and never touches the network or the file system, so tests
//! can feed it a map. A present-but-wrong value is a [`ConfigError`] naming the
//! variable; `main` prints it on one line and exits with status 2.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::call::Backend;
pub use crate::realtime::azure_openai::AzureOpenAiConfig;
pub use crate::realtime::openai::OpenAiConfig;
pub use crate::realtime::voice_live::VoiceLiveConfig;
use crate::realtime::{backend, openai, voice_live};

/// Default instructions for the agent when neither the call nor `SYSTEM_PROMPT` gives any.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a friendly, concise phone assistant. Speak naturally, keep \
answers short, and end the call politely when the caller is done.";

/// Greeting spoken by the telephony provider when PlaceCall leaves `greeting` unset.
pub const DEFAULT_GREETING: &str = "Please wait while we connect you to our AI assistant.";

/// One variable: `(name, meaning, default)`. The default is the value used when the
/// variable is unset (parsed like one that is set), or a description in words where the
/// default is derived ("none", "http://HOST:PORT").
pub type Variable = (&'static str, &'static str, &'static str);

/// The server's own variables (the realtime AIs' are declared by their providers, see
/// [`crate::realtime::backend`]).
pub mod var {
    use super::Variable;

    /// Listener address.
    pub const HOST: Variable = ("HOST", "address the one listener binds", "127.0.0.1");
    /// Listener port.
    pub const PORT: Variable = ("PORT", "port of the one listener (0 = any free port)", "8000");
    /// Public base URL.
    pub const PUBLIC_URL: Variable = (
        "PUBLIC_URL",
        "public base URL Twilio reaches; used for callback URLs, the stream URL (https->wss) and signature checks",
        "http://HOST:PORT",
    );
    /// Twilio account SID.
    pub const TWILIO_ACCOUNT_SID: Variable = (
        "TWILIO_ACCOUNT_SID",
        "Twilio account SID (AC...); without the three TWILIO_* the built-in Twilio emulator is used",
        "none",
    );
    /// Twilio auth token.
    pub const TWILIO_AUTH_TOKEN: Variable = (
        "TWILIO_AUTH_TOKEN",
        "Twilio auth token (signs webhooks; never logged)",
        "none",
    );
    /// Caller id.
    pub const TWILIO_PHONE_NUMBER: Variable = ("TWILIO_PHONE_NUMBER", "caller id, E.164", "none");
    /// Twilio REST base URL.
    pub const TWILIO_API_BASE_URL: Variable = ("TWILIO_API_BASE_URL", "Twilio REST base URL", "https://api.twilio.com");
    /// Timeout of one Twilio REST request.
    pub const TWILIO_HTTP_TIMEOUT: Variable = (
        "TWILIO_HTTP_TIMEOUT",
        "timeout of one Twilio REST request, seconds",
        "10",
    );
    /// Ring timeout.
    pub const RING_TIMEOUT: Variable = (
        "RING_TIMEOUT",
        "how long the callee's phone may ring, seconds (Twilio Timeout)",
        "30",
    );
    /// Default longest answered call.
    pub const MAX_CALL_DURATION: Variable = (
        "MAX_CALL_DURATION",
        "default longest answered call, seconds (Twilio TimeLimit)",
        "600",
    );
    /// Time a client has to send a request's headers.
    pub const HTTP_HEADER_TIMEOUT: Variable = (
        "HTTP_HEADER_TIMEOUT",
        "seconds a client has to send a request's headers (a new connection's first request, or the next one on an HTTP/1.1 keep-alive connection); then the connection is closed",
        "10",
    );
    /// Time a client has to send a request's body.
    pub const HTTP_BODY_TIMEOUT: Variable = (
        "HTTP_BODY_TIMEOUT",
        "seconds a request's body may take to arrive once its headers have; then reading it fails (Twilio webhooks: 408)",
        "10",
    );
    /// Idle connections.
    pub const HTTP_IDLE_TIMEOUT: Variable = (
        "HTTP_IDLE_TIMEOUT",
        "seconds a connection may stay open with no request in progress; then it is closed gracefully (open media WebSockets are not affected)",
        "60",
    );
    /// Connection cap.
    pub const MAX_CONNECTIONS: Variable = (
        "MAX_CONNECTIONS",
        "most connections open at once (media WebSockets included); one over it is accepted and closed at once, counted in /metrics",
        "4096",
    );
    /// Body limit of the Twilio webhooks.
    pub const WEBHOOK_MAX_BODY: Variable = (
        "WEBHOOK_MAX_BODY",
        "largest body of a Twilio webhook, bytes (larger: 413); read only when X-Twilio-Signature is present",
        "65536",
    );
    /// Explicit default backend.
    pub const DEFAULT_BACKEND: Variable = (
        "DEFAULT_BACKEND",
        "voice-live or gpt-realtime",
        "the one that is configured",
    );
    /// Default instructions ([`super::DEFAULT_SYSTEM_PROMPT`] when unset).
    pub const SYSTEM_PROMPT: Variable = (
        "SYSTEM_PROMPT",
        "default instructions of the agent",
        "a short helpful-assistant prompt",
    );
    /// Audio path of the bridge.
    pub const AUDIO_MODE: Variable = (
        "AUDIO_MODE",
        "transcode (mu-law 8 kHz <-> PCM16 24 kHz in the bridge) or passthrough (G.711 mu-law end to end)",
        "transcode",
    );
    /// Call store.
    pub const DATABASE_URL: Variable = (
        "DATABASE_URL",
        "call store: sqlite://<path> or sqlite::memory: (one process), or postgres://user:password@host:port/db (replicas; docs/deploy.md)",
        "sqlite://./data/voice-agent.db",
    );
    /// Whether calls are recorded when PlaceCall leaves `record` unset.
    pub const RECORD_CALLS: Variable = (
        "RECORD_CALLS",
        "record calls whose PlaceCall leaves `record` unset (true or false): a stereo WAV of what was heard, fetched from /recordings/{call_id}.wav",
        "false",
    );
    /// Where recordings are written.
    pub const RECORDINGS_DIR: Variable = (
        "RECORDINGS_DIR",
        "directory of the call recordings (created if missing); replicas must share it (one volume mounted by all), since any replica may serve a recording",
        "recordings/ beside the SQLite database file, else ./data/recordings",
    );
    /// How long recordings are kept.
    pub const RECORDING_RETENTION: Variable = (
        "RECORDING_RETENTION",
        "seconds a recording is kept after its call ended; older ones are deleted by an hourly sweep (0 = keep for ever)",
        "2592000",
    );
    /// How long a stopping replica lets its live calls run on.
    pub const DRAIN_TIMEOUT: Variable = (
        "DRAIN_TIMEOUT",
        "seconds a server told to stop (SIGTERM) lets its live calls run on, refusing new ones and failing readiness, before it ends them (0 = at once)",
        "0",
    );
    /// API bearer token.
    pub const API_TOKEN: Variable = (
        "API_TOKEN",
        "when set, every VoiceAgentService RPC needs 'authorization: Bearer <API_TOKEN>'",
        "none",
    );
    /// Signing secret of the server's outgoing webhooks (tool URLs).
    pub const WEBHOOK_SECRET: Variable = (
        "WEBHOOK_SECRET",
        "Standard Webhooks signing secret, whsec_<base64 key of 16-256 bytes>: signs the requests to tool URLs and the outcome webhooks (webhook-id, webhook-timestamp, webhook-signature); never logged; none = PlaceCall refuses tools with a url and a webhook_url",
        "none",
    );
    /// Server-wide receiver of the outcome webhooks.
    pub const WEBHOOK_URL: Variable = (
        "WEBHOOK_URL",
        "receives every call's outcome webhooks (call.status_changed, call.ended; docs/contract.md \"Outcome webhooks\"), signed with WEBHOOK_SECRET (required with it); https://, or http:// to a loopback host; beside a call's own webhook_url, both receive them",
        "none",
    );
    /// Attempts per outcome webhook message.
    pub const WEBHOOK_MAX_ATTEMPTS: Variable = (
        "WEBHOOK_MAX_ATTEMPTS",
        "attempts at delivering an outcome webhook message (the first included) before it is dead-lettered (kept, shown in GetCall and /metrics)",
        "12",
    );
    /// First retry wait of outcome webhooks.
    pub const WEBHOOK_RETRY_BASE: Variable = (
        "WEBHOOK_RETRY_BASE",
        "milliseconds before the first retry of a failed outcome webhook; doubled after each further failure up to WEBHOOK_RETRY_MAX, each wait jittered to 50-100 %",
        "5000",
    );
    /// Longest retry wait of outcome webhooks.
    pub const WEBHOOK_RETRY_MAX: Variable = (
        "WEBHOOK_RETRY_MAX",
        "longest wait between two attempts at an outcome webhook, seconds",
        "3600",
    );
    /// Per-attempt timeout of outcome webhooks.
    pub const WEBHOOK_TIMEOUT: Variable = (
        "WEBHOOK_TIMEOUT",
        "milliseconds one outcome webhook attempt may take (connect, send, answer's headers) before it counts as failed",
        "10000",
    );
    /// Browser origins allowed to call the API from other pages.
    pub const CORS_ALLOWED_ORIGINS: Variable = (
        "CORS_ALLOWED_ORIGINS",
        "comma-separated origins (scheme://host[:port]) whose pages may call the API cross-origin, e.g. http://localhost:5173; none = no CORS",
        "none",
    );
    /// Web UI directory (instead of the UI built into the binary).
    pub const WEB_DIR: Variable = (
        "WEB_DIR",
        "serve the web UI at / from this directory (a vite build, e.g. web-client/dist while developing the UI) instead of the UI built into the binary",
        "none: the UI built into the binary",
    );
    /// Log filter (read by `main`).
    pub const RUST_LOG: Variable = ("RUST_LOG", "log filter (tracing-subscriber EnvFilter syntax)", "info");
    /// Log line format (read by `main`, docs/observability.md).
    pub const LOG_FORMAT: Variable = (
        "LOG_FORMAT",
        "text (colour only on a terminal) or json (one object per line, with span fields)",
        "text",
    );
    /// OTLP/HTTP endpoint spans are exported to (read by `main` and the OpenTelemetry SDK).
    pub const OTEL_EXPORTER_OTLP_ENDPOINT: Variable = (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTLP/HTTP collector base URL, e.g. http://localhost:4318; spans go to its /v1/traces (the SDK also reads the other standard OTEL_* variables); none = no traces",
        "none",
    );
    /// OTLP transport; only the specification's default is built in.
    pub const OTEL_EXPORTER_OTLP_PROTOCOL: Variable = (
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTLP transport: http/protobuf (the only one built in; anything else stops the server)",
        "http/protobuf",
    );
    /// `service.name` of the exported spans.
    pub const OTEL_SERVICE_NAME: Variable = ("OTEL_SERVICE_NAME", "service.name of the exported spans", "voice-agent");
}

const HEAD: &[Variable] = &[
    var::HOST,
    var::PORT,
    var::PUBLIC_URL,
    var::TWILIO_ACCOUNT_SID,
    var::TWILIO_AUTH_TOKEN,
    var::TWILIO_PHONE_NUMBER,
    var::TWILIO_API_BASE_URL,
    var::TWILIO_HTTP_TIMEOUT,
    var::RING_TIMEOUT,
    var::MAX_CALL_DURATION,
    var::HTTP_HEADER_TIMEOUT,
    var::HTTP_BODY_TIMEOUT,
    var::HTTP_IDLE_TIMEOUT,
    var::MAX_CONNECTIONS,
    var::WEBHOOK_MAX_BODY,
];
const TAIL: &[Variable] = &[
    var::DEFAULT_BACKEND,
    var::SYSTEM_PROMPT,
    var::AUDIO_MODE,
    var::DATABASE_URL,
    var::DRAIN_TIMEOUT,
    var::RECORD_CALLS,
    var::RECORDINGS_DIR,
    var::RECORDING_RETENTION,
    var::API_TOKEN,
    var::WEBHOOK_SECRET,
    var::WEBHOOK_URL,
    var::WEBHOOK_MAX_ATTEMPTS,
    var::WEBHOOK_RETRY_BASE,
    var::WEBHOOK_RETRY_MAX,
    var::WEBHOOK_TIMEOUT,
    var::CORS_ALLOWED_ORIGINS,
    var::WEB_DIR,
    var::RUST_LOG,
    var::LOG_FORMAT,
    var::OTEL_EXPORTER_OTLP_ENDPOINT,
    var::OTEL_EXPORTER_OTLP_PROTOCOL,
    var::OTEL_SERVICE_NAME,
];
const VARIABLE_COUNT: usize = HEAD.len() + backend::variable_count() + TAIL.len();

/// Every variable the server reads, with its meaning and default, for `--help` and the README:
/// the server's own, and each realtime backend's (its providers', then its default voice).
pub const VARIABLES: &[Variable] = &backend::variables::<VARIABLE_COUNT>(HEAD, TAIL);

/// A secret value: usable, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret string.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is sent or compared.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How audio crosses the bridge (contract §3 `AUDIO_MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioMode {
    /// μ-law 8 kHz ↔ PCM16 24 kHz in the bridge (the seed's design).
    Transcode,
    /// G.711 μ-law end to end; the AI session uses μ-law in and out.
    Passthrough,
}

/// Twilio account credentials.
#[derive(Clone, Debug)]
pub struct TwilioConfig {
    /// Account SID, `AC` + 32 hex digits.
    pub account_sid: String,
    /// Auth token: signs webhooks and authenticates REST calls.
    pub auth_token: Secret,
    /// Caller id, E.164.
    pub phone_number: String,
    /// REST base URL.
    pub api_base_url: Url,
}

/// Where calls are stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseLocation {
    /// A SQLite database file.
    File(PathBuf),
    /// An in-memory SQLite database (tests).
    Memory,
    /// A PostgreSQL database shared by replicas (its URL may hold a password).
    Postgres(Secret),
}

/// Everything the server needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address of the one listener.
    pub bind: SocketAddr,
    /// Public base URL as configured; `None` = derived from the bound address at start.
    pub public_url: Option<Url>,
    /// Real Twilio; `None` = the built-in emulator.
    pub twilio: Option<TwilioConfig>,
    /// Timeout of one Twilio REST request.
    pub twilio_http_timeout: Duration,
    /// Ring timeout sent as Twilio `Timeout`.
    pub ring_timeout: Duration,
    /// Default longest answered call (Twilio `TimeLimit`).
    pub max_call_duration: Duration,
    /// Azure Voice Live, if configured.
    pub voice_live: Option<VoiceLiveConfig>,
    /// Default Azure voice for Voice Live.
    pub azure_tts_voice: String,
    /// gpt-realtime on Azure OpenAI, if configured.
    pub azure_openai: Option<AzureOpenAiConfig>,
    /// gpt-realtime on OpenAI, if configured (Azure OpenAI wins when both are).
    pub openai: Option<OpenAiConfig>,
    /// Explicit `DEFAULT_BACKEND`.
    pub default_backend: Option<Backend>,
    /// Default instructions.
    pub system_prompt: String,
    /// Default OpenAI voice.
    pub voice: String,
    /// Audio path of the bridge.
    pub audio_mode: AudioMode,
    /// Call store location.
    pub database: DatabaseLocation,
    /// How long a SIGTERM lets live calls run on (0 = end them at once).
    pub drain_timeout: Duration,
    /// Record calls whose PlaceCall leaves `record` unset.
    pub record_calls: bool,
    /// Where recordings are written.
    pub recordings_dir: PathBuf,
    /// How long a recording is kept after its call ended; zero = for ever.
    pub recording_retention: Duration,
    /// Bearer token required by VoiceAgentService, if set.
    pub api_token: Option<Secret>,
    /// `WEBHOOK_SECRET`, checked to be a `whsec_` secret at start.
    pub webhook_secret: Option<Secret>,
    /// `WEBHOOK_URL`: receives every call's outcome webhooks (checked like a tool URL; needs the secret).
    pub webhook_url: Option<String>,
    /// How outcome webhooks are retried.
    pub webhook_retry: crate::webhook::retry::RetryPolicy,
    /// Origins (ASCII serialization, e.g. `http://localhost:5173`) whose pages
    /// may call the API; empty = no CORS at all.
    pub cors_allowed_origins: Vec<String>,
    /// `WEB_DIR`: serve the UI from this directory (it must have an
    /// index.html); `None` = the UI built into the binary.
    pub web_dir: Option<PathBuf>,
    /// Timeouts and caps of the listener's connections.
    pub limits: ConnectionLimits,
    /// What the start-up log should say about how the variables were read
    /// (defaults taken from the seed, the protocol they select); no secrets.
    pub notes: Vec<String>,
}

/// What one peer may hold of the listener: how long it may take to send a
/// request, how long it may idle, how many connections may be open, and how
/// large a webhook body may be. Without them a client that never finishes a
/// request pins a connection (and its buffers) for ever.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    /// A request's body must arrive within this once its headers have.
    pub body_timeout: Duration,
    /// A connection with no request in progress for this long is closed.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Largest Twilio webhook body, bytes.
    pub webhook_max_body: usize,
}

/// A configuration problem, naming the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong with it and what is expected.
    pub problem: String,
}

pub(crate) fn err(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        problem: problem.into(),
    }
}

/// Digits an E.164 number may have after the `+` (the shortest national
/// numbers in use have 8; ITU-T E.164 allows 15), published in GetServerInfo.
pub const E164_DIGITS: (usize, usize) = (8, 15);

/// E.164: `+` then [`E164_DIGITS`] digits (the first not 0). Shared with PlaceCall validation.
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (E164_DIGITS.0..=E164_DIGITS.1).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// The variables as the parsers see them (the realtime providers parse their own).
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    /// A variable's value; empty and whitespace-only count as unset (a `.env`
    /// with `FOO=` means "not configured", as in the seed).
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// The value, or the declared default when unset.
    pub(crate) fn or_default(&self, var: &Variable) -> String {
        self.get(var.0).unwrap_or_else(|| var.2.to_string())
    }

    pub(crate) fn url(&self, name: &'static str, schemes: &[&str]) -> Result<Option<Url>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => parse_url(name, &raw, schemes).map(Some),
        }
    }

    /// A URL, the declared default when unset (parsed and checked the same way).
    pub(crate) fn url_or_default(&self, var: &Variable, schemes: &[&str]) -> Result<Url, ConfigError> {
        parse_url(var.0, &self.or_default(var), schemes)
    }

    fn seconds(&self, var: &Variable, min: u64, max: u64) -> Result<Duration, ConfigError> {
        let (name, raw) = (var.0, self.or_default(var));
        let secs: u64 = raw
            .parse()
            .map_err(|_| err(name, format!("expected whole seconds, got {raw:?}")))?;
        if !(min..=max).contains(&secs) {
            return Err(err(
                name,
                format!("must be between {min} and {max} seconds, got {secs}"),
            ));
        }
        Ok(Duration::from_secs(secs))
    }

    fn count(&self, var: &Variable, min: usize, max: usize) -> Result<usize, ConfigError> {
        let (name, raw) = (var.0, self.or_default(var));
        let n: usize = raw
            .parse()
            .map_err(|_| err(name, format!("expected a whole number, got {raw:?}")))?;
        if !(min..=max).contains(&n) {
            return Err(err(name, format!("must be between {min} and {max}, got {n}")));
        }
        Ok(n)
    }
}

fn parse_url(name: &'static str, raw: &str, schemes: &[&str]) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| err(name, format!("not a valid URL ({e})")))?;
    if !schemes.contains(&url.scheme()) {
        return Err(err(
            name,
            format!("scheme must be one of {}, got {}", schemes.join(", "), url.scheme()),
        ));
    }
    if url.host_str().is_none() {
        return Err(err(name, "the URL has no host"));
    }
    Ok(url)
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env { lookup };

        let host: IpAddr = match env.or_default(&var::HOST).as_str() {
            "localhost" => IpAddr::from([127, 0, 0, 1]),
            h => h.parse().map_err(|_| {
                err(
                    var::HOST.0,
                    format!("expected an IP address such as 127.0.0.1 or 0.0.0.0, got {h:?}"),
                )
            })?,
        };
        let port: u16 = {
            let p = env.or_default(&var::PORT);
            p.parse()
                .map_err(|_| err(var::PORT.0, format!("expected a port number 0-65535, got {p:?}")))?
        };
        let public_url = env.url(var::PUBLIC_URL.0, &["http", "https"])?;

        let twilio_parts = [
            (var::TWILIO_ACCOUNT_SID.0, env.get(var::TWILIO_ACCOUNT_SID.0)),
            (var::TWILIO_AUTH_TOKEN.0, env.get(var::TWILIO_AUTH_TOKEN.0)),
            (var::TWILIO_PHONE_NUMBER.0, env.get(var::TWILIO_PHONE_NUMBER.0)),
        ];
        let twilio_api_base_url = env.url_or_default(&var::TWILIO_API_BASE_URL, &["http", "https"])?;
        let twilio = match twilio_parts {
            [(_, None), (_, None), (_, None)] => None,
            [(_, Some(sid)), (_, Some(token)), (_, Some(number))] => {
                let valid_sid =
                    sid.len() == 34 && sid.starts_with("AC") && sid[2..].bytes().all(|b| b.is_ascii_hexdigit());
                if !valid_sid {
                    return Err(err("TWILIO_ACCOUNT_SID", "expected AC followed by 32 hex digits"));
                }
                if !is_e164(&number) {
                    return Err(err(
                        "TWILIO_PHONE_NUMBER",
                        "expected E.164: '+' then 8 to 15 digits, e.g. +14155551212",
                    ));
                }
                Some(TwilioConfig {
                    account_sid: sid,
                    auth_token: Secret::new(token),
                    phone_number: number,
                    api_base_url: twilio_api_base_url,
                })
            }
            parts => {
                let missing = parts
                    .iter()
                    .find(|(_, v)| v.is_none())
                    .map(|(n, _)| *n)
                    .unwrap_or("TWILIO_ACCOUNT_SID");
                return Err(err(
                    missing,
                    "missing: set all of TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_PHONE_NUMBER, or none to use the emulator",
                ));
            }
        };

        let default_backend = match env.get(var::DEFAULT_BACKEND.0) {
            None => None,
            Some(b) => Some(Backend::parse(&b).ok_or_else(|| {
                let names: Vec<&str> = Backend::ALL.iter().map(|b| b.as_str()).collect();
                err(
                    var::DEFAULT_BACKEND.0,
                    format!("expected {}, got {b:?}", names.join(" or ")),
                )
            })?),
        };

        let audio_mode = match env.or_default(&var::AUDIO_MODE).as_str() {
            "transcode" => AudioMode::Transcode,
            "passthrough" => AudioMode::Passthrough,
            other => {
                return Err(err(
                    var::AUDIO_MODE.0,
                    format!("expected transcode or passthrough, got {other:?}"),
                ));
            }
        };

        let database = parse_database_url(&env.or_default(&var::DATABASE_URL))?;
        let record_calls = match env.or_default(&var::RECORD_CALLS).to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            other => {
                return Err(err(
                    var::RECORD_CALLS.0,
                    format!("expected true or false, got {other:?}"),
                ));
            }
        };
        let recordings_dir = match env.get(var::RECORDINGS_DIR.0) {
            Some(dir) => PathBuf::from(dir),
            None => default_recordings_dir(&database),
        };

        let mut config = Config {
            bind: SocketAddr::new(host, port),
            public_url,
            twilio,
            twilio_http_timeout: env.seconds(&var::TWILIO_HTTP_TIMEOUT, 1, 120)?,
            ring_timeout: env.seconds(&var::RING_TIMEOUT, 5, 600)?,
            max_call_duration: env.seconds(&var::MAX_CALL_DURATION, 10, 4 * 3600)?,
            voice_live: None,
            azure_tts_voice: env.or_default(&voice_live::VOICE),
            azure_openai: None,
            openai: None,
            default_backend,
            system_prompt: env
                .get(var::SYSTEM_PROMPT.0)
                .unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.into()),
            voice: env.or_default(&openai::VOICE),
            audio_mode,
            database,
            drain_timeout: env.seconds(&var::DRAIN_TIMEOUT, 0, 4 * 3600)?,
            record_calls,
            recordings_dir,
            recording_retention: env.seconds(&var::RECORDING_RETENTION, 0, 100 * 365 * 24 * 3600)?,
            api_token: env.get(var::API_TOKEN.0).map(Secret::new),
            webhook_secret: match env.get(var::WEBHOOK_SECRET.0) {
                None => None,
                // The value is never echoed: it is a secret even when malformed.
                Some(v) => match crate::webhook_signing::SigningKey::from_secret(&v) {
                    Ok(_) => Some(Secret::new(v)),
                    Err(e) => return Err(err(var::WEBHOOK_SECRET.0, e.to_string())),
                },
            },
            webhook_url: match env.get(var::WEBHOOK_URL.0) {
                None => None,
                Some(raw) => {
                    crate::call::tools::check_url(&raw).map_err(|why| err(var::WEBHOOK_URL.0, why))?;
                    if env.get(var::WEBHOOK_SECRET.0).is_none() {
                        return Err(err(
                            var::WEBHOOK_URL.0,
                            "needs WEBHOOK_SECRET (whsec_…) to sign the webhooks with: nothing is sent unsigned",
                        ));
                    }
                    Some(raw)
                }
            },
            webhook_retry: crate::webhook::retry::RetryPolicy {
                max_attempts: env.count(&var::WEBHOOK_MAX_ATTEMPTS, 1, 100)? as u32,
                base: Duration::from_millis(env.count(&var::WEBHOOK_RETRY_BASE, 10, 3_600_000)? as u64),
                cap: env.seconds(&var::WEBHOOK_RETRY_MAX, 1, 7 * 24 * 3600)?,
                timeout: Duration::from_millis(env.count(&var::WEBHOOK_TIMEOUT, 100, 120_000)? as u64),
            },
            cors_allowed_origins: parse_origins(env.get(var::CORS_ALLOWED_ORIGINS.0).as_deref())?,
            web_dir: env.get(var::WEB_DIR.0).map(PathBuf::from),
            limits: ConnectionLimits {
                header_timeout: env.seconds(&var::HTTP_HEADER_TIMEOUT, 1, 300)?,
                body_timeout: env.seconds(&var::HTTP_BODY_TIMEOUT, 1, 300)?,
                idle_timeout: env.seconds(&var::HTTP_IDLE_TIMEOUT, 1, 3600)?,
                max_connections: env.count(&var::MAX_CONNECTIONS, 1, 1 << 20)?,
                webhook_max_body: env.count(&var::WEBHOOK_MAX_BODY, 1024, 2 << 20)?,
            },
            notes: Vec::new(),
        };
        backend::configure_all(&env, &mut config)?;
        Ok(config)
    }

    /// A config for tests and embedding: loopback on a free port, in-memory
    /// store, emulators for everything.
    pub fn for_tests() -> Self {
        let mut config = Self::from_lookup(&|_| None).expect("the empty environment is a valid config");
        config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        config.database = DatabaseLocation::Memory;
        config
    }

    /// True when the realtime AI of `backend` is a real service (not the emulator).
    pub fn backend_configured(&self, backend: Backend) -> bool {
        backend::spec(backend).configured_endpoint(self).is_some()
    }

    /// True when no realtime AI is configured: every backend goes to the emulator.
    pub fn ai_emulated(&self) -> bool {
        !Backend::ALL.into_iter().any(|b| self.backend_configured(b))
    }

    /// The backend used when a PlaceCall leaves it unspecified: `DEFAULT_BACKEND`, else the
    /// first configured one, else the first.
    pub fn effective_default_backend(&self) -> Backend {
        self.default_backend
            .or_else(|| Backend::ALL.into_iter().find(|b| self.backend_configured(*b)))
            .unwrap_or(Backend::ALL[0])
    }

    /// The voice a call on `backend` gets when PlaceCall leaves `voice` empty.
    pub fn default_voice(&self, backend: Backend) -> &str {
        (backend::spec(backend).default_voice)(self)
    }

    /// Why a backend cannot take calls, if it cannot. With no AI configured at
    /// all, every backend is served by the emulator.
    pub fn backend_unavailable(&self, backend: Backend) -> Option<String> {
        if self.ai_emulated() || self.backend_configured(backend) {
            return None;
        }
        Some(backend::spec(backend).not_configured())
    }

    /// The backends a PlaceCall may ask for, in [`Backend::ALL`] order: those
    /// [`Self::backend_unavailable`] lets through (both when no AI is
    /// configured, else only the configured ones).
    pub fn available_backends(&self) -> Vec<Backend> {
        Backend::ALL
            .into_iter()
            .filter(|b| self.backend_unavailable(*b).is_none())
            .collect()
    }

    /// Checks that only make sense at start (not in tests that build configs by hand).
    pub fn check_startup(&self, allow_unauthenticated: bool) -> Result<(), ConfigError> {
        if !self.bind.ip().is_loopback() && self.api_token.is_none() && !allow_unauthenticated {
            return Err(err(
                "API_TOKEN",
                format!(
                    "missing: HOST {} is not a loopback address, so the API would be open to anyone; set API_TOKEN or pass --allow-unauthenticated",
                    self.bind.ip()
                ),
            ));
        }
        if let Some(backend) = self.default_backend
            && let Some(why) = self.backend_unavailable(backend)
        {
            return Err(err("DEFAULT_BACKEND", why));
        }
        if let Some(dir) = &self.web_dir
            && !dir.join("index.html").is_file()
        {
            return Err(err(
                var::WEB_DIR.0,
                format!(
                    "{} has no index.html (build the UI there with `npm run build`, or unset WEB_DIR to serve the UI built into the binary)",
                    dir.display()
                ),
            ));
        }
        Ok(())
    }
}

/// `CORS_ALLOWED_ORIGINS`: exact origins only. A wildcard or `null` would
/// hand the API to any page (or to sandboxed and `file:` pages), and a path
/// would be ignored by browsers, so all three are refused rather than guessed at.
fn parse_origins(raw: Option<&str>) -> Result<Vec<String>, ConfigError> {
    let name = var::CORS_ALLOWED_ORIGINS.0;
    let mut origins = Vec::new();
    for item in raw.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item == "*" || item.eq_ignore_ascii_case("null") {
            return Err(err(
                name,
                format!("{item:?}: list exact origins such as http://localhost:5173"),
            ));
        }
        let url = parse_url(name, item, &["http", "https"])?;
        let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
        if !bare || !url.username().is_empty() || url.password().is_some() || item.ends_with('/') {
            return Err(err(
                name,
                format!("{item:?} is not an origin: expected scheme://host[:port], no path"),
            ));
        }
        let origin = url.origin().ascii_serialization();
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(origins)
}

/// Recordings live beside the SQLite database (`<its directory>/recordings`),
/// so one data volume holds both; without a database file (in memory, or
/// PostgreSQL) under `./data/recordings`.
fn default_recordings_dir(database: &DatabaseLocation) -> PathBuf {
    match database {
        DatabaseLocation::File(path) => match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => dir.join("recordings"),
            None => PathBuf::from("recordings"),
        },
        DatabaseLocation::Memory | DatabaseLocation::Postgres(_) => PathBuf::from("./data/recordings"),
    }
}

fn parse_database_url(raw: &str) -> Result<DatabaseLocation, ConfigError> {
    if raw == "sqlite::memory:" || raw == ":memory:" {
        return Ok(DatabaseLocation::Memory);
    }
    if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        // Checked here so a typo fails at start, naming the variable (the
        // message never repeats the URL: it may hold a password).
        return match raw.parse::<tokio_postgres::Config>() {
            Ok(_) => Ok(DatabaseLocation::Postgres(Secret::new(raw))),
            Err(e) => Err(err("DATABASE_URL", format!("not a valid PostgreSQL URL: {e}"))),
        };
    }
    let path = raw
        .strip_prefix("sqlite://")
        .or_else(|| raw.strip_prefix("sqlite:"))
        .ok_or_else(|| {
            err(
                "DATABASE_URL",
                "expected sqlite://<path>, sqlite::memory: or postgres://…",
            )
        })?;
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() {
        return Err(err("DATABASE_URL", "the sqlite URL has no path"));
    }
    Ok(DatabaseLocation::File(PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(&move |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_emulated_loopback() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.bind, "127.0.0.1:8000".parse().unwrap());
        assert!(c.twilio.is_none());
        assert!(c.ai_emulated());
        assert_eq!(c.effective_default_backend(), Backend::VoiceLive);
        assert_eq!(c.audio_mode, AudioMode::Transcode);
        assert_eq!(c.database, DatabaseLocation::File("./data/voice-agent.db".into()));
    }

    #[test]
    fn half_twilio_credentials_name_the_missing_variable() {
        let e = parse(&[("TWILIO_ACCOUNT_SID", "AC00000000000000000000000000000000")]).unwrap_err();
        assert_eq!(e.variable, "TWILIO_AUTH_TOKEN");
    }

    #[test]
    fn wrong_values_name_their_variable() {
        for (var, value) in [
            ("PORT", "eighty"),
            ("HOST", "my host"),
            ("PUBLIC_URL", "not a url"),
            ("PUBLIC_URL", "ftp://example.com"),
            ("AUDIO_MODE", "stereo"),
            ("DEFAULT_BACKEND", "watson"),
            ("DATABASE_URL", "mysql://x"),
            ("DATABASE_URL", "postgres://x:notaport/db"),
            ("AZURE_VOICE_LIVE_ENDPOINT", "::"),
            ("RING_TIMEOUT", "1"),
            ("CORS_ALLOWED_ORIGINS", "*"),
            ("CORS_ALLOWED_ORIGINS", "null"),
            ("CORS_ALLOWED_ORIGINS", "http://localhost:5173/app"),
            ("CORS_ALLOWED_ORIGINS", "localhost:5173"),
            ("CORS_ALLOWED_ORIGINS", "http://ok.example, ftp://x.example"),
            ("HTTP_HEADER_TIMEOUT", "0"),
            ("MAX_CONNECTIONS", "many"),
            ("WEBHOOK_MAX_BODY", "10"),
        ] {
            let e = parse(&[(var, value)]).unwrap_err();
            assert_eq!(e.variable, var, "{var}={value}: {e}");
        }
    }

    #[test]
    fn cors_origins_are_exact_and_normalized() {
        assert!(parse(&[]).unwrap().cors_allowed_origins.is_empty());
        let c = parse(&[(
            "CORS_ALLOWED_ORIGINS",
            "http://localhost:5173, HTTPS://UI.Example.com:443,http://localhost:5173",
        )])
        .unwrap();
        assert_eq!(
            c.cors_allowed_origins,
            ["http://localhost:5173", "https://ui.example.com"]
        );
    }

    #[test]
    fn empty_values_count_as_unset() {
        let c = parse(&[("TWILIO_ACCOUNT_SID", ""), ("OPENAI_API_KEY", "  ")]).unwrap();
        assert!(c.twilio.is_none());
        assert!(c.openai.is_none());
    }

    #[test]
    fn open_bind_needs_a_token() {
        let c = parse(&[("HOST", "0.0.0.0")]).unwrap();
        assert_eq!(c.check_startup(false).unwrap_err().variable, "API_TOKEN");
        assert!(c.check_startup(true).is_ok());
        let c = parse(&[("HOST", "0.0.0.0"), ("API_TOKEN", "t")]).unwrap();
        assert!(c.check_startup(false).is_ok());
    }

    #[test]
    fn web_dir_must_hold_a_built_ui() {
        let c = parse(&[("WEB_DIR", "/nonexistent/voice-agent-ui")]).unwrap();
        assert_eq!(c.check_startup(false).unwrap_err().variable, "WEB_DIR");
        let dir = std::env::temp_dir().join(format!("va-webdir-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), "<!doctype html>").unwrap();
        let c = parse(&[("WEB_DIR", dir.to_str().unwrap())]).unwrap();
        assert!(c.check_startup(false).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unconfigured_default_backend_is_refused_when_another_is_real() {
        let c = parse(&[("OPENAI_API_KEY", "sk"), ("DEFAULT_BACKEND", "voice-live")]).unwrap();
        assert_eq!(c.check_startup(false).unwrap_err().variable, "DEFAULT_BACKEND");
        assert_eq!(c.effective_default_backend(), Backend::VoiceLive);
        let c = parse(&[("OPENAI_API_KEY", "sk")]).unwrap();
        assert_eq!(c.effective_default_backend(), Backend::GptRealtime);
    }

    #[test]
    fn available_backends_are_all_when_none_is_configured_else_the_configured_ones() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.available_backends(), [Backend::VoiceLive, Backend::GptRealtime]);
        let c = parse(&[("OPENAI_API_KEY", "sk")]).unwrap();
        assert_eq!(c.available_backends(), [Backend::GptRealtime]);
        assert!(c.available_backends().contains(&c.effective_default_backend()));
        let c = parse(&[("AZURE_VOICE_LIVE_ENDPOINT", "https://x.services.ai.azure.com")]).unwrap();
        assert_eq!(c.available_backends(), [Backend::VoiceLive]);
        assert_eq!(c.effective_default_backend(), Backend::VoiceLive);
        let c = parse(&[
            ("AZURE_VOICE_LIVE_ENDPOINT", "https://x.services.ai.azure.com"),
            ("OPENAI_API_KEY", "sk"),
            ("DEFAULT_BACKEND", "gpt-realtime"),
        ])
        .unwrap();
        assert_eq!(c.available_backends(), [Backend::VoiceLive, Backend::GptRealtime]);
        assert_eq!(c.effective_default_backend(), Backend::GptRealtime);
    }

    #[test]
    fn recordings_live_beside_the_database_unless_told_otherwise() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.recordings_dir, PathBuf::from("./data/recordings"));
        assert!(!c.record_calls);
        let c = parse(&[("DATABASE_URL", "sqlite:///srv/va/calls.db")]).unwrap();
        assert_eq!(c.recordings_dir, PathBuf::from("/srv/va/recordings"));
        let c = parse(&[
            ("DATABASE_URL", "sqlite::memory:"),
            ("RECORDINGS_DIR", "/mnt/shared/rec"),
        ])
        .unwrap();
        assert_eq!(c.recordings_dir, PathBuf::from("/mnt/shared/rec"));
        let c = parse(&[("RECORD_CALLS", "TRUE"), ("RECORDING_RETENTION", "0")]).unwrap();
        assert!(c.record_calls);
        assert!(c.recording_retention.is_zero());
        assert_eq!(
            parse(&[("RECORD_CALLS", "maybe")]).unwrap_err().variable,
            "RECORD_CALLS"
        );
        assert_eq!(
            parse(&[("RECORDING_RETENTION", "a week")]).unwrap_err().variable,
            "RECORDING_RETENTION"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let c = parse(&[("API_TOKEN", "hunter2")]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let c = parse(&[("WEBHOOK_SECRET", secret)]).unwrap();
        assert!(c.webhook_secret.is_some());
        assert!(!format!("{c:?}").contains("C2FVsBQIhrsc"));
    }

    #[test]
    fn a_webhook_url_needs_a_secret_and_a_safe_scheme() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let e = parse(&[("WEBHOOK_URL", "https://h.example/hook")]).unwrap_err();
        assert_eq!(e.variable, "WEBHOOK_URL");
        assert!(e.problem.contains("WEBHOOK_SECRET"), "{e}");
        let e = parse(&[("WEBHOOK_URL", "http://h.example/hook"), ("WEBHOOK_SECRET", secret)]).unwrap_err();
        assert_eq!(e.variable, "WEBHOOK_URL");
        let c = parse(&[("WEBHOOK_URL", "https://h.example/hook"), ("WEBHOOK_SECRET", secret)]).unwrap();
        assert_eq!(c.webhook_url.as_deref(), Some("https://h.example/hook"));
        assert_eq!(c.webhook_retry, crate::webhook::retry::RetryPolicy::default());
    }

    #[test]
    fn a_malformed_webhook_secret_stops_the_start_without_being_echoed() {
        let e = parse(&[("WEBHOOK_SECRET", "not-a-whsec-hunter2")]).unwrap_err();
        assert_eq!(e.variable, "WEBHOOK_SECRET");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn every_variable_is_declared_once() {
        let mut names: Vec<&str> = VARIABLES.iter().map(|(n, _, _)| *n).collect();
        assert!(names.contains(&"AZURE_VOICE_LIVE_ENDPOINT") && names.contains(&"VOICE"));
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a variable is declared twice");
    }

    #[test]
    fn unset_variables_take_their_declared_defaults() {
        let c = parse(&[]).unwrap();
        let vars = [
            (var::TWILIO_HTTP_TIMEOUT, c.twilio_http_timeout.as_secs().to_string()),
            (var::RING_TIMEOUT, c.ring_timeout.as_secs().to_string()),
            (var::DRAIN_TIMEOUT, c.drain_timeout.as_secs().to_string()),
            (var::RECORD_CALLS, c.record_calls.to_string()),
            (var::RECORDING_RETENTION, c.recording_retention.as_secs().to_string()),
            (var::MAX_CALL_DURATION, c.max_call_duration.as_secs().to_string()),
            (var::HTTP_HEADER_TIMEOUT, c.limits.header_timeout.as_secs().to_string()),
            (var::HTTP_BODY_TIMEOUT, c.limits.body_timeout.as_secs().to_string()),
            (var::HTTP_IDLE_TIMEOUT, c.limits.idle_timeout.as_secs().to_string()),
            (var::MAX_CONNECTIONS, c.limits.max_connections.to_string()),
            (var::WEBHOOK_MAX_BODY, c.limits.webhook_max_body.to_string()),
            (var::WEBHOOK_MAX_ATTEMPTS, c.webhook_retry.max_attempts.to_string()),
            (var::WEBHOOK_RETRY_BASE, c.webhook_retry.base.as_millis().to_string()),
            (var::WEBHOOK_RETRY_MAX, c.webhook_retry.cap.as_secs().to_string()),
            (var::WEBHOOK_TIMEOUT, c.webhook_retry.timeout.as_millis().to_string()),
            (var::PORT, c.bind.port().to_string()),
            (var::HOST, c.bind.ip().to_string()),
            (voice_live::VOICE, c.azure_tts_voice.clone()),
            (openai::VOICE, c.voice.clone()),
        ];
        for ((name, _, default), value) in vars {
            assert_eq!(default, value, "{name}");
        }
        assert!(c.web_dir.is_none(), "the UI built into the binary");
        let c = parse(&[("AZURE_VOICE_LIVE_ENDPOINT", "https://x"), ("OPENAI_API_KEY", "sk")]).unwrap();
        let vl = c.voice_live.unwrap();
        assert_eq!(vl.api_version, voice_live::API_VERSION.2);
        assert_eq!(vl.model, voice_live::MODEL.2);
        let oa = c.openai.unwrap();
        assert_eq!((oa.url.as_str(), oa.model.as_str()), (openai::URL.2, openai::MODEL.2));
    }

    /// The README's configuration table is the contract: its defaults are the declared ones.
    #[test]
    fn readme_table_defaults_match_the_declared_ones() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let section = readme
            .split("\n## ")
            .find(|s| s.starts_with("Configuration\n"))
            .expect("a Configuration section");
        let mut documented: HashMap<String, String> = HashMap::new();
        for row in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
            let [names, _meaning, defaults] = cells[..] else {
                panic!("a row of three cells: {row}");
            };
            let names: Vec<&str> = names.split(", ").map(|n| n.trim_matches('`')).collect();
            let defaults: Vec<&str> = defaults.split(", ").collect();
            for (i, name) in names.iter().enumerate() {
                // One default per name, or one for all of them.
                let default = if defaults.len() == names.len() {
                    defaults[i].to_string()
                } else {
                    defaults.join(", ")
                };
                documented.insert(name.to_string(), default.replace('`', ""));
            }
        }
        for (name, _, default) in VARIABLES {
            let readme = documented
                .get(*name)
                .unwrap_or_else(|| panic!("{name} is not in the README's table"));
            assert!(
                readme == default || readme.starts_with(&format!("{default}:")),
                "{name}: README says {readme:?}, the code {default:?}"
            );
        }
    }

    #[test]
    fn e164() {
        assert!(is_e164("+15550100"));
        assert!(is_e164("+14155551212"));
        assert!(!is_e164("14155551212"));
        assert!(!is_e164("+1555010"));
        assert!(!is_e164("+1234567890123456"));
        assert!(!is_e164("+1415555121a"));
        assert!(!is_e164("+0415555121"));
    }
}
