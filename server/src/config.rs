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

/// Default instructions for the agent when neither the call nor `SYSTEM_PROMPT` gives any.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a friendly, concise phone assistant. Speak naturally, keep \
answers short, and end the call politely when the caller is done.";

/// Greeting spoken by the telephony provider when PlaceCall leaves `greeting` unset.
pub const DEFAULT_GREETING: &str = "Please wait while we connect you to our AI assistant.";

/// Every variable the server reads, with its meaning and default, for `--help` and the README.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    ("HOST", "address the one listener binds", "127.0.0.1"),
    ("PORT", "port of the one listener (0 = any free port)", "8000"),
    (
        "PUBLIC_URL",
        "public base URL Twilio reaches; used for callback URLs, the stream URL (https->wss) and signature checks",
        "http://HOST:PORT",
    ),
    (
        "TWILIO_ACCOUNT_SID",
        "Twilio account SID (AC...); without the three TWILIO_* the built-in Twilio emulator is used",
        "none",
    ),
    (
        "TWILIO_AUTH_TOKEN",
        "Twilio auth token (signs webhooks; never logged)",
        "none",
    ),
    ("TWILIO_PHONE_NUMBER", "caller id, E.164", "none"),
    ("TWILIO_API_BASE_URL", "Twilio REST base URL", "https://api.twilio.com"),
    (
        "TWILIO_HTTP_TIMEOUT",
        "timeout of one Twilio REST request, seconds",
        "10",
    ),
    (
        "RING_TIMEOUT",
        "how long the callee's phone may ring, seconds (Twilio Timeout)",
        "30",
    ),
    (
        "MAX_CALL_DURATION",
        "default longest answered call, seconds (Twilio TimeLimit)",
        "600",
    ),
    (
        "AZURE_VOICE_LIVE_ENDPOINT",
        "https://<resource>.services.ai.azure.com (http:// allowed for local endpoints)",
        "none",
    ),
    ("AZURE_VOICE_LIVE_API_VERSION", "Voice Live api-version", "2025-10-01"),
    ("VOICE_LIVE_MODEL", "Voice Live model query parameter", "gpt-realtime"),
    (
        "AZURE_VOICE_LIVE_API_KEY",
        "Voice Live key; unset = Microsoft Entra ID token",
        "none",
    ),
    (
        "AZURE_TTS_VOICE_NAME",
        "default Azure voice for Voice Live",
        "en-US-AriaNeural",
    ),
    (
        "AZURE_OPENAI_ENDPOINT",
        "https://<resource>.openai.azure.com for gpt-realtime on Azure OpenAI",
        "none",
    ),
    (
        "AZURE_OPENAI_DEPLOYMENT",
        "Azure OpenAI realtime deployment name",
        "none",
    ),
    (
        "AZURE_OPENAI_API_VERSION",
        "unset = GA /openai/v1; a *-preview version = the preview protocol",
        "none",
    ),
    (
        "AZURE_OPENAI_API_KEY",
        "Azure OpenAI key; unset = Microsoft Entra ID token",
        "none",
    ),
    ("OPENAI_API_KEY", "OpenAI key for gpt-realtime on OpenAI", "none"),
    (
        "OPENAI_REALTIME_URL",
        "OpenAI realtime WebSocket URL",
        "wss://api.openai.com/v1/realtime",
    ),
    ("OPENAI_REALTIME_MODEL", "OpenAI realtime model", "gpt-realtime"),
    (
        "DEFAULT_BACKEND",
        "voice-live or gpt-realtime",
        "the one that is configured",
    ),
    (
        "SYSTEM_PROMPT",
        "default instructions of the agent",
        "a short helpful-assistant prompt",
    ),
    ("VOICE", "default OpenAI voice for gpt-realtime", "alloy"),
    (
        "AUDIO_MODE",
        "transcode (mu-law 8 kHz <-> PCM16 24 kHz in the bridge) or passthrough (G.711 mu-law end to end)",
        "transcode",
    ),
    (
        "DATABASE_URL",
        "call store: sqlite://<path> or sqlite::memory:",
        "sqlite://./data/voice-agent.db",
    ),
    (
        "API_TOKEN",
        "when set, every VoiceAgentService RPC needs 'authorization: Bearer <API_TOKEN>'",
        "none",
    ),
    (
        "WEB_DIR",
        "directory of the built web UI served at /",
        "web-client/dist",
    ),
    ("RUST_LOG", "log filter (tracing-subscriber EnvFilter syntax)", "info"),
];

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

/// Azure Voice Live settings.
#[derive(Clone, Debug)]
pub struct VoiceLiveConfig {
    /// Resource endpoint (https, or http for local endpoints).
    pub endpoint: Url,
    /// `api-version` query parameter.
    pub api_version: String,
    /// `model` query parameter.
    pub model: String,
    /// Key auth; `None` = Microsoft Entra ID.
    pub api_key: Option<Secret>,
}

