//! The bridge's I/O: the two sockets, the timers, the provider and the
//! call's writer, around a [`Conversation`] that decides everything else.
//!
//! Generic over both sockets (any `Sink + Stream` of WebSocket messages), so
//! tests drive a whole call over in-memory channels; the server passes
//! axum's WebSocket (Twilio) and tokio-tungstenite's stream (the AI).
//!
//! The actor writes both sockets itself, with no queue in between: what one
//! message produces is fed to the socket, and everything fed is written in
//! one go as soon as nothing more is ready to read. So a barge-in's `clear`
//! is never behind queued audio of ours ("control before data"), a frame
//! costs no task hand-over, and a burst costs one write.

use std::collections::VecDeque;
use std::fmt::Display;
use std::pin::Pin;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite::Message as AiMessage;
use tokio_util::sync::CancellationToken;

use tokio::sync::mpsc;

use crate::bridge::conversation::{Action, AiLoss, Conversation, Outcome, ToAi, ToTwilio, VoicemailPlan};
use crate::bridge::writer::CallWriter;
use crate::bridge::{APOLOGY, RECONNECT_WITHIN, START_TIMEOUT, WRITE_STALL};
use crate::call::hub::{CallHub, HubError};
use crate::call::lifecycle::{self, amd, transfer};
use crate::call::tools::{Answerer, Tool, ToolAnswer, ToolDesk, ToolOutcome};
use crate::call::{Backend, CallEvent, CallId, CallRecord, CallStatus, ErrorCode, EventKind, Speaker, VoicemailMode};
use crate::config::AudioMode;
use crate::metrics::{Counter, Histogram, Metrics, ProviderError};
use crate::realtime::protocol::{self, AudioFormat, Dialect, SessionConfig};
use crate::realtime::{RealtimeBackends, RealtimeError, RealtimeSocket};
use crate::recording::{Recorder, Recordings};
use crate::telephony::Telephony;
use crate::telephony::twilio::media::{self as tw, TwilioInbound};
use crate::tool_http::{ToolHttp, ToolRequest};

/// How long closing a socket may take before it is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Most messages fed to a socket before they are flushed regardless.
const MAX_BATCH: usize = 16;

/// Opens the realtime-AI socket of a call.
pub(crate) trait AiConnect: Sync {
    /// The open socket.
    type Socket: Stream<Item = Result<AiMessage, Self::Error>> + Sink<AiMessage, Error = Self::Error> + Unpin + Send;
    /// Its read and write failure.
    type Error: Display + Send;
    /// Opens a socket, authenticated; says which dialect it speaks.
    fn connect(&self) -> impl Future<Output = Result<(Self::Socket, Dialect), RealtimeError>> + Send;
}

/// The configured realtime AI of one backend.
pub(crate) struct Realtime<'a> {
    pub backends: &'a RealtimeBackends,
    pub backend: Backend,
}

impl AiConnect for Realtime<'_> {
    type Socket = RealtimeSocket;
    type Error = tokio_tungstenite::tungstenite::Error;

    fn connect(&self) -> impl Future<Output = Result<(RealtimeSocket, Dialect), RealtimeError>> + Send {
        self.backends.connect(self.backend)
    }
}

/// What a media bridge needs from the server.
pub(crate) struct Env<'a, C> {
    /// Live calls: the media token, the provider's id, and the call's writes.
    pub hub: &'a CallHub,
    /// Hangs up and speaks on the call.
    pub telephony: &'a dyn Telephony,
    /// The media path's counters and latencies.
    pub metrics: &'a Metrics,
    /// Server-wide cancellation (tells a shutdown from a hang-up).
    pub shutdown: &'a CancellationToken,
    /// Cancelled when this replica hands its calls over (see `AppState::handover`).
    pub handover: &'a CancellationToken,
    /// Audio format between the bridge and the AI.
    pub audio_mode: AudioMode,
    /// Opens the AI's socket (at the start and for the one reconnect).
    pub ai: C,
    /// Where a recorded call's recording goes (`None`: nothing is recorded).
    pub recordings: Option<&'a Recordings>,
    /// Where the call's tool calls wait for their answers.
    pub tool_desk: &'a ToolDesk,
    /// Asks tool URLs.
    pub tool_http: &'a ToolHttp,
    /// The server's public URL (a transfer's dial-action route is under it).
    pub public_url: &'a str,
    /// Our number: a transfer's caller id.
    pub from_number: &'a str,
}

