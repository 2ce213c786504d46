//! The life cycle of a call, as pure decisions: given the record and what
//! happened, how the record changes and which events describe the change.
//! No I/O here: the [`crate::call::hub`] applies the decision (commits the
//! record with the events, then broadcasts them), and the edges (HTTP, gRPC,
//! the media bridge) only translate what they received into these operations.
//!
//! The rules, in one place:
//! - statuses only move forward along [`CallStatus::rank`], and a terminal
//!   status is final;
//! - the provider's status callbacks arrive in any order (protocols.md §2.1):
//!   a duplicate or older `SequenceNumber` changes no status, but data that
//!   only grows (duration, answering-machine result, error code) is kept even
//!   from a late callback; a callback for another CallSid changes nothing;
//! - a call has exactly one end reason: the first one recorded
//!   ([`note_end_reason`]) wins.

use crate::call::{Backend, CallRecord, CallStatus, ErrorCode, EventKind, RecordingInfo};

pub mod amd;
pub mod transfer;

/// The end reason of a call hung up through the API.
pub const HANG_UP_REASON: &str = "hung up via HangUpCall";
/// The end reason of a call found live when the server started again, before
/// the provider had it (nothing to hang up).
pub const RESTART_REASON: &str = "the server restarted while the call was live";
/// The end reason of a call found live or ringing when the server started
/// again, hung up with the provider (nobody serves its media any more).
pub const RESTART_HUNG_UP_REASON: &str = "the server restarted while the call was live; hung up with the provider";
/// Like [`RESTART_HUNG_UP_REASON`], when the provider refused the hang-up (an error event says why).
pub const RESTART_HANG_UP_FAILED_REASON: &str =
    "the server restarted while the call was live; hanging it up with the provider failed";
/// The end reason of a live call whose media bridge's replica stopped
/// renewing its lease (killed, hung, or cut off from the database): a
/// surviving replica ended it and hung it up with the provider (an error
/// event follows if the provider refused).
pub const TAKEOVER_HUNG_UP_REASON: &str = "no replica serves the call's media any more (its replica stopped, or the stream never arrived); another replica ended the call and asked the provider to hang it up";
/// Like [`TAKEOVER_HUNG_UP_REASON`], when the provider refused the hang-up (an error event says why).
pub const TAKEOVER_HANG_UP_FAILED_REASON: &str =
    "no replica serves the call's media any more; hanging the call up with the provider failed";
/// The end reason of a call still queued long after it was stored, with no
/// provider id: the replica placing it stopped before the provider answered
/// its dial, and another replica ended it. (Had the provider accepted the
/// dial after all, its TwiML fetch finds the call ended and hangs up.)
pub const PLACING_LOST_REASON: &str =
    "the replica placing the call stopped before the provider accepted it; another replica ended the call";

/// The end reason of a live call whose media stream closed while nothing
/// had recorded why (no hang-up, `end_call`, time limit, AI failure or
/// shutdown: each records its reason before it closes the stream) after it
/// was resumed [`MAX_RESUMES`] times already: the replicas that ran its
/// bridges vanished (killed, or their connection cut) again and again, and
/// the provider asked the `<Connect action>` URL what to do next.
pub const STREAM_LOST_REASON: &str = "the media stream kept closing with nothing ending the call (its replicas stopped or were cut off); another replica hung the call up";

/// The call's recording changed (started, ended, stopped early, deleted).
/// While the call is live this is an event (the record follows it); once the
/// call has ended only the record changes, so that a call's log still ends
/// with its terminal status (WatchCall ends there).
pub fn recording_changed(rec: &mut CallRecord, info: RecordingInfo) -> Vec<EventKind> {
    if rec.status.is_terminal() {
        rec.recording = Some(info);
        vec![]
    } else {
        vec![EventKind::Recording(info)]
    }
}

/// A status callback of the telephony provider, parsed (protocols.md §2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderStatus {
    /// The provider's id of the call (`CallSid`), when given.
    pub call_sid: Option<String>,
    /// The reported status (`CallStatus`).
    pub status: CallStatus,
    /// The order the provider fired its callbacks in (`SequenceNumber`, from 0).
    pub sequence: Option<u64>,
    /// Answered duration, seconds (`CallDuration`).
    pub duration_secs: Option<u32>,
    /// Answering-machine detection result (`AnsweredBy`).
    pub answered_by: Option<String>,
    /// The provider's error code of a failure (`ErrorCode`), never empty.
    pub error_code: Option<String>,
    /// The SIP response code (`SipResponseCode`).
    pub sip_response_code: Option<String>,
}

/// Why a status callback moved nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// It names another call of the provider; the record is untouched.
    ForeignCallSid,
    /// Its `SequenceNumber` is not newer than one applied already.
    StaleSequence,
    /// Its status is not a step forward (or the call has ended).
    NotForward,
}

/// What a status callback did.
#[derive(Clone, Debug, PartialEq)]
pub enum Reported {
    /// The call moved on: these events describe it.
    Advanced(Vec<EventKind>),
    /// No status change (data that only grows may still have been kept).
    Ignored(Ignored),
}

impl Reported {
    /// The events to store (none when ignored).
    pub fn into_events(self) -> Vec<EventKind> {
        match self {
            Self::Advanced(events) => events,
            Self::Ignored(_) => Vec::new(),
        }
    }
}

