//! What happened on an emulated call, for tests and logs: every request the
//! emulator made to our server, every message our server sent on the media
//! stream, and what the callee heard and said.

use std::collections::BTreeMap;

use super::Scenario;

/// Everything observed on one emulated call (a snapshot; see
/// `TwilioEmulatorHandle::call`).
#[derive(Clone, Debug, Default)]
pub struct EmulatedCallReport {
    /// CA… id.
    pub sid: String,
    /// Called number.
    pub to: String,
    /// Caller id.
    pub from: String,
    /// How the callee behaves.
    pub scenario: Scenario,
    /// Current REST status (`queued`, `ringing`, `in-progress`, or terminal).
    pub status: String,
    /// Why the call ended, once it has.
    pub end_cause: Option<EndCause>,
    /// True once the call has ended, its terminal callback was posted and
    /// every socket is closed.
    pub finished: bool,
    /// Status callbacks, in the order posted.
    pub callbacks: Vec<PostedCallback>,
    /// TwiML requests to our server (the `Url` at answer, redirects).
    pub twiml_fetches: Vec<TwimlFetch>,
    /// Inline TwiML run (the create's or an update's `Twiml`).
    pub inline_twiml: Vec<String>,
    /// Texts of the `<Say>` verbs executed, in order.
    pub said: Vec<String>,
    /// Form fields of every REST update of this call.
    pub updates: Vec<Vec<(String, String)>>,
    /// Media streams (one per `<Connect><Stream>` executed).
    pub streams: Vec<StreamReport>,
    /// Problems seen (TwiML errors, unreachable URLs), with Twilio's code where one exists.
    pub errors: Vec<String>,
    /// The W3C `traceparent` header of the create request, if it had one.
    pub create_traceparent: Option<String>,
    /// `<Dial>`s run (transfers), in order.
    pub dials: Vec<DialReport>,
    /// Asynchronous answering-machine detection results posted to
    /// `AsyncAmdStatusCallback` (`status` holds the `AnsweredBy` value).
    pub amd_callbacks: Vec<PostedCallback>,
}

impl EmulatedCallReport {
    /// `CallStatus` of every posted callback, in order.
    pub fn callback_statuses(&self) -> Vec<&str> {
        self.callbacks.iter().map(|c| c.status.as_str()).collect()
    }

    /// The last media stream, if any.
    pub fn stream(&self) -> Option<&StreamReport> {
        self.streams.last()
    }
}

/// Why an emulated call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndCause {
    /// Our server sent `Status=completed` (or `canceled` before the answer).
    RestUpdate,
    /// The callee hung up after its script (scenario +15550105).
    CalleeHungUp,
    /// Nothing happened for `idle_hangup`; the callee hung up.
    CalleeIdle,
    /// The create request's `TimeLimit` was reached.
    TimeLimit,
    /// A TwiML `<Hangup/>`.
    TwimlHangup,
    /// The TwiML ran out of verbs (e.g. after our server closed the stream).
    TwimlEnded,
    /// The TwiML could not be fetched or parsed (Twilio code and text).
    ApplicationError(String),
    /// The line was busy.
    Busy,
    /// Nobody answered before the ring timeout.
    NoAnswer,
    /// The call could not be connected.
    Failed,
    /// The emulator shut down.
    Shutdown,
}

/// One status callback posted to our server.
#[derive(Clone, Debug)]
pub struct PostedCallback {
    /// `CallStatus` sent.
    pub status: String,
    /// `SequenceNumber` sent.
    pub sequence_number: u32,
    /// URL requested (for GET it includes the params).
    pub url: String,
    /// `POST` or `GET`.
    pub method: String,
    /// The form params.
    pub params: Vec<(String, String)>,
    /// `X-Twilio-Signature` sent.
    pub signature: String,
    /// HTTP status our server answered, or `None` if the request failed.
    pub response_status: Option<u16>,
    /// Why the request failed.
    pub error: Option<String>,
}

/// One `<Dial>` the call ran.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DialReport {
    /// The number dialled.
    pub number: String,
    /// The caller id it was dialled with (the call's `From` when the verb set none).
    pub caller_id: String,
    /// The verb's `timeout`, seconds.
    pub timeout: u32,
    /// `DialCallStatus`, once the dial is over (empty before).
    pub status: String,
    /// How long the dialled party talked, seconds (`DialCallDuration`).
    pub duration_secs: u64,
}

