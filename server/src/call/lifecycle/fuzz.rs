//! Fuzz target (property test) of the status-callback path: any form Twilio
//! (or anyone past the signature) posts goes through the edge's parse and
//! [`on_provider_status`] without a panic, and no sequence of callbacks moves
//! a call backwards, out of a terminal status, or ends it without a reason.
//! docs/fuzzing.md has the long run's figures.

use chrono::Utc;
use proptest::prelude::*;

use super::*;
use crate::http::provider_status;

/// Inputs per target in the test command; `PROPTEST_CASES` overrides it.
const CASES: u32 = 256;

const SID: &str = "CA11111111111111111111111111111111";

fn config() -> ProptestConfig {
    // `ProptestConfig::default()` reads PROPTEST_CASES; only without it is ours the default.
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = CASES;
    }
    c
}

const STATUSES: [CallStatus; 9] = [
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

fn record(status: CallStatus, provider_call_id: &str, last: Option<u64>, end_reason: &str) -> CallRecord {
    CallRecord {
        status,
        provider_call_id: provider_call_id.into(),
        // A record already terminal has its reason (the invariant under test).
        end_reason: if status.is_terminal() && end_reason.is_empty() {
            "ended".into()
        } else {
            end_reason.into()
        },
        last_provider_sequence: last,
        ..CallRecord::for_tests()
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[\\x00-\\x1f -~]{0,12}"]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..12u64).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        Just(" 3".to_string()),
        text(),
    ]
}

/// A status-callback form: the fields the parse reads, with valid, edge and
/// arbitrary values, repeated or missing, plus arbitrary others.
fn form() -> impl Strategy<Value = Vec<(String, String)>> {
    let status = prop_oneof![
        4 => proptest::sample::select(&[
            "queued", "initiated", "ringing", "in-progress", "answered", "completed", "busy", "no-answer",
            "canceled", "failed",
        ][..]).prop_map(str::to_string),
        1 => text(),
    ];
    let sid = prop_oneof![
        3 => Just(SID.to_string()),
        1 => Just("CA22222222222222222222222222222222".to_string()),
        1 => Just(String::new()),
        1 => text(),
    ];
    let field = prop_oneof![
        3 => status.prop_map(|v| ("CallStatus".to_string(), v)),
        2 => sid.prop_map(|v| ("CallSid".to_string(), v)),
        2 => number().prop_map(|v| ("SequenceNumber".to_string(), v)),
        1 => number().prop_map(|v| ("CallDuration".to_string(), v)),
        1 => text().prop_map(|v| ("AnsweredBy".to_string(), v)),
        1 => prop_oneof![Just(String::new()), text()].prop_map(|v| ("ErrorCode".to_string(), v)),
        1 => text().prop_map(|v| ("SipResponseCode".to_string(), v)),
        1 => (text(), text()),
    ];
    proptest::collection::vec(field, 0..10)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_status_callbacks_never_panic_nor_move_a_call_backwards(
        start in 0..9usize,
        provider_sid in prop_oneof![Just(SID), Just("")],
        last in proptest::option::of(0..6u64),
        forms in proptest::collection::vec(form(), 1..8),
    ) {
        let mut rec = record(STATUSES[start], provider_sid, last, "");
        for form in forms {
            let has_known_status = form
                .iter()
                .rfind(|(k, _)| k == "CallStatus")
                .is_some_and(|(_, v)| CallStatus::from_twilio(v).is_some());
            let Some(report) = provider_status(form) else {
                prop_assert!(!has_known_status);
                continue;
            };
            prop_assert!(has_known_status);
            let before = rec.clone();
            let out = on_provider_status(&mut rec, &report);
            if let Reported::Advanced(events) = &out {
                for ev in events {
                    rec.apply(ev, Utc::now());
                }
            }
            match out {
                Reported::Ignored(Ignored::ForeignCallSid) => prop_assert_eq!(&rec, &before),
                Reported::Ignored(_) => prop_assert_eq!(rec.status, before.status),
                Reported::Advanced(_) => prop_assert_eq!(rec.status, report.status),
            }
            prop_assert!(rec.status.rank() >= before.status.rank(), "{:?} → {:?}", before.status, rec.status);
            if before.status.is_terminal() {
                prop_assert_eq!(rec.status, before.status);
                prop_assert_eq!(&rec.end_reason, &before.end_reason);
            }
            if !before.end_reason.is_empty() {
                prop_assert_eq!(&rec.end_reason, &before.end_reason);
            }
            if rec.status.is_terminal() {
                prop_assert!(!rec.end_reason.is_empty(), "ended {:?} without a reason", rec.status);
            }
            prop_assert!(rec.duration_seconds >= before.duration_seconds);
            if let (Some(b), Some(a)) = (before.last_provider_sequence, rec.last_provider_sequence) {
                prop_assert!(a >= b);
            }
        }
    }
}
