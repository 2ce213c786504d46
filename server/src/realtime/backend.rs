//! The backend seam: everything that differs between realtime AIs, in one table.
//!
//! A [`Backend`] (what a PlaceCall asks for) is served by one of its
//! [`Provider`]s (the services that speak it): Voice Live by Azure Voice Live;
//! gpt-realtime by Azure OpenAI, else OpenAI. A provider module declares its
//! variables and their defaults, reads them into the [`Config`], and builds the
//! endpoint: URL, auth (key header, bearer key or Entra ID scope) and dialect.
//!
//! Adding a service: a module beside this one with a `PROVIDER`, an entry in a
//! backend's `providers` below, and a field for its settings in [`Config`]. A new
//! backend also needs its [`Backend`] value and an entry in [`BACKENDS`].

use url::Url;

use crate::call::Backend;
use crate::config::{Config, ConfigError, Env, Secret, Variable};
use crate::realtime::protocol::Dialect;
use crate::realtime::{azure_openai, openai, voice_live};

/// How the upgrade request is authenticated.
#[derive(Clone, Debug)]
pub enum Auth {
    /// A key in a header of its own (Azure: `api-key`).
    ApiKey {
        /// Header name.
        header: &'static str,
        /// The key.
        key: Secret,
    },
    /// `Authorization: Bearer <key>` (OpenAI).
    Bearer(Secret),
    /// `Authorization: Bearer <Microsoft Entra ID token for scope>`.
    Entra {
        /// The token's scope.
        scope: &'static str,
    },
}

impl Auth {
    /// The request header that carries the credential.
    pub fn header(&self) -> &'static str {
        match self {
            Auth::ApiKey { header, .. } => header,
            Auth::Bearer(_) | Auth::Entra { .. } => "authorization",
        }
    }
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
    /// Credential sent with the upgrade.
    pub auth: Auth,
}

/// A service that can serve a backend.
pub struct Provider {
    /// Display name (logs).
    pub name: &'static str,
    /// Its variables as `(name, meaning, default)`, in `--help` order.
    pub variables: &'static [Variable],
    /// What must be set to use it ("set …" in "not configured" messages).
    pub requires: &'static str,
    /// Reads its variables into `config`; leaves its settings `None` when not configured.
    pub configure: fn(&Env<'_>, &mut Config) -> Result<(), ConfigError>,
    /// Its endpoint, when `config` configures it.
    pub endpoint: fn(&Config) -> Option<Endpoint>,
}

/// A backend a call can ask for.
pub struct BackendSpec {
    /// The enum value.
    pub backend: Backend,
    /// Display name (logs).
    pub display_name: &'static str,
    /// In precedence order: the first configured one serves the backend.
    pub providers: &'static [&'static Provider],
    /// The variable holding the backend's default voice.
    pub voice: Variable,
    /// The default voice as configured.
    pub default_voice: fn(&Config) -> &str,
    /// Its endpoint on the built-in emulator (`ws://host:port` base and the emulator's key).
    pub emulated: fn(&Url, &Secret) -> Endpoint,
}

/// Every backend, in [`Backend::ALL`] order.
pub const BACKENDS: &[BackendSpec] = &[
    BackendSpec {
        backend: Backend::VoiceLive,
        display_name: "Azure Voice Live",
        providers: &[&voice_live::PROVIDER],
        voice: voice_live::VOICE,
        default_voice: |c| &c.azure_tts_voice,
        emulated: voice_live::emulated,
    },
    BackendSpec {
        backend: Backend::GptRealtime,
        display_name: "gpt-realtime",
        // Azure OpenAI wins when both are configured.
        providers: &[&azure_openai::PROVIDER, &openai::PROVIDER],
        voice: openai::VOICE,
        default_voice: |c| &c.voice,
        emulated: openai::emulated,
    },
];

/// The spec of `backend`.
pub fn spec(backend: Backend) -> &'static BackendSpec {
    BACKENDS
        .iter()
        .find(|s| s.backend == backend)
        // A unit test checks that BACKENDS covers Backend::ALL.
        .unwrap_or(&BACKENDS[0])
}

impl BackendSpec {
    /// The endpoint of the first configured provider, if any.
    pub fn configured_endpoint(&self, config: &Config) -> Option<Endpoint> {
        self.providers.iter().find_map(|p| (p.endpoint)(config))
    }

    /// "backend … is not configured (set …)".
    pub fn not_configured(&self) -> String {
        let set: Vec<&str> = self.providers.iter().map(|p| p.requires).collect();
        format!(
            "backend {} is not configured (set {})",
            self.backend.as_str(),
            set.join(", or ")
        )
    }
}

