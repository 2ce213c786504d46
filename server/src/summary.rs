//! The start-up summary: one line per topic saying what this server will do
//! (telephony real or emulated, each backend and how it authenticates, the
//! store, the audio mode, recordings, outcome webhooks, API auth, CORS, where the web UI comes from), so an
//! operator reading the first lines of the log knows without reading the
//! configuration. Pure: it describes the state the server built; `lib.rs`
//! logs the lines. Never a secret: keys and tokens are only said to be set,
//! and endpoint URLs keep only the query parameters that select the protocol.

use url::Url;

use crate::AppState;
use crate::call::Backend;
use crate::config::{AudioMode, DatabaseLocation};
use crate::realtime::backend::{self, Auth, Endpoint};

/// What started beside the configuration (the parts `AppState` does not hold).
pub struct Started<'a> {
    /// The Twilio emulator's REST base, when it answers the calls.
    pub twilio_emulator: Option<&'a str>,
    /// The realtime-AI emulator's base, when it answers the calls.
    pub realtime_emulator: Option<&'a Url>,
    /// True when the embedding application supplied the telephony provider.
    pub injected_telephony: bool,
    /// Where the web UI at `/` comes from, in words.
    pub ui: String,
}

/// One line of the summary: its level is WARN when it says that something is
/// emulated, open or missing, else INFO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// True for the lines an operator should not miss.
    pub warn: bool,
    /// The text.
    pub text: String,
}

fn info(text: String) -> Line {
    Line { warn: false, text }
}

fn warn(text: String) -> Line {
    Line { warn: true, text }
}

/// The summary of a server that is about to serve.
pub fn lines(state: &AppState, started: &Started<'_>) -> Vec<Line> {
    let config = &state.config;
    let mut out = Vec::new();
    out.push(match (&config.twilio, started.twilio_emulator) {
        _ if started.injected_telephony => info("telephony: a provider supplied by the embedding application".into()),
        (_, Some(base)) => warn(format!(
            "telephony: EMULATED by the built-in Twilio emulator at {base} (no TWILIO_* credentials): no real phone is dialled"
        )),
        (Some(tw), None) => info(format!(
            "telephony: Twilio, account {}, caller id {}, REST API {}",
            mask(&tw.account_sid, 6, 4),
            mask(&tw.phone_number, 4, 2),
            tw.api_base_url
        )),
        (None, None) => info("telephony: none".into()),
    });
    for backend in Backend::ALL {
        out.push(backend_line(state, backend, started.realtime_emulator));
    }
    out.push(info(format!(
        "default backend (PlaceCall without one): {}",
        config.effective_default_backend().as_str()
    )));
    out.push(match &config.database {
        DatabaseLocation::File(path) => info(format!("store: SQLite file {}", path.display())),
        DatabaseLocation::Memory => warn("store: SQLite in memory: calls are lost when the server stops".into()),
        // Only the database's name: the URL may hold a password.
        DatabaseLocation::Postgres(url) => {
            let name = url
                .expose()
                .parse::<tokio_postgres::Config>()
                .ok()
                .and_then(|c| c.get_dbname().map(str::to_string))
                .unwrap_or_default();
            info(format!(
                "store: PostgreSQL database {name:?}, shared with the other replicas (docs/deploy.md)"
            ))
        }
    });
    out.push(info(match config.audio_mode {
        AudioMode::Transcode => "audio: transcode (G.711 mu-law 8 kHz <-> PCM16 24 kHz in the bridge)".into(),
        AudioMode::Passthrough => "audio: passthrough (G.711 mu-law end to end)".into(),
    }));
    let retention = if config.recording_retention.is_zero() {
        "kept for ever".to_string()
    } else {
        format!("deleted {} s after their call", config.recording_retention.as_secs())
    };
    out.push(info(format!(
        "recordings: {} by default (PlaceCall `record`), in {}, {retention}",
        if config.record_calls { "on" } else { "off" },
        config.recordings_dir.display()
    )));
    let retry = &config.webhook_retry;
    out.push(info(match (&config.webhook_url, &config.webhook_secret) {
        (Some(url), _) => format!(
            "outcome webhooks: to {} and each call's webhook_url, signed; {} attempts, retries from {} ms up to {} s apart",
            crate::webhook::shown_url(url),
            retry.max_attempts,
            retry.base.as_millis(),
            retry.cap.as_secs()
        ),
        (None, Some(_)) => "outcome webhooks: to each call's webhook_url (no WEBHOOK_URL), signed".into(),
        (None, None) => "outcome webhooks: off (no WEBHOOK_SECRET to sign them with)".into(),
    }));
    out.push(match &config.api_token {
        Some(_) => info("API auth: on: every VoiceAgentService RPC, /metrics and /recordings need API_TOKEN in their authorization header".into()),
        None => warn(format!(
            "API auth: OFF (no API_TOKEN): whoever reaches {} can place calls; browsers are held to this server's Host and Origin",
            config.bind
        )),
    });
    out.push(info(if config.cors_allowed_origins.is_empty() {
        "CORS: off (no page of another origin may call the API)".into()
    } else {
        format!(
            "CORS: pages of {} may call the API",
            config.cors_allowed_origins.join(", ")
        )
    }));
    out.push(info(format!(
        "public URL (Twilio callbacks, media stream, signatures): {}",
        state.public_url
    )));
    out.push(info(format!("web UI: {}", started.ui)));
    out.extend(config.notes.iter().map(|n| info(format!("configuration: {n}"))));
    out
}

