//! Runs the real `voice-agent` binary against a scripted fake
//! VoiceAgentService on 127.0.0.1:0: exit statuses, output shapes, auth
//! metadata and stream resumption. The real server is exercised by the
//! workspace's tests/ crate; this fake lets us break streams on purpose.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use voice_agent_proto::v1 as pb;
use voice_agent_proto::v1::voice_agent_service_server::{VoiceAgentService, VoiceAgentServiceServer};

/// How one WatchCall request is answered.
#[derive(Clone)]
enum Plan {
    /// Fail the RPC itself with this code.
    Refuse(tonic::Code),
    /// Send the history from `after_sequence + 1 - resend` through `until`,
    /// then finish as `end` says.
    Send { resend: u64, until: u64, end: End },
}

#[derive(Clone, Copy)]
enum End {
    /// Close the stream with OK.
    Ok,
    /// Close the stream with an error status of this code.
    Fail(tonic::Code),
    /// Keep the stream open until the client leaves.
    Hang,
}

#[derive(Default)]
struct State {
    /// Full event history per call.
    history: HashMap<String, Vec<pb::CallEvent>>,
    /// Plans per call, one per WatchCall request; the last one repeats.
    plans: HashMap<String, Vec<Plan>>,
    /// Every WatchCall request seen: (call id, after_sequence).
    watches: Vec<(String, u64)>,
    /// The `authorization` metadata of every request ("" when absent).
    auth: Vec<String>,
    /// The PlaceCall requests seen.
    placed: Vec<pb::PlaceCallRequest>,
    /// What GetServerInfo answers; `None` = UNIMPLEMENTED (a server older than the RPC).
    info: Option<pb::GetServerInfoResponse>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn note_auth<T>(&self, request: &Request<T>) {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        self.0.lock().unwrap().auth.push(auth);
    }

    fn with_info(self, info: pb::GetServerInfoResponse) -> Fake {
        self.0.lock().unwrap().info = Some(info);
        self
    }

    fn with_call(self, call_id: &str, history: Vec<pb::CallEvent>, plans: Vec<Plan>) -> Fake {
        {
            let mut state = self.0.lock().unwrap();
            state.history.insert(call_id.to_string(), history);
            state.plans.insert(call_id.to_string(), plans);
        }
        self
    }
}

