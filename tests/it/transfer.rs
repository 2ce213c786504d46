//! Hand-off to a person (call transfers), over real sockets: the server with
//! the Twilio emulator (which runs the `<Dial>` the transfer redirects the
//! call into, against its target numbers: +15550120 answers and talks a
//! few seconds, +15550122 is busy) and the realtime-AI emulator (whose agent,
//! offered `transfer_call`, answers the callee's question with the hand-off
//! sentence and a transfer to the first target).

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use voice_agent_proto::v1 as pb;
use voice_agent_server::Options;
use voice_agent_server::config::{Config, Secret};
use voice_agent_server::emulator::realtime::HANDOFF_LINE;
use voice_agent_server::emulator::twilio::{StreamEnd, TwilioEmulatorConfig, TwilioEmulatorHandle};
use voice_agent_tests::*;

const LIMIT: Duration = Duration::from_secs(90);
/// The server's apology when the target did not take the call.
const APOLOGY: &str = "Sorry, nobody could take your call right now. Please try again later. Goodbye.";

/// A Twilio emulator of the test's own (to read what the callee heard and
/// what was dialled), and the options that make the server use it.
async fn own_twilio() -> (TwilioEmulatorHandle, Options) {
    use voice_agent_server::telephony::twilio::TwilioClient;
    let emu = voice_agent_server::emulator::twilio::TwilioEmulator::start(TwilioEmulatorConfig::default())
        .await
        .unwrap();
    let client = TwilioClient::new(
        &emu.base_url(),
        emu.account_sid(),
        emu.auth_token(),
        Duration::from_secs(10),
    )
    .unwrap();
    let telephony: Arc<dyn voice_agent_server::telephony::Telephony> =
        Arc::new(voice_agent_server::telephony::provider::Twilio::new(client));
    let options = Options {
        telephony: Some((telephony, Secret::new(emu.auth_token()))),
        ..Default::default()
    };
    (emu, options)
}

fn target(number: &str, description: &str) -> pb::TransferTarget {
    pb::TransferTarget {
        number: number.into(),
        description: description.into(),
    }
}

fn transfers(events: &[pb::CallEvent]) -> Vec<(String, pb::TransferState, pb::TransferBy)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::call_event::Kind::Transfer(t)) => Some((
                t.target.clone(),
                pb::TransferState::try_from(t.state).unwrap(),
                pb::TransferBy::try_from(t.by).unwrap(),
            )),
            _ => None,
        })
        .collect()
}

fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// `voice_agent_calls_ended_total` of COMPLETED calls in end class `class`.
async fn ended_with(server: &TestServer, class: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric(
        &text,
        &format!("voice_agent_calls_ended_total{{status=\"COMPLETED\",class=\"{class}\"}}"),
    )
}

/// The emulator's report of the call once it has finished.
async fn finished(emu: &TwilioEmulatorHandle, sid: &str) -> voice_agent_server::emulator::twilio::EmulatedCallReport {
    tokio::time::timeout(LIMIT, emu.wait_finished(sid))
        .await
        .expect("the call finishes")
        .expect("a known call")
}

