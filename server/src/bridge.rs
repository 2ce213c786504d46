//! The per-call media bridge: one actor owns the Twilio Media Streams socket
//! and the realtime-AI socket of a call, moves audio both ways, and turns what
//! happens into call events (transcripts, errors, DTMF, turn metrics).
//!
//! Shape (architecture.md "Actors for long-lived tasks"): [`serve_media`]
//! checks the stream's `start`, opens the AI socket and runs [`MediaBridge::run`],
//! a `select!` over Twilio in, AI in and the call's cancellation. The actor
//! writes both sockets itself, with no queue in between: what one message
//! produces is fed to the socket, and everything fed is written in one go as
//! soon as nothing more is ready to read (an [`Outbox`]). So a barge-in's
//! `clear` is never behind queued audio of ours ("control before data"), a
//! frame costs no task hand-over, and a burst costs one write. Events go to
//! the store through a per-call publisher task, so a slow commit never holds
//! up audio.
//!
//! What the callee has *heard* is known from mark acknowledgements
//! (protocols.md §5.3): every audio chunk sent to Twilio is followed by a mark
//! carrying the item's byte position; Twilio echoes it once that audio played.

pub mod frames;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as AiMessage;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::audio::ULAW_BYTES_PER_MS;
use crate::bridge::frames::FrameCodec;
use crate::call::{CallId, CallRecord, CallStatus, EventKind, Speaker};
use crate::config::AudioMode;
use crate::metrics::{Counter, Histogram};
use crate::realtime::RealtimeSocket;
use crate::realtime::protocol::{self, AudioFormat, Dialect, ServerEvent};
use crate::telephony::twilio::media::{self as tw, TwilioInbound};

/// How long Twilio has to send `start` after the upgrade.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing a socket may take before it is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Spoken when the AI cannot be reached or fails for good.
pub const APOLOGY: &str = "Sorry, our assistant is not available right now. Please try again later. Goodbye.";
/// Spoken when the call reaches its maximum duration.
pub const TIME_LIMIT_GOODBYE: &str = "We have reached the time limit for this call. Thank you for your time. Goodbye.";
/// Barge-ins whose response's late deltas are still recognised and dropped.
const CANCELLED_KEPT: usize = 8;
/// How long reconnecting to a dropped AI may take (issue: within 2 s).
pub const RECONNECT_WITHIN: Duration = Duration::from_secs(2);
/// The end reason of a call the server stopped under.
pub const SHUTDOWN_REASON: &str = "the server is shutting down";

/// Runs the media side of one call on an upgraded Twilio WebSocket.
pub async fn serve_media(state: Arc<AppState>, record: CallRecord, socket: WebSocket) {
    let id = record.call_id.clone();
    let Some(cancel) = state.hub.media_token(&id) else {
        return;
    };
    let mut socket = socket;

    let start = tokio::select! {
        s = wait_for_start(&mut socket, &record) => s,
        _ = cancel.cancelled() => {
            if state.shutdown.is_cancelled() {
                // Dropping the socket on return closes the stream, which hangs up.
                end_on_shutdown(&state, &id).await;
            }
            return;
        }
    };
    let (stream_sid, first_malformed) = match start {
        Ok(ok) => ok,
        Err(why) => {
            tracing::warn!(call_id = %id, why = %why.message, "media stream refused");
            // Closing the stream ends Twilio's <Connect> and so the call: keep why.
            note_end_reason(&state, &id, &why.message).await;
            publish(
                &state,
                &id,
                EventKind::Error {
                    code: why.code.into(),
                    message: why.message.clone(),
                },
            )
            .await;
            let _ = tokio::time::timeout(
                CLOSE_TIMEOUT,
                socket.send(WsMessage::Close(Some(CloseFrame {
                    code: 1008,
                    reason: "refused".into(),
                }))),
            )
            .await;
            return;
        }
    };

    let (ai, dialect) = match state.realtime.connect(record.backend).await {
        Ok(ok) => ok,
        Err(e) => {
            tracing::warn!(call_id = %id, error = %e, "cannot open the realtime AI");
            publish(
                &state,
                &id,
                EventKind::Error {
                    code: e.code().into(),
                    message: format!("{e}; apologising and hanging up"),
                },
            )
            .await;
            end_with_apology(&state, &record, &e.to_string()).await;
            return;
        }
    };

    let _live = state.metrics.active_bridges.track();
    let (events, events_rx) = mpsc::unbounded_channel();
    tokio::spawn(publisher(state.clone(), id.clone(), events_rx));

    let mode = state.config.audio_mode;
    let bridge = MediaBridge {
        state: state.clone(),
        record,
        dialect,
        mode,
        cancel,
        tw: Socket::new(socket),
        ai: Socket::new(ai),
        stream_sid,
        frames: FrameCodec::new(mode),
        malformed: first_malformed,
        marks: VecDeque::new(),
        last_ack_at: None,
        next_mark: 0,
        items: HashMap::new(),
        order: VecDeque::new(),
        current_item: None,
        active_response: None,
        cancelled_responses: VecDeque::new(),
        turn: None,
        turns: 0,
        hangup_requested: false,
        history: Vec::new(),
        reconnected: false,
        events,
    };
    let outcome = bridge.run().await;
    tracing::info!(call_id = %id, ?outcome, "media bridge ended");
}

/// Why a media stream was refused before it started.
struct Refusal {
    code: &'static str,
    message: String,
}