/// gpt-realtime on Azure OpenAI.
#[derive(Clone, Debug)]
pub struct AzureOpenAiConfig {
    /// Resource endpoint.
    pub endpoint: Url,
    /// Deployment name.
    pub deployment: String,
    /// `None` = GA `/openai/v1/realtime`; a preview version = the preview path and protocol.
    pub api_version: Option<String>,
    /// Key auth; `None` = Microsoft Entra ID.
    pub api_key: Option<Secret>,
}

/// gpt-realtime on OpenAI.
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// API key (bearer).
    pub api_key: Secret,
    /// Realtime WebSocket URL.
    pub url: Url,
    /// Model name.
    pub model: String,
}

/// Where calls are stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseLocation {
    /// A SQLite database file.
    File(PathBuf),
    /// An in-memory SQLite database (tests).
    Memory,
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
    /// Bearer token required by VoiceAgentService, if set.
    pub api_token: Option<Secret>,
    /// Directory of the built web UI (served at `/` when it has an index.html).
    pub web_dir: Option<PathBuf>,
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

fn err(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        problem: problem.into(),
    }
}

/// E.164: `+` then 8 to 15 digits (the first not 0). Shared with PlaceCall validation.
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    /// A variable's value; empty and whitespace-only count as unset (a `.env`
    /// with `FOO=` means "not configured", as in the seed).
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn url(&self, name: &'static str, schemes: &[&str]) -> Result<Option<Url>, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        let url = Url::parse(&raw).map_err(|e| err(name, format!("not a valid URL ({e})")))?;
        if !schemes.contains(&url.scheme()) {
            return Err(err(
                name,
                format!("scheme must be one of {}, got {}", schemes.join(", "), url.scheme()),
            ));
        }
        if url.host_str().is_none() {
            return Err(err(name, "the URL has no host"));
        }
        Ok(Some(url))
    }

    fn seconds(&self, name: &'static str, default: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(Duration::from_secs(default));
        };
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
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env { lookup };

        let host: IpAddr = match env.get("HOST") {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(h) if h == "localhost" => IpAddr::from([127, 0, 0, 1]),
            Some(h) => h.parse().map_err(|_| {
                err(
                    "HOST",
                    format!("expected an IP address such as 127.0.0.1 or 0.0.0.0, got {h:?}"),
                )
            })?,
        };
        let port: u16 = match env.get("PORT") {
            None => 8000,
            Some(p) => p
                .parse()
                .map_err(|_| err("PORT", format!("expected a port number 0-65535, got {p:?}")))?,
        };
        let public_url = env.url("PUBLIC_URL", &["http", "https"])?;

        let twilio_parts = [
            ("TWILIO_ACCOUNT_SID", env.get("TWILIO_ACCOUNT_SID")),
            ("TWILIO_AUTH_TOKEN", env.get("TWILIO_AUTH_TOKEN")),
            ("TWILIO_PHONE_NUMBER", env.get("TWILIO_PHONE_NUMBER")),
        ];
        let twilio_api_base_url = env
            .url("TWILIO_API_BASE_URL", &["http", "https"])?
            .unwrap_or_else(|| Url::parse("https://api.twilio.com").expect("constant URL parses"));
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

        let voice_live = env
            .url("AZURE_VOICE_LIVE_ENDPOINT", &["https", "http", "wss", "ws"])?
            .map(|endpoint| VoiceLiveConfig {
                endpoint,
                api_version: env
                    .get("AZURE_VOICE_LIVE_API_VERSION")
                    .unwrap_or_else(|| "2025-10-01".into()),
                model: env.get("VOICE_LIVE_MODEL").unwrap_or_else(|| "gpt-realtime".into()),
                api_key: env.get("AZURE_VOICE_LIVE_API_KEY").map(Secret::new),
            });

        let azure_openai = match env.url("AZURE_OPENAI_ENDPOINT", &["https", "http", "wss", "ws"])? {
            None => None,
            Some(endpoint) => {
                let deployment = env.get("AZURE_OPENAI_DEPLOYMENT").ok_or_else(|| {
                    err(
                        "AZURE_OPENAI_DEPLOYMENT",
                        "missing: required with AZURE_OPENAI_ENDPOINT",
                    )
                })?;
                Some(AzureOpenAiConfig {
                    endpoint,
                    deployment,
                    api_version: env.get("AZURE_OPENAI_API_VERSION"),
                    api_key: env.get("AZURE_OPENAI_API_KEY").map(Secret::new),
                })
            }
        };

        let openai = match env.get("OPENAI_API_KEY") {
            None => None,
            Some(key) => Some(OpenAiConfig {
                api_key: Secret::new(key),
                url: env
                    .url("OPENAI_REALTIME_URL", &["wss", "ws"])?
                    .unwrap_or_else(|| Url::parse("wss://api.openai.com/v1/realtime").expect("constant URL parses")),
                model: env
                    .get("OPENAI_REALTIME_MODEL")
                    .unwrap_or_else(|| "gpt-realtime".into()),
            }),
        };

        let default_backend = match env.get("DEFAULT_BACKEND") {
            None => None,
            Some(b) => Some(Backend::parse(&b).ok_or_else(|| {
                err(
                    "DEFAULT_BACKEND",
                    format!("expected voice-live or gpt-realtime, got {b:?}"),
                )
            })?),
        };

        let audio_mode = match env.get("AUDIO_MODE").as_deref() {
            None | Some("transcode") => AudioMode::Transcode,
            Some("passthrough") => AudioMode::Passthrough,
            Some(other) => {
                return Err(err(
                    "AUDIO_MODE",
                    format!("expected transcode or passthrough, got {other:?}"),
                ));
            }
        };

        let database = match env.get("DATABASE_URL") {
            None => DatabaseLocation::File(PathBuf::from("./data/voice-agent.db")),
            Some(raw) => parse_database_url(&raw)?,
        };

        let config = Config {
            bind: SocketAddr::new(host, port),
            public_url,
            twilio,
            twilio_http_timeout: env.seconds("TWILIO_HTTP_TIMEOUT", 10, 1, 120)?,
            ring_timeout: env.seconds("RING_TIMEOUT", 30, 5, 600)?,
            max_call_duration: env.seconds("MAX_CALL_DURATION", 600, 10, 4 * 3600)?,
            voice_live,
            azure_tts_voice: env
                .get("AZURE_TTS_VOICE_NAME")
                .unwrap_or_else(|| "en-US-AriaNeural".into()),
            azure_openai,
            openai,
            default_backend,
            system_prompt: env.get("SYSTEM_PROMPT").unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.into()),
            voice: env.get("VOICE").unwrap_or_else(|| "alloy".into()),
            audio_mode,
            database,
            api_token: env.get("API_TOKEN").map(Secret::new),
            web_dir: Some(PathBuf::from(
                env.get("WEB_DIR").unwrap_or_else(|| "web-client/dist".into()),
            )),
        };
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
        match backend {
            Backend::VoiceLive => self.voice_live.is_some(),
            Backend::GptRealtime => self.azure_openai.is_some() || self.openai.is_some(),
        }
    }

    /// True when no realtime AI is configured: both backends go to the emulator.
    pub fn ai_emulated(&self) -> bool {
        !self.backend_configured(Backend::VoiceLive) && !self.backend_configured(Backend::GptRealtime)
    }

    /// The backend used when a PlaceCall leaves it unspecified.
    pub fn effective_default_backend(&self) -> Backend {
        if let Some(b) = self.default_backend {
            return b;
        }
        if !self.backend_configured(Backend::VoiceLive) && self.backend_configured(Backend::GptRealtime) {
            Backend::GptRealtime
        } else {
            Backend::VoiceLive
        }
    }

    /// Why a backend cannot take calls, if it cannot. With no AI configured at
    /// all, both are served by the emulator.
    pub fn backend_unavailable(&self, backend: Backend) -> Option<String> {
        if self.ai_emulated() || self.backend_configured(backend) {
            return None;
        }
        Some(match backend {
            Backend::VoiceLive => "backend voice-live is not configured (set AZURE_VOICE_LIVE_ENDPOINT)".into(),
            Backend::GptRealtime => {
                "backend gpt-realtime is not configured (set AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_DEPLOYMENT, or OPENAI_API_KEY)"
                    .into()
            }
        })
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
        Ok(())
    }
}

fn parse_database_url(raw: &str) -> Result<DatabaseLocation, ConfigError> {
    if raw == "sqlite::memory:" || raw == ":memory:" {
        return Ok(DatabaseLocation::Memory);
    }
    let path = raw
        .strip_prefix("sqlite://")
        .or_else(|| raw.strip_prefix("sqlite:"))
        .ok_or_else(|| {
            err(
                "DATABASE_URL",
                format!("only SQLite is supported: expected sqlite://<path> or sqlite::memory:, got {raw:?}"),
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
            ("DATABASE_URL", "postgres://x"),
            ("AZURE_VOICE_LIVE_ENDPOINT", "::"),
            ("RING_TIMEOUT", "1"),
        ] {
            let e = parse(&[(var, value)]).unwrap_err();
            assert_eq!(e.variable, var, "{var}={value}: {e}");
        }
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
    fn secrets_do_not_print() {
        let c = parse(&[("API_TOKEN", "hunter2")]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
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
