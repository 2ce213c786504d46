//! `/healthz` and `/readyz` over real sockets: open to probes (no token, any
//! Host), readiness failing while the server drains or shuts down, and the
//! gRPC health service following it.

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use voice_agent_server::config::{Config, Secret};
use voice_agent_server::state::Readiness;
use voice_agent_tests::*;

async fn probe(server: &TestServer, path: &str, host: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("{}{path}", server.url()));
    if let Some(host) = host {
        req = req.header("host", host);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    assert_eq!(resp.headers()["cache-control"], "no-store", "{path}");
    (status, resp.text().await.unwrap())
}

#[tokio::test]
async fn probes_answer_without_a_token_and_from_any_host() {
    // With a token: the probes need none (while /metrics does).
    let mut config = Config::for_tests();
    config.api_token = Some(Secret::new("t0ken"));
    let server = TestServer::with_config(config).await;
    assert_eq!(probe(&server, "/healthz", None).await, (200, "ok\n".into()));
    assert_eq!(probe(&server, "/readyz", None).await, (200, "ready\n".into()));
    let metrics = reqwest::get(format!("{}/metrics", server.url())).await.unwrap();
    assert_eq!(metrics.status(), 401);
    server.stop().await;

    // Without a token, the browser guard refuses foreign Hosts, but not to the probes
    // (a kubelet or load balancer sends whatever name or address it has).
    let server = TestServer::start().await;
    for host in ["voice-agent.default.svc.cluster.local:8000", "10.244.1.7:8000"] {
        assert_eq!(probe(&server, "/healthz", Some(host)).await.0, 200, "{host}");
        assert_eq!(probe(&server, "/readyz", Some(host)).await.0, 200, "{host}");
    }
    let api = reqwest::Client::new()
        .get(format!("{}/metrics", server.url()))
        .header("host", "voice-agent.default.svc.cluster.local")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 403, "the guard still holds elsewhere");
    server.stop().await;
}

async fn health_of(health: &mut HealthClient<tonic::transport::Channel>, service: &str) -> ServingStatus {
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}

async fn next_status(stream: &mut tonic::Streaming<HealthCheckResponse>) -> ServingStatus {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a health update within 10 s")
        .unwrap()
        .expect("the watch goes on")
        .status()
}

#[tokio::test]
async fn a_drain_fails_readiness_and_grpc_health_while_liveness_stays() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "voiceagent.v1.VoiceAgentService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_status(&mut watch).await, ServingStatus::Serving);

    server.state.readiness.stop(Readiness::DRAINING);
    assert_eq!(next_status(&mut watch).await, ServingStatus::NotServing);
    let (status, text) = probe(&server, "/readyz", None).await;
    assert_eq!(
        (status, text.as_str()),
        (503, "not ready: the server is draining: no new calls\n")
    );
    assert_eq!(probe(&server, "/healthz", None).await.0, 200, "alive all the same");
    for service in ["", "voiceagent.v1.VoiceAgentService"] {
        assert_eq!(
            health_of(&mut health, service).await,
            ServingStatus::NotServing,
            "{service:?}"
        );
    }
    // One-way, and the first reason stays.
    server.state.readiness.stop(Readiness::SHUTTING_DOWN);
    assert_eq!(server.state.readiness.stopped(), Some(Readiness::DRAINING));
    server.stop().await;
}

/// At shutdown the listener stops taking connections at once, so no new probe
/// can reach the server; what a probe could still see, on a connection that
/// stays open, is the gRPC health stream: NOT_SERVING comes first.
#[tokio::test]
async fn shutdown_reports_not_serving_at_once() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    // A live call, so the shutdown has work to do after the flip.
    let placed = client.place_call(place("+15550199")).await.unwrap().into_inner();
    let mut events = watch(&mut client, &placed.call_id, 0).await;
    watch_until(&mut events, Duration::from_secs(30), is_transcript).await;
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_status(&mut watch).await, ServingStatus::Serving);
    assert_eq!(probe(&server, "/readyz", None).await.0, 200);

    server.state.shutdown.cancel();
    assert_eq!(next_status(&mut watch).await, ServingStatus::NotServing);
    assert_eq!(server.state.readiness.stopped(), Some(Readiness::SHUTTING_DOWN));
    let rest = watch_rest(&mut events, Duration::from_secs(10)).await;
    assert!(
        rest.iter()
            .any(|e| matches!(&e.kind, Some(voice_agent_proto::v1::call_event::Kind::Status(_)))),
        "the call ended with the shutdown: {rest:?}"
    );
    // An open watch would hold the server for its whole grace period.
    drop((watch, health));
    server.stop().await;
}

/// A store that fails makes the instance not ready (and says why), while it
/// stays alive: here another process took the calls table away.
#[tokio::test]
async fn a_failing_store_fails_readiness_but_not_liveness() {
    let dir = std::env::temp_dir().join(format!("va-ready-{}", uuid::Uuid::new_v4()));
    let db = dir.join("calls.db");
    let mut config = Config::for_tests();
    config.database = voice_agent_server::config::DatabaseLocation::File(db.clone());
    let server = TestServer::with_config(config).await;
    let other = rusqlite::Connection::open(&db).unwrap();
    other.execute_batch("DROP TABLE events; DROP TABLE calls;").unwrap();
    let (status, text) = probe(&server, "/readyz", None).await;
    assert_eq!(status, 503, "{text}");
    assert!(
        text.starts_with("not ready: the call store failed: ") && text.contains("calls"),
        "{text}"
    );
    assert_eq!(probe(&server, "/healthz", None).await, (200, "ok\n".into()));
    server.stop().await;
    drop(other);
    let _ = std::fs::remove_dir_all(dir);
}
