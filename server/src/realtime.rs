//! The realtime speech-to-speech AI: opening an authenticated WebSocket to the
//! backend a call asks for. What differs between backends (URL, auth, dialect,
//! variables, defaults) is declared in [`backend`], one module per service
//! ([`voice_live`], [`azure_openai`], [`openai`]). The events spoken on the socket
//! are in [`protocol`] (one core, a dialect table for Voice Live and OpenAI
//! GA/preview); Microsoft Entra ID tokens come from [`entra`].

pub mod azure_openai;
pub mod backend;
pub mod entra;
pub mod openai;
pub mod voice_live;
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
pub use crate::realtime::backend::{Auth, Endpoint};
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
pub const VOICE_LIVE_SCOPE: &str = voice_live::ENTRA_SCOPE;
/// Entra ID scope of Azure OpenAI (protocols.md §7.1).
pub const AZURE_OPENAI_SCOPE: &str = azure_openai::ENTRA_SCOPE;

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
    pub fn code(&self) -> crate::call::ErrorCode {
        use crate::call::ErrorCode;
        match self {
            Self::Auth(_) | Self::Token(_) => ErrorCode::AiAuthFailed,
            Self::Refused(_) => ErrorCode::AiRefused,
            Self::Connect(_) | Self::Timeout(_) => ErrorCode::AiUnavailable,
        }
    }
}

/// The realtime AIs this server can bridge calls to.
#[derive(Clone)]
pub struct RealtimeBackends {
    /// One per backend, in [`backend::BACKENDS`] order.
    endpoints: Vec<(Backend, Endpoint)>,
    entra: EntraAuth,
}

impl RealtimeBackends {
    /// Endpoints from the configuration; backends without credentials go to
    /// the emulator at `emulator` (its `ws://host:port` base and API key).
    pub fn from_config(config: &Config, emulator: Option<(&Url, &Secret)>, entra: EntraAuth) -> Self {
        let (base, key) = match emulator {
            Some((b, k)) => (b.clone(), k.clone()),
            // Nothing listens there: a backend without credentials and without emulator fails to connect.
            None => (
                Url::parse("ws://127.0.0.1:9").expect("constant URL parses"),
                Secret::new(String::new()),
            ),
        };
        let endpoints = backend::BACKENDS
            .iter()
            .map(|spec| {
                let endpoint = spec
                    .configured_endpoint(config)
                    .unwrap_or_else(|| (spec.emulated)(&base, &key));
                (spec.backend, endpoint)
            })
            .collect();
        Self { endpoints, entra }
    }

    /// The endpoint of a backend.
    pub fn endpoint(&self, backend: Backend) -> &Endpoint {
        // `endpoints` holds one entry per BACKENDS entry, in that order.
        let index = backend::BACKENDS.iter().position(|s| s.backend == backend).unwrap_or(0);
        &self.endpoints[index].1
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
            Auth::ApiKey { header: name, key } => {
                headers.insert(*name, header(key.expose())?);
            }
            Auth::Bearer(key) => {
                headers.insert("authorization", header(&format!("Bearer {}", key.expose()))?);
            }
            Auth::Entra { scope } => {
                let token = self
                    .entra
                    .bearer_token(scope)
                    .await
                    .map_err(|e| RealtimeError::Token(e.to_string()))?;
                headers.insert("authorization", header(&format!("Bearer {token}"))?);
            }
        }
        // The AI services ignore it today; a proxy or gateway in between may not.
        crate::telemetry::inject(headers);
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
        assert!(matches!(e.auth, Auth::ApiKey { .. }));
        let b = backends(&[("AZURE_VOICE_LIVE_ENDPOINT", "https://res.services.ai.azure.com")]);
        assert!(matches!(
            b.endpoint(Backend::VoiceLive).auth,
            Auth::Entra {
                scope: VOICE_LIVE_SCOPE
            }
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
