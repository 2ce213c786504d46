//! Whole calls through the Twilio emulator and the realtime-AI emulator:
//! every scenario's life cycle, the conversation in each AI dialect and audio
//! mode, signatures, media-stream checks and provider errors.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use voice_agent_proto::v1 as pb;
use voice_agent_server::call::CallStatus;
use voice_agent_server::call::lifecycle::EndClass;
use voice_agent_server::config::{AudioMode, Config};
use voice_agent_server::metrics::ProviderError;
use voice_agent_tests::*;

const LIMIT: Duration = Duration::from_secs(90);

mod seed;

fn pb_statuses(list: &[pb::CallStatus]) -> Vec<&'static str> {
    list.iter().map(|s| s.as_str_name()).collect()
}

async fn conversation(config: Config, backend: pb::Backend) {
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    let req = pb::PlaceCallRequest {
        backend: backend as i32,
        ..place("+15550199")
    };
    let (placed, events) = call_and_watch(&mut client, req, LIMIT).await;
    assert!(placed.emulated);
    assert!(placed.provider_call_id.starts_with("CA"), "{}", placed.provider_call_id);
    assert_eq!(
        pb_statuses(&statuses(&events)),
        vec![
            "CALL_STATUS_QUEUED",
            "CALL_STATUS_INITIATED",
            "CALL_STATUS_RINGING",
            "CALL_STATUS_IN_PROGRESS",
            "CALL_STATUS_COMPLETED"
        ]
    );
    let lines = transcripts(&events);
    let callee: Vec<&str> = lines
        .iter()
        .filter(|(s, _, _)| *s == pb::Speaker::Callee)
        .map(|(_, t, _)| t.as_str())
        .collect();
    let agent: Vec<&str> = lines
        .iter()
        .filter(|(s, _, _)| *s == pb::Speaker::Agent)
        .map(|(_, t, _)| t.as_str())
        .collect();
    assert!(callee.len() >= 2, "at least two callee turns: {lines:?}");
    assert_eq!(callee[0], "Hello? Yes, this is Sam speaking.");
    assert!(agent.len() >= 3, "greeting and replies: {lines:?}");
    assert!(agent[0].contains("Contoso Clinic"), "{lines:?}");
    // Conversation order: the agent greets first, then turns alternate.
    assert_eq!(lines[0].0, pb::Speaker::Agent, "{lines:?}");
    assert!(errors(&events).is_empty(), "no errors: {:?}", errors(&events));

    // The callee really heard the agent: the Twilio emulator recorded played audio.
    let report = server
        .emulators
        .twilio
        .as_ref()
        .expect("Twilio emulator")
        .call(&placed.provider_call_id)
        .expect("the emulator knows the call");
    let stream = report.stream().expect("a media stream ran");
    let heard_ms = stream.heard_bytes().len() / 8;
    assert!(heard_ms > 8000, "the callee heard {heard_ms} ms of agent audio");
    // The heard audio is speech, not silence: its energy is far above zero.
    let heard = stream.heard_bytes();
    let rms = (heard
        .iter()
        .map(|&b| f64::from(voice_agent_server::audio::ulaw_to_linear(b)).powi(2))
        .sum::<f64>()
        / heard.len() as f64)
        .sqrt();
    assert!(rms > 500.0, "heard audio RMS {rms:.0}");
    assert_eq!(stream.callee_lines.len(), 3, "the callee said its three lines");
    assert!(stream.malformed.is_empty(), "we sent only valid Media Streams messages");
    server.stop().await;
}

#[tokio::test]
async fn voice_live_transcode() {
    conversation(Config::for_tests(), pb::Backend::VoiceLive).await;
}

#[tokio::test]
async fn voice_live_passthrough() {
    let mut config = Config::for_tests();
    config.audio_mode = AudioMode::Passthrough;
    conversation(config, pb::Backend::VoiceLive).await;
}

#[tokio::test]
async fn openai_ga_transcode() {
    conversation(Config::for_tests(), pb::Backend::GptRealtime).await;
}

#[tokio::test]
async fn openai_ga_passthrough() {
    let mut config = Config::for_tests();
    config.audio_mode = AudioMode::Passthrough;
    conversation(config, pb::Backend::GptRealtime).await;
}

async fn terminal(number: &str) -> (pb::PlaceCallResponse, Vec<pb::CallEvent>, pb::Call) {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let (placed, events) = call_and_watch(&mut client, place(number), LIMIT).await;
    let call = get_call(&mut client, &placed.call_id).await;
    server.stop().await;
    (placed, events, call)
}

#[tokio::test]
async fn busy_no_answer_and_failed_end_with_their_status() {
    for (number, status, reason) in [
        ("+15550102", pb::CallStatus::Busy, "busy"),
        ("+15550103", pb::CallStatus::NoAnswer, "answer"),
        ("+15550104", pb::CallStatus::Failed, "could not be connected"),
    ] {
        let (_, events, call) = terminal(number).await;
        assert_eq!(statuses(&events).last(), Some(&status), "{number}");
        assert_eq!(call.status(), status);
        assert!(call.end_reason.contains(reason), "{number}: {}", call.end_reason);
        assert!(call.ended_at.is_some() && call.answered_at.is_none());
        assert!(transcripts(&events).is_empty());
    }
}

#[tokio::test]
async fn callee_hangs_up_mid_call() {
    let (_, events, call) = terminal("+15550105").await;
    assert_eq!(call.status(), pb::CallStatus::Completed);
    assert!(call.answered_at.is_some());
    let lines = transcripts(&events);
    assert!(lines.iter().any(|(s, _, _)| *s == pb::Speaker::Callee), "{lines:?}");
}

#[tokio::test]
async fn dtmf_digits_become_events() {
    let (_, events, _) = terminal("+15550106").await;
    let digits: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::call_event::Kind::Dtmf(d)) => Some(d.digit.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(digits, vec!["1", "2", "#"]);
}

#[tokio::test]
async fn ring_timeout_is_no_answer() {
    let mut config = Config::for_tests();
    config.ring_timeout = Duration::from_secs(5);
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    let started = std::time::Instant::now();
    let (_, events) = call_and_watch(&mut client, place("+15550107"), LIMIT).await;
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::NoAnswer));
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "rang for the whole timeout"
    );
    server.stop().await;
}