/// The bridge's clock: tokio's, so that tests can pause it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Runs the media side of one call on an accepted Twilio media stream:
/// checks its `start`, opens the AI socket, bridges the two until the
/// conversation ends, and winds the call up.
pub(crate) async fn run_media<T, E, C>(env: &Env<'_, C>, record: CallRecord, mut socket: T)
where
    T: Stream<Item = Result<WsMessage, E>> + Sink<WsMessage, Error = E> + Unpin + Send,
    E: Display + Send,
    C: AiConnect,
{
    let id = record.call_id.clone();
    let Some(cancel) = env.hub.media_token(&id) else {
        return;
    };
    let writer = CallWriter::spawn(env.hub.clone(), id.clone(), record.stream_generation);

    let start = tokio::select! {
        s = wait_for_start(&mut socket, &record) => s,
        _ = cancel.cancelled() => {
            if env.shutdown.is_cancelled() {
                // Dropping the socket on return closes the stream, which hangs up.
                writer.end_on_shutdown().await;
            }
            writer.finish().await;
            return;
        }
    };
    let (stream_sid, first_malformed) = match start {
        Ok(ok) => ok,
        Err(why) => {
            tracing::warn!(call_id = %id, why = %why.message, "media stream refused");
            // Closing the stream ends Twilio's <Connect> and so the call: keep why.
            writer.end_reason(why.message.clone()).await;
            writer.event(EventKind::error(why.code, why.message)).await;
            writer.settle().await;
            let refused = WsMessage::Close(Some(CloseFrame {
                code: 1008,
                reason: "refused".into(),
            }));
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(refused)).await;
            // Closing ends Twilio's <Connect> only if the socket was Twilio's;
            // and the call will get no other stream (one per call, claimed at
            // the upgrade), so it is hung up rather than left live, unserved,
            // with an end reason.
            hang_up_unserved(env, &writer, &id).await;
            writer.finish().await;
            return;
        }
    };

    tracing::info!(call_id = %id, generation = record.stream_generation, "media bridge started");
    // A resumed stream (the call's media moved here, issue #17): watchers
    // see the move, and the conversation so far is read back from the store.
    let resumed = match record.resuming {
        Some(_) => Some(resume_from_store(env.hub, &record).await),
        None => None,
    };

    let (ai, dialect) = match connect_ai(env, &id, "ai.connect").await {
        Ok(ok) => ok,
        Err(e) => {
            tracing::warn!(call_id = %id, error = %e, "cannot open the realtime AI");
            writer
                .event(EventKind::error(e.code(), format!("{e}; apologising and hanging up")))
                .await;
            writer.end_reason(format!("the AI failed: {e}")).await;
            apologise(env, &writer, &id).await;
            writer.finish().await;
            return;
        }
    };

    let _live = env.metrics.active_bridges.track();
    let audio = match env.audio_mode {
        AudioMode::Transcode => AudioFormat::Pcm16_24k,
        AudioMode::Passthrough => AudioFormat::G711Ulaw,
    };
    let mut max_duration = Duration::from_secs(record.max_duration_secs);
    if resumed.is_some()
        && let Some(answered) = record.answered_at
    {
        // What is left of the call's time: it started on the old stream.
        let spent = (chrono::Utc::now() - answered).to_std().unwrap_or_default();
        max_duration = max_duration.saturating_sub(spent).max(Duration::from_secs(1));
    }
    let mut conv = Conversation::new(
        id.clone(),
        stream_sid.clone(),
        env.audio_mode,
        max_duration,
        first_malformed,
        env.metrics,
    )
    .with_tools(record.tools.iter().map(|t| (t.name.clone(), t.url.is_some())))
    .with_transfer_targets(record.transfer_targets.iter().map(|t| t.number.clone()));
    // Recorded from the moment the conversation starts: the callee's audio
    // read from now on (it waited in the socket while the AI connected) is
    // the recording's clock.
    // A resumed stream records nothing more: the recording's file is the
    // old replica's (see docs/deploy.md "Losing a replica").
    let recorder = match env.recordings {
        Some(recordings) if record.record && resumed.is_none() => {
            conv.record_agent_audio();
            Some(recordings.start(env.hub.clone(), id.clone(), max_duration))
        }
        _ => None,
    };
    // With a voicemail policy the agent holds its greeting until detection
    // says who answered: the result is one of the call's events, stored by
    // whichever replica got the provider's callback, so the bridge follows
    // the call's events from the record it started with.
    let detection = if record.voicemail.mode != VoicemailMode::Off && resumed.is_none() {
        conv.hold_for_detection(VoicemailPlan {
            mode: record.voicemail.mode,
            greeting: record.greeting.clone(),
            message: record.voicemail.message.clone(),
        });
        match env.hub.watch(&id, record.event_count).await {
            Ok(rx) => Some(rx),
            Err(e) => {
                // The bounded wait still ends the hold ("unknown").
                tracing::warn!(call_id = %id, error = %e, "cannot follow the call's events for the detection result");
                None
            }
        }
    } else {
        None
    };
    let mut session = SessionConfig::new(&record.instructions, &record.voice, audio);
    session.tools.extend(record.tools.iter().map(|t| protocol::ToolDef {
        name: t.name.clone(),
        description: t.description.clone(),
        parameters: t.parameters.clone(),
    }));
    if !record.transfer_targets.is_empty() {
        session.tools.push(protocol::ToolDef {
            name: transfer::TOOL_NAME.into(),
            description: transfer::TOOL_DESCRIPTION.into(),
            parameters: transfer::tool_parameters(&record.transfer_targets),
        });
    }
    // Opened before the AI can call a tool; closed when the bridge winds up.
    let tool_rx = env.tool_desk.open(&id);
    let bridge = Bridge {
        env,
        session,
        conv,
        recorder,
        tools: record.tools.clone(),
        tool_timeout: crate::grpc::effective_tool_timeout(&record),
        tool_rx,
        detection,
        detected_before: (record.voicemail.detected && !record.answered_by.is_empty() && resumed.is_none())
            .then(|| record.answered_by.clone()),
        resumed,
        handover_asked: false,
        id: id.clone(),
        cancel,
        tw: Socket::new(socket),
        ai: Socket::new(ai),
        stream_sid,
        dialect,
        writer,
        actions: VecDeque::new(),
        received: now(),
        timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        timer_armed: false,
    };
    let outcome = bridge.run().await;
    tracing::info!(call_id = %id, ?outcome, "media bridge ended");
}

