//! Azure AI Voice Live (protocols.md §6): `/voice-live/realtime` on the resource endpoint,
//! `api-key` or a Microsoft Entra ID token, the Voice Live dialect.

use url::Url;

use crate::config::{Config, ConfigError, Env, Secret, Variable};
use crate::realtime::backend::{Auth, Endpoint, Provider, join, websocket_base};
use crate::realtime::protocol::Dialect;

/// Resource endpoint.
pub const ENDPOINT: Variable = (
    "AZURE_VOICE_LIVE_ENDPOINT",
    "https://<resource>.services.ai.azure.com (http:// allowed for local endpoints)",
    "none",
);
/// `api-version` query parameter.
pub const API_VERSION: Variable = ("AZURE_VOICE_LIVE_API_VERSION", "Voice Live api-version", "2025-10-01");
/// `model` query parameter.
pub const MODEL: Variable = ("VOICE_LIVE_MODEL", "Voice Live model query parameter", "gpt-realtime");
/// Key auth.
pub const API_KEY: Variable = (
    "AZURE_VOICE_LIVE_API_KEY",
    "Voice Live key; unset = Microsoft Entra ID token",
    "none",
);
/// Default voice of the voice-live backend.
pub const VOICE: Variable = (
    "AZURE_TTS_VOICE_NAME",
    "default Azure voice for Voice Live",
    "en-US-AriaNeural",
);

/// Entra ID scope (protocols.md §6.1).
pub const ENTRA_SCOPE: &str = "https://ai.azure.com/.default";
const PATH: &str = "/voice-live/realtime";
const KEY_HEADER: &str = "api-key";

/// Voice Live as a provider of the voice-live backend.
pub const PROVIDER: Provider = Provider {
    name: "Azure Voice Live",
    variables: &[ENDPOINT, API_VERSION, MODEL, API_KEY],
    requires: ENDPOINT.0,
    configure,
    endpoint,
};

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

fn configure(env: &Env<'_>, config: &mut Config) -> Result<(), ConfigError> {
    config.voice_live = env
        .url(ENDPOINT.0, &["https", "http", "wss", "ws"])?
        .map(|endpoint| VoiceLiveConfig {
            endpoint,
            api_version: env.or_default(&API_VERSION),
            model: env.or_default(&MODEL),
            api_key: env.get(API_KEY.0).map(Secret::new),
        });
    Ok(())
}

fn endpoint(config: &Config) -> Option<Endpoint> {
    let vl = config.voice_live.as_ref()?;
    let auth = match &vl.api_key {
        Some(key) => Auth::ApiKey {
            header: KEY_HEADER,
            key: key.clone(),
        },
        None => Auth::Entra { scope: ENTRA_SCOPE },
    };
    Some(at(
        &websocket_base(&vl.endpoint),
        &vl.api_version,
        &vl.model,
        auth,
        false,
    ))
}

/// Voice Live on the built-in emulator, with the default api-version and model.
pub(crate) fn emulated(base: &Url, key: &Secret) -> Endpoint {
    let auth = Auth::ApiKey {
        header: KEY_HEADER,
        key: key.clone(),
    };
    at(base, API_VERSION.2, MODEL.2, auth, true)
}

fn at(base: &Url, api_version: &str, model: &str, auth: Auth, emulated: bool) -> Endpoint {
    Endpoint {
        url: join(base, PATH, &[("api-version", api_version), ("model", model)]),
        dialect: Dialect::VoiceLive,
        emulated,
        auth,
    }
}