#[tokio::test]
async fn the_agent_hands_the_call_to_a_person_who_answers() {
    let (twilio, options) = own_twilio().await;
    let server = TestServer::with_options(Config::for_tests(), options).await;
    let mut client = server.client().await;
    let (placed, events) = call_and_watch(
        &mut client,
        pb::PlaceCallRequest {
            transfer_targets: vec![
                target("+15550120", "the billing desk: invoices and refunds"),
                target("+15550122", "sales"),
            ],
            record: Some(true),
            ..place("+15550199")
        },
        LIMIT,
    )
    .await;
    // The hand-off sentence is heard in full before the transfer starts.
    let lines = transcripts(&events);
    let handoff = lines
        .iter()
        .position(|(s, t, _)| *s == pb::Speaker::Agent && t == HANDOFF_LINE)
        .expect("the hand-off sentence");
    assert!(!lines[handoff].2, "not interrupted");
    let started = events
        .iter()
        .position(|e| matches!(&e.kind, Some(pb::call_event::Kind::Transfer(_))))
        .unwrap();
    let said = events
        .iter()
        .position(|e| matches!(&e.kind, Some(pb::call_event::Kind::Transcript(t)) if t.text == HANDOFF_LINE))
        .unwrap();
    assert!(said < started, "the sentence is stored before the transfer");
    assert_eq!(
        transfers(&events),
        vec![
            (
                "+15550120".to_string(),
                pb::TransferState::Started,
                pb::TransferBy::Agent
            ),
            (
                "+15550120".to_string(),
                pb::TransferState::Answered,
                pb::TransferBy::Agent
            ),
        ]
    );
    assert_eq!(
        statuses(&events).last(),
        Some(&pb::CallStatus::Completed),
        "never FAILED by the stream closing"
    );
    // Nothing the agent said comes after the hand-off: its session closed.
    assert!(lines[handoff + 1..].iter().all(|(s, _, _)| *s != pb::Speaker::Agent));

    let call = get_call(&mut client, &placed.call_id).await;
    assert_eq!(call.end_reason, "transferred to +15550120 (answered)");
    assert_eq!(call.transfer_targets.len(), 2);
    let transfer = call.transfer.unwrap();
    assert_eq!(transfer.state, pb::TransferState::Answered as i32);
    assert_eq!(transfer.by, pb::TransferBy::Agent as i32);
    // The recording stopped at the hand-off, complete.
    assert_eq!(
        call.recording.map(|r| r.state),
        Some(pb::RecordingState::Complete as i32)
    );

    let report = finished(&twilio, &placed.provider_call_id).await;
    assert_eq!(report.dials.len(), 1);
    assert_eq!(report.dials[0].number, "+15550120");
    assert_eq!(report.dials[0].caller_id, call.from, "our number is the caller id");
    assert_eq!(report.dials[0].timeout, 20);
    assert_eq!(report.dials[0].status, "completed");
    assert_eq!(report.stream().unwrap().ended, Some(StreamEnd::Stopped));
    assert!(!report.said.iter().any(|s| s == APOLOGY));
    assert_eq!(ended_with(&server, "transferred").await, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn a_busy_target_gets_the_callee_an_apology_and_the_call_ends_saying_why() {
    let (twilio, options) = own_twilio().await;
    let server = TestServer::with_options(Config::for_tests(), options).await;
    let mut client = server.client().await;
    let (placed, events) = call_and_watch(
        &mut client,
        pb::PlaceCallRequest {
            transfer_targets: vec![target("+15550122", "the sales team")],
            ..place("+15550199")
        },
        LIMIT,
    )
    .await;
    assert_eq!(
        transfers(&events),
        vec![
            (
                "+15550122".to_string(),
                pb::TransferState::Started,
                pb::TransferBy::Agent
            ),
            ("+15550122".to_string(), pb::TransferState::Busy, pb::TransferBy::Agent),
        ]
    );
    assert_eq!(statuses(&events).last(), Some(&pb::CallStatus::Completed));
    let call = get_call(&mut client, &placed.call_id).await;
    assert_eq!(
        call.end_reason,
        "the transfer to +15550122 did not connect: the line was busy"
    );
    let report = finished(&twilio, &placed.provider_call_id).await;
    assert_eq!(report.dials[0].status, "busy");
    assert_eq!(report.said.last().map(String::as_str), Some(APOLOGY));
    assert_eq!(ended_with(&server, "transfer_failed").await, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn an_operator_transfers_a_live_call_and_a_second_transfer_is_refused() {
    let (twilio, options) = own_twilio().await;
    let server = TestServer::with_options(Config::for_tests(), options).await;
    let mut client = server.client().await;
    // No targets: the agent never transfers by itself.
    let placed = client.place_call(place("+15550199")).await.unwrap().into_inner();
    let mut stream = watch(&mut client, &placed.call_id, 0).await;
    watch_until(&mut stream, LIMIT, is_transcript).await;
    let response = client
        .transfer_call(pb::TransferCallRequest {
            call_id: placed.call_id.clone(),
            number: "+15550120".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let transfer = response.call.unwrap().transfer.unwrap();
    assert_eq!(transfer.state, pb::TransferState::Started as i32);
    assert_eq!(transfer.by, pb::TransferBy::Operator as i32);
    let again = client
        .transfer_call(pb::TransferCallRequest {
            call_id: placed.call_id.clone(),
            number: "+15550122".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&again), "CALL_NOT_LIVE");

    let rest = watch_rest(&mut stream, LIMIT).await;
    assert_eq!(
        transfers(&rest).last(),
        Some(&(
            "+15550120".to_string(),
            pb::TransferState::Answered,
            pb::TransferBy::Operator
        ))
    );
    assert_eq!(statuses(&rest).last(), Some(&pb::CallStatus::Completed));
    let call = get_call(&mut client, &placed.call_id).await;
    assert_eq!(call.end_reason, "transferred to +15550120 (answered)");
    let report = finished(&twilio, &placed.provider_call_id).await;
    assert_eq!(report.dials.len(), 1, "one dial, whatever was asked after it");
    server.stop().await;
}

#[tokio::test]
async fn transfer_call_is_refused_on_an_ended_call_and_bad_input_is_named() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let (placed, _) = call_and_watch(&mut client, place("+15550102"), LIMIT).await;
    let ended = client
        .transfer_call(pb::TransferCallRequest {
            call_id: placed.call_id.clone(),
            number: "+15550120".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(ended.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&ended), "CALL_NOT_LIVE");
    let call = get_call(&mut client, &placed.call_id).await;
    assert!(call.transfer.is_none(), "nothing recorded");

    let bad = client
        .transfer_call(pb::TransferCallRequest {
            call_id: placed.call_id.clone(),
            number: "0800 123".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().starts_with("number:"), "{}", bad.message());

    for (targets, field) in [
        (vec![target("+1555", "x")], "transfer_targets[0].number"),
        (vec![target("+15550120", "")], "transfer_targets[0].description"),
        (
            vec![target("+15550120", "a"), target("+15550120", "b")],
            "transfer_targets[1].number",
        ),
        (
            (0..9).map(|i| target(&format!("+1555012{i}0"), "x")).collect(),
            "transfer_targets",
        ),
        (
            vec![target("+15550120", &"d".repeat(513))],
            "transfer_targets[0].description",
        ),
    ] {
        let refused = client
            .place_call(pb::PlaceCallRequest {
                transfer_targets: targets,
                ..place("+15550199")
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().starts_with(&format!("{field}:")),
            "{}",
            refused.message()
        );
    }
    server.stop().await;
}