fn record(call_id: &str, status: pb::CallStatus) -> pb::Call {
    pb::Call {
        call_id: call_id.into(),
        to: "+14155551212".into(),
        status: status as i32,
        backend: pb::Backend::VoiceLive as i32,
        emulated: true,
        created_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl VoiceAgentService for Fake {
    async fn place_call(
        &self,
        request: Request<pb::PlaceCallRequest>,
    ) -> Result<Response<pb::PlaceCallResponse>, Status> {
        self.note_auth(&request);
        let request = request.into_inner();
        if request.to == "+1" {
            return Err(Status::invalid_argument("to: expected E.164, e.g. +14155551212"));
        }
        self.0.lock().unwrap().placed.push(request);
        Ok(Response::new(pb::PlaceCallResponse {
            call_id: "done".into(),
            provider_call_id: "CA0123".into(),
            status: pb::CallStatus::Queued as i32,
            emulated: true,
        }))
    }

    type WatchCallStream = ReceiverStream<Result<pb::WatchCallResponse, Status>>;

    async fn watch_call(
        &self,
        request: Request<pb::WatchCallRequest>,
    ) -> Result<Response<Self::WatchCallStream>, Status> {
        self.note_auth(&request);
        let request = request.into_inner();
        let (history, plan) = {
            let mut state = self.0.lock().unwrap();
            state.watches.push((request.call_id.clone(), request.after_sequence));
            let attempt = state.watches.iter().filter(|(id, _)| *id == request.call_id).count();
            let Some(plans) = state.plans.get(&request.call_id) else {
                return Err(Status::not_found(format!("call {} does not exist", request.call_id)));
            };
            let plan = plans[(attempt - 1).min(plans.len() - 1)].clone();
            (state.history[&request.call_id].clone(), plan)
        };
        let (resend, until, end) = match plan {
            Plan::Refuse(code) => return Err(Status::new(code, "refused by plan")),
            Plan::Send { resend, until, end } => (resend, until, end),
        };
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let from = (request.after_sequence + 1).saturating_sub(resend);
            for event in history
                .into_iter()
                .filter(|e| e.sequence >= from && e.sequence <= until)
            {
                if tx.send(Ok(pb::WatchCallResponse { event: Some(event) })).await.is_err() {
                    return;
                }
            }
            match end {
                End::Ok => {}
                End::Fail(code) => {
                    let _ = tx.send(Err(Status::new(code, "stream cut by plan"))).await;
                }
                End::Hang => tx.closed().await,
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn hang_up_call(
        &self,
        request: Request<pb::HangUpCallRequest>,
    ) -> Result<Response<pb::HangUpCallResponse>, Status> {
        self.note_auth(&request);
        let mut call = record(&request.into_inner().call_id, pb::CallStatus::Canceled);
        call.end_reason = "hung up by API".into();
        Ok(Response::new(pb::HangUpCallResponse { call: Some(call) }))
    }

    async fn transfer_call(
        &self,
        request: Request<pb::TransferCallRequest>,
    ) -> Result<Response<pb::TransferCallResponse>, Status> {
        self.note_auth(&request);
        let req = request.into_inner();
        let mut call = record(&req.call_id, pb::CallStatus::InProgress);
        call.transfer = Some(pb::Transfer {
            target: req.number,
            state: pb::TransferState::Started as i32,
            by: pb::TransferBy::Operator as i32,
            reason: String::new(),
        });
        Ok(Response::new(pb::TransferCallResponse { call: Some(call) }))
    }

    async fn get_call(&self, request: Request<pb::GetCallRequest>) -> Result<Response<pb::GetCallResponse>, Status> {
        self.note_auth(&request);
        let id = request.into_inner().call_id;
        if id == "missing" {
            return Err(Status::not_found("call missing does not exist"));
        }
        Ok(Response::new(pb::GetCallResponse {
            call: Some(record(&id, pb::CallStatus::Completed)),
        }))
    }

    async fn list_calls(
        &self,
        request: Request<pb::ListCallsRequest>,
    ) -> Result<Response<pb::ListCallsResponse>, Status> {
        self.note_auth(&request);
        let page = request.into_inner();
        let (calls, next) = if page.page_token.is_empty() {
            (
                vec![
                    record("c3", pb::CallStatus::InProgress),
                    record("c2", pb::CallStatus::Busy),
                ],
                "p2",
            )
        } else {
            (vec![record("c1", pb::CallStatus::Completed)], "")
        };
        Ok(Response::new(pb::ListCallsResponse {
            calls,
            next_page_token: next.into(),
        }))
    }

    async fn get_server_info(
        &self,
        request: Request<pb::GetServerInfoRequest>,
    ) -> Result<Response<pb::GetServerInfoResponse>, Status> {
        self.note_auth(&request);
        match self.0.lock().unwrap().info.clone() {
            Some(info) => Ok(Response::new(info)),
            None => Err(Status::unimplemented("unknown method GetServerInfo")),
        }
    }

    // The CLI's tool handler is tested against the real server (tests/it/tools.rs).
    async fn submit_tool_result(
        &self,
        _request: Request<pb::SubmitToolResultRequest>,
    ) -> Result<Response<pb::SubmitToolResultResponse>, Status> {
        Err(Status::unimplemented("the fake answers no tool calls"))
    }
}

fn event(sequence: u64, kind: pb::call_event::Kind) -> pb::CallEvent {
    pb::CallEvent {
        sequence,
        time: Some(prost_types::Timestamp {
            seconds: 1_700_000_000 + sequence as i64,
            nanos: 0,
        }),
        kind: Some(kind),
    }
}

fn status(sequence: u64, status: pb::CallStatus) -> pb::CallEvent {
    event(
        sequence,
        pb::call_event::Kind::Status(pb::StatusChanged {
            status: status as i32,
            detail: String::new(),
        }),
    )
}

fn said(sequence: u64, speaker: pb::Speaker, text: &str, interrupted: bool) -> pb::CallEvent {
    event(
        sequence,
        pb::call_event::Kind::Transcript(pb::Transcript {
            speaker: speaker as i32,
            text: text.into(),
            interrupted,
        }),
    )
}

/// A conversation of five events ending with `end`.
fn conversation(end: pb::CallStatus) -> Vec<pb::CallEvent> {
    vec![
        status(1, pb::CallStatus::Ringing),
        status(2, pb::CallStatus::InProgress),
        said(3, pb::Speaker::Agent, "Hi, this is the assistant", true),
        said(4, pb::Speaker::Callee, "Hello?", false),
        status(5, end),
    ]
}

fn all(end: End) -> Plan {
    Plan::Send {
        resend: 0,
        until: u64::MAX,
        end,
    }
}

async fn serve_on(fake: Fake, listener: tokio::net::TcpListener) {
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tonic::transport::Server::builder()
        .add_service(VoiceAgentServiceServer::new(fake))
        .serve_with_incoming(incoming)
        .await
        .unwrap();
}

/// Serves on its own thread and runtime, so that stopping it drops every
/// connection task too (aborting a `serve` future leaves those running).
fn start_killable(
    fake: Fake,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            serve_on(fake, listener).await
        });
        let _ = runtime.block_on(stopped);
        // Dropping a current-thread runtime drops every task on this thread
        // before returning: the listener and all connections are closed.
        drop(runtime);
    });
    (addr, stop, thread)
}

