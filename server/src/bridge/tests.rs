//! Whole bridges over in-memory sockets, on a paused clock: the shell, the
//! conversation and the writer together, with a store in memory and a
//! provider that records what it was asked. The wire protocols and real
//! sockets are covered end to end in `tests/it/calls.rs`.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::Message as WsMessage;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{Sink, Stream};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as AiMessage;
use tokio_util::sync::{CancellationToken, PollSender};

use super::shell::{AiConnect, Env, run_media};
use super::{APOLOGY, SHUTDOWN_REASON, TIME_LIMIT_GOODBYE};
use crate::call::hub::CallHub;
use crate::call::lifecycle;
use crate::call::{Backend, CallId, CallRecord, CallStatus, EventKind, Speaker};
use crate::config::{AudioMode, DatabaseLocation};
use crate::metrics::Metrics;
use crate::realtime::RealtimeError;
use crate::realtime::protocol::Dialect;
use crate::store::Store;
use crate::telephony::{DialRequest, Dialed, FailureClass, Telephony, TelephonyError};

const CALL_SID: &str = "CA0000000000000000000000000000000a";
const SECRET: &str = "s3cret";

/// A socket failure of the in-memory sockets.
#[derive(Debug)]
struct Broken;

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the other end is gone")
    }
}

/// The bridge's end of an in-memory WebSocket.
struct Pipe<M: Send + 'static> {
    rx: mpsc::Receiver<Result<M, Broken>>,
    tx: PollSender<M>,
}

/// The test's end: what it sends the bridge, what the bridge wrote.
struct Far<M> {
    tx: mpsc::Sender<Result<M, Broken>>,
    rx: mpsc::Receiver<M>,
}

/// A socket whose bridge side takes at most `capacity` unread messages.
fn pipe<M: Send + 'static>(capacity: usize) -> (Pipe<M>, Far<M>) {
    let (to_bridge, from_far) = mpsc::channel(64);
    let (to_far, from_bridge) = mpsc::channel(capacity);
    (
        Pipe {
            rx: from_far,
            tx: PollSender::new(to_far),
        },
        Far {
            tx: to_bridge,
            rx: from_bridge,
        },
    )
}

impl<M: Send + 'static> Stream for Pipe<M> {
    type Item = Result<M, Broken>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

impl<M: Send + 'static> Sink<M> for Pipe<M> {
    type Error = Broken;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Broken>> {
        self.get_mut().tx.poll_reserve(cx).map_err(|_| Broken)
    }

    fn start_send(self: Pin<&mut Self>, item: M) -> Result<(), Broken> {
        self.get_mut().tx.send_item(item).map_err(|_| Broken)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Broken>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Broken>> {
        self.get_mut().tx.close();
        Poll::Ready(Ok(()))
    }
}

impl Far<WsMessage> {
    async fn send(&self, v: Value) {
        self.tx.send(Ok(WsMessage::Text(v.to_string().into()))).await.unwrap();
    }

    /// The next text the bridge wrote, as JSON; `None` once it closed.
    async fn next(&mut self) -> Option<Value> {
        loop {
            match self.rx.recv().await? {
                WsMessage::Text(t) => return Some(serde_json::from_str(&t).unwrap()),
                WsMessage::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// Everything up to the bridge's close: its close frame's code, if any.
    async fn until_closed(&mut self) -> Option<u16> {
        while let Some(m) = self.rx.recv().await {
            if let WsMessage::Close(frame) = m {
                return frame.map(|f| f.code);
            }
        }
        None
    }
}

impl Far<AiMessage> {
    async fn send(&self, v: Value) {
        self.tx.send(Ok(AiMessage::Text(v.to_string().into()))).await.unwrap();
    }

    /// The `type` of the next event the bridge sent, with the event.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let AiMessage::Text(t) = self.rx.recv().await? {
                let v: Value = serde_json::from_str(&t).unwrap();
                return Some((v["type"].as_str().unwrap().to_string(), v));
            }
        }
    }

    async fn next_type(&mut self) -> String {
        self.next().await.map(|(t, _)| t).unwrap_or_default()
    }
}

/// A provider that does what it is asked and remembers it.
#[derive(Default)]
struct Phone {
    asked: Mutex<Vec<String>>,
    /// Refuse transfers (a provider error).
    refuse_transfer: std::sync::atomic::AtomicBool,
}