/// Events read per page when a resumed stream reads the conversation back.
const HISTORY_PAGE: usize = 500;

/// The bridge of a resumed stream starts: reads the conversation so far
/// back from the call's stored transcripts (the agent's lines as far as the
/// callee heard them: what the old bridge published), then stores the
/// `migrated` event (once, and only while the record still has this
/// stream's generation) with a cancelled result for every tool call the old
/// bridge left pending (its answer could reach no session now). A store
/// failure leaves the history short, not the call.
async fn resume_from_store(hub: &CallHub, record: &CallRecord) -> Vec<(Speaker, String)> {
    let id = &record.call_id;
    let mut history = Vec::new();
    let mut pending: Vec<(String, String, chrono::DateTime<chrono::Utc>)> = Vec::new();
    let mut after = 0;
    loop {
        match hub.store().events_after(id, after, HISTORY_PAGE).await {
            Ok(page) if !page.is_empty() => {
                after = page.last().map(|e| e.sequence).unwrap_or(after);
                for ev in page {
                    match ev.kind {
                        EventKind::Transcript { speaker, text, .. } if !text.trim().is_empty() => {
                            history.push((speaker, text));
                        }
                        EventKind::ToolCall { tool_call_id, name, .. } => pending.push((tool_call_id, name, ev.time)),
                        EventKind::ToolResult { tool_call_id, .. } => pending.retain(|(p, _, _)| *p != tool_call_id),
                        _ => {}
                    }
                }
            }
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(call_id = %id, error = %e, "the conversation so far could not be read back; resuming with what was read");
                break;
            }
        }
    }
    let generation = record.stream_generation;
    let to = hub.replica_id().to_string();
    let moved = hub
        .update(id, move |r| {
            if r.stream_generation != generation {
                return vec![];
            }
            let now = chrono::Utc::now();
            let mut events = lifecycle::migrated(r, &to, now);
            if !events.is_empty() {
                events.extend(
                    pending
                        .into_iter()
                        .map(|(tool_call_id, name, since)| EventKind::ToolResult {
                            tool_call_id,
                            name,
                            output: String::new(),
                            outcome: ToolOutcome::Canceled,
                            wait_ms: (now - since).num_milliseconds().clamp(0, i64::from(u32::MAX)) as u32,
                        }),
                );
            }
            events
        })
        .await;
    match moved {
        Ok(events) => {
            for ev in &events {
                if let EventKind::Migrated { from, gap_ms, .. } = &ev.kind {
                    tracing::info!(call_id = %id, from = %from, gap_ms, "the call's media moved to this replica");
                }
            }
        }
        Err(e) => tracing::warn!(call_id = %id, error = %e, "the migrated event was not stored"),
    }
    history
}

