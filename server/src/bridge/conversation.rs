//! The conversation of one call as a state machine, without sockets, store,
//! provider or clock: the shell ([`super::shell`]) parses what arrives, hands
//! it in with the time it arrived, and carries out the [`Action`]s that come
//! back, in order.
//!
//! What lives here: the agent's items and what of them was sent and heard
//! (marks and real-time playback, protocols.md §5.3), barge-in and
//! truncation, transcripts in conversation order with the heard part of an
//! interrupted line, turn latency, `end_call` (the hang-up waits until the
//! goodbye has played), the time limit, what a lost AI connection does (the
//! one reconnect and what it restores), and how each kind of end winds the
//! call up.
//!
//! Every input method pushes its actions to the back of `out`; an
//! [`Action::End`] is always the last action pushed and ends the
//! conversation: the shell then calls [`Conversation::wind_up`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audio::ULAW_BYTES_PER_MS;
use crate::bridge::frames::FrameCodec;
use crate::call::lifecycle::amd::{self, Decision};
use crate::call::{CallId, ErrorCode, EventKind, NoticeCode, Speaker, VoicemailMode};
use crate::config::AudioMode;
use crate::metrics::{Metrics, ProviderError};
use crate::realtime::protocol::{self, Dialect, ServerEvent, SessionConfig};

/// Barge-ins whose response's late deltas are still recognised and dropped.
const CANCELLED_KEPT: usize = 8;

/// What the shell does for the conversation, in the order pushed.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Write to Twilio's media stream.
    Twilio(ToTwilio),
    /// Write to the AI's socket.
    Ai(ToAi),
    /// Store and broadcast a call event.
    Publish(EventKind),
    /// Store why the call is ending ([`crate::call::lifecycle::note_end_reason`]:
    /// the first reason wins).
    EndReason(String),
    /// The server is stopping: the call is over with [`super::SHUTDOWN_REASON`]
    /// unless it already ended.
    EndOnShutdown,
    /// Hang the call up through the provider; on failure publish a
    /// `telephony_error` saying `"{failure}: {error}"`.
    HangUp {
        /// What failed, for the error event.
        failure: &'static str,
    },
    /// Have the provider say `text` and hang up; on failure publish a
    /// `telephony_error` saying `"{failure}: {error}"`.
    SayAndHangUp {
        /// What to say.
        text: &'static str,
        /// What failed, for the error event.
        failure: &'static str,
    },
    /// Apologise ([`super::APOLOGY`]) and hang up through the provider,
    /// or hang up without it when that fails.
    Apologise,
    /// Answering-machine detection gave no result in time: record "unknown"
    /// ([`crate::call::lifecycle::amd::on_timeout`]) unless a result came
    /// meanwhile; the conversation acts on whichever was stored first (it
    /// comes back through [`Conversation::on_answered_by`]), or on "unknown"
    /// when nothing could be stored.
    DetectionTimedOut,
    /// Open a new AI socket within [`super::RECONNECT_WITHIN`], then report
    /// [`Conversation::on_reconnected`] or [`Conversation::on_reconnect_failed`].
    Reconnect,
    /// Call [`Conversation::on_timer`] at this instant (replaces any earlier one).
    SetTimer(Instant),
    /// The agent called one of the call's tools: get its answer (over gRPC,
    /// or from its URL) within the tool timeout, and report it with
    /// [`Conversation::on_tool_answer`] (a timeout is an answer too).
    StartTool {
        /// The AI's id of the call.
        tool_call_id: String,
        /// The tool.
        name: String,
        /// JSON arguments.
        arguments: String,
    },
    /// The agent's hand-off sentence played: transfer the call to `number`
    /// ([`crate::call::lifecycle::transfer::start`], then the provider's
    /// redirect), and report [`Conversation::on_transferred`] or
    /// [`Conversation::on_transfer_failed`].
    Transfer {
        /// The `transfer_call` function call.
        tool_call_id: String,
        /// One of the call's targets.
        number: String,
    },
    /// The conversation is over; the call winds up with this outcome.
    End(Outcome),
}

/// A message for Twilio (protocols.md §5.3).
#[derive(Clone, Debug, PartialEq)]
pub enum ToTwilio {
    /// A `media` message's text, and when the AI audio in it arrived.
    Media {
        /// The message as on the wire.
        text: String,
        /// When its audio reached the bridge (latency metrics).
        received: Instant,
        /// The μ-law bytes it carries, when the call is recorded
        /// ([`Conversation::record_agent_audio`]).
        ulaw: Option<Vec<u8>>,
    },
    /// The mark `m<number>` after the audio sent before it.
    Mark(u64),
    /// Stop playing and drop everything sent; write it at once, before
    /// anything else.
    Clear,
}

/// A client event for the AI.
#[derive(Clone, Debug, PartialEq)]
pub enum ToAi {
    /// `input_audio_buffer.append` as on the wire (callee audio).
    Append {
        /// The event's text.
        text: String,
        /// When the callee audio in it reached the bridge (latency metrics).
        received: Instant,
    },
    /// `session.update` with the call's session.
    SessionUpdate,
    /// `response.create`: the agent speaks.
    ResponseCreate,
    /// `response.create` with instructions for this response only (the
    /// greeting after answering-machine detection, the voicemail message).
    ResponseWith(String),
    /// `conversation.item.truncate` of an agent item at what was heard.
    Truncate {
        /// The agent item.
        item_id: String,
        /// Heard audio, ms.
        audio_end_ms: u64,
    },
    /// The result of a function call.
    FunctionOutput {
        /// The function call's id.
        call_id: String,
        /// JSON output.
        output: String,
    },
    /// A function call still waiting for its output, for a new session.
    RestoreFunctionCall {
        /// The function call's id.
        call_id: String,
        /// The function.
        name: String,
        /// Its JSON arguments.
        arguments: String,
    },
    /// An earlier line of the conversation, for a new session.
    Restore {
        /// `assistant` or `user`.
        role: &'static str,
        /// What was said.
        text: String,
    },
}

impl ToAi {
    /// The event as on the wire, in `dialect`.
    pub fn into_text(self, dialect: Dialect, session: &SessionConfig) -> String {
        match self {
            Self::Append { text, .. } => text,
            Self::SessionUpdate => protocol::session_update(dialect, session),
            Self::ResponseCreate => protocol::response_create(None),
            Self::ResponseWith(instructions) => protocol::response_create(Some(&instructions)),
            Self::Truncate { item_id, audio_end_ms } => protocol::item_truncate(&item_id, 0, audio_end_ms),
            Self::FunctionOutput { call_id, output } => protocol::function_call_output(&call_id, &output),
            Self::RestoreFunctionCall {
                call_id,
                name,
                arguments,
            } => protocol::function_call_item(&call_id, &name, &arguments),
            Self::Restore { role, text } => protocol::restore_item(dialect, role, &text),
        }
    }
}

/// Why the bridge stopped.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Twilio sent `stop`.
    TwilioStopped,
    /// Twilio's socket closed (or failed when read).
    TwilioClosed,
    /// Writing to Twilio's socket failed or stalled.
    TwilioWriteFailed,
    /// HangUpCall, or the call ended.
    Cancelled,
    /// The server is stopping.
    ServerShutdown,
    /// The AI's socket dropped, and reconnecting did not help.
    AiClosed,
    /// The AI's socket stopped taking data, and reconnecting did not help.
    AiStalled(String),
    /// The AI reported an error it cannot go on after.
    AiFatal,
    /// The agent called `end_call` and its goodbye played.
    AgentHungUp,
    /// The call was handed to a person (by the agent's `transfer_call`):
    /// the provider dials them; the AI session closes.
    Transferred,
    /// This replica is draining and handed the call over: the stream closes
    /// at a clean point with the call live, so the provider asks the
    /// `<Connect action>` URL and another replica resumes it.
    HandedOver,
    /// The call reached its maximum duration.
    TimeLimit,
    /// A machine (or a fax) answered: hung up, after the voicemail message
    /// when the policy leaves one.
    Voicemail,
}

/// How the AI's socket was lost.
#[derive(Clone, Debug, PartialEq)]
pub enum AiLoss {
    /// Closed, or broke on read or write.
    Dropped,
    /// Took nothing for too long; what happened, naming the socket.
    Stalled(String),
}

impl AiLoss {
    fn cause(&self) -> &str {
        match self {
            Self::Dropped => "the AI connection dropped",
            Self::Stalled(cause) => cause,
        }
    }
}

/// Answering-machine detection, as far as the conversation is concerned
/// (the decisions are [`amd::decide`]).
#[derive(Clone, Debug, PartialEq)]
enum Detection {
    /// No detection, or it has spoken and the conversation runs.
    Off,
    /// Holding the greeting (and the callee's audio) until a result, or `until`.
    Waiting { until: Instant },
    /// A machine's greeting plays; the message waits for its end, or `until`.
    WaitingForBeep { until: Instant },
    /// Speaking the voicemail message (`started`: its response was
    /// created); the call hangs up once it has been heard.
    LeavingMessage { started: bool },
}

/// What a call with answering-machine detection does (see
/// [`Conversation::hold_for_detection`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoicemailPlan {
    /// The policy.
    pub mode: VoicemailMode,
    /// The greeting the agent says once a person answered (may be empty).
    pub greeting: String,
    /// The message left on a machine (LeaveMessage).
    pub message: String,
}

/// A mark we sent and Twilio has not echoed yet.
#[derive(Debug)]
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

/// The marks in flight: what of the agent's audio Twilio has played.
#[derive(Default)]
struct Playback {
    pending: VecDeque<PendingMark>,
    /// When Twilio last acknowledged a mark (playback reached it).
    last_ack_at: Option<Instant>,
    next_mark: u64,
}

/// Playback bookkeeping of one agent item.
#[derive(Default, Debug)]
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

/// A tool call waiting for its answer.
struct PendingTool {
    id: String,
    name: String,
    arguments: String,
    since: Instant,
}

