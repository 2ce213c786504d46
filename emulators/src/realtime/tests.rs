//! The emulator over real sockets, driven by a tokio-tungstenite client as
//! the bridge would; what it sends is checked against the vendors' specs.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::session::{GA_SESSION_FIELDS, PREVIEW_SESSION_FIELDS, VOICE_LIVE_SESSION_FIELDS};
use super::*;
use voice_agent_audio::InboundTranscoder;
use voice_agent_wire::realtime::{self as protocol, AudioFormat, ServerEvent, SessionConfig};
use voice_agent_wire::specs::{GA, PREVIEW, VOICE_LIVE, spec_path, vl_enum};

/// Generous: only a hung emulator takes this long.
const WAIT: Duration = Duration::from_secs(20);

fn fast() -> RealtimeEmulatorConfig {
    RealtimeEmulatorConfig {
        speed: 50.0,
        ..Default::default()
    }
}

fn path(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::VoiceLive => "/voice-live/realtime?api-version=2025-10-01&model=gpt-realtime",
        Dialect::OpenAiGa => "/v1/realtime?model=gpt-realtime",
        Dialect::OpenAiPreview => "/openai/realtime?api-version=2025-04-01-preview&deployment=rt",
    }
}

enum Auth<'a> {
    ApiKey(&'a str),
    Bearer(&'a str),
    None,
}

async fn upgrade(
    emu: &RealtimeEmulatorHandle,
    path_and_query: &str,
    auth: Auth<'_>,
) -> Result<Client, tungstenite::Error> {
    let mut request = format!("{}{}", emu.url_base().as_str().trim_end_matches('/'), path_and_query)
        .into_client_request()
        .unwrap();
    match auth {
        Auth::ApiKey(k) => {
            request.headers_mut().insert("api-key", k.parse().unwrap());
        }
        Auth::Bearer(t) => {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Auth::None => {}
    }
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(Client { ws, seen: Vec::new() })
}

async fn connect(emu: &RealtimeEmulatorHandle, dialect: Dialect) -> Client {
    let auth = match dialect {
        Dialect::OpenAiGa => Auth::Bearer(emu.api_key()),
        _ => Auth::ApiKey(emu.api_key()),
    };
    let mut c = upgrade(emu, path(dialect), auth).await.unwrap();
    let first = c.next().await;
    assert_eq!(first["type"], "session.created", "session.created comes first");
    c
}

fn status_of(e: tungstenite::Error) -> u16 {
    match e {
        tungstenite::Error::Http(resp) => resp.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// A test client: every server event it reads is kept in `seen`.
struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    seen: Vec<Value>,
}

impl Client {
    async fn send(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    async fn next(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the emulator answers")
                .expect("the socket is open")
                .expect("no socket error");
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert!(v["event_id"].is_string(), "every server event has an event_id: {v}");
                self.seen.push(v.clone());
                return v;
            }
        }
    }

    /// Reads until an event of type `ty`.
    async fn until(&mut self, ty: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["type"] == ty {
                return v;
            }
        }
    }

    async fn expect_error(&mut self, code: &str) -> Value {
        let e = self.until("error").await;
        assert_eq!(e["error"]["code"], code, "{e}");
        assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
        e
    }

    /// Appends audio as 20 ms frames, as the bridge forwards Twilio's.
    async fn append(&mut self, audio: &[u8], frame: usize) {
        for chunk in audio.chunks(frame) {
            self.send(&protocol::input_audio_append(&B64.encode(chunk))).await;
        }
    }

    /// Reads one whole response: (its id, audio bytes, transcript, response.done).
    async fn response(&mut self) -> (String, Vec<u8>, String, Value) {
        let created = self.until("response.created").await;
        let id = created["response"]["id"].as_str().unwrap().to_string();
        let mut audio = Vec::new();
        loop {
            let v = self.next().await;
            let text = v.to_string();
            match protocol::parse_server_event(&text).unwrap() {
                ServerEvent::AudioDelta { response_id, delta, .. } => {
                    assert_eq!(response_id, id);
                    audio.extend(B64.decode(delta).unwrap());
                }
                ServerEvent::ResponseDone { response_id, .. } => {
                    assert_eq!(response_id, id);
                    let transcript = self
                        .seen
                        .iter()
                        .rev()
                        .find_map(|e| match protocol::parse_server_event(&e.to_string()) {
                            Ok(ServerEvent::TranscriptDone { transcript, .. }) => Some(transcript),
                            _ => None,
                        })
                        .unwrap_or_default();
                    return (id, audio, transcript, v);
                }
                _ => {}
            }
        }
    }
}

/// Speech for the VAD (any clip will do: it only measures energy) followed
/// by a second of silence, in the session's input format, and its frame size.
fn speech_then_silence(audio: AudioFormat) -> (Vec<u8>, usize) {
    let mut ulaw = AGENT_CLIPS[2].to_vec();
    ulaw.extend(std::iter::repeat_n(0xFF, 8000)); // μ-law 0xFF is silence
    match audio {
        AudioFormat::G711Ulaw => (ulaw, 160),
        AudioFormat::Pcm16_24k => {
            let mut pcm = Vec::new();
            InboundTranscoder::new().process(&ulaw, &mut pcm);
            (pcm, 960)
        }
    }
}

fn clip_in(format: AudioFormat, line: usize) -> Vec<u8> {
    match format {
        AudioFormat::G711Ulaw => AGENT_CLIPS[line].to_vec(),
        AudioFormat::Pcm16_24k => {
            let mut pcm = Vec::new();
            InboundTranscoder::new().process(AGENT_CLIPS[line], &mut pcm);
            pcm
        }
    }
}

/// Every event the emulator sent is a server event of the dialect, and (for
/// OpenAI) valid against the spec's schema; Voice Live events carry only
/// wire fields of the SDK's model for that event type.
fn assert_events_match_the_spec(dialect: Dialect, events: &[Value]) {
    match dialect {
        Dialect::OpenAiGa | Dialect::OpenAiPreview => {
            let doc: &Value = if dialect == Dialect::OpenAiGa { &GA } else { &PREVIEW };
            // The union's branch for each event type, so errors name the field.
            let mut validators = std::collections::HashMap::new();
            for branch in doc["components"]["schemas"]["RealtimeServerEvent"]["anyOf"]
                .as_array()
                .unwrap()
            {
                let r = branch["$ref"].as_str().unwrap();
                let name = r.rsplit('/').next().unwrap();
                let ty = doc["components"]["schemas"][name]["properties"]["type"]["enum"][0]
                    .as_str()
                    .unwrap();
                let root = json!({"$ref": r, "components": doc["components"]});
                validators.insert(ty.to_string(), (name.to_string(), root));
            }
            let mut compiled = std::collections::HashMap::new();
            let mut failures: Vec<(String, String)> = Vec::new();
            for e in events {
                let ty = e["type"].as_str().unwrap();
                let (name, root) = validators
                    .get(ty)
                    .unwrap_or_else(|| panic!("{ty} is not a {dialect:?} server event"));
                let validator = compiled
                    .entry(ty.to_string())
                    .or_insert_with(|| jsonschema::validator_for(root).unwrap());
                let errors: Vec<String> = validator
                    .iter_errors(e)
                    .filter(|x| !schema_defect(dialect, &x.instance_path.to_string(), &x.instance))
                    .map(|x| format!("{x} at {}", x.instance_path))
                    .collect();
                if !errors.is_empty() && failures.iter().all(|(n, _)| n != name) {
                    failures.push((name.clone(), format!("{e}: {errors:?}")));
                }
            }
            assert!(failures.is_empty(), "{dialect:?} spec rejects:\n{failures:#?}");
        }
        Dialect::VoiceLive => {
            let names = vl_enum("ServerEventType");
            let models = VOICE_LIVE["models"].as_object().unwrap();
            for e in events {
                let ty = e["type"].as_str().unwrap();
                assert!(names.iter().any(|n| n == ty), "{ty} is not a Voice Live server event");
                let (model, m) = models
                    .iter()
                    .find(|(name, m)| name.starts_with("ServerEvent") && m["discriminator_value"] == ty)
                    .unwrap_or_else(|| panic!("no Voice Live model for {ty}"));
                for k in e.as_object().unwrap().keys() {
                    assert!(m["fields"].get(k).is_some(), "{k} is not a field of {model}: {e}");
                }
            }
        }
    }
}

/// Where the OpenAI schemas contradict their own examples (and the services),
/// the examples win: `status_details: null` (both specs' `response.created` /
/// `response.done` examples), and in the preview spec `in_progress` statuses,
/// a `null` first `previous_item_id` and assistant content type `audio`,
/// which its schemas omit.
fn schema_defect(dialect: Dialect, path: &str, value: &Value) -> bool {
    if path == "/response/status_details" && value.is_null() {
        return true;
    }
    dialect == Dialect::OpenAiPreview
        && match path {
            "/response/status" | "/item/status" => value == "in_progress",
            "/previous_item_id" => value.is_null(),
            p if p.ends_with("/content/0/type") => value == "audio",
            _ => false,
        }
}

async fn end_to_end(dialect: Dialect, audio: AudioFormat) {
    let emu = start(fast()).await.unwrap();
    let mut c = connect(&emu, dialect).await;
    let config = SessionConfig::new("You are a test agent.", "en-US-AriaNeural", audio);
    let mut config = config;
    if dialect != Dialect::VoiceLive {
        config.voice = protocol::Voice::parse("alloy");
    }
    c.send(&protocol::session_update(dialect, &config)).await;
    let updated = c.until("session.updated").await;
    assert_eq!(updated["session"]["instructions"], "You are a test agent.");
    match (dialect, audio) {
        (Dialect::OpenAiGa, AudioFormat::G711Ulaw) => {
            assert_eq!(updated["session"]["audio"]["output"]["format"]["type"], "audio/pcmu")
        }
        (Dialect::OpenAiGa, AudioFormat::Pcm16_24k) => {
            assert_eq!(updated["session"]["audio"]["input"]["format"]["rate"], 24000)
        }
        (_, AudioFormat::G711Ulaw) => assert_eq!(updated["session"]["output_audio_format"], "g711_ulaw"),
        (_, AudioFormat::Pcm16_24k) => assert_eq!(updated["session"]["input_audio_format"], "pcm16"),
    }

    // The agent speaks first.
    c.send(&protocol::response_create(None)).await;
    let (_, greeting, transcript, done) = c.response().await;
    assert_eq!(transcript, AGENT_LINES[0]);
    assert_eq!(done["response"]["status"], "completed");
    assert_eq!(
        greeting,
        clip_in(audio, 0),
        "the greeting clip, in the session's format"
    );

    // The callee answers.
    let (speech, frame) = speech_then_silence(audio);
    c.append(&speech, frame).await;
    let started = c.until("input_audio_buffer.speech_started").await;
    let stopped = c.until("input_audio_buffer.speech_stopped").await;
    let item = started["item_id"].as_str().unwrap().to_string();
    assert_eq!(stopped["item_id"], item.as_str());
    let start_ms = started["audio_start_ms"].as_u64().unwrap();
    let end_ms = stopped["audio_end_ms"].as_u64().unwrap();
    let speech_ms = (AGENT_CLIPS[2].len() / 8) as u64;
    assert!(
        start_ms < 400,
        "speech starts at the beginning (with prefix padding): {start_ms}"
    );
    assert!(
        end_ms + 300 > speech_ms && end_ms <= speech_ms + 10,
        "speech ends with the clip ({speech_ms} ms): {end_ms}"
    );
    let committed = c.until("input_audio_buffer.committed").await;
    assert_eq!(committed["item_id"], item.as_str());
    let transcription = c.until("conversation.item.input_audio_transcription.completed").await;
    assert_eq!(transcription["item_id"], item.as_str());
    assert_eq!(transcription["transcript"], DEFAULT_SCRIPT[0]);
    let (_, reply, transcript, _) = c.response().await;
    assert_eq!(transcript, AGENT_LINES[1]);
    assert_eq!(reply, clip_in(audio, 1));

    assert_events_match_the_spec(dialect, &c.seen);
    let delta = protocol::server_names(dialect).audio_delta;
    assert!(c.seen.iter().any(|e| e["type"] == delta), "{delta} in {dialect:?}");
    let stamps = c
        .seen
        .iter()
        .filter(|e| e["type"] == "response.audio_timestamp.delta")
        .count();
    if dialect == Dialect::VoiceLive {
        let words = AGENT_LINES[0].split(' ').count() + AGENT_LINES[1].split(' ').count();
        assert_eq!(stamps, words, "one word timestamp per word");
    } else {
        assert_eq!(stamps, 0);
    }
    let report = &emu.sessions()[0];
    assert_eq!(report.dialect, Some(dialect));
    assert!(report.session_update.is_some());
    assert_eq!(report.appends, speech.len().div_ceil(frame));
    assert_eq!(report.utterances, 1);
    assert_eq!(report.responses, 2);
    assert!(report.errors_sent.is_empty(), "{:?}", report.errors_sent);
    emu.shutdown();
}

#[tokio::test]
async fn voice_live_end_to_end_mulaw() {
    end_to_end(Dialect::VoiceLive, AudioFormat::G711Ulaw).await;
}

#[tokio::test]
async fn voice_live_end_to_end_pcm() {
    end_to_end(Dialect::VoiceLive, AudioFormat::Pcm16_24k).await;
}

#[tokio::test]
async fn openai_ga_end_to_end_pcm() {
    end_to_end(Dialect::OpenAiGa, AudioFormat::Pcm16_24k).await;
}

#[tokio::test]
async fn openai_ga_end_to_end_mulaw() {
    end_to_end(Dialect::OpenAiGa, AudioFormat::G711Ulaw).await;
}

#[tokio::test]
async fn openai_preview_end_to_end_pcm() {
    end_to_end(Dialect::OpenAiPreview, AudioFormat::Pcm16_24k).await;
}

#[tokio::test]
async fn openai_preview_end_to_end_mulaw() {
    end_to_end(Dialect::OpenAiPreview, AudioFormat::G711Ulaw).await;
}

#[tokio::test]
async fn auth_is_checked_on_the_upgrade() {
    let emu = start(RealtimeEmulatorConfig {
        accepted_bearer: Some("entra-token".into()),
        ..fast()
    })
    .await
    .unwrap();
    let key = emu.api_key().to_string();
    for d in [Dialect::VoiceLive, Dialect::OpenAiGa, Dialect::OpenAiPreview] {
        let no_key = upgrade(&emu, path(d), Auth::None).await.err().unwrap();
        assert_eq!(status_of(no_key), 401, "{d:?} without credentials");
        let wrong = upgrade(&emu, path(d), Auth::ApiKey("wrong")).await.err().unwrap();
        assert_eq!(status_of(wrong), 401, "{d:?} with a wrong key");
        assert!(upgrade(&emu, path(d), Auth::ApiKey(&key)).await.is_ok());
        assert!(upgrade(&emu, path(d), Auth::Bearer(&key)).await.is_ok());
        assert!(upgrade(&emu, path(d), Auth::Bearer("entra-token")).await.is_ok());
    }
    // Azure GA path, and Voice Live's key in the query (§6.1).
    assert!(
        upgrade(&emu, "/openai/v1/realtime?model=gpt-realtime", Auth::ApiKey(&key))
            .await
            .is_ok()
    );
    let query = format!("{}&api-key={key}", path(Dialect::VoiceLive));
    assert!(upgrade(&emu, &query, Auth::None).await.is_ok());
    let unknown = upgrade(&emu, "/realtime?model=x", Auth::ApiKey(&key))
        .await
        .err()
        .unwrap();
    assert_eq!(status_of(unknown), 404);
    // A preview path needs a preview api-version.
    let ga_version = upgrade(
        &emu,
        "/openai/realtime?api-version=2025-08-28&deployment=rt",
        Auth::ApiKey(&key),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(status_of(ga_version), 404);
    emu.shutdown();

    let refusing = start(RealtimeEmulatorConfig {
        reject_auth: true,
        ..fast()
    })
    .await
    .unwrap();
    let e = upgrade(&refusing, path(Dialect::OpenAiGa), Auth::Bearer(refusing.api_key()))
        .await
        .err()
        .unwrap();
    assert_eq!(status_of(e), 401);
    assert!(refusing.sessions().is_empty());
    refusing.shutdown();
}

#[tokio::test]
async fn bad_client_events_get_errors_and_the_session_goes_on() {
    let emu = start(fast()).await.unwrap();
    let mut c = connect(&emu, Dialect::OpenAiGa).await;
    c.send("{not json").await;
    c.expect_error("invalid_json").await;
    c.send(r#"{"event_id":"ev_1","audio":"AAAA"}"#).await;
    let e = c.expect_error("invalid_event").await;
    assert_eq!(e["error"]["event_id"], "ev_1", "the client's event_id is echoed");
    c.send(r#"{"type":"response.explode","event_id":"ev_2"}"#).await;
    let e = c.expect_error("invalid_value").await;
    assert_eq!(e["error"]["param"], "type");
    assert_eq!(e["error"]["event_id"], "ev_2");
    c.send(r#"{"type":"input_audio_buffer.append"}"#).await;
    let e = c.expect_error("missing_required_parameter").await;
    assert_eq!(e["error"]["param"], "audio");
    c.send(r#"{"type":"input_audio_buffer.append","audio":"***"}"#).await;
    c.expect_error("invalid_value").await;
    c.send(r#"{"type":"conversation.item.truncate","item_id":"x","audio_end_ms":5}"#)
        .await;
    let e = c.expect_error("missing_required_parameter").await;
    assert_eq!(e["error"]["param"], "content_index");
    c.send(r#"{"type":"conversation.item.create","item":{"type":"function_call_output","call_id":"c"}}"#)
        .await;
    let e = c.expect_error("missing_required_parameter").await;
    assert_eq!(e["error"]["param"], "item.output");
    // GA session rules (§7.3): `type` required, preview fields unknown, no Azure voices.
    c.send(r#"{"type":"session.update","session":{"instructions":"x"}}"#)
        .await;
    let e = c.expect_error("missing_required_parameter").await;
    assert_eq!(e["error"]["param"], "session.type");
    c.send(r#"{"type":"session.update","session":{"type":"realtime","input_audio_format":"pcm16"}}"#)
        .await;
    let e = c.expect_error("unknown_parameter").await;
    assert_eq!(e["error"]["param"], "session.input_audio_format");
    let azure_voice = protocol::session_update(
        Dialect::OpenAiGa,
        &SessionConfig::new("x", "en-US-AriaNeural", AudioFormat::G711Ulaw),
    );
    c.send(&azure_voice).await;
    let e = c.expect_error("invalid_value").await;
    assert_eq!(e["error"]["param"], "session.audio.output.voice");
    c.send(r#"{"type":"session.update","session":{"type":"realtime","audio":{"input":{"format":{"type":"audio/pcm","rate":16000}}}}}"#)
        .await;
    c.expect_error("invalid_value").await;
    c.send(r#"{"type":"output_audio_buffer.clear"}"#).await;
    c.expect_error("invalid_value").await;
    // A refused update changed nothing; the session still works.
    c.send(&protocol::response_create(None)).await;
    let (_, audio, transcript, _) = c.response().await;
    assert_eq!(transcript, AGENT_LINES[0]);
    assert_eq!(
        audio,
        clip_in(AudioFormat::Pcm16_24k, 0),
        "still the default PCM format"
    );
    let report = &emu.sessions()[0];
    assert_eq!(report.errors_sent.len(), 12, "{:?}", report.errors_sent);
    emu.shutdown();
}

#[tokio::test]
async fn preview_and_voice_live_session_rules() {
    let emu = start(fast()).await.unwrap();
    let mut c = connect(&emu, Dialect::OpenAiPreview).await;
    c.send(r#"{"type":"session.update","session":{"type":"realtime"}}"#)
        .await;
    let e = c.expect_error("unknown_parameter").await;
    assert_eq!(e["error"]["param"], "session.type");
    c.send(r#"{"type":"session.update","session":{"input_audio_format":"g711_alaw"}}"#)
        .await;
    c.expect_error("invalid_value").await;
    c.send(r#"{"type":"session.update","session":{"voice":"en-US-AriaNeural"}}"#)
        .await;
    c.expect_error("invalid_value").await;

    let mut v = connect(&emu, Dialect::VoiceLive).await;
    v.send(r#"{"type":"session.update","session":{"voice":{"type":"azure-standard","name":"en-US-AriaNeural"},"output_audio_timestamp_types":["word"]}}"#)
        .await;
    let updated = v.until("session.updated").await;
    assert_eq!(updated["session"]["voice"]["name"], "en-US-AriaNeural");
    v.send(r#"{"type":"session.update","session":{"voice":{"type":"azure-magic","name":"x"}}}"#)
        .await;
    v.expect_error("invalid_value").await;
    v.send(r#"{"type":"session.update","session":{"output_modalities":["audio"]}}"#)
        .await;
    v.expect_error("unknown_parameter").await;
    v.send(
        r#"{"type":"session.update","session":{"input_audio_format":"g711_ulaw","input_audio_sampling_rate":16000}}"#,
    )
    .await;
    let e = v.expect_error("invalid_value").await;
    assert_eq!(e["error"]["param"], "session.input_audio_sampling_rate");
    // PCM16 at 16 kHz: positions are counted at that rate.
    v.send(r#"{"type":"session.update","session":{"input_audio_format":"pcm16","input_audio_sampling_rate":16000}}"#)
        .await;
    v.until("session.updated").await;
    let tone: Vec<u8> = (0..16_000)
        .flat_map(|i| if i % 16 < 8 { 8000i16 } else { -8000 }.to_le_bytes())
        .chain(std::iter::repeat_n(0u8, 32_000))
        .collect();
    v.append(&tone, 640).await;
    let started = v.until("input_audio_buffer.speech_started").await;
    assert_eq!(started["audio_start_ms"], 0);
    let stopped = v.until("input_audio_buffer.speech_stopped").await;
    assert_eq!(stopped["audio_end_ms"], 1000);

    // The official example's update is accepted and echoed (§6.4).
    let example: Value = serde_json::from_str(
        &std::fs::read_to_string(spec_path("voicelive_examples/SessionInitialization.2025-10-01.json")).unwrap(),
    )
    .unwrap();
    let messages = example["messages"].as_array().unwrap();
    let update = &messages[1]["event"];
    let expected = &messages[2]["event"]["session"];
    v.send(&update.to_string()).await;
    let updated = v.until("session.updated").await;
    for k in [
        "instructions",
        "voice",
        "turn_detection",
        "temperature",
        "max_response_output_tokens",
        "modalities",
    ] {
        let ours = &updated["session"][k];
        if k == "turn_detection" {
            for (tk, tv) in expected[k].as_object().unwrap() {
                assert_eq!(&ours[tk], tv, "turn_detection.{tk}");
            }
        } else {
            assert_eq!(ours, &expected[k], "{k}");
        }
    }
    emu.shutdown();
}

#[tokio::test]
async fn cancel_rules() {
    // Default speed: a response lasts long enough to cancel.
    let emu = start(Default::default()).await.unwrap();
    let mut c = connect(&emu, Dialect::OpenAiGa).await;
    c.send(&protocol::response_cancel(None)).await;
    c.expect_error("response_cancel_not_active").await;
    c.send(&protocol::response_create(None)).await;
    let created = c.until("response.created").await;
    let id = created["response"]["id"].as_str().unwrap().to_string();
    c.send(&protocol::response_create(None)).await;
    c.expect_error("conversation_already_has_active_response").await;
    c.send(&protocol::response_cancel(Some("resp_other"))).await;
    c.expect_error("response_cancel_not_active").await;
    c.send(&protocol::response_cancel(Some(&id))).await;
    let done = c.until("response.done").await;
    assert_eq!(done["response"]["id"], id.as_str());
    assert_eq!(done["response"]["status"], "cancelled");
    assert_eq!(done["response"]["status_details"]["reason"], "client_cancelled");
    assert_eq!(done["response"]["output"][0]["status"], "incomplete");
    c.send(&protocol::response_cancel(None)).await;
    c.expect_error("response_cancel_not_active").await;
    let report = &emu.sessions()[0];
    assert_eq!(report.cancels, 1);
    assert_eq!(report.responses, 1);
    assert_events_match_the_spec(Dialect::OpenAiGa, &c.seen);
    emu.shutdown();
}

#[tokio::test]
async fn speech_interrupts_a_response_when_asked_to() {
    let emu = start(Default::default()).await.unwrap();
    let mut c = connect(&emu, Dialect::VoiceLive).await;
    let config = SessionConfig::new("x", "alloy", AudioFormat::G711Ulaw);
    c.send(&protocol::session_update(Dialect::VoiceLive, &config)).await;
    c.until("session.updated").await;
    c.send(&protocol::response_create(None)).await;
    c.until("response.created").await;
    let (speech, frame) = speech_then_silence(AudioFormat::G711Ulaw);
    c.append(&speech[..8000], frame).await;
    c.until("input_audio_buffer.speech_started").await;
    let done = c.until("response.done").await;
    assert_eq!(done["response"]["status"], "cancelled");
    assert_eq!(done["response"]["status_details"]["reason"], "turn_detected");
    assert_events_match_the_spec(Dialect::VoiceLive, &c.seen);

    // Without interrupt_response the agent keeps talking.
    let mut c = connect(&emu, Dialect::OpenAiPreview).await;
    c.send(r#"{"type":"session.update","session":{"input_audio_format":"g711_ulaw","turn_detection":{"type":"server_vad","interrupt_response":false}}}"#)
        .await;
    c.until("session.updated").await;
    c.send(&protocol::response_create(None)).await;
    c.until("response.created").await;
    c.append(&speech[..8000], frame).await;
    c.until("input_audio_buffer.speech_started").await;
    let done = c.until("response.done").await;
    assert_eq!(done["response"]["status"], "completed");
    emu.shutdown();
}

#[tokio::test]
async fn truncate_rules() {
    let emu = start(fast()).await.unwrap();
    let mut c = connect(&emu, Dialect::OpenAiPreview).await;
    c.send(&protocol::response_create(None)).await;
    c.response().await;
    let item = c
        .seen
        .iter()
        .find(|e| e["type"] == "response.output_item.added")
        .and_then(|e| e["item"]["id"].as_str())
        .unwrap()
        .to_string();
    let clip_ms = (AGENT_CLIPS[0].len() / 8) as u64;
    c.send(&protocol::item_truncate(&item, 0, clip_ms + 1)).await;
    let e = c.expect_error("invalid_value").await;
    assert_eq!(e["error"]["param"], "audio_end_ms");
    c.send(&protocol::item_truncate("item_nope", 0, 10)).await;
    c.expect_error("item_not_found").await;
    c.send(&protocol::item_truncate(&item, 1, 10)).await;
    c.expect_error("invalid_value").await;
    c.send(&protocol::item_truncate(&item, 0, 1500)).await;
    let t = c.until("conversation.item.truncated").await;
    assert_eq!(t["item_id"], item.as_str());
    assert_eq!(t["audio_end_ms"], 1500);
    // Only what is left can be truncated again.
    c.send(&protocol::item_truncate(&item, 0, 1600)).await;
    c.expect_error("invalid_value").await;
    // A user item has no assistant audio.
    c.send(&protocol::user_text_item("DTMF 5")).await;
    let created = c.until("conversation.item.created").await;
    let user = created["item"]["id"].as_str().unwrap().to_string();
    c.send(&protocol::item_truncate(&user, 0, 0)).await;
    c.expect_error("invalid_value").await;
    assert_eq!(emu.sessions()[0].truncates, vec![(item, 1500)]);
    assert_events_match_the_spec(Dialect::OpenAiPreview, &c.seen);
    emu.shutdown();
}

#[tokio::test]
async fn manual_commit_and_clear() {
    let emu = start(fast()).await.unwrap();
    let mut c = connect(&emu, Dialect::OpenAiGa).await;
    c.send(r#"{"type":"session.update","session":{"type":"realtime","audio":{"input":{"format":{"type":"audio/pcmu"},"turn_detection":null},"output":{"format":{"type":"audio/pcmu"}}}}}"#)
        .await;
    let updated = c.until("session.updated").await;
    assert!(updated["session"]["audio"]["input"]["turn_detection"].is_null());
    c.send(&protocol::input_audio_commit()).await;
    c.expect_error("input_audio_buffer_commit_empty").await;
    let (speech, frame) = speech_then_silence(AudioFormat::G711Ulaw);
    c.append(&speech, frame).await;
    c.send(r#"{"type":"input_audio_buffer.clear"}"#).await;
    c.until("input_audio_buffer.cleared").await;
    c.append(&speech, frame).await;
    c.send(&protocol::input_audio_commit()).await;
    c.until("input_audio_buffer.committed").await;
    let t = c.until("conversation.item.input_audio_transcription.completed").await;
    assert_eq!(t["transcript"], DEFAULT_SCRIPT[0]);
    // No VAD: no speech events and no automatic response.
    assert!(
        !c.seen
            .iter()
            .any(|e| e["type"] == "input_audio_buffer.speech_started" || e["type"] == "response.created")
    );
    c.send(&protocol::response_create(None)).await;
    let (_, audio, transcript, _) = c.response().await;
    assert_eq!(transcript, AGENT_LINES[1]);
    assert_eq!(audio, AGENT_CLIPS[1]);
    assert_events_match_the_spec(Dialect::OpenAiGa, &c.seen);
    emu.shutdown();
}

#[tokio::test]
async fn reply_repeats_says_each_reply_but_not_the_greeting_that_many_times() {
    let emu = start(RealtimeEmulatorConfig {
        reply_repeats: 3,
        ..fast()
    })
    .await
    .unwrap();
    let mut c = connect(&emu, Dialect::OpenAiGa).await;
    c.send(r#"{"type":"session.update","session":{"type":"realtime","audio":{"input":{"format":{"type":"audio/pcmu"},"turn_detection":null},"output":{"format":{"type":"audio/pcmu"}}}}}"#)
        .await;
    c.until("session.updated").await;
    c.send(&protocol::response_create(None)).await;
    let (_, greeting, _, _) = c.response().await;
    assert_eq!(greeting, AGENT_CLIPS[0], "the greeting is said once");
    let (speech, frame) = speech_then_silence(AudioFormat::G711Ulaw);
    c.append(&speech, frame).await;
    c.send(&protocol::input_audio_commit()).await;
    c.until("conversation.item.input_audio_transcription.completed").await;
    c.send(&protocol::response_create(None)).await;
    let (_, audio, transcript, _) = c.response().await;
    assert_eq!(audio, AGENT_CLIPS[1].repeat(3));
    assert_eq!(transcript, AGENT_LINES[1], "the words are said once, over all of it");
    emu.shutdown();
}

#[tokio::test]
async fn restored_conversation_ends_with_the_end_call_tool() {
    let emu = start(fast()).await.unwrap();
    let mut c = connect(&emu, Dialect::OpenAiGa).await;
    c.send(&protocol::session_update(
        Dialect::OpenAiGa,
        &SessionConfig::new("x", "alloy", AudioFormat::G711Ulaw),
    ))
    .await;
    c.until("session.updated").await;
    // A reconnect restores the conversation so far: the script moves on.
    for (role, text) in [
        ("assistant", AGENT_LINES[0]),
        ("user", DEFAULT_SCRIPT[0]),
        ("assistant", AGENT_LINES[1]),
        ("user", DEFAULT_SCRIPT[1]),
        ("assistant", AGENT_LINES[2]),
        ("user", DEFAULT_SCRIPT[2]),
    ] {
        c.send(&protocol::restore_item(Dialect::OpenAiGa, role, text)).await;
        let added = c.until("conversation.item.added").await;
        assert_eq!(added["item"]["role"], role);
    }
    c.send(&protocol::response_create(None)).await;
    let (_, audio, transcript, done) = c.response().await;
    assert_eq!(transcript, AGENT_LINES[3]);
    assert_eq!(audio, AGENT_CLIPS[3]);
    let output = done["response"]["output"].as_array().unwrap();
    assert_eq!(output.len(), 2);
    assert_eq!(output[1]["type"], "function_call");
    assert_eq!(output[1]["name"], "end_call");
    let events: Vec<ServerEvent> = c
        .seen
        .iter()
        .map(|e| protocol::parse_server_event(&e.to_string()).unwrap())
        .collect();
    let added = events.iter().position(|e| {
        matches!(e, ServerEvent::OutputItemAdded { kind: protocol::ItemKind::FunctionCall, name: Some(n), .. } if n == "end_call")
    });
    let args = events
        .iter()
        .position(|e| matches!(e, ServerEvent::FunctionCallArgumentsDone { name, .. } if name == "end_call"));
    let audio_done = events.iter().position(|e| matches!(e, ServerEvent::AudioDone { .. }));
    assert!(
        audio_done < added && added < args,
        "goodbye audio, then the call (§7.6)"
    );
    let call_id = c
        .seen
        .iter()
        .find(|e| e["type"] == "response.function_call_arguments.done")
        .and_then(|e| e["call_id"].as_str())
        .unwrap()
        .to_string();
    c.send(&protocol::function_call_output(&call_id, r#"{"ok":true}"#))
        .await;
    let added = c.until("conversation.item.added").await;
    assert_eq!(added["item"]["type"], "function_call_output");
    assert_events_match_the_spec(Dialect::OpenAiGa, &c.seen);
    assert!(emu.sessions()[0].errors_sent.is_empty());
    emu.shutdown();
}

#[tokio::test]
async fn with_transfer_targets_the_reply_to_the_question_hands_off_and_calls_transfer_call() {
    for dialect in [Dialect::VoiceLive, Dialect::OpenAiGa, Dialect::OpenAiPreview] {
        let emu = start(fast()).await.unwrap();
        let mut c = connect(&emu, dialect).await;
        let mut session = SessionConfig::new("x", "en-US-AriaNeural", AudioFormat::G711Ulaw);
        if dialect != Dialect::VoiceLive {
            session.voice = protocol::Voice::parse("alloy");
        }
        session.tools.push(protocol::ToolDef {
            name: "transfer_call".into(),
            description: "Hand the call over to a person.".into(),
            parameters: serde_json::json!({"type": "object", "properties": {"number": {"type": "string",
                "enum": ["+15550120", "+15550122"], "description": "+15550120: billing; +15550122: sales"}},
                "required": ["number"]}),
        });
        c.send(&protocol::session_update(dialect, &session)).await;
        c.until("session.updated").await;
        for (role, text) in [
            ("assistant", AGENT_LINES[0]),
            ("user", DEFAULT_SCRIPT[0]),
            ("assistant", AGENT_LINES[1]),
            ("user", DEFAULT_SCRIPT[1]),
        ] {
            c.send(&protocol::restore_item(dialect, role, text)).await;
            c.until(if dialect == Dialect::OpenAiGa {
                "conversation.item.added"
            } else {
                "conversation.item.created"
            })
            .await;
        }
        c.send(&protocol::response_create(None)).await;
        let (_, _, transcript, done) = c.response().await;
        assert_eq!(transcript, HANDOFF_LINE, "{dialect:?}");
        let output = done["response"]["output"].as_array().unwrap();
        assert_eq!(output.len(), 2, "{dialect:?}");
        assert_eq!(output[1]["name"], "transfer_call");
        assert_eq!(output[1]["arguments"], r#"{"number":"+15550120"}"#);
        assert_events_match_the_spec(dialect, &c.seen);
        assert!(
            emu.sessions()[0].errors_sent.is_empty(),
            "{:?}",
            emu.sessions()[0].errors_sent
        );
        assert_eq!(emu.sessions()[0].transfers, 1);
        emu.shutdown();
    }
}

#[tokio::test]
async fn refused_session_is_fatal_and_closed() {
    let emu = start(RealtimeEmulatorConfig {
        refuse_session: true,
        ..fast()
    })
    .await
    .unwrap();
    let mut c = connect(&emu, Dialect::VoiceLive).await;
    let config = SessionConfig::new("x", "alloy", AudioFormat::G711Ulaw);
    c.send(&protocol::session_update(Dialect::VoiceLive, &config)).await;
    let e = c.until("error").await;
    match protocol::parse_server_event(&e.to_string()).unwrap() {
        ServerEvent::Error { r#type, code, .. } => {
            assert!(protocol::is_fatal_error(&r#type, code.as_deref()), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let end = tokio::time::timeout(WAIT, c.ws.next()).await.unwrap();
    assert!(
        matches!(end, Some(Ok(Message::Close(_))) | None),
        "closed after the fatal error: {end:?}"
    );
    emu.shutdown();
}

#[tokio::test]
async fn drop_after_responses_vanishes_without_a_close_frame() {
    let emu = start(RealtimeEmulatorConfig {
        drop_after_responses: Some(1),
        drop_sessions: 1,
        ..fast()
    })
    .await
    .unwrap();
    let mut c = connect(&emu, Dialect::OpenAiGa).await;
    c.send(&protocol::response_create(None)).await;
    c.until("response.done").await;
    let end = tokio::time::timeout(WAIT, c.ws.next()).await.unwrap();
    assert!(
        !matches!(end, Some(Ok(Message::Close(_))) | Some(Ok(Message::Text(_)))),
        "an abrupt end: {end:?}"
    );
    // Only the first session is dropped.
    let mut c = connect(&emu, Dialect::OpenAiGa).await;
    c.send(&protocol::response_create(None)).await;
    c.until("response.done").await;
    c.send(&protocol::response_create(None)).await;
    c.until("response.done").await;
    emu.shutdown();
}

#[test]
fn session_fields_are_the_specs() {
    let props = |doc: &Value, schema: &str| -> Vec<String> {
        doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let ours = |v: &[&str]| sorted(v.iter().map(|s| s.to_string()).collect());
    assert_eq!(
        ours(GA_SESSION_FIELDS),
        sorted(props(&GA, "RealtimeSessionCreateRequestGA"))
    );
    assert_eq!(
        ours(PREVIEW_SESSION_FIELDS),
        sorted(props(&PREVIEW, "RealtimeSessionCreateRequest"))
    );
    let vl: Vec<String> = VOICE_LIVE["models"]["RequestSession"]["fields"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(ours(VOICE_LIVE_SESSION_FIELDS), sorted(vl));
}

#[test]
fn agent_lines_match_the_clips_and_the_generator() {
    let script = include_str!("../../assets/speech/generate_agent.sh");
    for (line, clip) in AGENT_LINES.iter().zip(AGENT_CLIPS) {
        assert!(
            script.contains(&format!("\"{line}\"")),
            "generate_agent.sh says {line:?}"
        );
        let ms = clip.len() / 8;
        // About 165 words/min: a few seconds each, not silence, not a mistake.
        let words = line.split(' ').count();
        assert!(
            (words * 200..=words * 700).contains(&ms),
            "{line:?}: {ms} ms for {words} words"
        );
        let loud = clip
            .iter()
            .filter(|&&b| voice_agent_audio::ulaw_to_linear(b).unsigned_abs() > 2000)
            .count();
        assert!(loud * 4 > clip.len() / 10, "{line:?} is speech, not silence");
    }
}