#[tokio::test]
async fn twilio_errors_map_to_grpc_codes_and_are_recorded() {
    let mut config = Config::for_tests();
    config.twilio_http_timeout = Duration::from_secs(1);
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    for (number, code, needle) in [
        ("+15005550001", tonic::Code::InvalidArgument, "21211"),
        ("+15005550500", tonic::Code::Unavailable, "500"),
        ("+15005550408", tonic::Code::Unavailable, "time"),
    ] {
        let e = client.place_call(place(number)).await.unwrap_err();
        assert_eq!(e.code(), code, "{number}: {e:?}");
        assert!(e.message().contains(needle), "{number}: {}", e.message());
    }
    let list = client
        .list_calls(pb::ListCallsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.calls.len(), 3, "every attempt is recorded");
    for call in &list.calls {
        assert_eq!(call.status(), pb::CallStatus::Failed);
        assert!(!call.end_reason.is_empty());
        let events = watch_all(&mut client, &call.call_id, 0, Duration::from_secs(5)).await;
        assert!(!errors(&events).is_empty(), "the reason is visible to watchers");
    }
    assert!(list.calls.iter().any(|c| c.provider_error_code == "21211"));
    server.stop().await;
}

#[tokio::test]
async fn hang_up_mid_call_ends_it() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let placed = client.place_call(place("+15550100")).await.unwrap().into_inner();
    // Wait until the conversation runs (first transcript), then hang up.
    let mut stream = watch(&mut client, &placed.call_id, 0).await;
    let seen = watch_until(&mut stream, LIMIT, is_transcript).await;
    let hung = client
        .hang_up_call(pb::HangUpCallRequest {
            call_id: placed.call_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hung.call.is_some());
    let rest = watch_all(
        &mut client,
        &placed.call_id,
        seen.last().unwrap().sequence,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(statuses(&rest).last(), Some(&pb::CallStatus::Completed));
    let call = get_call(&mut client, &placed.call_id).await;
    assert!(call.end_reason.contains("HangUpCall"), "{}", call.end_reason);
    server.stop().await;
}

#[tokio::test]
async fn forged_signatures_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let (placed, events) = call_and_watch(&mut client, place("+15550102"), LIMIT).await;
    let http = reqwest::Client::new();
    let base = server.url();
    let id = &placed.call_id;
    let form = [
        ("CallSid", placed.provider_call_id.as_str()),
        ("CallStatus", "completed"),
    ];
    for signature in [None, Some("bm90IGEgc2lnbmF0dXJl")] {
        for path in [
            format!("/twilio/status?call_id={id}"),
            format!("/twilio/twiml?call_id={id}"),
        ] {
            let mut req = http.post(format!("{base}{path}")).form(&form);
            if let Some(s) = signature {
                req = req.header("X-Twilio-Signature", s);
            }
            assert_eq!(req.send().await.unwrap().status(), 403, "{path} {signature:?}");
        }
        let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/ws/media/{id}",
            server.addr
        ))
        .unwrap();
        if let Some(s) = signature {
            req.headers_mut().insert("x-twilio-signature", s.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
            other => panic!("the upgrade must be refused: {other:?}"),
        }
    }
    let after = watch_all(&mut client, id, 0, Duration::from_secs(5)).await;
    assert_eq!(after, events, "nothing changed");
    server.stop().await;
}