/// The conversation of one call (see the module doc).
pub struct Conversation<'m> {
    id: CallId,
    metrics: &'m Metrics,
    stream_sid: String,
    max_duration: Duration,
    /// The per-frame conversions (transcoders and their buffers).
    frames: FrameCodec,
    malformed: u64,
    playback: Playback,
    items: HashMap<Arc<str>, AgentItem>,
    /// Transcript slots not published yet, in conversation order.
    order: VecDeque<Slot>,
    /// Transcripts published so far, to restore the conversation on a new AI session.
    history: Vec<(Speaker, String)>,
    /// The agent item whose audio was sent last.
    current_item: Option<String>,
    active_response: Option<String>,
    cancelled_responses: VecDeque<String>,
    turn: Option<Turn>,
    turns: u32,
    hangup_requested: bool,
    /// The AI socket was re-opened once already.
    reconnected: bool,
    /// The replica is draining: end with [`Outcome::HandedOver`] at the next clean point.
    handover_requested: bool,
    /// Agent audio sent to Twilio is handed out for the recording too.
    record: bool,
    /// The loss a reconnect is under way for.
    lost: Option<AiLoss>,
    /// The call's tools: name → answered by a URL.
    tools: HashMap<String, bool>,
    /// Tool calls waiting for their answers, in the order made.
    pending_tools: Vec<PendingTool>,
    /// Since when at least one tool call has been pending (turn metrics leave it out).
    tool_wait_since: Option<Instant>,
    /// Outputs were given to the AI: ask for a response once no tool call is
    /// pending and no response is running.
    respond_after_tools: bool,
    /// Answering-machine detection and the voicemail policy.
    detection: Detection,
    voicemail: Option<VoicemailPlan>,
    /// When the call reaches `max_duration` (set by `start`).
    limit_at: Option<Instant>,
    /// The numbers `transfer_call` may name (empty: the tool is not offered).
    transfer_targets: Vec<String>,
    /// `transfer_call` was called (its id, the number): the transfer starts
    /// once the hand-off sentence played ([`Conversation::check_hang_up`]).
    transfer_pending: Option<(String, String)>,
    /// A transfer is being carried out by the shell.
    transferring: bool,
}

impl<'m> Conversation<'m> {
    /// A conversation on the media stream `stream_sid`; `malformed` counts
    /// the malformed messages seen before its `start`.
    pub fn new(
        id: CallId,
        stream_sid: String,
        mode: AudioMode,
        max_duration: Duration,
        malformed: u64,
        metrics: &'m Metrics,
    ) -> Self {
        Self {
            id,
            metrics,
            stream_sid,
            max_duration,
            frames: FrameCodec::new(mode),
            malformed,
            playback: Playback::default(),
            items: HashMap::new(),
            order: VecDeque::new(),
            history: Vec::new(),
            current_item: None,
            active_response: None,
            cancelled_responses: VecDeque::new(),
            turn: None,
            turns: 0,
            hangup_requested: false,
            reconnected: false,
            handover_requested: false,
            lost: None,
            record: false,
            tools: HashMap::new(),
            pending_tools: Vec::new(),
            tool_wait_since: None,
            respond_after_tools: false,
            detection: Detection::Off,
            voicemail: None,
            limit_at: None,
            transfer_targets: Vec::new(),
            transfer_pending: None,
            transferring: false,
        }
    }

    /// The numbers the built-in `transfer_call` tool may name.
    pub fn with_transfer_targets(mut self, numbers: impl IntoIterator<Item = String>) -> Self {
        self.transfer_targets = numbers.into_iter().collect();
        self
    }

    /// The shell transferred the call: the conversation is over.
    pub fn on_transferred(&mut self, out: &mut VecDeque<Action>) {
        self.transferring = false;
        out.push_back(Action::End(Outcome::Transferred));
    }

    /// The transfer could not start (`why`): the AI hears it as the
    /// `transfer_call` output and goes on with the callee.
    pub fn on_transfer_failed(&mut self, tool_call_id: String, why: &str, out: &mut VecDeque<Action>) {
        self.transferring = false;
        let output = serde_json::json!({
            "error": format!("the transfer failed ({why}); tell the caller you could not transfer them and go on helping")
        });
        out.push_back(Action::Ai(ToAi::FunctionOutput {
            call_id: tool_call_id,
            output: output.to_string(),
        }));
        self.respond_after_tools = true;
        self.maybe_respond(out);
    }

    /// The AI called `transfer_call` with `arguments`: a target of the call
    /// waits for the hand-off sentence to play; anything else is an error
    /// output and the conversation goes on.
    fn request_transfer(&mut self, call_id: String, arguments: &str, out: &mut VecDeque<Action>) {
        let number = serde_json::from_str::<serde_json::Value>(arguments)
            .ok()
            .and_then(|v| v["number"].as_str().map(str::to_string));
        let error = match number {
            _ if self.transfer_pending.is_some() || self.transferring || self.hangup_requested => {
                Some("the call is being transferred or ended already".to_string())
            }
            Some(n) if self.transfer_targets.contains(&n) => {
                self.transfer_pending = Some((call_id.clone(), n));
                None
            }
            _ => Some(format!("number must be one of: {}", self.transfer_targets.join(", "))),
        };
        if let Some(error) = error {
            out.push_back(Action::Ai(ToAi::FunctionOutput {
                call_id,
                output: serde_json::json!({ "error": error }).to_string(),
            }));
            self.respond_after_tools = true;
            self.maybe_respond(out);
        }
    }

    /// The call's own tools (name, answered by a URL), besides the built-in `end_call`.
    pub fn with_tools(mut self, tools: impl IntoIterator<Item = (String, bool)>) -> Self {
        self.tools = tools.into_iter().collect();
        self
    }

    /// A tool call got its answer (or its timeout, or its URL's error) at
    /// `now`: the AI gets the output, the record the result, and once no
    /// tool call is pending and no response runs, the agent speaks again.
    /// An answer for a tool call not pending (any more) is dropped.
    pub fn on_tool_answer(&mut self, answer: crate::call::tools::ToolAnswer, now: Instant, out: &mut VecDeque<Action>) {
        let Some(pos) = self.pending_tools.iter().position(|p| p.id == answer.tool_call_id) else {
            return;
        };
        let pending = self.pending_tools.remove(pos);
        out.push_back(Action::Publish(EventKind::ToolResult {
            tool_call_id: pending.id.clone(),
            name: pending.name,
            output: answer.output.clone(),
            outcome: answer.outcome,
            wait_ms: millis(now, pending.since),
        }));
        out.push_back(Action::Ai(ToAi::FunctionOutput {
            call_id: pending.id,
            output: answer.output,
        }));
        self.respond_after_tools = true;
        if self.pending_tools.is_empty() {
            self.end_tool_wait(now);
        }
        self.maybe_respond(out);
        self.flush_transcripts(out);
        self.check_hang_up(out);
    }

    /// The conversation is over: each tool call still pending is recorded
    /// with the answer that came in meanwhile (`answered`, taken before
    /// the desk closed), or as cancelled (a later answer is refused).
    /// Nothing goes to the AI any more.
    pub fn cancel_tools(
        &mut self,
        now: Instant,
        answered: Vec<crate::call::tools::ToolAnswer>,
        out: &mut VecDeque<Action>,
    ) {
        for p in self.pending_tools.drain(..) {
            let (output, outcome) = match answered.iter().find(|a| a.tool_call_id == p.id) {
                Some(a) => (a.output.clone(), a.outcome),
                None => (String::new(), crate::call::tools::ToolOutcome::Canceled),
            };
            out.push_back(Action::Publish(EventKind::ToolResult {
                tool_call_id: p.id,
                name: p.name,
                output,
                outcome,
                wait_ms: millis(now, p.since),
            }));
        }
        self.tool_wait_since = None;
    }

    /// The time the turn being measured spent waiting on tools is not the
    /// agent's latency: its start moves on by it (ToolResult.wait_ms has it).
    fn end_tool_wait(&mut self, now: Instant) {
        let Some(since) = self.tool_wait_since.take() else {
            return;
        };
        if let Some(turn) = &mut self.turn
            && turn.first_mark.is_none()
        {
            turn.speech_stopped += now.saturating_duration_since(since.max(turn.speech_stopped));
        }
    }

    /// Asks for the agent's response to tool outputs, once it can.
    fn maybe_respond(&mut self, out: &mut VecDeque<Action>) {
        if self.respond_after_tools
            && self.pending_tools.is_empty()
            && self.active_response.is_none()
            && !self.hangup_requested
            && self.transfer_pending.is_none()
            && !self.transferring
        {
            self.respond_after_tools = false;
            out.push_back(Action::Ai(ToAi::ResponseCreate));
        }
    }

    /// The call is recorded: every [`ToTwilio::Media`] carries its μ-law bytes.
    pub fn record_agent_audio(&mut self) {
        self.record = true;
    }

    /// The call runs answering-machine detection (its voicemail policy is
    /// not off): [`Conversation::start`] holds the greeting, and the callee's
    /// audio is kept from the AI (whose turn detection would otherwise answer
    /// a machine's greeting, or the callee's "hello?" before the greeting),
    /// until [`Conversation::on_answered_by`] or
    /// [`amd::DETECTION_WAIT`] decides.
    pub fn hold_for_detection(&mut self, plan: VoicemailPlan) {
        if plan.mode != VoicemailMode::Off {
            self.voicemail = Some(plan);
        }
    }

    /// Whether the conversation still waits for a detection result.
    pub fn detecting(&self) -> bool {
        matches!(
            self.detection,
            Detection::Waiting { .. } | Detection::WaitingForBeep { .. }
        )
    }

    /// Malformed media messages seen (before and after `start`).
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// The AI socket is open: configure the session, let the agent speak
    /// first, and set the time limit.
    pub fn start(&mut self, now: Instant, out: &mut VecDeque<Action>) {
        out.push_back(Action::Ai(ToAi::SessionUpdate));
        // The provider's TimeLimit is a little longer (grpc.rs), so the callee
        // hears a goodbye rather than a click when the time is up.
        let limit = now + self.max_duration;
        self.limit_at = Some(limit);
        if self.voicemail.is_some() {
            let until = now + amd::DETECTION_WAIT;
            self.detection = Detection::Waiting { until };
            out.push_back(Action::SetTimer(until.min(limit)));
        } else {
            out.push_back(Action::Ai(ToAi::ResponseCreate));
            out.push_back(Action::SetTimer(limit));
        }
    }