fn backend_line(state: &AppState, backend: Backend, emulator: Option<&Url>) -> Line {
    let config = &state.config;
    let spec = backend::spec(backend);
    let name = backend.as_str();
    if let Some(why) = config.backend_unavailable(backend) {
        return info(format!("backend {name}: not offered: {why}"));
    }
    if state.ai_emulated(backend) {
        let at = emulator.map(|u| format!(" at {u}")).unwrap_or_default();
        return warn(format!(
            "backend {name}: EMULATED by the built-in realtime-AI emulator{at} (no AI credentials)"
        ));
    }
    let provider = spec
        .providers
        .iter()
        .find(|p| (p.endpoint)(config).is_some())
        .map_or(spec.display_name, |p| p.name);
    let endpoint = state.realtime.endpoint(backend);
    info(format!(
        "backend {name}: {provider} at {}, {:?} protocol, auth: {}",
        public_form(endpoint),
        endpoint.dialect,
        auth(&endpoint.auth)
    ))
}

fn auth(auth: &Auth) -> String {
    match auth {
        Auth::ApiKey { header, .. } => format!("key (in the {header} header)"),
        Auth::Bearer(_) => "key (bearer)".into(),
        Auth::Entra { scope } => format!("Microsoft Entra ID (no key; token for {scope})"),
    }
}

/// The endpoint URL with only the query parameters that select the protocol
/// (a key could have been put into the query of a configured URL).
fn public_form(endpoint: &Endpoint) -> String {
    let mut url = endpoint.url.clone();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| matches!(k.as_ref(), "api-version" | "model" | "deployment"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.set_query(None);
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if !kept.is_empty() {
        url.query_pairs_mut().extend_pairs(kept);
    }
    url.to_string()
}

/// `head` characters, `…`, `tail` characters (the whole value when short).
fn mask(value: &str, head: usize, tail: usize) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= head + tail {
        return "…".into();
    }
    let head: String = chars[..head].iter().collect();
    let tail: String = chars[chars.len() - tail..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_only_the_ends() {
        assert_eq!(mask("AC0123456789abcdef0123456789abcdef", 6, 4), "AC0123…cdef");
        assert_eq!(mask("+14155551212", 4, 2), "+141…12");
        assert_eq!(mask("+1", 4, 2), "…");
    }

    #[test]
    fn endpoint_urls_lose_credentials_and_other_query_parameters() {
        let endpoint = Endpoint {
            url: Url::parse("wss://u:p@x.example/openai/realtime?api-version=v&api-key=SECRET&deployment=d").unwrap(),
            dialect: crate::realtime::protocol::Dialect::OpenAiPreview,
            emulated: false,
            auth: Auth::Entra { scope: "s" },
        };
        let shown = public_form(&endpoint);
        assert_eq!(shown, "wss://x.example/openai/realtime?api-version=v&deployment=d");
    }
}