/// One TwiML request to our server.
#[derive(Clone, Debug)]
pub struct TwimlFetch {
    /// URL requested.
    pub url: String,
    /// `POST` or `GET`.
    pub method: String,
    /// The form params.
    pub params: Vec<(String, String)>,
    /// HTTP status our server answered.
    pub response_status: Option<u16>,
    /// The TwiML returned.
    pub body: Option<String>,
    /// Why it could not be used.
    pub error: Option<String>,
}

/// One media stream (`<Connect><Stream>`), from the callee's side. Times are
/// milliseconds of stream time (20 ms per media frame since `start`).
#[derive(Clone, Debug, Default)]
pub struct StreamReport {
    /// The WebSocket URL.
    pub url: String,
    /// `x-twilio-signature` sent on the upgrade.
    pub upgrade_signature: String,
    /// Why the WebSocket could not be opened (Twilio 319xx code and text).
    pub connect_error: Option<String>,
    /// MZ… id.
    pub stream_sid: String,
    /// `<Parameter>`s, sent as `start.customParameters`.
    pub custom_parameters: BTreeMap<String, String>,
    /// Every message our server sent, in order (media summarised).
    pub server_messages: Vec<ServerMessage>,
    /// Messages that were not valid Media Streams JSON (truncated).
    pub malformed: Vec<String>,
    /// Messages naming another stream (ignored, as Twilio would).
    pub wrong_stream_sid: u32,
    /// What the callee heard: the agent's audio as played, μ-law.
    pub heard: Vec<HeardAudio>,
    /// Bytes of agent audio received.
    pub audio_received_bytes: u64,
    /// Bytes of agent audio dropped by `clear`.
    pub audio_cleared_bytes: u64,
    /// Marks echoed back, in order.
    pub marks_echoed: Vec<MarkEcho>,
    /// Times of `clear` messages.
    pub clears_ms: Vec<u64>,
    /// What the callee said.
    pub callee_lines: Vec<CalleeUtterance>,
    /// DTMF digits sent.
    pub dtmf_sent: Vec<String>,
    /// Inbound `media` messages sent.
    pub media_frames_sent: u64,
    /// How the stream ended.
    pub ended: Option<StreamEnd>,
    /// An answering machine (scenario `machine`): stream time its greeting's
    /// beep ended, ms; what it records is what was heard after it.
    pub beep_ended_ms: Option<u64>,
    /// The answering-machine detection result reported, and when (stream ms).
    pub amd_result: Option<(String, u64)>,
}

impl StreamReport {
    /// All heard audio concatenated.
    pub fn heard_bytes(&self) -> Vec<u8> {
        self.heard.iter().flat_map(|h| h.ulaw.iter().copied()).collect()
    }

    /// Names of the marks echoed, in order.
    pub fn echoed_mark_names(&self) -> Vec<&str> {
        self.marks_echoed.iter().map(|m| m.name.as_str()).collect()
    }
}

/// A message our server sent on the media stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    /// Audio of `bytes` μ-law bytes.
    Media {
        /// Stream time of arrival.
        at_ms: u64,
        /// Decoded length.
        bytes: usize,
    },
    /// A mark.
    Mark {
        /// Stream time of arrival.
        at_ms: u64,
        /// Its name.
        name: String,
    },
    /// A clear.
    Clear {
        /// Stream time of arrival.
        at_ms: u64,
    },
    /// Valid JSON with an unknown event.
    Other {
        /// Stream time of arrival.
        at_ms: u64,
        /// The text (truncated).
        text: String,
    },
}

/// A stretch of agent audio the callee heard without a gap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeardAudio {
    /// Stream time the stretch started playing.
    pub at_ms: u64,
    /// The μ-law bytes.
    pub ulaw: Vec<u8>,
}

/// A mark echoed back to our server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkEcho {
    /// Its name.
    pub name: String,
    /// Stream time it was echoed.
    pub at_ms: u64,
    /// Agent audio played (bytes) when it was echoed: for a mark that was not
    /// cleared, every byte sent before it.
    pub played_bytes: u64,
    /// Echoed because of a `clear`, not because its audio played.
    pub cleared: bool,
}

/// One line the callee said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalleeUtterance {
    /// Index into `CALLEE_LINES`.
    pub line: usize,
    /// Its text.
    pub text: String,
    /// Stream time it started.
    pub started_ms: u64,
    /// Stream time it ended (`None` while speaking or if cut off).
    pub ended_ms: Option<u64>,
    /// Started while the agent was still talking (barge-in).
    pub barged_in: bool,
}

/// How a media stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// Our server closed the WebSocket (the TwiML continues after `</Connect>`).
    ServerClosed,
    /// The emulator sent `stop` and closed it, because the call ended or was redirected.
    Stopped,
    /// It never opened.
    ConnectFailed,
}
