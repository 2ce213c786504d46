//! The realtime speech-to-speech AI: where each backend lives, how it is
//! authenticated, and opening its WebSocket. The events spoken on the socket
//! are in [`protocol`] (one core, a dialect table for Voice Live and OpenAI
//! GA/preview); Microsoft Entra ID tokens come from [`entra`].

pub mod entra;
/// The realtime dialects' wire events (the `voice-agent-wire` crate).
pub use voice_agent_wire::realtime as protocol;

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::call::Backend;
use crate::config::{Config, Secret};
use crate::realtime::entra::EntraAuth;
use crate::realtime::protocol::Dialect;

/// An open realtime-AI socket.
pub type RealtimeSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Initial read buffer of the media-path WebSockets (Twilio's and the AI's).
/// tungstenite's default is 128 KiB, which it zero-fills before every read:
/// with two sockets per call that alone is 256 KiB per call and a 128 KiB
/// memset per message. Our messages are a few hundred bytes to a few KiB; a
/// larger one grows the buffer as needed.
pub const WS_READ_BUFFER: usize = 4 * 1024;

/// How long opening the AI socket may take (TCP, TLS, upgrade).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Entra ID scope of Voice Live (protocols.md §6.1).
pub const VOICE_LIVE_SCOPE: &str = "https://ai.azure.com/.default";
/// Entra ID scope of Azure OpenAI (protocols.md §7.1).
pub const AZURE_OPENAI_SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// Failure to reach the AI.
#[derive(Debug, thiserror::Error)]
pub enum RealtimeError {
    /// The service refused our credentials.
    #[error("the AI service refused the credentials (HTTP {0})")]
    Auth(u16),
    /// The service answered the upgrade with another HTTP status.
    #[error("the AI service refused the connection (HTTP {0})")]
    Refused(u16),
    /// Network, TLS or WebSocket failure.
    #[error("cannot reach the AI service: {0}")]
    Connect(String),
    /// Opening took longer than [`CONNECT_TIMEOUT`].
    #[error("the AI service did not answer within {0:?}")]
    Timeout(Duration),
    /// No Entra ID token could be obtained.
    #[error("no Microsoft Entra ID token: {0}")]
    Token(String),
}

impl RealtimeError {
    /// Stable code for the call's `error` event.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Auth(_) | Self::Token(_) => "ai_auth_failed",
            Self::Refused(_) => "ai_refused",
            Self::Connect(_) | Self::Timeout(_) => "ai_unavailable",
        }
    }
}

#[derive(Clone, Debug)]
enum Auth {
    /// `api-key: <key>` header (Azure).
    ApiKey(Secret),
    /// `Authorization: Bearer <key>` (OpenAI).
    Bearer(Secret),
    /// `Authorization: Bearer <Entra token>` for the scope.
    Entra(&'static str),
}

/// One reachable realtime AI.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Full WebSocket URL with query.
    pub url: Url,
    /// Event names and session shape spoken there.
    pub dialect: Dialect,
    /// True for the built-in emulator.
    pub emulated: bool,
    auth: Auth,
}

/// The realtime AIs this server can bridge calls to.
#[derive(Clone)]
pub struct RealtimeBackends {
    voice_live: Endpoint,
    gpt_realtime: Endpoint,
    entra: EntraAuth,
}

/// Turns an http(s) endpoint into ws(s).
fn websocket_base(endpoint: &Url) -> Url {
    let mut url = endpoint.clone();
    let scheme = match endpoint.scheme() {
        "https" | "wss" => "wss",
        _ => "ws",
    };
    // Both schemes are "special" in the URL standard, so this cannot fail.
    let _ = url.set_scheme(scheme);
    url.set_query(None);
    url
}

fn join(base: &Url, path: &str, query: &[(&str, &str)]) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{path}"));
    url.query_pairs_mut().clear().extend_pairs(query);
    url
}

