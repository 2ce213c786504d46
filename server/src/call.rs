//! The call domain: ids, statuses, the record of a call and its events.
//! [`lifecycle`] decides how a call moves through its life, [`error`] holds
//! the codes clients see, and [`hub`] keeps the live calls, applies those
//! decisions and fans their events out to watchers.

pub mod error;
pub mod hub;
pub mod lifecycle;
pub mod template;
pub mod tools;

pub use error::{ERROR_DOMAIN, ErrorCode, ErrorReason, NoticeCode};

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Our id of a call: `call_` + a time-ordered UUIDv7 in hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CallId(String);

impl CallId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(format!("call_{}", uuid::Uuid::now_v7().simple()))
    }
    /// Accepts an id from outside if it has our shape (so a bad id is a clean
    /// NOT_FOUND / INVALID_ARGUMENT and never reaches SQL or a URL unchecked).
    pub fn parse(raw: &str) -> Option<Self> {
        let hex = raw.strip_prefix("call_")?;
        (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
            .then(|| Self(raw.to_string()))
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for CallId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The realtime AI that answers a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Azure AI Voice Live.
    VoiceLive,
    /// gpt-realtime on Azure OpenAI or OpenAI.
    GptRealtime,
}

impl Backend {
    /// Every backend, in the order clients list them.
    pub const ALL: [Backend; 2] = [Backend::VoiceLive, Backend::GptRealtime];

    /// Parses the `DEFAULT_BACKEND` / CLI spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "voice-live" | "voicelive" => Some(Self::VoiceLive),
            "gpt-realtime" | "gptrealtime" | "openai" => Some(Self::GptRealtime),
            _ => None,
        }
    }
    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VoiceLive => "voice-live",
            Self::GptRealtime => "gpt-realtime",
        }
    }
    /// The name people see (GetServerInfo publishes it, so clients need no
    /// list of their own).
    pub fn display_name(self) -> &'static str {
        match self {
            Self::VoiceLive => "Voice Live",
            Self::GptRealtime => "gpt-realtime",
        }
    }
}

/// Where a call is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// Stored and handed to the provider.
    Queued,
    /// The provider started dialling.
    Initiated,
    /// Ringing.
    Ringing,
    /// Answered.
    InProgress,
    /// Answered and ended normally.
    Completed,
    /// Busy line.
    Busy,
    /// Not answered.
    NoAnswer,
    /// Hung up by us before it was answered.
    Canceled,
    /// Could not be placed or broke down.
    Failed,
}

impl CallStatus {
    /// Terminal statuses are final.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Busy | Self::NoAnswer | Self::Canceled | Self::Failed
        )
    }

    /// Order of the life cycle; a status change may only move forward, because
    /// Twilio's callbacks can arrive out of order (protocols.md §2.1).
    pub fn rank(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Initiated => 1,
            Self::Ringing => 2,
            Self::InProgress => 3,
            _ => 4,
        }
    }

    /// Twilio's `CallStatus` spelling (status callbacks and the REST enum).
    pub fn from_twilio(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "initiated" => Self::Initiated,
            "ringing" => Self::Ringing,
            "in-progress" | "answered" => Self::InProgress,
            "completed" => Self::Completed,
            "busy" => Self::Busy,
            "no-answer" => Self::NoAnswer,
            "canceled" => Self::Canceled,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    /// Upper-case name as in the proto enum, without prefix (for logs).
    pub fn name(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Initiated => "INITIATED",
            Self::Ringing => "RINGING",
            Self::InProgress => "IN_PROGRESS",
            Self::Completed => "COMPLETED",
            Self::Busy => "BUSY",
            Self::NoAnswer => "NO_ANSWER",
            Self::Canceled => "CANCELED",
            Self::Failed => "FAILED",
        }
    }
}

/// Who spoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    /// The person called.
    Callee,
    /// The AI agent.
    Agent,
}

/// What a call does when an answering machine picks up (PlaceCall's
/// `voicemail`); [`lifecycle::amd`] decides from it and the detection result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoicemailMode {
    /// No detection: the agent speaks as soon as the call is answered.
    #[default]
    Off,
    /// Detect; hang up on a machine or a fax.
    HangUp,
    /// Detect; on a machine wait for the beep, leave the message, hang up.
    LeaveMessage,
}

/// PlaceCall's voicemail policy as stored with the call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Voicemail {
    /// What to do.
    pub mode: VoicemailMode,
    /// What the agent says on the machine (LeaveMessage), placeholders filled.
    #[serde(default)]
    pub message: String,
    /// A detection result was applied ([`lifecycle::amd`]: the first one wins).
    #[serde(default)]
    pub detected: bool,
}