/// Reads every provider's variables into `config`.
pub(crate) fn configure_all(env: &Env<'_>, config: &mut Config) -> Result<(), ConfigError> {
    for spec in BACKENDS {
        for provider in spec.providers {
            (provider.configure)(env, config)?;
        }
    }
    Ok(())
}

/// Number of variables the backends declare (providers' and voices).
pub(crate) const fn variable_count() -> usize {
    let mut n = 0;
    let mut b = 0;
    while b < BACKENDS.len() {
        let mut p = 0;
        while p < BACKENDS[b].providers.len() {
            n += BACKENDS[b].providers[p].variables.len();
            p += 1;
        }
        n += 1;
        b += 1;
    }
    n
}

/// `head`, then each backend's provider variables and voice, then `tail`.
pub(crate) const fn variables<const N: usize>(head: &[Variable], tail: &[Variable]) -> [Variable; N] {
    let mut out: [Variable; N] = [("", "", ""); N];
    let mut i = 0;
    let mut k = 0;
    while k < head.len() {
        out[i] = head[k];
        i += 1;
        k += 1;
    }
    let mut b = 0;
    while b < BACKENDS.len() {
        let mut p = 0;
        while p < BACKENDS[b].providers.len() {
            let vars = BACKENDS[b].providers[p].variables;
            let mut v = 0;
            while v < vars.len() {
                out[i] = vars[v];
                i += 1;
                v += 1;
            }
            p += 1;
        }
        out[i] = BACKENDS[b].voice;
        i += 1;
        b += 1;
    }
    k = 0;
    while k < tail.len() {
        out[i] = tail[k];
        i += 1;
        k += 1;
    }
    assert!(i == N, "N must be head + variable_count() + tail");
    out
}