impl RealtimeBackends {
    /// Endpoints from the configuration; backends without credentials go to
    /// the emulator at `emulator` (its `ws://host:port` base and API key).
    pub fn from_config(config: &Config, emulator: Option<(&Url, &Secret)>, entra: EntraAuth) -> Self {
        let emulated = |dialect: Dialect| -> Endpoint {
            let (base, key) = match emulator {
                Some((b, k)) => (b.clone(), k.clone()),
                None => (
                    Url::parse("ws://127.0.0.1:9").expect("constant URL parses"),
                    Secret::new(String::new()),
                ),
            };
            match dialect {
                Dialect::VoiceLive => Endpoint {
                    url: join(
                        &base,
                        "/voice-live/realtime",
                        &[("api-version", "2025-10-01"), ("model", "gpt-realtime")],
                    ),
                    dialect,
                    emulated: true,
                    auth: Auth::ApiKey(key),
                },
                _ => Endpoint {
                    url: join(&base, "/v1/realtime", &[("model", "gpt-realtime")]),
                    dialect: Dialect::OpenAiGa,
                    emulated: true,
                    auth: Auth::Bearer(key),
                },
            }
        };

        let voice_live = match &config.voice_live {
            Some(vl) => Endpoint {
                url: join(
                    &websocket_base(&vl.endpoint),
                    "/voice-live/realtime",
                    &[("api-version", vl.api_version.as_str()), ("model", vl.model.as_str())],
                ),
                dialect: Dialect::VoiceLive,
                emulated: false,
                auth: vl.api_key.clone().map_or(Auth::Entra(VOICE_LIVE_SCOPE), Auth::ApiKey),
            },
            None => emulated(Dialect::VoiceLive),
        };

        let gpt_realtime = if let Some(az) = &config.azure_openai {
            let base = websocket_base(&az.endpoint);
            let auth = az.api_key.clone().map_or(Auth::Entra(AZURE_OPENAI_SCOPE), Auth::ApiKey);
            match az.api_version.as_deref() {
                // Preview api-versions use the preview path and event names
                // (protocols.md §7.1, §7.2); the seed's .env has 2025-04-01-preview.
                Some(v) if v.contains("preview") => Endpoint {
                    url: join(
                        &base,
                        "/openai/realtime",
                        &[("api-version", v), ("deployment", az.deployment.as_str())],
                    ),
                    dialect: Dialect::OpenAiPreview,
                    emulated: false,
                    auth,
                },
                // GA: /openai/v1/realtime and no api-version (else 401, §7.1).
                _ => Endpoint {
                    url: join(&base, "/openai/v1/realtime", &[("model", az.deployment.as_str())]),
                    dialect: Dialect::OpenAiGa,
                    emulated: false,
                    auth,
                },
            }
        } else if let Some(oa) = &config.openai {
            let mut url = oa.url.clone();
            url.query_pairs_mut().clear().append_pair("model", &oa.model);
            Endpoint {
                url,
                dialect: Dialect::OpenAiGa,
                emulated: false,
                auth: Auth::Bearer(oa.api_key.clone()),
            }
        } else {
            emulated(Dialect::OpenAiGa)
        };

        Self {
            voice_live,
            gpt_realtime,
            entra,
        }
    }

    /// The endpoint of a backend.
    pub fn endpoint(&self, backend: Backend) -> &Endpoint {
        match backend {
            Backend::VoiceLive => &self.voice_live,
            Backend::GptRealtime => &self.gpt_realtime,
        }
    }