/// Opens the media WebSocket as Twilio would (signed upgrade) and sends
/// `connected` + `start` with the given CallSid and secret.
async fn twilio_media_socket(
    server: &TestServer,
    call_id: &str,
    call_sid: &str,
    secret: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{}/ws/media/{call_id}", server.addr);
    let token = server.state.twilio_auth_token.expose().to_string();
    let signature = voice_agent_server::telephony::twilio::signature::compute(&token, &url, &[]);
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    req.headers_mut()
        .insert("x-twilio-signature", signature.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("signed upgrade accepted");
    ws.send(Message::Text(
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.into(),
    ))
    .await
    .unwrap();
    let start = serde_json::json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ00000000000000000000000000000001",
        "start": {"accountSid": "AC00000000000000000000000000000000", "streamSid": "MZ00000000000000000000000000000001",
                  "callSid": call_sid, "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                  "customParameters": {"call_id": call_id, "secret": secret}}});
    ws.send(Message::Text(start.to_string().into())).await.unwrap();
    ws
}

/// Waits until the server closes the socket (or 5 s pass).
async fn closed_by_server(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> bool {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let wait = async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or(false)
}

#[tokio::test]
async fn media_start_must_name_the_call_and_carry_its_secret_and_garbage_is_survived() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut config = Config::for_tests();
    config.ring_timeout = Duration::from_secs(8);
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    // These callees never answer, so the emulator opens no stream of its own.
    // One stream per call, and a refused one ends its call: a call per case.
    for (call_sid, wrong_secret, why) in [
        (None, true, "a wrong secret closes the socket"),
        (
            Some("CA00000000000000000000000000000000"),
            false,
            "another CallSid closes the socket",
        ),
    ] {
        let placed = client.place_call(place("+15550107")).await.unwrap().into_inner();
        let id = voice_agent_server::call::CallId::parse(&placed.call_id).unwrap();
        let secret = server.state.hub.get(&id).await.unwrap().stream_secret;
        let secret = if wrong_secret {
            "wrong-secret".to_string()
        } else {
            secret
        };
        let call_sid = call_sid.unwrap_or(&placed.provider_call_id);
        let mut ws = twilio_media_socket(&server, &placed.call_id, call_sid, &secret).await;
        assert!(closed_by_server(&mut ws).await, "{why}");
        let events = watch_all(&mut client, &placed.call_id, 0, LIMIT).await;
        let codes: Vec<String> = errors(&events).into_iter().map(|(c, _)| c).collect();
        assert_eq!(codes, ["media_refused"], "{why}");
        assert!(
            matches!(
                statuses(&events).last(),
                Some(pb::CallStatus::Canceled | pb::CallStatus::Completed)
            ),
            "{why}: the call is hung up, not left live: {:?}",
            statuses(&events)
        );
    }

    // The right CallSid and secret: garbage does not end the call.
    let placed = client.place_call(place("+15550107")).await.unwrap().into_inner();
    let id = voice_agent_server::call::CallId::parse(&placed.call_id).unwrap();
    let secret = server.state.hub.get(&id).await.unwrap().stream_secret;
    let mut ws = twilio_media_socket(&server, &placed.call_id, &placed.provider_call_id, &secret).await;
    for garbage in [
        "not json",
        r#"{"event":"media","media":{"payload":"!!!not base64!!!"}}"#,
        r#"{"event":"mystery"}"#,
    ] {
        ws.send(Message::Text(garbage.into())).await.unwrap();
    }
    let frame = serde_json::json!({"event": "media", "sequenceNumber": "2", "streamSid": "MZ00000000000000000000000000000001",
        "media": {"track": "inbound", "chunk": "1", "timestamp": "20", "payload": "/".repeat(212) + "/w=="}});
    for _ in 0..10 {
        ws.send(Message::Text(frame.to_string().into())).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rec = server.state.hub.get(&id).await.unwrap();
    assert!(!rec.status.is_terminal(), "garbage did not end the call");
    let sessions = server.emulators.realtime.as_ref().unwrap().sessions();
    assert_eq!(sessions.len(), 1, "only the accepted stream opened an AI session");
    assert!(
        sessions[0].appends >= 10,
        "audio after the garbage still reached the AI"
    );

    let events = watch_all(&mut client, &placed.call_id, 0, LIMIT).await;
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::NoAnswer));
    let codes: Vec<String> = errors(&events).into_iter().map(|(c, _)| c).collect();
    assert!(!codes.contains(&"media_refused".to_string()), "{codes:?}");
    assert!(codes.contains(&"media_malformed".to_string()), "{codes:?}");
    server.stop().await;
}

#[tokio::test]
async fn duplicate_and_stale_status_callbacks_change_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let (placed, events) = call_and_watch(&mut client, place("+15550102"), LIMIT).await;
    let token = server.state.twilio_auth_token.expose().to_string();
    let url = format!("{}/twilio/status?call_id={}", server.url(), placed.call_id);
    let http = reqwest::Client::new();
    for (status, seq) in [
        ("ringing", "1"),
        ("in-progress", "9"),
        ("completed", "3"),
        ("busy", "3"),
    ] {
        let params: Vec<(String, String)> = [
            ("AccountSid", "AC00000000000000000000000000000000"),
            ("CallSid", placed.provider_call_id.as_str()),
            ("CallStatus", status),
            ("SequenceNumber", seq),
            ("CallbackSource", "call-progress-events"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let sig = voice_agent_server::telephony::twilio::signature::compute(&token, &url, &params);
        let resp = http
            .post(&url)
            .header("X-Twilio-Signature", sig)
            .form(&params)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{status}: {}", resp.status());
    }
    let after = watch_all(&mut client, &placed.call_id, 0, Duration::from_secs(5)).await;
    assert_eq!(
        after, events,
        "a terminal status is final; late and duplicate callbacks add nothing"
    );
    server.stop().await;
}

async fn ai_failure(
    emulator: voice_agent_server::emulator::realtime::RealtimeEmulatorConfig,
    code: &str,
    counted: ProviderError,
) {
    let emu = voice_agent_server::emulator::realtime::start(emulator).await.unwrap();
    let mut config = Config::for_tests();
    config.voice_live = Some(voice_agent_server::config::VoiceLiveConfig {
        endpoint: emu.url_base(),
        api_version: "2025-10-01".into(),
        model: "gpt-realtime".into(),
        api_key: Some(voice_agent_server::config::Secret::new(emu.api_key())),
    });
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    let req = pb::PlaceCallRequest {
        backend: pb::Backend::VoiceLive as i32,
        ..place("+15550199")
    };
    let (placed, events) = call_and_watch(&mut client, req, LIMIT).await;
    assert!(!placed.emulated || server.emulators.twilio.is_some());
    let codes: Vec<String> = errors(&events).into_iter().map(|(c, _)| c).collect();
    assert!(codes.iter().any(|c| c == code), "{code} in {codes:?}");
    assert_eq!(
        statuses(&events).last(),
        Some(&pb::CallStatus::Completed),
        "a clean end"
    );
    let report = server
        .emulators
        .twilio
        .as_ref()
        .unwrap()
        .call(&placed.provider_call_id)
        .unwrap();
    assert!(
        report.said.iter().any(|s| s == voice_agent_server::bridge::APOLOGY),
        "the callee heard an apology: {:?}",
        report.said
    );
    let call = get_call(&mut client, &placed.call_id).await;
    assert!(call.end_reason.contains("AI"), "{}", call.end_reason);
    // Counted by kind, and the call by its end class (docs/observability.md).
    let m = &server.state.metrics;
    assert_eq!(m.provider_errors.get(counted), 1, "{counted:?}");
    assert_eq!(m.calls_ended.get(CallStatus::Completed, EndClass::AiFailure), 1);
    server.stop().await;
    emu.shutdown();
}

#[tokio::test]
async fn ai_auth_failure_apologises_and_ends_cleanly() {
    ai_failure(
        voice_agent_server::emulator::realtime::RealtimeEmulatorConfig {
            reject_auth: true,
            ..Default::default()
        },
        "ai_auth_failed",
        ProviderError::AiAuth,
    )
    .await;
}

#[tokio::test]
async fn ai_refusing_the_session_apologises_and_ends_cleanly() {
    ai_failure(
        voice_agent_server::emulator::realtime::RealtimeEmulatorConfig {
            refuse_session: true,
            ..Default::default()
        },
        "ai_session_failed",
        ProviderError::AiFatal,
    )
    .await;
}

#[tokio::test]
async fn azure_openai_preview_dialect() {
    let emu = voice_agent_server::emulator::realtime::start(Default::default())
        .await
        .unwrap();
    let mut config = Config::for_tests();
    let mut endpoint = emu.url_base();
    endpoint.set_scheme("http").unwrap();
    config.azure_openai = Some(voice_agent_server::config::AzureOpenAiConfig {
        endpoint,
        deployment: "gpt-4o-realtime-preview".into(),
        api_version: Some("2025-04-01-preview".into()),
        api_key: Some(voice_agent_server::config::Secret::new(emu.api_key())),
    });
    conversation(config, pb::Backend::GptRealtime).await;
    let sessions = emu.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        sessions[0].dialect,
        Some(voice_agent_server::realtime::protocol::Dialect::OpenAiPreview)
    );
    let update = sessions[0].session_update.as_ref().expect("session.update received");
    assert_eq!(
        update["session"]["input_audio_format"], "pcm16",
        "preview shape, transcode mode"
    );
    assert!(sessions[0].errors_sent.is_empty(), "{:?}", sessions[0].errors_sent);
    emu.shutdown();
}

#[tokio::test]
async fn barge_in_clears_twilio_and_truncates_at_the_heard_position() {
    use voice_agent_server::emulator::realtime::{AGENT_CLIPS, AGENT_LINES};
    use voice_agent_server::emulator::twilio::ServerMessage;
    let mut config = Config::for_tests();
    // μ-law end to end, so byte counts on both sides are the same audio.
    config.audio_mode = AudioMode::Passthrough;
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    let (placed, events) = call_and_watch(&mut client, place("+15550108"), LIMIT).await;
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::Completed));

    let report = server
        .emulators
        .twilio
        .as_ref()
        .unwrap()
        .call(&placed.provider_call_id)
        .unwrap();
    let stream = report.stream().unwrap();
    assert!(stream.callee_lines.iter().any(|l| l.barged_in), "the callee barged in");
    assert_eq!(
        stream.clears_ms.len(),
        1,
        "exactly one clear: clears {:?}, callee {:?}, transcripts {:?}",
        stream.clears_ms,
        stream.callee_lines,
        transcripts(&events)
    );
    let clear_at = stream.clears_ms[0];
    let played_at_clear = stream
        .marks_echoed
        .iter()
        .find(|m| m.cleared)
        .map(|m| m.played_bytes)
        .expect("pending marks were echoed by the clear");

    let sessions = server.emulators.realtime.as_ref().unwrap().sessions();
    let truncates = &sessions.last().unwrap().truncates;
    assert_eq!(truncates.len(), 1, "{truncates:?}");
    // The greeting played in full before the interrupted reply began.
    let heard_ms = (played_at_clear as i64 - AGENT_CLIPS[0].len() as i64) / 8;
    let truncated_ms = truncates[0].1 as i64;
    eprintln!("interrupted reply: callee heard {heard_ms} ms, truncate audio_end_ms = {truncated_ms}");
    assert!(heard_ms > 0);
    assert!(
        (truncated_ms - heard_ms).abs() <= 60,
        "heard {heard_ms} ms, truncated at {truncated_ms} ms"
    );

    // No audio of the cancelled response after the clear: the next agent
    // audio arrives only after the callee finished the line it barged in with.
    let barge = stream.callee_lines.iter().find(|l| l.barged_in).unwrap();
    let resumed_after = barge.ended_ms.expect("the barge-in line ended");
    for m in &stream.server_messages {
        if let ServerMessage::Media { at_ms, .. } = m {
            assert!(
                *at_ms <= clear_at || *at_ms >= resumed_after,
                "audio at {at_ms} ms between the clear ({clear_at}) and the callee's end ({resumed_after})"
            );
        }
    }

    // The bridge's own account (GET /metrics) agrees with both far ends: every
    // append it wrote reached the AI, every media message reached Twilio, one
    // barge-in reaction was timed, and no bridge is left running.
    let text = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let appends: usize = sessions.iter().map(|s| s.appends).sum();
    let media_heard = stream
        .server_messages
        .iter()
        .filter(|m| matches!(m, ServerMessage::Media { .. }))
        .count();
    assert_eq!(
        metric(&text, "voice_agent_bridge_frames_total{hop=\"to_ai\"}"),
        appends as f64
    );
    assert_eq!(
        metric(&text, "voice_agent_bridge_frames_total{hop=\"to_twilio\"}"),
        media_heard as f64
    );
    assert!(
        metric(&text, "voice_agent_bridge_frames_total{hop=\"from_twilio\"}") >= appends as f64 && appends > 0,
        "{text}"
    );
    assert_eq!(metric(&text, "voice_agent_barge_in_reaction_seconds_count"), 1.0);
    assert_eq!(
        metric(
            &text,
            "voice_agent_bridge_frame_latency_seconds_count{direction=\"outbound\"}"
        ),
        media_heard as f64
    );
    assert_eq!(metric(&text, "voice_agent_active_media_bridges"), 0.0);

    let lines = transcripts(&events);
    let cut = lines
        .iter()
        .find(|(s, _, i)| *s == pb::Speaker::Agent && *i)
        .unwrap_or_else(|| panic!("an interrupted agent line: {lines:?}"));
    assert!(
        AGENT_LINES[1].starts_with(cut.1.as_str()) && cut.1.len() < AGENT_LINES[1].len(),
        "{cut:?}"
    );
    server.stop().await;
}