/// What happened, as stored in the event log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The call's status changed.
    Status {
        /// New status.
        status: CallStatus,
        /// Why.
        detail: String,
    },
    /// A finished utterance.
    Transcript {
        /// Who spoke.
        speaker: Speaker,
        /// What was said (agent: what was heard).
        text: String,
        /// Cut short by a barge-in.
        interrupted: bool,
    },
    /// A fault.
    Error {
        /// Stable code.
        code: String,
        /// Explanation, no secrets.
        message: String,
    },
    /// A key press.
    Dtmf {
        /// The digit.
        digit: String,
    },
    /// Latency of one agent turn.
    Turn {
        /// Index of the agent turn.
        turn_index: u32,
        /// Callee's end of speech → first agent audio sent, ms.
        first_audio_sent_ms: u32,
        /// Callee's end of speech → first agent audio heard (mark ack), ms.
        first_audio_heard_ms: u32,
    },
    /// Informational.
    Notice {
        /// Stable code.
        code: String,
        /// Text.
        message: String,
    },
    /// Answering-machine detection said who answered.
    AnsweredBy {
        /// The provider's `AnsweredBy` (one of [`lifecycle::amd::ANSWERED_BY`]).
        answered_by: String,
        /// How long detection took, ms (0 when not reported).
        detection_ms: u32,
        /// What the agent does about it.
        action: String,
    },
    /// The agent called one of the call's tools.
    ToolCall {
        /// The AI's id of the call.
        tool_call_id: String,
        /// The tool.
        name: String,
        /// JSON arguments as the AI wrote them.
        arguments: String,
        /// The tool has a URL (the server asks it).
        by_url: bool,
    },
    /// A tool call's output, as given to the AI.
    ToolResult {
        /// The tool call.
        tool_call_id: String,
        /// The tool.
        name: String,
        /// What the AI received.
        output: String,
        /// How it was answered.
        outcome: tools::ToolOutcome,
        /// From the call to the output, ms.
        wait_ms: u32,
    },
    /// The call's recording started, ended or stopped early.
    Recording(RecordingInfo),
    /// A transfer started, or its outcome ([`lifecycle::transfer`]).
    Transfer(TransferInfo),
    /// The call's media moved to another bridge after its stream closed
    /// with the call live (its replica died or handed it over).
    Migrated {
        /// The replica that ran the bridge before (empty when unknown).
        from: String,
        /// The replica running it now.
        to: String,
        /// From the provider asking for a new stream to the new bridge's start, ms.
        gap_ms: u32,
    },
}

/// A number the agent may hand the call over to (PlaceCall's `transfer_targets`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferTarget {
    /// E.164.
    pub number: String,
    /// Who answers there, for the AI.
    pub description: String,
}

/// Where a transfer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// Redirected; the target is being dialled.
    Started,
    /// The target answered.
    Answered,
    /// The target's line was busy.
    Busy,
    /// The target did not answer in time.
    NoAnswer,
    /// The target could not be dialled, or the redirect was refused.
    Failed,
    /// The callee hung up while the target was dialled.
    Canceled,
}

/// Who asked for a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferBy {
    /// The agent's `transfer_call` tool.
    Agent,
    /// TransferCall.
    Operator,
}

/// A call's transfer as its events and record tell it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferInfo {
    /// The number dialled.
    pub target: String,
    /// Where it is.
    pub state: TransferState,
    /// Who asked.
    pub by: TransferBy,
    /// Readable detail (empty when none).
    #[serde(default)]
    pub reason: String,
}

/// Where a call's recording is (see [`crate::recording`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    /// Being written while the call runs.
    Recording,
    /// The call's media ended and the file is closed.
    Complete,
    /// Stopped early (`error` says why); what was written is kept.
    Failed,
    /// Deleted after `RECORDING_RETENTION`.
    Deleted,
}

/// A call's recording as the record and its events tell it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingInfo {
    /// Where it is.
    pub state: RecordingState,
    /// Why it stopped early (empty otherwise; no secrets).
    #[serde(default)]
    pub error: String,
    /// Audio written so far, ms.
    #[serde(default)]
    pub duration_ms: u64,
    /// A file exists for it (false when it could not even be created, or was deleted).
    #[serde(default)]
    pub file: bool,
}