async fn start(fake: Fake) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, tokio::spawn(serve_on(fake, listener)))
}

async fn cli(addr: SocketAddr, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_voice-agent"))
        .args(args)
        .env("VOICE_AGENT_SERVER", format!("http://{addr}"))
        .env_remove("API_TOKEN")
        .env_remove("NO_COLOR")
        .output()
        .await
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn watch_prints_the_conversation_and_exits_with_the_outcome() {
    for (end, code) in [
        (pb::CallStatus::Completed, 0),
        (pb::CallStatus::Failed, 3),
        (pb::CallStatus::Busy, 4),
        (pb::CallStatus::NoAnswer, 5),
        (pb::CallStatus::Canceled, 6),
    ] {
        let fake = Fake::default().with_call("c1", conversation(end), vec![all(End::Ok)]);
        let (addr, _server) = start(fake).await;
        let out = cli(addr, &["watch", "c1"]).await;
        assert_eq!(out.status.code(), Some(code), "{end:?}: {}", stderr(&out));
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        // Piped: no colour codes.
        assert!(!text.contains('\x1b'));
        assert!(lines[0].ends_with("  status   RINGING"), "{}", lines[0]);
        assert!(
            lines[2].ends_with("  agent    Hi, this is the assistant [interrupted]"),
            "{}",
            lines[2]
        );
        assert!(lines[3].ends_with("  callee   Hello?"), "{}", lines[3]);
    }
}

#[tokio::test]
async fn json_prints_one_object_per_event() {
    let fake = Fake::default().with_call("c1", conversation(pb::CallStatus::Completed), vec![all(End::Ok)]);
    let (addr, _server) = start(fake).await;
    let out = cli(addr, &["--json", "watch", "c1", "--after", "2"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let sequences: Vec<&str> = events.iter().map(|e| e["sequence"].as_str().unwrap()).collect();
    assert_eq!(sequences, ["3", "4", "5"]);
    assert_eq!(events[0]["transcript"]["speaker"], "SPEAKER_AGENT");
    assert_eq!(events[0]["time"], "2023-11-14T22:13:23Z");
    assert_eq!(events[2]["status"]["status"], "CALL_STATUS_COMPLETED");
}

#[tokio::test]
async fn a_dropped_stream_resumes_after_the_last_event_without_duplicates() {
    let fake = Fake::default().with_call(
        "c1",
        conversation(pb::CallStatus::Busy),
        vec![
            Plan::Send {
                resend: 0,
                until: 3,
                end: End::Fail(tonic::Code::Unavailable),
            },
            // The second stream repeats event 3; it must not print twice.
            Plan::Send {
                resend: 1,
                until: u64::MAX,
                end: End::Ok,
            },
        ],
    );
    let state = fake.0.clone();
    let (addr, _server) = start(fake).await;
    let out = cli(addr, &["watch", "c1"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 5, "{}", stdout(&out));
    assert!(stderr(&out).contains("resuming after event 3"), "{}", stderr(&out));
    let watches = state.lock().unwrap().watches.clone();
    assert_eq!(watches, [("c1".to_string(), 0), ("c1".to_string(), 3)]);
}

#[tokio::test]
async fn a_stream_ending_early_is_resumed_too() {
    let fake = Fake::default().with_call(
        "c1",
        conversation(pb::CallStatus::Completed),
        vec![
            Plan::Send {
                resend: 0,
                until: 2,
                end: End::Ok,
            },
            all(End::Ok),
        ],
    );
    let (addr, _server) = start(fake).await;
    let out = cli(addr, &["watch", "c1"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 5);
}

#[tokio::test]
async fn a_stream_that_stays_broken_exits_7_and_says_how_to_resume() {
    let fake = Fake::default().with_call(
        "c1",
        conversation(pb::CallStatus::Completed),
        vec![
            Plan::Send {
                resend: 0,
                until: 2,
                end: End::Fail(tonic::Code::Unavailable),
            },
            Plan::Refuse(tonic::Code::Unavailable),
        ],
    );
    let state = fake.0.clone();
    let (addr, _server) = start(fake).await;
    let out = cli(addr, &["watch", "c1", "--reconnect-tries", "2"]).await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("voice-agent watch c1 --after 2"),
        "{}",
        stderr(&out)
    );
    assert_eq!(state.lock().unwrap().watches.len(), 3, "one watch plus two reconnects");
}

#[tokio::test]
async fn the_watch_survives_a_server_restart() {
    let history = conversation(pb::CallStatus::Completed);
    let first = Fake::default().with_call(
        "c1",
        history.clone(),
        vec![Plan::Send {
            resend: 0,
            until: 2,
            end: End::Hang,
        }],
    );
    let second = Fake::default().with_call("c1", history, vec![all(End::Ok)]);
    let second_state = second.0.clone();
    let (addr, stop, server) = start_killable(first);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_voice-agent"))
        .args(["watch", "c1", "--server", &addr.to_string()])
        .env_remove("API_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // The first server delivers two events and then hangs; kill it only once
    // the watcher has printed both, so the resume point is known.
    while seen.len() < 2 {
        seen.push(lines.next_line().await.unwrap().expect("the watcher ended early"));
    }
    stop.send(()).unwrap();
    tokio::task::spawn_blocking(move || server.join().unwrap())
        .await
        .unwrap();
    // The port was free a moment ago, but between the two servers any
    // process on the machine may be handed it as an ephemeral local port for
    // an outgoing connection (seen once while other suites ran beside this
    // one); such a connection is short-lived, so wait for it to go.
    let listener = {
        let mut tries = 0;
        loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 300 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot listen again on {addr}: {e}"),
            }
        }
    };
    let _server = tokio::spawn(serve_on(second, listener));
    // A guard against hanging forever, not a timing assertion.
    let rest = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(line);
        }
        child.wait().await.unwrap()
    })
    .await
    .expect("the watcher did not finish after the restart");
    assert_eq!(rest.code(), Some(0));
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(seen[4].ends_with("status   COMPLETED"), "{seen:?}");
    assert_eq!(second_state.lock().unwrap().watches, [("c1".to_string(), 2)]);
}