/// Turns an http(s) endpoint into ws(s), without query.
pub(crate) fn websocket_base(endpoint: &Url) -> Url {
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

/// `base` + `path` (after base's own path) with exactly `query`.
pub(crate) fn join(base: &Url, path: &str, query: &[(&str, &str)]) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{path}"));
    url.query_pairs_mut().clear().extend_pairs(query);
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Config {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(&move |k| map.get(k).cloned()).unwrap()
    }

    fn endpoint(backend: Backend, vars: &[(&str, &str)]) -> Endpoint {
        spec(backend).configured_endpoint(&config(vars)).expect("configured")
    }

    #[test]
    fn backends_follow_backend_all() {
        let order: Vec<Backend> = BACKENDS.iter().map(|s| s.backend).collect();
        assert_eq!(order, Backend::ALL);
        for b in Backend::ALL {
            assert_eq!(spec(b).backend, b);
        }
    }

    #[test]
    fn voice_live_key_entra_and_custom_version() {
        let e = endpoint(
            Backend::VoiceLive,
            &[
                (
                    "AZURE_VOICE_LIVE_ENDPOINT",
                    "https://res.cognitiveservices.azure.com/base/",
                ),
                ("AZURE_VOICE_LIVE_API_VERSION", "2026-01-01-preview"),
                ("VOICE_LIVE_MODEL", "gpt-4o"),
                ("AZURE_VOICE_LIVE_API_KEY", "key"),
            ],
        );
        assert_eq!(
            e.url.as_str(),
            "wss://res.cognitiveservices.azure.com/base/voice-live/realtime?api-version=2026-01-01-preview&model=gpt-4o"
        );
        assert_eq!(
            (e.dialect, e.auth.header(), e.emulated),
            (Dialect::VoiceLive, "api-key", false)
        );
        let e = endpoint(
            Backend::VoiceLive,
            &[("AZURE_VOICE_LIVE_ENDPOINT", "http://127.0.0.1:9000")],
        );
        assert_eq!(
            e.url.as_str(),
            "ws://127.0.0.1:9000/voice-live/realtime?api-version=2025-10-01&model=gpt-realtime"
        );
        assert!(matches!(
            e.auth,
            Auth::Entra {
                scope: "https://ai.azure.com/.default"
            }
        ));
        assert_eq!(e.auth.header(), "authorization");
    }

    #[test]
    fn azure_openai_wins_over_openai_and_uses_its_scope() {
        let e = endpoint(
            Backend::GptRealtime,
            &[
                ("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com"),
                ("AZURE_OPENAI_DEPLOYMENT", "rt"),
                ("OPENAI_API_KEY", "sk"),
            ],
        );
        assert_eq!(e.url.as_str(), "wss://res.openai.azure.com/openai/v1/realtime?model=rt");
        assert_eq!(e.dialect, Dialect::OpenAiGa);
        assert!(matches!(
            e.auth,
            Auth::Entra {
                scope: "https://cognitiveservices.azure.com/.default"
            }
        ));
        let e = endpoint(
            Backend::GptRealtime,
            &[
                ("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com"),
                ("AZURE_OPENAI_DEPLOYMENT", "rt"),
                ("AZURE_OPENAI_API_KEY", "k"),
            ],
        );
        assert!(matches!(e.auth, Auth::ApiKey { header: "api-key", .. }));
    }

    /// The seed's config.py defaulted the deployment and the api-version: a
    /// `.env` with only the endpoint gets both, and the note says which protocol.
    #[test]
    fn azure_openai_with_only_an_endpoint_takes_the_seed_defaults() {
        let c = config(&[("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com")]);
        let e = spec(Backend::GptRealtime).configured_endpoint(&c).expect("configured");
        assert_eq!(
            e.url.as_str(),
            "wss://res.openai.azure.com/openai/realtime?api-version=2025-04-01-preview&deployment=gpt-4o-realtime-preview"
        );
        assert_eq!(e.dialect, Dialect::OpenAiPreview);
        assert_eq!(c.notes.len(), 1, "{:?}", c.notes);
        assert!(
            c.notes[0].contains("gpt-4o-realtime-preview") && c.notes[0].contains("preview realtime protocol"),
            "{}",
            c.notes[0]
        );
        // A deployment without an api-version is the GA protocol, as before, and no note.
        let c = config(&[
            ("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com"),
            ("AZURE_OPENAI_DEPLOYMENT", "rt"),
        ]);
        assert!(c.notes.is_empty());
        // An api-version alone keeps the version and defaults the deployment.
        let e = endpoint(
            Backend::GptRealtime,
            &[
                ("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com"),
                ("AZURE_OPENAI_API_VERSION", "2024-10-01-preview"),
            ],
        );
        assert!(
            e.url
                .as_str()
                .ends_with("?api-version=2024-10-01-preview&deployment=gpt-4o-realtime-preview")
        );
    }

    #[test]
    fn openai_bearer_and_custom_url() {
        let e = endpoint(
            Backend::GptRealtime,
            &[
                ("OPENAI_API_KEY", "sk"),
                ("OPENAI_REALTIME_URL", "ws://127.0.0.1:7000/v1/realtime?model=old"),
                ("OPENAI_REALTIME_MODEL", "gpt-realtime-mini"),
            ],
        );
        assert_eq!(
            e.url.as_str(),
            "ws://127.0.0.1:7000/v1/realtime?model=gpt-realtime-mini"
        );
        assert_eq!(e.dialect, Dialect::OpenAiGa);
        assert!(matches!(&e.auth, Auth::Bearer(k) if k.expose() == "sk"));
    }

    #[test]
    fn emulated_endpoints_use_the_default_versions_and_models() {
        let base = Url::parse("ws://127.0.0.1:4000").unwrap();
        let key = Secret::new("emu");
        let vl = (spec(Backend::VoiceLive).emulated)(&base, &key);
        assert_eq!(
            vl.url.as_str(),
            format!(
                "ws://127.0.0.1:4000/voice-live/realtime?api-version={}&model={}",
                voice_live::API_VERSION.2,
                voice_live::MODEL.2
            )
        );
        assert!(vl.emulated && matches!(vl.auth, Auth::ApiKey { .. }));
        let gr = (spec(Backend::GptRealtime).emulated)(&base, &key);
        assert_eq!(gr.url.as_str(), "ws://127.0.0.1:4000/v1/realtime?model=gpt-realtime");
        assert_eq!((gr.dialect, gr.auth.header()), (Dialect::OpenAiGa, "authorization"));
    }

    #[test]
    fn unconfigured_messages_name_what_to_set() {
        assert_eq!(
            spec(Backend::VoiceLive).not_configured(),
            "backend voice-live is not configured (set AZURE_VOICE_LIVE_ENDPOINT)"
        );
        assert_eq!(
            spec(Backend::GptRealtime).not_configured(),
            "backend gpt-realtime is not configured (set AZURE_OPENAI_ENDPOINT, or OPENAI_API_KEY)"
        );
    }

    #[test]
    fn default_voices_come_from_the_config() {
        let c = config(&[("VOICE", "verse")]);
        assert_eq!((spec(Backend::VoiceLive).default_voice)(&c), "en-US-AriaNeural");
        assert_eq!((spec(Backend::GptRealtime).default_voice)(&c), "verse");
    }
}
