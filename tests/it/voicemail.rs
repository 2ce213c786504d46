//! Answering-machine detection and the voicemail policy, and templated
//! instructions and greetings, over real sockets: the server, the Twilio
//! emulator (a person, or the answering machine at +15550110: greeting, beep,
//! silence; detection results posted signed to /twilio/amd) and the
//! realtime-AI emulator.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use voice_agent_proto::v1 as pb;
use voice_agent_server::call::CallStatus;
use voice_agent_server::call::lifecycle::{EndClass, amd};
use voice_agent_server::emulator::twilio::EndCause;
use voice_agent_tests::*;

const LIMIT: Duration = Duration::from_secs(120);
const MACHINE: &str = "+15550110";

fn answered_by(events: &[pb::CallEvent]) -> Vec<pb::AnsweredBy> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::call_event::Kind::AnsweredBy(a)) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

fn voicemail(mode: pb::VoicemailMode, message: &str) -> Option<pb::VoicemailPolicy> {
    Some(pb::VoicemailPolicy {
        mode: mode as i32,
        message: message.into(),
    })
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn a_machine_gets_the_message_after_the_beep_then_the_call_hangs_up() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let req = pb::PlaceCallRequest {
        voicemail: voicemail(
            pb::VoicemailMode::LeaveMessage,
            "Hi {{name}}, this is Contoso Clinic. Please call us back at {{phone}}.",
        ),
        variables: vars(&[("name", "Sam"), ("phone", "555 0100")]),
        ..place(MACHINE)
    };
    let (placed, events) = call_and_watch(&mut client, req, LIMIT).await;
    let call = get_call(&mut client, &placed.call_id).await;
    assert_eq!(call.status(), pb::CallStatus::Completed);
    assert_eq!(call.answered_by, "machine_end_beep");
    assert_eq!(call.end_reason, amd::MESSAGE_LEFT_REASON);
    assert_eq!(
        EndClass::of(CallStatus::Completed, &call.end_reason),
        EndClass::Voicemail,
        "counted apart from normal calls"
    );
    let voicemail = call.voicemail.clone().unwrap();
    assert_eq!(voicemail.mode(), pb::VoicemailMode::LeaveMessage);
    assert_eq!(
        voicemail.message,
        "Hi Sam, this is Contoso Clinic. Please call us back at 555 0100."
    );
    let detected = answered_by(&events);
    assert_eq!(detected.len(), 1, "{detected:?}");
    assert_eq!(detected[0].answered_by, "machine_end_beep");
    assert_eq!(detected[0].action, "leaving the voicemail message");
    assert!(detected[0].detection_ms > 5000, "the greeting ran first: {detected:?}");

    let twilio = server.emulators.twilio.as_ref().unwrap();
    let report = twilio.call(&placed.provider_call_id).unwrap();
    assert_eq!(report.end_cause, Some(EndCause::RestUpdate), "our server hung up");
    // The result was posted signed and taken.
    assert_eq!(report.amd_callbacks.len(), 1);
    assert_eq!(report.amd_callbacks[0].status, "machine_end_beep");
    assert_eq!(report.amd_callbacks[0].response_status, Some(204));
    // No <Say> greeting to the machine: the TwiML only connects the stream.
    let twiml = report.twiml_fetches[0].body.clone().unwrap();
    assert!(!twiml.contains("<Say>"), "{twiml}");
    assert!(report.said.is_empty(), "{:?}", report.said);
    // The machine recorded the agent's message, all of it after the beep.
    let stream = report.stream().unwrap();
    let beep = stream.beep_ended_ms.expect("the machine beeped");
    assert!(!stream.heard.is_empty(), "the machine recorded the message");
    assert!(
        stream.heard.iter().all(|h| h.at_ms >= beep),
        "agent audio before the beep: {:?} vs beep at {beep}",
        stream.heard.iter().map(|h| h.at_ms).collect::<Vec<_>>()
    );
    assert!(stream.heard_bytes().len() / 8 > 1000, "a whole message was heard");
    // The AI was asked for exactly the message, and heard nothing of the machine.
    let sessions = server.emulators.realtime.as_ref().unwrap().sessions();
    assert_eq!(sessions.len(), 1);
    let ai = &sessions[0];
    assert_eq!(ai.response_instructions.len(), 1, "{:?}", ai.response_instructions);
    assert!(
        ai.response_instructions[0].contains("\"Hi Sam, this is Contoso Clinic. Please call us back at 555 0100.\""),
        "{:?}",
        ai.response_instructions
    );
    assert_eq!(ai.appends, 0, "the machine's greeting was kept from the AI");
    // The transcript says what was left on the machine.
    let lines = transcripts(&events);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, pb::Speaker::Agent);
    server.stop().await;
}