/// Waits for `connected` and `start`; checks the CallSid and the per-call secret.
async fn wait_for_start(stream: &mut WebSocket, record: &CallRecord) -> Result<(String, u64), Refusal> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let mut malformed = 0u64;
    loop {
        let msg = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                return Err(Refusal {
                    code: "media_no_start",
                    message: format!("Twilio sent no 'start' within {START_TIMEOUT:?}; closed the media stream"),
                });
            }
            Ok(None) | Ok(Some(Err(_))) => {
                return Err(Refusal {
                    code: "media_closed",
                    message: "the media stream closed before 'start'".into(),
                });
            }
            Ok(Some(Ok(m))) => m,
        };
        let WsMessage::Text(text) = msg else { continue };
        match tw::parse_inbound(&text) {
            Ok(TwilioInbound::Start(start)) => {
                if !record.provider_call_id.is_empty() && start.call_sid != record.provider_call_id {
                    return Err(Refusal {
                        code: "media_refused",
                        message: "the media stream's 'start' names another CallSid; closed it".into(),
                    });
                }
                let secret_ok = start
                    .custom_parameters
                    .get("secret")
                    .is_some_and(|s| constant_time_eq(s, &record.stream_secret));
                if !secret_ok {
                    return Err(Refusal {
                        code: "media_refused",
                        message: "the media stream's 'start' carries a wrong or missing secret; closed it".into(),
                    });
                }
                return Ok((start.stream_sid, malformed));
            }
            Ok(_) => {}
            Err(_) => malformed += 1,
        }
    }
}

/// The provider's id of the call as stored now (it may arrive after the record was read).
async fn provider_sid(state: &AppState, id: &CallId) -> String {
    state.hub.get(id).await.map(|r| r.provider_call_id).unwrap_or_default()
}

/// Records why the call is about to end, unless a reason is already set.
async fn note_end_reason(state: &AppState, id: &CallId, reason: &str) {
    let result = state
        .hub
        .update(id, |r| {
            if r.end_reason.is_empty() {
                r.end_reason = reason.to_string();
            }
            vec![]
        })
        .await;
    if let Err(e) = result {
        tracing::error!(call_id = %id, error = %e, "end reason not stored");
    }
}