impl Phone {
    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

#[async_trait]
impl Telephony for Phone {
    async fn dial(&self, _: &DialRequest) -> Result<Dialed, TelephonyError> {
        Err(TelephonyError {
            class: FailureClass::Internal,
            provider_code: None,
            message: "not in these tests".into(),
        })
    }

    async fn hang_up(&self, sid: &str, _: bool) -> Result<(), TelephonyError> {
        self.asked.lock().unwrap().push(format!("hang up {sid}"));
        Ok(())
    }

    async fn say_and_hang_up(&self, sid: &str, text: &str) -> Result<(), TelephonyError> {
        self.asked
            .lock()
            .unwrap()
            .push(format!("say {text:?} on {sid} and hang up"));
        Ok(())
    }

    async fn transfer(&self, sid: &str, req: &crate::telephony::TransferRequest) -> Result<(), TelephonyError> {
        self.asked
            .lock()
            .unwrap()
            .push(format!("transfer {sid} to {} from {}", req.to, req.caller_id));
        if self.refuse_transfer.load(Ordering::SeqCst) {
            return Err(TelephonyError {
                class: FailureClass::InvalidArgument,
                provider_code: Some("21210".into()),
                message: "caller id not verified (Twilio 21210)".into(),
            });
        }
        assert!(
            req.action_url
                .starts_with("https://agent.example/twilio/dial-action?call_id=call_"),
            "{}",
            req.action_url
        );
        Ok(())
    }
}

/// AI sessions handed out in order; refused once there are no more.
#[derive(Default)]
struct Ai {
    sessions: Mutex<VecDeque<Pipe<AiMessage>>>,
    opened: AtomicUsize,
}

impl Ai {
    /// One more session the bridge may open; the test's end of it.
    fn session(&self) -> Far<AiMessage> {
        self.session_taking(1024)
    }

    /// A session that takes at most `capacity` unread messages.
    fn session_taking(&self, capacity: usize) -> Far<AiMessage> {
        let (pipe, far) = pipe(capacity);
        self.sessions.lock().unwrap().push_back(pipe);
        far
    }
}

impl AiConnect for &Ai {
    type Socket = Pipe<AiMessage>;
    type Error = Broken;

    fn connect(&self) -> impl Future<Output = Result<(Self::Socket, Dialect), RealtimeError>> + Send {
        let next = self.sessions.lock().unwrap().pop_front();
        if next.is_some() {
            self.opened.fetch_add(1, Ordering::SeqCst);
        }
        async move { next.map(|p| (p, Dialect::OpenAiGa)).ok_or(RealtimeError::Refused(503)) }
    }
}

/// A live, answered call in a store in memory, and what its bridge needs.
struct World {
    hub: CallHub,
    shutdown: CancellationToken,
    handover: CancellationToken,
    phone: Phone,
    metrics: Metrics,
    ai: Ai,
    record: CallRecord,
    tool_desk: crate::call::tools::ToolDesk,
    tool_http: crate::tool_http::ToolHttp,
}

impl World {
    async fn new(max_duration_secs: u64) -> Self {
        let shutdown = CancellationToken::new();
        let hub = CallHub::new(Store::open(&DatabaseLocation::Memory).await.unwrap(), shutdown.clone());
        let record = CallRecord {
            call_id: CallId::new(),
            to: "+15550100".into(),
            from: "+15005550006".into(),
            backend: Backend::GptRealtime,
            status: CallStatus::InProgress,
            provider_call_id: CALL_SID.into(),
            metadata: Default::default(),
            created_at: chrono::Utc::now(),
            answered_at: None,
            ended_at: None,
            emulated: true,
            end_reason: String::new(),
            instructions: "Be brief.".into(),
            voice: "marin".into(),
            greeting: String::new(),
            max_duration_secs,
            duration_seconds: 0,
            answered_by: String::new(),
            provider_error_code: String::new(),
            turn_latency_p50_ms: 0,
            turn_latency_p95_ms: 0,
            event_count: 0,
            stream_secret: SECRET.into(),
            last_provider_sequence: None,
            turn_latencies_ms: vec![],
            record: false,
            recording: None,
            tools: vec![],
            tool_timeout_ms: 0,
            voicemail: Default::default(),
            webhooks: vec![],
            transfer_targets: vec![],
            transfer: None,
            stream_generation: 0,
            resuming: None,
        };
        hub.create(record.clone()).await.unwrap();
        Self {
            hub,
            shutdown,
            handover: CancellationToken::new(),
            phone: Phone::default(),
            metrics: Metrics::default(),
            ai: Ai::default(),
            record,
            tool_desk: Default::default(),
            tool_http: crate::tool_http::ToolHttp::new(None),
        }
    }