/// Voice Live answered by the realtime-AI emulator `emu`.
fn voice_live_on(
    emu: &voice_agent_server::emulator::realtime::RealtimeEmulatorHandle,
) -> Option<voice_agent_server::config::VoiceLiveConfig> {
    Some(voice_agent_server::config::VoiceLiveConfig {
        endpoint: emu.url_base(),
        api_version: "2025-10-01".into(),
        model: "gpt-realtime".into(),
        api_key: Some(voice_agent_server::config::Secret::new(emu.api_key())),
    })
}

async fn server_with_ai(
    emulator: voice_agent_server::emulator::realtime::RealtimeEmulatorConfig,
) -> (
    TestServer,
    voice_agent_server::emulator::realtime::RealtimeEmulatorHandle,
) {
    let emu = voice_agent_server::emulator::realtime::start(emulator).await.unwrap();
    let mut config = Config::for_tests();
    config.voice_live = voice_live_on(&emu);
    (TestServer::with_config(config).await, emu)
}

fn notices(events: &[pb::CallEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::call_event::Kind::Notice(n)) => Some(n.code.clone()),
            _ => None,
        })
        .collect()
}

/// A Twilio emulator of the test's own (its own numbers; it outlives the
/// server) and the options that make the server dial through it.
async fn own_twilio(
    config: voice_agent_server::emulator::twilio::TwilioEmulatorConfig,
) -> (voice_agent_server::emulator::twilio::TwilioEmulatorHandle, Options) {
    let emu = voice_agent_server::emulator::twilio::TwilioEmulator::start(config)
        .await
        .unwrap();
    let options = twilio_options(&emu);
    (emu, options)
}

/// Options that make a server dial through `emu`.
fn twilio_options(emu: &voice_agent_server::emulator::twilio::TwilioEmulatorHandle) -> Options {
    use voice_agent_server::telephony::twilio::TwilioClient;
    let client = TwilioClient::new(
        &emu.base_url(),
        emu.account_sid(),
        emu.auth_token(),
        Duration::from_secs(10),
    )
    .unwrap();
    let telephony: std::sync::Arc<dyn voice_agent_server::telephony::Telephony> =
        std::sync::Arc::new(voice_agent_server::telephony::provider::Twilio::new(client));
    Options {
        telephony: Some((telephony, voice_agent_server::config::Secret::new(emu.auth_token()))),
        ..Default::default()
    }
}

