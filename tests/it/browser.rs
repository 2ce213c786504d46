//! What browsers may do (issue 12, findings 3, 7, 8, 9): no CORS unless
//! origins are listed; without a token, other Hosts (DNS rebinding) and other
//! Origins (another page, `null`) are refused; the UI's deep links and
//! security headers; client input refused or quoted short in errors.

use prost::Message;
use voice_agent_proto::v1 as pb;
use voice_agent_server::config::{Config, Secret};
use voice_agent_tests::*;

const PLACE_CALL: &str = "voiceagent.v1.VoiceAgentService/PlaceCall";

async fn stored_calls(server: &TestServer) -> usize {
    server
        .state
        .hub
        .store()
        .list_calls(100, None)
        .await
        .unwrap()
        .calls
        .len()
}

/// A PlaceCall over grpc-web with extra headers; returns the HTTP status, the
/// gRPC status and the response headers.
async fn place_over_grpc_web(
    server: &TestServer,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, reqwest::header::HeaderMap) {
    let payload = place("+15550100").encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    body.extend_from_slice(&payload);
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let mut req = client
        .post(format!("{}/{PLACE_CALL}", server.url()))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    // Trailers-only answers carry grpc-status as a header; others in the trailer frame.
    let grpc = headers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_string())
        .or_else(|| {
            let text = String::from_utf8_lossy(&bytes);
            text.split("grpc-status:")
                .nth(1)
                .map(|r| r.trim().chars().take_while(char::is_ascii_digit).collect())
        });
    (status, grpc, headers)
}

#[tokio::test]
async fn a_host_of_another_name_is_refused_without_a_token() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    let evil = format!("evil.example:{port}");
    let (status, grpc, headers) = place_over_grpc_web(&server, &[("host", &evil)]).await;
    assert_eq!(
        (status, grpc.as_deref()),
        (200, Some("7")),
        "PERMISSION_DENIED: {headers:?}"
    );
    let message = headers["grpc-message"].to_str().unwrap();
    assert!(message.contains("Host"), "{message}");
    assert_eq!(stored_calls(&server).await, 0, "no call placed");

    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/metrics", server.url()))
        .header("host", &evil)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("DNS rebinding"));

    // The server's own names: its address, localhost, any port (forwarding).
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost:9000".into(),
    ] {
        let resp = http
            .get(format!("{}/metrics", server.url()))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{host}");
    }
    server.stop().await;
}

#[tokio::test]
async fn other_origins_and_null_are_refused_and_get_no_cors() {
    let server = TestServer::start().await;
    for origin in ["http://evil.example", "null", "http://localhost:5173"] {
        let (status, grpc, headers) = place_over_grpc_web(&server, &[("origin", origin)]).await;
        assert_eq!((status, grpc.as_deref()), (200, Some("7")), "{origin}: {headers:?}");
        assert!(headers.get("access-control-allow-origin").is_none(), "{origin}");
        let preflight = reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, format!("{}/{PLACE_CALL}", server.url()))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-grpc-web")
            .send()
            .await
            .unwrap();
        assert_eq!(preflight.status(), 403, "{origin}");
        assert!(
            preflight.headers().get("access-control-allow-origin").is_none(),
            "{origin}"
        );
    }
    assert_eq!(stored_calls(&server).await, 0, "no call placed");

    // The page the server serves itself is same-origin.
    let (status, grpc, headers) = place_over_grpc_web(&server, &[("origin", &server.url())]).await;
    assert_eq!((status, grpc.as_deref()), (200, Some("0")), "{headers:?}");
    assert!(headers.get("access-control-allow-origin").is_none());
    assert_eq!(stored_calls(&server).await, 1);
    server.stop().await;
}

#[tokio::test]
async fn an_allowed_origin_gets_cors_headers() {
    let mut config = Config::for_tests();
    config.cors_allowed_origins = vec!["http://localhost:5173".into()];
    let server = TestServer::with_config(config).await;
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/{PLACE_CALL}", server.url()))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "http://localhost:5173");
    let allowed = h["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    for name in [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
    ] {
        assert!(allowed.contains(name), "{name} in {allowed}");
    }

    let (status, grpc, headers) = place_over_grpc_web(&server, &[("origin", "http://localhost:5173")]).await;
    assert_eq!((status, grpc.as_deref()), (200, Some("0")), "{headers:?}");
    assert_eq!(headers["access-control-allow-origin"], "http://localhost:5173");
    let exposed = headers["access-control-expose-headers"].to_str().unwrap();
    assert!(
        exposed.contains("grpc-status") && exposed.contains("grpc-message"),
        "{exposed}"
    );

    // Listing one origin lets in that one only.
    let (_, grpc, headers) = place_over_grpc_web(&server, &[("origin", "http://evil.example")]).await;
    assert_eq!(grpc.as_deref(), Some("7"));
    assert!(headers.get("access-control-allow-origin").is_none());
    server.stop().await;
}

