//! The API surface on one port: gRPC, grpc-web, reflection, health, auth,
//! validation, 404s, WatchCall semantics and durability across restarts.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use prost::Message;
use tokio_stream::StreamExt;
use voice_agent_proto::v1 as pb;
use voice_agent_server::config::{Config, DatabaseLocation, Secret};
use voice_agent_tests::*;

mod browser;
mod probes;

const CALL_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_service() {
    let server = TestServer::start().await;
    let channel = server.channel().await;

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut client = ServerReflectionClient::new(channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"voiceagent.v1.VoiceAgentService".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");

    // grpcurl 1.8 speaks v1alpha.
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaReq;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResp;
    let mut client = AlphaClient::new(channel);
    let req = AlphaRequest {
        host: String::new(),
        message_request: Some(AlphaReq::FileContainingSymbol("voiceagent.v1.VoiceAgentService".into())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.next().await.unwrap().unwrap();
    assert!(
        matches!(resp.message_response, Some(AlphaResp::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "v1alpha must answer with the file descriptor"
    );
    server.stop().await;
}

#[tokio::test]
async fn health_is_serving_and_open_without_a_token() {
    let mut config = Config::for_tests();
    config.api_token = Some(Secret::new("t0ken"));
    let server = TestServer::with_config(config).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    for service in ["", "voiceagent.v1.VoiceAgentService"] {
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            resp.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn auth_is_required_when_a_token_is_set() {
    let mut config = Config::for_tests();
    config.api_token = Some(Secret::new("s3cret"));
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;

    let e = client.list_calls(pb::ListCallsRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = client
        .list_calls(with_token(pb::ListCallsRequest::default(), "wrong"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = client
        .place_call(with_token(place("+15550100"), "wrong"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        server.state.hub.store().list_calls(10, None).await.unwrap().calls.len(),
        0,
        "nothing stored"
    );
    client
        .list_calls(with_token(pb::ListCallsRequest::default(), "s3cret"))
        .await
        .expect("the right token is accepted");

    // grpc-web gets the same answer.
    let (_, _, trailers) = grpc_web(
        &server.url(),
        "voiceagent.v1.VoiceAgentService/ListCalls",
        &pb::ListCallsRequest::default(),
        &[],
    )
    .await;
    assert!(
        trailers.iter().any(|(k, v)| k == "grpc-status" && v == "16"),
        "{trailers:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_behind_the_api_token() {
    let mut config = Config::for_tests();
    config.api_token = Some(Secret::new("s3cret"));
    let server = TestServer::with_config(config).await;
    let url = format!("{}/metrics", server.url());
    let http = reqwest::Client::new();
    for auth in [None, Some("Bearer wrong")] {
        let mut req = http.get(&url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    }
    let resp = http.get(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.unwrap();
    // A fresh server: every family is there, with nothing counted yet.
    for family in [
        "voice_agent_bridge_frame_latency_seconds histogram",
        "voice_agent_barge_in_reaction_seconds histogram",
        "voice_agent_bridge_frames_total counter",
        "voice_agent_active_media_bridges gauge",
    ] {
        assert!(text.contains(&format!("# TYPE {family}")), "{family} in\n{text}");
    }
    assert_eq!(
        metric(
            &text,
            "voice_agent_bridge_frame_latency_seconds_bucket{direction=\"inbound\",le=\"+Inf\"}"
        ),
        0.0
    );
    assert_eq!(metric(&text, "voice_agent_calls_placed_total"), 0.0);
    // A placed call is counted.
    let mut client = server.client().await;
    client
        .place_call(with_token(place("+15550103"), "s3cret"))
        .await
        .unwrap();
    let text = http
        .get(&url)
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&text, "voice_agent_calls_placed_total"), 1.0);
    server.stop().await;
}

#[tokio::test]
async fn every_validation_error_names_its_field() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let long = |n: usize| "x".repeat(n);
    let cases: Vec<(pb::PlaceCallRequest, &str)> = vec![
        (place(""), "to"),
        (place("14155551212"), "to"),
        (place("+1415"), "to"),
        (place("+1415555121234567"), "to"),
        (place("+1415abc1212"), "to"),
        (
            pb::PlaceCallRequest {
                backend: 42,
                ..place("+15550100")
            },
            "backend",
        ),
        (
            pb::PlaceCallRequest {
                instructions: long(16 * 1024 + 1),
                ..place("+15550100")
            },
            "instructions",
        ),
        (
            pb::PlaceCallRequest {
                voice: long(129),
                ..place("+15550100")
            },
            "voice",
        ),
        (
            pb::PlaceCallRequest {
                greeting: Some(long(1001)),
                ..place("+15550100")
            },
            "greeting",
        ),
        (
            pb::PlaceCallRequest {
                metadata: (0..33).map(|i| (format!("k{i}"), "v".into())).collect(),
                ..place("+15550100")
            },
            "metadata",
        ),
        (
            pb::PlaceCallRequest {
                metadata: [(long(65), "v".to_string())].into_iter().collect(),
                ..place("+15550100")
            },
            "metadata",
        ),
        (
            pb::PlaceCallRequest {
                max_duration: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
                ..place("+15550100")
            },
            "max_duration",
        ),
    ];
    for (req, field) in cases {
        let e = client.place_call(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e:?}");
        assert!(
            e.message().starts_with(&format!("{field}:")),
            "{field}: {}",
            e.message()
        );
    }
    let e = client.place_call(place("+1415")).await.unwrap_err();
    assert!(
        e.message().contains("E.164") && e.message().contains("+14155551212"),
        "{}",
        e.message()
    );
    assert_eq!(
        server.state.hub.store().list_calls(10, None).await.unwrap().calls.len(),
        0,
        "nothing stored"
    );

    for (e, field) in [
        (
            client
                .get_call(pb::GetCallRequest { call_id: "nope".into() })
                .await
                .unwrap_err(),
            "call_id",
        ),
        (
            client
                .list_calls(pb::ListCallsRequest {
                    page_size: 1000,
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            "page_size",
        ),
        (
            client
                .list_calls(pb::ListCallsRequest {
                    page_token: "garbage".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            "page_token",
        ),
    ] {
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}");
        assert!(e.message().starts_with(field), "{}", e.message());
    }
    let unknown = "call_0123456789abcdef0123456789abcdef";
    let e = client
        .get_call(pb::GetCallRequest {
            call_id: unknown.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = client
        .watch_call(pb::WatchCallRequest {
            call_id: unknown.into(),
            after_sequence: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_plain_404s() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    for path in ["/nope", "/twilio/nope", "/voiceagent.v1.Other/Method", "/ws/media"] {
        let resp = http.get(format!("{}{path}", server.url())).send().await.unwrap();
        assert_eq!(resp.status(), 404, "GET {path}");
        assert!(
            resp.headers().get("grpc-status").is_none(),
            "GET {path} must not be a gRPC answer"
        );
    }
    let resp = http
        .post(format!("{}/voiceagent.v2.Nope/Call", server.url()))
        .header("content-type", "application/grpc-web+proto")
        .body(vec![0, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn grpc_web_unary_and_server_streaming_over_http1() {
    // The dev server's origin, allowed (no CORS by default: see browser.rs).
    let mut config = Config::for_tests();
    config.cors_allowed_origins = vec!["http://localhost:5173".into()];
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    let (placed, events) = call_and_watch(&mut client, place("+15550102"), CALL_LIMIT).await;

    let (status, frames, trailers) = grpc_web(
        &server.url(),
        "voiceagent.v1.VoiceAgentService/GetCall",
        &pb::GetCallRequest {
            call_id: placed.call_id.clone(),
        },
        &[("origin", "http://localhost:5173")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        trailers.iter().any(|(k, v)| k == "grpc-status" && v == "0"),
        "{trailers:?}"
    );
    let call = pb::GetCallResponse::decode(&frames[0][..]).unwrap().call.unwrap();
    assert_eq!(call.call_id, placed.call_id);
    assert_eq!(call.status(), pb::CallStatus::Busy);

    let (status, frames, trailers) = grpc_web(
        &server.url(),
        "voiceagent.v1.VoiceAgentService/WatchCall",
        &pb::WatchCallRequest {
            call_id: placed.call_id.clone(),
            after_sequence: 0,
        },
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        trailers.iter().any(|(k, v)| k == "grpc-status" && v == "0"),
        "{trailers:?}"
    );
    let web_events: Vec<pb::CallEvent> = frames
        .iter()
        .map(|f| pb::WatchCallResponse::decode(&f[..]).unwrap().event.unwrap())
        .collect();
    assert_eq!(web_events, events, "grpc-web streams the same events as gRPC");

    // CORS preflight from a browser on another origin.
    let resp = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/voiceagent.v1.VoiceAgentService/GetCall", server.url()),
        )
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,authorization",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(resp.headers()["access-control-allow-origin"], "http://localhost:5173");
    server.stop().await;
}

#[tokio::test]
async fn two_watchers_see_identical_gapless_sequences() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let placed = client.place_call(place("+15550100")).await.unwrap().into_inner();
    let (mut a, mut b) = (client.clone(), client.clone());
    let id_a = placed.call_id.clone();
    let id_b = placed.call_id.clone();
    let wa = tokio::spawn(async move { watch_all(&mut a, &id_a, 0, CALL_LIMIT).await });
    // The second watcher joins late and resumes from sequence 2.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let wb = tokio::spawn(async move { watch_all(&mut b, &id_b, 2, CALL_LIMIT).await });
    let (ea, eb) = (wa.await.unwrap(), wb.await.unwrap());
    let seq_a: Vec<u64> = ea.iter().map(|e| e.sequence).collect();
    assert_eq!(seq_a, (1..=ea.len() as u64).collect::<Vec<_>>(), "gapless from 1");
    assert_eq!(&ea[2..], &eb[..], "the late watcher sees exactly the rest");
    assert_eq!(statuses(&ea).last(), Some(&pb::CallStatus::Completed));

    // An ended call replays and ends.
    let replay = watch_all(&mut client, &placed.call_id, 0, Duration::from_secs(5)).await;
    assert_eq!(replay, ea);
    server.stop().await;
}

#[tokio::test]
async fn history_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("va-restart-{}", uuid::Uuid::new_v4()));
    let mut config = Config::for_tests();
    config.database = DatabaseLocation::File(dir.join("calls.db"));

    let server = TestServer::with_config(config.clone()).await;
    let mut client = server.client().await;
    let (placed, before) = call_and_watch(&mut client, place("+15550103"), CALL_LIMIT).await;
    let list_before = client
        .list_calls(pb::ListCallsRequest::default())
        .await
        .unwrap()
        .into_inner();
    server.stop().await;

    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    let after = watch_all(&mut client, &placed.call_id, 0, Duration::from_secs(5)).await;
    assert_eq!(after, before, "the same events, read from the store");
    assert_eq!(statuses(&after).last(), Some(&pb::CallStatus::NoAnswer));
    let list_after = client
        .list_calls(pb::ListCallsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list_after, list_before);
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn list_calls_pages_newest_first() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (placed, _) = call_and_watch(&mut client, place("+15550104"), CALL_LIMIT).await;
        ids.push(placed.call_id);
    }
    let p1 = client
        .list_calls(pb::ListCallsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        p1.calls.iter().map(|c| c.call_id.clone()).collect::<Vec<_>>(),
        vec![ids[2].clone(), ids[1].clone()]
    );
    assert!(!p1.next_page_token.is_empty());
    let p2 = client
        .list_calls(pb::ListCallsRequest {
            page_size: 2,
            page_token: p1.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p2.calls.len(), 1);
    assert_eq!(p2.calls[0].call_id, ids[0]);
    assert!(p2.next_page_token.is_empty());
    assert!(p2.calls[0].emulated);
    assert_eq!(p2.calls[0].status(), pb::CallStatus::Failed);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_is_graceful_and_watchers_get_what_is_stored() {
    let mut config = Config::for_tests();
    config.ring_timeout = Duration::from_secs(60);
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    // A phone that rings for a minute: the call is live when the server stops.
    let placed = client.place_call(place("+15550107")).await.unwrap().into_inner();
    let mut stream = watch(&mut client, &placed.call_id, 0).await;
    // Ringing when the server stops.
    let before = watch_until(
        &mut stream,
        Duration::from_secs(30),
        |ev| matches!(&ev.kind, Some(pb::call_event::Kind::Status(s)) if s.status() == pb::CallStatus::Ringing),
    )
    .await;
    assert_eq!(before[0].sequence, 1);
    let emulators = server.emulators.clone();
    // A guard against a hang, not a timing: the grace period is 5 s.
    tokio::time::timeout(Duration::from_secs(60), server.stop())
        .await
        .expect("the server stops");
    // The stream ends (it does not hang), having delivered what was stored,
    // down to the call's end: cancelled, so the callee cannot answer into a
    // server that is gone.
    let rest = watch_rest(&mut stream, Duration::from_secs(5)).await;
    match last_kind(&rest) {
        Some(pb::call_event::Kind::Status(s)) => {
            assert_eq!(s.status(), pb::CallStatus::Canceled, "{rest:?}");
            assert_eq!(s.detail, voice_agent_server::bridge::SHUTDOWN_REASON);
        }
        other => panic!("the last event is not the end of the call: {other:?} in {rest:?}"),
    }
    let emulated = emulators
        .twilio
        .as_ref()
        .expect("the Twilio emulator")
        .call(&placed.provider_call_id)
        .expect("the emulated call");
    assert_eq!(
        emulated.end_cause,
        Some(voice_agent_server::emulator::twilio::EndCause::RestUpdate),
        "{emulated:?}"
    );
}

/// (backend, emulated, default voice) of each entry, in order.
async fn server_info(
    client: &mut voice_agent_proto::v1::voice_agent_service_client::VoiceAgentServiceClient<tonic::transport::Channel>,
) -> pb::GetServerInfoResponse {
    client
        .get_server_info(pb::GetServerInfoRequest::default())
        .await
        .expect("GetServerInfo")
        .into_inner()
}

fn offered(info: &pb::GetServerInfoResponse) -> Vec<(pb::Backend, bool, String)> {
    info.backends
        .iter()
        .map(|b| {
            (
                pb::Backend::try_from(b.backend).expect("a known backend"),
                b.emulated,
                b.default_voice.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn server_info_in_emulator_mode_offers_both_backends_emulated() {
    let mut config = Config::for_tests();
    config.voice = "verse".into();
    config.max_call_duration = Duration::from_secs(120);
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    let info = server_info(&mut client).await;
    assert_eq!(
        offered(&info),
        [
            (pb::Backend::VoiceLive, true, "en-US-AriaNeural".to_string()),
            (pb::Backend::GptRealtime, true, "verse".to_string()),
        ]
    );
    assert_eq!(info.default_backend(), pb::Backend::VoiceLive);
    assert!(info.telephony_emulated);
    assert_eq!(info.default_greeting, voice_agent_server::config::DEFAULT_GREETING);
    assert_eq!(info.default_max_duration.map(|d| d.seconds), Some(120));
    assert_eq!(info.audio_mode(), pb::AudioMode::Transcode);
    assert_eq!(info.server_version, env!("CARGO_PKG_VERSION"));

    // What it says is what PlaceCall does: every offered backend is accepted,
    // and an unspecified one becomes the default with that backend's voice.
    for (backend, _, voice) in offered(&info) {
        let placed = client
            .place_call(pb::PlaceCallRequest {
                backend: backend as i32,
                ..place("+15550102")
            })
            .await
            .unwrap_or_else(|e| panic!("{backend:?} is offered but refused: {e}"))
            .into_inner();
        assert!(placed.emulated);
        assert_eq!(get_call(&mut client, &placed.call_id).await.voice, voice);
    }
    let placed = client.place_call(place("+15550102")).await.unwrap().into_inner();
    let call = get_call(&mut client, &placed.call_id).await;
    assert_eq!(call.backend, info.default_backend);
    assert_eq!(call.voice, info.backends[0].default_voice);
    server.stop().await;
}

#[tokio::test]
async fn server_info_publishes_the_limits_place_call_enforces() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let info = server_info(&mut client).await;
    let names: Vec<&str> = info.backends.iter().map(|b| b.display_name.as_str()).collect();
    assert_eq!(names, ["Voice Live", "gpt-realtime"]);
    let l = info.limits.expect("limits");
    assert_eq!((l.min_to_digits, l.max_to_digits), (8, 15));
    let secs = |d: Option<prost_types::Duration>| d.expect("a duration").seconds;
    let (shortest, longest) = (secs(l.shortest_max_duration), secs(l.longest_max_duration));
    assert!(0 < shortest && shortest < longest, "{l:?}");
    let long = |n: u32| "x".repeat(n as usize);
    let digits = |n: u32| format!("+1{}", "5".repeat(n as usize - 1));
    let metadata = |entries: u32, key: u32, value: u32| {
        (0..entries)
            .map(|i| (format!("{i:0>width$}", width = key as usize), long(value)))
            .collect()
    };
    let duration = |seconds| Some(prost_types::Duration { seconds, nanos: 0 });

    // Everything at its limit is accepted...
    let at_limits = [
        pb::PlaceCallRequest {
            to: digits(l.max_to_digits),
            instructions: long(l.max_instructions_bytes),
            voice: long(l.max_voice_bytes),
            greeting: Some(long(l.max_greeting_bytes)),
            metadata: metadata(
                l.max_metadata_entries,
                l.max_metadata_key_bytes,
                l.max_metadata_value_bytes,
            ),
            max_duration: duration(longest),
            ..Default::default()
        },
        pb::PlaceCallRequest {
            max_duration: duration(shortest),
            // The emulator's busy line: 8 digits.
            ..place("+15550102")
        },
    ];
    assert_eq!(at_limits[1].to.len() - 1, l.min_to_digits as usize);
    for req in at_limits {
        client
            .place_call(req)
            .await
            .unwrap_or_else(|e| panic!("at the published limits but refused: {e}"));
    }
    // ...and one step beyond any of them is refused, naming the field.
    let beyond: [(pb::PlaceCallRequest, &str); 10] = [
        (place(&digits(l.min_to_digits - 1)), "to"),
        (place(&digits(l.max_to_digits + 1)), "to"),
        (
            pb::PlaceCallRequest {
                instructions: long(l.max_instructions_bytes + 1),
                ..place("+15550102")
            },
            "instructions",
        ),
        (
            pb::PlaceCallRequest {
                voice: long(l.max_voice_bytes + 1),
                ..place("+15550102")
            },
            "voice",
        ),
        (
            pb::PlaceCallRequest {
                greeting: Some(long(l.max_greeting_bytes + 1)),
                ..place("+15550102")
            },
            "greeting",
        ),
        (
            pb::PlaceCallRequest {
                metadata: metadata(l.max_metadata_entries + 1, 3, 1),
                ..place("+15550102")
            },
            "metadata",
        ),
        (
            pb::PlaceCallRequest {
                metadata: metadata(1, l.max_metadata_key_bytes + 1, 1),
                ..place("+15550102")
            },
            "metadata",
        ),
        (
            pb::PlaceCallRequest {
                metadata: metadata(1, 1, l.max_metadata_value_bytes + 1),
                ..place("+15550102")
            },
            "metadata",
        ),
        (
            pb::PlaceCallRequest {
                max_duration: duration(shortest - 1),
                ..place("+15550102")
            },
            "max_duration",
        ),
        (
            pb::PlaceCallRequest {
                max_duration: duration(longest + 1),
                ..place("+15550102")
            },
            "max_duration",
        ),
    ];
    for (req, field) in beyond {
        let e = client.place_call(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e:?}");
        assert!(
            e.message().starts_with(&format!("{field}:")),
            "{field}: {}",
            e.message()
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn server_info_offers_only_the_configured_backend() {
    let emu = voice_agent_server::emulator::realtime::start(Default::default())
        .await
        .unwrap();
    let mut config = Config::for_tests();
    config.audio_mode = voice_agent_server::config::AudioMode::Passthrough;
    let url = emu.url_base().join("/v1/realtime").unwrap();
    config.openai = Some(voice_agent_server::config::OpenAiConfig {
        api_key: Secret::new(emu.api_key()),
        url: url.clone(),
        model: "gpt-realtime".into(),
    });
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    let info = server_info(&mut client).await;
    assert_eq!(offered(&info), [(pb::Backend::GptRealtime, false, "alloy".to_string())]);
    assert_eq!(info.default_backend(), pb::Backend::GptRealtime);
    assert!(info.telephony_emulated, "Twilio is still the emulator");
    assert_eq!(info.audio_mode(), pb::AudioMode::Passthrough);
    let text = format!("{info:?}");
    assert!(!text.contains(emu.api_key()), "no key in {text}");
    let endpoint = format!("127.0.0.1:{}", url.port().expect("a port"));
    assert!(!text.contains(&endpoint), "no endpoint in {text}");

    // PlaceCall agrees: the backend left out is refused.
    let e = client
        .place_call(pb::PlaceCallRequest {
            backend: pb::Backend::VoiceLive as i32,
            ..place("+15550102")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    let placed = client.place_call(place("+15550102")).await.unwrap().into_inner();
    assert_eq!(
        get_call(&mut client, &placed.call_id).await.backend(),
        pb::Backend::GptRealtime
    );
    server.stop().await;
    emu.shutdown();
}

#[tokio::test]
async fn server_info_needs_the_token_like_every_rpc() {
    let mut config = Config::for_tests();
    config.api_token = Some(Secret::new("s3cret"));
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    for req in [
        tonic::Request::new(pb::GetServerInfoRequest::default()),
        with_token(pb::GetServerInfoRequest::default(), "wrong"),
    ] {
        let e = client.get_server_info(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    }
    let info = client
        .get_server_info(with_token(pb::GetServerInfoRequest::default(), "s3cret"))
        .await
        .expect("the right token is accepted")
        .into_inner();
    assert_eq!(info.backends.len(), 2);

    // The browser's path: grpc-web over HTTP/1.1.
    let method = "voiceagent.v1.VoiceAgentService/GetServerInfo";
    let (_, frames, trailers) = grpc_web(&server.url(), method, &pb::GetServerInfoRequest::default(), &[]).await;
    assert!(frames.is_empty());
    assert!(
        trailers.iter().any(|(k, v)| k == "grpc-status" && v == "16"),
        "{trailers:?}"
    );
    let (_, frames, trailers) = grpc_web(
        &server.url(),
        method,
        &pb::GetServerInfoRequest::default(),
        &[("authorization", "Bearer s3cret")],
    )
    .await;
    assert!(
        trailers.iter().any(|(k, v)| k == "grpc-status" && v == "0"),
        "{trailers:?}"
    );
    let decoded = pb::GetServerInfoResponse::decode(&frames[0][..]).expect("one message");
    assert_eq!(decoded, info);
    server.stop().await;
}

/// The `google.rpc` details of an error status (tonic-types reads `grpc-status-details-bin`).
fn details(e: &tonic::Status) -> (tonic_types::ErrorInfo, Vec<String>) {
    use tonic_types::StatusExt;
    let details = e.check_error_details().expect("the details decode");
    let info = details
        .error_info()
        .cloned()
        .unwrap_or_else(|| panic!("no ErrorInfo on {e:?}"));
    let fields = details
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    (info, fields)
}

#[tokio::test]
async fn errors_carry_error_info_and_bad_request_over_grpc_and_grpc_web() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    let e = client.place_call(place("+1415")).await.unwrap_err();
    let (info, fields) = details(&e);
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("INVALID_ARGUMENT", "voice-agent")
    );
    assert_eq!(fields, ["to"]);

    // A huge bad value comes back cut short: the details are a header.
    let e = client
        .place_call(place(&format!("+{}", "9".repeat(100_000))))
        .await
        .unwrap_err();
    assert!(e.details().len() < 2048, "{} bytes of details", e.details().len());
    assert!(e.message().len() < 1024, "{} bytes of message", e.message().len());

    // Stored, then refused by the provider: the error names the stored call.
    let e = client.place_call(place("+15005550001")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let (info, _) = details(&e);
    assert_eq!(info.reason, "TWILIO_ERROR");
    assert_eq!(info.metadata.get("provider_code").map(String::as_str), Some("21211"));
    assert_eq!(info.metadata.get("code").map(String::as_str), Some("twilio_21211"));
    let refused = info.metadata.get("call_id").cloned().expect("the stored call's id");
    let stored = client
        .get_call(pb::GetCallRequest {
            call_id: refused.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .call
        .unwrap();
    assert_eq!(stored.status(), pb::CallStatus::Failed);
    assert_eq!(stored.provider_error_code, "21211");

    let unknown = "call_0123456789abcdef0123456789abcdef";
    let e = client
        .get_call(pb::GetCallRequest {
            call_id: unknown.into(),
        })
        .await
        .unwrap_err();
    let (info, _) = details(&e);
    assert_eq!(info.reason, "CALL_NOT_FOUND");
    assert_eq!(info.metadata.get("call_id").map(String::as_str), Some(unknown));

    let e = client
        .list_calls(pb::ListCallsRequest {
            statuses: vec![pb::CallStatus::Failed as i32, 0],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(details(&e).1, ["statuses[1]"]);

    // grpc-web: the same details, in the response (trailers-only) as grpc-status-details-bin.
    let (status, frames, trailers) = grpc_web(
        &server.url(),
        "voiceagent.v1.VoiceAgentService/PlaceCall",
        &place("+15005550001"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert!(frames.is_empty());
    let get = |name: &str| {
        trailers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} in {trailers:?}"))
    };
    assert_eq!(get("grpc-status"), "3");
    use base64::Engine as _;
    let raw = get("grpc-status-details-bin");
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(raw.trim_end_matches('='))
        .unwrap();
    let web = tonic::Status::with_details(tonic::Code::InvalidArgument, "", bytes.into());
    let (info, _) = details(&web);
    assert_eq!(info.reason, "TWILIO_ERROR");
    let web_refused = info.metadata.get("call_id").cloned().unwrap();
    assert_ne!(web_refused, refused, "a second stored call");
    server.stop().await;
}

#[tokio::test]
async fn list_calls_filters_and_orders_with_paging() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let before_all = std::time::SystemTime::now();
    // Short calls: the emulator's +15550102 is busy, +15550104 fails.
    let mut placed = Vec::new();
    for to in ["+15550102", "+15550104", "+15550102", "+15550104", "+15550102"] {
        let (p, _) = call_and_watch(&mut client, place(to), CALL_LIMIT).await;
        placed.push((p.call_id, to));
    }
    let ts = |t: std::time::SystemTime| prost_types::Timestamp::from(t);
    let list = |req: pb::ListCallsRequest| {
        let mut client = client.clone();
        async move {
            let mut ids = Vec::new();
            let mut req = req;
            loop {
                let page = client.list_calls(req.clone()).await.unwrap().into_inner();
                assert!(page.calls.len() <= 2);
                ids.extend(page.calls.into_iter().map(|c| (c.call_id, c.to, c.status)));
                if page.next_page_token.is_empty() {
                    return ids;
                }
                req.page_token = page.next_page_token;
            }
        }
    };
    let busy: Vec<_> = list(pb::ListCallsRequest {
        page_size: 2,
        statuses: vec![pb::CallStatus::Busy as i32],
        ..Default::default()
    })
    .await;
    let expected: Vec<String> = placed
        .iter()
        .rev()
        .filter(|(_, to)| *to == "+15550102")
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(busy.iter().map(|c| c.0.clone()).collect::<Vec<_>>(), expected);
    assert!(busy.iter().all(|c| c.2 == pb::CallStatus::Busy as i32));

    let failed_oldest: Vec<_> = list(pb::ListCallsRequest {
        page_size: 2,
        to: "+15550104".into(),
        order: pb::ListCallsOrder::OldestFirst as i32,
        created_after: Some(ts(before_all)),
        ..Default::default()
    })
    .await;
    let expected: Vec<String> = placed
        .iter()
        .filter(|(_, to)| *to == "+15550104")
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(failed_oldest.iter().map(|c| c.0.clone()).collect::<Vec<_>>(), expected);

    let none = list(pb::ListCallsRequest {
        created_before: Some(ts(before_all)),
        ..Default::default()
    })
    .await;
    assert!(none.is_empty(), "{none:?}");

    // A token of one listing is refused by another.
    let first = client
        .list_calls(pb::ListCallsRequest {
            page_size: 1,
            statuses: vec![pb::CallStatus::Busy as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let e = client
        .list_calls(pb::ListCallsRequest {
            page_size: 1,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(details(&e).1, ["page_token"]);
    server.stop().await;
}
