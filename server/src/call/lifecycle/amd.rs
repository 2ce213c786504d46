//! Answering-machine detection (AMD) and the voicemail policy, as pure
//! decisions: which result the provider may report, what the agent does
//! about it, and the end reasons that say what happened.
//!
//! The provider runs detection asynchronously (Twilio `AsyncAmd=true`,
//! protocols.md §2.3): the media stream starts at once and the result
//! arrives later on its own webhook. Meanwhile the bridge holds the agent's
//! greeting (and keeps the callee's audio from the AI, so that its turn
//! detection does not answer a machine's greeting), for at most
//! [`DETECTION_WAIT`]; without a result by then the callee is greeted as if
//! a human had answered (hanging up on a person is the worse mistake).

use std::time::Duration;

use crate::call::{CallRecord, EventKind, VoicemailMode};

/// Every `AnsweredBy` value Twilio reports (protocols.md §2.3).
pub const ANSWERED_BY: [&str; 7] = [
    "human",
    "machine_start",
    "machine_end_beep",
    "machine_end_silence",
    "machine_end_other",
    "fax",
    "unknown",
];

/// `MachineDetectionTimeout` we ask the provider for, seconds (Twilio's
/// default, sent explicitly so that our own bound below is derived from it).
pub const PROVIDER_TIMEOUT_SECS: u64 = 30;

/// The longest the agent holds its greeting for a detection result:
/// the provider's own timeout plus 10 s for its callback to arrive. With
/// "leave a message" the same bound covers the wait for the beep.
pub const DETECTION_WAIT: Duration = Duration::from_secs(PROVIDER_TIMEOUT_SECS + 10);

/// What the agent does once detection has spoken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A person (or no telling): greet and converse.
    Converse,
    /// A machine or a fax under a policy that does not leave a message: hang up.
    HangUp,
    /// A machine's greeting started; the message waits for its end (the beep).
    WaitForBeep,
    /// The machine's greeting ended: speak the message, then hang up.
    LeaveMessage,
}

impl Decision {
    /// The `action` of the AnsweredBy event.
    pub fn action(self) -> &'static str {
        match self {
            Self::Converse => "greeting the callee",
            Self::HangUp => "hanging up",
            Self::WaitForBeep => "waiting for the end of the machine's greeting",
            Self::LeaveMessage => "leaving the voicemail message",
        }
    }
}

/// What the agent does when detection says `answered_by` under `mode`.
pub fn decide(mode: VoicemailMode, answered_by: &str) -> Decision {
    match (mode, answered_by) {
        (VoicemailMode::Off, _) | (_, "human" | "unknown") => Decision::Converse,
        (_, "fax") | (VoicemailMode::HangUp, _) => Decision::HangUp,
        (VoicemailMode::LeaveMessage, "machine_start") => Decision::WaitForBeep,
        (VoicemailMode::LeaveMessage, _) => Decision::LeaveMessage,
    }
}

/// The end reason of a call hung up because a machine or fax answered.
pub fn hung_up_reason(answered_by: &str) -> String {
    let what = if answered_by == "fax" {
        "a fax machine"
    } else {
        "an answering machine"
    };
    format!("{what} answered ({answered_by}); hung up as the voicemail policy says")
}

/// The end reason of a call that left its voicemail message.
pub const MESSAGE_LEFT_REASON: &str = "an answering machine answered; the agent left the voicemail message and hung up";

/// How the end reasons of this module start (metrics classify by it).
pub const REASON_MARKERS: [&str; 2] = ["an answering machine answered", "a fax machine answered"];

/// The provider's asynchronous detection result (protocols.md §2.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmdReport {
    /// `CallSid`, when given.
    pub call_sid: Option<String>,
    /// `AnsweredBy`.
    pub answered_by: String,
    /// `MachineDetectionDuration`, ms.
    pub detection_ms: Option<u32>,
}

/// Why a detection result changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmdIgnored {
    /// It names another call of the provider.
    ForeignCallSid,
    /// The call asked for no detection, has ended, or has a result already
    /// (the first result wins: a late callback after the bounded wait).
    NotWanted,
}

/// A detection result: the AnsweredBy event (the record takes `answered_by`
/// from it, see [`CallRecord::apply`]), or why it was ignored.
pub fn on_result(rec: &mut CallRecord, report: &AmdReport) -> Result<Vec<EventKind>, AmdIgnored> {
    if report
        .call_sid
        .as_deref()
        .filter(|s| !s.is_empty())
        .is_some_and(|s| rec.is_another_calls_sid(s))
    {
        return Err(AmdIgnored::ForeignCallSid);
    }
    if rec.voicemail.mode == VoicemailMode::Off || rec.voicemail.detected || rec.status.is_terminal() {
        return Err(AmdIgnored::NotWanted);
    }
    Ok(vec![detected(
        rec,
        &report.answered_by,
        report.detection_ms.unwrap_or(0),
        "",
    )])
}