    /// Runs the bridge on `twilio` beside the test's `script`.
    async fn run<F: Future<Output = ()>>(&self, twilio: Pipe<WsMessage>, script: F) {
        let env = Env {
            hub: &self.hub,
            telephony: &self.phone,
            metrics: &self.metrics,
            shutdown: &self.shutdown,
            handover: &self.handover,
            audio_mode: AudioMode::Passthrough,
            ai: &self.ai,
            recordings: None,
            tool_desk: &self.tool_desk,
            tool_http: &self.tool_http,
            public_url: "https://agent.example",
            from_number: "+15005550006",
        };
        tokio::join!(run_media(&env, self.record.clone(), twilio), script);
    }

    async fn stored(&self) -> CallRecord {
        self.hub.get(&self.record.call_id).await.unwrap()
    }

    async fn events(&self) -> Vec<EventKind> {
        let events = self
            .hub
            .store()
            .events_after(&self.record.call_id, 0, usize::MAX)
            .await
            .unwrap();
        events.into_iter().map(|e| e.kind).collect()
    }

    async fn errors(&self) -> Vec<(String, String)> {
        self.events()
            .await
            .into_iter()
            .filter_map(|e| match e {
                EventKind::Error { code, message } => Some((code, message)),
                _ => None,
            })
            .collect()
    }
}

fn start(secret: &str) -> Value {
    json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
        "start": {"streamSid": "MZ1", "callSid": CALL_SID, "tracks": ["inbound"],
            "customParameters": {"secret": secret}}})
}

fn callee_audio() -> Value {
    json!({"event": "media", "streamSid": "MZ1",
        "media": {"track": "inbound", "chunk": "1", "timestamp": "20", "payload": B64.encode([0xFFu8; 160])}})
}

fn agent_audio(response: &str, item: &str, ms: usize) -> Value {
    json!({"type": "response.output_audio.delta", "response_id": response, "item_id": item,
        "delta": B64.encode(vec![0xFFu8; ms * 8])})
}

/// The events of a response `response` with one message item `item`.
async fn agent_item(ai: &Far<AiMessage>, response: &str, item: &str) {
    ai.send(json!({"type": "response.created", "response": {"id": response}}))
        .await;
    ai.send(json!({"type": "response.output_item.added", "response_id": response,
        "item": {"id": item, "type": "message"}}))
        .await;
}