/// Opens the AI's socket in a span named `name` (`ai.connect`, or
/// `ai.reconnect` mid-call; docs/observability.md "Traces"), a child of the
/// call's, and counts a failure by kind.
async fn connect_ai<C: AiConnect>(
    env: &Env<'_, C>,
    id: &CallId,
    name: &'static str,
) -> Result<(C::Socket, Dialect), RealtimeError> {
    use tracing::Instrument as _;
    let span = tracing::info_span!(
        "ai_session",
        otel.name = name,
        otel.kind = "client",
        call_id = %id,
        otel.status_code = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    let result = env.ai.connect().instrument(span.clone()).await;
    match &result {
        Ok(_) => {
            span.record("otel.status_code", "OK");
        }
        Err(e) => {
            span.record("otel.status_code", "ERROR");
            span.record("error", tracing::field::display(e));
            env.metrics.provider_errors.inc(match e {
                RealtimeError::Auth(_) | RealtimeError::Token(_) => ProviderError::AiAuth,
                RealtimeError::Refused(_) => ProviderError::AiRefused,
                RealtimeError::Connect(_) | RealtimeError::Timeout(_) => ProviderError::AiConnect,
            });
        }
    }
    result
}

/// Why a media stream was refused before it started.
#[derive(Debug, PartialEq)]
pub(crate) struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

/// Waits for `connected` and `start`; checks the CallSid and the per-call
/// secret. The stream's sid and how many malformed messages came first.
async fn wait_for_start<T, E>(stream: &mut T, record: &CallRecord) -> Result<(String, u64), Refusal>
where
    T: Stream<Item = Result<WsMessage, E>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let mut malformed = 0u64;
    loop {
        let msg = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                return Err(Refusal {
                    code: ErrorCode::MediaNoStart,
                    message: format!("Twilio sent no 'start' within {START_TIMEOUT:?}; closed the media stream"),
                });
            }
            Ok(None) | Ok(Some(Err(_))) => {
                return Err(Refusal {
                    code: ErrorCode::MediaClosed,
                    message: "the media stream closed before 'start'".into(),
                });
            }
            Ok(Some(Ok(m))) => m,
        };
        let WsMessage::Text(text) = msg else { continue };
        match tw::parse_inbound(&text) {
            Ok(TwilioInbound::Start(start)) => {
                return check_start(record, &start).map(|()| (start.stream_sid, malformed));
            }
            Ok(_) => {}
            Err(_) => malformed += 1,
        }
    }
}

/// A `start` must name the call's CallSid (once known) and carry its secret.
pub(crate) fn check_start(record: &CallRecord, start: &tw::StartMeta) -> Result<(), Refusal> {
    if record.is_another_calls_sid(&start.call_sid) {
        return Err(Refusal {
            code: ErrorCode::MediaRefused,
            message: "the media stream's 'start' names another CallSid; closed it".into(),
        });
    }
    let secret_ok = start
        .custom_parameters
        .get("secret")
        .is_some_and(|s| constant_time_eq(s, &record.stream_secret));
    if !secret_ok {
        return Err(Refusal {
            code: ErrorCode::MediaRefused,
            message: "the media stream's 'start' carries a wrong or missing secret; closed it".into(),
        });
    }
    Ok(())
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The provider's id of the call as stored now (it may arrive after the record was read).
async fn provider_sid(hub: &CallHub, id: &CallId) -> String {
    hub.get(id).await.map(|r| r.provider_call_id).unwrap_or_default()
}

/// The provider's id of the call, once what is queued is stored: the end
/// reason must be in the record before the provider reports the end. (It
/// borrows no bridge while it waits: the sockets are not `Sync`.)
async fn settled_sid(hub: &CallHub, writer: &CallWriter, id: &CallId) -> String {
    writer.settle().await;
    provider_sid(hub, id).await
}

/// Hangs up (or cancels) a call whose media stream was refused.
async fn hang_up_unserved<C>(env: &Env<'_, C>, writer: &CallWriter, id: &CallId) {
    let Ok(record) = env.hub.get(id).await else {
        return;
    };
    // Still being dialled (no provider id yet): nothing to tell the provider.
    if record.status.is_terminal() || record.provider_call_id.is_empty() {
        return;
    }
    let answered = !matches!(
        record.status,
        CallStatus::Queued | CallStatus::Initiated | CallStatus::Ringing
    );
    if let Err(e) = env.telephony.hang_up(&record.provider_call_id, answered).await {
        tracing::warn!(call_id = %id, error = %e, "the call whose media stream was refused could not be hung up");
        writer
            .event(EventKind::error(
                ErrorCode::from_provider(e.provider_code.as_deref()),
                format!("hang-up failed: {e}"),
            ))
            .await;
        writer.settle().await;
    }
}

/// Speaks an apology on the live call and hangs up (through the provider, so
/// the caller is never left in silence); the end reason is queued already.
async fn apologise<C>(env: &Env<'_, C>, writer: &CallWriter, id: &CallId) {
    writer.settle().await;
    let sid = provider_sid(env.hub, id).await;
    if sid.is_empty() {
        return;
    }
    if let Err(e) = env.telephony.say_and_hang_up(&sid, APOLOGY).await {
        tracing::warn!(call_id = %id, error = %e, "apology failed; hanging up");
        if let Err(e) = env.telephony.hang_up(&sid, true).await {
            writer
                .event(EventKind::error(ErrorCode::Telephony, format!("hang-up failed: {e}")))
                .await;
        }
    }
}

/// The next of the call's events while detection is awaited; never ready otherwise.
async fn next_detection(
    rx: &mut Option<mpsc::Receiver<Result<CallEvent, HubError>>>,
) -> Option<Result<CallEvent, HubError>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

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
        S: Sink<M> + Unpin,
        S::Error: Display,
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
        S: Sink<M> + Unpin,
        S::Error: Display,
    {
        if self.fed == 0 || self.failed.is_some() {
            return;
        }
        self.fed = 0;
        match tokio::time::timeout(WRITE_STALL, SinkExt::<M>::flush(&mut self.ws)).await {
            Ok(Ok(())) => {
                frames.add(self.frames.len() as u64);
                let written = now();
                for t in self.frames.drain(..) {
                    latency.record(written.saturating_duration_since(t));
                }
            }
            Ok(Err(e)) => self.failed = Some(WriteFailed::Broken(e.to_string())),
            Err(_) => self.failed = Some(WriteFailed::Stalled(WRITE_STALL)),
        }
    }
}

