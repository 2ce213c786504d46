//! Tools answered by the calling service, over real sockets: the server with
//! the Twilio and realtime-AI emulators (whose agent calls every tool the
//! session offers when the callee asks its question, its second line), a
//! gRPC client answering with SubmitToolResult, and an HTTP receiver that
//! checks the Standard Webhooks signature of the server's tool requests.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use voice_agent_proto::v1 as pb;
use voice_agent_server::Options;
use voice_agent_server::config::{Config, Secret};
use voice_agent_server::emulator::twilio::{TwilioEmulatorConfig, TwilioEmulatorHandle};
use voice_agent_server::webhook_signing::SigningKey;
use voice_agent_tests::*;

const LIMIT: Duration = Duration::from_secs(90);

/// The Standard Webhooks reference library's published vector (copied into
/// specs/standard_webhooks_test_vectors.json, which names its source).
const VECTOR_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const VECTOR_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
const VECTOR_TIMESTAMP: i64 = 1649367553;
const VECTOR_BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;
const VECTOR_SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

fn order_tool(name: &str, url: &str) -> pb::Tool {
    pb::Tool {
        name: name.into(),
        description: "Look up an order.".into(),
        parameters_json: r#"{"type":"object","properties":{"order_id":{"type":"string"}},"required":["order_id"]}"#
            .into(),
        url: url.into(),
    }
}

/// A Twilio emulator of the test's own whose callees leave `reply_gap` of
/// quiet before they speak.
async fn twilio_with_gap(reply_gap: Duration) -> (TwilioEmulatorHandle, Options) {
    twilio_with(TwilioEmulatorConfig {
        reply_gap,
        ..TwilioEmulatorConfig::default()
    })
    .await
}

/// A Twilio emulator of the test's own, and the options that make the server use it.
async fn twilio_with(config: TwilioEmulatorConfig) -> (TwilioEmulatorHandle, Options) {
    use voice_agent_server::telephony::twilio::TwilioClient;
    let emu = voice_agent_server::emulator::twilio::TwilioEmulator::start(config)
        .await
        .unwrap();
    let client = TwilioClient::new(
        &emu.base_url(),
        emu.account_sid(),
        emu.auth_token(),
        Duration::from_secs(10),
    )
    .unwrap();
    let telephony: Arc<dyn voice_agent_server::telephony::Telephony> =
        Arc::new(voice_agent_server::telephony::provider::Twilio::new(client));
    let options = Options {
        telephony: Some((telephony, Secret::new(emu.auth_token()))),
        ..Default::default()
    };
    (emu, options)
}

fn tool_calls(events: &[pb::CallEvent]) -> Vec<pb::ToolCall> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::call_event::Kind::ToolCall(t)) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

fn tool_results(events: &[pb::CallEvent]) -> Vec<pb::ToolResult> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::call_event::Kind::ToolResult(t)) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

fn agent_lines(events: &[pb::CallEvent]) -> Vec<String> {
    transcripts(events)
        .into_iter()
        .filter(|(s, _, _)| *s == pb::Speaker::Agent)
        .map(|(_, t, _)| t)
        .collect()
}

fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