/// The server is stopping under a live call: records why, and that the call
/// is over. The provider's final status callback would say so, but it can no
/// longer reach a server that has stopped accepting connections. What hangs
/// up is closing the media stream, which the caller does next: nothing
/// follows `<Connect>` in the call's TwiML (protocols.md §4).
async fn end_on_shutdown(state: &AppState, id: &CallId) {
    let result = state
        .hub
        .update(id, |r| {
            if r.status.is_terminal() {
                return vec![];
            }
            if r.end_reason.is_empty() {
                r.end_reason = SHUTDOWN_REASON.to_string();
            }
            vec![EventKind::Status {
                status: CallStatus::Completed,
                detail: r.end_reason.clone(),
            }]
        })
        .await;
    if let Err(e) = result {
        tracing::error!(call_id = %id, error = %e, "the end of the call at shutdown was not stored");
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

async fn publish(state: &AppState, id: &CallId, kind: EventKind) {
    if let Err(e) = state.hub.publish(id, kind).await {
        tracing::error!(call_id = %id, error = %e, "event not stored");
    }
}

/// Speaks an apology on the live call and hangs up (through the provider, so
/// the caller is never left in silence).
async fn end_with_apology(state: &AppState, record: &CallRecord, cause: &str) {
    let id = &record.call_id;
    note_end_reason(state, id, &format!("the AI failed: {cause}")).await;
    let sid = provider_sid(state, id).await;
    if sid.is_empty() {
        return;
    }
    if let Err(e) = state.telephony.say_and_hang_up(&sid, APOLOGY).await {
        tracing::warn!(call_id = %id, error = %e, "apology failed; hanging up");
        if let Err(e) = state.telephony.hang_up(&sid, true).await {
            publish(
                state,
                id,
                EventKind::Error {
                    code: "telephony_error".into(),
                    message: format!("hang-up failed: {e}"),
                },
            )
            .await;
        }
    }
}

/// Work for a call's event publisher.
enum Publish {
    Event(EventKind),
    /// Answered once everything queued before it is stored.
    Settled(oneshot::Sender<()>),
}

/// Stores and broadcasts a call's events in order, off the media path.
async fn publisher(state: Arc<AppState>, id: CallId, mut rx: mpsc::UnboundedReceiver<Publish>) {
    while let Some(p) = rx.recv().await {
        match p {
            Publish::Event(kind) => publish(&state, &id, kind).await,
            Publish::Settled(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Most messages fed to a socket before they are flushed regardless.
const MAX_BATCH: usize = 16;
/// A socket that takes nothing for this long is treated as gone.
const WRITE_STALL: Duration = Duration::from_secs(5);

/// One of the bridge's two sockets, read and written by the bridge itself
/// (no writer task, no queue, no split halves with their lock): messages are
/// fed as they are produced and flushed in one write as soon as nothing more
/// is ready to be read, so what arrived together leaves together, and a
/// `clear` is never behind audio of ours.
struct Socket<S> {
    ws: S,
    /// When the frames fed since the last flush reached the bridge.
    frames: Vec<Instant>,
    fed: usize,
    /// The first write that failed. Nothing is written after it: on a
    /// stalled socket every attempt would wait [`WRITE_STALL`] anew. The
    /// bridge acts on it at the top of its loop.
    failed: Option<WriteFailed>,
}

/// Why a socket stopped taking data.
#[derive(Clone, Debug)]
enum WriteFailed {
    /// Nothing could be written for this long: the peer stopped reading
    /// and the buffers in between are full.
    Stalled(Duration),
    /// The write failed (the connection closed or broke).
    Broken(String),
}

impl WriteFailed {
    /// What happened, for the record, naming the socket (`what`).
    fn describe(&self, what: &str) -> String {
        match self {
            Self::Stalled(after) => {
                format!("{what} stopped taking data: nothing could be written to it for {after:?}")
            }
            Self::Broken(e) => format!("writing to {what} failed: {e}"),
        }
    }
}

impl<S> Socket<S> {
    fn new(ws: S) -> Self {
        Self {
            ws,
            frames: Vec::with_capacity(MAX_BATCH),
            fed: 0,
            failed: None,
        }
    }

    fn dirty(&self) -> bool {
        self.fed > 0 && self.failed.is_none()
    }

    /// Buffers `msg` (`frame`: when the audio it carries reached the bridge).
    /// A failure is kept in [`Socket::failed`].
    async fn feed<M>(&mut self, msg: M, frame: Option<Instant>)
    where
        S: futures_util::Sink<M> + Unpin,
        S::Error: std::fmt::Display,
    {
        if self.failed.is_some() {
            return;
        }
        match tokio::time::timeout(WRITE_STALL, self.ws.feed(msg)).await {
            Ok(Ok(())) => {
                self.frames.extend(frame);
                self.fed += 1;
            }
            Ok(Err(e)) => self.failed = Some(WriteFailed::Broken(e.to_string())),
            Err(_) => self.failed = Some(WriteFailed::Stalled(WRITE_STALL)),
        }
    }

    /// Writes what was fed; records the frames' latency and count. A
    /// failure is kept in [`Socket::failed`].
    async fn flush<M>(&mut self, latency: &Histogram, frames: &Counter)
    where
        S: futures_util::Sink<M> + Unpin,
        S::Error: std::fmt::Display,
    {
        if self.fed == 0 || self.failed.is_some() {
            return;
        }
        self.fed = 0;
        match tokio::time::timeout(WRITE_STALL, SinkExt::<M>::flush(&mut self.ws)).await {
            Ok(Ok(())) => {
                frames.add(self.frames.len() as u64);
                for t in self.frames.drain(..) {
                    latency.record(t.elapsed());
                }
            }
            Ok(Err(e)) => self.failed = Some(WriteFailed::Broken(e.to_string())),
            Err(_) => self.failed = Some(WriteFailed::Stalled(WRITE_STALL)),
        }
    }
}

/// A mark we sent and Twilio has not echoed yet.
struct PendingMark {
    /// Its number: the mark is named `m<number>` on the wire.
    number: u64,
    item_id: Arc<str>,
    /// The item's μ-law byte position at the start of the chunk before this mark.
    start_byte: usize,
    /// The item's μ-law byte position at the end of the chunk before this mark.
    end_byte: usize,
    /// When the chunk was handed to Twilio.
    sent_at: Instant,
}

/// Playback bookkeeping of one agent item.
#[derive(Default)]
struct AgentItem {
    /// Its id (shared with the marks that point at it).
    id: Arc<str>,
    response_id: String,
    sent_bytes: usize,
    heard_bytes: usize,
    audio_done: bool,
    transcript: String,
    transcript_done: bool,
    /// Voice Live word timing: (text, start ms, end ms).
    words: Vec<(String, u64, u64)>,
    interrupted: bool,
}

/// A transcript slot in conversation order.
struct Slot {
    item_id: String,
    speaker: Speaker,
    text: Option<String>,
    interrupted: bool,
}

/// Latency of the agent turn being measured.
struct Turn {
    speech_stopped: Instant,
    first_sent_ms: Option<u32>,
    first_mark: Option<u64>,
}

/// Why the bridge stopped.
#[derive(Debug)]
enum Outcome {
    TwilioStopped,
    TwilioClosed,
    /// Writing to Twilio's socket failed or stalled.
    TwilioWriteFailed,
    /// HangUpCall, or the call ended.
    Cancelled,
    ServerShutdown,
    AiClosed,
    /// The AI's socket stopped taking data, and reconnecting did not help.
    AiStalled(String),
    AiFatal,
    AgentHungUp,
    TimeLimit,
}

/// The actor that owns one call's two sockets.
struct MediaBridge {
    state: Arc<AppState>,
    record: CallRecord,
    dialect: Dialect,
    mode: AudioMode,
    cancel: CancellationToken,
    tw: Socket<WebSocket>,
    ai: Socket<RealtimeSocket>,
    stream_sid: String,
    /// The per-frame conversions (transcoders and their buffers).
    frames: FrameCodec,
    malformed: u64,
    marks: VecDeque<PendingMark>,
    /// When Twilio last acknowledged a mark (playback reached it).
    last_ack_at: Option<Instant>,
    next_mark: u64,
    items: HashMap<Arc<str>, AgentItem>,
    order: VecDeque<Slot>,
    /// The agent item whose audio was sent last.
    current_item: Option<String>,
    active_response: Option<String>,
    cancelled_responses: VecDeque<String>,
    turn: Option<Turn>,
    turns: u32,
    hangup_requested: bool,
    /// Transcripts published so far, to restore the conversation on a new AI session.
    history: Vec<(Speaker, String)>,
    /// The AI socket was re-opened once already.
    reconnected: bool,
    /// The call's event publisher.
    events: mpsc::UnboundedSender<Publish>,
}

impl MediaBridge {
    fn id(&self) -> &CallId {
        &self.record.call_id
    }

    /// Queues an event for the call's publisher: the media path never
    /// waits for the store (a commit, or a WAL checkpoint, can take
    /// milliseconds, and every frame of the call would wait behind it).
    fn event(&self, kind: EventKind) {
        // The publisher lives as long as the bridge; a send cannot fail before it ends.
        let _ = self.events.send(Publish::Event(kind));
    }

    /// Waits until every event queued so far is stored (and broadcast).
    /// (It borrows nothing while it waits: the bridge holds sockets, which are not `Sync`.)
    fn settle(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let queued = self.events.send(Publish::Settled(tx)).is_ok();
        async move {
            if queued {
                let _ = rx.await;
            }
        }
    }

    /// Queues a control message for the AI (flushed with the next batch).
    async fn ai_send(&mut self, text: String) {
        self.ai.feed(AiMessage::Text(text.into()), None).await;
    }

    /// Writes what was fed to either socket. A socket that fails keeps the
    /// failure, and the loop in [`MediaBridge::run`] acts on it.
    async fn flush(&mut self) {
        let m = &self.state.metrics;
        self.ai.flush(&m.inbound_frame, &m.frames_to_ai).await;
        self.tw.flush(&m.outbound_frame, &m.frames_to_twilio).await;
    }

    fn session_config(&self) -> protocol::SessionConfig {
        let audio = match self.mode {
            AudioMode::Transcode => AudioFormat::Pcm16_24k,
            AudioMode::Passthrough => AudioFormat::G711Ulaw,
        };
        protocol::SessionConfig::new(&self.record.instructions, &self.record.voice, audio)
    }

    async fn run(mut self) -> Outcome {
        // Configure the session, then let the agent speak first.
        let session = protocol::session_update(self.dialect, &self.session_config());
        self.ai_send(session).await;
        self.ai_send(protocol::response_create(None)).await;
        // The provider's TimeLimit is a little longer (grpc.rs), so the callee
        // hears a goodbye rather than a click when the time is up.
        let limit = tokio::time::sleep(Duration::from_secs(self.record.max_duration_secs));
        // Made once, not per message: each would register a timer or a waiter.
        let cancelled = self.cancel.clone().cancelled_owned();
        tokio::pin!(limit, cancelled);

        let outcome = loop {
            // Write failures, kept by the sockets, are acted on here: the
            // handlers that write go on as if nothing happened.
            if let Some(why) = &self.tw.failed {
                let message = why.describe("Twilio's media stream");
                note_end_reason(&self.state, self.id(), &message).await;
                self.event(EventKind::Error {
                    code: "media_socket_error".into(),
                    message,
                });
                break Outcome::TwilioWriteFailed;
            }
            if let Some(why) = &self.ai.failed {
                // A broken socket is a dropped one, whichever side noticed
                // first; an AI that takes nothing is as good as gone. Either
                // way: the one reconnect.
                let (cause, otherwise) = match why {
                    WriteFailed::Broken(e) => {
                        tracing::warn!(call_id = %self.id(), error = %e, "writing to the AI failed");
                        ("the AI connection dropped".to_string(), Outcome::AiClosed)
                    }
                    WriteFailed::Stalled(_) => {
                        let cause = why.describe("the AI connection");
                        (cause.clone(), Outcome::AiStalled(cause))
                    }
                };
                if !self.reconnect(&cause).await {
                    break otherwise;
                }
            }
            let dirty = self.tw.dirty() || self.ai.dirty();
            // Biased: the AI's events (agent audio, barge-ins) first, then
            // Twilio's; the cancellation and the time limit are looked at when
            // neither has a message ready (a few times per 20 ms at most, and
            // it keeps their bookkeeping off the per-message path); writing
            // waits until nothing at all is ready.
            tokio::select! {
                biased;
                msg = self.ai.ws.next() => match msg {
                    None | Some(Err(_)) | Some(Ok(AiMessage::Close(_))) => {
                        if !self.reconnect("the AI connection dropped").await {
                            break Outcome::AiClosed;
                        }
                    }
                    Some(Ok(AiMessage::Text(text))) => {
                        if let Some(o) = self.on_ai(&text, Instant::now()).await {
                            break o;
                        }
                    }
                    Some(Ok(_)) => {}
                },
                msg = self.tw.ws.next() => match msg {
                    None => break Outcome::TwilioClosed,
                    Some(Err(e)) => {
                        // Includes messages over the 1 MiB limit.
                        let message = format!("the media stream failed: {e}");
                        note_end_reason(&self.state, self.id(), &message).await;
                        self.event(EventKind::Error {
                            code: "media_socket_error".into(),
                            message,
                        });
                        break Outcome::TwilioClosed;
                    }
                    Some(Ok(WsMessage::Text(text))) => {
                        if let Some(o) = self.on_twilio(&text, Instant::now()).await {
                            break o;
                        }
                    }
                    Some(Ok(WsMessage::Close(_))) => break Outcome::TwilioClosed,
                    Some(Ok(WsMessage::Binary(_))) => self.on_malformed("binary frame").await,
                    Some(Ok(_)) => {}
                },
                _ = &mut cancelled => {
                    // The media token is a child of the server's: tell a
                    // shutdown from HangUpCall or the call's end.
                    break if self.state.shutdown.is_cancelled() {
                        Outcome::ServerShutdown
                    } else {
                        Outcome::Cancelled
                    };
                }
                _ = &mut limit => break Outcome::TimeLimit,
                // Nothing else is ready: write what the messages so far produced.
                () = std::future::ready(()), if dirty => self.flush().await,
            }
            if self.tw.fed >= MAX_BATCH || self.ai.fed >= MAX_BATCH {
                self.flush().await;
            }
        };
        // What is fed goes out before the sockets close (a goodbye, a truncate).
        self.flush().await;

        self.finish_transcripts().await;
        // What the conversation produced is stored before the call is wound up.
        self.settle().await;
        match &outcome {
            Outcome::AiClosed => {
                self.event(EventKind::Error {
                    code: "ai_disconnected".into(),
                    message: "the realtime AI closed the connection mid-call; apologising and hanging up".into(),
                });
                end_with_apology(&self.state, &self.record, "the AI connection dropped").await;
            }
            Outcome::AiStalled(cause) => {
                self.event(EventKind::Error {
                    code: "ai_socket_error".into(),
                    message: format!("{cause}; apologising and hanging up"),
                });
                end_with_apology(&self.state, &self.record, cause).await;
            }
            Outcome::AiFatal => {
                end_with_apology(&self.state, &self.record, "the AI reported a fatal error").await;
            }
            Outcome::TwilioWriteFailed => {
                // The socket cannot carry our close (on a stalled one it
                // would queue behind the unread audio), so Twilio might only
                // notice the stream is gone when a write of its own fails:
                // hang up through the REST API, which needs no media socket.
                let sid = provider_sid(&self.state, self.id()).await;
                if let Err(e) = self.state.telephony.hang_up(&sid, true).await {
                    self.event(EventKind::Error {
                        code: "telephony_error".into(),
                        message: format!("hang-up after the media stream failed: {e}"),
                    });
                }
            }
            // Closing the media stream below is what hangs up.
            Outcome::ServerShutdown => end_on_shutdown(&self.state, self.id()).await,
            Outcome::TimeLimit => {
                let reason = format!(
                    "the call reached its maximum duration ({} s)",
                    self.record.max_duration_secs
                );
                note_end_reason(&self.state, self.id(), &reason).await;
                let sid = provider_sid(&self.state, self.id()).await;
                if let Err(e) = self.state.telephony.say_and_hang_up(&sid, TIME_LIMIT_GOODBYE).await {
                    self.event(EventKind::Error {
                        code: "telephony_error".into(),
                        message: format!("the time-limit goodbye failed: {e}"),
                    });
                }
            }
            Outcome::Cancelled | Outcome::TwilioClosed | Outcome::TwilioStopped | Outcome::AgentHungUp => {}
        }
        if self.malformed > 0 {
            tracing::warn!(call_id = %self.id(), count = self.malformed, "malformed media messages were ignored");
        }
        self.settle().await;
        self.flush().await;
        // Closing is best effort (the peer may be gone already), and only
        // tried on a socket that still takes data: a stalled one would just
        // hold us for CLOSE_TIMEOUT. Dropping the socket closes it anyway.
        if self.tw.failed.is_none() {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.tw.ws.send(WsMessage::Close(None))).await;
        }
        if self.ai.failed.is_none() {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, SinkExt::<AiMessage>::close(&mut self.ai.ws)).await;
        }
        outcome
    }

    /// The AI socket dropped or stopped taking data (`why`): open a new one
    /// once, within [`RECONNECT_WITHIN`], with the same instructions and the
    /// conversation so far. False when that is not possible (already done
    /// once, or it failed).
    async fn reconnect(&mut self, why: &str) -> bool {
        if self.reconnected || self.cancel.is_cancelled() {
            return false;
        }
        self.reconnected = true;
        let started = Instant::now();
        let connect = self.state.realtime.connect(self.record.backend);
        let (socket, dialect) = match tokio::time::timeout(RECONNECT_WITHIN, connect).await {
            Ok(Ok(ok)) => ok,
            Ok(Err(e)) => {
                tracing::warn!(call_id = %self.id(), error = %e, "reconnecting to the AI failed");
                return false;
            }
            Err(_) => return false,
        };
        // The old socket is dead; what was fed to it is lost with it.
        self.ai = Socket::new(socket);
        self.dialect = dialect;
        // What the old session was saying is over: keep what was heard.
        self.active_response = None;
        self.current_item = None;
        self.turn = None;
        for item in self.items.values_mut() {
            if item.heard_bytes < item.sent_bytes || !item.audio_done {
                item.interrupted = true;
                item.audio_done = true;
                item.transcript_done = true;
            }
        }
        self.flush_transcripts().await;
        self.ai_send(protocol::session_update(dialect, &self.session_config()))
            .await;
        for (speaker, text) in self.history.clone() {
            let role = if speaker == Speaker::Agent { "assistant" } else { "user" };
            self.ai_send(protocol::restore_item(dialect, role, &text)).await;
        }
        // The agent owes an answer if the callee spoke last (or nobody yet).
        if self.history.last().is_none_or(|(s, _)| *s == Speaker::Callee) {
            self.ai_send(protocol::response_create(None)).await;
        }
        self.event(EventKind::Notice {
            code: "ai_reconnected".into(),
            message: format!(
                "{why}; re-established in {} ms with the conversation so far ({} turns)",
                started.elapsed().as_millis(),
                self.history.len()
            ),
        });
        true
    }

    async fn on_malformed(&mut self, what: &str) {
        self.malformed += 1;
        self.state.metrics.media_malformed.inc();
        if self.malformed == 1 {
            self.event(EventKind::Error {
                code: "media_malformed".into(),
                message: format!("ignored a malformed media message ({what}); the call goes on"),
            });
        }
        tracing::debug!(call_id = %self.id(), what, count = self.malformed, "malformed media message");
    }

    /// One Twilio message; `received` is when the socket handed it over.
    async fn on_twilio(&mut self, text: &str, received: Instant) -> Option<Outcome> {
        match tw::parse_hot(text) {
            Some(tw::HotInbound::Media(payload)) => self.on_inbound_audio(&payload, received).await,
            Some(tw::HotInbound::Mark(name)) => self.on_mark(&name).await,
            None => return self.on_twilio_other(text).await,
        }
        if self.hangup_requested {
            return self.maybe_hang_up().await;
        }
        None
    }

    /// A Twilio message other than `media` or `mark`.
    async fn on_twilio_other(&mut self, text: &str) -> Option<Outcome> {
        let received = Instant::now();
        let msg = match tw::parse_inbound(text) {
            Ok(m) => m,
            Err(_) => {
                self.on_malformed("not a Media Streams message").await;
                return None;
            }
        };
        match msg {
            TwilioInbound::Media(media) => self.on_inbound_audio(&media.payload, received).await,
            TwilioInbound::Mark(name) => self.on_mark(&name).await,
            TwilioInbound::Dtmf(digit) => self.event(EventKind::Dtmf { digit }),
            TwilioInbound::Stop => return Some(Outcome::TwilioStopped),
            TwilioInbound::Connected | TwilioInbound::Start(_) | TwilioInbound::Unknown => {}
        }
        if self.hangup_requested {
            return self.maybe_hang_up().await;
        }
        None
    }

    async fn on_inbound_audio(&mut self, payload: &str, received: Instant) {
        self.state.metrics.frames_from_twilio.inc();
        let Ok(msg) = self.frames.twilio_to_ai(payload) else {
            self.on_malformed("media payload is not base64").await;
            return;
        };
        self.ai.feed(AiMessage::Text(msg.into()), Some(received)).await;
    }

    async fn on_mark(&mut self, name: &str) {
        // Marks come back in the order sent; anything not pending was flushed
        // by a `clear` and proves nothing about playback (§5.3).
        let Some(number) = name.strip_prefix('m').and_then(|n| n.parse::<u64>().ok()) else {
            return; // not one of ours
        };
        let Some(pos) = self.marks.iter().position(|m| m.number == number) else {
            return;
        };
        let acked: Vec<PendingMark> = self.marks.drain(..=pos).collect();
        self.last_ack_at = Some(Instant::now());
        for m in &acked {
            if let Some(item) = self.items.get_mut(&m.item_id) {
                item.heard_bytes = item.heard_bytes.max(m.end_byte);
            }
        }
        if let Some(turn) = &self.turn
            && turn.first_mark.is_some_and(|f| acked.iter().any(|m| m.number == f))
        {
            let heard = turn.speech_stopped.elapsed().as_millis() as u32;
            let sent = turn.first_sent_ms.unwrap_or(heard);
            let index = self.turns;
            self.turns += 1;
            self.turn = None;
            self.event(EventKind::Turn {
                turn_index: index,
                first_audio_sent_ms: sent,
                first_audio_heard_ms: heard,
            });
        }
        self.flush_transcripts().await;
    }

    /// One AI event; `received` is when the socket handed it over.
    async fn on_ai(&mut self, text: &str, received: Instant) -> Option<Outcome> {
        if let Some(d) = protocol::parse_audio_delta(text) {
            self.on_agent_audio(&d.response_id, &d.item_id, &d.delta, received)
                .await;
            if self.hangup_requested {
                return self.maybe_hang_up().await;
            }
            return None;
        }
        let event = match protocol::parse_server_event(text) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(call_id = %self.id(), error = %e, "unreadable event from the AI");
                return None;
            }
        };
        match event {
            ServerEvent::AudioDelta {
                response_id,
                item_id,
                delta,
            } => {
                self.on_agent_audio(&response_id, &item_id, &delta, received).await;
            }
            ServerEvent::AudioDone { item_id, .. } => {
                if let Some(item) = self.items.get_mut(item_id.as_str()) {
                    item.audio_done = true;
                }
            }
            ServerEvent::TranscriptDelta { item_id, delta } => {
                if let Some(item) = self.items.get_mut(item_id.as_str())
                    && !item.transcript_done
                {
                    item.transcript.push_str(&delta);
                }
            }
            ServerEvent::TranscriptDone {
                item_id, transcript, ..
            } => {
                let item = self.item_mut(&item_id);
                item.transcript = transcript;
                item.transcript_done = true;
                self.ensure_slot(&item_id, Speaker::Agent);
            }
            ServerEvent::WordTimestamp {
                item_id,
                text,
                audio_offset_ms,
                audio_duration_ms,
            } => {
                self.item_mut(&item_id)
                    .words
                    .push((text, audio_offset_ms, audio_offset_ms + audio_duration_ms));
            }
            ServerEvent::OutputItemAdded {
                response_id,
                item_id,
                kind: protocol::ItemKind::Message,
                ..
            } => {
                let item = self.item_mut(&item_id);
                item.response_id = response_id;
                self.ensure_slot(&item_id, Speaker::Agent);
            }
            ServerEvent::SpeechStarted { .. } => self.on_barge_in(received).await,
            ServerEvent::SpeechStopped { .. } => {
                self.turn = Some(Turn {
                    speech_stopped: Instant::now(),
                    first_sent_ms: None,
                    first_mark: None,
                });
            }
            ServerEvent::Committed { item_id, .. } => self.ensure_slot(&item_id, Speaker::Callee),
            ServerEvent::InputTranscriptionCompleted { item_id, transcript } => {
                self.ensure_slot(&item_id, Speaker::Callee);
                if let Some(slot) = self.order.iter_mut().find(|s| s.item_id == item_id) {
                    slot.text = Some(transcript.trim().to_string());
                }
            }
            ServerEvent::InputTranscriptionFailed { item_id, error } => {
                if let Some(slot) = self.order.iter_mut().find(|s| s.item_id == item_id) {
                    slot.text = Some(String::new());
                }
                self.event(EventKind::Error {
                    code: "ai_transcription_failed".into(),
                    message: format!("the callee's words could not be transcribed: {error}"),
                });
            }
            ServerEvent::ResponseCreated { response_id } => self.active_response = Some(response_id),
            ServerEvent::ResponseDone { response_id, .. } => {
                if self.active_response.as_deref() == Some(response_id.as_str()) {
                    self.active_response = None;
                }
                // Items of this response that never produced audio are final now.
                for item in self.items.values_mut() {
                    if item.response_id == response_id {
                        item.audio_done = true;
                        item.transcript_done = true;
                    }
                }
            }
            ServerEvent::FunctionCallArgumentsDone { name, call_id, .. } => {
                if name == "end_call" {
                    self.hangup_requested = true;
                    self.ai_send(protocol::function_call_output(&call_id, "{\"ok\":true}"))
                        .await;
                } else {
                    self.ai_send(protocol::function_call_output(
                        &call_id,
                        &format!("{{\"error\":\"unknown tool {}\"}}", name.replace('"', "")),
                    ))
                    .await;
                }
            }
            ServerEvent::Error {
                code, message, r#type, ..
            } => {
                let fatal = protocol::is_fatal_error(&r#type, code.as_deref());
                // Our own best-effort cancel racing the server's automatic one.
                let benign = code.as_deref() == Some("response_cancel_not_active");
                if !benign {
                    self.event(EventKind::Error {
                        code: format!("ai_{}", code.as_deref().unwrap_or(&r#type)),
                        message,
                    });
                }
                if fatal {
                    return Some(Outcome::AiFatal);
                }
            }
            _ => {}
        }
        self.flush_transcripts().await;
        if self.hangup_requested {
            return self.maybe_hang_up().await;
        }
        None
    }

    async fn on_agent_audio(&mut self, response_id: &str, item_id: &str, delta: &str, received: Instant) {
        self.state.metrics.frames_from_ai.inc();
        if self.cancelled_responses.iter().any(|r| r == response_id) {
            // Late audio of a response cut by a barge-in.
            self.state.metrics.frames_dropped_barge_in.inc();
            return;
        }
        let Ok((media, ulaw_len)) = self.frames.ai_to_twilio(&self.stream_sid, delta) else {
            tracing::warn!(call_id = %self.id(), "AI audio delta is not base64; dropped");
            return;
        };
        if ulaw_len == 0 {
            return;
        }
        // Per delta, nothing is allocated for the bookkeeping but the mark.
        let item = self.item_mut(item_id);
        if item.response_id.is_empty() {
            item.response_id = response_id.to_string();
        }
        let first_audio = item.sent_bytes == 0;
        let start_byte = item.sent_bytes;
        item.sent_bytes += ulaw_len;
        let end_byte = item.sent_bytes;
        let item_key = item.id.clone();
        if self.current_item.as_deref() != Some(item_id) {
            self.current_item = Some(item_id.to_string());
        }
        if first_audio {
            self.ensure_slot(item_id, Speaker::Agent);
        }
        self.next_mark += 1;
        let number = self.next_mark;
        self.marks.push_back(PendingMark {
            number,
            item_id: item_key,
            start_byte,
            end_byte,
            sent_at: Instant::now(),
        });
        if let Some(turn) = &mut self.turn
            && turn.first_mark.is_none()
        {
            turn.first_sent_ms = Some(turn.speech_stopped.elapsed().as_millis() as u32);
            turn.first_mark = Some(number);
        }
        let mark = tw::mark_message(&self.stream_sid, &format!("m{number}"));
        self.tw.feed(WsMessage::Text(media.into()), Some(received)).await;
        self.tw.feed(WsMessage::Text(mark.into()), None).await;
    }

    /// The callee started speaking: if agent audio is still unplayed, stop it
    /// at once and make the AI forget what was not heard (§7.5).
    async fn on_barge_in(&mut self, received: Instant) {
        let Some(item_id) = self.current_item.clone() else {
            return;
        };
        if self
            .items
            .get(item_id.as_str())
            .is_none_or(|item| item.heard_bytes >= item.sent_bytes)
        {
            return; // everything was played: nothing to interrupt
        }
        // Control first: Twilio stops playing before anything else happens.
        // Audio fed but not yet written goes first: the clear discards it too.
        let clear = tw::clear_message(&self.stream_sid);
        self.tw.feed(WsMessage::Text(clear.into()), None).await;
        self.flush().await;
        if self.tw.failed.is_none() {
            self.state.metrics.barge_in.record(received.elapsed());
        }
        let Some(item) = self.items.get_mut(item_id.as_str()) else {
            return;
        };
        // Marks tell what played up to the last acknowledged chunk; within
        // the chunk now playing, Twilio plays in real time (8 bytes per ms)
        // from the later of that acknowledgement and the chunk's arrival.
        if let Some(m) = self.marks.front().filter(|m| *m.item_id == *item_id) {
            let started = self.last_ack_at.map_or(m.sent_at, |a| a.max(m.sent_at));
            let played = started.elapsed().as_millis() as usize * ULAW_BYTES_PER_MS;
            item.heard_bytes = item.heard_bytes.max((m.start_byte + played).min(m.end_byte));
        }
        self.marks.clear();
        item.interrupted = true;
        let heard_ms = (item.heard_bytes.min(item.sent_bytes) / ULAW_BYTES_PER_MS) as u64;
        let response_id = item.response_id.clone();
        item.audio_done = true;
        self.ai_send(protocol::item_truncate(&item_id, 0, heard_ms)).await;
        // The session runs server VAD with `interrupt_response: true`, so the
        // service cancels the response itself on speech_started; a cancel of
        // ours would race it and earn an error (protocols.md §8: cancel only
        // when interrupt_response is false). Its late deltas are dropped below.
        if self.active_response.as_deref() == Some(response_id.as_str()) {
            self.active_response = None;
        }
        if !response_id.is_empty() {
            // Late deltas only trail the cut by moments: the last few cuts suffice.
            if self.cancelled_responses.len() == CANCELLED_KEPT {
                self.cancelled_responses.pop_front();
            }
            self.cancelled_responses.push_back(response_id);
        }
        self.turn = None;
        self.flush_transcripts().await;
    }

    async fn maybe_hang_up(&mut self) -> Option<Outcome> {
        let unplayed = self
            .items
            .values()
            .any(|i| !i.interrupted && (i.heard_bytes < i.sent_bytes || (!i.audio_done && !i.response_id.is_empty())));
        if unplayed || self.active_response.is_some() {
            return None;
        }
        note_end_reason(&self.state, self.id(), "the agent ended the call").await;
        let sid = provider_sid(&self.state, self.id()).await;
        if let Err(e) = self.state.telephony.hang_up(&sid, true).await {
            self.event(EventKind::Error {
                code: "telephony_error".into(),
                message: format!("hang-up after end_call failed: {e}"),
            });
        }
        Some(Outcome::AgentHungUp)
    }

    /// The agent item `id`, created on first mention.
    fn item_mut(&mut self, id: &str) -> &mut AgentItem {
        if !self.items.contains_key(id) {
            let key: Arc<str> = Arc::from(id);
            self.items.insert(
                key.clone(),
                AgentItem {
                    id: key,
                    ..AgentItem::default()
                },
            );
        }
        self.items.get_mut(id).expect("inserted above")
    }

    fn ensure_slot(&mut self, item_id: &str, speaker: Speaker) {
        if !self.order.iter().any(|s| s.item_id == item_id) {
            self.order.push_back(Slot {
                item_id: item_id.to_string(),
                speaker,
                text: None,
                interrupted: false,
            });
        }
    }

    /// Publishes transcripts in conversation order: an agent line once the
    /// callee heard all of it (or was cut off), a callee line once transcribed.
    async fn flush_transcripts(&mut self) {
        for slot in self.order.iter_mut() {
            if slot.speaker != Speaker::Agent || slot.text.is_some() {
                continue;
            }
            let Some(item) = self.items.get(slot.item_id.as_str()) else {
                continue;
            };
            if item.interrupted && item.transcript_done {
                slot.text = Some(heard_part(item));
                slot.interrupted = true;
            } else if item.transcript_done && item.audio_done && item.heard_bytes >= item.sent_bytes {
                slot.text = Some(item.transcript.trim().to_string());
            }
        }
        while self.order.front().is_some_and(|f| f.text.is_some()) {
            let Some(slot) = self.order.pop_front() else { break };
            let text = slot.text.unwrap_or_default();
            if !text.is_empty() {
                self.history.push((slot.speaker, text.clone()));
                self.event(EventKind::Transcript {
                    speaker: slot.speaker,
                    text,
                    interrupted: slot.interrupted,
                });
            }
        }
    }

    /// At the end of the call, agent lines not fully heard keep only what was.
    async fn finish_transcripts(&mut self) {
        for slot in self.order.iter_mut() {
            if slot.text.is_some() {
                continue;
            }
            match slot.speaker {
                Speaker::Callee => slot.text = Some(String::new()),
                Speaker::Agent => {
                    if let Some(item) = self.items.get(slot.item_id.as_str()) {
                        let complete = item.heard_bytes >= item.sent_bytes && item.audio_done;
                        slot.interrupted = !complete;
                        slot.text = Some(if complete {
                            item.transcript.trim().to_string()
                        } else {
                            heard_part(item)
                        });
                    } else {
                        slot.text = Some(String::new());
                    }
                }
            }
        }
        self.flush_transcripts().await;
    }
}

/// The part of an agent item the callee heard: exact from word timestamps
/// when the service sends them (Voice Live), else the same share of the words
/// as the share of the audio that was played (an approximation: speech rate
/// is not constant).
fn heard_part(item: &AgentItem) -> String {
    let heard_ms = (item.heard_bytes / ULAW_BYTES_PER_MS) as u64;
    if !item.words.is_empty() {
        return item
            .words
            .iter()
            .filter(|(_, _, end)| *end <= heard_ms)
            .map(|(w, _, _)| w.as_str())
            .collect::<Vec<_>>()
            .join(" ");
    }
    let total = item.sent_bytes.max(1);
    let words: Vec<&str> = item.transcript.split_whitespace().collect();
    let keep = (words.len() * item.heard_bytes.min(total) / total).min(words.len());
    words[..keep].join(" ")
}