/// The actor that owns one call's two sockets.
struct Bridge<'a, T, C: AiConnect> {
    env: &'a Env<'a, C>,
    id: CallId,
    conv: Conversation<'a>,
    cancel: CancellationToken,
    tw: Socket<T>,
    ai: Socket<C::Socket>,
    stream_sid: String,
    /// The AI socket's dialect (a reconnect may change it).
    dialect: Dialect,
    session: SessionConfig,
    writer: CallWriter,
    /// What the conversation asked for and is not done yet, in order.
    actions: VecDeque<Action>,
    /// When the message being handled arrived.
    received: Instant,
    /// The conversation's timer ([`Action::SetTimer`]).
    timer: Pin<Box<tokio::time::Sleep>>,
    timer_armed: bool,
    /// The call's recorder, when it is recorded: handed each frame as it
    /// goes out or comes in, never waited for.
    recorder: Option<Recorder>,
    /// The call's tools.
    tools: Vec<Tool>,
    /// How long a tool call waits for its answer.
    tool_timeout: Duration,
    /// Answers of the call's tool calls ([`ToolDesk`]).
    tool_rx: tokio::sync::mpsc::UnboundedReceiver<ToolAnswer>,
    /// The call's events while the conversation waits for a detection result.
    detection: Option<mpsc::Receiver<Result<CallEvent, HubError>>>,
    /// A detection result stored before the bridge started.
    detected_before: Option<String>,
    /// The conversation so far, when the stream is a resumed one.
    resumed: Option<Vec<(Speaker, String)>>,
    /// The conversation was told to hand the call over.
    handover_asked: bool,
}

