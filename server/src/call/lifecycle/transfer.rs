//! Hand-off to a person (a call transfer), as pure decisions. The agent's
//! `transfer_call` tool (after its hand-off sentence played) and an
//! operator's TransferCall both [`start`] a transfer; the caller then asks the
//! provider to redirect the live call to `<Dial>` the target (with our
//! number as the caller id, a ring timeout and an `action` URL), which ends
//! the media stream and so the AI session. When the dial is over the
//! provider requests the action URL: [`on_dial_result`] records the outcome
//! and the call's end reason and says what the callee hears next.
//!
//! The not-answered outcome (busy, no answer, failed) is an apology and the
//! end of the call, not a return to the agent: the AI session closed at the
//! hand-off, and a new one would have to be bridged on a new stream; the
//! apology is honest and simple, and the end reason says what happened.
//!
//! A call being transferred needs no media bridge: its stream's closing
//! must not end it ([`super::on_stream_ended`]), nor may a replica that finds
//! its bridge gone hang it up ([`in_flight`]).

use crate::call::{CallRecord, CallStatus, EventKind, TransferBy, TransferInfo, TransferState, TransferTarget};

/// Most transfer targets of a call.
pub const MAX_TARGETS: usize = 8;
/// Longest description of a target, bytes.
pub const MAX_DESCRIPTION: usize = 512;
/// How long the target's phone may ring (`<Dial timeout>`), seconds.
pub const RING_TIMEOUT_SECS: u32 = 20;
/// What the callee hears when the target did not take the call.
pub const APOLOGY: &str = "Sorry, nobody could take your call right now. Please try again later. Goodbye.";
/// How the end reason of a call handed to a person who answered starts.
pub const TRANSFERRED_PREFIX: &str = "transferred to";
/// How the end reason of a call whose transfer did not connect starts.
pub const TRANSFER_FAILED_PREFIX: &str = "the transfer to";
/// The name of the built-in tool.
pub const TOOL_NAME: &str = "transfer_call";

/// Why a transfer cannot start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The call is not in progress (not answered yet, or ended).
    NotLive,
    /// The call is ending (an end reason is recorded).
    Ending,
    /// A transfer is under way already.
    Transferring,
}

impl Refused {
    /// Text for clients and the AI.
    pub fn message(self) -> &'static str {
        match self {
            Self::NotLive => "the call is not in progress",
            Self::Ending => "the call is ending",
            Self::Transferring => "the call is being transferred already",
        }
    }
}

/// What the provider is told once the dial is over (`<Dial action>`'s answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterDial {
    /// Hang up (the callee talked with the target, or is gone).
    HangUp,
    /// Say [`APOLOGY`], then hang up.
    Apologise,
}

/// Whether a transfer of the call is under way (redirected, dial not over).
pub fn in_flight(rec: &CallRecord) -> bool {
    rec.transfer.as_ref().is_some_and(|t| t.state == TransferState::Started)
}

/// The `transfer_call` tool's JSON Schema of its arguments: `number`, one of
/// the targets (each described in the schema, so the AI can choose).
pub fn tool_parameters(targets: &[TransferTarget]) -> serde_json::Value {
    let described: Vec<String> = targets
        .iter()
        .map(|t| format!("{}: {}", t.number, t.description))
        .collect();
    serde_json::json!({
        "type": "object",
        "properties": {
            "number": {
                "type": "string",
                "enum": targets.iter().map(|t| t.number.as_str()).collect::<Vec<_>>(),
                "description": format!("Who to transfer to; one of: {}", described.join("; ")),
            }
        },
        "required": ["number"],
    })
}

/// The `transfer_call` tool's description for the AI.
pub const TOOL_DESCRIPTION: &str = "Hand the call over to a person. Before calling this, tell the caller in one short sentence that you are transferring them; the transfer starts once they heard it, and you leave the call.";

/// A transfer to `target` asked for by `by`: the call must be in progress,
/// not ending and not being transferred. The event says it started; no end
/// reason yet (a refused redirect leaves the call with the agent).
pub fn start(rec: &mut CallRecord, target: &str, by: TransferBy) -> Result<Vec<EventKind>, Refused> {
    if rec.status != CallStatus::InProgress {
        return Err(Refused::NotLive);
    }
    if in_flight(rec) {
        return Err(Refused::Transferring);
    }
    if !rec.end_reason.is_empty() {
        return Err(Refused::Ending);
    }
    Ok(vec![EventKind::Transfer(TransferInfo {
        target: target.to_string(),
        state: TransferState::Started,
        by,
        reason: String::new(),
    })])
}