/// The terminal statuses a call ends with when we end it (the others, busy
/// and no-answer, only the provider reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Answered, and over.
    Completed,
    /// Ended before it was answered.
    Canceled,
    /// Could not be placed or broke down.
    Failed,
}

impl From<Ending> for CallStatus {
    fn from(e: Ending) -> Self {
        match e {
            Ending::Completed => CallStatus::Completed,
            Ending::Canceled => CallStatus::Canceled,
            Ending::Failed => CallStatus::Failed,
        }
    }
}

/// The first events of a call just stored: queued, and a notice when an
/// emulator answers it (`emulation` is the summary to show).
pub fn placed(rec: &CallRecord, emulation: Option<String>) -> Vec<EventKind> {
    let mut events = vec![EventKind::Status {
        status: CallStatus::Queued,
        detail: queued_detail(&rec.to, rec.backend),
    }];
    if let Some(summary) = emulation {
        events.push(EventKind::notice(crate::call::NoticeCode::Emulated, summary));
    }
    events
}

fn queued_detail(to: &str, backend: Backend) -> String {
    format!("calling {to} via {}", backend.as_str())
}

/// The provider accepted the call under `provider_call_id`.
pub fn dialed(rec: &mut CallRecord, provider_call_id: String) -> Vec<EventKind> {
    rec.provider_call_id = provider_call_id;
    Vec::new()
}

/// The provider refused to place the call: the call fails with the
/// provider's message, its error code is kept, and watchers see the error.
pub fn dial_refused(rec: &mut CallRecord, provider_code: Option<&str>, message: &str) -> Vec<EventKind> {
    rec.provider_error_code = provider_code.unwrap_or_default().to_string();
    fail(
        rec,
        &format!("the telephony provider refused the call: {message}"),
        Some((ErrorCode::from_provider(provider_code), message.to_string())),
    )
}

/// A provider status callback: see the module doc for the rules.
pub fn on_provider_status(rec: &mut CallRecord, report: &ProviderStatus) -> Reported {
    let sid = report.call_sid.as_deref().filter(|s| !s.is_empty());
    if sid.is_some_and(|s| rec.is_another_calls_sid(s)) {
        return Reported::Ignored(Ignored::ForeignCallSid);
    }
    if let Some(sid) = sid
        && rec.provider_call_id.is_empty()
    {
        rec.provider_call_id = sid.to_string();
    }
    // Data that only ever grows is kept even from late callbacks.
    if let Some(d) = report.duration_secs {
        rec.duration_seconds = rec.duration_seconds.max(d);
    }
    if let Some(a) = &report.answered_by {
        rec.answered_by = a.clone();
    }
    if let Some(c) = &report.error_code {
        rec.provider_error_code = c.clone();
    }
    if let (Some(s), Some(last)) = (report.sequence, rec.last_provider_sequence)
        && s <= last
    {
        return Reported::Ignored(Ignored::StaleSequence);
    }
    if let Some(s) = report.sequence {
        rec.last_provider_sequence = Some(s);
    }
    let status = report.status;
    if !is_forward(rec.status, status) {
        return Reported::Ignored(Ignored::NotForward);
    }
    // A transfer whose outcome never came is closed first, with its reason.
    let closed = if status.is_terminal() {
        transfer::on_end_during_transfer(rec)
    } else {
        Vec::new()
    };
    let detail = status_detail(
        status,
        report.error_code.as_deref(),
        report.sip_response_code.as_deref(),
        &rec.end_reason,
    );
    let mut events = Vec::new();
    if let Some(code) = &report.error_code {
        events.push(EventKind::error(
            ErrorCode::Twilio(code.clone()),
            format!("Twilio reported error {code} for this call"),
        ));
    }
    events.extend(closed);
    if status.is_terminal() {
        note_end_reason(rec, &detail);
    }
    events.push(EventKind::Status { status, detail });
    Reported::Advanced(events)
}

/// Whether a call in `current` may move to `next`: only forward, and never
/// out of a terminal status.
pub fn is_forward(current: CallStatus, next: CallStatus) -> bool {
    !current.is_terminal() && next.rank() > current.rank()
}

/// Records why the call ends, unless a reason is recorded already: the first
/// reason wins (what caused the end, not what followed from it). An empty
/// reason records nothing. Returns whether `reason` was recorded.
pub fn note_end_reason(rec: &mut CallRecord, reason: &str) -> bool {
    if !rec.end_reason.is_empty() || reason.is_empty() {
        return false;
    }
    rec.end_reason = reason.to_string();
    true
}

/// The end reason of a terminal status that came without one.
pub fn default_end_reason(status: CallStatus) -> String {
    status.name().to_ascii_lowercase().replace('_', " ")
}

/// The end reason of a call the agent ended (its `end_call` tool).
pub const AGENT_ENDED_REASON: &str = "the agent ended the call";
/// How the reasons of a failing AI start (the bridge adds the cause).
pub const AI_FAILED_PREFIX: &str = "the AI failed";
/// How the end reason of a call the provider refused to place starts.
pub const DIAL_REFUSED_PREFIX: &str = "the telephony provider refused the call";
/// How the end reason of a call that reached `max_duration` starts.
pub const TIME_LIMIT_PREFIX: &str = "the call reached its maximum duration";