#[tokio::test]
async fn ai_drop_mid_call_reconnects_once_with_the_conversation() {
    let (server, emu) = server_with_ai(voice_agent_server::emulator::realtime::RealtimeEmulatorConfig {
        drop_after_responses: Some(2),
        drop_sessions: 1,
        ..Default::default()
    })
    .await;
    let mut client = server.client().await;
    let req = pb::PlaceCallRequest {
        backend: pb::Backend::VoiceLive as i32,
        ..place("+15550199")
    };
    let (_, events) = call_and_watch(&mut client, req, LIMIT).await;
    assert!(
        notices(&events).contains(&"ai_reconnected".to_string()),
        "{:?}",
        notices(&events)
    );
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::Completed));
    let sessions = emu.sessions();
    assert_eq!(sessions.len(), 2, "one reconnect");
    let m = &server.state.metrics;
    assert_eq!(
        (
            m.provider_errors.get(ProviderError::AiDrop),
            m.ai_reconnects_ok.get(),
            m.ai_reconnects_failed.get()
        ),
        (1, 1, 0),
        "one drop, one reconnect that worked"
    );
    // The new session got the instructions and the conversation so far.
    assert!(sessions[1].session_update.is_some());
    let restored = sessions[1]
        .received
        .iter()
        .filter(|t| *t == "conversation.item.create")
        .count();
    assert!(restored >= 2, "restored turns: {:?}", sessions[1].received);
    // The conversation went on to the end after the reconnect.
    let lines = transcripts(&events);
    assert!(lines.iter().any(|(_, t, _)| t.contains("Goodbye")), "{lines:?}");
    server.stop().await;
    emu.shutdown();
}

#[tokio::test]
async fn ai_drop_without_recovery_apologises_and_ends() {
    let (server, emu) = server_with_ai(voice_agent_server::emulator::realtime::RealtimeEmulatorConfig {
        drop_after_responses: Some(1),
        ..Default::default()
    })
    .await;
    let mut client = server.client().await;
    let req = pb::PlaceCallRequest {
        backend: pb::Backend::VoiceLive as i32,
        ..place("+15550199")
    };
    let (placed, events) = call_and_watch(&mut client, req, LIMIT).await;
    let codes: Vec<String> = errors(&events).into_iter().map(|(c, _)| c).collect();
    assert!(codes.contains(&"ai_disconnected".to_string()), "{codes:?}");
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::Completed));
    let report = server
        .emulators
        .twilio
        .as_ref()
        .unwrap()
        .call(&placed.provider_call_id)
        .unwrap();
    assert!(
        report.said.iter().any(|s| s == voice_agent_server::bridge::APOLOGY),
        "{:?}",
        report.said
    );
    assert_eq!(emu.sessions().len(), 2, "one reconnect was tried");
    let m = &server.state.metrics;
    assert_eq!(
        (m.provider_errors.get(ProviderError::AiDrop), m.ai_reconnects_ok.get()),
        (2, 1),
        "the reconnect worked, then the new session dropped too"
    );
    server.stop().await;
    emu.shutdown();
}

#[tokio::test]
async fn max_duration_ends_the_call_with_a_spoken_goodbye() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let req = pb::PlaceCallRequest {
        max_duration: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
        ..place("+15550199")
    };
    let (placed, events) = call_and_watch(&mut client, req, LIMIT).await;
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::Completed));
    let report = server
        .emulators
        .twilio
        .as_ref()
        .unwrap()
        .call(&placed.provider_call_id)
        .unwrap();
    assert!(
        report
            .said
            .iter()
            .any(|s| s == voice_agent_server::bridge::TIME_LIMIT_GOODBYE),
        "{:?}",
        report.said
    );
    let call = get_call(&mut client, &placed.call_id).await;
    assert!(call.end_reason.contains("maximum duration"), "{}", call.end_reason);
    server.stop().await;
}

#[tokio::test]
async fn end_call_waits_for_the_goodbye_and_turns_are_measured() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let (placed, events) = call_and_watch(&mut client, place("+15550199"), LIMIT).await;
    let call = get_call(&mut client, &placed.call_id).await;
    assert_eq!(call.end_reason, "the agent ended the call");
    // The goodbye was heard in full before the hang-up.
    let lines = transcripts(&events);
    let last = lines.last().unwrap();
    assert_eq!(last.0, pb::Speaker::Agent);
    assert_eq!(last.1, voice_agent_server::emulator::realtime::AGENT_LINES[3]);
    assert!(!last.2, "not cut off");
    let report = server
        .emulators
        .twilio
        .as_ref()
        .unwrap()
        .call(&placed.provider_call_id)
        .unwrap();
    let stream = report.stream().unwrap();
    let marks = stream.marks_echoed.iter().filter(|m| !m.cleared).count();
    assert_eq!(marks, stream.marks_echoed.len(), "no mark was flushed by a hang-up");
    assert_eq!(
        stream.audio_received_bytes as usize,
        stream.heard_bytes().len(),
        "everything sent was played before the call ended"
    );

    // One turn metric per callee turn, consistent with the emulator: the AI
    // answers at once (sent soon after speech_stopped) and the first mark comes
    // back after the first 100 ms chunk played.
    let turns: Vec<&pb::TurnMetrics> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::call_event::Kind::Turn(t)) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(turns.len(), 3, "{turns:?}");
    for (i, t) in turns.iter().enumerate() {
        assert_eq!(t.turn_index as usize, i);
        assert!(t.first_audio_sent_ms <= t.first_audio_heard_ms, "{t:?}");
        assert!(
            t.first_audio_heard_ms >= 100,
            "the first 100 ms chunk has to play first: {t:?}"
        );
        assert!(t.first_audio_heard_ms < 2000, "{t:?}");
    }
    assert!(call.turn_latency_p50_ms <= call.turn_latency_p95_ms);
    let mut sent: Vec<u32> = turns.iter().map(|t| t.first_audio_sent_ms).collect();
    sent.sort();
    assert_eq!(call.turn_latency_p95_ms, *sent.last().unwrap());
    server.stop().await;
}

#[tokio::test]
async fn oversized_media_messages_close_the_stream_and_the_record_says_why() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut config = Config::for_tests();
    config.ring_timeout = Duration::from_secs(8);
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    let placed = client.place_call(place("+15550107")).await.unwrap().into_inner();
    let id = voice_agent_server::call::CallId::parse(&placed.call_id).unwrap();
    let secret = server.state.hub.get(&id).await.unwrap().stream_secret;
    let mut ws = twilio_media_socket(&server, &placed.call_id, &placed.provider_call_id, &secret).await;
    let big = format!(r#"{{"event":"media","media":{{"payload":"{}"}}}}"#, "A".repeat(1 << 20));
    let _ = ws.send(Message::Text(big.into())).await;
    assert!(
        closed_by_server(&mut ws).await,
        "a message over 1 MiB closes the socket"
    );
    let events = watch_all(&mut client, &placed.call_id, 0, LIMIT).await;
    let codes: Vec<String> = errors(&events).into_iter().map(|(c, _)| c).collect();
    assert!(codes.contains(&"media_socket_error".to_string()), "{codes:?}");
    let rec = server.state.hub.get(&id).await.unwrap();
    assert!(rec.end_reason.contains("media stream failed"), "{}", rec.end_reason);
    server.stop().await;
}