impl RecordingInfo {
    /// The URL path the recording is fetched from (the HTTP route of
    /// [`crate::recording`]), when there is a file to fetch.
    pub fn url(&self, id: &CallId) -> Option<String> {
        self.file.then(|| format!("/recordings/{id}.wav"))
    }
}

impl EventKind {
    /// An error event with its stable code.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code: code.into(),
            message: message.into(),
        }
    }

    /// A notice with its stable code.
    pub fn notice(code: NoticeCode, message: impl Into<String>) -> Self {
        Self::Notice {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The event with every text capped (see [`payload_caps`]): what a peer
    /// sends (a transcript, an AI error message, a key press) cannot make a
    /// stored event, or a WatchCall message, arbitrarily large.
    pub fn capped(mut self) -> Self {
        use payload_caps::{CODE, DETAIL, DIGIT, MESSAGE, TOOL_ARGUMENTS, TOOL_OUTPUT, TRANSCRIPT, cap};
        match &mut self {
            Self::Status { detail, .. } => cap(detail, DETAIL),
            Self::Transcript { text, .. } => cap(text, TRANSCRIPT),
            Self::Error { code, message } | Self::Notice { code, message } => {
                cap(code, CODE);
                cap(message, MESSAGE);
            }
            Self::Dtmf { digit } => cap(digit, DIGIT),
            Self::Recording(info) => cap(&mut info.error, MESSAGE),
            Self::Transfer(info) => {
                cap(&mut info.target, CODE);
                cap(&mut info.reason, DETAIL);
            }
            Self::AnsweredBy {
                answered_by, action, ..
            } => {
                cap(answered_by, CODE);
                cap(action, DETAIL);
            }
            Self::Turn { .. } => {}
            Self::Migrated { from, to, .. } => {
                cap(from, CODE);
                cap(to, CODE);
            }
            Self::ToolCall {
                tool_call_id,
                name,
                arguments,
                ..
            } => {
                cap(tool_call_id, CODE);
                cap(name, CODE);
                cap(arguments, TOOL_ARGUMENTS);
            }
            Self::ToolResult {
                tool_call_id,
                name,
                output,
                ..
            } => {
                cap(tool_call_id, CODE);
                cap(name, CODE);
                cap(output, TOOL_OUTPUT);
            }
        }
        self
    }

    /// The terminal status this event sets, if any.
    pub fn terminal_status(&self) -> Option<CallStatus> {
        match self {
            Self::Status { status, .. } if status.is_terminal() => Some(*status),
            _ => None,
        }
    }
}

/// Size caps (bytes of UTF-8) of the texts stored with a call, applied where
/// events are stamped ([`crate::call::hub`]), so nothing a peer sends is
/// stored or streamed beyond them. A capped text ends with [`TRUNCATED`](payload_caps::TRUNCATED).
pub mod payload_caps {
    /// A transcript (one utterance: a minute of speech is ~1 KiB).
    pub const TRANSCRIPT: usize = 8 * 1024;
    /// The message of an error or a notice.
    pub const MESSAGE: usize = 2 * 1024;
    /// A status event's detail and the record's end reason.
    pub const DETAIL: usize = 1024;
    /// The code of an error or a notice (ours, or a provider's).
    pub const CODE: usize = 64;
    /// A DTMF key (the bridge already refuses anything but one key).
    pub const DIGIT: usize = 8;
    /// A tool call's arguments as the AI wrote them.
    pub const TOOL_ARGUMENTS: usize = 16 * 1024;
    /// A tool call's output (SubmitToolResult and the URL's body are refused beyond it).
    pub const TOOL_OUTPUT: usize = 64 * 1024;
    /// Appended to a capped text (counted within the cap).
    pub const TRUNCATED: &str = "…[truncated]";

    /// Caps `text` at `max` bytes, cut at a character boundary, marked.
    pub fn cap(text: &mut String, max: usize) {
        if text.len() <= max {
            return;
        }
        // Too small a cap for the marker: cut only.
        let marker = if max >= TRUNCATED.len() { TRUNCATED } else { "" };
        let mut end = max - marker.len();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(marker);
    }
}

/// One entry of a call's append-only log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallEvent {
    /// 1-based, gapless per call.
    pub sequence: u64,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// What happened.
    pub kind: EventKind,
}