    /// The AI socket of a resumed stream is open (the call's media moved
    /// here from a bridge that is gone, issue #17): configure the session,
    /// restore the conversation so far (`history`: the stored transcripts,
    /// the agent's lines as far as they were heard), and set the time limit
    /// (`max_duration` given to [`Conversation::new`] is what is left of
    /// the call's). The greeting is not said again: the agent says nothing
    /// unless the callee spoke last, when it owes an answer.
    pub fn resume(&mut self, now: Instant, history: Vec<(Speaker, String)>, out: &mut VecDeque<Action>) {
        out.push_back(Action::Ai(ToAi::SessionUpdate));
        for (speaker, text) in &history {
            let role = if *speaker == Speaker::Agent {
                "assistant"
            } else {
                "user"
            };
            out.push_back(Action::Ai(ToAi::Restore {
                role,
                text: text.clone(),
            }));
        }
        if history.last().is_some_and(|(s, _)| *s == Speaker::Callee) {
            out.push_back(Action::Ai(ToAi::ResponseCreate));
        }
        self.history = history;
        let limit = now + self.max_duration;
        self.limit_at = Some(limit);
        out.push_back(Action::SetTimer(limit));
    }

    /// The timer set by [`Action::SetTimer`] fired.
    pub fn on_timer(&mut self, now: Instant, out: &mut VecDeque<Action>) {
        let limit = self.limit_at.unwrap_or(now);
        if now >= limit {
            out.push_back(Action::End(Outcome::TimeLimit));
            return;
        }
        match self.detection {
            Detection::Waiting { until } if now >= until => {
                // The stored result decides (see the action); the limit stays armed.
                out.push_back(Action::DetectionTimedOut);
            }
            Detection::WaitingForBeep { until } if now >= until => {
                // The machine is recording by now, beep or not.
                self.leave_message(out);
            }
            _ => {}
        }
        out.push_back(Action::SetTimer(limit));
    }

    /// Answering-machine detection said `answered_by` (the call's stored
    /// AnsweredBy event, or "unknown" after the bounded wait).
    pub fn on_answered_by(&mut self, answered_by: &str, out: &mut VecDeque<Action>) {
        let Some(plan) = &self.voicemail else { return };
        if !self.detecting() {
            return;
        }
        match amd::decide(plan.mode, answered_by) {
            Decision::Converse => {
                self.detection = Detection::Off;
                let greeting = plan.greeting.trim();
                out.push_back(Action::Ai(if greeting.is_empty() {
                    ToAi::ResponseCreate
                } else {
                    ToAi::ResponseWith(format!(
                        "Someone answered the phone. Greet them by saying exactly this, then stop and listen: \"{greeting}\""
                    ))
                }));
            }
            Decision::HangUp => {
                self.detection = Detection::Off;
                out.push_back(Action::EndReason(amd::hung_up_reason(answered_by)));
                out.push_back(Action::HangUp {
                    failure: "hanging up on the answering machine failed",
                });
                out.push_back(Action::End(Outcome::Voicemail));
            }
            Decision::WaitForBeep => {
                if let Detection::Waiting { until } = self.detection {
                    self.detection = Detection::WaitingForBeep { until };
                }
            }
            Decision::LeaveMessage => self.leave_message(out),
        }
    }

    /// Speaks the voicemail message; the call hangs up once it is heard
    /// ([`Conversation::check_hang_up`]).
    fn leave_message(&mut self, out: &mut VecDeque<Action>) {
        let message = self.voicemail.as_ref().map(|p| p.message.trim()).unwrap_or_default();
        self.detection = Detection::LeavingMessage { started: false };
        out.push_back(Action::Ai(ToAi::ResponseWith(format!(
            "You reached an answering machine and it is recording now. Leave this voicemail message by saying exactly this, then stop: \"{message}\""
        ))));
    }

    /// The call's media token was cancelled: by a server shutdown
    /// (`shutdown`), or by HangUpCall or the call's end.
    pub fn on_cancel(&mut self, shutdown: bool, out: &mut VecDeque<Action>) {
        out.push_back(Action::End(if shutdown {
            Outcome::ServerShutdown
        } else {
            Outcome::Cancelled
        }));
    }

    // --- Twilio -----------------------------------------------------------

    /// Callee audio (`media.payload`, base64 μ-law) that arrived at `received`.
    pub fn on_callee_audio(&mut self, payload: &str, received: Instant, out: &mut VecDeque<Action>) {
        self.metrics.frames_from_twilio.inc();
        if self.handover_requested {
            self.check_handover(out);
        }
        if self.detection != Detection::Off {
            // Held from the AI while detection decides, and on a machine.
            self.check_hang_up(out);
            return;
        }
        match self.frames.twilio_to_ai(payload) {
            Ok(text) => out.push_back(Action::Ai(ToAi::Append { text, received })),
            Err(_) => self.on_malformed("media payload is not base64", out),
        }
        self.check_hang_up(out);
    }

    /// Twilio echoed the mark `name`: the audio before it played.
    pub fn on_mark(&mut self, name: &str, now: Instant, out: &mut VecDeque<Action>) {
        self.ack_mark(name, now, out);
        self.check_hang_up(out);
        self.check_handover(out);
    }

    /// The replica is draining (issue #17): the call is handed over at the
    /// next clean point ([`Conversation::check_handover`]).
    pub fn on_handover(&mut self, out: &mut VecDeque<Action>) {
        self.handover_requested = true;
        self.check_handover(out);
    }

    /// Ends with [`Outcome::HandedOver`] once handing over cuts nothing: no
    /// agent response running, every agent audio sent heard (so the heard
    /// transcript is the whole line), not ending already, not holding for
    /// detection. Until then (DRAIN_TIMEOUT bounds it) the call goes on.
    fn check_handover(&mut self, out: &mut VecDeque<Action>) {
        if !self.handover_requested || self.hangup_requested || self.detection != Detection::Off {
            return;
        }
        let unplayed = self
            .items
            .values()
            .any(|i| !i.interrupted && (i.heard_bytes < i.sent_bytes || (!i.audio_done && !i.response_id.is_empty())));
        if unplayed || self.active_response.is_some() || self.lost.is_some() {
            return;
        }
        self.handover_requested = false;
        out.push_back(Action::End(Outcome::HandedOver));
    }

    /// The callee pressed a key. Twilio sends one key per message, one of
    /// `0-9 * # A-D` (protocols.md §5, the `dtmf` message); anything else is
    /// malformed and not stored (the peer would decide what the store holds).
    pub fn on_dtmf(&mut self, digit: String, out: &mut VecDeque<Action>) {
        if is_dtmf_key(&digit) {
            out.push_back(Action::Publish(EventKind::Dtmf { digit }));
        } else {
            self.on_malformed("DTMF digit is not one of 0-9 * # A-D", out);
        }
        self.check_hang_up(out);
    }

    /// Any other Media Streams message (`connected`, a repeated `start`, an unknown event).
    pub fn on_other_message(&mut self, out: &mut VecDeque<Action>) {
        self.check_hang_up(out);
        self.check_handover(out);
    }

    /// Twilio sent `stop`.
    pub fn on_stop(&mut self, out: &mut VecDeque<Action>) {
        out.push_back(Action::End(Outcome::TwilioStopped));
    }

    /// A message that is not a Media Streams message (`what`), or audio that
    /// is not base64. The call goes on; the first one is reported.
    pub fn on_malformed(&mut self, what: &str, out: &mut VecDeque<Action>) {
        self.malformed += 1;
        self.metrics.media_malformed.inc();
        if self.malformed == 1 {
            out.push_back(Action::Publish(EventKind::error(
                ErrorCode::MediaMalformed,
                format!("ignored a malformed media message ({what}); the call goes on"),
            )));
        }
        tracing::debug!(call_id = %self.id, what, count = self.malformed, "malformed media message");
    }

    /// Twilio's socket closed.
    pub fn on_twilio_closed(&mut self, out: &mut VecDeque<Action>) {
        out.push_back(Action::End(Outcome::TwilioClosed));
    }

    /// Reading Twilio's socket failed (`message` says how); it is closed.
    pub fn on_twilio_read_failed(&mut self, message: String, out: &mut VecDeque<Action>) {
        out.push_back(Action::EndReason(message.clone()));
        out.push_back(Action::Publish(EventKind::error(ErrorCode::MediaSocketError, message)));
        out.push_back(Action::End(Outcome::TwilioClosed));
    }

    /// Writing to Twilio's socket failed or stalled (`message` says how).
    pub fn on_twilio_write_failed(&mut self, message: String, out: &mut VecDeque<Action>) {
        out.push_back(Action::EndReason(message.clone()));
        out.push_back(Action::Publish(EventKind::error(ErrorCode::MediaSocketError, message)));
        out.push_back(Action::End(Outcome::TwilioWriteFailed));
    }

    // --- the AI -----------------------------------------------------------

    /// An agent audio delta (base64 in the session's format) that arrived at `now`.
    pub fn on_agent_audio(
        &mut self,
        response_id: &str,
        item_id: &str,
        delta: &str,
        now: Instant,
        out: &mut VecDeque<Action>,
    ) {
        self.agent_audio(response_id, item_id, delta, now, out);
        self.check_hang_up(out);
    }