#[tokio::test]
async fn no_start_within_10_s_closes_the_stream() {
    let mut config = Config::for_tests();
    config.ring_timeout = Duration::from_secs(20);
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    let placed = client.place_call(place("+15550107")).await.unwrap().into_inner();
    let url = format!("ws://{}/ws/media/{}", server.addr, placed.call_id);
    let token = server.state.twilio_auth_token.expose().to_string();
    let signature = voice_agent_server::telephony::twilio::signature::compute(&token, &url, &[]);
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    req.headers_mut()
        .insert("x-twilio-signature", signature.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    // Say nothing: the server gives up after 10 s.
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        use futures_util::StreamExt;
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "closed within 15 s");
    let id = voice_agent_server::call::CallId::parse(&placed.call_id).unwrap();
    let rec = server.state.hub.get(&id).await.unwrap();
    assert!(rec.end_reason.contains("no 'start'"), "{}", rec.end_reason);
    server.stop().await;
}

/// A credential that hands out one fixed token, counting requests.
#[derive(Debug, Default)]
struct FakeCredential {
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for FakeCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        assert_eq!(scopes, ["https://ai.azure.com/.default"], "the Voice Live scope");
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(azure_core::credentials::AccessToken::new(
            "fake-entra-token",
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

#[tokio::test]
async fn entra_id_token_is_sent_as_bearer_when_no_key_is_set() {
    let emu =
        voice_agent_server::emulator::realtime::start(voice_agent_server::emulator::realtime::RealtimeEmulatorConfig {
            accepted_bearer: Some("fake-entra-token".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut config = Config::for_tests();
    config.voice_live = Some(voice_agent_server::config::VoiceLiveConfig {
        endpoint: emu.url_base(),
        api_version: "2025-10-01".into(),
        model: "gpt-realtime".into(),
        api_key: None, // → Microsoft Entra ID
    });
    let credential = std::sync::Arc::new(FakeCredential::default());
    let options = Options {
        entra: Some(voice_agent_server::realtime::entra::EntraAuth::with_credential(
            credential.clone(),
        )),
        ..Default::default()
    };
    let server = TestServer::with_options(config, options).await;
    let mut client = server.client().await;
    let req = pb::PlaceCallRequest {
        backend: pb::Backend::VoiceLive as i32,
        ..place("+15550199")
    };
    let (_, events) = call_and_watch(&mut client, req, LIMIT).await;
    // The emulator answers 401 to anything but that bearer token: a conversation proves it was sent.
    assert!(errors(&events).is_empty(), "{:?}", errors(&events));
    assert!(transcripts(&events).len() >= 4, "{:?}", transcripts(&events));
    assert_eq!(emu.sessions().len(), 1);
    assert_eq!(
        credential.calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "fetched once, then cached"
    );
    server.stop().await;
    emu.shutdown();
}

#[tokio::test]
async fn server_shutdown_mid_call_ends_it_with_that_reason_and_keeps_it() {
    use voice_agent_server::emulator::twilio::{EndCause, StreamEnd};
    let dir = std::env::temp_dir().join(format!("va-shutdown-{}", uuid::Uuid::new_v4()));
    let mut config = Config::for_tests();
    config.database = voice_agent_server::config::DatabaseLocation::File(dir.join("calls.db"));
    // Twilio of the test's own outlives the server, so it can say how the call ended on its side.
    let (twilio, options) = own_twilio(Default::default()).await;
    let server = TestServer::with_options(config.clone(), options).await;
    let mut client = server.client().await;
    let placed = client.place_call(place("+15550199")).await.unwrap().into_inner();
    let mut stream = watch(&mut client, &placed.call_id, 0).await;
    // Shut down once the conversation runs (the first transcript).
    let mut seen = watch_until(&mut stream, LIMIT, is_transcript).await;
    server.stop().await;

    // The watcher gets the end of the call before its stream ends.
    seen.extend(watch_rest(&mut stream, Duration::from_secs(10)).await);
    let Some(pb::call_event::Kind::Status(last)) = last_kind(&seen) else {
        panic!("the stream ends with a status: {seen:?}");
    };
    assert_eq!(last.status(), pb::CallStatus::Completed, "{seen:?}");
    assert_eq!(last.detail, voice_agent_server::bridge::SHUTDOWN_REASON);

    // On Twilio's side the call was hung up by the media stream closing.
    let report = tokio::time::timeout(LIMIT, twilio.wait_finished(&placed.provider_call_id))
        .await
        .expect("the emulated call ends")
        .expect("the emulator knows the call");
    assert_eq!(report.stream().unwrap().ended, Some(StreamEnd::ServerClosed));
    assert_eq!(report.end_cause, Some(EndCause::TwimlEnded));

    // The record and the conversation are kept: after a restart, GetCall
    // says why it ended and WatchCall replays what the watcher saw.
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    let call = get_call(&mut client, &placed.call_id).await;
    assert_eq!(call.status(), pb::CallStatus::Completed);
    assert_eq!(call.end_reason, voice_agent_server::bridge::SHUTDOWN_REASON);
    assert!(call.ended_at.is_some());
    let replay = watch_all(&mut client, &placed.call_id, 0, Duration::from_secs(5)).await;
    assert_eq!(replay, seen);
    assert!(
        transcripts(&replay)
            .iter()
            .any(|(s, t, _)| *s == pb::Speaker::Agent && t == voice_agent_server::emulator::realtime::AGENT_LINES[0]),
        "{:?}",
        transcripts(&replay)
    );
    server.stop().await;
    twilio.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn twilio_that_stops_reading_is_hung_up_and_the_record_says_so() {
    use voice_agent_server::emulator::realtime::{AGENT_CLIPS, AGENT_LINES, DEFAULT_SCRIPT};
    use voice_agent_server::emulator::twilio::{EndCause, Scenario, ScenarioOpts, TwilioEmulatorConfig};
    // A callee whose media stream stops reading after its first line...
    let number = "+15550190";
    let (twilio, options) = own_twilio(TwilioEmulatorConfig {
        numbers: [(
            number.to_string(),
            Scenario::Answer(ScenarioOpts {
                stall_after_first_line: true,
                ..ScenarioOpts::default()
            }),
        )]
        .into(),
        ..TwilioEmulatorConfig::default()
    })
    .await;
    // ...and an agent whose reply (half an hour of audio, streamed as fast as
    // it goes) is far more than the socket buffers in between can hold
    // (a few MiB on loopback), so the server's writes to Twilio block.
    let ai =
        voice_agent_server::emulator::realtime::start(voice_agent_server::emulator::realtime::RealtimeEmulatorConfig {
            reply_repeats: 600,
            speed: 1000.0,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut config = Config::for_tests();
    config.voice_live = voice_live_on(&ai);
    // μ-law end to end: the AI's socket carries no more than Twilio's.
    config.audio_mode = AudioMode::Passthrough;
    let server = TestServer::with_options(config, options).await;
    let mut client = server.client().await;
    let req = pb::PlaceCallRequest {
        backend: pb::Backend::VoiceLive as i32,
        greeting: Some(String::new()),
        ..place(number)
    };
    let (placed, events) = call_and_watch(&mut client, req, LIMIT).await;

    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::Completed));
    let call = get_call(&mut client, &placed.call_id).await;
    assert!(
        call.end_reason.starts_with("Twilio's media stream stopped taking data"),
        "{}",
        call.end_reason
    );
    assert!(
        errors(&events).contains(&("media_socket_error".to_string(), call.end_reason.clone())),
        "{:?}",
        errors(&events)
    );
    // What was said before the stall is kept.
    assert_eq!(
        transcripts(&events),
        vec![
            (pb::Speaker::Agent, AGENT_LINES[0].to_string(), false),
            (pb::Speaker::Callee, DEFAULT_SCRIPT[0].to_string(), false),
        ]
    );
    // Twilio's side: the callee took in the greeting and none of the reply,
    // and the call ended through the REST API (the stalled socket could not
    // carry a close).
    let report = tokio::time::timeout(LIMIT, twilio.wait_finished(&placed.provider_call_id))
        .await
        .expect("the emulated call ends")
        .expect("the emulator knows the call");
    assert_eq!(report.end_cause, Some(EndCause::RestUpdate));
    assert_eq!(
        report.stream().unwrap().audio_received_bytes,
        AGENT_CLIPS[0].len() as u64
    );
    server.stop().await;
    twilio.shutdown().await;
    ai.shutdown();
}

#[tokio::test]
async fn ai_that_stops_reading_gets_one_reconnect_then_an_apology_and_the_record_says_so() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    // Every session greets, then stops reading, as a hung service would.
    let (server, ai) = {
        let ai = voice_agent_server::emulator::realtime::start(
            voice_agent_server::emulator::realtime::RealtimeEmulatorConfig {
                stall_after_responses: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut config = Config::for_tests();
        config.voice_live = voice_live_on(&ai);
        // This callee never answers: the test's own socket is the call's
        // media stream, so it can send audio faster than real time.
        config.ring_timeout = Duration::from_secs(120);
        (TestServer::with_config(config).await, ai)
    };
    let mut client = server.client().await;
    let req = pb::PlaceCallRequest {
        backend: pb::Backend::VoiceLive as i32,
        ..place("+15550107")
    };
    let placed = client.place_call(req).await.unwrap().into_inner();
    let id = voice_agent_server::call::CallId::parse(&placed.call_id).unwrap();
    let secret = server.state.hub.get(&id).await.unwrap().stream_secret;
    let ws = twilio_media_socket(&server, &placed.call_id, &placed.provider_call_id, &secret).await;
    let (mut to_server, mut from_server) = ws.split();
    // Callee audio as fast as the server takes it: once the AI stops
    // reading, far more than the socket buffers to it can hold.
    let frame = serde_json::json!({"event": "media", "streamSid": "MZ00000000000000000000000000000001",
        "media": {"track": "inbound", "chunk": "1", "timestamp": "20", "payload": "/".repeat(212) + "/w=="}})
    .to_string();
    let flood = tokio::spawn(async move { while to_server.send(Message::Text(frame.clone().into())).await.is_ok() {} });
    // Twilio's side keeps reading (the agent's greetings) until the server closes the stream.
    tokio::time::timeout(LIMIT, async {
        while let Some(Ok(m)) = from_server.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await
    .expect("the server closes the media stream");
    flood.abort();

    let rec = server.state.hub.get(&id).await.unwrap();
    assert_eq!(
        rec.end_reason,
        "the AI failed: the AI connection stopped taking data: nothing could be written to it for 5s"
    );
    let sessions = ai.sessions();
    assert_eq!(sessions.len(), 2, "one reconnect");
    assert!(sessions.iter().all(|s| s.stalled));
    // The provider was asked to apologise and hang up.
    let report = server
        .emulators
        .twilio
        .as_ref()
        .unwrap()
        .call(&placed.provider_call_id)
        .unwrap();
    assert!(
        report
            .updates
            .iter()
            .flatten()
            .any(|(k, v)| k == "Twiml" && v.contains(voice_agent_server::bridge::APOLOGY)),
        "{:?}",
        report.updates
    );
    // The phone is still ringing (the emulated callee never answers): end it.
    client
        .hang_up_call(pb::HangUpCallRequest {
            call_id: placed.call_id.clone(),
        })
        .await
        .unwrap();
    let events = watch_all(&mut client, &placed.call_id, 0, LIMIT).await;
    let reconnected: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::call_event::Kind::Notice(n)) if n.code == "ai_reconnected" => Some(n.message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reconnected.len(), 1, "{reconnected:?}");
    assert!(
        reconnected[0].starts_with("the AI connection stopped taking data"),
        "{reconnected:?}"
    );
    let codes: Vec<String> = errors(&events).into_iter().map(|(c, _)| c).collect();
    assert!(codes.contains(&"ai_socket_error".to_string()), "{codes:?}");
    let call = get_call(&mut client, &placed.call_id).await;
    assert_eq!(call.end_reason, rec.end_reason, "the first reason stays");
    server.stop().await;
    ai.shutdown();
}

#[test]
fn a_crash_leaves_no_call_ringing_with_the_provider() {
    use voice_agent_server::emulator::twilio::EndCause;
    let dir = std::env::temp_dir().join(format!("va-crash-{}", uuid::Uuid::new_v4()));
    let mut config = Config::for_tests();
    config.database = voice_agent_server::config::DatabaseLocation::File(dir.join("calls.db"));
    config.ring_timeout = Duration::from_secs(60);
    // Twilio of the test's own, on a runtime that outlives the crashed server.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (twilio, options) = rt.block_on(own_twilio(Default::default()));

    // The first server runs on a runtime of its own: dropping that runtime
    // stops every task of the server where it is, with no graceful path (as
    // a crash would).
    let crashing = tokio::runtime::Runtime::new().unwrap();
    let (server, placed) = crashing.block_on(async {
        let server = TestServer::with_options(config.clone(), options).await;
        let mut client = server.client().await;
        // A phone that rings for a minute: the call is ringing at the crash.
        let placed = client.place_call(place("+15550107")).await.unwrap().into_inner();
        let mut stream = watch(&mut client, &placed.call_id, 0).await;
        watch_until(
            &mut stream,
            LIMIT,
            |e| matches!(&e.kind, Some(pb::call_event::Kind::Status(s)) if s.status() == pb::CallStatus::Ringing),
        )
        .await;
        (server, placed)
    });
    crashing.shutdown_background();
    drop(server);
    let sid = placed.provider_call_id.clone();
    assert_eq!(rt.block_on(async { twilio.call(&sid).unwrap().status }), "ringing");

    // The next start hangs the call up with the provider, then marks it failed.
    rt.block_on(async {
        let server = TestServer::with_options(config, twilio_options(&twilio)).await;
        let report = tokio::time::timeout(LIMIT, twilio.wait_finished(&sid))
            .await
            .expect("the emulated call ends")
            .expect("the emulator knows the call");
        assert_eq!(report.end_cause, Some(EndCause::RestUpdate), "{report:?}");
        assert_eq!(report.status, "canceled");
        let mut client = server.client().await;
        let call = get_call(&mut client, &placed.call_id).await;
        assert_eq!(call.status(), pb::CallStatus::Failed);
        assert_eq!(
            call.end_reason,
            voice_agent_server::call::lifecycle::RESTART_HUNG_UP_REASON
        );
        let events = watch_all(&mut client, &placed.call_id, 0, Duration::from_secs(5)).await;
        assert!(errors(&events).is_empty(), "{:?}", errors(&events));
        server.stop().await;
        twilio.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failed_hang_up_after_a_crash_is_an_error_event() {
    let dir = std::env::temp_dir().join(format!("va-crash-{}", uuid::Uuid::new_v4()));
    let mut config = Config::for_tests();
    config.database = voice_agent_server::config::DatabaseLocation::File(dir.join("calls.db"));
    config.ring_timeout = Duration::from_secs(60);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (first_twilio, options) = rt.block_on(own_twilio(Default::default()));
    let crashing = tokio::runtime::Runtime::new().unwrap();
    let (server, placed) = crashing.block_on(async {
        let server = TestServer::with_options(config.clone(), options).await;
        let mut client = server.client().await;
        let placed = client.place_call(place("+15550107")).await.unwrap().into_inner();
        let mut stream = watch(&mut client, &placed.call_id, 0).await;
        watch_until(
            &mut stream,
            LIMIT,
            |e| matches!(&e.kind, Some(pb::call_event::Kind::Status(s)) if s.status() == pb::CallStatus::Ringing),
        )
        .await;
        (server, placed)
    });
    crashing.shutdown_background();
    drop(server);
    // A provider that does not know the call (another account): the hang-up is refused.
    rt.block_on(async {
        let (other_twilio, options) = own_twilio(Default::default()).await;
        let server = TestServer::with_options(config, options).await;
        let mut client = server.client().await;
        let call = get_call(&mut client, &placed.call_id).await;
        assert_eq!(call.status(), pb::CallStatus::Failed);
        assert_eq!(
            call.end_reason,
            voice_agent_server::call::lifecycle::RESTART_HANG_UP_FAILED_REASON
        );
        let events = watch_all(&mut client, &placed.call_id, 0, Duration::from_secs(5)).await;
        let errors = errors(&events);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].0.starts_with("twilio_") || errors[0].0 == "telephony_error",
            "{errors:?}"
        );
        assert!(errors[0].1.contains("after a restart"), "{errors:?}");
        server.stop().await;
        other_twilio.shutdown().await;
        first_twilio.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_dtmf_flood_of_oversized_digits_stores_nothing() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut config = Config::for_tests();
    config.ring_timeout = Duration::from_secs(60);
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    // A callee that never answers: the only media stream is the test's.
    let placed = client.place_call(place("+15550107")).await.unwrap().into_inner();
    let id = voice_agent_server::call::CallId::parse(&placed.call_id).unwrap();
    let secret = server.state.hub.get(&id).await.unwrap().stream_secret;
    let mut ws = twilio_media_socket(&server, &placed.call_id, &placed.provider_call_id, &secret).await;
    let mut stream = watch(&mut client, &placed.call_id, 0).await;
    let before = server.state.hub.get(&id).await.unwrap().event_count;

    let digits = "1".repeat(20 * 1024);
    let flood = serde_json::json!({"event": "dtmf", "streamSid": "MZ00000000000000000000000000000001",
        "sequenceNumber": "3", "dtmf": {"track": "inbound_track", "digit": digits}})
    .to_string();
    for _ in 0..20_000 {
        ws.feed(Message::Text(flood.clone().into())).await.unwrap();
    }
    // Then one real key: once it is stored, everything before it was handled.
    let key = r#"{"event":"dtmf","streamSid":"MZ00000000000000000000000000000001","sequenceNumber":"4","dtmf":{"track":"inbound_track","digit":"7"}}"#;
    ws.send(Message::Text(key.into())).await.unwrap();
    let seen = watch_until(
        &mut stream,
        LIMIT,
        |e| matches!(&e.kind, Some(pb::call_event::Kind::Dtmf(d)) if d.digit == "7"),
    )
    .await;

    let dtmf: Vec<_> = seen
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::call_event::Kind::Dtmf(d)) => Some(d.digit.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(dtmf, ["7"], "only the real key is stored");
    let malformed: Vec<_> = errors(&seen)
        .into_iter()
        .filter(|(c, _)| c == "media_malformed")
        .collect();
    assert_eq!(malformed.len(), 1, "reported once: {malformed:?}");
    // Nothing else was stored for the flood (status changes of the ringing call aside).
    let rec = server.state.hub.get(&id).await.unwrap();
    let stored = server
        .state
        .hub
        .store()
        .events_after(&id, before, usize::MAX)
        .await
        .unwrap();
    let not_status: Vec<_> = stored
        .iter()
        .filter(|e| !matches!(e.kind, voice_agent_server::call::EventKind::Status { .. }))
        .collect();
    assert_eq!(not_status.len(), 2, "{not_status:?}");
    assert_eq!(rec.event_count, stored.last().unwrap().sequence);
    let metrics = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metric(&metrics, "voice_agent_media_malformed_total") >= 20_000.0);
    server.stop().await;
}