/// Why a call ended, as a small fixed set of classes: the end reason is free
/// text (it quotes providers), so metrics count calls by this instead
/// (bounded label values, docs/observability.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndClass {
    /// Answered and ended by the callee or the provider as normal.
    Normal,
    /// The agent ended it (`end_call`).
    Agent,
    /// A machine or a fax answered; hung up under the voicemail policy
    /// (after leaving the message when it says so).
    Voicemail,
    /// `HangUpCall`.
    HangUpApi,
    /// It reached its maximum duration.
    TimeLimit,
    /// The line was busy.
    Busy,
    /// Nobody answered.
    NoAnswer,
    /// Ended before it was answered (not through the API).
    Canceled,
    /// The provider refused to place it.
    DialRefused,
    /// The provider failed it (an error code, SIP failure, unreachable).
    ProviderFailure,
    /// The realtime AI could not be reached, refused, dropped or stalled.
    AiFailure,
    /// Handed to a person, who answered.
    Transferred,
    /// A transfer to a person did not connect (busy, no answer, failed).
    TransferFailed,
    /// Twilio's media stream failed or was refused.
    MediaFailure,
    /// The server shut down under it.
    Shutdown,
    /// The server restarted under it (recovered at start).
    Restart,
    /// None of the above.
    Other,
}

impl EndClass {
    /// Every class, in the order metrics list them.
    pub const ALL: [EndClass; 17] = [
        Self::Normal,
        Self::Agent,
        Self::Voicemail,
        Self::HangUpApi,
        Self::TimeLimit,
        Self::Busy,
        Self::NoAnswer,
        Self::Canceled,
        Self::DialRefused,
        Self::ProviderFailure,
        Self::AiFailure,
        Self::Transferred,
        Self::TransferFailed,
        Self::MediaFailure,
        Self::Shutdown,
        Self::Restart,
        Self::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Agent => "agent",
            Self::Voicemail => "voicemail",
            Self::HangUpApi => "hang_up_api",
            Self::TimeLimit => "time_limit",
            Self::Busy => "busy",
            Self::NoAnswer => "no_answer",
            Self::Canceled => "canceled",
            Self::DialRefused => "dial_refused",
            Self::ProviderFailure => "provider_failure",
            Self::AiFailure => "ai_failure",
            Self::Transferred => "transferred",
            Self::TransferFailed => "transfer_failed",
            Self::MediaFailure => "media_failure",
            Self::Shutdown => "shutdown",
            Self::Restart => "restart",
            Self::Other => "other",
        }
    }

    /// The class of a call that ended with `status` and `end_reason` (the
    /// reasons are the constants above and the bridge's, which its tests
    /// pin). Reasons outrank the status: a call the agent ended is
    /// COMPLETED, one the server shut down may be COMPLETED or CANCELED.
    pub fn of(status: CallStatus, end_reason: &str) -> Self {
        let r = end_reason;
        if r == HANG_UP_REASON {
            Self::HangUpApi
        } else if r == AGENT_ENDED_REASON {
            Self::Agent
        } else if amd::REASON_MARKERS.iter().any(|m| r.starts_with(m)) {
            Self::Voicemail
        } else if r.starts_with(transfer::TRANSFERRED_PREFIX) {
            Self::Transferred
        } else if r.starts_with(transfer::TRANSFER_FAILED_PREFIX) {
            Self::TransferFailed
        } else if r.starts_with(TIME_LIMIT_PREFIX) {
            Self::TimeLimit
        } else if r.starts_with(AI_FAILED_PREFIX) {
            Self::AiFailure
        } else if r.starts_with(DIAL_REFUSED_PREFIX) {
            Self::DialRefused
        } else if r == crate::bridge::SHUTDOWN_REASON {
            Self::Shutdown
        } else if r.starts_with(RESTART_REASON) {
            Self::Restart
        } else if r.contains("media stream") {
            Self::MediaFailure
        } else {
            match status {
                CallStatus::Completed => Self::Normal,
                CallStatus::Busy => Self::Busy,
                CallStatus::NoAnswer => Self::NoAnswer,
                CallStatus::Canceled => Self::Canceled,
                CallStatus::Failed => Self::ProviderFailure,
                _ => Self::Other,
            }
        }
    }
}

/// A hang-up through the API was asked for: recorded as the end reason (the
/// call itself ends when the provider reports it, or by [`end`] when the
/// provider has no call yet).
pub fn hang_up_requested(rec: &mut CallRecord) -> Vec<EventKind> {
    note_end_reason(rec, HANG_UP_REASON);
    Vec::new()
}

/// Ends a call that has not ended yet, with `reason` as the event's detail
/// (and as the end reason, unless one is recorded already). A call that has
/// ended already stays as it is.
pub fn end(rec: &mut CallRecord, ending: Ending, reason: &str) -> Vec<EventKind> {
    if rec.status.is_terminal() {
        return Vec::new();
    }
    note_end_reason(rec, reason);
    vec![EventKind::Status {
        status: ending.into(),
        detail: reason.to_string(),
    }]
}

/// What the provider is told when a call's media stream closed while the
/// call goes on (`<Connect action>`, protocols.md §4).
#[derive(Debug, PartialEq, Eq)]
pub enum AfterStream {
    /// Hang up: the call ended, is ending on purpose (its reason is
    /// recorded), or its stream was lost too often (see [`STREAM_LOST_REASON`]).
    HangUp,
    /// The call is being transferred to this number ([`transfer`]): go on
    /// with the `<Dial>`. UNVERIFIED whether Twilio requests the `<Connect
    /// action>` at all when a call update replaced the TwiML (its docs say
    /// the update "interrupts" the current TwiML; the emulator does not
    /// request it). Either way the transfer goes on and the call is not
    /// ended FAILED.
    Transfer(String),
    /// A new `<Connect><Stream>` for the same call: its stream closed with
    /// nothing ending the call (its replica died or handed it over), so a
    /// new bridge on any replica carries the conversation on. The caller
    /// applies [`resume_stream`].
    Resume,
}

