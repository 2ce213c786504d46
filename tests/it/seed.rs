//! Whole calls on the seed's `.env.example` shape: the file, unchanged, read
//! with python-dotenv's rules (`voice_agent_server::dotenv`), under an
//! environment that wins over it as the process environment does in the
//! binary. The environment points only what must reach this machine at the
//! built-in emulators: the Twilio credentials and REST base (the file has
//! placeholders), the two AI endpoints, and an empty PUBLIC_URL (= this
//! server's own address). Everything else comes from the file: Voice Live at
//! api-version 2025-05-01-preview with model gpt-realtime-1.5, Azure OpenAI
//! deployment gpt-realtime on the preview protocol, both with Microsoft Entra
//! ID (the file has no keys), the seed's unquoted SYSTEM_PROMPT and VOICE.

use std::collections::HashMap;
use std::sync::Arc;

use voice_agent_proto::v1 as pb;
use voice_agent_server::config::Config;
use voice_agent_server::dotenv;
use voice_agent_server::emulator::realtime::RealtimeEmulatorConfig;
use voice_agent_server::realtime::entra::EntraAuth;
use voice_agent_server::realtime::protocol::Dialect;
use voice_agent_tests::*;

use super::LIMIT;

const TOKEN: &str = "seed-entra-token";

/// One Entra token for any scope (the emulator accepts it as the bearer).
#[derive(Debug)]
struct AnyScope;

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for AnyScope {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        Ok(azure_core::credentials::AccessToken::new(
            TOKEN,
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

#[tokio::test]
async fn calls_on_the_seed_env_example_reach_both_backends_with_entra() {
    let twilio = voice_agent_server::emulator::twilio::TwilioEmulator::start(Default::default())
        .await
        .unwrap();
    let ai = voice_agent_server::emulator::realtime::start(RealtimeEmulatorConfig {
        accepted_bearer: Some(TOKEN.into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut ai_url = ai.url_base();
    ai_url.set_scheme("http").unwrap();
    let env: HashMap<&str, String> = [
        ("HOST", "127.0.0.1".to_string()),
        ("PORT", "0".into()),
        ("PUBLIC_URL", String::new()),
        ("DATABASE_URL", "sqlite::memory:".into()),
        ("TWILIO_ACCOUNT_SID", twilio.account_sid().to_string()),
        ("TWILIO_AUTH_TOKEN", twilio.auth_token().to_string()),
        ("TWILIO_API_BASE_URL", twilio.base_url()),
        ("AZURE_OPENAI_ENDPOINT", ai_url.to_string()),
        ("AZURE_VOICE_LIVE_ENDPOINT", ai_url.to_string()),
    ]
    .into_iter()
    .collect();
    let bindings = dotenv::parse(include_str!("../fixtures/seed.env.example")).expect("python-dotenv reads it");
    let from_file: HashMap<String, String> = dotenv::resolve(&bindings, &|k: &str| env.get(k).cloned())
        .into_iter()
        .collect();
    let config = Config::from_lookup(&|k| env.get(k).cloned().or_else(|| from_file.get(k).cloned()))
        .expect("the seed's .env is a valid configuration");
    assert!(
        config
            .system_prompt
            .starts_with("You are a helpful voice assistant. Be concise")
    );
    let options = Options {
        entra: Some(EntraAuth::with_credential(Arc::new(AnyScope))),
        ..Default::default()
    };
    let server = TestServer::with_options(config, options).await;
    assert!(server.emulators.twilio.is_none() && server.emulators.realtime.is_none());
    let mut client = server.client().await;
    let info = client
        .get_server_info(pb::GetServerInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    let offered: Vec<(i32, bool)> = info.backends.iter().map(|b| (b.backend, b.emulated)).collect();
    assert_eq!(
        offered,
        [
            (pb::Backend::VoiceLive as i32, false),
            (pb::Backend::GptRealtime as i32, false)
        ]
    );
    assert!(!info.telephony_emulated);

    // Both backends at once (each conversation plays in real time).
    let call = |backend: pb::Backend| {
        let mut client = client.clone();
        async move {
            let req = pb::PlaceCallRequest {
                backend: backend as i32,
                ..place("+15550199")
            };
            let (_, events) = call_and_watch(&mut client, req, LIMIT).await;
            assert!(errors(&events).is_empty(), "{backend:?}: {:?}", errors(&events));
            assert_eq!(
                statuses(&events).last(),
                Some(&pb::CallStatus::Completed),
                "{backend:?}"
            );
            assert!(
                transcripts(&events).len() >= 4,
                "{backend:?}: {:?}",
                transcripts(&events)
            );
        }
    };
    tokio::join!(call(pb::Backend::VoiceLive), call(pb::Backend::GptRealtime));
    let sessions = ai.sessions();
    let dialect = |d: Dialect| sessions.iter().filter(|s| s.dialect == Some(d)).count();
    assert_eq!(sessions.len(), 2);
    assert_eq!((dialect(Dialect::VoiceLive), dialect(Dialect::OpenAiPreview)), (1, 1));
    let azure_openai = sessions
        .iter()
        .find(|s| s.dialect == Some(Dialect::OpenAiPreview))
        .expect("the Azure OpenAI session");
    let update = azure_openai.session_update.as_ref().expect("session.update");
    let instructions = update["session"]["instructions"].as_str().unwrap_or_default();
    assert!(
        instructions.contains(
            "You are a helpful voice assistant. Be concise and conversational. You are speaking with someone on a phone call."
        ),
        "the seed's SYSTEM_PROMPT: {update}"
    );
    server.stop().await;
    ai.shutdown();
    twilio.shutdown().await;
}