async fn submit(
    client: &mut pb::voice_agent_service_client::VoiceAgentServiceClient<tonic::transport::Channel>,
    call_id: &str,
    tool_call_id: &str,
    output: &str,
) -> Result<(), tonic::Status> {
    client
        .submit_tool_result(pb::SubmitToolResultRequest {
            call_id: call_id.into(),
            tool_call_id: tool_call_id.into(),
            output: output.into(),
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn parallel_tools_answered_over_grpc_reach_the_agent_and_the_record() {
    // Quiet long enough that the callee does not talk on before the answers.
    let (_twilio, options) = twilio_with_gap(Duration::from_secs(3)).await;
    let server = TestServer::with_options(Config::for_tests(), options).await;
    let mut client = server.client().await;
    let placed = client
        .place_call(pb::PlaceCallRequest {
            tools: vec![order_tool("order_status", ""), order_tool("delivery_window", "")],
            ..place("+15550199")
        })
        .await
        .unwrap()
        .into_inner();
    let call = get_call(&mut client, &placed.call_id).await;
    assert_eq!(call.tools.len(), 2);
    assert_eq!(
        call.tool_timeout.map(|d| d.seconds),
        Some(10),
        "the default tool timeout"
    );

    // Both tools are called in one response (parallel calls).
    let mut stream = watch(&mut client, &placed.call_id, 0).await;
    let mut seen = 0;
    let before = watch_until(&mut stream, LIMIT, |e| {
        seen += usize::from(matches!(e.kind, Some(pb::call_event::Kind::ToolCall(_))));
        seen == 2
    })
    .await;
    let calls = tool_calls(&before);
    assert_eq!(
        calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["order_status", "delivery_window"]
    );
    for c in &calls {
        assert_eq!(c.arguments_json, r#"{"order_id":"A1234"}"#);
        assert!(!c.answered_by_url);
    }
    // Unknown ids are refused, and nothing reaches the AI for them.
    let unknown = submit(&mut client, &placed.call_id, "call_nope", "{}")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert_eq!(reason(&unknown), "TOOL_CALL_NOT_FOUND");

    submit(
        &mut client,
        &placed.call_id,
        &calls[0].tool_call_id,
        r#"{"status":"shipped"}"#,
    )
    .await
    .unwrap();
    // A second answer for the same id leaves the first in place and says so.
    let again = submit(
        &mut client,
        &placed.call_id,
        &calls[0].tool_call_id,
        r#"{"status":"lost"}"#,
    )
    .await
    .unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists);
    assert_eq!(reason(&again), "TOOL_RESULT_ALREADY_SUBMITTED");
    submit(
        &mut client,
        &placed.call_id,
        &calls[1].tool_call_id,
        r#"{"window":"Friday 3pm"}"#,
    )
    .await
    .unwrap();

    let rest = watch_rest(&mut stream, LIMIT).await;
    let results = tool_results(&rest);
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0].output, r#"{"status":"shipped"}"#, "the first answer stays");
    assert_eq!(results[1].output, r#"{"window":"Friday 3pm"}"#);
    for r in &results {
        assert_eq!(r.outcome(), pb::ToolOutcome::Answered);
    }
    // The agent spoke with both outputs, once both were in.
    let lines = agent_lines(&rest);
    let found = lines
        .iter()
        .find(|l| l.starts_with("Here is what I found"))
        .unwrap_or_else(|| panic!("the agent said the outputs: {lines:?}"));
    assert!(found.contains("shipped") && found.contains("Friday 3pm"), "{found}");
    assert_eq!(
        statuses(&rest).last(),
        Some(&pb::CallStatus::Completed),
        "the conversation went on to its end"
    );
    // After the call, a submit is too late.
    let late = submit(&mut client, &placed.call_id, &calls[1].tool_call_id, "{}")
        .await
        .unwrap_err();
    assert_eq!(reason(&late), "TOOL_RESULT_ALREADY_SUBMITTED");
    server.stop().await;
}

#[tokio::test]
async fn a_tool_that_does_not_answer_times_out_and_the_conversation_goes_on() {
    // The callee waits longer than the tool timeout before it speaks again.
    let (_twilio, options) = twilio_with_gap(Duration::from_secs(4)).await;
    let server = TestServer::with_options(Config::for_tests(), options).await;
    let mut client = server.client().await;
    let placed = client
        .place_call(pb::PlaceCallRequest {
            tools: vec![order_tool("order_status", "")],
            tool_timeout: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
            ..place("+15550199")
        })
        .await
        .unwrap()
        .into_inner();
    let events = watch_all(&mut client, &placed.call_id, 0, LIMIT).await;
    let calls = tool_calls(&events);
    assert_eq!(calls.len(), 1);
    let results = tool_results(&events);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].outcome(), pb::ToolOutcome::TimedOut);
    assert!(results[0].output.contains("did not answer"), "{}", results[0].output);
    assert!(results[0].wait_ms >= 1000, "waited the timeout: {}", results[0].wait_ms);
    let lines = agent_lines(&events);
    assert!(
        lines.iter().any(|l| l.contains("did not answer")),
        "the agent heard the tool did not answer: {lines:?}"
    );
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::Completed));
    let late = submit(&mut client, &placed.call_id, &calls[0].tool_call_id, "{}")
        .await
        .unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&late), "TOOL_CALL_EXPIRED");
    server.stop().await;
}

