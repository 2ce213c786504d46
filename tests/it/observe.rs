//! What operators see (docs/observability.md): the spans a call exports over
//! OTLP to an in-process collector, in the trace of the caller's
//! `traceparent`; the JSON log lines of its status changes; text logs
//! without colour codes when not on a terminal; and the metrics of RPCs,
//! call outcomes, provider failures, build and process after emulated calls.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use voice_agent_proto::v1 as pb;
use voice_agent_proto::v1::voice_agent_service_client::VoiceAgentServiceClient;
use voice_agent_tests::{Config, TestServer, binary, get_call, metric, place, statuses, watch_all};

const LIMIT: Duration = Duration::from_secs(60);

/// An OTLP/HTTP collector on 127.0.0.1:0: keeps every export request it gets.
async fn collector() -> (SocketAddr, Arc<Mutex<Vec<ExportTraceServiceRequest>>>) {
    let got: Arc<Mutex<Vec<ExportTraceServiceRequest>>> = Arc::default();
    let kept = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                kept.lock().unwrap().push(request);
                (
                    [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, got)
}

/// The server binary on a free port; its stdout and stderr lines as they come.
struct Process {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
    dir: std::path::PathBuf,
}

impl Process {
    fn start(env: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("va-observe-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new(binary("voice-agent-server"));
        cmd.current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start voice-agent-server");
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for (stream, tx) in [
            (Box::new(out) as Box<dyn std::io::Read + Send>, Some(tx)),
            (Box::new(err), None),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let (Some(tx), Some(addr)) = (&tx, line.split("listening on http://").nth(1)) {
                        let addr: String = addr
                            .chars()
                            .take_while(|c| *c == '.' || *c == ':' || c.is_ascii_digit())
                            .collect();
                        let _ = tx.send(addr);
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let addr = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            panic!("the server logs its address: {:?}", log.lock().unwrap());
        });
        Self { child, addr, log, dir }
    }

    /// SIGTERM, as an orchestrator stops it; waits for the exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        // The shell's own `kill`: a fresh machine may lack the procps binary.
        let killed = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status()
            .unwrap();
        assert!(killed.success());
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the server did not stop within 30 s of SIGTERM");
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_one_trace_under_the_callers_traceparent_and_its_log_lines_are_json() {
    let (collector, exports) = collector().await;
    // The Twilio and AI sides run here, so the test knows every credential.
    let twilio = voice_agent_server::emulator::twilio::TwilioEmulator::start(Default::default())
        .await
        .unwrap();
    let ai = voice_agent_server::emulator::realtime::start(Default::default())
        .await
        .unwrap();
    let ai_url = ai.url_base().to_string();
    let ai_url = ai_url.trim_end_matches('/').to_string();
    let openai_url = format!("{ai_url}/v1/realtime");
    let twilio_url = twilio.base_url();
    let endpoint = format!("http://{collector}");
    let mut server = Process::start(&[
        ("RUST_LOG", "info"),
        ("LOG_FORMAT", "json"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_SERVICE_NAME", "voice-agent-under-test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("TWILIO_ACCOUNT_SID", twilio.account_sid()),
        ("TWILIO_AUTH_TOKEN", twilio.auth_token()),
        ("TWILIO_PHONE_NUMBER", "+15005550006"),
        ("TWILIO_API_BASE_URL", &twilio_url),
        ("OPENAI_API_KEY", ai.api_key()),
        ("OPENAI_REALTIME_URL", &openai_url),
        ("AZURE_VOICE_LIVE_ENDPOINT", &ai_url),
        ("AZURE_VOICE_LIVE_API_KEY", ai.api_key()),
    ]);
    let mut client = VoiceAgentServiceClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();

    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let parent_id = &uuid::Uuid::new_v4().simple().to_string()[..16];
    // Answers, says a line, hangs up during the agent's reply (COMPLETED).
    let number = "+15550105";
    let mut request = tonic::Request::new(place(number));
    request
        .metadata_mut()
        .insert("traceparent", format!("00-{trace_id}-{parent_id}-01").parse().unwrap());
    let placed = client.place_call(request).await.unwrap().into_inner();
    let events = watch_all(&mut client, &placed.call_id, 0, LIMIT).await;
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::Completed));
    // A busy call, outside any trace: its end has a log line too.
    let busy = client.place_call(place("+15550102")).await.unwrap().into_inner();
    let events = watch_all(&mut client, &busy.call_id, 0, LIMIT).await;
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::Busy));
    assert_eq!(
        get_call(&mut client, &placed.call_id).await.provider_call_id,
        placed.provider_call_id
    );
    drop(client);

    // The shutdown flushes what the batch processor still holds.
    let status = server.terminate();
    assert!(status.success(), "{status:?}: {:?}", server.lines());
    // The stream secrets the server gave the calls, from its store.
    let db = voice_agent_server::config::DatabaseLocation::File(server.dir.join("data/voice-agent.db"));
    let store = voice_agent_server::store::Store::open(&db).await.unwrap();
    let stream_secrets: Vec<String> = store
        .list_calls(10, None)
        .await
        .unwrap()
        .calls
        .into_iter()
        .map(|c| c.stream_secret)
        .collect();
    assert_eq!(stream_secrets.len(), 2);

    // Spans.
    let exports = exports.lock().unwrap().clone();
    assert!(!exports.is_empty(), "the collector got no export");
    let mut spans: Vec<(HashMap<String, String>, Span)> = Vec::new();
    for export in &exports {
        for rs in &export.resource_spans {
            let resource = rs.resource.as_ref().map(|r| attrs(&r.attributes)).unwrap_or_default();
            assert_eq!(
                resource.get("service.name").map(String::as_str),
                Some("voice-agent-under-test")
            );
            for ss in &rs.scope_spans {
                spans.extend(ss.spans.iter().map(|s| (resource.clone(), s.clone())));
            }
        }
    }
    let in_trace: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| hex(&s.trace_id) == trace_id)
        .collect();
    let names: Vec<&str> = in_trace.iter().map(|s| s.name.as_str()).collect();
    let named = |name: &str| -> &Span {
        in_trace
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name:?} in the caller's trace: {names:?}"))
    };
    let rpc = named("voiceagent.v1.VoiceAgentService/PlaceCall");
    assert_eq!(
        hex(&rpc.parent_span_id),
        parent_id,
        "the caller's span is the RPC's parent"
    );
    assert_eq!(rpc.kind, 2, "a server span");
    let rpc_attrs = attrs(&rpc.attributes);
    assert_eq!(rpc_attrs.get("rpc.system").map(String::as_str), Some("grpc"));
    assert_eq!(rpc_attrs.get("rpc.method").map(String::as_str), Some("PlaceCall"));
    assert_eq!(rpc_attrs.get("rpc.grpc.status_code").map(String::as_str), Some("0"));

    let call = named("call");
    assert_eq!(
        call.parent_span_id, rpc.span_id,
        "the call is a child of the RPC that placed it"
    );
    let call_attrs = attrs(&call.attributes);
    assert_eq!(call_attrs.get("call_id"), Some(&placed.call_id));
    assert_eq!(call_attrs.get("call_sid"), Some(&placed.provider_call_id));
    assert_eq!(call_attrs.get("status").map(String::as_str), Some("COMPLETED"));
    assert_eq!(call_attrs.get("to").map(String::as_str), Some("+1***05"), "masked");
    let changes: Vec<String> = call
        .events
        .iter()
        .filter(|e| e.name == "call status changed")
        .filter_map(|e| attrs(&e.attributes).get("status").cloned())
        .collect();
    assert_eq!(
        changes.first().map(String::as_str),
        Some("QUEUED"),
        "every status change is an event of the call's span: {changes:?}"
    );
    assert_eq!(changes.last().map(String::as_str), Some("COMPLETED"), "{changes:?}");

    let dial = named("Twilio POST Calls");
    assert_eq!(dial.kind, 3, "a client span");
    // The trace goes on in the requests we make: Twilio's REST API and the AI's handshake.
    let report = twilio.call(&placed.provider_call_id).expect("the emulator's report");
    assert_eq!(
        report.create_traceparent,
        Some(format!("00-{trace_id}-{}-01", hex(&dial.span_id))),
        "the dial carries its span as traceparent"
    );
    for webhook in ["POST /twilio/twiml", "POST /twilio/status", "GET /ws/media/{call_id}"] {
        assert_eq!(
            named(webhook).parent_span_id,
            call.span_id,
            "{webhook} is a child of the call"
        );
    }
    let bridge = named("media_bridge");
    assert_eq!(bridge.parent_span_id, call.span_id);
    let ai_connect = named("ai.connect");
    assert_eq!(ai_connect.parent_span_id, bridge.span_id);
    let sessions = ai.sessions();
    assert_eq!(sessions.len(), 1, "only the answered call reached the AI");
    assert_eq!(
        sessions[0].traceparent,
        Some(format!("00-{trace_id}-{}-01", hex(&ai_connect.span_id))),
        "the AI's handshake carries the connect span as traceparent"
    );
    // The busy call is a trace of its own.
    assert!(spans.iter().any(|(_, s)| s.name == "call"
        && attrs(&s.attributes).get("call_id") == Some(&busy.call_id)
        && hex(&s.trace_id) != trace_id));

    // Nothing secret, and no whole phone number, in any attribute.
    let mut secrets = vec![
        twilio.auth_token().to_string(),
        ai.api_key().to_string(),
        "Bearer ".into(),
        "Basic ".into(),
        "5550105".into(),
        "5550102".into(),
    ];
    secrets.extend(stream_secrets);
    for (resource, span) in &spans {
        let mut values: Vec<String> = resource.values().cloned().collect();
        values.extend(attrs(&span.attributes).into_values());
        for event in &span.events {
            values.push(event.name.clone());
            values.extend(attrs(&event.attributes).into_values());
        }
        for value in values {
            for secret in &secrets {
                assert!(
                    !value.to_ascii_lowercase().contains(&secret.to_ascii_lowercase()),
                    "{secret:?} in span {:?}: {value}",
                    span.name
                );
            }
        }
    }

    // Log lines: JSON objects, one per status change, the end with its reason.
    let lines = server.lines();
    let json: Vec<serde_json::Value> = lines
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(json.len() > 5, "{lines:?}");
    let changes = |id: &str| -> Vec<&serde_json::Value> {
        json.iter()
            .filter(|j| j["fields"]["message"] == "call status changed" && j["fields"]["call_id"] == id)
            .collect()
    };
    let completed = changes(&placed.call_id);
    let statuses: Vec<&str> = completed
        .iter()
        .filter_map(|j| j["fields"]["status"].as_str())
        .collect();
    assert_eq!(statuses.first(), Some(&"QUEUED"), "{statuses:?}");
    assert!(statuses.contains(&"IN_PROGRESS"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"COMPLETED"), "{statuses:?}");
    let busy_lines = changes(&busy.call_id);
    let end = busy_lines.last().expect("the busy call's lines");
    assert_eq!(end["fields"]["status"], "BUSY");
    assert_eq!(end["fields"]["class"], "busy");
    assert_eq!(end["fields"]["call_sid"], busy.provider_call_id.as_str());
    assert!(end["fields"]["reason"].as_str().is_some_and(|r| !r.is_empty()), "{end}");
    assert_eq!(end["level"], "INFO");
    // Lines inside a call's span carry its fields, its trace id among them.
    assert!(
        completed.iter().any(|j| j["span"]["name"] == "call"
            && j["span"]["to"] == "+1***05"
            && j["span"]["trace_id"] == trace_id.as_str()),
        "{completed:?}"
    );
    let placing = json
        .iter()
        .find(|j| j["fields"]["message"] == "placing call" && j["fields"]["call_id"] == placed.call_id.as_str())
        .expect("the placing-call line");
    assert_eq!(placing["fields"]["to"], "+1***05");
    let all = lines.join("\n");
    assert!(!all.contains('\u{1b}'), "no colour codes in a pipe");
    for number in ["5550105", "5550102"] {
        assert!(!all.contains(number), "a whole phone number in the log: {number}");
    }
}