#[tokio::test]
async fn a_token_turns_the_host_check_off_and_twilio_routes_answer_the_tunnel_host() {
    // With a token: another Host reaches the API, which then wants the token.
    let mut config = Config::for_tests();
    config.api_token = Some(Secret::new("tok"));
    let server = TestServer::with_config(config).await;
    let (_, grpc, _) = place_over_grpc_web(&server, &[("host", "evil.example")]).await;
    assert_eq!(grpc.as_deref(), Some("16"), "UNAUTHENTICATED, not PERMISSION_DENIED");
    server.stop().await;

    // Behind a tunnel: PUBLIC_URL's host is the server's own, and the signed
    // Twilio routes are answered whatever the Host (the signature decides).
    let mut config = Config::for_tests();
    config.public_url = Some("https://abc.tunnel.example".parse().unwrap());
    let server = TestServer::with_config(config).await;
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/metrics", server.url()))
        .header("host", "abc.tunnel.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let query = "/twilio/status?call_id=call_0123456789abcdef0123456789abcdef";
    let params: Vec<(String, String)> = [("CallSid", "CA0"), ("CallStatus", "ringing")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let token = server.state.twilio_auth_token.expose().to_string();
    let sig = voice_agent_server::telephony::twilio::signature::compute(
        &token,
        &format!("https://abc.tunnel.example{query}"),
        &params,
    );
    for host in ["abc.tunnel.example", "localhost:3000"] {
        let resp = http
            .post(format!("{}{query}", server.url()))
            .header("host", host)
            .header("X-Twilio-Signature", &sig)
            .form(&params)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{host}: signed, and the call is unknown");
        assert_eq!(resp.text().await.unwrap(), "unknown call\n");
    }
    server.stop().await;
}

/// A web UI directory like `vite build` makes.
fn web_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("voice-agent-ui-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>ui</title>").unwrap();
    std::fs::write(dir.join("assets/app.js"), "console.log(1)").unwrap();
    dir
}

#[tokio::test]
async fn ui_deep_links_are_200_and_the_ui_has_security_headers() {
    let dir = web_dir();
    let mut config = Config::for_tests();
    config.web_dir = Some(dir.clone());
    let server = TestServer::with_config(config).await;
    let http = reqwest::Client::new();
    for path in [
        "/",
        "/calls",
        "/calls/call_0123456789abcdef0123456789abcdef",
        "/assets/app.js",
    ] {
        let resp = http.get(format!("{}{path}", server.url())).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        if path != "/assets/app.js" {
            assert!(resp.text().await.unwrap().contains("<title>ui</title>"), "{path}");
        }
    }
    for path in [
        "/twilio/unknown",
        "/ws/x",
        "/ws/media",
        "/metrics/x",
        "/nope",
        "/callsx",
        "/assets/none.js",
    ] {
        let resp = http.get(format!("{}{path}", server.url())).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert!(resp.headers().get("grpc-status").is_none(), "{path}");
    }
    server.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn text_xml_cannot_carry_is_refused_naming_the_field() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let ctl = "hello\u{1}\u{b}there".to_string();
    let cases = [
        (
            pb::PlaceCallRequest {
                greeting: Some(ctl.clone()),
                ..place("+15550100")
            },
            "greeting",
        ),
        (
            pb::PlaceCallRequest {
                instructions: ctl.clone(),
                ..place("+15550100")
            },
            "instructions",
        ),
        (
            pb::PlaceCallRequest {
                voice: ctl.clone(),
                ..place("+15550100")
            },
            "voice",
        ),
        (
            pb::PlaceCallRequest {
                metadata: [("k".to_string(), ctl.clone())].into_iter().collect(),
                ..place("+15550100")
            },
            "metadata",
        ),
        (
            pb::PlaceCallRequest {
                metadata: [(ctl.clone(), "v".to_string())].into_iter().collect(),
                ..place("+15550100")
            },
            "metadata",
        ),
        (
            pb::PlaceCallRequest {
                greeting: Some("not a character: \u{FFFE}".into()),
                ..place("+15550100")
            },
            "greeting",
        ),
    ];
    for (req, field) in cases {
        let e = client.place_call(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
    }
    assert_eq!(stored_calls(&server).await, 0, "nothing stored");
    // Tab, CR, LF and any other Unicode text are fine.
    client
        .place_call(pb::PlaceCallRequest {
            greeting: Some("Hello,\tthere.\r\nOne moment — ça marche. 你好 🙂".into()),
            instructions: "Line one.\nLine two.".into(),
            ..place("+15550100")
        })
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn long_client_input_is_quoted_short_in_errors() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let huge = format!("call_{}", "x".repeat(1 << 20));
    let errors = [
        client
            .get_call(pb::GetCallRequest { call_id: huge.clone() })
            .await
            .unwrap_err(),
        client
            .hang_up_call(pb::HangUpCallRequest { call_id: huge.clone() })
            .await
            .unwrap_err(),
        client
            .watch_call(pb::WatchCallRequest {
                call_id: huge.clone(),
                after_sequence: 0,
            })
            .await
            .unwrap_err(),
        client.place_call(place(&huge)).await.unwrap_err(),
        client
            .place_call(pb::PlaceCallRequest {
                metadata: [(huge.clone(), "v".to_string())].into_iter().collect(),
                ..place("+15550100")
            })
            .await
            .unwrap_err(),
    ];
    for e in errors {
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().len() < 300,
            "{} bytes: {:.200}",
            e.message().len(),
            e.message()
        );
        assert!(e.message().contains("1048581 bytes"), "{}", e.message());
    }
    server.stop().await;
}