#[tokio::test]
async fn a_tool_still_pending_when_the_call_ends_is_recorded_cancelled() {
    // The emulated callee waits for the agent's answer, which waits for the
    // tool; after 3 s of nothing it hangs up, with the tool still pending.
    let (_twilio, options) = twilio_with(TwilioEmulatorConfig {
        idle_hangup: Duration::from_secs(3),
        ..TwilioEmulatorConfig::default()
    })
    .await;
    let server = TestServer::with_options(Config::for_tests(), options).await;
    let mut client = server.client().await;
    let placed = client
        .place_call(pb::PlaceCallRequest {
            tools: vec![order_tool("order_status", "")],
            tool_timeout: Some(prost_types::Duration { seconds: 120, nanos: 0 }),
            ..place("+15550199")
        })
        .await
        .unwrap()
        .into_inner();
    let events = watch_all(&mut client, &placed.call_id, 0, LIMIT).await;
    let calls = tool_calls(&events);
    assert_eq!(calls.len(), 1);
    let results = tool_results(&events);
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].outcome(), pb::ToolOutcome::Canceled);
    assert!(results[0].output.is_empty());
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::Completed));
    let late = submit(&mut client, &placed.call_id, &calls[0].tool_call_id, "{}")
        .await
        .unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&late), "TOOL_CALL_EXPIRED");
    server.stop().await;
}

/// What the test's HTTPS tool endpoint received.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

/// A tool endpoint on 127.0.0.1: `/ok` answers JSON, `/fail` HTTP 500.
async fn tool_endpoint() -> (String, Arc<Mutex<Vec<Received>>>) {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri};
    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    async fn handle(
        State(seen): State<Arc<Mutex<Vec<Received>>>>,
        uri: Uri,
        headers: HeaderMap,
        body: String,
    ) -> (StatusCode, String) {
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        seen.lock().unwrap().push(Received {
            path: uri.path().to_string(),
            id: h("webhook-id"),
            timestamp: h("webhook-timestamp"),
            signature: h("webhook-signature"),
            body,
        });
        if uri.path() == "/ok" {
            (StatusCode::OK, r#"{"status":"out for delivery"}"#.into())
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, "boom".into())
        }
    }
    let app = axum::Router::new().fallback(handle).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, seen)
}