/// The provider refused the redirect (`message` says why): the transfer
/// failed, the call goes on as it was.
pub fn redirect_refused(rec: &mut CallRecord, message: &str) -> Vec<EventKind> {
    let Some(t) = rec.transfer.as_ref().filter(|_| in_flight(rec)) else {
        return vec![];
    };
    vec![EventKind::Transfer(TransferInfo {
        state: TransferState::Failed,
        reason: format!("the provider refused the redirect: {message}"),
        ..t.clone()
    })]
}

/// The dial's outcome as Twilio's `DialCallStatus` spells it (protocols.md §4.3).
pub fn dial_state(dial_call_status: &str) -> TransferState {
    match dial_call_status {
        "completed" | "answered" => TransferState::Answered,
        "busy" => TransferState::Busy,
        "no-answer" => TransferState::NoAnswer,
        "canceled" => TransferState::Canceled,
        _ => TransferState::Failed,
    }
}

/// The provider reports how the dial went (`<Dial action>`): the transfer's
/// outcome event, the call's end reason, and what the callee hears next. A
/// report for a call with no transfer under way (a repeat) changes nothing.
pub fn on_dial_result(rec: &mut CallRecord, dial_call_status: &str) -> (AfterDial, Vec<EventKind>) {
    let Some(t) = rec.transfer.clone().filter(|_| in_flight(rec)) else {
        return (AfterDial::HangUp, vec![]);
    };
    let state = dial_state(dial_call_status);
    let (what, after) = match state {
        TransferState::Answered => ("answered", AfterDial::HangUp),
        TransferState::Busy => ("the line was busy", AfterDial::Apologise),
        TransferState::NoAnswer => ("nobody answered", AfterDial::Apologise),
        TransferState::Canceled => ("the callee hung up while it was dialled", AfterDial::HangUp),
        TransferState::Failed | TransferState::Started => ("it could not be dialled", AfterDial::Apologise),
    };
    let reason = match state {
        TransferState::Answered => format!("{TRANSFERRED_PREFIX} {} (answered)", t.target),
        _ => format!("{TRANSFER_FAILED_PREFIX} {} did not connect: {what}", t.target),
    };
    super::note_end_reason(rec, &reason);
    let event = EventKind::Transfer(TransferInfo {
        state,
        reason: what.to_string(),
        ..t
    });
    (after, vec![event])
}