#[tokio::test]
async fn call_prints_the_id_says_emulated_and_sends_every_option() {
    let fake = Fake::default().with_call("done", conversation(pb::CallStatus::Completed), vec![all(End::Ok)]);
    let state = fake.0.clone();
    let (addr, _server) = start(fake).await;
    let out = cli(
        addr,
        &[
            "call",
            "+14155551212",
            "--backend",
            "voice-live",
            "--instructions",
            "Be brief.",
            "--voice",
            "alloy",
            "--greeting",
            "",
            "--max-duration",
            "2m",
            "--metadata",
            "ticket=42",
            "--var",
            "name=Sam",
            "--voicemail",
            "leave-message",
            "--voicemail-message",
            "Hi {{name}}, please call back.",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "done\nemulated call: no real phone is dialled\n");
    let placed = state.lock().unwrap().placed[0].clone();
    assert_eq!(placed.backend, pb::Backend::VoiceLive as i32);
    assert_eq!(placed.instructions, "Be brief.");
    assert_eq!(placed.voice, "alloy");
    assert_eq!(placed.greeting.as_deref(), Some(""));
    assert_eq!(placed.max_duration.map(|d| d.seconds), Some(120));
    assert_eq!(placed.metadata["ticket"], "42");
    assert_eq!(placed.variables["name"], "Sam");
    let voicemail = placed.voicemail.unwrap();
    assert_eq!(voicemail.mode(), pb::VoicemailMode::LeaveMessage);
    assert_eq!(voicemail.message, "Hi {{name}}, please call back.");
}

#[tokio::test]
async fn call_watch_follows_the_new_call() {
    let fake = Fake::default().with_call("done", conversation(pb::CallStatus::NoAnswer), vec![all(End::Ok)]);
    let (addr, _server) = start(fake).await;
    let out = cli(addr, &["--json", "call", "+14155551212", "--watch"]).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["callId"], "done");
    assert_eq!(lines[0]["emulated"], true);
    assert_eq!(lines[5]["status"]["status"], "CALL_STATUS_NO_ANSWER");
    assert!(stderr(&out).contains("emulated call: no real phone is dialled"));
}

