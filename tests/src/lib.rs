//! Test harness: starts the real server in-process on `127.0.0.1:0` (real
//! sockets, SQLite, the built-in emulators) and gives typed clients for gRPC,
//! grpc-web over HTTP/1.1, and the built binaries.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Request;
use tonic::transport::Channel;
use voice_agent_proto::v1 as pb;
use voice_agent_proto::v1::voice_agent_service_client::VoiceAgentServiceClient;
pub use voice_agent_server::Options;
pub use voice_agent_server::config::Config;
use voice_agent_server::{AppState, Emulators, Server};

/// A running server.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Shared state (hub, config, telephony, metrics).
    pub state: Arc<AppState>,
    /// The emulators the server started.
    pub emulators: Arc<Emulators>,
    shutdown: CancellationToken,
    join: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with the test defaults (in-memory store, emulators).
    pub async fn start() -> Self {
        Self::with_config(Config::for_tests()).await
    }

    /// Starts a server with `config`.
    pub async fn with_config(config: Config) -> Self {
        Self::with_options(config, Options::default()).await
    }

    /// Starts a server with `config` and replaced parts.
    pub async fn with_options(config: Config, options: Options) -> Self {
        let listener = TcpListener::bind(config.bind).await.expect("bind 127.0.0.1:0");
        let server = Server::with_listener(config, listener, options)
            .await
            .expect("server starts");
        let addr = server.local_addr();
        let state = server.state().clone();
        let emulators = server.emulators().clone();
        let shutdown = server.shutdown_token();
        let join = tokio::spawn(async move {
            server.run().await.expect("server runs");
        });
        Self {
            addr,
            state,
            emulators,
            shutdown,
            join: Some(join),
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A gRPC channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("valid URI")
            .connect()
            .await
            .expect("connect")
    }

    /// A VoiceAgentService client.
    pub async fn client(&self) -> VoiceAgentServiceClient<Channel> {
        VoiceAgentServiceClient::new(self.channel().await)
    }

    /// Graceful shutdown; waits for the server to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(j) = self.join.take() {
            tokio::time::timeout(Duration::from_secs(10), j)
                .await
                .expect("server stops within 10 s")
                .expect("server task");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A PlaceCall request to `to` with defaults.
pub fn place(to: &str) -> pb::PlaceCallRequest {
    pb::PlaceCallRequest {
        to: to.into(),
        ..Default::default()
    }
}

/// Places a call and collects its whole WatchCall stream (bounded by `limit`).
pub async fn call_and_watch(
    client: &mut VoiceAgentServiceClient<Channel>,
    req: pb::PlaceCallRequest,
    limit: Duration,
) -> (pb::PlaceCallResponse, Vec<pb::CallEvent>) {
    let placed = client.place_call(req).await.expect("PlaceCall").into_inner();
    let events = watch_all(client, &placed.call_id, 0, limit).await;
    (placed, events)
}

/// The stored record of a call (panics if the RPC fails).
pub async fn get_call(client: &mut VoiceAgentServiceClient<Channel>, call_id: &str) -> pb::Call {
    client
        .get_call(pb::GetCallRequest {
            call_id: call_id.to_string(),
        })
        .await
        .expect("GetCall")
        .into_inner()
        .call
        .expect("call set")
}

/// Opens a WatchCall stream of the events after `after`.
pub async fn watch(
    client: &mut VoiceAgentServiceClient<Channel>,
    call_id: &str,
    after: u64,
) -> tonic::Streaming<pb::WatchCallResponse> {
    client
        .watch_call(pb::WatchCallRequest {
            call_id: call_id.into(),
            after_sequence: after,
        })
        .await
        .expect("WatchCall")
        .into_inner()
}

/// Reads a WatchCall stream up to and including the first event `until`
/// accepts (panics if the stream ends first or after `limit`).
pub async fn watch_until(
    stream: &mut tonic::Streaming<pb::WatchCallResponse>,
    limit: Duration,
    mut until: impl FnMut(&pb::CallEvent) -> bool,
) -> Vec<pb::CallEvent> {
    let mut events = Vec::new();
    let read = async {
        loop {
            let item = stream.message().await.expect("stream item");
            let ev = item.expect("the stream goes on").event.expect("event set");
            let done = until(&ev);
            events.push(ev);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or_else(|_| panic!("the awaited event did not come within {limit:?}"));
    events
}

/// Reads what is left of a WatchCall stream until it ends, cleanly or with
/// the server going away (panics after `limit`).
pub async fn watch_rest(stream: &mut tonic::Streaming<pb::WatchCallResponse>, limit: Duration) -> Vec<pb::CallEvent> {
    let mut events = Vec::new();
    let read = async {
        while let Ok(Some(item)) = stream.message().await {
            events.extend(item.event);
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or_else(|_| panic!("the watch stream did not end within {limit:?}"));
    events
}

/// A transcript event (e.g. to wait until a conversation runs).
pub fn is_transcript(ev: &pb::CallEvent) -> bool {
    matches!(ev.kind, Some(pb::call_event::Kind::Transcript(_)))
}

/// The kind of the last event, if any.
pub fn last_kind(events: &[pb::CallEvent]) -> Option<pb::call_event::Kind> {
    events.last().and_then(|e| e.kind.clone())
}

/// Collects a WatchCall stream until it ends (panics after `limit`).
pub async fn watch_all(
    client: &mut VoiceAgentServiceClient<Channel>,
    call_id: &str,
    after: u64,
    limit: Duration,
) -> Vec<pb::CallEvent> {
    let mut stream = watch(client, call_id, after).await;
    let mut events = Vec::new();
    let collect = async {
        while let Some(item) = stream.message().await.expect("stream item") {
            events.push(item.event.expect("event set"));
        }
    };
    tokio::time::timeout(limit, collect)
        .await
        .unwrap_or_else(|_| panic!("WatchCall did not end within {limit:?}"));
    events
}

/// The statuses in a list of events, in order.
pub fn statuses(events: &[pb::CallEvent]) -> Vec<pb::CallStatus> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::call_event::Kind::Status(s)) => pb::CallStatus::try_from(s.status).ok(),
            _ => None,
        })
        .collect()
}

/// The transcripts in a list of events: (speaker, text, interrupted).
pub fn transcripts(events: &[pb::CallEvent]) -> Vec<(pb::Speaker, String, bool)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::call_event::Kind::Transcript(t)) => {
                Some((pb::Speaker::try_from(t.speaker).ok()?, t.text.clone(), t.interrupted))
            }
            _ => None,
        })
        .collect()
}