impl<T, E, C> Bridge<'_, T, C>
where
    T: Stream<Item = Result<WsMessage, E>> + Sink<WsMessage, Error = E> + Unpin + Send,
    E: Display + Send,
    C: AiConnect,
{
    async fn run(mut self) -> Outcome {
        match self.resumed.take() {
            Some(history) => self.conv.resume(now(), history, &mut self.actions),
            None => self.conv.start(now(), &mut self.actions),
        }
        if let Some(answered_by) = self.detected_before.take() {
            self.conv.on_answered_by(&answered_by, &mut self.actions);
        }
        // Made once, not per message: each would register a waiter.
        let cancelled = self.cancel.clone().cancelled_owned();
        tokio::pin!(cancelled);
        let mut ended = self.apply().await;
        let outcome = loop {
            if let Some(outcome) = ended {
                break outcome;
            }
            // Write failures, kept by the sockets, are acted on here: the
            // actions that write go on as if nothing happened.
            if let Some(why) = &self.tw.failed {
                let message = why.describe("Twilio's media stream");
                self.conv.on_twilio_write_failed(message, &mut self.actions);
            } else if let Some(why) = &self.ai.failed {
                // A broken socket is a dropped one, whichever side noticed
                // first; an AI that takes nothing is as good as gone.
                let loss = match why {
                    WriteFailed::Broken(e) => {
                        tracing::warn!(call_id = %self.id, error = %e, "writing to the AI failed");
                        AiLoss::Dropped
                    }
                    WriteFailed::Stalled(_) => AiLoss::Stalled(why.describe("the AI connection")),
                };
                self.conv.on_ai_lost(loss, &mut self.actions);
            } else {
                self.next_input(cancelled.as_mut()).await;
            }
            ended = self.apply().await;
            if ended.is_none() && (self.tw.fed >= MAX_BATCH || self.ai.fed >= MAX_BATCH) {
                self.flush().await;
            }
        };
        self.wind_up(&outcome).await;
        outcome
    }

    /// Waits for the next thing to happen and hands it to the conversation.
    async fn next_input(&mut self, cancelled: Pin<&mut tokio_util::sync::WaitForCancellationFutureOwned>) {
        let dirty = self.tw.dirty() || self.ai.dirty();
        // Biased: the AI's events (agent audio, barge-ins) first, then
        // Twilio's; the cancellation and the timer are looked at when
        // neither has a message ready (a few times per 20 ms at most, and
        // it keeps their bookkeeping off the per-message path); writing
        // waits until nothing at all is ready.
        tokio::select! {
            biased;
            msg = self.ai.ws.next() => {
                self.received = now();
                match msg {
                    None | Some(Err(_)) | Some(Ok(AiMessage::Close(_))) => {
                        self.conv.on_ai_lost(AiLoss::Dropped, &mut self.actions);
                    }
                    Some(Ok(AiMessage::Text(text))) => self.on_ai(&text),
                    Some(Ok(_)) => {}
                }
            }
            msg = self.tw.ws.next() => {
                self.received = now();
                match msg {
                    None | Some(Ok(WsMessage::Close(_))) => self.conv.on_twilio_closed(&mut self.actions),
                    // Includes messages over the 1 MiB limit.
                    Some(Err(e)) => self
                        .conv
                        .on_twilio_read_failed(format!("the media stream failed: {e}"), &mut self.actions),
                    Some(Ok(WsMessage::Text(text))) => self.on_twilio(&text),
                    Some(Ok(WsMessage::Binary(_))) => self.conv.on_malformed("binary frame", &mut self.actions),
                    Some(Ok(_)) => {}
                }
            }
            Some(answer) = self.tool_rx.recv() => {
                self.conv.on_tool_answer(answer, now(), &mut self.actions);
            }
            () = self.env.handover.cancelled(), if !self.handover_asked => {
                self.handover_asked = true;
                self.conv.on_handover(&mut self.actions);
            }
            _ = cancelled => {
                // The media token is a child of the server's: tell a
                // shutdown from HangUpCall or the call's end.
                self.conv.on_cancel(self.env.shutdown.is_cancelled(), &mut self.actions);
            }
            () = &mut self.timer, if self.timer_armed => {
                self.timer_armed = false;
                self.conv.on_timer(now(), &mut self.actions);
            }
            ev = next_detection(&mut self.detection) => {
                match ev {
                    Some(Ok(CallEvent { kind: EventKind::AnsweredBy { answered_by, .. }, .. })) => {
                        self.conv.on_answered_by(&answered_by, &mut self.actions);
                    }
                    Some(Ok(_)) => {}
                    // The stream ended (the call did) or failed: the bounded wait still decides.
                    None | Some(Err(_)) => self.detection = None,
                }
                if !self.conv.detecting() {
                    self.detection = None;
                }
            }
            // Nothing else is ready: write what the messages so far produced.
            () = std::future::ready(()), if dirty => self.flush().await,
        }
    }

    /// One Twilio message.
    fn on_twilio(&mut self, text: &str) {
        let (received, out) = (self.received, &mut self.actions);
        match tw::parse_hot(text) {
            Some(tw::HotInbound::Media(payload)) => {
                if let Some(r) = &mut self.recorder {
                    r.callee(&payload);
                }
                self.conv.on_callee_audio(&payload, received, out)
            }
            Some(tw::HotInbound::Mark(name)) => self.conv.on_mark(&name, received, out),
            None => match tw::parse_inbound(text) {
                Err(_) => self.conv.on_malformed("not a Media Streams message", out),
                Ok(TwilioInbound::Media(media)) => {
                    if let Some(r) = &mut self.recorder {
                        r.callee(&media.payload);
                    }
                    self.conv.on_callee_audio(&media.payload, received, out)
                }
                Ok(TwilioInbound::Mark(name)) => self.conv.on_mark(&name, received, out),
                Ok(TwilioInbound::Dtmf(digit)) => self.conv.on_dtmf(digit, out),
                Ok(TwilioInbound::Stop) => self.conv.on_stop(out),
                Ok(TwilioInbound::Connected | TwilioInbound::Start(_) | TwilioInbound::Unknown) => {
                    self.conv.on_other_message(out)
                }
            },
        }
    }

    /// One AI event.
    fn on_ai(&mut self, text: &str) {
        let (received, out) = (self.received, &mut self.actions);
        if let Some(d) = protocol::parse_audio_delta(text) {
            self.conv
                .on_agent_audio(&d.response_id, &d.item_id, &d.delta, received, out);
            return;
        }
        match protocol::parse_server_event(text) {
            Ok(event) => self.conv.on_ai_event(event, received, out),
            Err(e) => tracing::warn!(call_id = %self.id, error = %e, "unreadable event from the AI"),
        }
    }

    /// Carries out the conversation's actions in order; the outcome once
    /// one ends the conversation.
    async fn apply(&mut self) -> Option<Outcome> {
        while let Some(action) = self.actions.pop_front() {
            match action {
                Action::Twilio(ToTwilio::Media { text, received, ulaw }) => {
                    self.tw.feed(WsMessage::Text(text.into()), Some(received)).await;
                    if let (Some(r), Some(ulaw)) = (&mut self.recorder, ulaw) {
                        r.agent(ulaw);
                    }
                }
                Action::Twilio(ToTwilio::Mark(number)) => {
                    let mark = tw::mark_message(&self.stream_sid, &format!("m{number}"));
                    self.tw.feed(WsMessage::Text(mark.into()), None).await;
                }
                Action::Twilio(ToTwilio::Clear) => {
                    // Control first: audio fed but not yet written goes
                    // first, and the clear discards it too.
                    let clear = tw::clear_message(&self.stream_sid);
                    self.tw.feed(WsMessage::Text(clear.into()), None).await;
                    if let Some(r) = &mut self.recorder {
                        r.clear();
                    }
                    self.flush().await;
                    if self.tw.failed.is_none() {
                        let reaction = now().saturating_duration_since(self.received);
                        self.env.metrics.barge_in.record(reaction);
                    }
                }
                Action::Ai(ToAi::Append { text, received }) => {
                    self.ai.feed(AiMessage::Text(text.into()), Some(received)).await;
                }
                Action::Ai(event) => {
                    let text = event.into_text(self.dialect, &self.session);
                    self.ai.feed(AiMessage::Text(text.into()), None).await;
                }
                Action::Publish(kind) => self.writer.event(kind).await,
                Action::EndReason(reason) => self.writer.end_reason(reason).await,
                Action::EndOnShutdown => self.writer.end_on_shutdown().await,
                Action::HangUp { failure } => {
                    let sid = settled_sid(self.env.hub, &self.writer, &self.id).await;
                    if let Err(e) = self.env.telephony.hang_up(&sid, true).await {
                        self.telephony_error(failure, e).await;
                    }
                }
                Action::SayAndHangUp { text, failure } => {
                    let sid = settled_sid(self.env.hub, &self.writer, &self.id).await;
                    if let Err(e) = self.env.telephony.say_and_hang_up(&sid, text).await {
                        self.telephony_error(failure, e).await;
                    }
                }
                Action::Apologise => apologise(self.env, &self.writer, &self.id).await,
                Action::Reconnect => self.reconnect().await,
                Action::DetectionTimedOut => {
                    self.writer.settle().await;
                    match self.env.hub.update(&self.id, amd::on_timeout).await {
                        // Stored: it comes back through the call's events (or a
                        // result stored just before it does, and wins).
                        Ok(_) if self.detection.is_some() => {}
                        Ok(_) | Err(_) => self.conv.on_answered_by("unknown", &mut self.actions),
                    }
                }
                Action::SetTimer(at) => {
                    self.timer.as_mut().reset(tokio::time::Instant::from_std(at));
                    self.timer_armed = true;
                }
                Action::StartTool {
                    tool_call_id,
                    name,
                    arguments,
                } => self.start_tool(tool_call_id, &name, arguments),
                Action::Transfer { tool_call_id, number } => self.transfer(tool_call_id, number).await,
                Action::End(outcome) => {
                    self.actions.clear();
                    return Some(outcome);
                }
            }
        }
        None
    }

    fn telephony_error(&self, failure: &str, e: impl Display) -> impl Future<Output = ()> + Send + 'static {
        self.writer
            .event(EventKind::error(ErrorCode::Telephony, format!("{failure}: {e}")))
    }

    /// Writes what was fed to either socket. A socket that fails keeps the
    /// failure, and the loop in [`Bridge::run`] acts on it.
    async fn flush(&mut self) {
        let m = self.env.metrics;
        self.ai.flush(&m.inbound_frame, &m.frames_to_ai).await;
        self.tw.flush(&m.outbound_frame, &m.frames_to_twilio).await;
    }

    /// Carries out [`Action::Transfer`]: records the start (the domain may
    /// refuse: the call is ending, or an operator's transfer came first),
    /// then has the provider redirect the call to dial `number`. Either way
    /// the conversation hears how it went.
    async fn transfer(&mut self, tool_call_id: String, number: String) {
        self.writer.settle().await;
        let refused = std::sync::Arc::new(std::sync::Mutex::new(None));
        let (slot, target) = (refused.clone(), number.clone());
        let stored = self
            .env
            .hub
            .update(&self.id, move |rec| {
                match transfer::start(rec, &target, crate::call::TransferBy::Agent) {
                    Ok(events) => events,
                    Err(why) => {
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                        vec![]
                    }
                }
            })
            .await;
        let why = refused.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Err(e) = stored {
            let why = format!("it could not be recorded: {e}");
            self.conv.on_transfer_failed(tool_call_id, &why, &mut self.actions);
            return;
        }
        if let Some(why) = why {
            self.conv
                .on_transfer_failed(tool_call_id, why.message(), &mut self.actions);
            return;
        }
        let sid = provider_sid(self.env.hub, &self.id).await;
        let req =
            crate::telephony::TransferRequest::for_call(self.env.public_url, self.env.from_number, &self.id, &number);
        match self.env.telephony.transfer(&sid, &req).await {
            Ok(()) => self.conv.on_transferred(&mut self.actions),
            Err(e) => {
                tracing::warn!(call_id = %self.id, error = %e, "the provider refused the transfer's redirect");
                let message = e.message.clone();
                let _ = self
                    .env
                    .hub
                    .update(&self.id, move |rec| transfer::redirect_refused(rec, &message))
                    .await;
                self.telephony_error("the transfer's redirect failed", &e).await;
                self.conv
                    .on_transfer_failed(tool_call_id, "the phone provider refused it", &mut self.actions);
            }
        }
    }

    /// Opens a new AI socket for [`Action::Reconnect`], within [`RECONNECT_WITHIN`].
    async fn reconnect(&mut self) {
        if self.cancel.is_cancelled() {
            self.conv.on_reconnect_failed(&mut self.actions);
            return;
        }
        let started = now();
        let connect = connect_ai(self.env, &self.id, "ai.reconnect");
        let result = tokio::time::timeout(RECONNECT_WITHIN, connect).await;
        let counter = match &result {
            Ok(Ok(_)) => &self.env.metrics.ai_reconnects_ok,
            _ => &self.env.metrics.ai_reconnects_failed,
        };
        counter.inc();
        match result {
            Ok(Ok((socket, dialect))) => {
                // The old socket is dead; what was fed to it is lost with it.
                self.ai = Socket::new(socket);
                self.dialect = dialect;
                let took = now().saturating_duration_since(started);
                self.conv.on_reconnected(took, &mut self.actions);
            }
            Ok(Err(e)) => {
                tracing::warn!(call_id = %self.id, error = %e, "reconnecting to the AI failed");
                self.conv.on_reconnect_failed(&mut self.actions);
            }
            Err(_) => self.conv.on_reconnect_failed(&mut self.actions),
        }
    }

    /// Gets the answer of a tool call: registers it with the desk, then
    /// either waits for SubmitToolResult until the tool timeout, or asks
    /// the tool's URL within it. Whatever comes first reaches the
    /// conversation through the desk (once); the task ends with the call's
    /// media token.
    fn start_tool(&mut self, tool_call_id: String, name: &str, arguments: String) {
        let now = now();
        let Some(tool) = self.tools.iter().find(|t| t.name == name) else {
            return;
        };
        let desk = self.env.tool_desk.clone();
        if !desk.register(&self.id, &tool_call_id, tool.url.is_some()) {
            let answer = ToolAnswer {
                tool_call_id,
                output: r#"{"error":"too many tool calls on this call; the tool was not asked"}"#.into(),
                outcome: ToolOutcome::Failed,
            };
            self.conv.on_tool_answer(answer, now, &mut self.actions);
            return;
        }
        let (id, cancel, timeout) = (self.id.clone(), self.cancel.clone(), self.tool_timeout);
        let timed_out = |tool_call_id: String| ToolAnswer {
            tool_call_id,
            output: crate::call::tools::TIMED_OUT_OUTPUT.into(),
            outcome: ToolOutcome::TimedOut,
        };
        match tool.url.clone() {
            None => {
                tokio::spawn(async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = tokio::time::sleep(timeout) => {
                            // Refused when a submit came first: nothing to do.
                            let _ = desk.resolve(&id, Answerer::Server, timed_out(tool_call_id));
                        }
                    }
                });
            }
            Some(url) => {
                let http = self.env.tool_http.clone();
                let name = name.to_string();
                tokio::spawn(async move {
                    let req = ToolRequest {
                        call_id: id.as_str(),
                        tool_call_id: &tool_call_id,
                        name: &name,
                        arguments: &arguments,
                    };
                    let answer = tokio::select! {
                        () = cancel.cancelled() => return,
                        r = tokio::time::timeout(timeout, http.ask(&url, &req)) => match r {
                            Ok((output, outcome)) => ToolAnswer { tool_call_id: tool_call_id.clone(), output, outcome },
                            Err(_) => timed_out(tool_call_id.clone()),
                        },
                    };
                    if answer.outcome != ToolOutcome::Answered {
                        tracing::warn!(call_id = %id, tool = %name, outcome = ?answer.outcome, "a tool's URL did not answer");
                    }
                    let _ = desk.resolve(&id, Answerer::Server, answer);
                });
            }
        }
    }

    /// After the conversation: what is fed goes out, the transcripts and
    /// the end of the call are stored, then the sockets close.
    async fn wind_up(mut self, outcome: &Outcome) {
        // No answer is taken from now on; those already given are recorded,
        // the others cancelled.
        self.env.tool_desk.close(&self.id);
        let mut late = Vec::new();
        while let Ok(answer) = self.tool_rx.try_recv() {
            late.push(answer);
        }
        self.conv.cancel_tools(now(), late, &mut self.actions);
        // What is fed goes out before the sockets close (a goodbye, a truncate).
        self.flush().await;
        self.conv.wind_up(outcome, &mut self.actions);
        // Winding up ends nothing more: its actions are stores and provider requests.
        let _ = self.apply().await;
        if self.conv.malformed() > 0 {
            tracing::warn!(call_id = %self.id, count = self.conv.malformed(), "malformed media messages were ignored");
        }
        // The recording is closed (and says so) before the call's end is
        // visible, so its final state is an event of the live call.
        if let Some(recorder) = self.recorder.take() {
            recorder.finish().await;
        }
        // Stored before closing the stream can end the call.
        self.writer.settle().await;
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
        self.writer.finish().await;
    }
}