/// The stored record of a call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Our id.
    pub call_id: CallId,
    /// Number called.
    pub to: String,
    /// Caller id.
    pub from: String,
    /// AI backend.
    pub backend: Backend,
    /// Current status.
    pub status: CallStatus,
    /// Provider id (Twilio CallSid); empty until known.
    pub provider_call_id: String,
    /// Labels from PlaceCall.
    pub metadata: BTreeMap<String, String>,
    /// When stored.
    pub created_at: DateTime<Utc>,
    /// When answered.
    pub answered_at: Option<DateTime<Utc>>,
    /// When ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Went to the emulator.
    pub emulated: bool,
    /// Why it ended.
    pub end_reason: String,
    /// Agent instructions.
    pub instructions: String,
    /// Agent voice.
    pub voice: String,
    /// Greeting spoken before the AI joins (empty = none).
    pub greeting: String,
    /// Longest answered duration, seconds.
    pub max_duration_secs: u64,
    /// Provider-reported answered duration, seconds.
    pub duration_seconds: u32,
    /// Provider's answering-machine detection result.
    pub answered_by: String,
    /// Provider's error code of a failure.
    pub provider_error_code: String,
    /// Median turn latency (first audio sent), ms.
    pub turn_latency_p50_ms: u32,
    /// 95th percentile turn latency, ms.
    pub turn_latency_p95_ms: u32,
    /// Number of events (= last sequence).
    pub event_count: u64,
    /// Per-call secret passed to the media stream as a `<Parameter>`
    /// (protocols.md §3.3: defence in depth beside the signature). Never sent to clients.
    pub stream_secret: String,
    /// Highest Twilio `SequenceNumber` applied, to drop stale callbacks.
    pub last_provider_sequence: Option<u64>,
    /// `first_audio_sent_ms` of every turn so far (for the percentiles).
    #[serde(default)]
    pub turn_latencies_ms: Vec<u32>,
    /// Whether the call is recorded (PlaceCall `record`, else `RECORD_CALLS`).
    #[serde(default)]
    pub record: bool,
    /// Its recording, once one was started.
    #[serde(default)]
    pub recording: Option<RecordingInfo>,
    /// The tools given to PlaceCall (records stored before tools existed have none).
    #[serde(default)]
    pub tools: Vec<tools::Tool>,
    /// How long a tool call waits for its answer, ms (0 in records older than tools: the default).
    #[serde(default)]
    pub tool_timeout_ms: u64,
    /// PlaceCall's voicemail policy (answering-machine detection).
    #[serde(default)]
    pub voicemail: Voicemail,
    /// Where the call's outcome webhooks go: `WEBHOOK_URL` as it was when
    /// the call was placed, then PlaceCall's `webhook_url` (empty: none).
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// PlaceCall's transfer targets (the agent's `transfer_call` tool offers them).
    #[serde(default)]
    pub transfer_targets: Vec<TransferTarget>,
    /// The call's transfer, once one started (its latest state).
    #[serde(default)]
    pub transfer: Option<TransferInfo>,
    /// How many times the call's media stream was resumed after its socket
    /// closed with the call live (issue #17). Each resume bumps it and frees
    /// the media claim in the same commit ([`crate::store::Store::update`]);
    /// a bridge writes only while the record still has the generation it
    /// started with, so a late bridge of an older stream cannot write over
    /// the new one.
    #[serde(default)]
    pub stream_generation: u64,
    /// A resumed stream that has not started yet: who ran the stream before
    /// and when the provider asked for the new one.
    #[serde(default)]
    pub resuming: Option<Resuming>,
}

/// A media stream resumed after its socket closed (see [`CallRecord::resuming`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resuming {
    /// The replica that held the call's media claim (empty when none did).
    pub from: String,
    /// When the provider asked for the new stream (the old one had closed).
    pub since: DateTime<Utc>,
}

#[cfg(test)]
impl CallRecord {
    /// A queued Voice Live call to a test number with empty texts: the one
    /// fixture the unit tests start from (they set what they test with `..`).
    pub(crate) fn for_tests() -> Self {
        CallRecord {
            call_id: CallId::new(),
            to: "+14155551212".into(),
            from: "+15005550006".into(),
            backend: Backend::VoiceLive,
            status: CallStatus::Queued,
            provider_call_id: String::new(),
            metadata: Default::default(),
            created_at: Utc::now(),
            answered_at: None,
            ended_at: None,
            emulated: false,
            end_reason: String::new(),
            instructions: String::new(),
            voice: String::new(),
            greeting: String::new(),
            max_duration_secs: 600,
            duration_seconds: 0,
            answered_by: String::new(),
            provider_error_code: String::new(),
            turn_latency_p50_ms: 0,
            turn_latency_p95_ms: 0,
            event_count: 0,
            stream_secret: "s".into(),
            last_provider_sequence: None,
            turn_latencies_ms: vec![],
            record: false,
            recording: None,
            tools: vec![],
            tool_timeout_ms: 0,
            voicemail: Voicemail::default(),
            webhooks: vec![],
            transfer_targets: vec![],
            transfer: None,
            stream_generation: 0,
            resuming: None,
        }
    }
}