/// The call reached a terminal status while its transfer was under way (no
/// dial outcome came): the transfer is closed as cancelled, and the end
/// reason says so unless one is recorded.
pub fn on_end_during_transfer(rec: &mut CallRecord) -> Vec<EventKind> {
    let Some(t) = rec.transfer.clone().filter(|_| in_flight(rec)) else {
        return vec![];
    };
    super::note_end_reason(
        rec,
        &format!(
            "{TRANSFER_FAILED_PREFIX} {} did not connect: the call ended while it was dialled",
            t.target
        ),
    );
    vec![EventKind::Transfer(TransferInfo {
        state: TransferState::Canceled,
        reason: "the call ended while the target was dialled".into(),
        ..t
    })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::lifecycle::{AfterStream, EndClass, on_stream_ended};

    fn live() -> CallRecord {
        CallRecord {
            status: CallStatus::InProgress,
            provider_call_id: "CA1".into(),
            ..CallRecord::for_tests()
        }
    }

    fn apply(rec: &mut CallRecord, events: &[EventKind]) {
        for e in events {
            rec.apply(e, chrono::Utc::now());
        }
    }

    #[test]
    fn only_a_live_call_not_ending_nor_transferring_starts_a_transfer() {
        for status in [
            CallStatus::Queued,
            CallStatus::Ringing,
            CallStatus::Completed,
            CallStatus::Failed,
        ] {
            let mut rec = CallRecord { status, ..live() };
            assert_eq!(
                start(&mut rec, "+15550120", TransferBy::Operator),
                Err(Refused::NotLive)
            );
        }
        let mut rec = live();
        rec.end_reason = "hung up via HangUpCall".into();
        assert_eq!(start(&mut rec, "+15550120", TransferBy::Agent), Err(Refused::Ending));
        let mut rec = live();
        let events = start(&mut rec, "+15550120", TransferBy::Agent).unwrap();
        apply(&mut rec, &events);
        assert!(in_flight(&rec));
        assert!(rec.end_reason.is_empty(), "no end reason until the outcome");
        assert_eq!(
            start(&mut rec, "+15550121", TransferBy::Operator),
            Err(Refused::Transferring)
        );
    }

    #[test]
    fn a_refused_redirect_leaves_the_call_with_the_agent() {
        let mut rec = live();
        let events = start(&mut rec, "+15550120", TransferBy::Operator).unwrap();
        apply(&mut rec, &events);
        let events = redirect_refused(&mut rec, "20404 not found");
        apply(&mut rec, &events);
        let t = rec.transfer.clone().unwrap();
        assert_eq!(t.state, TransferState::Failed);
        assert!(t.reason.contains("20404"));
        assert!(!in_flight(&rec));
        assert_eq!(rec.status, CallStatus::InProgress);
        assert!(rec.end_reason.is_empty());
        // ...and a stream that closes now is any live call's: it resumes.
        assert_eq!(on_stream_ended(&mut rec).0, AfterStream::Resume);
    }

    #[test]
    fn each_dial_outcome_sets_the_transfer_state_end_reason_and_next_step() {
        let cases = [
            (
                "completed",
                TransferState::Answered,
                AfterDial::HangUp,
                EndClass::Transferred,
            ),
            (
                "answered",
                TransferState::Answered,
                AfterDial::HangUp,
                EndClass::Transferred,
            ),
            (
                "busy",
                TransferState::Busy,
                AfterDial::Apologise,
                EndClass::TransferFailed,
            ),
            (
                "no-answer",
                TransferState::NoAnswer,
                AfterDial::Apologise,
                EndClass::TransferFailed,
            ),
            (
                "failed",
                TransferState::Failed,
                AfterDial::Apologise,
                EndClass::TransferFailed,
            ),
            (
                "bogus",
                TransferState::Failed,
                AfterDial::Apologise,
                EndClass::TransferFailed,
            ),
            (
                "canceled",
                TransferState::Canceled,
                AfterDial::HangUp,
                EndClass::TransferFailed,
            ),
        ];
        for (status, state, after, class) in cases {
            let mut rec = live();
            let events = start(&mut rec, "+15550122", TransferBy::Agent).unwrap();
            apply(&mut rec, &events);
            let (next, events) = on_dial_result(&mut rec, status);
            apply(&mut rec, &events);
            assert_eq!(next, after, "{status}");
            assert_eq!(rec.transfer.as_ref().unwrap().state, state, "{status}");
            assert!(rec.end_reason.contains("+15550122"), "{}", rec.end_reason);
            assert_eq!(EndClass::of(CallStatus::Completed, &rec.end_reason), class, "{status}");
            // A repeat changes nothing.
            assert_eq!(on_dial_result(&mut rec, "busy"), (AfterDial::HangUp, vec![]));
        }
    }

    #[test]
    fn a_call_being_transferred_is_not_failed_by_its_stream_closing() {
        let mut rec = live();
        let events = start(&mut rec, "+15550120", TransferBy::Agent).unwrap();
        apply(&mut rec, &events);
        let (after, events) = on_stream_ended(&mut rec);
        assert_eq!(after, AfterStream::Transfer("+15550120".into()));
        assert!(events.is_empty());
        assert_eq!(rec.status, CallStatus::InProgress);
    }

    #[test]
    fn the_end_during_a_transfer_closes_it_as_cancelled() {
        let mut rec = live();
        let events = start(&mut rec, "+15550120", TransferBy::Agent).unwrap();
        apply(&mut rec, &events);
        let report = crate::call::lifecycle::ProviderStatus {
            call_sid: Some("CA1".into()),
            status: CallStatus::Completed,
            sequence: None,
            duration_secs: None,
            answered_by: None,
            error_code: None,
            sip_response_code: None,
        };
        let events = crate::call::lifecycle::on_provider_status(&mut rec, &report).into_events();
        apply(&mut rec, &events);
        assert_eq!(rec.transfer.as_ref().unwrap().state, TransferState::Canceled);
        assert_eq!(rec.status, CallStatus::Completed);
        assert!(rec.end_reason.starts_with(TRANSFER_FAILED_PREFIX), "{}", rec.end_reason);
    }

    #[test]
    fn the_tool_schema_offers_exactly_the_targets() {
        let targets = vec![
            TransferTarget {
                number: "+15550120".into(),
                description: "billing".into(),
            },
            TransferTarget {
                number: "+15550122".into(),
                description: "sales".into(),
            },
        ];
        // Exactly the shape voice-agent-wire's spec tests check for every dialect.
        assert_eq!(
            tool_parameters(&targets),
            serde_json::json!({
                "type": "object",
                "properties": {"number": {"type": "string", "enum": ["+15550120", "+15550122"],
                    "description": "Who to transfer to; one of: +15550120: billing; +15550122: sales"}},
                "required": ["number"]
            })
        );
    }
}
