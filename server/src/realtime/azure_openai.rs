//! gpt-realtime on Azure OpenAI (protocols.md §7): GA `/openai/v1/realtime` without an
//! api-version, or the preview path and protocol for a `*-preview` api-version; `api-key` or a
//! Microsoft Entra ID token.

use url::Url;

use crate::config::{Config, ConfigError, Env, Secret, Variable};
use crate::realtime::backend::{Auth, Endpoint, Provider, join, websocket_base};
use crate::realtime::protocol::Dialect;

/// Resource endpoint.
pub const ENDPOINT: Variable = (
    "AZURE_OPENAI_ENDPOINT",
    "https://<resource>.openai.azure.com for gpt-realtime on Azure OpenAI",
    "none",
);
/// Deployment name; the seed's default when unset.
pub const DEPLOYMENT: Variable = (
    "AZURE_OPENAI_DEPLOYMENT",
    "Azure OpenAI realtime deployment name (the seed's default when unset)",
    SEED_DEPLOYMENT,
);
/// api-version; selects GA or preview.
pub const API_VERSION: Variable = (
    "AZURE_OPENAI_API_VERSION",
    "unset = GA /openai/v1 (but the seed's 2025-04-01-preview when the deployment is unset too); a *-preview version = the preview protocol",
    "2025-04-01-preview with the default deployment; else none (GA)",
);

/// The seed sample's defaults (its `config.py`): a `.env` that sets only
/// `AZURE_OPENAI_ENDPOINT` got this deployment on this preview api-version,
/// so it gets the same here (the preview path and protocol, §7.1).
pub const SEED_DEPLOYMENT: &str = "gpt-4o-realtime-preview";
/// See [`SEED_DEPLOYMENT`].
pub const SEED_API_VERSION: &str = "2025-04-01-preview";
/// Key auth.
pub const API_KEY: Variable = (
    "AZURE_OPENAI_API_KEY",
    "Azure OpenAI key; unset = Microsoft Entra ID token",
    "none",
);

/// Entra ID scope (protocols.md §7.1).
pub const ENTRA_SCOPE: &str = "https://cognitiveservices.azure.com/.default";
const KEY_HEADER: &str = "api-key";

/// Azure OpenAI as a provider of the gpt-realtime backend.
pub const PROVIDER: Provider = Provider {
    name: "Azure OpenAI",
    variables: &[ENDPOINT, DEPLOYMENT, API_VERSION, API_KEY],
    requires: "AZURE_OPENAI_ENDPOINT",
    configure,
    endpoint,
};

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

fn configure(env: &Env<'_>, config: &mut Config) -> Result<(), ConfigError> {
    config.azure_openai = match env.url(ENDPOINT.0, &["https", "http", "wss", "ws"])? {
        None => None,
        Some(endpoint) => {
            let (deployment, api_version) = match (env.get(DEPLOYMENT.0), env.get(API_VERSION.0)) {
                (Some(deployment), version) => (deployment, version),
                (None, version) => {
                    let version = version.unwrap_or_else(|| SEED_API_VERSION.to_string());
                    config.notes.push(format!(
                        "AZURE_OPENAI_DEPLOYMENT is unset: using the seed's default deployment {SEED_DEPLOYMENT} with api-version {version}, which selects the {} realtime protocol ({})",
                        if is_preview(&version) { "preview" } else { "GA" },
                        if is_preview(&version) { "/openai/realtime" } else { "/openai/v1/realtime" },
                    ));
                    (SEED_DEPLOYMENT.to_string(), Some(version))
                }
            };
            Some(AzureOpenAiConfig {
                endpoint,
                deployment,
                api_version,
                api_key: env.get(API_KEY.0).map(Secret::new),
            })
        }
    };
    Ok(())
}

/// A `*-preview` api-version speaks the preview protocol (§7.1, §7.2).
fn is_preview(api_version: &str) -> bool {
    api_version.contains("preview")
}

fn endpoint(config: &Config) -> Option<Endpoint> {
    let az = config.azure_openai.as_ref()?;
    let base = websocket_base(&az.endpoint);
    let auth = match &az.api_key {
        Some(key) => Auth::ApiKey {
            header: KEY_HEADER,
            key: key.clone(),
        },
        None => Auth::Entra { scope: ENTRA_SCOPE },
    };
    let (url, dialect) = match az.api_version.as_deref() {
        // Preview api-versions use the preview path and event names
        // (protocols.md §7.1, §7.2); the seed's .env has 2025-04-01-preview.
        Some(v) if is_preview(v) => (
            join(
                &base,
                "/openai/realtime",
                &[("api-version", v), ("deployment", az.deployment.as_str())],
            ),
            Dialect::OpenAiPreview,
        ),
        // GA: /openai/v1/realtime and no api-version (else 401, §7.1).
        _ => (
            join(&base, "/openai/v1/realtime", &[("model", az.deployment.as_str())]),
            Dialect::OpenAiGa,
        ),
    };
    Some(Endpoint {
        url,
        dialect,
        emulated: false,
        auth,
    })
}