/// How many times one call's stream may be resumed: a stream that keeps
/// closing (every replica failing it) ends the call rather than looping.
pub const MAX_RESUMES: u64 = 20;

/// The provider reports that the media stream of a call closed and asks what
/// to do next. A call ended on purpose recorded its reason before its bridge
/// closed the stream (the bridge settles its writes first), so it hangs up;
/// a live call with no reason lost its bridge: it resumes on a new stream
/// (up to [`MAX_RESUMES`] times, then it ends FAILED).
pub fn on_stream_ended(rec: &mut CallRecord) -> (AfterStream, Vec<EventKind>) {
    if !rec.status.is_terminal()
        && let Some(t) = rec.transfer.as_ref().filter(|_| transfer::in_flight(rec))
    {
        return (AfterStream::Transfer(t.target.clone()), Vec::new());
    }
    if rec.status.is_terminal() || !rec.end_reason.is_empty() {
        return (AfterStream::HangUp, Vec::new());
    }
    if rec.stream_generation >= MAX_RESUMES {
        return (AfterStream::HangUp, end(rec, Ending::Failed, STREAM_LOST_REASON));
    }
    (AfterStream::Resume, Vec::new())
}

/// The call gets a new media stream ([`AfterStream::Resume`]): a fresh
/// per-stream `secret` (the old stream's is void), the next stream
/// generation (storing it frees the old stream's media claim, see
/// [`crate::store::Store::update`]), and a note of when, for the new
/// bridge's [`migrated`] event.
pub fn resume_stream(rec: &mut CallRecord, secret: String, now: chrono::DateTime<chrono::Utc>) {
    rec.stream_secret = secret;
    rec.stream_generation += 1;
    rec.resuming = Some(crate::call::Resuming {
        from: String::new(),
        since: now,
    });
}

/// The new bridge of a resumed stream started on replica `to` at `now`:
/// watchers see one call that moved, with the gap.
pub fn migrated(rec: &mut CallRecord, to: &str, now: chrono::DateTime<chrono::Utc>) -> Vec<EventKind> {
    let Some(resuming) = rec.resuming.take() else {
        return Vec::new();
    };
    let gap_ms = (now - resuming.since).num_milliseconds().clamp(0, i64::from(u32::MAX)) as u32;
    vec![EventKind::Migrated {
        from: resuming.from,
        to: to.to_string(),
        gap_ms,
    }]
}

/// Like [`end`], but the event says the recorded end reason (`fallback` when
/// none is recorded): for ending a call on the provider's behalf, after
/// whatever ended it has recorded why.
pub fn end_with_recorded_reason(rec: &mut CallRecord, ending: Ending, fallback: &str) -> Vec<EventKind> {
    note_end_reason(rec, fallback);
    let reason = rec.end_reason.clone();
    end(rec, ending, &reason)
}

/// Fails the call with `reason`; `error` (code, message) is reported first,
/// even when the call has ended already, since it did happen.
pub fn fail(rec: &mut CallRecord, reason: &str, error: Option<(ErrorCode, String)>) -> Vec<EventKind> {
    let mut events: Vec<EventKind> = error
        .into_iter()
        .map(|(code, message)| EventKind::error(code, message))
        .collect();
    events.extend(end(rec, Ending::Failed, reason));
    events
}

