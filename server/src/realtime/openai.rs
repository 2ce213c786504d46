//! gpt-realtime on OpenAI (protocols.md §7): the realtime URL with `?model=`, a bearer key,
//! the GA dialect. The built-in emulator plays this provider for the gpt-realtime backend.

use url::Url;

use crate::config::{Config, ConfigError, Env, Secret, Variable};
use crate::realtime::backend::{Auth, Endpoint, Provider, join};
use crate::realtime::protocol::Dialect;

/// API key.
pub const API_KEY: Variable = ("OPENAI_API_KEY", "OpenAI key for gpt-realtime on OpenAI", "none");
/// Realtime WebSocket URL.
pub const URL: Variable = (
    "OPENAI_REALTIME_URL",
    "OpenAI realtime WebSocket URL",
    "wss://api.openai.com/v1/realtime",
);
/// Model name.
pub const MODEL: Variable = ("OPENAI_REALTIME_MODEL", "OpenAI realtime model", "gpt-realtime");
/// Default voice of the gpt-realtime backend (Azure OpenAI too).
pub const VOICE: Variable = ("VOICE", "default OpenAI voice for gpt-realtime", "alloy");

/// The emulator's path for this dialect (the default URL's path).
const EMULATOR_PATH: &str = "/v1/realtime";

/// OpenAI as a provider of the gpt-realtime backend.
pub const PROVIDER: Provider = Provider {
    name: "OpenAI",
    variables: &[API_KEY, URL, MODEL],
    requires: API_KEY.0,
    configure,
    endpoint,
};

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

fn configure(env: &Env<'_>, config: &mut Config) -> Result<(), ConfigError> {
    config.openai = match env.get(API_KEY.0) {
        None => None,
        Some(key) => Some(OpenAiConfig {
            api_key: Secret::new(key),
            url: env.url_or_default(&URL, &["wss", "ws"])?,
            model: env.or_default(&MODEL),
        }),
    };
    Ok(())
}

fn endpoint(config: &Config) -> Option<Endpoint> {
    let oa = config.openai.as_ref()?;
    Some(at(oa.url.clone(), &oa.model, oa.api_key.clone(), false))
}

/// OpenAI GA on the built-in emulator, with the default model.
pub(crate) fn emulated(base: &Url, key: &Secret) -> Endpoint {
    at(join(base, EMULATOR_PATH, &[]), MODEL.2, key.clone(), true)
}

fn at(mut url: Url, model: &str, key: Secret, emulated: bool) -> Endpoint {
    url.query_pairs_mut().clear().append_pair("model", model);
    Endpoint {
        url,
        dialect: Dialect::OpenAiGa,
        emulated,
        auth: Auth::Bearer(key),
    }
}
