//! Outcome webhooks over real sockets: the server with its emulators places
//! calls whose status changes and end are POSTed to HTTP receivers on
//! 127.0.0.1. The receivers check every signature with a verifier of their
//! own (HMAC-SHA256 from `ring`, checked first against the Standard Webhooks
//! test vectors in specs/), not the server's code.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use voice_agent_proto::v1 as pb;
use voice_agent_server::config::{DatabaseLocation, Secret};
use voice_agent_server::webhook::retry::RetryPolicy;
use voice_agent_tests::*;

const LIMIT: Duration = Duration::from_secs(90);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The receivers' verifier: Standard Webhooks v1, written from the spec.
fn signature_ok(secret: &str, id: &str, timestamp: &str, body: &str, header: &str) -> bool {
    let Some(key) = secret.strip_prefix("whsec_").and_then(|b| B64.decode(b).ok()) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let content = format!("{id}.{timestamp}.{body}");
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| B64.decode(s).ok())
        .any(|tag| ring::hmac::verify(&key, content.as_bytes(), &tag).is_ok())
}

#[test]
fn the_receivers_verifier_passes_the_standard_webhooks_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../specs/standard_webhooks_test_vectors.json"
    );
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for v in doc["vectors"].as_array().unwrap() {
        let (secret, id, ts, body, sig) = (
            v["secret"].as_str().unwrap(),
            v["webhook_id"].as_str().unwrap(),
            v["webhook_timestamp"].to_string(),
            v["body"].as_str().unwrap(),
            v["signature"].as_str().unwrap(),
        );
        assert!(signature_ok(secret, id, &ts, body, sig));
        assert!(!signature_ok(secret, id, &ts, &format!("{body} "), sig));
        for wrong in doc["wrong_signatures"].as_array().unwrap() {
            assert!(!signature_ok(secret, id, &ts, body, wrong.as_str().unwrap()));
        }
    }
}

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    id: String,
    body: serde_json::Value,
    /// What the receiver answered.
    answered: u16,
}

/// How a receiver's paths answer: `/flaky` fails its first two requests
/// (503) then answers 204; `/gone` 410; `/redirect` 307 to `/ok`; anything
/// else 204. Every request's signature is checked (401 when wrong, which the
/// test then sees).
#[derive(Default)]
struct Receiver {
    seen: Mutex<Vec<Received>>,
    flaky_left: Mutex<u32>,
}