    /// Opens the backend's WebSocket, authenticated.
    pub async fn connect(&self, backend: Backend) -> Result<(RealtimeSocket, Dialect), RealtimeError> {
        let endpoint = self.endpoint(backend);
        let mut request = endpoint
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| RealtimeError::Connect(e.to_string()))?;
        let header = |v: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| RealtimeError::Connect("credential is not a valid header value".into()))
        };
        let headers = request.headers_mut();
        match &endpoint.auth {
            Auth::ApiKey(key) => {
                headers.insert("api-key", header(key.expose())?);
            }
            Auth::Bearer(key) => {
                headers.insert("authorization", header(&format!("Bearer {}", key.expose()))?);
            }
            Auth::Entra(scope) => {
                let token = self
                    .entra
                    .bearer_token(scope)
                    .await
                    .map_err(|e| RealtimeError::Token(e.to_string()))?;
                headers.insert("authorization", header(&format!("Bearer {token}"))?);
            }
        }
        // No Nagle: each 20 ms append must leave at once, not wait for the
        // previous one's ACK.
        let config =
            tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER);
        let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        let (socket, _response) = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Err(_) => return Err(RealtimeError::Timeout(CONNECT_TIMEOUT)),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                let status = resp.status().as_u16();
                return Err(if status == 401 || status == 403 {
                    RealtimeError::Auth(status)
                } else {
                    RealtimeError::Refused(status)
                });
            }
            Ok(Err(e)) => return Err(RealtimeError::Connect(e.to_string())),
            Ok(Ok(ok)) => ok,
        };
        Ok((socket, endpoint.dialect))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Config {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(&move |k| map.get(k).cloned()).unwrap()
    }

    fn backends(vars: &[(&str, &str)]) -> RealtimeBackends {
        let emu = Url::parse("ws://127.0.0.1:4000").unwrap();
        let key = Secret::new("k");
        RealtimeBackends::from_config(&config(vars), Some((&emu, &key)), EntraAuth::from_environment())
    }

    #[test]
    fn voice_live_url_and_auth() {
        let b = backends(&[
            ("AZURE_VOICE_LIVE_ENDPOINT", "https://res.services.ai.azure.com/"),
            ("AZURE_VOICE_LIVE_API_KEY", "key"),
        ]);
        let e = b.endpoint(Backend::VoiceLive);
        assert_eq!(
            e.url.as_str(),
            "wss://res.services.ai.azure.com/voice-live/realtime?api-version=2025-10-01&model=gpt-realtime"
        );
        assert_eq!(e.dialect, Dialect::VoiceLive);
        assert!(matches!(e.auth, Auth::ApiKey(_)));
        let b = backends(&[("AZURE_VOICE_LIVE_ENDPOINT", "https://res.services.ai.azure.com")]);
        assert!(matches!(
            b.endpoint(Backend::VoiceLive).auth,
            Auth::Entra(VOICE_LIVE_SCOPE)
        ));
    }

    #[test]
    fn azure_openai_ga_and_preview() {
        let ga = backends(&[
            ("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com"),
            ("AZURE_OPENAI_DEPLOYMENT", "gpt-realtime"),
        ]);
        let e = ga.endpoint(Backend::GptRealtime);
        assert_eq!(
            e.url.as_str(),
            "wss://res.openai.azure.com/openai/v1/realtime?model=gpt-realtime"
        );
        assert_eq!(e.dialect, Dialect::OpenAiGa);
        let pv = backends(&[
            ("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com"),
            ("AZURE_OPENAI_DEPLOYMENT", "rt"),
            ("AZURE_OPENAI_API_VERSION", "2025-04-01-preview"),
            ("AZURE_OPENAI_API_KEY", "k"),
        ]);
        let e = pv.endpoint(Backend::GptRealtime);
        assert_eq!(
            e.url.as_str(),
            "wss://res.openai.azure.com/openai/realtime?api-version=2025-04-01-preview&deployment=rt"
        );
        assert_eq!(e.dialect, Dialect::OpenAiPreview);
    }

    #[test]
    fn openai_and_emulated() {
        let b = backends(&[("OPENAI_API_KEY", "sk")]);
        let e = b.endpoint(Backend::GptRealtime);
        assert_eq!(e.url.as_str(), "wss://api.openai.com/v1/realtime?model=gpt-realtime");
        assert!(!e.emulated);
        assert!(b.endpoint(Backend::VoiceLive).emulated);
        assert_eq!(
            b.endpoint(Backend::VoiceLive).url.as_str(),
            "ws://127.0.0.1:4000/voice-live/realtime?api-version=2025-10-01&model=gpt-realtime"
        );
    }
}