/// The detail text of a reported status. A normal end or a cancel says the
/// recorded end reason when there is one (the provider does not know why we
/// hung up); the provider's error code, or the SIP code of a failure, is added.
fn status_detail(status: CallStatus, error: Option<&str>, sip: Option<&str>, end_reason: &str) -> String {
    let base = match status {
        CallStatus::Initiated => "dialling",
        CallStatus::Ringing => "ringing",
        CallStatus::InProgress => "answered",
        CallStatus::Completed | CallStatus::Canceled if !end_reason.is_empty() => end_reason,
        CallStatus::Completed => "call ended",
        CallStatus::Busy => "the line was busy",
        CallStatus::NoAnswer => "nobody answered",
        CallStatus::Canceled => "canceled before it was answered",
        CallStatus::Failed => "the call could not be connected",
        CallStatus::Queued => "queued",
    };
    match (error, sip) {
        (Some(e), _) => format!("{base} (Twilio error {e})"),
        (None, Some(s)) if status == CallStatus::Failed => format!("{base} (SIP {s})"),
        _ => base.to_string(),
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {

    use chrono::Utc;

    use super::*;
    use crate::call::RecordingState;

    const SID: &str = "CA11111111111111111111111111111111";
    const OTHER_SID: &str = "CA22222222222222222222222222222222";

    /// The order of the transition table below.
    const ALL: [CallStatus; 9] = [
        CallStatus::Queued,
        CallStatus::Initiated,
        CallStatus::Ringing,
        CallStatus::InProgress,
        CallStatus::Completed,
        CallStatus::Busy,
        CallStatus::NoAnswer,
        CallStatus::Canceled,
        CallStatus::Failed,
    ];

    fn record(status: CallStatus) -> CallRecord {
        CallRecord {
            status,
            provider_call_id: SID.into(),
            emulated: true,
            ..CallRecord::for_tests()
        }
    }

    #[test]
    fn a_recording_change_is_an_event_while_live_and_only_the_record_after_the_end() {
        let info = |state| RecordingInfo {
            state,
            error: String::new(),
            duration_ms: 1200,
            file: true,
        };
        let mut live = record(CallStatus::InProgress);
        let events = recording_changed(&mut live, info(RecordingState::Complete));
        assert_eq!(events, vec![EventKind::Recording(info(RecordingState::Complete))]);
        assert!(live.recording.is_none(), "the event sets it when applied");
        live.apply(&events[0], chrono::Utc::now());
        assert_eq!(live.recording, Some(info(RecordingState::Complete)));
        let mut ended = record(CallStatus::Completed);
        assert!(recording_changed(&mut ended, info(RecordingState::Deleted)).is_empty());
        assert_eq!(ended.recording, Some(info(RecordingState::Deleted)));
        assert_eq!(
            info(RecordingState::Complete).url(&ended.call_id),
            Some(format!("/recordings/{}.wav", ended.call_id))
        );
    }

    fn report(status: CallStatus) -> ProviderStatus {
        ProviderStatus {
            call_sid: Some(SID.into()),
            status,
            sequence: None,
            duration_secs: None,
            answered_by: None,
            error_code: None,
            sip_response_code: None,
        }
    }

    /// Applies the events to the record as the hub does.
    fn apply(rec: &mut CallRecord, events: &[EventKind]) {
        for ev in events {
            rec.apply(ev, Utc::now());
        }
    }

    /// Runs a callback through the domain and applies what it decided.
    fn callback(rec: &mut CallRecord, r: &ProviderStatus) -> Reported {
        let out = on_provider_status(rec, r);
        if let Reported::Advanced(events) = &out {
            apply(rec, events);
        }
        out
    }

    fn statuses(events: &[EventKind]) -> Vec<CallStatus> {
        events
            .iter()
            .filter_map(|e| match e {
                EventKind::Status { status, .. } => Some(*status),
                _ => None,
            })
            .collect()
    }

    fn detail(events: &[EventKind]) -> &str {
        match events.last() {
            Some(EventKind::Status { detail, .. }) => detail,
            other => panic!("no status event: {other:?}"),
        }
    }

    #[test]
    fn every_reported_status_from_every_status_advances_or_is_ignored() {
        // Rows: the current status; columns: the reported one, in the order
        // of ALL (queued, initiated, ringing, in-progress, completed, busy,
        // no-answer, canceled, failed). A = advances, . = ignored.
        let table = [
            (CallStatus::Queued, ".AAAAAAAA"),
            (CallStatus::Initiated, "..AAAAAAA"),
            (CallStatus::Ringing, "...AAAAAA"),
            (CallStatus::InProgress, "....AAAAA"),
            (CallStatus::Completed, "........."),
            (CallStatus::Busy, "........."),
            (CallStatus::NoAnswer, "........."),
            (CallStatus::Canceled, "........."),
            (CallStatus::Failed, "........."),
        ];
        assert_eq!(table.len(), ALL.len());
        for (current, row) in table {
            for (reported, cell) in ALL.iter().copied().zip(row.chars()) {
                let mut rec = record(current);
                let out = callback(&mut rec, &report(reported));
                match cell {
                    'A' => {
                        let Reported::Advanced(events) = &out else {
                            panic!("{current:?} + {reported:?}: expected a step, got {out:?}");
                        };
                        assert_eq!(statuses(events), vec![reported], "{current:?} + {reported:?}");
                        assert_eq!(rec.status, reported, "{current:?} + {reported:?}");
                        assert_eq!(rec.ended_at.is_some(), reported.is_terminal());
                        assert_eq!(!rec.end_reason.is_empty(), reported.is_terminal());
                    }
                    _ => {
                        assert_eq!(
                            out,
                            Reported::Ignored(Ignored::NotForward),
                            "{current:?} + {reported:?}"
                        );
                        assert_eq!(rec.status, current, "{current:?} + {reported:?}");
                        assert_eq!(rec.event_count, 0);
                    }
                }
            }
        }
    }

    #[test]
    fn a_whole_call_in_order_and_answered_at_is_set_once() {
        let mut rec = record(CallStatus::Queued);
        for (seq, status) in [
            CallStatus::Initiated,
            CallStatus::Ringing,
            CallStatus::InProgress,
            CallStatus::Completed,
        ]
        .into_iter()
        .enumerate()
        {
            let r = ProviderStatus {
                sequence: Some(seq as u64),
                ..report(status)
            };
            assert!(matches!(callback(&mut rec, &r), Reported::Advanced(_)), "{status:?}");
        }
        assert_eq!(rec.status, CallStatus::Completed);
        assert_eq!(rec.last_provider_sequence, Some(3));
        assert!(rec.answered_at.is_some() && rec.ended_at.is_some());
        assert_eq!(rec.end_reason, "call ended");
        assert_eq!(rec.event_count, 4);
    }

    #[test]
    fn duplicate_and_older_sequences_change_no_status() {
        let mut rec = record(CallStatus::Queued);
        let ringing = ProviderStatus {
            sequence: Some(1),
            ..report(CallStatus::Ringing)
        };
        assert!(matches!(callback(&mut rec, &ringing), Reported::Advanced(_)));
        // The same callback again (a retry) changes nothing.
        assert_eq!(callback(&mut rec, &ringing), Reported::Ignored(Ignored::StaleSequence));
        // An older one carrying a later status still changes nothing: its
        // sequence says it was fired before what we have.
        let older = ProviderStatus {
            sequence: Some(0),
            ..report(CallStatus::Completed)
        };
        assert_eq!(callback(&mut rec, &older), Reported::Ignored(Ignored::StaleSequence));
        assert_eq!(rec.status, CallStatus::Ringing);
        assert_eq!(rec.last_provider_sequence, Some(1));
        assert_eq!(rec.event_count, 1);
        // A newer sequence with a status that is not forward is remembered
        // but moves nothing.
        let newer_back = ProviderStatus {
            sequence: Some(5),
            ..report(CallStatus::Initiated)
        };
        assert_eq!(callback(&mut rec, &newer_back), Reported::Ignored(Ignored::NotForward));
        assert_eq!(rec.last_provider_sequence, Some(5));
        assert_eq!(rec.status, CallStatus::Ringing);
    }

    #[test]
    fn late_callbacks_keep_data_that_only_grows() {
        let mut rec = record(CallStatus::Queued);
        let completed = ProviderStatus {
            sequence: Some(3),
            duration_secs: Some(42),
            ..report(CallStatus::Completed)
        };
        assert!(matches!(callback(&mut rec, &completed), Reported::Advanced(_)));
        // Fired earlier, arriving last: status ignored, its data kept, and a
        // duration never shrinks.
        let late = ProviderStatus {
            sequence: Some(2),
            duration_secs: Some(7),
            answered_by: Some("human".into()),
            error_code: Some("31005".into()),
            ..report(CallStatus::InProgress)
        };
        assert_eq!(callback(&mut rec, &late), Reported::Ignored(Ignored::StaleSequence));
        assert_eq!(rec.status, CallStatus::Completed);
        assert_eq!(rec.duration_seconds, 42);
        assert_eq!(rec.answered_by, "human");
        assert_eq!(rec.provider_error_code, "31005");
        let longer = ProviderStatus {
            sequence: Some(4),
            duration_secs: Some(43),
            ..report(CallStatus::Completed)
        };
        assert_eq!(callback(&mut rec, &longer), Reported::Ignored(Ignored::NotForward));
        assert_eq!(rec.duration_seconds, 43);
        assert_eq!(rec.event_count, 1, "no event for data alone");
    }

    #[test]
    fn a_foreign_callsid_changes_nothing() {
        let mut rec = record(CallStatus::Ringing);
        rec.last_provider_sequence = Some(1);
        let before = rec.clone();
        let foreign = ProviderStatus {
            call_sid: Some(OTHER_SID.into()),
            sequence: Some(9),
            duration_secs: Some(42),
            answered_by: Some("machine_start".into()),
            error_code: Some("31005".into()),
            ..report(CallStatus::Failed)
        };
        assert_eq!(callback(&mut rec, &foreign), Reported::Ignored(Ignored::ForeignCallSid));
        assert_eq!(rec, before);
    }

    #[test]
    fn the_callsid_is_adopted_when_not_known_yet() {
        let mut rec = record(CallStatus::Queued);
        rec.provider_call_id.clear();
        let r = ProviderStatus {
            call_sid: Some(OTHER_SID.into()),
            ..report(CallStatus::Initiated)
        };
        assert!(matches!(callback(&mut rec, &r), Reported::Advanced(_)));
        assert_eq!(rec.provider_call_id, OTHER_SID);
        // Without a CallSid the callback is taken as the call's own.
        let mut rec = record(CallStatus::Queued);
        let r = ProviderStatus {
            call_sid: None,
            ..report(CallStatus::Ringing)
        };
        assert!(matches!(callback(&mut rec, &r), Reported::Advanced(_)));
        assert_eq!(rec.provider_call_id, SID);
    }

    #[test]
    fn detail_texts_of_reported_statuses() {
        // Reported status, ErrorCode, SipResponseCode, recorded end reason → detail.
        type Case = (
            CallStatus,
            Option<&'static str>,
            Option<&'static str>,
            &'static str,
            &'static str,
        );
        let cases: [Case; 12] = [
            (CallStatus::Initiated, None, None, "", "dialling"),
            (CallStatus::Ringing, None, None, "", "ringing"),
            (CallStatus::InProgress, None, None, "", "answered"),
            (CallStatus::Completed, None, None, "", "call ended"),
            (
                CallStatus::Completed,
                None,
                Some("200"),
                "the agent ended the call",
                "the agent ended the call",
            ),
            (CallStatus::Busy, None, Some("486"), "", "the line was busy"),
            (CallStatus::NoAnswer, None, None, "", "nobody answered"),
            (CallStatus::Canceled, None, None, "", "canceled before it was answered"),
            (CallStatus::Canceled, None, None, HANG_UP_REASON, HANG_UP_REASON),
            (
                CallStatus::Failed,
                None,
                Some("404"),
                "",
                "the call could not be connected (SIP 404)",
            ),
            (
                CallStatus::Failed,
                Some("31005"),
                Some("500"),
                "",
                "the call could not be connected (Twilio error 31005)",
            ),
            (
                CallStatus::Busy,
                Some("31486"),
                None,
                "",
                "the line was busy (Twilio error 31486)",
            ),
        ];
        for (status, error, sip, end_reason, expected) in cases {
            let mut rec = record(CallStatus::Queued);
            rec.end_reason = end_reason.to_string();
            let r = ProviderStatus {
                error_code: error.map(String::from),
                sip_response_code: sip.map(String::from),
                ..report(status)
            };
            let events = on_provider_status(&mut rec, &r).into_events();
            assert_eq!(detail(&events), expected, "{status:?} {error:?} {sip:?}");
        }
    }

    #[test]
    fn a_reported_error_becomes_an_error_event_before_the_status() {
        let mut rec = record(CallStatus::Ringing);
        let r = ProviderStatus {
            error_code: Some("31005".into()),
            ..report(CallStatus::Failed)
        };
        let Reported::Advanced(events) = callback(&mut rec, &r) else {
            panic!("a failure after ringing is a step");
        };
        assert_eq!(
            events,
            vec![
                EventKind::Error {
                    code: "twilio_31005".into(),
                    message: "Twilio reported error 31005 for this call".into(),
                },
                EventKind::Status {
                    status: CallStatus::Failed,
                    detail: "the call could not be connected (Twilio error 31005)".into(),
                },
            ]
        );
        assert_eq!(rec.provider_error_code, "31005");
        assert_eq!(rec.end_reason, "the call could not be connected (Twilio error 31005)");
    }

    #[test]
    fn the_first_end_reason_wins() {
        // The agent ends the call; the provider's completion then says so.
        let mut rec = record(CallStatus::InProgress);
        assert!(note_end_reason(&mut rec, "the agent ended the call"));
        assert!(!note_end_reason(&mut rec, HANG_UP_REASON));
        let events = on_provider_status(&mut rec, &report(CallStatus::Completed)).into_events();
        apply(&mut rec, &events);
        assert_eq!(detail(&events), "the agent ended the call");
        assert_eq!(rec.end_reason, "the agent ended the call");

        // Ending it ourselves: the event says what happened now, the record
        // keeps the first reason.
        let mut rec = record(CallStatus::Ringing);
        hang_up_requested(&mut rec);
        let events = end(&mut rec, Ending::Canceled, "the server is shutting down");
        apply(&mut rec, &events);
        assert_eq!(detail(&events), "the server is shutting down");
        assert_eq!(rec.status, CallStatus::Canceled);
        assert_eq!(rec.end_reason, HANG_UP_REASON);

        // ... or says the recorded reason.
        let mut rec = record(CallStatus::InProgress);
        note_end_reason(&mut rec, "the call reached its maximum duration (600 s)");
        let events = end_with_recorded_reason(&mut rec, Ending::Completed, "the server is shutting down");
        apply(&mut rec, &events);
        assert_eq!(detail(&events), "the call reached its maximum duration (600 s)");
        let mut rec = record(CallStatus::InProgress);
        let events = end_with_recorded_reason(&mut rec, Ending::Completed, "the server is shutting down");
        assert_eq!(detail(&events), "the server is shutting down");
        assert_eq!(rec.end_reason, "the server is shutting down");

        // An empty reason records nothing; a status without a detail gets its name.
        let mut rec = record(CallStatus::Ringing);
        assert!(!note_end_reason(&mut rec, ""));
        apply(
            &mut rec,
            &[EventKind::Status {
                status: CallStatus::NoAnswer,
                detail: String::new(),
            }],
        );
        assert_eq!(rec.end_reason, "no answer");
    }

    #[test]
    fn an_ended_call_stays_ended() {
        for status in ALL.into_iter().filter(|s| s.is_terminal()) {
            let mut rec = record(status);
            rec.end_reason = "first".into();
            assert!(end(&mut rec, Ending::Completed, "later").is_empty(), "{status:?}");
            assert!(end(&mut rec, Ending::Failed, "later").is_empty(), "{status:?}");
            // The error did happen, so it is still reported; the status is not.
            let events = fail(&mut rec, "later", Some((ErrorCode::Telephony, "boom".into())));
            assert_eq!(
                events,
                vec![EventKind::Error {
                    code: "telephony_error".into(),
                    message: "boom".into()
                }]
            );
            assert_eq!(rec.status, status);
            assert_eq!(rec.end_reason, "first");
        }
    }

    #[test]
    fn a_refused_dial_fails_the_call_with_the_providers_code() {
        let mut rec = record(CallStatus::Queued);
        rec.provider_call_id.clear();
        let events = dial_refused(&mut rec, Some("21211"), "invalid 'To' number (Twilio 21211)");
        apply(&mut rec, &events);
        assert_eq!(
            events,
            vec![
                EventKind::Error {
                    code: "twilio_21211".into(),
                    message: "invalid 'To' number (Twilio 21211)".into(),
                },
                EventKind::Status {
                    status: CallStatus::Failed,
                    detail: "the telephony provider refused the call: invalid 'To' number (Twilio 21211)".into(),
                },
            ]
        );
        assert_eq!(rec.status, CallStatus::Failed);
        assert_eq!(rec.provider_error_code, "21211");
        assert_eq!(
            rec.end_reason,
            "the telephony provider refused the call: invalid 'To' number (Twilio 21211)"
        );

        let mut rec = record(CallStatus::Queued);
        let events = dial_refused(&mut rec, None, "timed out");
        assert!(
            matches!(&events[0], EventKind::Error { code, .. } if code == "telephony_error"),
            "{events:?}"
        );
        assert_eq!(rec.provider_error_code, "");
    }

    #[test]
    fn a_placed_call_starts_queued_and_says_when_it_is_emulated() {
        let rec = record(CallStatus::Queued);
        assert_eq!(
            placed(&rec, None),
            vec![EventKind::Status {
                status: CallStatus::Queued,
                detail: "calling +14155551212 via voice-live".into(),
            }]
        );
        let events = placed(&rec, Some("emulated call".into()));
        assert_eq!(
            events[1],
            EventKind::Notice {
                code: "emulated".into(),
                message: "emulated call".into()
            }
        );
    }

    #[test]
    fn every_end_reason_falls_in_its_class() {
        let refused = {
            let mut rec = record(CallStatus::Queued);
            let events = dial_refused(&mut rec, Some("21211"), "invalid 'To' number");
            apply(&mut rec, &events);
            (rec.status, rec.end_reason)
        };
        let cases = [
            (CallStatus::Completed, "call ended", EndClass::Normal),
            (CallStatus::Completed, "", EndClass::Normal),
            (CallStatus::Completed, AGENT_ENDED_REASON, EndClass::Agent),
            (CallStatus::Completed, HANG_UP_REASON, EndClass::HangUpApi),
            (CallStatus::Canceled, HANG_UP_REASON, EndClass::HangUpApi),
            (
                CallStatus::Completed,
                "the call reached its maximum duration (600 s)",
                EndClass::TimeLimit,
            ),
            (CallStatus::Busy, "the line was busy", EndClass::Busy),
            (CallStatus::NoAnswer, "nobody answered", EndClass::NoAnswer),
            (
                CallStatus::Canceled,
                "canceled before it was answered",
                EndClass::Canceled,
            ),
            (refused.0, refused.1.as_str(), EndClass::DialRefused),
            (
                CallStatus::Failed,
                "the call could not be connected (Twilio error 31005)",
                EndClass::ProviderFailure,
            ),
            (
                CallStatus::Completed,
                "the AI failed: the AI connection dropped",
                EndClass::AiFailure,
            ),
            (
                CallStatus::Failed,
                "the AI failed: connect: refused",
                EndClass::AiFailure,
            ),
            (
                CallStatus::Completed,
                "Twilio sent no 'start' within 10s; closed the media stream",
                EndClass::MediaFailure,
            ),
            (
                CallStatus::Completed,
                "Twilio's media stream stopped taking data: nothing could be written to it for 5s",
                EndClass::MediaFailure,
            ),
            (
                CallStatus::Completed,
                crate::bridge::SHUTDOWN_REASON,
                EndClass::Shutdown,
            ),
            (CallStatus::Canceled, crate::bridge::SHUTDOWN_REASON, EndClass::Shutdown),
            (CallStatus::Failed, RESTART_REASON, EndClass::Restart),
            (CallStatus::Failed, RESTART_HUNG_UP_REASON, EndClass::Restart),
            (CallStatus::Failed, RESTART_HANG_UP_FAILED_REASON, EndClass::Restart),
        ];
        for (status, reason, class) in cases {
            assert_eq!(EndClass::of(status, reason), class, "{status:?} {reason:?}");
        }
        let labels: std::collections::HashSet<_> = EndClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels.len(), EndClass::ALL.len());
    }

    #[test]
    fn a_stream_that_ends_with_nothing_ending_the_call_resumes_and_others_hang_up_quietly() {
        let mut lost = record(CallStatus::InProgress);
        let (after, events) = on_stream_ended(&mut lost);
        assert_eq!(after, AfterStream::Resume);
        assert!(events.is_empty());
        assert_eq!(lost.status, CallStatus::InProgress);
        assert!(lost.end_reason.is_empty());

        let mut ending = record(CallStatus::InProgress);
        assert!(note_end_reason(&mut ending, AGENT_ENDED_REASON));
        assert_eq!(on_stream_ended(&mut ending), (AfterStream::HangUp, vec![]));
        assert_eq!(ending.status, CallStatus::InProgress, "the provider's callback ends it");

        let mut ended = record(CallStatus::Completed);
        assert_eq!(on_stream_ended(&mut ended), (AfterStream::HangUp, vec![]));

        // A stream that keeps closing ends the call.
        let mut looping = CallRecord {
            stream_generation: MAX_RESUMES,
            ..record(CallStatus::InProgress)
        };
        let (after, events) = on_stream_ended(&mut looping);
        assert_eq!(after, AfterStream::HangUp);
        apply(&mut looping, &events);
        assert_eq!(looping.status, CallStatus::Failed);
        assert_eq!(looping.end_reason, STREAM_LOST_REASON);
    }

    #[test]
    fn a_resumed_stream_has_a_fresh_secret_the_next_generation_and_one_migrated_event() {
        let mut rec = record(CallStatus::InProgress);
        let old_secret = rec.stream_secret.clone();
        let t0 = chrono::Utc::now();
        resume_stream(&mut rec, "fresh".into(), t0);
        assert_ne!(rec.stream_secret, old_secret);
        assert_eq!(rec.stream_secret, "fresh");
        assert_eq!(rec.stream_generation, 1);
        rec.resuming.as_mut().unwrap().from = "r1".into();
        let events = migrated(&mut rec, "r2", t0 + chrono::Duration::milliseconds(420));
        assert_eq!(
            events,
            vec![EventKind::Migrated {
                from: "r1".into(),
                to: "r2".into(),
                gap_ms: 420
            }]
        );
        assert!(rec.resuming.is_none());
        assert!(migrated(&mut rec, "r2", t0).is_empty(), "once per resume");
    }
}