impl Receiver {
    fn received(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
}

async fn receiver_on(listener: tokio::net::TcpListener) -> Arc<Receiver> {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri};
    let receiver = Arc::new(Receiver {
        flaky_left: Mutex::new(2),
        ..Default::default()
    });
    async fn handle(
        State(r): State<Arc<Receiver>>,
        uri: Uri,
        headers: HeaderMap,
        body: String,
    ) -> (StatusCode, HeaderMap, String) {
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let (id, ts, sig) = (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let fresh = ts.parse::<i64>().is_ok_and(|t| (now - t).abs() <= 300);
        let mut out = HeaderMap::new();
        let status = if !(fresh && signature_ok(SECRET, &id, &ts, &body, &sig)) {
            StatusCode::UNAUTHORIZED
        } else {
            match uri.path() {
                "/flaky" => {
                    let mut left = r.flaky_left.lock().unwrap();
                    if *left > 0 {
                        *left -= 1;
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
                "/gone" => StatusCode::GONE,
                "/redirect" => {
                    out.insert("location", "/ok".parse().unwrap());
                    StatusCode::TEMPORARY_REDIRECT
                }
                _ => StatusCode::NO_CONTENT,
            }
        };
        r.seen.lock().unwrap().push(Received {
            path: uri.path().to_string(),
            id,
            body: serde_json::from_str(&body).unwrap_or_default(),
            answered: status.as_u16(),
        });
        (status, out, String::new())
    }
    let app = axum::Router::new().fallback(handle).with_state(receiver.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    receiver
}

async fn receiver() -> (String, Arc<Receiver>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    (base, receiver_on(listener).await)
}

/// A config that signs webhooks and retries fast.
fn config(webhook_url: Option<String>, max_attempts: u32) -> Config {
    let mut config = Config::for_tests();
    config.webhook_secret = Some(Secret::new(SECRET));
    config.webhook_url = webhook_url;
    config.webhook_retry = RetryPolicy {
        max_attempts,
        base: Duration::from_millis(100),
        cap: Duration::from_millis(400),
        timeout: Duration::from_secs(5),
    };
    config
}

/// GetCall until no delivery of the call is pending (and there are `at_least`).
async fn settled(
    client: &mut pb::voice_agent_service_client::VoiceAgentServiceClient<tonic::transport::Channel>,
    call_id: &str,
    at_least: usize,
) -> Vec<pb::WebhookDelivery> {
    let wait = async {
        loop {
            let call = get_call(client, call_id).await;
            if call.webhooks.len() >= at_least
                && call
                    .webhooks
                    .iter()
                    .all(|w| w.state() != pb::WebhookDeliveryState::Pending)
            {
                return call.webhooks;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(LIMIT, wait).await.expect("the deliveries settle")
}

/// The status events' statuses of a finished call, as the webhooks spell them.
fn status_names(events: &[pb::CallEvent]) -> Vec<String> {
    statuses(events)
        .into_iter()
        .map(|s| s.as_str_name().trim_start_matches("CALL_STATUS_").to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn signed_webhooks_reach_both_receivers_in_order_and_a_flaky_one_after_retries() {
    let (base, rx) = receiver().await;
    let server = TestServer::with_config(config(Some(format!("{base}/flaky?token=s3cret")), 5)).await;
    let mut client = server.client().await;
    let placed = client
        .place_call(pb::PlaceCallRequest {
            webhook_url: Some(format!("{base}/ok")),
            metadata: [("order".to_string(), "A1".to_string())].into(),
            ..place("+15550131")
        })
        .await
        .unwrap()
        .into_inner();
    let events = watch_all(&mut client, &placed.call_id, 0, LIMIT).await;
    let statuses = status_names(&events);
    assert_eq!(statuses.last().map(String::as_str), Some("completed"), "{statuses:?}");
    // One status_changed per status, then the end; on each receiver.
    let expected = statuses.len() + 1;
    let deliveries = settled(&mut client, &placed.call_id, 2 * expected).await;
    assert_eq!(deliveries.len(), 2 * expected, "{deliveries:?}");
    assert!(
        deliveries
            .iter()
            .all(|d| d.state() == pb::WebhookDeliveryState::Delivered),
        "{deliveries:?}"
    );
    assert!(
        deliveries.iter().all(|d| !d.url.contains("s3cret")),
        "GetCall drops the query string: {deliveries:?}"
    );

    let received = rx.received();
    assert!(
        received.iter().all(|r| r.answered != 401),
        "every signature verified: {received:?}"
    );
    for path in ["/ok", "/flaky"] {
        // Delivered ones, in the order received: the call's order.
        let got: Vec<&Received> = received
            .iter()
            .filter(|r| r.path == path && r.answered == 204)
            .collect();
        let kinds: Vec<String> = got
            .iter()
            .map(|r| match r.body["type"].as_str().unwrap() {
                "call.status_changed" => r.body["data"]["status"].as_str().unwrap().to_string(),
                other => other.to_string(),
            })
            .collect();
        let mut want = statuses.clone();
        want.push("call.ended".into());
        assert_eq!(kinds, want, "{path}");
        assert!(got.iter().all(|r| r.body["data"]["call_id"] == placed.call_id.as_str()));
        assert_eq!(got[0].body["data"]["metadata"]["order"], "A1");
        let end = &got.last().unwrap().body;
        assert_eq!(end["data"]["status"], "completed");
        assert!(!end["data"]["end_reason"].as_str().unwrap().is_empty());
        assert!(
            end["data"]["transcript"].as_array().is_some_and(|t| !t.is_empty()),
            "{end}"
        );
        assert!(end["data"]["talk_duration_ms"].is_number());
    }
    // The flaky receiver failed the first message twice: three attempts, one id.
    let flaky: Vec<&Received> = received.iter().filter(|r| r.path == "/flaky").collect();
    assert_eq!(
        flaky[..3].iter().map(|r| r.answered).collect::<Vec<_>>(),
        [503, 503, 204]
    );
    assert!(
        flaky[..3].iter().all(|r| r.id == flaky[0].id),
        "the same webhook-id on every attempt"
    );
    let first = deliveries
        .iter()
        .find(|d| d.message_id == flaky[0].id && d.url.ends_with("/flaky"))
        .unwrap();
    assert_eq!((first.attempts, first.last_http_status), (3, 204));
    // Both receivers got each message under one id.
    let ok_ids: Vec<&str> = received
        .iter()
        .filter(|r| r.path == "/ok")
        .map(|r| r.id.as_str())
        .collect();
    assert!(ok_ids.contains(&flaky[0].id.as_str()));

    let text = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metric(&text, "voice_agent_webhook_attempts_total{result=\"failed\"}") >= 2.0);
    assert_eq!(
        metric(&text, "voice_agent_webhook_deliveries_total{outcome=\"delivered\"}"),
        (2 * expected) as f64
    );
    server.stop().await;
}

#[tokio::test]
async fn undeliverable_messages_are_dead_lettered_visibly_and_redirects_are_not_followed() {
    let (base, rx) = receiver().await;
    let server = TestServer::with_config(config(Some(format!("{base}/gone")), 2)).await;
    let mut client = server.client().await;
    let placed = client
        .place_call(pb::PlaceCallRequest {
            webhook_url: Some(format!("{base}/redirect")),
            ..place("+15550124")
        })
        .await
        .unwrap()
        .into_inner();
    let events = watch_all(&mut client, &placed.call_id, 0, LIMIT).await;
    let expected = statuses(&events).len() + 1;
    let deliveries = settled(&mut client, &placed.call_id, 2 * expected).await;
    assert!(
        deliveries.iter().all(|d| d.state() == pb::WebhookDeliveryState::Dead),
        "{deliveries:?}"
    );
    for d in &deliveries {
        if d.url.ends_with("/gone") {
            // 410 Gone: given up at once.
            assert_eq!((d.attempts, d.last_http_status), (1, 410), "{d:?}");
        } else {
            // A redirect is a failure, retried up to WEBHOOK_MAX_ATTEMPTS.
            assert_eq!((d.attempts, d.last_http_status), (2, 307), "{d:?}");
        }
        assert!(d.last_error.contains("HTTP"), "{d:?}");
        assert!(d.next_attempt_at.is_none());
    }
    let received = rx.received();
    assert!(
        received.iter().all(|r| r.path != "/ok"),
        "the redirect was not followed"
    );
    assert_eq!(received.len(), expected + 2 * expected);
    let text = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&text, "voice_agent_webhook_deliveries_total{outcome=\"dead\"}"),
        (2 * expected) as f64
    );
    // The gauges are read from the store after each pass of the worker.
    let wait = async {
        loop {
            let text = reqwest::get(format!("{}/metrics", server.url()))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if metric(&text, "voice_agent_webhook_dead_letters") == (2 * expected) as f64 {
                return metric(&text, "voice_agent_webhook_pending");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(tokio::time::timeout(LIMIT, wait).await.unwrap(), 0.0);
    server.stop().await;
}

#[tokio::test]
async fn a_silent_receiver_times_out_an_endless_answer_is_not_read_and_the_call_goes_on() {
    use axum::body::{Body, Bytes};
    use axum::http::StatusCode;
    // `/silent` never answers; `/endless` answers 200 with a body that never ends.
    let app = axum::Router::new()
        .route(
            "/silent",
            axum::routing::post(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/endless",
            axum::routing::post(|| async {
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                let body = futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
                (StatusCode::OK, Body::from_stream(body))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut config = config(Some(format!("{base}/silent")), 1);
    config.webhook_retry.timeout = Duration::from_millis(300);
    let server = TestServer::with_config(config).await;
    let mut client = server.client().await;
    let placed = client
        .place_call(pb::PlaceCallRequest {
            webhook_url: Some(format!("{base}/endless")),
            ..place("+15550130")
        })
        .await
        .unwrap()
        .into_inner();
    let events = watch_all(&mut client, &placed.call_id, 0, LIMIT).await;
    // The call is what it would be without webhooks.
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::Completed));
    assert!(errors(&events).is_empty(), "{:?}", errors(&events));
    let expected = statuses(&events).len() + 1;
    let deliveries = settled(&mut client, &placed.call_id, 2 * expected).await;
    for d in &deliveries {
        if d.url.ends_with("/silent") {
            assert_eq!(d.state(), pb::WebhookDeliveryState::Dead, "{d:?}");
            assert_eq!(d.last_http_status, 0, "{d:?}");
            assert!(d.last_error.contains("no answer within 300 ms"), "{d:?}");
        } else {
            assert_eq!(d.state(), pb::WebhookDeliveryState::Delivered, "{d:?}");
            assert_eq!((d.attempts, d.last_http_status), (1, 200), "{d:?}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn place_call_checks_its_webhook_url() {
    let server = TestServer::with_config(config(None, 3)).await;
    let mut client = server.client().await;
    for bad in [
        "ftp://x.example/h",
        "http://x.example/h",
        "not a url",
        "https://u:p@x.example/h",
    ] {
        let e = client
            .place_call(pb::PlaceCallRequest {
                webhook_url: Some(bad.into()),
                ..place("+15550125")
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
        assert!(e.message().contains("webhook_url"), "{bad}: {}", e.message());
    }
    server.stop().await;
    // Without a secret nothing could be signed: refused.
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let e = client
        .place_call(pb::PlaceCallRequest {
            webhook_url: Some("https://x.example/h".into()),
            ..place("+15550125")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("WEBHOOK_SECRET"), "{}", e.message());
    server.stop().await;
}

#[tokio::test]
async fn messages_undelivered_at_a_restart_are_delivered_by_the_next_run() {
    let dir = std::env::temp_dir().join(format!("va-webhooks-{}", uuid::Uuid::new_v4()));
    let db = DatabaseLocation::File(dir.join("calls.db"));
    // The receiver's port is held (bound, never accepted: every attempt
    // waits out WEBHOOK_TIMEOUT) until the receiver takes it over below. A
    // port merely released could be taken by another test's server meanwhile.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/h");
    let mut first = config(Some(url.clone()), 100);
    first.database = db.clone();
    let server = TestServer::with_config(first).await;
    let mut client = server.client().await;
    let placed = client.place_call(place("+15550126")).await.unwrap().into_inner();
    let events = watch_all(&mut client, &placed.call_id, 0, LIMIT).await;
    let expected = statuses(&events).len() + 1;
    // Wait until the first message was tried (and failed) at least once.
    let wait = async {
        loop {
            let call = get_call(&mut client, &placed.call_id).await;
            if call.webhooks.len() == expected && call.webhooks[0].attempts >= 1 {
                return call.webhooks;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let before = tokio::time::timeout(LIMIT, wait).await.unwrap();
    assert!(
        before.iter().all(|d| d.state() == pb::WebhookDeliveryState::Pending),
        "{before:?}"
    );
    assert!(before[0].last_error.contains("no answer within"), "{before:?}");
    server.stop().await;

    // The receiver comes up; a new run on the same database delivers.
    held.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(held).unwrap();
    let rx = receiver_on(listener).await;
    let mut second = config(Some(url), 100);
    second.database = db;
    let server = TestServer::with_config(second).await;
    let mut client = server.client().await;
    let after = settled(&mut client, &placed.call_id, expected).await;
    assert!(
        after.iter().all(|d| d.state() == pb::WebhookDeliveryState::Delivered),
        "{after:?}"
    );
    assert!(after[0].attempts >= 2, "it had failed before the restart: {after:?}");
    let received = rx.received();
    // The attempts that waited in the held port's backlog before the
    // restart reach the receiver too: delivery is at least once, and a
    // receiver deduplicates by webhook-id (Standard Webhooks).
    let mut first_seen: Vec<&str> = Vec::new();
    for r in &received {
        if !first_seen.contains(&r.id.as_str()) {
            first_seen.push(&r.id);
        }
    }
    assert_eq!(
        first_seen,
        before.iter().map(|d| d.message_id.as_str()).collect::<Vec<_>>(),
        "every message, in order, under the id it was stored with"
    );
    assert_eq!(received.last().unwrap().body["type"], "call.ended");
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn two_replicas_on_postgres_deliver_each_message_once() {
    let db = voice_agent_server::store::ScratchDatabase::create().await;
    let (base, rx) = receiver().await;
    let replica = || {
        let mut c = config(Some(format!("{base}/ok")), 5);
        c.database = DatabaseLocation::Postgres(Secret::new(db.url.clone()));
        c
    };
    let (a, b) = (
        TestServer::with_config(replica()).await,
        TestServer::with_config(replica()).await,
    );
    let mut client = a.client().await;
    let mut calls = Vec::new();
    for to in ["+15550127", "+15550128", "+15550129"] {
        calls.push(client.place_call(place(to)).await.unwrap().into_inner().call_id);
    }
    let mut expected = 0;
    for id in &calls {
        let events = watch_all(&mut client, id, 0, LIMIT).await;
        let n = statuses(&events).len() + 1;
        expected += n;
        let d = settled(&mut client, id, n).await;
        assert!(
            d.iter()
                .all(|d| d.state() == pb::WebhookDeliveryState::Delivered && d.attempts == 1)
        );
    }
    let received = rx.received();
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for r in &received {
        *by_id.entry(r.id.as_str()).or_default() += 1;
    }
    assert_eq!(received.len(), expected, "{by_id:?}");
    assert!(by_id.values().all(|n| *n == 1), "{by_id:?}");
    a.stop().await;
    b.stop().await;
    db.drop_database().await;
}