    /// Any other AI event, arrived at `now`.
    pub fn on_ai_event(&mut self, event: ServerEvent, now: Instant, out: &mut VecDeque<Action>) {
        match event {
            ServerEvent::AudioDelta {
                response_id,
                item_id,
                delta,
            } => self.agent_audio(&response_id, &item_id, &delta, now, out),
            ServerEvent::AudioDone { item_id, .. } => {
                if let Some(item) = self.items.get_mut(item_id.as_str()) {
                    item.audio_done = true;
                }
            }
            ServerEvent::TranscriptDelta { item_id, delta } => {
                // Past the stored cap the rest would be cut anyway: an AI that
                // never ends a transcript cannot grow it without bound.
                if let Some(item) = self.items.get_mut(item_id.as_str())
                    && !item.transcript_done
                    && item.transcript.len() <= crate::call::payload_caps::TRANSCRIPT
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
            ServerEvent::SpeechStarted { .. } => self.barge_in(now, out),
            ServerEvent::SpeechStopped { .. } => {
                self.turn = Some(Turn {
                    speech_stopped: now,
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
                out.push_back(Action::Publish(EventKind::error(
                    ErrorCode::AiTranscriptionFailed,
                    format!("the callee's words could not be transcribed: {error}"),
                )));
            }
            ServerEvent::ResponseCreated { response_id } => {
                self.active_response = Some(response_id);
                if self.detection == (Detection::LeavingMessage { started: false }) {
                    self.detection = Detection::LeavingMessage { started: true };
                }
            }
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
                self.maybe_respond(out);
            }
            ServerEvent::FunctionCallArgumentsDone {
                name,
                call_id,
                arguments,
                ..
            } => {
                if let Some(&by_url) = self.tools.get(&name) {
                    // The same call announced twice is one call.
                    if !self.pending_tools.iter().any(|p| p.id == call_id) {
                        if self.pending_tools.is_empty() {
                            self.tool_wait_since = Some(now);
                        }
                        self.pending_tools.push(PendingTool {
                            id: call_id.clone(),
                            name: name.clone(),
                            arguments: arguments.clone(),
                            since: now,
                        });
                        // Registered before the event is stored: a client that
                        // answers as soon as it sees the event finds the call pending.
                        out.push_back(Action::StartTool {
                            tool_call_id: call_id.clone(),
                            name: name.clone(),
                            arguments: arguments.clone(),
                        });
                        out.push_back(Action::Publish(EventKind::ToolCall {
                            tool_call_id: call_id,
                            name,
                            arguments,
                            by_url,
                        }));
                    }
                } else if name == crate::call::lifecycle::transfer::TOOL_NAME && !self.transfer_targets.is_empty() {
                    self.request_transfer(call_id, &arguments, out);
                } else {
                    let output = if name == "end_call" {
                        self.hangup_requested = true;
                        "{\"ok\":true}".to_string()
                    } else {
                        format!("{{\"error\":\"unknown tool {}\"}}", name.replace('"', ""))
                    };
                    out.push_back(Action::Ai(ToAi::FunctionOutput { call_id, output }));
                }
            }
            ServerEvent::Error {
                code, message, r#type, ..
            } => {
                let fatal = protocol::is_fatal_error(&r#type, code.as_deref());
                // Our own best-effort cancel racing the server's automatic one.
                let benign = code.as_deref() == Some("response_cancel_not_active");
                if !benign {
                    out.push_back(Action::Publish(EventKind::error(
                        ErrorCode::Ai(code.unwrap_or(r#type)),
                        message,
                    )));
                }
                if fatal {
                    self.metrics.provider_errors.inc(ProviderError::AiFatal);
                    out.push_back(Action::End(Outcome::AiFatal));
                    return;
                }
            }
            _ => {}
        }
        self.flush_transcripts(out);
        self.check_hang_up(out);
    }

    /// The AI's socket is gone (`loss`): the one reconnect, or the end.
    pub fn on_ai_lost(&mut self, loss: AiLoss, out: &mut VecDeque<Action>) {
        self.metrics.provider_errors.inc(match loss {
            AiLoss::Dropped => ProviderError::AiDrop,
            AiLoss::Stalled(_) => ProviderError::AiStall,
        });
        if self.reconnected {
            out.push_back(Action::End(loss_outcome(loss)));
            return;
        }
        self.reconnected = true;
        self.lost = Some(loss);
        out.push_back(Action::Reconnect);
    }

    /// The reconnect failed (or the call is being stopped anyway).
    pub fn on_reconnect_failed(&mut self, out: &mut VecDeque<Action>) {
        let loss = self.lost.take().unwrap_or(AiLoss::Dropped);
        out.push_back(Action::End(loss_outcome(loss)));
    }

    /// A new AI socket is open (it took `took`): what the old session was
    /// saying is over, keeping what was heard; the new one gets the
    /// instructions and the conversation so far.
    pub fn on_reconnected(&mut self, took: Duration, out: &mut VecDeque<Action>) {
        let why = self.lost.take().unwrap_or(AiLoss::Dropped);
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
        self.flush_transcripts(out);
        out.push_back(Action::Ai(ToAi::SessionUpdate));
        for (speaker, text) in &self.history {
            let role = if *speaker == Speaker::Agent {
                "assistant"
            } else {
                "user"
            };
            out.push_back(Action::Ai(ToAi::Restore {
                role,
                text: text.clone(),
            }));
        }
        // Tool calls still waiting keep their call on the new session, so
        // their outputs have something to answer; the agent speaks once
        // they are in.
        for p in &self.pending_tools {
            out.push_back(Action::Ai(ToAi::RestoreFunctionCall {
                call_id: p.id.clone(),
                name: p.name.clone(),
                arguments: p.arguments.clone(),
            }));
        }
        // The agent owes an answer if the callee spoke last (or nobody yet),
        // unless it still holds its greeting for detection. A voicemail
        // message cut by the loss is said again from the start.
        if self.detection == (Detection::LeavingMessage { started: true }) {
            self.leave_message(out);
        } else if !self.pending_tools.is_empty() {
            self.respond_after_tools = true;
        } else if !self.detecting() && self.history.last().is_none_or(|(s, _)| *s == Speaker::Callee) {
            out.push_back(Action::Ai(ToAi::ResponseCreate));
        }
        out.push_back(Action::Publish(EventKind::notice(
            NoticeCode::AiReconnected,
            format!(
                "{}; re-established in {} ms with the conversation so far ({} turns)",
                why.cause(),
                took.as_millis(),
                self.history.len()
            ),
        )));
    }

    // --- the end ----------------------------------------------------------

    /// The conversation ended with `outcome`: the transcripts not published
    /// yet (an agent line not fully heard keeps what was), then what this
    /// kind of end does to the call.
    pub fn wind_up(&mut self, outcome: &Outcome, out: &mut VecDeque<Action>) {
        self.finish_transcripts(out);
        let ai_failed = |cause: &str| Action::EndReason(format!("the AI failed: {cause}"));
        match outcome {
            Outcome::AiClosed => {
                out.push_back(Action::Publish(EventKind::error(
                    ErrorCode::AiDisconnected,
                    "the realtime AI closed the connection mid-call; apologising and hanging up",
                )));
                out.push_back(ai_failed("the AI connection dropped"));
                out.push_back(Action::Apologise);
            }
            Outcome::AiStalled(cause) => {
                out.push_back(Action::Publish(EventKind::error(
                    ErrorCode::AiSocketError,
                    format!("{cause}; apologising and hanging up"),
                )));
                out.push_back(ai_failed(cause));
                out.push_back(Action::Apologise);
            }
            Outcome::AiFatal => {
                out.push_back(ai_failed("the AI reported a fatal error"));
                out.push_back(Action::Apologise);
            }
            // The socket cannot carry our close (on a stalled one it would
            // queue behind the unread audio), so Twilio might only notice
            // the stream is gone when a write of its own fails: hang up
            // through the REST API, which needs no media socket.
            Outcome::TwilioWriteFailed => out.push_back(Action::HangUp {
                failure: "hang-up after the media stream failed",
            }),
            // Closing the media stream afterwards is what hangs up.
            Outcome::ServerShutdown => out.push_back(Action::EndOnShutdown),
            Outcome::TimeLimit => {
                out.push_back(Action::EndReason(format!(
                    "the call reached its maximum duration ({} s)",
                    self.max_duration.as_secs()
                )));
                out.push_back(Action::SayAndHangUp {
                    text: super::TIME_LIMIT_GOODBYE,
                    failure: "the time-limit goodbye failed",
                });
            }
            Outcome::Cancelled
            | Outcome::TwilioClosed
            | Outcome::HandedOver
            | Outcome::TwilioStopped
            | Outcome::AgentHungUp
            | Outcome::Transferred
            | Outcome::Voicemail => {}
        }
    }

    // --- inside -----------------------------------------------------------

    fn agent_audio(&mut self, response_id: &str, item_id: &str, delta: &str, now: Instant, out: &mut VecDeque<Action>) {
        self.metrics.frames_from_ai.inc();
        if self.cancelled_responses.iter().any(|r| r == response_id) {
            // Late audio of a response cut by a barge-in.
            self.metrics.frames_dropped_barge_in.inc();
            return;
        }
        let Ok((text, ulaw_len)) = self.frames.ai_to_twilio(&self.stream_sid, delta) else {
            tracing::warn!(call_id = %self.id, "AI audio delta is not base64; dropped");
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
        self.playback.next_mark += 1;
        let number = self.playback.next_mark;
        self.playback.pending.push_back(PendingMark {
            number,
            item_id: item_key,
            start_byte,
            end_byte,
            sent_at: now,
        });
        if let Some(turn) = &mut self.turn
            && turn.first_mark.is_none()
        {
            turn.first_sent_ms = Some(millis(now, turn.speech_stopped));
            turn.first_mark = Some(number);
        }
        let ulaw = self.record.then(|| self.frames.last_ulaw().to_vec());
        out.push_back(Action::Twilio(ToTwilio::Media {
            text,
            received: now,
            ulaw,
        }));
        out.push_back(Action::Twilio(ToTwilio::Mark(number)));
    }

    fn ack_mark(&mut self, name: &str, now: Instant, out: &mut VecDeque<Action>) {
        // Marks come back in the order sent; anything not pending was flushed
        // by a `clear` and proves nothing about playback (§5.3).
        let Some(number) = name.strip_prefix('m').and_then(|n| n.parse::<u64>().ok()) else {
            return; // not one of ours
        };
        let Some(pos) = self.playback.pending.iter().position(|m| m.number == number) else {
            return;
        };
        self.playback.last_ack_at = Some(now);
        let mut first_heard = false;
        let first_mark = self.turn.as_ref().and_then(|t| t.first_mark);
        for m in self.playback.pending.drain(..=pos) {
            if let Some(item) = self.items.get_mut(&m.item_id) {
                item.heard_bytes = item.heard_bytes.max(m.end_byte);
            }
            first_heard |= first_mark == Some(m.number);
        }
        if first_heard && let Some(turn) = self.turn.take() {
            let heard = millis(now, turn.speech_stopped);
            let sent = turn.first_sent_ms.unwrap_or(heard);
            let index = self.turns;
            self.turns += 1;
            out.push_back(Action::Publish(EventKind::Turn {
                turn_index: index,
                first_audio_sent_ms: sent,
                first_audio_heard_ms: heard,
            }));
        }
        self.flush_transcripts(out);
    }

    /// The callee started speaking: if agent audio is still unplayed, stop it
    /// at once and make the AI forget what was not heard (§7.5).
    fn barge_in(&mut self, now: Instant, out: &mut VecDeque<Action>) {
        let Some(item_id) = self.current_item.clone() else {
            return;
        };
        let Some(item) = self.items.get_mut(item_id.as_str()) else {
            return;
        };
        if item.heard_bytes >= item.sent_bytes {
            return; // everything was played: nothing to interrupt
        }
        // Control first: Twilio stops playing before anything else happens.
        out.push_back(Action::Twilio(ToTwilio::Clear));
        // Marks tell what played up to the last acknowledged chunk; within
        // the chunk now playing, Twilio plays in real time (8 bytes per ms)
        // from the later of that acknowledgement and the chunk's arrival.
        if let Some(m) = self.playback.pending.front().filter(|m| *m.item_id == *item_id) {
            let started = self.playback.last_ack_at.map_or(m.sent_at, |a| a.max(m.sent_at));
            let played = now.saturating_duration_since(started).as_millis() as usize * ULAW_BYTES_PER_MS;
            item.heard_bytes = item.heard_bytes.max((m.start_byte + played).min(m.end_byte));
        }
        self.playback.pending.clear();
        item.interrupted = true;
        let heard_ms = (item.heard_bytes.min(item.sent_bytes) / ULAW_BYTES_PER_MS) as u64;
        let response_id = item.response_id.clone();
        item.audio_done = true;
        out.push_back(Action::Ai(ToAi::Truncate {
            item_id,
            audio_end_ms: heard_ms,
        }));
        // The session runs server VAD with `interrupt_response: true`, so the
        // service cancels the response itself on speech_started; a cancel of
        // ours would race it and earn an error (protocols.md §8: cancel only
        // when interrupt_response is false). Its late deltas are dropped.
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
        self.flush_transcripts(out);
    }

    /// After `end_call` (or `transfer_call`): hang up (or transfer) once
    /// nothing the agent said is left to play (its goodbye, or hand-off
    /// sentence, is heard in full) and no response is running.
    fn check_hang_up(&mut self, out: &mut VecDeque<Action>) {
        let message_said = self.detection == (Detection::LeavingMessage { started: true });
        if !self.hangup_requested && !message_said && self.transfer_pending.is_none() {
            return;
        }
        let unplayed = self
            .items
            .values()
            .any(|i| !i.interrupted && (i.heard_bytes < i.sent_bytes || (!i.audio_done && !i.response_id.is_empty())));
        if unplayed || self.active_response.is_some() {
            return;
        }
        if let Some((tool_call_id, number)) = self.transfer_pending.take() {
            // The hand-off sentence was heard in full: the shell transfers.
            self.transferring = true;
            out.push_back(Action::Transfer { tool_call_id, number });
            return;
        }
        // Once: the conversation ends here.
        self.hangup_requested = false;
        if message_said {
            self.detection = Detection::Off;
            out.push_back(Action::EndReason(amd::MESSAGE_LEFT_REASON.into()));
            out.push_back(Action::HangUp {
                failure: "hang-up after the voicemail message failed",
            });
            out.push_back(Action::End(Outcome::Voicemail));
            return;
        }
        out.push_back(Action::EndReason(crate::call::lifecycle::AGENT_ENDED_REASON.into()));
        out.push_back(Action::HangUp {
            failure: "hang-up after end_call failed",
        });
        out.push_back(Action::End(Outcome::AgentHungUp));
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
    fn flush_transcripts(&mut self, out: &mut VecDeque<Action>) {
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
                out.push_back(Action::Publish(EventKind::Transcript {
                    speaker: slot.speaker,
                    text,
                    interrupted: slot.interrupted,
                }));
            }
        }
    }

    /// At the end of the call, agent lines not fully heard keep only what was.
    fn finish_transcripts(&mut self, out: &mut VecDeque<Action>) {
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
        self.flush_transcripts(out);
    }
}

fn loss_outcome(loss: AiLoss) -> Outcome {
    match loss {
        AiLoss::Dropped => Outcome::AiClosed,
        AiLoss::Stalled(cause) => Outcome::AiStalled(cause),
    }
}

/// Milliseconds from `since` to `now` (0 if `now` is earlier).
fn millis(now: Instant, since: Instant) -> u32 {
    now.saturating_duration_since(since).as_millis() as u32
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

/// One DTMF key: `0-9 * # A-D`.
fn is_dtmf_key(digit: &str) -> bool {
    matches!(digit.as_bytes(), [b'0'..=b'9' | b'*' | b'#' | b'A'..=b'D'])
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;

    use super::*;
    use crate::call::Speaker::{Agent, Callee};
    use crate::realtime::protocol::ItemKind;

    const LIMIT: Duration = Duration::from_secs(60);

    /// A conversation (μ-law both ways, so a delta's bytes are what Twilio
    /// plays), its clock's origin, and the actions it pushed.
    struct Harness {
        conv: Conversation<'static>,
        t0: Instant,
        out: VecDeque<Action>,
    }

    impl Harness {
        fn new() -> Self {
            let metrics: &'static Metrics = Box::leak(Box::default());
            Self {
                conv: Conversation::new(CallId::new(), "MZ1".into(), AudioMode::Passthrough, LIMIT, 0, metrics),
                t0: Instant::now(),
                out: VecDeque::new(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        /// The actions pushed since the last call.
        fn take(&mut self) -> Vec<Action> {
            self.out.drain(..).collect()
        }

        fn ai(&mut self, ms: u64, event: ServerEvent) -> Vec<Action> {
            let now = self.at(ms);
            self.conv.on_ai_event(event, now, &mut self.out);
            self.take()
        }

        /// `bytes` of agent audio for `item` of `response`.
        fn audio(&mut self, ms: u64, response: &str, item: &str, bytes: usize) -> Vec<Action> {
            let delta = B64.encode(vec![0xFFu8; bytes]);
            let now = self.at(ms);
            self.conv.on_agent_audio(response, item, &delta, now, &mut self.out);
            self.take()
        }

        fn mark(&mut self, ms: u64, number: u64) -> Vec<Action> {
            let now = self.at(ms);
            self.conv.on_mark(&format!("m{number}"), now, &mut self.out);
            self.take()
        }

        /// A response `response` with one message item `item`.
        fn agent_item(&mut self, response: &str, item: &str) {
            self.ai(0, created(response));
            self.ai(
                0,
                ServerEvent::OutputItemAdded {
                    response_id: response.into(),
                    item_id: item.into(),
                    kind: ItemKind::Message,
                    name: None,
                    call_id: None,
                },
            );
        }

        /// The callee's line `item` (committed and transcribed).
        fn callee_line(&mut self, item: &str, text: &str) -> Vec<Action> {
            self.ai(
                0,
                ServerEvent::Committed {
                    item_id: item.into(),
                    previous_item_id: None,
                },
            );
            self.ai(
                0,
                ServerEvent::InputTranscriptionCompleted {
                    item_id: item.into(),
                    transcript: text.into(),
                },
            )
        }

        /// A whole agent line, sent as one chunk and heard in full.
        fn heard_line(&mut self, response: &str, item: &str, text: &str) -> Vec<Action> {
            self.agent_item(response, item);
            let sent = self.audio(0, response, item, 800);
            let Some(Action::Twilio(ToTwilio::Mark(n))) = sent.last() else {
                panic!("a mark after the audio: {sent:?}");
            };
            let n = *n;
            self.ai(0, transcript_done(item, text));
            self.ai(0, done(response));
            self.mark(100, n)
        }
    }

    fn created(response: &str) -> ServerEvent {
        ServerEvent::ResponseCreated {
            response_id: response.into(),
        }
    }

    fn done(response: &str) -> ServerEvent {
        ServerEvent::ResponseDone {
            response_id: response.into(),
            status: "completed".into(),
            reason: None,
        }
    }

    fn transcript_done(item: &str, text: &str) -> ServerEvent {
        ServerEvent::TranscriptDone {
            response_id: String::new(),
            item_id: item.into(),
            transcript: text.into(),
        }
    }

    fn speech_started() -> ServerEvent {
        ServerEvent::SpeechStarted {
            audio_start_ms: 0,
            item_id: "u".into(),
        }
    }

    fn speech_stopped() -> ServerEvent {
        ServerEvent::SpeechStopped {
            audio_end_ms: 0,
            item_id: "u".into(),
        }
    }

    fn line(speaker: Speaker, text: &str, interrupted: bool) -> Action {
        Action::Publish(EventKind::Transcript {
            speaker,
            text: text.into(),
            interrupted,
        })
    }

    fn kinds(actions: &[Action]) -> Vec<&'static str> {
        actions
            .iter()
            .map(|a| match a {
                Action::Twilio(ToTwilio::Media { .. }) => "media",
                Action::Twilio(ToTwilio::Mark(_)) => "mark",
                Action::Twilio(ToTwilio::Clear) => "clear",
                Action::Ai(ToAi::Append { .. }) => "append",
                Action::Ai(_) => "ai",
                Action::Publish(_) => "publish",
                Action::End(_) => "end",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn a_handover_waits_for_the_agent_line_to_be_heard() {
        let mut h = Harness::new();
        h.agent_item("r1", "a1");
        h.audio(0, "r1", "a1", 800);
        h.conv.on_handover(&mut h.out);
        assert!(
            !h.take().contains(&Action::End(Outcome::HandedOver)),
            "not while the agent speaks"
        );
        let mut actions = h.ai(
            50,
            ServerEvent::AudioDone {
                response_id: "r1".into(),
                item_id: "a1".into(),
            },
        );
        actions.extend(h.ai(50, done("r1")));
        assert!(!actions.contains(&Action::End(Outcome::HandedOver)), "{actions:?}");
        assert!(
            h.mark(100, 1).contains(&Action::End(Outcome::HandedOver)),
            "once what was sent is heard"
        );
        h.conv.wind_up(&Outcome::HandedOver, &mut h.out);
        assert!(
            !h.take()
                .iter()
                .any(|a| matches!(a, Action::EndReason(_) | Action::EndOnShutdown)),
            "a handed-over call is not ended"
        );
    }

    #[test]
    fn a_resumed_conversation_restores_the_history_without_a_second_greeting() {
        let mut h = Harness::new();
        let now = h.at(0);
        let history = vec![
            (Speaker::Agent, "Hello, this is the clinic.".to_string()),
            (Speaker::Callee, "Hi.".to_string()),
            (Speaker::Agent, "How can I".to_string()),
        ];
        h.conv.resume(now, history, &mut h.out);
        assert_eq!(
            h.take(),
            vec![
                Action::Ai(ToAi::SessionUpdate),
                Action::Ai(ToAi::Restore {
                    role: "assistant",
                    text: "Hello, this is the clinic.".into()
                }),
                Action::Ai(ToAi::Restore {
                    role: "user",
                    text: "Hi.".into()
                }),
                Action::Ai(ToAi::Restore {
                    role: "assistant",
                    text: "How can I".into()
                }),
                Action::SetTimer(now + LIMIT)
            ],
            "the agent spoke last: it says nothing, and no greeting"
        );
        // The callee spoke last: the agent owes an answer.
        let mut h = Harness::new();
        h.conv
            .resume(now, vec![(Speaker::Callee, "Are you there?".into())], &mut h.out);
        let actions = h.take();
        assert!(actions.contains(&Action::Ai(ToAi::ResponseCreate)), "{actions:?}");
    }

    #[test]
    fn start_configures_the_session_lets_the_agent_speak_and_sets_the_time_limit() {
        let mut h = Harness::new();
        let now = h.at(0);
        h.conv.start(now, &mut h.out);
        assert_eq!(
            h.take(),
            vec![
                Action::Ai(ToAi::SessionUpdate),
                Action::Ai(ToAi::ResponseCreate),
                Action::SetTimer(now + LIMIT)
            ]
        );
        h.conv.on_timer(h.at(60_000), &mut h.out);
        assert_eq!(h.take(), vec![Action::End(Outcome::TimeLimit)]);
        h.conv.wind_up(&Outcome::TimeLimit, &mut h.out);
        assert_eq!(
            h.take(),
            vec![
                Action::EndReason("the call reached its maximum duration (60 s)".into()),
                Action::SayAndHangUp {
                    text: crate::bridge::TIME_LIMIT_GOODBYE,
                    failure: "the time-limit goodbye failed",
                }
            ]
        );
    }

    #[test]
    fn a_recorded_call_hands_out_the_agent_audio_it_sends() {
        let mut h = Harness::new();
        h.conv.record_agent_audio();
        h.agent_item("r1", "a1");
        let delta: Vec<u8> = (0..160u8).collect();
        let now = h.at(5);
        h.conv.on_agent_audio("r1", "a1", &B64.encode(&delta), now, &mut h.out);
        let sent = h.take();
        let Some(Action::Twilio(ToTwilio::Media { ulaw, .. })) = sent.first() else {
            panic!("{sent:?}");
        };
        assert_eq!(
            ulaw.as_deref(),
            Some(&delta[..]),
            "the bytes Twilio gets (μ-law passthrough)"
        );
    }

    #[test]
    fn agent_audio_goes_out_with_a_numbered_mark_and_callee_audio_to_the_ai() {
        let mut h = Harness::new();
        h.agent_item("r1", "a1");
        let sent = h.audio(5, "r1", "a1", 160);
        let [
            Action::Twilio(ToTwilio::Media {
                text,
                received,
                ulaw: None,
            }),
            Action::Twilio(ToTwilio::Mark(1)),
        ] = &sent[..]
        else {
            panic!("{sent:?}");
        };
        assert_eq!(*received, h.at(5));
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            (v["event"].as_str(), v["streamSid"].as_str()),
            (Some("media"), Some("MZ1"))
        );
        assert_eq!(kinds(&h.audio(6, "r1", "a1", 160)), ["media", "mark"]);
        assert!(matches!(h.take()[..], []));
        let ok = B64.encode([0xFFu8; 160]);
        h.conv.on_callee_audio(&ok, h.at(7), &mut h.out);
        assert_eq!(kinds(&h.take()), ["append"]);
        // An empty delta carries nothing to play and gets no mark.
        assert!(h.audio(8, "r1", "a1", 0).is_empty());
    }

    #[test]
    fn malformed_media_is_reported_once_and_the_call_goes_on() {
        let mut h = Harness::new();
        h.conv.on_callee_audio("not base64!", h.at(0), &mut h.out);
        h.conv.on_malformed("binary frame", &mut h.out);
        let actions = h.take();
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert!(
            matches!(&actions[0], Action::Publish(EventKind::Error { code, message })
                if code == "media_malformed" && message.contains("not base64")),
            "{actions:?}"
        );
        assert_eq!(h.conv.malformed(), 2);
    }

    #[test]
    fn barge_in_clears_twilio_and_truncates_at_the_heard_position() {
        let mut h = Harness::new();
        h.agent_item("r1", "a1");
        // Two 200 ms chunks sent at once; the first is acknowledged at 200 ms.
        h.audio(0, "r1", "a1", 1600);
        h.audio(0, "r1", "a1", 1600);
        h.mark(200, 1);
        // 100 ms into the second chunk, the callee speaks.
        let actions = h.ai(300, speech_started());
        assert_eq!(
            actions,
            vec![
                Action::Twilio(ToTwilio::Clear),
                Action::Ai(ToAi::Truncate {
                    item_id: "a1".into(),
                    audio_end_ms: 300
                })
            ]
        );
        // Late audio of the cut response is dropped, and counted.
        assert!(h.audio(310, "r1", "a1", 1600).is_empty());
        assert_eq!(h.conv.metrics.frames_dropped_barge_in.get(), 1);
        // The mark the clear flushed proves nothing about playback.
        assert!(h.mark(320, 2).is_empty());
        // The line keeps the share of its words that was heard: 300 of 400 ms.
        assert_eq!(
            h.ai(330, transcript_done("a1", "one two three four")),
            vec![line(Agent, "one two three", true)]
        );
    }

    #[test]
    fn word_timestamps_give_the_exact_heard_part() {
        let mut h = Harness::new();
        h.agent_item("r1", "a1");
        for (word, start, len) in [
            ("one", 0, 100),
            ("two", 100, 150),
            ("three", 250, 100),
            ("four", 350, 50),
        ] {
            h.ai(
                0,
                ServerEvent::WordTimestamp {
                    item_id: "a1".into(),
                    text: word.into(),
                    audio_offset_ms: start,
                    audio_duration_ms: len,
                },
            );
        }
        h.audio(0, "r1", "a1", 3200);
        h.ai(300, speech_started());
        assert_eq!(
            h.ai(310, transcript_done("a1", "one two three four")),
            vec![line(Agent, "one two", true)]
        );
    }

    #[test]
    fn nothing_is_cleared_once_everything_played() {
        let mut h = Harness::new();
        h.heard_line("r1", "a1", "Hello.");
        assert!(h.ai(500, speech_started()).is_empty());
    }

    #[test]
    fn end_call_hangs_up_only_once_the_goodbye_played() {
        let mut h = Harness::new();
        h.agent_item("r1", "a1");
        h.audio(0, "r1", "a1", 800);
        let actions = h.ai(
            1,
            ServerEvent::FunctionCallArgumentsDone {
                response_id: "r1".into(),
                item_id: "f1".into(),
                call_id: "c1".into(),
                name: "end_call".into(),
                arguments: "{}".into(),
            },
        );
        assert_eq!(
            actions,
            vec![Action::Ai(ToAi::FunctionOutput {
                call_id: "c1".into(),
                output: "{\"ok\":true}".into()
            })]
        );
        assert!(h.ai(2, transcript_done("a1", "Goodbye.")).is_empty());
        assert!(h.ai(3, done("r1")).is_empty(), "the goodbye is still playing");
        let callee = B64.encode([0xFFu8; 160]);
        h.conv.on_callee_audio(&callee, h.at(50), &mut h.out);
        assert_eq!(kinds(&h.take()), ["append"], "still playing");
        assert_eq!(
            h.mark(100, 1),
            vec![
                line(Agent, "Goodbye.", false),
                Action::EndReason("the agent ended the call".into()),
                Action::HangUp {
                    failure: "hang-up after end_call failed"
                },
                Action::End(Outcome::AgentHungUp),
            ]
        );
    }

    fn transfer_call(call_id: &str, number: &str) -> ServerEvent {
        ServerEvent::FunctionCallArgumentsDone {
            response_id: "r1".into(),
            item_id: format!("fc_{call_id}"),
            call_id: call_id.into(),
            name: "transfer_call".into(),
            arguments: format!(r#"{{"number":"{number}"}}"#),
        }
    }

    #[test]
    fn transfer_call_transfers_only_once_the_hand_off_sentence_played() {
        let mut h = Harness::new();
        h.conv.transfer_targets = vec!["+15550120".into()];
        h.agent_item("r1", "a1");
        h.audio(0, "r1", "a1", 800);
        assert!(
            h.ai(1, transfer_call("c1", "+15550120")).is_empty(),
            "no output: the session closes"
        );
        assert!(h.ai(2, transcript_done("a1", "Let me connect you.")).is_empty());
        assert!(h.ai(3, done("r1")).is_empty(), "the hand-off sentence is still playing");
        assert_eq!(
            h.mark(100, 1),
            vec![
                line(Agent, "Let me connect you.", false),
                Action::Transfer {
                    tool_call_id: "c1".into(),
                    number: "+15550120".into()
                },
            ]
        );
        // The shell transferred: the conversation is over.
        h.conv.on_transferred(&mut h.out);
        assert_eq!(h.take(), vec![Action::End(Outcome::Transferred)]);
    }

    #[test]
    fn transfer_call_to_another_number_or_a_refused_transfer_goes_back_to_the_agent() {
        let mut h = Harness::new();
        h.conv.transfer_targets = vec!["+15550120".into()];
        let actions = h.ai(1, transfer_call("c1", "+19999999999"));
        let [
            Action::Ai(ToAi::FunctionOutput { call_id, output }),
            Action::Ai(ToAi::ResponseCreate),
        ] = actions.as_slice()
        else {
            panic!("{actions:?}");
        };
        assert_eq!(call_id, "c1");
        assert!(output.contains("+15550120"), "{output}");
        // A transfer the shell could not start: the AI hears why and answers.
        // Nothing is playing: the transfer starts at once.
        let actions = h.ai(2, transfer_call("c2", "+15550120"));
        assert!(matches!(&actions[..], [Action::Transfer { .. }]), "{actions:?}");
        h.conv.on_transfer_failed("c2".into(), "the call is ending", &mut h.out);
        let actions = h.take();
        assert!(
            matches!(&actions[0], Action::Ai(ToAi::FunctionOutput { call_id, output }) if call_id == "c2" && output.contains("the call is ending")),
            "{actions:?}"
        );
        assert_eq!(actions[1], Action::Ai(ToAi::ResponseCreate));
    }

    #[test]
    fn without_targets_transfer_call_is_an_unknown_tool() {
        let mut h = Harness::new();
        let actions = h.ai(1, transfer_call("c1", "+15550120"));
        assert!(
            matches!(&actions[..], [Action::Ai(ToAi::FunctionOutput { output, .. })] if output.contains("unknown tool")),
            "{actions:?}"
        );
    }

    fn tool_call(call_id: &str, name: &str) -> ServerEvent {
        ServerEvent::FunctionCallArgumentsDone {
            response_id: "rt".into(),
            item_id: format!("fc_{call_id}"),
            call_id: call_id.into(),
            name: name.into(),
            arguments: r#"{"order_id":"A1"}"#.into(),
        }
    }

    fn answer(call_id: &str, output: &str) -> crate::call::tools::ToolAnswer {
        crate::call::tools::ToolAnswer {
            tool_call_id: call_id.into(),
            output: output.into(),
            outcome: crate::call::tools::ToolOutcome::Answered,
        }
    }

    fn with_tools() -> Harness {
        let mut h = Harness::new();
        let metrics: &'static Metrics = Box::leak(Box::default());
        h.conv = Conversation::new(CallId::new(), "MZ1".into(), AudioMode::Passthrough, LIMIT, 0, metrics)
            .with_tools([("order_status".to_string(), false), ("refund".to_string(), true)]);
        h
    }

    fn on_answer(h: &mut Harness, ms: u64, a: crate::call::tools::ToolAnswer) -> Vec<Action> {
        let now = h.at(ms);
        h.conv.on_tool_answer(a, now, &mut h.out);
        h.take()
    }

    #[test]
    fn parallel_tool_calls_are_answered_then_the_agent_speaks_once() {
        let mut h = with_tools();
        h.ai(0, created("rt"));
        let first = h.ai(10, tool_call("c1", "order_status"));
        assert_eq!(
            first,
            vec![
                Action::StartTool {
                    tool_call_id: "c1".into(),
                    name: "order_status".into(),
                    arguments: r#"{"order_id":"A1"}"#.into(),
                },
                Action::Publish(EventKind::ToolCall {
                    tool_call_id: "c1".into(),
                    name: "order_status".into(),
                    arguments: r#"{"order_id":"A1"}"#.into(),
                    by_url: false,
                }),
            ]
        );
        let second = h.ai(11, tool_call("c2", "refund"));
        assert!(matches!(
            &second[1],
            Action::Publish(EventKind::ToolCall { by_url: true, .. })
        ));
        assert!(
            h.ai(12, tool_call("c2", "refund")).is_empty(),
            "a repeated announcement is one call"
        );
        assert!(h.ai(20, done("rt")).is_empty());
        // The first output goes to the AI; the agent waits for the second.
        let a1 = on_answer(&mut h, 500, answer("c1", "{\"status\":\"shipped\"}"));
        assert_eq!(
            a1,
            vec![
                Action::Publish(EventKind::ToolResult {
                    tool_call_id: "c1".into(),
                    name: "order_status".into(),
                    output: "{\"status\":\"shipped\"}".into(),
                    outcome: crate::call::tools::ToolOutcome::Answered,
                    wait_ms: 490,
                }),
                Action::Ai(ToAi::FunctionOutput {
                    call_id: "c1".into(),
                    output: "{\"status\":\"shipped\"}".into(),
                }),
            ]
        );
        let a2 = on_answer(&mut h, 700, answer("c2", "{}"));
        assert_eq!(kinds(&a2), ["publish", "ai", "ai"]);
        assert_eq!(a2[2], Action::Ai(ToAi::ResponseCreate));
        // An answer for a call not pending any more is dropped.
        assert!(on_answer(&mut h, 800, answer("c2", "{}")).is_empty());
    }

    #[test]
    fn a_barge_in_while_a_tool_is_pending_lets_the_callees_response_run_first() {
        let mut h = with_tools();
        h.ai(0, created("rt"));
        h.ai(1, tool_call("c1", "order_status"));
        h.ai(2, done("rt"));
        // The agent is saying something else when the callee barges in; the
        // service cancels that response and starts one for the callee.
        h.agent_item("r2", "a2");
        h.audio(10, "r2", "a2", 800);
        let cut = h.ai(20, speech_started());
        assert_eq!(kinds(&cut)[0], "clear");
        h.ai(30, created("r3"));
        // The output arrives while that response runs: no response.create yet.
        let a = on_answer(&mut h, 40, answer("c1", "{}"));
        assert_eq!(kinds(&a), ["publish", "ai"], "{a:?}");
        // Once it is done, the agent speaks to the tool's output.
        let after = h.ai(50, done("r3"));
        assert_eq!(after, vec![Action::Ai(ToAi::ResponseCreate)]);
    }

    #[test]
    fn a_reconnect_restores_pending_tool_calls_and_waits_for_their_outputs() {
        let mut h = with_tools();
        h.ai(0, created("rt"));
        h.ai(1, tool_call("c1", "order_status"));
        h.ai(2, done("rt"));
        h.conv.on_ai_lost(AiLoss::Dropped, &mut h.out);
        h.take();
        h.conv.on_reconnected(Duration::from_millis(100), &mut h.out);
        let actions = h.take();
        assert!(actions.contains(&Action::Ai(ToAi::RestoreFunctionCall {
            call_id: "c1".into(),
            name: "order_status".into(),
            arguments: r#"{"order_id":"A1"}"#.into(),
        })));
        assert!(
            !actions.contains(&Action::Ai(ToAi::ResponseCreate)),
            "the agent waits for the output: {actions:?}"
        );
        let a = on_answer(&mut h, 300, answer("c1", "{}"));
        assert_eq!(a.last(), Some(&Action::Ai(ToAi::ResponseCreate)));
    }

    #[test]
    fn tools_pending_at_the_end_are_recorded_with_what_came_in_or_cancelled() {
        let mut h = with_tools();
        h.ai(1, tool_call("c1", "order_status"));
        h.ai(1, tool_call("c2", "order_status"));
        let now = h.at(101);
        h.conv.cancel_tools(now, vec![answer("c2", "{}")], &mut h.out);
        let outcomes: Vec<_> = h
            .take()
            .into_iter()
            .map(|a| match a {
                Action::Publish(EventKind::ToolResult {
                    tool_call_id,
                    outcome,
                    wait_ms,
                    ..
                }) => (tool_call_id, outcome, wait_ms),
                other => panic!("{other:?}"),
            })
            .collect();
        use crate::call::tools::ToolOutcome::{Answered, Canceled};
        assert_eq!(outcomes, [("c1".into(), Canceled, 100), ("c2".into(), Answered, 100)]);
    }

    #[test]
    fn turn_metrics_leave_out_the_time_spent_waiting_on_a_tool() {
        let mut h = with_tools();
        h.ai(0, speech_stopped());
        h.ai(10, created("rt"));
        h.ai(100, tool_call("c1", "order_status"));
        h.ai(110, done("rt"));
        // The tool takes 2 s.
        on_answer(&mut h, 2100, answer("c1", "{}"));
        h.agent_item("r2", "a2");
        h.audio(2200, "r2", "a2", 800);
        assert_eq!(
            h.mark(2300, 1),
            vec![Action::Publish(EventKind::Turn {
                turn_index: 0,
                first_audio_sent_ms: 200,
                first_audio_heard_ms: 300,
            })]
        );
    }

    #[test]
    fn an_unknown_tool_gets_an_error_and_the_call_goes_on() {
        let mut h = Harness::new();
        let actions = h.ai(
            0,
            ServerEvent::FunctionCallArgumentsDone {
                response_id: "r1".into(),
                item_id: "f1".into(),
                call_id: "c1".into(),
                name: "transfer\"".into(),
                arguments: "{}".into(),
            },
        );
        assert_eq!(
            actions,
            vec![Action::Ai(ToAi::FunctionOutput {
                call_id: "c1".into(),
                output: "{\"error\":\"unknown tool transfer\"}".into()
            })]
        );
    }

    #[test]
    fn turns_time_the_first_audio_sent_and_heard() {
        let mut h = Harness::new();
        h.ai(0, speech_stopped());
        h.agent_item("r1", "a1");
        h.audio(150, "r1", "a1", 800);
        h.audio(160, "r1", "a1", 800);
        let turn = |index, sent, heard| {
            Action::Publish(EventKind::Turn {
                turn_index: index,
                first_audio_sent_ms: sent,
                first_audio_heard_ms: heard,
            })
        };
        assert_eq!(h.mark(400, 1), vec![turn(0, 150, 400)]);
        assert!(h.mark(500, 2).is_empty(), "one metric per turn");
        h.ai(1000, speech_stopped());
        h.agent_item("r2", "a2");
        h.audio(1100, "r2", "a2", 800);
        assert_eq!(h.mark(1250, 3), vec![turn(1, 100, 250)]);
        // A barge-in drops the turn being measured.
        h.ai(2000, speech_stopped());
        h.agent_item("r3", "a3");
        h.audio(2100, "r3", "a3", 800);
        h.ai(2150, speech_started());
        assert!(h.mark(2200, 4).is_empty());
    }

    #[test]
    fn transcripts_are_published_in_conversation_order() {
        let mut h = Harness::new();
        h.ai(
            0,
            ServerEvent::Committed {
                item_id: "u1".into(),
                previous_item_id: None,
            },
        );
        // The agent's answer is heard before the callee's words are transcribed.
        assert!(h.heard_line("r1", "a1", "Fine, thanks.").is_empty());
        assert_eq!(
            h.ai(
                0,
                ServerEvent::InputTranscriptionCompleted {
                    item_id: "u1".into(),
                    transcript: " How are you? ".into(),
                }
            ),
            vec![line(Callee, "How are you?", false), line(Agent, "Fine, thanks.", false)]
        );
    }

    #[test]
    fn a_failed_transcription_is_reported_and_does_not_hold_up_later_lines() {
        let mut h = Harness::new();
        h.ai(
            0,
            ServerEvent::Committed {
                item_id: "u1".into(),
                previous_item_id: None,
            },
        );
        h.heard_line("r1", "a1", "Sorry?");
        let actions = h.ai(
            0,
            ServerEvent::InputTranscriptionFailed {
                item_id: "u1".into(),
                error: "garbled".into(),
            },
        );
        assert_eq!(kinds(&actions), ["publish", "publish"]);
        assert!(
            matches!(&actions[0], Action::Publish(EventKind::Error { code, .. }) if code == "ai_transcription_failed")
        );
        assert_eq!(actions[1], line(Agent, "Sorry?", false));
    }

    #[test]
    fn a_lost_ai_is_reconnected_once_with_the_conversation_so_far() {
        let mut h = Harness::new();
        assert_eq!(
            h.heard_line("r1", "a1", "Hello, this is Contoso."),
            vec![line(Agent, "Hello, this is Contoso.", false)]
        );
        assert_eq!(h.callee_line("u1", "Hi."), vec![line(Callee, "Hi.", false)]);
        // The reply is cut by the drop after 50 of its 100 ms played.
        h.agent_item("r2", "a2");
        h.audio(200, "r2", "a2", 800);
        h.ai(200, transcript_done("a2", "Great to hear"));
        h.conv.on_ai_lost(AiLoss::Dropped, &mut h.out);
        assert_eq!(h.take(), vec![Action::Reconnect]);
        h.conv.on_reconnected(Duration::from_millis(150), &mut h.out);
        assert_eq!(
            h.take(),
            vec![
                // Nothing of the reply was acknowledged: no line for it.
                Action::Ai(ToAi::SessionUpdate),
                Action::Ai(ToAi::Restore {
                    role: "assistant",
                    text: "Hello, this is Contoso.".into()
                }),
                Action::Ai(ToAi::Restore {
                    role: "user",
                    text: "Hi.".into()
                }),
                // The callee spoke last: the agent owes an answer.
                Action::Ai(ToAi::ResponseCreate),
                Action::Publish(EventKind::Notice {
                    code: "ai_reconnected".into(),
                    message:
                        "the AI connection dropped; re-established in 150 ms with the conversation so far (2 turns)"
                            .into()
                }),
            ]
        );
        // Late marks of the old session still count what was heard.
        assert!(h.mark(300, 2).is_empty());
        // The second loss ends the call, with an apology.
        h.conv.on_ai_lost(AiLoss::Dropped, &mut h.out);
        assert_eq!(h.take(), vec![Action::End(Outcome::AiClosed)]);
        h.conv.wind_up(&Outcome::AiClosed, &mut h.out);
        let actions = h.take();
        assert!(
            matches!(&actions[0], Action::Publish(EventKind::Error { code, .. }) if code == "ai_disconnected"),
            "{actions:?}"
        );
        assert_eq!(
            actions[1..],
            [
                Action::EndReason("the AI failed: the AI connection dropped".into()),
                Action::Apologise
            ]
        );
    }

    #[test]
    fn an_ai_that_stops_reading_gets_the_reconnect_then_an_apology_naming_it() {
        let mut h = Harness::new();
        let cause = "the AI connection stopped taking data: nothing could be written to it for 5s".to_string();
        h.conv.on_ai_lost(AiLoss::Stalled(cause.clone()), &mut h.out);
        assert_eq!(h.take(), vec![Action::Reconnect]);
        h.conv.on_reconnected(Duration::from_millis(20), &mut h.out);
        let actions = h.take();
        let Some(Action::Publish(EventKind::Notice { message, .. })) = actions.last() else {
            panic!("{actions:?}");
        };
        assert!(message.starts_with(&cause), "{message}");
        // Nobody spoke yet: the agent starts again.
        assert!(actions.contains(&Action::Ai(ToAi::ResponseCreate)));
        h.conv.on_ai_lost(AiLoss::Stalled(cause.clone()), &mut h.out);
        assert_eq!(h.take(), vec![Action::End(Outcome::AiStalled(cause.clone()))]);
        h.conv.wind_up(&Outcome::AiStalled(cause.clone()), &mut h.out);
        assert_eq!(
            h.take(),
            vec![
                Action::Publish(EventKind::Error {
                    code: "ai_socket_error".into(),
                    message: format!("{cause}; apologising and hanging up"),
                }),
                Action::EndReason(format!("the AI failed: {cause}")),
                Action::Apologise,
            ]
        );
    }

    #[test]
    fn a_failed_reconnect_ends_with_the_loss_it_was_for() {
        let mut h = Harness::new();
        h.conv.on_ai_lost(AiLoss::Dropped, &mut h.out);
        h.conv.on_reconnect_failed(&mut h.out);
        assert_eq!(h.take(), vec![Action::Reconnect, Action::End(Outcome::AiClosed)]);
    }

    #[test]
    fn the_restored_agent_does_not_speak_again_after_its_own_line() {
        let mut h = Harness::new();
        h.heard_line("r1", "a1", "Hello.");
        h.conv.on_ai_lost(AiLoss::Dropped, &mut h.out);
        h.conv.on_reconnected(Duration::ZERO, &mut h.out);
        assert!(!h.take().contains(&Action::Ai(ToAi::ResponseCreate)));
    }

    #[test]
    fn fatal_ai_errors_end_the_call_with_an_apology_and_benign_ones_are_ignored() {
        let mut h = Harness::new();
        let error = |r#type: &str, code: &str| ServerEvent::Error {
            r#type: r#type.into(),
            code: Some(code.into()),
            message: "m".into(),
            param: None,
            event_id: None,
        };
        assert!(
            h.ai(0, error("invalid_request_error", "response_cancel_not_active"))
                .is_empty()
        );
        assert_eq!(
            kinds(&h.ai(0, error("invalid_request_error", "invalid_value"))),
            ["publish"]
        );
        let actions = h.ai(0, error("invalid_request_error", "session_expired"));
        assert_eq!(
            actions,
            vec![
                Action::Publish(EventKind::Error {
                    code: "ai_session_expired".into(),
                    message: "m".into()
                }),
                Action::End(Outcome::AiFatal)
            ]
        );
        h.conv.wind_up(&Outcome::AiFatal, &mut h.out);
        assert_eq!(
            h.take(),
            vec![
                Action::EndReason("the AI failed: the AI reported a fatal error".into()),
                Action::Apologise
            ]
        );
    }

    #[test]
    fn wind_up_publishes_what_was_heard_of_unfinished_lines() {
        let mut h = Harness::new();
        h.agent_item("r1", "a1");
        h.audio(0, "r1", "a1", 800);
        h.audio(0, "r1", "a1", 800);
        h.mark(100, 1);
        h.ai(100, transcript_done("a1", "one two three four"));
        // A callee line that is never transcribed does not hold it up.
        h.ai(
            150,
            ServerEvent::Committed {
                item_id: "u1".into(),
                previous_item_id: None,
            },
        );
        h.conv.on_cancel(true, &mut h.out);
        assert_eq!(h.take(), vec![Action::End(Outcome::ServerShutdown)]);
        h.conv.wind_up(&Outcome::ServerShutdown, &mut h.out);
        assert_eq!(h.take(), vec![line(Agent, "one two", true), Action::EndOnShutdown]);
    }

    #[test]
    fn twilio_ends() {
        let mut h = Harness::new();
        h.conv.on_stop(&mut h.out);
        h.conv.on_twilio_closed(&mut h.out);
        h.conv.on_cancel(false, &mut h.out);
        assert_eq!(
            h.take(),
            vec![
                Action::End(Outcome::TwilioStopped),
                Action::End(Outcome::TwilioClosed),
                Action::End(Outcome::Cancelled)
            ]
        );
        h.conv.on_twilio_write_failed("it stalled".into(), &mut h.out);
        assert_eq!(
            h.take(),
            vec![
                Action::EndReason("it stalled".into()),
                Action::Publish(EventKind::Error {
                    code: "media_socket_error".into(),
                    message: "it stalled".into()
                }),
                Action::End(Outcome::TwilioWriteFailed)
            ]
        );
        h.conv.wind_up(&Outcome::TwilioWriteFailed, &mut h.out);
        assert_eq!(
            h.take(),
            vec![Action::HangUp {
                failure: "hang-up after the media stream failed"
            }]
        );
        h.conv.on_dtmf("5".into(), &mut h.out);
        assert_eq!(h.take(), vec![Action::Publish(EventKind::Dtmf { digit: "5".into() })]);
    }

    #[test]
    fn an_endless_agent_transcript_stops_growing_at_the_stored_cap() {
        let mut h = Harness::new();
        h.agent_item("r1", "a1");
        let delta = "x".repeat(100);
        for _ in 0..10_000 {
            h.ai(
                0,
                ServerEvent::TranscriptDelta {
                    item_id: "a1".into(),
                    delta: delta.clone(),
                },
            );
        }
        let kept = h.conv.items["a1"].transcript.len();
        assert!(kept <= crate::call::payload_caps::TRANSCRIPT + delta.len(), "{kept}");
    }

    #[test]
    fn dtmf_is_one_key_or_malformed_and_not_stored() {
        let mut h = Harness::new();
        for key in ["0", "9", "*", "#", "A", "D"] {
            h.conv.on_dtmf(key.into(), &mut h.out);
            assert_eq!(h.take(), vec![Action::Publish(EventKind::Dtmf { digit: key.into() })]);
        }
        let long = "1".repeat(20 * 1024);
        for bad in ["", "12", "E", "a", "\u{0}", "١", long.as_str()] {
            h.conv.on_dtmf(bad.into(), &mut h.out);
        }
        // The first malformed message is reported once; none is stored as a key.
        let actions = h.take();
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert!(
            matches!(&actions[0], Action::Publish(EventKind::Error { code, message })
                if code == "media_malformed" && message.contains("DTMF")),
            "{actions:?}"
        );
        assert_eq!(h.conv.malformed(), 7);
    }
}