/// Error events: (code, message).
pub fn errors(events: &[pb::CallEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::call_event::Kind::Error(x)) => Some((x.code.clone(), x.message.clone())),
            _ => None,
        })
        .collect()
}

/// Adds `authorization: Bearer <token>` to a request.
pub fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    req
}

/// A grpc-web call over HTTP/1.1 (what a browser sends). Returns the message
/// frames and the trailers (`grpc-status`, `grpc-message`).
pub async fn grpc_web(
    base: &str,
    method: &str,
    message: &impl prost::Message,
    headers: &[(&str, &str)],
) -> (u16, Vec<Vec<u8>>, Vec<(String, String)>) {
    let mut body = vec![0u8];
    let payload = message.encode_to_vec();
    body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    body.extend_from_slice(&payload);
    let client = reqwest::Client::builder().http1_only().build().expect("client");
    let mut req = client
        .post(format!("{base}/{method}"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("grpc-web request");
    let status = resp.status().as_u16();
    let mut trailers = Vec::new();
    for (k, v) in resp.headers() {
        if k.as_str().starts_with("grpc-") {
            trailers.push((k.to_string(), v.to_str().unwrap_or("").to_string()));
        }
    }
    let bytes = resp.bytes().await.expect("body");
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 5 {
        let flag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let data = &rest[5..5 + len];
        if flag & 0x80 != 0 {
            for line in String::from_utf8_lossy(data).split("\r\n") {
                if let Some((k, v)) = line.split_once(':') {
                    trailers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
        } else {
            frames.push(data.to_vec());
        }
        rest = &rest[5 + len..];
    }
    (status, frames, trailers)
}

/// The value of one series in a Prometheus text exposition (panics when absent).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Path of a binary of this workspace, built with `cargo build --workspace --bins`
/// (the README's test command does that first).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    if !path.exists() {
        let package = match name {
            "voice-agent" => "voice-agent-cli",
            "loadgen" | "floor" | "storebench" => "voice-agent-bench",
            _ => "voice-agent-server",
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p {package} --bin {name} failed");
    }
    assert!(
        path.exists(),
        "{} missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}