#[tokio::test]
async fn errors_are_one_line_with_the_grpc_code() {
    let (addr, _server) = start(Fake::default()).await;
    let out = cli(addr, &["get", "missing"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: NOT_FOUND: call missing does not exist\n");
    assert!(out.stdout.is_empty());
    let out = cli(addr, &["call", "+1"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: INVALID_ARGUMENT: to: expected E.164, e.g. +14155551212\n"
    );
    let out = cli(addr, &["watch", "nope"]).await;
    assert_eq!(out.status.code(), Some(1), "NOT_FOUND is final, not retried");
    assert!(stderr(&out).starts_with("error: NOT_FOUND: "));
}

#[tokio::test]
async fn an_unreachable_server_is_one_line() {
    // Bind then drop: the port is (almost certainly) closed now.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let out = cli(addr, &["list"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("error: UNAVAILABLE"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[tokio::test]
async fn the_token_travels_as_bearer_metadata() {
    let fake = Fake::default();
    let state = fake.0.clone();
    let (addr, _server) = start(fake).await;
    let out = cli(addr, &["get", "c1", "--token", "s3cret"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_voice-agent"))
        .args(["get", "c1", "--server", &format!("http://{addr}")])
        .env("API_TOKEN", "from-env")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let _ = cli(addr, &["get", "c1"]).await;
    assert_eq!(state.lock().unwrap().auth, ["Bearer s3cret", "Bearer from-env", ""]);
}

#[tokio::test]
async fn get_list_and_hangup_print_records() {
    let (addr, _server) = start(Fake::default()).await;
    let out = cli(addr, &["get", "c9"]).await;
    assert!(stdout(&out).contains("call id        c9"), "{}", stdout(&out));
    let out = cli(addr, &["list"]).await;
    assert_eq!(stdout(&out).lines().count(), 2);
    assert!(stderr(&out).contains("--page-token p2"));
    let out = cli(addr, &["--json", "list", "--all"]).await;
    let ids: Vec<String> = stdout(&out)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["callId"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["c3", "c2", "c1"]);
    let out = cli(addr, &["--json", "hangup", "c7"]).await;
    let call: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(call["status"], "CALL_STATUS_CANCELED");
    assert_eq!(call["endReason"], "hung up by API");
    let out = cli(addr, &["--json", "transfer", "c8", "+15550120"]).await;
    assert_eq!(out.status.code(), Some(0));
    let call: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(call["transfer"]["target"], "+15550120");
    assert_eq!(call["transfer"]["state"], "TRANSFER_STATE_STARTED");
    assert_eq!(call["transfer"]["by"], "TRANSFER_BY_OPERATOR");
}

#[tokio::test]
async fn usage_errors_exit_2_and_help_documents_exit_codes() {
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let out = cli(addr, &["call"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = cli(addr, &["list", "--server", "ftp://x"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = cli(addr, &["watch", "--help"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("7  the event stream broke"), "{}", stdout(&out));
}

/// A server with real Twilio, only gpt-realtime configured (real), passthrough audio.
fn real_info() -> pb::GetServerInfoResponse {
    pb::GetServerInfoResponse {
        backends: vec![pb::BackendInfo {
            backend: pb::Backend::GptRealtime as i32,
            emulated: false,
            default_voice: "marin".into(),
            ..Default::default()
        }],
        default_backend: pb::Backend::GptRealtime as i32,
        telephony_emulated: false,
        default_greeting: "One moment please.".into(),
        default_max_duration: Some(prost_types::Duration { seconds: 300, nanos: 0 }),
        audio_mode: pb::AudioMode::Passthrough as i32,
        server_version: "9.8.7".into(),
        limits: None,
    }
}

#[tokio::test]
async fn info_prints_what_the_server_offers() {
    let fake = Fake::default().with_info(real_info());
    let state = fake.0.clone();
    let (addr, _server) = start(fake).await;
    let out = cli(addr, &["info", "--token", "t"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "version        9.8.7\n\
         telephony      Twilio: real phones are dialled\n\
         backends       gpt-realtime  real      voice marin\n\
         default        gpt-realtime\n\
         greeting       One moment please.\n\
         max duration   300 s\n\
         audio mode     passthrough\n"
    );
    assert_eq!(
        state.lock().unwrap().auth,
        ["Bearer t"],
        "the token travels with info too"
    );

    let out = cli(addr, &["--json", "info"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON object");
    assert_eq!(stdout(&out).lines().count(), 1);
    assert_eq!(v["backends"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["backends"][0]["backend"], "BACKEND_GPT_REALTIME");
    assert_eq!(v["backends"][0]["emulated"], false);
    assert_eq!(v["backends"][0]["defaultVoice"], "marin");
    assert_eq!(v["defaultBackend"], "BACKEND_GPT_REALTIME");
    assert_eq!(v["telephonyEmulated"], false);
    assert_eq!(v["defaultMaxDuration"], "300s");
    assert_eq!(v["audioMode"], "AUDIO_MODE_PASSTHROUGH");
    assert_eq!(v["serverVersion"], "9.8.7");
}

#[tokio::test]
async fn info_says_what_is_emulated() {
    let mut info = real_info();
    info.telephony_emulated = true;
    info.backends = vec![
        pb::BackendInfo {
            backend: pb::Backend::VoiceLive as i32,
            emulated: true,
            default_voice: "en-US-AriaNeural".into(),
            ..Default::default()
        },
        pb::BackendInfo {
            backend: pb::Backend::GptRealtime as i32,
            emulated: true,
            default_voice: "alloy".into(),
            ..Default::default()
        },
    ];
    let (addr, _server) = start(Fake::default().with_info(info)).await;
    let out = cli(addr, &["info"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("telephony      emulated: the built-in Twilio emulator answers; no real phone is dialled\n"),
        "{text}"
    );
    assert!(
        text.contains("backends       voice-live    emulated  voice en-US-AriaNeural\n               gpt-realtime  emulated  voice alloy\n"),
        "{text}"
    );
}

#[tokio::test]
async fn info_from_a_server_without_the_rpc_is_one_line() {
    let (addr, _server) = start(Fake::default()).await;
    let out = cli(addr, &["info"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error: UNIMPLEMENTED: "), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1);
    assert!(out.stdout.is_empty());
}