impl CallRecord {
    /// Whether `sid` names another provider call than this one: a request
    /// carrying it is not this call's (before the provider id is known,
    /// nothing is).
    pub fn is_another_calls_sid(&self, sid: &str) -> bool {
        !self.provider_call_id.is_empty() && sid != self.provider_call_id
    }

    /// Applies an event's effect on the record (status, timestamps, metrics);
    /// the hub calls this before storing the event with the record.
    pub fn apply(&mut self, kind: &EventKind, at: DateTime<Utc>) {
        self.event_count += 1;
        match kind {
            EventKind::Status { status, detail } => {
                self.status = *status;
                if *status == CallStatus::InProgress && self.answered_at.is_none() {
                    self.answered_at = Some(at);
                }
                if status.is_terminal() {
                    self.ended_at = Some(at);
                    if detail.is_empty() {
                        lifecycle::note_end_reason(self, &lifecycle::default_end_reason(*status));
                    } else {
                        lifecycle::note_end_reason(self, detail);
                    }
                }
            }
            EventKind::Turn {
                first_audio_sent_ms, ..
            } => {
                self.turn_latencies_ms.push(*first_audio_sent_ms);
                let mut sorted = self.turn_latencies_ms.clone();
                sorted.sort_unstable();
                self.turn_latency_p50_ms = percentile(&sorted, 50);
                self.turn_latency_p95_ms = percentile(&sorted, 95);
            }
            EventKind::Recording(info) => self.recording = Some(info.clone()),
            EventKind::Transfer(info) => self.transfer = Some(info.clone()),
            EventKind::AnsweredBy { answered_by, .. } => {
                self.answered_by = answered_by.clone();
                self.voicemail.detected = true;
            }
            _ => {}
        }
    }
}

/// Nearest-rank percentile of a sorted slice (0 when empty).
pub fn percentile(sorted: &[u32], p: u32) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p as usize * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_round_trip_and_reject_garbage() {
        let id = CallId::new();
        assert_eq!(CallId::parse(id.as_str()), Some(id.clone()));
        assert!(CallId::parse("call_x").is_none());
        assert!(CallId::parse("'; drop table calls; --").is_none());
        assert!(CallId::new() > id || CallId::new() != id);
    }

    #[test]
    fn status_rank_orders_the_life_cycle() {
        assert!(CallStatus::Queued.rank() < CallStatus::Ringing.rank());
        assert!(CallStatus::Ringing.rank() < CallStatus::InProgress.rank());
        assert!(CallStatus::InProgress.rank() < CallStatus::Completed.rank());
        assert!(CallStatus::Busy.is_terminal() && !CallStatus::Ringing.is_terminal());
        assert_eq!(CallStatus::from_twilio("no-answer"), Some(CallStatus::NoAnswer));
        assert_eq!(CallStatus::from_twilio("bogus"), None);
    }

    #[test]
    fn stored_texts_are_capped_at_a_char_boundary_with_a_marker() {
        use payload_caps::{MESSAGE, TRANSCRIPT, TRUNCATED};
        let short = EventKind::Transcript {
            speaker: Speaker::Callee,
            text: "hello".into(),
            interrupted: false,
        };
        assert_eq!(short.clone().capped(), short);
        let EventKind::Transcript { text, .. } = (EventKind::Transcript {
            speaker: Speaker::Agent,
            text: "é".repeat(TRANSCRIPT),
            interrupted: false,
        })
        .capped() else {
            panic!()
        };
        assert!(
            text.len() <= TRANSCRIPT && text.len() > TRANSCRIPT - 16,
            "{}",
            text.len()
        );
        assert!(text.ends_with(TRUNCATED));
        let EventKind::Error { code, message } = EventKind::Error {
            code: "x".repeat(1000),
            message: "m".repeat(1 << 20),
        }
        .capped() else {
            panic!()
        };
        assert_eq!((code.len(), message.len()), (payload_caps::CODE, MESSAGE));
    }

    #[test]
    fn percentiles() {
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[7], 95), 7);
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 95), 95);
    }
}