#[tokio::test]
async fn tools_with_a_url_are_asked_with_signed_requests_and_failures_become_error_outputs() {
    // The receiver's verifier is the one the published vector checks.
    let key = SigningKey::from_secret(VECTOR_SECRET).unwrap();
    assert_eq!(
        key.sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY.as_bytes()),
        VECTOR_SIGNATURE
    );
    key.verify(
        VECTOR_ID,
        &VECTOR_TIMESTAMP.to_string(),
        VECTOR_SIGNATURE,
        VECTOR_BODY.as_bytes(),
        VECTOR_TIMESTAMP,
    )
    .unwrap();

    let (base, seen) = tool_endpoint().await;
    let (_twilio, options) = twilio_with_gap(Duration::from_secs(3)).await;
    let mut config = Config::for_tests();
    config.webhook_secret = Some(Secret::new(VECTOR_SECRET));
    let server = TestServer::with_options(config, options).await;
    let mut client = server.client().await;
    let placed = client
        .place_call(pb::PlaceCallRequest {
            tools: vec![
                order_tool("order_status", &format!("{base}/ok")),
                order_tool("refund_status", &format!("{base}/fail")),
            ],
            ..place("+15550199")
        })
        .await
        .unwrap()
        .into_inner();
    let events = watch_all(&mut client, &placed.call_id, 0, LIMIT).await;
    let calls = tool_calls(&events);
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.answered_by_url));
    // SubmitToolResult is not how URL tools are answered.
    let refused = submit(&mut client, &placed.call_id, &calls[0].tool_call_id, "{}")
        .await
        .unwrap_err();
    assert_eq!(
        reason(&refused),
        "TOOL_RESULT_ALREADY_SUBMITTED",
        "the URL answered it first"
    );

    let results = tool_results(&events);
    let by_name = |n: &str| results.iter().find(|r| r.name == n).unwrap().clone();
    let ok = by_name("order_status");
    assert_eq!(ok.outcome(), pb::ToolOutcome::Answered);
    assert_eq!(ok.output, r#"{"status":"out for delivery"}"#);
    let failed = by_name("refund_status");
    assert_eq!(failed.outcome(), pb::ToolOutcome::Failed);
    assert!(failed.output.contains("HTTP 500"), "{}", failed.output);
    assert!(!failed.output.contains(&base), "the URL is not told to the AI");
    let lines = agent_lines(&events);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("out for delivery") && l.contains("HTTP 500")),
        "{lines:?}"
    );

    // Every request was signed the Standard Webhooks way, and says what was called.
    let received = seen.lock().unwrap().clone();
    assert_eq!(received.len(), 2, "{received:?}");
    let now = chrono_now();
    for r in &received {
        key.verify(&r.id, &r.timestamp, &r.signature, r.body.as_bytes(), now)
            .unwrap_or_else(|e| panic!("{r:?}: {e}"));
        // A changed body would not verify: the check can fail.
        assert!(key.verify(&r.id, &r.timestamp, &r.signature, b"{}", now).is_err());
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["call_id"], placed.call_id.as_str());
        assert_eq!(body["arguments"], serde_json::json!({"order_id": "A1234"}));
        let call = calls.iter().find(|c| c.tool_call_id == body["tool_call_id"]).unwrap();
        assert_eq!(body["name"], call.name.as_str());
        assert_eq!(r.path, if call.name == "order_status" { "/ok" } else { "/fail" });
    }
    assert_ne!(received[0].id, received[1].id, "each request has its own webhook-id");
    server.stop().await;
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn place_call_checks_its_tools() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let bad = |tools: Vec<pb::Tool>| pb::PlaceCallRequest {
        tools,
        ..place("+15550199")
    };
    let cases = [
        (bad(vec![order_tool("has space", "")]), "tools[0].name"),
        (bad(vec![order_tool("end_call", "")]), "tools[0].name"),
        (bad(vec![order_tool("a", ""), order_tool("a", "")]), "tools[1].name"),
        (
            bad(vec![pb::Tool {
                parameters_json: r#"{"type":"string"}"#.into(),
                ..order_tool("a", "")
            }]),
            "tools[0].parameters_json",
        ),
        (
            bad(vec![pb::Tool {
                parameters_json: "{not json".into(),
                ..order_tool("a", "")
            }]),
            "tools[0].parameters_json",
        ),
        (bad(vec![order_tool("a", "http://example.com/t")]), "tools[0].url"),
        // No WEBHOOK_SECRET on this server: nothing would sign the request.
        (bad(vec![order_tool("a", "https://example.com/t")]), "tools[0].url"),
        (
            bad((0..17).map(|i| order_tool(&format!("t{i}"), "")).collect()),
            "tools",
        ),
        (
            pb::PlaceCallRequest {
                tool_timeout: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
                ..place("+15550199")
            },
            "tool_timeout",
        ),
    ];
    for (req, field) in cases {
        let e = client.place_call(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
    }
    // Not a call id / a missing tool call id.
    let e = submit(&mut client, "nope", "c", "{}").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn the_cli_offers_tools_from_a_file_and_answers_them_with_a_shell_command() {
    let (_twilio, options) = twilio_with_gap(Duration::from_secs(3)).await;
    let server = TestServer::with_options(Config::for_tests(), options).await;
    let dir = std::env::temp_dir().join(format!("voice-agent-tools-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tools.json");
    std::fs::write(
        &file,
        r#"[{"name":"order_status","description":"Look up an order.",
             "parameters":{"type":"object","properties":{"order_id":{"type":"string"}},"required":["order_id"]}}]"#,
    )
    .unwrap();
    // The handler echoes what it was given: the arguments on stdin, the tool's name in its environment.
    let handler = r#"printf '{"order":%s,"tool":"%s","eta":"tomorrow"}' "$(cat)" "$VOICE_AGENT_TOOL_NAME""#;
    let out = tokio::time::timeout(
        LIMIT,
        tokio::process::Command::new(binary("voice-agent"))
            .args(["--server", &server.url(), "call", "+15550199", "--tools"])
            .arg(&file)
            .args(["--tool-handler", handler])
            .env("NO_COLOR", "1")
            .output(),
    )
    .await
    .expect("the CLI ends with the call")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("order_status({\"order_id\":\"A1234\"})"),
        "the tool call is shown: {stdout}"
    );
    assert!(stdout.contains("answered after"), "the result is shown: {stdout}");
    let call_id = stdout.lines().next().unwrap().trim().to_string();
    let mut client = server.client().await;
    let events = watch_all(&mut client, &call_id, 0, LIMIT).await;
    let results = tool_results(&events);
    assert_eq!(results.len(), 1);
    assert_eq!(
        results[0].output,
        r#"{"order":{"order_id":"A1234"},"tool":"order_status","eta":"tomorrow"}"#
    );
    assert!(agent_lines(&events).iter().any(|l| l.contains("tomorrow")));
    let _ = std::fs::remove_dir_all(&dir);
    server.stop().await;
}