#[tokio::test(start_paused = true)]
async fn no_start_within_the_limit_closes_the_stream_and_the_record_says_why() {
    let world = World::new(600).await;
    let (twilio, mut far) = pipe(64);
    world
        .run(twilio, async {
            far.send(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
                .await;
            assert_eq!(far.until_closed().await, Some(1008), "closed as refused");
        })
        .await;
    assert_eq!(
        world.stored().await.end_reason,
        "Twilio sent no 'start' within 10s; closed the media stream"
    );
    assert_eq!(world.errors().await[0].0, "media_no_start");
    assert_eq!(
        world.ai.opened.load(Ordering::SeqCst),
        0,
        "no AI for a stream that never started"
    );
    assert_eq!(
        world.phone.asked(),
        [format!("hang up {CALL_SID}")],
        "the call gets no other stream, so it is hung up"
    );
}

#[tokio::test(start_paused = true)]
async fn a_start_without_the_call_secret_is_refused() {
    let world = World::new(600).await;
    let (twilio, mut far) = pipe(64);
    world
        .run(twilio, async {
            far.send(json!({"event": "nonsense"})).await;
            far.send(start("guess")).await;
            assert_eq!(far.until_closed().await, Some(1008));
        })
        .await;
    let errors = world.errors().await;
    assert_eq!(errors[0].0, "media_refused");
    assert_eq!(
        world.stored().await.end_reason,
        errors[0].1,
        "the reason is the refusal"
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(world.phone.asked(), [format!("hang up {CALL_SID}")]);
}

#[tokio::test(start_paused = true)]
async fn a_conversation_flows_both_ways_and_ends_when_twilio_stops() {
    let world = World::new(600).await;
    let mut ai = world.ai.session();
    let (twilio, mut far) = pipe(64);
    world
        .run(twilio, async {
            far.send(start(SECRET)).await;
            // The session is configured, then the agent speaks first.
            let (kind, update) = ai.next().await.unwrap();
            assert_eq!(kind, "session.update");
            assert_eq!(update["session"]["instructions"], "Be brief.");
            assert_eq!(update["session"]["audio"]["output"]["format"]["type"], "audio/pcmu");
            assert_eq!(ai.next_type().await, "response.create");

            agent_item(&ai, "r1", "a1").await;
            ai.send(agent_audio("r1", "a1", 100)).await;
            ai.send(json!({"type": "response.output_audio.done", "response_id": "r1", "item_id": "a1"}))
                .await;
            ai.send(
                json!({"type": "response.output_audio_transcript.done", "response_id": "r1",
                "item_id": "a1", "transcript": "Hello there."}),
            )
            .await;
            ai.send(json!({"type": "response.done", "response": {"id": "r1", "status": "completed"}}))
                .await;
            // Audio, then its mark; Twilio echoes the mark once it played.
            let media = far.next().await.unwrap();
            assert_eq!(
                (media["event"].as_str(), media["streamSid"].as_str()),
                (Some("media"), Some("MZ1"))
            );
            assert_eq!(
                B64.decode(media["media"]["payload"].as_str().unwrap()).unwrap().len(),
                800
            );
            let mark = far.next().await.unwrap();
            assert_eq!(mark["event"], "mark");
            tokio::time::sleep(Duration::from_millis(100)).await;
            far.send(json!({"event": "mark", "streamSid": "MZ1", "mark": {"name": mark["mark"]["name"]}}))
                .await;

            // The callee's audio goes to the AI as it came (μ-law both ways).
            far.send(callee_audio()).await;
            let (kind, append) = ai.next().await.unwrap();
            assert_eq!(kind, "input_audio_buffer.append");
            assert_eq!(B64.decode(append["audio"].as_str().unwrap()).unwrap(), [0xFFu8; 160]);

            far.send(json!({"event": "dtmf", "streamSid": "MZ1", "dtmf": {"track": "inbound_track", "digit": "7"}}))
                .await;
            far.send(json!({"event": "stop", "streamSid": "MZ1", "stop": {}})).await;
            assert_eq!(far.until_closed().await, None, "a plain close");
            assert!(ai.next().await.is_none(), "the AI socket is closed too");
        })
        .await;
    assert_eq!(
        world.events().await,
        vec![
            EventKind::Transcript {
                speaker: Speaker::Agent,
                text: "Hello there.".into(),
                interrupted: false
            },
            EventKind::Dtmf { digit: "7".into() },
        ]
    );
    assert!(world.phone.asked().is_empty(), "Twilio ended the call itself");
    assert_eq!(world.metrics.frames_to_twilio.get(), 1);
    assert_eq!(world.metrics.frames_to_ai.get(), 1);
    assert_eq!(world.metrics.active_bridges.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn barge_in_writes_the_clear_first_and_truncates_at_what_played() {
    let world = World::new(600).await;
    let mut ai = world.ai.session();
    let (twilio, mut far) = pipe(64);
    world
        .run(twilio, async {
            far.send(start(SECRET)).await;
            assert_eq!(ai.next_type().await, "session.update");
            assert_eq!(ai.next_type().await, "response.create");
            agent_item(&ai, "r1", "a1").await;
            ai.send(agent_audio("r1", "a1", 500)).await;
            for expected in ["media", "mark"] {
                assert_eq!(far.next().await.unwrap()["event"], expected);
            }
            // 120 ms of the 500 ms chunk played (no mark came back), then
            // the callee speaks.
            tokio::time::sleep(Duration::from_millis(120)).await;
            ai.send(json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"}))
                .await;
            assert_eq!(far.next().await.unwrap()["event"], "clear");
            let (kind, truncate) = ai.next().await.unwrap();
            assert_eq!(kind, "conversation.item.truncate");
            assert_eq!(
                (truncate["item_id"].as_str(), truncate["audio_end_ms"].as_u64()),
                (Some("a1"), Some(120))
            );
            // Late audio of the cut response never reaches Twilio.
            ai.send(agent_audio("r1", "a1", 100)).await;
            ai.send(
                json!({"type": "response.output_audio_transcript.done", "response_id": "r1",
                "item_id": "a1", "transcript": "one two three four five"}),
            )
            .await;
            far.send(json!({"event": "stop", "streamSid": "MZ1", "stop": {}})).await;
            assert_eq!(far.next().await, None, "nothing after the clear");
        })
        .await;
    assert_eq!(world.metrics.barge_in.count(), 1);
    assert_eq!(world.metrics.frames_dropped_barge_in.get(), 1);
    assert_eq!(
        world.events().await,
        vec![EventKind::Transcript {
            speaker: Speaker::Agent,
            text: "one".into(),
            interrupted: true
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn the_time_limit_says_goodbye_through_the_provider_and_the_record_says_why() {
    let world = World::new(30).await;
    let mut ai = world.ai.session();
    let (twilio, mut far) = pipe(64);
    world
        .run(twilio, async {
            far.send(start(SECRET)).await;
            assert_eq!(ai.next_type().await, "session.update");
            // Nobody says anything more: 30 s later the bridge ends the call.
            assert_eq!(far.until_closed().await, None);
        })
        .await;
    assert_eq!(
        world.stored().await.end_reason,
        "the call reached its maximum duration (30 s)"
    );
    assert_eq!(
        world.phone.asked(),
        [format!("say {TIME_LIMIT_GOODBYE:?} on {CALL_SID} and hang up")]
    );
}

#[tokio::test(start_paused = true)]
async fn twilio_that_stops_reading_is_hung_up_after_the_write_stall() {
    let world = World::new(600).await;
    let ai = world.ai.session();
    // Twilio's side takes 8 messages and then nothing: the test never reads it.
    let (twilio, far) = pipe(8);
    world
        .run(twilio, async {
            far.send(start(SECRET)).await;
            agent_item(&ai, "r1", "a1").await;
            for _ in 0..10 {
                ai.send(agent_audio("r1", "a1", 100)).await;
            }
        })
        .await;
    drop(far);
    let reason = "Twilio's media stream stopped taking data: nothing could be written to it for 5s";
    assert_eq!(world.stored().await.end_reason, reason);
    assert_eq!(
        world.errors().await,
        [("media_socket_error".to_string(), reason.to_string())]
    );
    assert_eq!(
        world.phone.asked(),
        [format!("hang up {CALL_SID}")],
        "through the REST API"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_ai_is_reconnected_once_then_the_call_ends_with_an_apology() {
    let world = World::new(600).await;
    let mut first = world.ai.session();
    let mut second = world.ai.session();
    let (twilio, mut far) = pipe(64);
    world
        .run(twilio, async {
            far.send(start(SECRET)).await;
            assert_eq!(first.next_type().await, "session.update");
            // The agent's greeting is heard in full, then the AI drops.
            agent_item(&first, "r1", "a1").await;
            first.send(agent_audio("r1", "a1", 100)).await;
            first
                .send(
                    json!({"type": "response.output_audio_transcript.done", "response_id": "r1",
                    "item_id": "a1", "transcript": "Hi, this is Contoso."}),
                )
                .await;
            first
                .send(json!({"type": "response.done", "response": {"id": "r1", "status": "completed"}}))
                .await;
            far.next().await.unwrap();
            let mark = far.next().await.unwrap();
            far.send(json!({"event": "mark", "streamSid": "MZ1", "mark": {"name": mark["mark"]["name"]}}))
                .await;
            far.send(callee_audio()).await;
            while first.next_type().await != "input_audio_buffer.append" {}
            drop(first);
            // The new session gets the instructions and the conversation;
            // the agent spoke last, so it is not asked to speak again.
            assert_eq!(second.next_type().await, "session.update");
            let (kind, restored) = second.next().await.unwrap();
            assert_eq!(kind, "conversation.item.create");
            assert_eq!(restored["item"]["role"], "assistant");
            far.send(callee_audio()).await;
            assert_eq!(second.next_type().await, "input_audio_buffer.append");
            drop(second);
            assert_eq!(far.until_closed().await, None);
        })
        .await;
    assert_eq!(world.ai.opened.load(Ordering::SeqCst), 2, "one reconnect");
    let events = world.events().await;
    assert!(
        matches!(&events[1], EventKind::Notice { code, message }
            if code == "ai_reconnected" && message.starts_with("the AI connection dropped; re-established in 0 ms")),
        "{events:?}"
    );
    assert_eq!(world.errors().await[0].0, "ai_disconnected");
    assert_eq!(
        world.stored().await.end_reason,
        "the AI failed: the AI connection dropped"
    );
    assert_eq!(
        world.phone.asked(),
        [format!("say {APOLOGY:?} on {CALL_SID} and hang up")]
    );
}

#[tokio::test(start_paused = true)]
async fn an_ai_that_cannot_be_reached_gets_an_apology() {
    let world = World::new(600).await;
    let (twilio, mut far) = pipe(64);
    world
        .run(twilio, async {
            far.send(start(SECRET)).await;
            // The socket is dropped without a close: the provider ends the call.
            assert_eq!(far.until_closed().await, None);
        })
        .await;
    assert_eq!(world.errors().await[0].0, "ai_refused");
    assert_eq!(
        world.stored().await.end_reason,
        "the AI failed: the AI service refused the connection (HTTP 503)"
    );
    assert_eq!(
        world.phone.asked(),
        [format!("say {APOLOGY:?} on {CALL_SID} and hang up")]
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_shutdown_ends_the_call_with_that_reason_and_closes_the_stream() {
    let world = World::new(600).await;
    let mut ai = world.ai.session();
    let (twilio, mut far) = pipe(64);
    world
        .run(twilio, async {
            far.send(start(SECRET)).await;
            assert_eq!(ai.next_type().await, "session.update");
            world.shutdown.cancel();
            assert_eq!(far.until_closed().await, None, "closing the stream is what hangs up");
        })
        .await;
    let record = world.stored().await;
    assert_eq!(
        (record.status, record.end_reason.as_str()),
        (CallStatus::Completed, SHUTDOWN_REASON)
    );
    assert_eq!(
        world.events().await.last(),
        Some(&EventKind::Status {
            status: CallStatus::Completed,
            detail: SHUTDOWN_REASON.into()
        })
    );
    assert!(world.phone.asked().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_server_shutdown_says_the_end_reason_recorded_first() {
    let world = World::new(600).await;
    let mut ai = world.ai.session();
    let (twilio, mut far) = pipe(64);
    world
        .hub
        .update(&world.record.call_id, |r| {
            lifecycle::note_end_reason(r, "the callee hung up");
            vec![]
        })
        .await
        .unwrap();
    world
        .run(twilio, async {
            far.send(start(SECRET)).await;
            assert_eq!(ai.next_type().await, "session.update");
            world.shutdown.cancel();
            assert_eq!(far.until_closed().await, None);
        })
        .await;
    let record = world.stored().await;
    assert_eq!(
        (record.status, record.end_reason.as_str()),
        (CallStatus::Completed, "the callee hung up")
    );
    assert_eq!(
        world.events().await.last(),
        Some(&EventKind::Status {
            status: CallStatus::Completed,
            detail: "the callee hung up".into()
        })
    );
}

#[tokio::test(start_paused = true)]
async fn the_first_end_reason_stays() {
    let world = World::new(600).await;
    let mut ai = world.ai.session();
    let (twilio, mut far) = pipe(64);
    world
        .hub
        .update(&world.record.call_id, |r| {
            r.end_reason = "the callee hung up".into();
            vec![]
        })
        .await
        .unwrap();
    world
        .run(twilio, async {
            far.send(start(SECRET)).await;
            assert_eq!(ai.next_type().await, "session.update");
            ai.send(json!({"type": "error", "error": {"type": "invalid_request_error",
                "code": "session_expired", "message": "expired"}}))
                .await;
            assert_eq!(far.until_closed().await, None);
        })
        .await;
    assert_eq!(world.stored().await.end_reason, "the callee hung up");
    assert_eq!(world.errors().await[0].0, "ai_session_expired");
    assert_eq!(
        world.phone.asked(),
        [format!("say {APOLOGY:?} on {CALL_SID} and hang up")]
    );
}

#[tokio::test(start_paused = true)]
async fn an_ai_that_stops_reading_gets_one_reconnect_then_an_apology_naming_it() {
    let world = World::new(600).await;
    // Both sessions take 8 messages and then nothing: the test never reads them.
    let sessions = [world.ai.session_taking(8), world.ai.session_taking(8)];
    let (twilio, mut far) = pipe(64);
    world
        .run(twilio, async {
            far.send(start(SECRET)).await;
            for _ in 0..20 {
                far.send(callee_audio()).await;
            }
            assert_eq!(far.until_closed().await, None);
        })
        .await;
    drop(sessions);
    let cause = "the AI connection stopped taking data: nothing could be written to it for 5s";
    assert_eq!(world.ai.opened.load(Ordering::SeqCst), 2, "one reconnect");
    assert_eq!(world.stored().await.end_reason, format!("the AI failed: {cause}"));
    let events = world.events().await;
    assert!(
        matches!(&events[0], EventKind::Notice { code, message } if code == "ai_reconnected" && message.starts_with(cause)),
        "{events:?}"
    );
    assert_eq!(
        world.errors().await,
        [(
            "ai_socket_error".to_string(),
            format!("{cause}; apologising and hanging up")
        )]
    );
    assert_eq!(
        world.phone.asked(),
        [format!("say {APOLOGY:?} on {CALL_SID} and hang up")]
    );
}

/// A call with a voicemail policy: the greeting waits for detection.
async fn world_with_voicemail(mode: crate::call::VoicemailMode) -> World {
    let mut world = World::new(600).await;
    let voicemail = crate::call::Voicemail {
        mode,
        message: "Please call us back.".into(),
        detected: false,
    };
    world.record.voicemail = voicemail.clone();
    world.record.greeting = "Hi, this is Contoso.".into();
    world
        .hub
        .update(&world.record.call_id, move |r| {
            r.voicemail = voicemail;
            vec![]
        })
        .await
        .unwrap();
    world
}

#[tokio::test(start_paused = true)]
async fn without_a_detection_result_the_agent_greets_after_the_bound_and_not_before() {
    let world = world_with_voicemail(crate::call::VoicemailMode::LeaveMessage).await;
    let mut ai = world.ai.session();
    let (twilio, far) = pipe(64);
    world
        .run(twilio, async {
            far.send(start(SECRET)).await;
            assert_eq!(ai.next_type().await, "session.update");
            let started = tokio::time::Instant::now();
            // The callee's audio is held from the AI while detection decides.
            for _ in 0..5 {
                far.send(callee_audio()).await;
            }
            let (kind, create) = ai.next().await.unwrap();
            assert_eq!(kind, "response.create", "{create}");
            assert!(
                started.elapsed() >= lifecycle::amd::DETECTION_WAIT,
                "greeted after {:?}",
                started.elapsed()
            );
            let instructions = create["response"]["instructions"].as_str().unwrap();
            assert!(instructions.contains("\"Hi, this is Contoso.\""), "{instructions}");
            // From now on the callee is heard.
            far.send(callee_audio()).await;
            assert_eq!(ai.next_type().await, "input_audio_buffer.append");
            far.send(json!({"event": "stop", "streamSid": "MZ1", "stop": {}})).await;
        })
        .await;
    let stored = world.stored().await;
    assert_eq!(stored.answered_by, "unknown");
    let detected: Vec<_> = world
        .events()
        .await
        .into_iter()
        .filter(|e| matches!(e, EventKind::AnsweredBy { .. }))
        .collect();
    let [
        EventKind::AnsweredBy {
            answered_by, action, ..
        },
    ] = detected.as_slice()
    else {
        panic!("{detected:?}")
    };
    assert_eq!(answered_by, "unknown");
    assert!(
        action.starts_with("greeting the callee (no detection result"),
        "{action}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stored_machine_result_hangs_up_under_the_hang_up_policy() {
    let world = world_with_voicemail(crate::call::VoicemailMode::HangUp).await;
    let mut ai = world.ai.session();
    let (twilio, mut far) = pipe(64);
    let id = world.record.call_id.clone();
    world
        .run(twilio, async {
            far.send(start(SECRET)).await;
            assert_eq!(ai.next_type().await, "session.update");
            // The provider's result lands in the store (as the /twilio/amd webhook does).
            let report = lifecycle::amd::AmdReport {
                call_sid: Some(CALL_SID.into()),
                answered_by: "machine_start".into(),
                detection_ms: Some(2400),
            };
            world
                .hub
                .update(&id, move |r| lifecycle::amd::on_result(r, &report).unwrap())
                .await
                .unwrap();
            assert_eq!(far.until_closed().await, None, "the bridge closed the stream");
        })
        .await;
    assert_eq!(world.phone.asked(), [format!("hang up {CALL_SID}")]);
    assert_eq!(
        world.stored().await.end_reason,
        lifecycle::amd::hung_up_reason("machine_start")
    );
    assert_eq!(world.stored().await.answered_by, "machine_start");
}

/// A call with transfer targets whose agent says a hand-off line, then calls `transfer_call`.
async fn handing_off(world: &World, ai: &mut Far<AiMessage>, far: &mut Far<WsMessage>) {
    far.send(start(SECRET)).await;
    let (kind, update) = ai.next().await.unwrap();
    assert_eq!(kind, "session.update");
    let tools = update["session"]["tools"].as_array().unwrap();
    let transfer = tools
        .iter()
        .find(|t| t["name"] == "transfer_call")
        .expect("transfer_call offered");
    assert_eq!(
        transfer["parameters"]["properties"]["number"]["enum"],
        json!(["+15550120"])
    );
    assert_eq!(ai.next_type().await, "response.create");
    agent_item(ai, "r1", "a1").await;
    ai.send(agent_audio("r1", "a1", 100)).await;
    ai.send(json!({"type": "response.output_audio.done", "response_id": "r1", "item_id": "a1"}))
        .await;
    ai.send(
        json!({"type": "response.output_audio_transcript.done", "response_id": "r1",
        "item_id": "a1", "transcript": "Let me connect you."}),
    )
    .await;
    ai.send(
        json!({"type": "response.function_call_arguments.done", "response_id": "r1", "item_id": "f1",
        "call_id": "c1", "name": "transfer_call", "arguments": "{\"number\":\"+15550120\"}"}),
    )
    .await;
    ai.send(json!({"type": "response.done", "response": {"id": "r1", "status": "completed"}}))
        .await;
    let media = far.next().await.unwrap();
    assert_eq!(media["event"], "media");
    let mark = far.next().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        world.phone.asked().is_empty(),
        "nothing before the hand-off sentence played"
    );
    far.send(json!({"event": "mark", "streamSid": "MZ1", "mark": {"name": mark["mark"]["name"]}}))
        .await;
}

async fn world_with_targets() -> World {
    let mut world = World::new(600).await;
    world.record.transfer_targets = vec![crate::call::TransferTarget {
        number: "+15550120".into(),
        description: "billing".into(),
    }];
    let targets = world.record.transfer_targets.clone();
    world
        .hub
        .update(&world.record.call_id, move |r| {
            r.transfer_targets = targets;
            vec![]
        })
        .await
        .unwrap();
    world
}

#[tokio::test(start_paused = true)]
async fn transfer_call_redirects_the_call_once_the_hand_off_played_and_ends_the_bridge() {
    let world = world_with_targets().await;
    let mut ai = world.ai.session();
    let (twilio, mut far) = pipe(64);
    world
        .run(twilio, async {
            handing_off(&world, &mut ai, &mut far).await;
            assert_eq!(far.until_closed().await, None, "the bridge is over");
            assert!(ai.next().await.is_none(), "the AI session is closed");
        })
        .await;
    assert_eq!(
        world.phone.asked(),
        vec![format!("transfer {CALL_SID} to +15550120 from +15005550006")]
    );
    let stored = world.stored().await;
    assert_eq!(stored.status, CallStatus::InProgress, "the dial's outcome ends it");
    assert!(stored.end_reason.is_empty());
    let transfer = stored.transfer.unwrap();
    assert_eq!(transfer.state, crate::call::TransferState::Started);
    assert_eq!(transfer.by, crate::call::TransferBy::Agent);
    let events = world.events().await;
    assert!(matches!(events.last(), Some(EventKind::Transfer(_))), "{events:?}");
}

#[tokio::test(start_paused = true)]
async fn a_refused_transfer_goes_back_to_the_agent_which_hears_why() {
    let world = world_with_targets().await;
    world.phone.refuse_transfer.store(true, Ordering::SeqCst);
    let mut ai = world.ai.session();
    let (twilio, mut far) = pipe(64);
    world
        .run(twilio, async {
            handing_off(&world, &mut ai, &mut far).await;
            let (kind, item) = ai.next().await.unwrap();
            assert_eq!(kind, "conversation.item.create");
            assert_eq!(item["item"]["call_id"], "c1");
            assert!(item["item"]["output"].as_str().unwrap().contains("refused"), "{item}");
            assert_eq!(ai.next_type().await, "response.create", "the agent speaks again");
            far.send(json!({"event": "stop", "streamSid": "MZ1", "stop": {}})).await;
            far.until_closed().await;
        })
        .await;
    let stored = world.stored().await;
    assert_eq!(stored.transfer.unwrap().state, crate::call::TransferState::Failed);
    assert!(
        world
            .errors()
            .await
            .iter()
            .any(|(code, m)| code == "twilio_21210" || m.contains("redirect failed")),
        "{:?}",
        world.errors().await
    );
}