#[tokio::test]
async fn a_machine_is_hung_up_on_under_the_hang_up_policy() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let req = pb::PlaceCallRequest {
        voicemail: voicemail(pb::VoicemailMode::HangUp, ""),
        ..place(MACHINE)
    };
    let (placed, events) = call_and_watch(&mut client, req, LIMIT).await;
    let call = get_call(&mut client, &placed.call_id).await;
    assert_eq!(call.status(), pb::CallStatus::Completed);
    assert_eq!(call.answered_by, "machine_start");
    assert_eq!(call.end_reason, amd::hung_up_reason("machine_start"));
    let detected = answered_by(&events);
    assert_eq!(detected.len(), 1, "{detected:?}");
    assert_eq!(detected[0].action, "hanging up");
    let report = server
        .emulators
        .twilio
        .as_ref()
        .unwrap()
        .call(&placed.provider_call_id)
        .unwrap();
    assert_eq!(report.end_cause, Some(EndCause::RestUpdate));
    let stream = report.stream().unwrap();
    assert!(stream.heard.is_empty(), "nothing was said to the machine");
    assert!(stream.beep_ended_ms.is_none(), "hung up during the greeting");
    let ai = &server.emulators.realtime.as_ref().unwrap().sessions()[0];
    assert_eq!(ai.responses, 0, "the agent never spoke");
    assert!(transcripts(&events).is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_person_is_greeted_once_detection_says_human() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let req = pb::PlaceCallRequest {
        voicemail: voicemail(pb::VoicemailMode::LeaveMessage, "Please call us back."),
        greeting: Some("Hello {{name}}, this is Contoso Clinic.".into()),
        instructions: "You are the assistant of Contoso Clinic calling {{name}}.".into(),
        variables: vars(&[("name", "Sam")]),
        ..place("+15550199")
    };
    let (placed, events) = call_and_watch(&mut client, req, LIMIT).await;
    let call = get_call(&mut client, &placed.call_id).await;
    assert_eq!(call.status(), pb::CallStatus::Completed);
    assert_eq!(call.answered_by, "human");
    assert_eq!(
        call.instructions,
        "You are the assistant of Contoso Clinic calling Sam."
    );
    let detected = answered_by(&events);
    assert_eq!(detected.len(), 1, "{detected:?}");
    assert_eq!(detected[0].answered_by, "human");
    assert_eq!(detected[0].action, "greeting the callee");
    // The agent spoke only after detection said human.
    let at = |p: &dyn Fn(&pb::CallEvent) -> bool| events.iter().position(p).unwrap();
    let detected_at = at(&|e| matches!(e.kind, Some(pb::call_event::Kind::AnsweredBy(_))));
    let first_agent =
        at(&|e| matches!(&e.kind, Some(pb::call_event::Kind::Transcript(t)) if t.speaker() == pb::Speaker::Agent));
    assert!(detected_at < first_agent, "{events:?}");
    assert!(
        !call.end_reason.contains("answering machine"),
        "a person's call ends as usual: {}",
        call.end_reason
    );
    // The greeting went to the AI, filled in, not to Twilio's <Say>.
    let report = server
        .emulators
        .twilio
        .as_ref()
        .unwrap()
        .call(&placed.provider_call_id)
        .unwrap();
    assert!(report.said.is_empty(), "{:?}", report.said);
    assert_eq!(report.amd_callbacks[0].status, "human");
    let stream = report.stream().unwrap();
    assert!(stream.heard_bytes().len() / 8 > 2000, "the callee heard the agent");
    let (first_heard, said_hello) = (stream.heard[0].at_ms, stream.callee_lines[0].ended_ms.unwrap());
    assert!(
        first_heard > said_hello,
        "the agent waited for detection: {first_heard} vs {said_hello}"
    );
    let ai = &server.emulators.realtime.as_ref().unwrap().sessions()[0];
    assert!(
        ai.response_instructions[0].contains("\"Hello Sam, this is Contoso Clinic.\""),
        "{:?}",
        ai.response_instructions
    );
    let session = ai.session_update.as_ref().unwrap().to_string();
    assert!(session.contains("calling Sam."), "{session}");
    server.stop().await;
}

/// The `google.rpc.ErrorInfo` of an error status.
fn error_info(e: &tonic::Status) -> tonic_types::ErrorInfo {
    use tonic_types::StatusExt;
    e.check_error_details().unwrap().error_info().cloned().unwrap()
}

