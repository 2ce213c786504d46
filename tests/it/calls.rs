//! Whole calls through the Twilio emulator and the realtime-AI emulator:
//! every scenario's life cycle, the conversation in each AI dialect and audio
//! mode, signatures, media-stream checks and provider errors.

use std::time::Duration;

use voice_agent_proto::v1 as pb;
use voice_agent_server::config::{AudioMode, Config};
use voice_agent_tests::*;

const LIMIT: Duration = Duration::from_secs(90);

fn pb_statuses(list: &[pb::CallStatus]) -> Vec<&'static str> {
    list.iter().map(|s| s.as_str_name()).collect()
}

async fn conversation(config: Config, backend: pb::Backend) {
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    let req = pb::PlaceCallRequest {
        backend: backend as i32,
        ..place("+15550100")
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
        .state
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
    let call = client
        .get_call(pb::GetCallRequest {
            call_id: placed.call_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .call
        .unwrap();
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
    let mut stream = client
        .watch_call(pb::WatchCallRequest {
            call_id: placed.call_id.clone(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    tokio::time::timeout(LIMIT, async {
        while let Some(m) = stream.message().await.unwrap() {
            let ev = m.event.unwrap();
            let is_transcript = matches!(ev.kind, Some(pb::call_event::Kind::Transcript(_)));
            seen.push(ev);
            if is_transcript {
                break;
            }
        }
    })
    .await
    .expect("a transcript arrives");
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
    let call = client
        .get_call(pb::GetCallRequest {
            call_id: placed.call_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .call
        .unwrap();
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