#[test]
fn text_logs_have_no_colour_codes_when_not_on_a_terminal() {
    let mut server = Process::start(&[("RUST_LOG", "info")]);
    let status = server.terminate();
    assert!(status.success());
    let lines = server.lines();
    assert!(lines.iter().any(|l| l.contains("listening on")), "{lines:?}");
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "{lines:?}");
    assert!(lines.iter().all(|l| !l.starts_with('{')), "text, not JSON: {lines:?}");
}

#[test]
fn unsupported_log_format_and_otlp_protocol_stop_the_server_naming_the_variable() {
    for (env, var) in [
        (vec![("LOG_FORMAT", "xml")], "LOG_FORMAT"),
        (
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ] {
        let mut cmd = Command::new(binary("voice-agent-server"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(std::env::temp_dir());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "{env:?}: {stderr}");
    }
}

/// The value of `series` in `text`, 0 when absent (a family whose series
/// appear on first use).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Sum of every series of `family` whose labels contain all of `with`.
fn sum(text: &str, family: &str, with: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| with.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

async fn scrape(server: &TestServer) -> String {
    reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn metrics_count_rpcs_call_outcomes_and_provider_errors_exactly() {
    let mut config = Config::for_tests();
    config.twilio_http_timeout = Duration::from_secs(1);
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    let before = scrape(&server).await;
    const PLACE: &str = "method=\"voiceagent.v1.VoiceAgentService/PlaceCall\"";
    assert_eq!(sum(&before, "voice_agent_grpc_requests_total", &[]), 0.0);
    assert_eq!(sum(&before, "voice_agent_calls_ended_total", &[]), 0.0);
    assert_eq!(
        before
            .lines()
            .filter(|l| l.starts_with("voice_agent_calls_ended_total{"))
            .count(),
        5 * voice_agent_server::call::lifecycle::EndClass::ALL.len(),
        "every final status × class, from the start"
    );

    // Two calls that end, one the provider refuses, one we refuse.
    for (number, status) in [
        ("+15550105", pb::CallStatus::Completed),
        ("+15550102", pb::CallStatus::Busy),
    ] {
        let placed = client.place_call(place(number)).await.unwrap().into_inner();
        let events = watch_all(&mut client, &placed.call_id, 0, LIMIT).await;
        assert_eq!(statuses(&events).last(), Some(&status), "{number}");
    }
    let refused = client.place_call(place("+15005550001")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let invalid = client.place_call(place("12345")).await.unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    let missing = client
        .get_call(pb::GetCallRequest {
            call_id: format!("call_{}", uuid::Uuid::new_v4().simple()),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    // A browser's grpc-web request is counted like a gRPC one.
    let (status, frames, trailers) = voice_agent_tests::grpc_web(
        &server.url(),
        "voiceagent.v1.VoiceAgentService/GetServerInfo",
        &pb::GetServerInfoRequest::default(),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(frames.len(), 1);
    assert!(
        trailers.contains(&("grpc-status".to_string(), "0".to_string())),
        "{trailers:?}"
    );

    let after = scrape(&server).await;
    let requests = |method: &str, code: &str| {
        value(
            &after,
            &format!(
                "voice_agent_grpc_requests_total{{method=\"voiceagent.v1.VoiceAgentService/{method}\",code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(requests("PlaceCall", "OK"), 2.0, "{after}");
    assert_eq!(requests("PlaceCall", "INVALID_ARGUMENT"), 2.0, "{after}");
    assert_eq!(requests("GetCall", "NOT_FOUND"), 1.0, "{after}");
    assert_eq!(requests("GetServerInfo", "OK"), 1.0, "{after}");
    assert_eq!(requests("WatchCall", "OK"), 2.0, "{after}");
    assert_eq!(
        value(
            &after,
            &format!("voice_agent_grpc_request_duration_seconds_count{{{PLACE}}}")
        ),
        4.0
    );
    assert_eq!(
        value(
            &after,
            &format!("voice_agent_grpc_request_duration_seconds_bucket{{le=\"+Inf\",{PLACE}}}")
        )
        .max(value(
            &after,
            &format!("voice_agent_grpc_request_duration_seconds_bucket{{{PLACE},le=\"+Inf\"}}")
        )),
        4.0,
        "{after}"
    );

    let ended = |status: &str, class: &str| {
        value(
            &after,
            &format!("voice_agent_calls_ended_total{{status=\"{status}\",class=\"{class}\"}}"),
        )
    };
    assert_eq!(sum(&after, "voice_agent_calls_ended_total", &[]), 3.0, "{after}");
    assert_eq!(
        sum(&after, "voice_agent_calls_ended_total", &["status=\"COMPLETED\""]),
        1.0
    );
    assert_eq!(ended("BUSY", "busy"), 1.0, "{after}");
    assert_eq!(ended("FAILED", "dial_refused"), 1.0, "{after}");
    assert_eq!(
        value(
            &after,
            "voice_agent_provider_errors_total{provider=\"twilio\",kind=\"invalid_argument\"}"
        ),
        1.0
    );
    assert_eq!(sum(&after, "voice_agent_provider_errors_total", &[]), 1.0, "{after}");
    assert_eq!(sum(&after, "voice_agent_ai_reconnects_total", &[]), 0.0);
    assert_eq!(metric(&after, "voice_agent_calls_placed_total"), 3.0);

    // Build and process.
    let build = after
        .lines()
        .find(|l| l.starts_with("voice_agent_build_info{"))
        .expect("build info");
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    assert!(build.ends_with(" 1"), "{build}");
    assert!(metric(&after, "process_resident_memory_bytes") > 1e6);
    assert!(metric(&after, "process_open_fds") >= 3.0);
    assert!(metric(&after, "process_max_fds") >= metric(&after, "process_open_fds"));
    assert!(metric(&after, "process_cpu_seconds_total") > 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = metric(&after, "process_start_time_seconds");
    assert!(started > now - 3600.0 && started <= now + 1.0, "{started} vs {now}");
    server.stop().await;
}