#[tokio::test]
async fn templates_refuse_missing_values_and_are_escaped_for_twiml() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    // A placeholder without a value: INVALID_ARGUMENT naming it, nothing stored.
    for req in [
        pb::PlaceCallRequest {
            instructions: "Ask {{ name }} about {{day}}.".into(),
            variables: vars(&[("day", "Friday")]),
            ..place("+15550199")
        },
        pb::PlaceCallRequest {
            greeting: Some("Hi {{name}}".into()),
            ..place("+15550199")
        },
        pb::PlaceCallRequest {
            voicemail: voicemail(pb::VoicemailMode::LeaveMessage, "Call {{name}} back"),
            ..place("+15550199")
        },
    ] {
        let e = client.place_call(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("{{name}}"), "{}", e.message());
        assert_eq!(
            error_info(&e).metadata.get("field").map(String::as_str),
            Some("variables")
        );
    }
    // Bad variables and policies are refused too.
    for (req, field) in [
        (
            pb::PlaceCallRequest {
                variables: vars(&[("not-a-name", "x")]),
                ..place("+15550199")
            },
            "variables",
        ),
        (
            pb::PlaceCallRequest {
                variables: vars(&[("v", &"x".repeat(1025))]),
                ..place("+15550199")
            },
            "variables",
        ),
        (
            pb::PlaceCallRequest {
                variables: (0..33).map(|i| (format!("v{i}"), "x".to_string())).collect(),
                ..place("+15550199")
            },
            "variables",
        ),
        (
            pb::PlaceCallRequest {
                voicemail: voicemail(pb::VoicemailMode::LeaveMessage, "  "),
                ..place("+15550199")
            },
            "voicemail.message",
        ),
        (
            pb::PlaceCallRequest {
                voicemail: Some(pb::VoicemailPolicy {
                    mode: 99,
                    message: String::new(),
                }),
                ..place("+15550199")
            },
            "voicemail.mode",
        ),
    ] {
        let e = client.place_call(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e:?}");
        assert_eq!(error_info(&e).metadata.get("field").map(String::as_str), Some(field));
    }
    let listed = client
        .list_calls(pb::ListCallsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.calls.is_empty(), "refused requests store nothing");

    // A value with markup lands in the TwiML escaped, and is said as text.
    let req = pb::PlaceCallRequest {
        greeting: Some("Hello {{name}}.".into()),
        variables: vars(&[("name", "Sam</Say><Hangup/> & \"co\"")]),
        ..place("+15550199")
    };
    let placed = client.place_call(req).await.unwrap().into_inner();
    let mut stream = watch(&mut client, &placed.call_id, 0).await;
    watch_until(&mut stream, LIMIT, is_transcript).await;
    let twilio = server.emulators.twilio.as_ref().unwrap();
    let report = twilio.call(&placed.provider_call_id).unwrap();
    let twiml = report.twiml_fetches[0].body.clone().unwrap();
    assert!(
        twiml.contains("<Say>Hello Sam&lt;/Say&gt;&lt;Hangup/&gt; &amp; &quot;co&quot;.</Say>"),
        "{twiml}"
    );
    assert_eq!(report.said, vec!["Hello Sam</Say><Hangup/> & \"co\"."]);
    client
        .hang_up_call(pb::HangUpCallRequest {
            call_id: placed.call_id.clone(),
        })
        .await
        .unwrap();
    watch_rest(&mut stream, LIMIT).await;
    server.stop().await;
}

#[tokio::test]
async fn detection_results_must_be_signed() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let (placed, _) = call_and_watch(&mut client, place("+15550102"), LIMIT).await;
    let url = format!("{}/twilio/amd?call_id={}", server.url(), placed.call_id);
    let form = [("CallSid", placed.provider_call_id.as_str()), ("AnsweredBy", "human")];
    let http = reqwest::Client::new();
    for signature in [None, Some("bm90IGEgc2lnbmF0dXJl")] {
        let mut req = http.post(&url).form(&form);
        if let Some(s) = signature {
            req = req.header("X-Twilio-Signature", s);
        }
        assert_eq!(req.send().await.unwrap().status(), 403, "{signature:?}");
    }
    // Signed but with a value Twilio never sends: refused, nothing stored.
    let token = server.state.twilio_auth_token.expose().to_string();
    let params: Vec<(String, String)> = [("CallSid", placed.provider_call_id.as_str()), ("AnsweredBy", "robot")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let sig = voice_agent_server::telephony::twilio::signature::compute(&token, &url, &params);
    let resp = http
        .post(&url)
        .header("X-Twilio-Signature", sig)
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let call = get_call(&mut client, &placed.call_id).await;
    assert_eq!(call.answered_by, "");
    server.stop().await;
}