/// The bridge waited [`DETECTION_WAIT`] for a result in vain: "unknown".
pub fn on_timeout(rec: &mut CallRecord) -> Vec<EventKind> {
    if rec.voicemail.detected || rec.status.is_terminal() {
        return vec![];
    }
    let note = format!(" (no detection result within {}s)", DETECTION_WAIT.as_secs());
    vec![detected(rec, "unknown", 0, &note)]
}

fn detected(rec: &mut CallRecord, answered_by: &str, detection_ms: u32, note: &str) -> EventKind {
    rec.voicemail.detected = true;
    let decision = decide(rec.voicemail.mode, answered_by);
    EventKind::AnsweredBy {
        answered_by: answered_by.to_string(),
        detection_ms,
        action: format!("{}{note}", decision.action()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{CallStatus, Voicemail};

    fn rec(mode: VoicemailMode) -> CallRecord {
        CallRecord {
            provider_call_id: "CA1".into(),
            status: CallStatus::InProgress,
            voicemail: Voicemail {
                mode,
                message: "call us back".into(),
                detected: false,
            },
            ..CallRecord::for_tests()
        }
    }

    #[test]
    fn decisions_follow_the_policy() {
        use Decision as D;
        use VoicemailMode as M;
        for a in ANSWERED_BY {
            assert_eq!(decide(M::Off, a), D::Converse, "{a}");
        }
        assert_eq!(decide(M::HangUp, "human"), D::Converse);
        assert_eq!(decide(M::HangUp, "unknown"), D::Converse);
        assert_eq!(decide(M::HangUp, "machine_start"), D::HangUp);
        assert_eq!(decide(M::HangUp, "machine_end_beep"), D::HangUp);
        assert_eq!(decide(M::HangUp, "fax"), D::HangUp);
        assert_eq!(decide(M::LeaveMessage, "human"), D::Converse);
        assert_eq!(decide(M::LeaveMessage, "machine_start"), D::WaitForBeep);
        assert_eq!(decide(M::LeaveMessage, "machine_end_beep"), D::LeaveMessage);
        assert_eq!(decide(M::LeaveMessage, "machine_end_silence"), D::LeaveMessage);
        assert_eq!(decide(M::LeaveMessage, "machine_end_other"), D::LeaveMessage);
        assert_eq!(decide(M::LeaveMessage, "fax"), D::HangUp);
    }

    #[test]
    fn the_first_result_wins_and_lands_on_the_record() {
        let mut r = rec(VoicemailMode::LeaveMessage);
        let report = AmdReport {
            call_sid: Some("CA1".into()),
            answered_by: "machine_end_beep".into(),
            detection_ms: Some(4200),
        };
        let events = on_result(&mut r, &report).unwrap();
        assert_eq!(
            events,
            vec![EventKind::AnsweredBy {
                answered_by: "machine_end_beep".into(),
                detection_ms: 4200,
                action: "leaving the voicemail message".into(),
            }]
        );
        r.apply(&events[0], chrono::Utc::now());
        assert_eq!(r.answered_by, "machine_end_beep");
        assert_eq!(on_result(&mut r, &report), Err(AmdIgnored::NotWanted));
        assert!(on_timeout(&mut r).is_empty());
    }

    #[test]
    fn foreign_sids_unwanted_results_and_the_timeout() {
        let mut r = rec(VoicemailMode::HangUp);
        let foreign = AmdReport {
            call_sid: Some("CA2".into()),
            answered_by: "human".into(),
            detection_ms: None,
        };
        assert_eq!(on_result(&mut r, &foreign), Err(AmdIgnored::ForeignCallSid));
        let mut off = rec(VoicemailMode::Off);
        let human = AmdReport {
            call_sid: None,
            ..foreign
        };
        assert_eq!(on_result(&mut off, &human), Err(AmdIgnored::NotWanted));
        let events = on_timeout(&mut r);
        let [
            EventKind::AnsweredBy {
                answered_by, action, ..
            },
        ] = events.as_slice()
        else {
            panic!("{events:?}")
        };
        assert_eq!(answered_by, "unknown");
        assert!(
            action.starts_with("greeting the callee (no detection result within 40s)"),
            "{action}"
        );
        assert!(hung_up_reason("fax").starts_with(REASON_MARKERS[1]));
        assert!(hung_up_reason("machine_start").starts_with(REASON_MARKERS[0]));
        assert!(MESSAGE_LEFT_REASON.starts_with(REASON_MARKERS[0]));
    }
}
