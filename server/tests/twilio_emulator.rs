//! The Twilio emulator over real sockets, driven by the server's own REST
//! client, against a tiny axum app in our server's role (TwiML, status and
//! media routes) built on our own twiml, media and signature code. It lives
//! with the server because the REST client does (the emulator crate cannot
//! depend on the server).

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use voice_agent_emulators::twilio::*;
use voice_agent_server::telephony::twilio::rest::{CreateCall, ErrorClass, TwilioClient, TwilioError, UpdateCall};
use voice_agent_wire::twilio::media::{self, TwilioInbound};
use voice_agent_wire::twilio::{signature, twiml};

const SECRET: &str = "s3cret";
/// Bytes of one agent reply and of each `media` message carrying it.
const REPLY_BYTES: usize = 4000;
const CHUNK: usize = 1600;

/// How the fake server's agent behaves on the media stream.
#[derive(Clone, Default)]
struct Agent {
    /// After the callee's n-th utterance, hang up over REST instead of replying.
    hang_up_after: Option<usize>,
    /// After the callee's n-th utterance, close the socket instead of replying.
    close_after: Option<usize>,
    /// Bytes of each reply.
    reply_bytes: Option<usize>,
    /// Send `clear` when the callee talks over queued agent audio.
    clear_on_barge_in: bool,
    /// On `start`, play this much audio then a mark, send garbage, then `clear` after the first inbound frames.
    clear_test: bool,
    /// Redirect the call with this TwiML after the callee's first utterance.
    redirect_after_first: Option<String>,
}

#[derive(Default)]
struct Log {
    statuses: Vec<(Vec<(String, String)>, bool)>,
    twiml_requests: Vec<(Vec<(String, String)>, bool)>,
    upgrades: Vec<bool>,
    received: Vec<String>,
    sent_audio: Vec<u8>,
    /// (mark name, audio bytes sent before it)
    sent_marks: Vec<(String, usize)>,
    echoes: Vec<String>,
    dtmf: Vec<String>,
    rest_results: Vec<Result<String, String>>,
    /// `<Dial action>` requests: their params, and whether the signature held.
    dial_actions: Vec<(Vec<(String, String)>, bool)>,
}

struct App {
    base: String,
    token: String,
    agent: Agent,
    log: Mutex<Log>,
    client: TwilioClient,
}

struct Fake {
    app: Arc<App>,
}

impl Fake {
    fn log<R>(&self, f: impl FnOnce(&Log) -> R) -> R {
        f(&self.app.log.lock().unwrap())
    }

    fn create(&self, to: &str) -> CreateCall {
        CreateCall {
            to: to.into(),
            from: "+15005550006".into(),
            url: format!("{}/twiml?call_id=c1", self.app.base),
            status_callback: format!("{}/status?call_id=c1", self.app.base),
            timeout: Duration::from_secs(30),
            time_limit: Duration::from_secs(600),
            async_amd: None,
        }
    }
}

fn fast_config() -> TwilioEmulatorConfig {
    TwilioEmulatorConfig {
        ring_time: Duration::from_millis(200),
        reply_gap: Duration::from_millis(400),
        ..TwilioEmulatorConfig::default()
    }
}

async fn setup(config: TwilioEmulatorConfig, agent: Agent) -> (TwilioEmulatorHandle, Fake) {
    let emu = TwilioEmulator::start(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let client = TwilioClient::new(
        &emu.base_url(),
        emu.account_sid(),
        emu.auth_token(),
        Duration::from_secs(5),
    )
    .unwrap();
    let app = Arc::new(App {
        base,
        token: emu.auth_token().to_string(),
        agent,
        log: Mutex::default(),
        client,
    });
    let router = Router::new()
        .route("/twiml", post(twiml_route))
        .route("/status", post(status_route))
        .route("/dial-action", post(dial_action_route))
        .route("/ws", get(ws_route))
        .with_state(app.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (emu, Fake { app })
}

fn client(emu: &TwilioEmulatorHandle) -> TwilioClient {
    TwilioClient::new(
        &emu.base_url(),
        emu.account_sid(),
        emu.auth_token(),
        Duration::from_secs(5),
    )
    .unwrap()
}

fn signed_ok(app: &App, headers: &HeaderMap, url: &str, params: &[(String, String)]) -> bool {
    headers
        .get(signature::HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|sig| signature::validate(&app.token, url, params, sig))
}

async fn twiml_route(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let ok = signed_ok(&app, &headers, &format!("{}{}", app.base, uri), &params);
    app.log.lock().unwrap().twiml_requests.push((params, ok));
    if !ok {
        return StatusCode::FORBIDDEN.into_response();
    }
    let ws = format!("{}/ws", app.base.replacen("http://", "ws://", 1));
    let body = twiml::connect_stream(Some("Hi there"), &ws, &[("call_id", "c1"), ("secret", SECRET)]);
    ([("content-type", "application/xml")], body).into_response()
}

async fn dial_action_route(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let ok = signed_ok(&app, &headers, &format!("{}{}", app.base, uri), &params);
    let busy = param(&params, "DialCallStatus") != Some("completed");
    app.log.lock().unwrap().dial_actions.push((params, ok));
    let body = if busy {
        twiml::say_and_hang_up("Sorry, nobody could take your call.")
    } else {
        twiml::hangup()
    };
    ([("content-type", "application/xml")], body).into_response()
}

async fn status_route(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let ok = signed_ok(&app, &headers, &format!("{}{}", app.base, uri), &params);
    app.log.lock().unwrap().statuses.push((params, ok));
    if ok {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::FORBIDDEN
    }
}

async fn ws_route(State(app): State<Arc<App>>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let url = format!("{}/ws", app.base.replacen("http://", "ws://", 1));
    let ok = signed_ok(&app, &headers, &url, &[]);
    app.log.lock().unwrap().upgrades.push(ok);
    if !ok {
        return StatusCode::FORBIDDEN.into_response();
    }
    ws.on_upgrade(move |socket| agent(app, socket))
}

async fn send_text(socket: &mut WebSocket, text: String) {
    let _ = socket.send(Message::Text(text.into())).await;
}

/// Plays `bytes` bytes of `fill` in `CHUNK`-byte messages, each followed by a mark.
async fn reply(app: &App, socket: &mut WebSocket, sid: &str, tag: &str, bytes: usize, fill: u8) {
    let mut sent = 0;
    let mut k = 0;
    while sent < bytes {
        let n = CHUNK.min(bytes - sent);
        let audio = vec![fill; n];
        send_text(socket, media::media_message_from_ulaw(sid, &audio)).await;
        sent += n;
        let name = format!("{tag}:{k}");
        k += 1;
        {
            let mut log = app.log.lock().unwrap();
            log.sent_audio.extend_from_slice(&audio);
            let before = log.sent_audio.len();
            log.sent_marks.push((name.clone(), before));
        }
        send_text(socket, media::mark_message(sid, &name)).await;
    }
}

/// Our server's role on the media stream: detect the callee's utterances
/// (non-silent frames followed by 100 ms of silence) and answer each.
async fn agent(app: Arc<App>, mut socket: WebSocket) {
    let mut sid = String::new();
    let (mut speaking, mut silent, mut utterances, mut frames) = (false, 0, 0usize, 0usize);
    while let Some(Ok(msg)) = socket.recv().await {
        let Message::Text(text) = msg else { continue };
        app.log.lock().unwrap().received.push(text.to_string());
        match media::parse_inbound(&text).unwrap() {
            TwilioInbound::Start(start) => {
                assert_eq!(start.custom_parameters.get("secret").map(String::as_str), Some(SECRET));
                sid = start.stream_sid;
                if app.agent.clear_test {
                    reply(&app, &mut socket, &sid, "long", 16_000, 0x55).await;
                    send_text(&mut socket, "this is not json".into()).await;
                }
            }
            TwilioInbound::Media(m) => {
                frames += 1;
                if app.agent.clear_test && frames == 10 {
                    send_text(&mut socket, media::clear_message(&sid)).await;
                    // Nothing is buffered now: this one comes back at once.
                    send_text(&mut socket, media::mark_message(&sid, "after-clear")).await;
                }
                if app.agent.clear_test && frames == 30 {
                    break;
                }
                let audio = B64.decode(m.payload).unwrap();
                assert_eq!(audio.len(), 160);
                let outstanding_now = {
                    let log = app.log.lock().unwrap();
                    log.sent_marks.len().saturating_sub(log.echoes.len())
                };
                if audio.iter().any(|b| *b != 0xFF) {
                    if !speaking && app.agent.clear_on_barge_in && outstanding_now > 0 {
                        send_text(&mut socket, media::clear_message(&sid)).await;
                    }
                    speaking = true;
                    silent = 0;
                } else if speaking {
                    silent += 1;
                    if silent == 5 {
                        speaking = false;
                        utterances += 1;
                        if app.agent.hang_up_after == Some(utterances) {
                            let app = app.clone();
                            tokio::spawn(async move {
                                let r = app.client.update_call(&call_sid(&app), &UpdateCall::Complete).await;
                                app.log
                                    .lock()
                                    .unwrap()
                                    .rest_results
                                    .push(r.map(|c| c.status).map_err(|e| e.to_string()));
                            });
                        } else if app.agent.close_after == Some(utterances) {
                            break;
                        } else if utterances == 1 && app.agent.redirect_after_first.is_some() {
                            let app = app.clone();
                            tokio::spawn(async move {
                                let t = app.agent.redirect_after_first.clone().unwrap();
                                let r = app.client.update_call(&call_sid(&app), &UpdateCall::Twiml(t)).await;
                                app.log
                                    .lock()
                                    .unwrap()
                                    .rest_results
                                    .push(r.map(|c| c.status).map_err(|e| e.to_string()));
                            });
                        } else {
                            let bytes = app.agent.reply_bytes.unwrap_or(REPLY_BYTES);
                            reply(
                                &app,
                                &mut socket,
                                &sid,
                                &format!("r{utterances}"),
                                bytes,
                                0x10 + utterances as u8,
                            )
                            .await;
                        }
                    }
                }
            }
            TwilioInbound::Mark(name) => app.log.lock().unwrap().echoes.push(name),
            TwilioInbound::Dtmf(d) => app.log.lock().unwrap().dtmf.push(d),
            TwilioInbound::Stop | TwilioInbound::Connected | TwilioInbound::Unknown => {}
        }
    }
}

/// The CallSid of the (single) call, from the `start` the app received.
fn call_sid(app: &App) -> String {
    let log = app.log.lock().unwrap();
    log.received
        .iter()
        .find_map(|t| match media::parse_inbound(t) {
            Ok(TwilioInbound::Start(s)) => Some(s.call_sid),
            _ => None,
        })
        .unwrap()
}

async fn finished(emu: &TwilioEmulatorHandle, sid: &str) -> EmulatedCallReport {
    tokio::time::timeout(Duration::from_secs(60), emu.wait_finished(sid))
        .await
        .expect("the call finishes")
        .expect("a known call")
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn answered_call_converses_and_ends_on_rest_hang_up() {
    let agent = Agent {
        hang_up_after: Some(3),
        ..Agent::default()
    };
    let (emu, fake) = setup(fast_config(), agent).await;
    let call = fake.app.client.create_call(&fake.create("+14155551212")).await.unwrap();
    assert_eq!(call.status, "queued");
    assert!(call.sid.starts_with("CA") && call.sid.len() == 34);
    assert_eq!(call.direction.as_deref(), Some("outbound-api"));
    assert_eq!(call.to_formatted.as_deref(), Some("(415) 555-1212"));
    let report = finished(&emu, &call.sid).await;

    // Status callbacks: Twilio's order, numbered from 0, all signed.
    assert_eq!(
        report.callback_statuses(),
        vec!["initiated", "ringing", "in-progress", "completed"]
    );
    assert!(report.callbacks.iter().all(|c| c.response_status == Some(204)));
    let statuses = fake.log(|l| l.statuses.clone());
    assert_eq!(statuses.len(), 4);
    for (i, (params, ok)) in statuses.iter().enumerate() {
        assert!(ok, "callback {i} is validly signed");
        assert_eq!(param(params, "SequenceNumber"), Some(i.to_string().as_str()));
        assert_eq!(param(params, "CallbackSource"), Some("call-progress-events"));
        assert_eq!(param(params, "CallSid"), Some(call.sid.as_str()));
        assert_eq!(param(params, "AccountSid"), Some(emu.account_sid()));
        assert!(param(params, "Timestamp").is_some_and(|t| t.ends_with("+0000")));
        assert_eq!(
            param(params, "CallDuration").is_some(),
            i == 3,
            "CallDuration only on the terminal event"
        );
    }
    let last = &statuses[3].0;
    assert!(param(last, "CallDuration").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(param(last, "Duration"), Some("1"));

    // TwiML fetched, signed, with the call's parameters; greeting said.
    let twiml_requests = fake.log(|l| l.twiml_requests.clone());
    assert_eq!(twiml_requests.len(), 1);
    assert!(twiml_requests[0].1);
    assert_eq!(param(&twiml_requests[0].0, "CallStatus"), Some("in-progress"));
    assert_eq!(report.said, vec!["Hi there"]);
    assert_eq!(fake.log(|l| l.upgrades.clone()), vec![true]);

    // The callee said its three lines; heard every reply byte in order.
    let stream = report.stream().unwrap();
    let lines: Vec<&str> = stream.callee_lines.iter().map(|u| u.text.as_str()).collect();
    assert_eq!(lines, CALLEE_LINES);
    assert!(stream.callee_lines.iter().all(|u| !u.barged_in));
    let sent_audio = fake.log(|l| l.sent_audio.clone());
    assert_eq!(sent_audio.len(), 2 * REPLY_BYTES);
    assert_eq!(stream.heard_bytes(), sent_audio);
    assert_eq!(stream.custom_parameters.get("secret").map(String::as_str), Some(SECRET));

    // Marks came back in order, each only once everything before it had played.
    let sent_marks = fake.log(|l| l.sent_marks.clone());
    assert_eq!(
        fake.log(|l| l.echoes.clone()),
        sent_marks.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
    );
    assert_eq!(stream.marks_echoed.len(), sent_marks.len());
    for (echo, (name, before)) in stream.marks_echoed.iter().zip(&sent_marks) {
        assert_eq!(&echo.name, name);
        assert!(!echo.cleared);
        assert_eq!(echo.played_bytes, *before as u64, "mark {name}");
    }

    // What the app received: connected, start, media with consistent numbering, stop last.
    let received = fake.log(|l| l.received.clone());
    let values: Vec<serde_json::Value> = received.iter().map(|t| serde_json::from_str(t).unwrap()).collect();
    assert_eq!(values[0]["event"], "connected");
    assert_eq!(values[1]["event"], "start");
    assert_eq!(values.last().unwrap()["event"], "stop");
    let seqs: Vec<u64> = values[1..]
        .iter()
        .map(|v| v["sequenceNumber"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        seqs.iter().zip(1..).all(|(s, i)| *s == i),
        "sequenceNumber counts every message from 1"
    );
    let chunks: Vec<u64> = values
        .iter()
        .filter(|v| v["event"] == "media")
        .map(|v| v["media"]["chunk"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(chunks.iter().zip(1..).all(|(c, i)| *c == i));
    assert_eq!(stream.ended, Some(StreamEnd::Stopped));
    assert_eq!(report.end_cause, Some(EndCause::RestUpdate));
    assert_eq!(fake.log(|l| l.rest_results.clone()), vec![Ok("completed".to_string())]);

    // The REST resource agrees.
    let fetched = client(&emu).fetch_call(&call.sid).await.unwrap();
    assert_eq!(fetched.status, "completed");
    assert!(fetched.end_time.is_some() && fetched.start_time.is_some());
    emu.shutdown().await;
}

#[tokio::test]
async fn clear_flushes_audio_and_marks_and_server_close_ends_the_call() {
    let agent = Agent {
        clear_test: true,
        ..Agent::default()
    };
    let (emu, fake) = setup(fast_config(), agent).await;
    let call = fake.app.client.create_call(&fake.create("+14155551212")).await.unwrap();
    let report = finished(&emu, &call.sid).await;
    let stream = report.stream().unwrap();

    assert_eq!(stream.clears_ms.len(), 1);
    let echoed = stream.echoed_mark_names();
    let sent: Vec<String> = fake.log(|l| l.sent_marks.iter().map(|(n, _)| n.clone()).collect());
    // Every mark of the long reply, in order, then the one sent after the clear.
    let mut expected: Vec<&str> = sent.iter().map(String::as_str).collect();
    expected.push("after-clear");
    assert_eq!(echoed, expected);
    let heard = stream.heard_bytes().len() as u64;
    assert!(heard < 16_000, "the clear cut the audio short");
    assert_eq!(heard + stream.audio_cleared_bytes, 16_000);
    let after = stream.marks_echoed.last().unwrap();
    assert!(!after.cleared);
    assert_eq!(after.played_bytes, heard);
    assert!(stream.marks_echoed.iter().filter(|m| m.cleared).count() >= 1);
    assert_eq!(stream.malformed, vec!["this is not json"]);
    // Our side closed the socket: nothing after </Connect>, so the call completes.
    assert_eq!(stream.ended, Some(StreamEnd::ServerClosed));
    assert_eq!(report.end_cause, Some(EndCause::TwimlEnded));
    assert_eq!(report.status, "completed");
    assert_eq!(report.callback_statuses().last(), Some(&"completed"));
    emu.shutdown().await;
}

#[tokio::test]
async fn unanswered_scenarios_end_with_their_status() {
    let (emu, fake) = setup(fast_config(), Agent::default()).await;
    let mut timeout_call = fake.create("+15550107");
    timeout_call.timeout = Duration::from_secs(1);
    let cases = [
        (fake.create("+15550102"), "busy", EndCause::Busy),
        (fake.create("+15550103"), "no-answer", EndCause::NoAnswer),
        (fake.create("+15550104"), "failed", EndCause::Failed),
        (timeout_call, "no-answer", EndCause::NoAnswer),
    ];
    let mut sids = Vec::new();
    for (req, ..) in &cases {
        sids.push(fake.app.client.create_call(req).await.unwrap().sid);
    }
    for ((_, status, cause), sid) in cases.iter().zip(&sids) {
        let r = finished(&emu, sid).await;
        assert_eq!(r.status, *status);
        assert_eq!(r.end_cause.as_ref(), Some(cause));
        assert_eq!(r.callback_statuses(), vec!["initiated", "ringing", *status]);
        let last = &r.callbacks[2].params;
        assert_eq!(param(last, "CallDuration"), Some("0"));
        assert_eq!(param(last, "Duration"), None);
        assert!(r.twiml_fetches.is_empty() && r.streams.is_empty());
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn cancel_while_ringing_then_updates_of_an_ended_call() {
    let (emu, fake) = setup(
        TwilioEmulatorConfig {
            ring_time: Duration::from_secs(30),
            ..fast_config()
        },
        Agent::default(),
    )
    .await;
    let call = fake.app.client.create_call(&fake.create("+14155551212")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let updated = fake
        .app
        .client
        .update_call(&call.sid, &UpdateCall::Cancel)
        .await
        .unwrap();
    assert_eq!(updated.status, "canceled");
    let r = finished(&emu, &call.sid).await;
    assert_eq!(r.callback_statuses(), vec!["initiated", "ringing", "canceled"]);
    assert_eq!(r.end_cause, Some(EndCause::RestUpdate));
    // Hanging up an ended call changes nothing; redirecting it is 21220.
    let again = fake
        .app
        .client
        .update_call(&call.sid, &UpdateCall::Complete)
        .await
        .unwrap();
    assert_eq!(again.status, "canceled");
    let e = fake
        .app
        .client
        .update_call(&call.sid, &UpdateCall::Twiml(twiml::hangup()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(21220));
    emu.shutdown().await;
}

#[tokio::test]
async fn callee_hangs_up_after_its_first_line() {
    let agent = Agent {
        reply_bytes: Some(8 * 3000),
        ..Agent::default()
    };
    let (emu, fake) = setup(fast_config(), agent).await;
    let call = fake.app.client.create_call(&fake.create("+15550105")).await.unwrap();
    let r = finished(&emu, &call.sid).await;
    assert_eq!(r.end_cause, Some(EndCause::CalleeHungUp));
    assert_eq!(r.status, "completed");
    let stream = r.stream().unwrap();
    assert_eq!(stream.callee_lines.len(), 1);
    assert!(
        (stream.heard_bytes().len() as u64) < 8 * 3000,
        "it left during the reply"
    );
    let received = fake.log(|l| l.received.clone());
    assert!(received.last().unwrap().contains(r#""event":"stop""#));
    emu.shutdown().await;
}

#[tokio::test]
async fn dtmf_scenario_sends_digits_then_converses() {
    let agent = Agent {
        hang_up_after: Some(1),
        ..Agent::default()
    };
    let (emu, fake) = setup(fast_config(), agent).await;
    let call = fake.app.client.create_call(&fake.create("+15550106")).await.unwrap();
    let r = finished(&emu, &call.sid).await;
    assert_eq!(fake.log(|l| l.dtmf.clone()), vec!["1", "2", "#"]);
    assert_eq!(r.stream().unwrap().dtmf_sent, vec!["1", "2", "#"]);
    assert_eq!(r.stream().unwrap().callee_lines.len(), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn barge_in_scenario_talks_over_the_reply() {
    let agent = Agent {
        reply_bytes: Some(8 * 4000),
        clear_on_barge_in: true,
        hang_up_after: Some(2),
        ..Agent::default()
    };
    let (emu, fake) = setup(fast_config(), agent).await;
    let call = fake.app.client.create_call(&fake.create("+15550108")).await.unwrap();
    let r = finished(&emu, &call.sid).await;
    let stream = r.stream().unwrap();
    assert_eq!(stream.callee_lines.len(), 2);
    assert!(stream.callee_lines[1].barged_in);
    assert_eq!(stream.clears_ms.len(), 1, "our side cleared the interrupted reply");
    assert!(stream.audio_cleared_bytes > 0);
    assert!(stream.marks_echoed.iter().any(|m| m.cleared));
    emu.shutdown().await;
}

#[tokio::test]
async fn twiml_redirect_stops_the_stream_and_runs_the_new_twiml() {
    let agent = Agent {
        redirect_after_first: Some(twiml::say_and_hang_up("Sorry, goodbye.")),
        ..Agent::default()
    };
    let (emu, fake) = setup(fast_config(), agent).await;
    let call = fake.app.client.create_call(&fake.create("+14155551212")).await.unwrap();
    let r = finished(&emu, &call.sid).await;
    assert_eq!(r.said, vec!["Hi there", "Sorry, goodbye."]);
    assert_eq!(r.end_cause, Some(EndCause::TwimlHangup));
    assert_eq!(r.stream().unwrap().ended, Some(StreamEnd::Stopped));
    assert_eq!(
        fake.log(|l| l.rest_results.clone()),
        vec![Ok("in-progress".to_string())]
    );
    assert!(fake.log(|l| l.received.last().unwrap().contains(r#""event":"stop""#)));
    assert_eq!(r.callback_statuses().last(), Some(&"completed"));
    emu.shutdown().await;
}

#[tokio::test]
async fn a_dial_redirected_into_the_call_reports_its_outcome_to_the_action() {
    for (target, status, said) in [
        ("+15550120", "completed", vec!["Hi there"]),
        (
            "+15550122",
            "busy",
            vec!["Hi there", "Sorry, nobody could take your call."],
        ),
        (
            "+15550123",
            "no-answer",
            vec!["Hi there", "Sorry, nobody could take your call."],
        ),
    ] {
        let agent = Agent {
            // Relative: resolved against the URL of the TwiML being run.
            redirect_after_first: Some(twiml::dial(target, "+15005550006", 20, "/dial-action?call_id=c1")),
            ..Agent::default()
        };
        let config = TwilioEmulatorConfig {
            dial_talk: Duration::from_millis(300),
            ..fast_config()
        };
        let (emu, fake) = setup(config, agent).await;
        let call = fake.app.client.create_call(&fake.create("+14155551212")).await.unwrap();
        let r = finished(&emu, &call.sid).await;
        assert_eq!(r.stream().unwrap().ended, Some(StreamEnd::Stopped), "{target}");
        assert_eq!(r.dials.len(), 1, "{target}");
        assert_eq!(r.dials[0].number, target);
        assert_eq!(r.dials[0].caller_id, "+15005550006");
        assert_eq!(r.dials[0].status, status);
        let actions = fake.log(|l| l.dial_actions.clone());
        assert_eq!(actions.len(), 1, "{target}");
        let (params, signed) = &actions[0];
        assert!(signed, "the action request is signed");
        assert_eq!(param(params, "DialCallStatus"), Some(status));
        assert_eq!(param(params, "CallSid"), Some(call.sid.as_str()));
        assert!(param(params, "DialCallSid").is_some_and(|s| s.starts_with("CA")));
        assert_eq!(r.said, said, "{target}");
        assert_eq!(r.callback_statuses().last(), Some(&"completed"));
        emu.shutdown().await;
    }
}

#[tokio::test]
async fn time_limit_and_idle_callee_end_the_call() {
    let config = TwilioEmulatorConfig {
        idle_hangup: Duration::from_secs(1),
        ..fast_config()
    };
    // The agent never answers: the callee says line 1, waits, and leaves.
    let agent = Agent {
        reply_bytes: Some(0),
        ..Agent::default()
    };
    let (emu, fake) = setup(config, agent).await;
    let idle = fake.app.client.create_call(&fake.create("+14155551212")).await.unwrap();
    let mut limited = fake.create("+14155551213");
    limited.time_limit = Duration::from_secs(1);
    let limited = fake.app.client.create_call(&limited).await.unwrap();
    // `Status=canceled` does not affect a call in progress (§1.4).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = fake
        .app
        .client
        .update_call(&idle.sid, &UpdateCall::Cancel)
        .await
        .unwrap();
    assert_eq!(still.status, "in-progress");
    let r = finished(&emu, &idle.sid).await;
    assert_eq!(r.end_cause, Some(EndCause::CalleeIdle));
    assert_eq!(r.stream().unwrap().callee_lines.len(), 1);
    let r = finished(&emu, &limited.sid).await;
    assert_eq!(r.end_cause, Some(EndCause::TimeLimit));
    assert_eq!(r.status, "completed");
    emu.shutdown().await;
}

#[tokio::test]
async fn rest_errors_have_twilios_shape() {
    let (emu, fake) = setup(fast_config(), Agent::default()).await;
    let c = &fake.app.client;

    let e = c.create_call(&fake.create("+15005550001")).await.unwrap_err();
    assert_eq!(e.code(), Some(21211));
    assert_eq!(e.class(), ErrorClass::InvalidArgument);
    assert!(e.to_string().starts_with("Twilio error 21211: "), "{e}");
    let e = c.create_call(&fake.create("12345")).await.unwrap_err();
    assert_eq!(e.code(), Some(21211));
    let e = c.create_call(&fake.create("+15005550500")).await.unwrap_err();
    assert!(matches!(
        e,
        TwilioError::Api {
            http_status: 500,
            code: Some(20500),
            ..
        }
    ));
    assert_eq!(e.class(), ErrorClass::Unavailable);

    let impatient = TwilioClient::new(
        &emu.base_url(),
        emu.account_sid(),
        emu.auth_token(),
        Duration::from_millis(300),
    )
    .unwrap();
    assert_eq!(
        impatient.create_call(&fake.create("+15005550408")).await.unwrap_err(),
        TwilioError::Timeout
    );

    let e = c.fetch_call("CA00000000000000000000000000000000").await.unwrap_err();
    assert!(matches!(
        e,
        TwilioError::Api {
            http_status: 404,
            code: Some(20404),
            ..
        }
    ));

    // The exact JSON keys of the 2010 API error (§1.5), and required fields.
    let http = reqwest::Client::new();
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Calls.json",
        emu.base_url(),
        emu.account_sid()
    );
    let resp = http
        .post(&url)
        .basic_auth(emu.account_sid(), Some(emu.auth_token()))
        .form(&[("From", "+15005550006"), ("Url", "http://127.0.0.1:1/x")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, vec!["code", "message", "more_info", "status"]);
    assert_eq!(body["code"], 21201);
    assert_eq!(body["status"], 400);
    assert_eq!(body["more_info"], "https://www.twilio.com/docs/errors/21201");
    let resp = http
        .post(&url)
        .basic_auth(emu.account_sid(), Some(emu.auth_token()))
        .form(&[("To", "+14155551212"), ("From", "+15005550006")])
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 21205, "Url or Twiml is required");

    // Wrong credentials: 401 with code 20003.
    let wrong = TwilioClient::new(&emu.base_url(), emu.account_sid(), "nope", Duration::from_secs(5)).unwrap();
    let e = wrong.create_call(&fake.create("+14155551212")).await.unwrap_err();
    assert!(matches!(
        e,
        TwilioError::Api {
            http_status: 401,
            code: Some(20003),
            ..
        }
    ));
    assert_eq!(e.class(), ErrorClass::FailedPrecondition);
    let resp = http.post(&url).form(&[("To", "+14155551212")]).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    assert!(emu.call_sids().is_empty(), "no call was created by any of these");
    emu.shutdown().await;
}

#[tokio::test]
async fn inline_twiml_with_an_unreachable_stream_continues_after_connect() {
    let (emu, fake) = setup(fast_config(), Agent::default()).await;
    let http = reqwest::Client::new();
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Calls.json",
        emu.base_url(),
        emu.account_sid()
    );
    let twiml = r#"<Response><Connect><Stream url="ws://127.0.0.1:1/ws"/></Connect><Say>After</Say></Response>"#;
    let resp = http
        .post(&url)
        .basic_auth(emu.account_sid(), Some(emu.auth_token()))
        .form(&[
            ("To", "+14155551212"),
            ("From", "+15005550006"),
            ("Twiml", twiml),
            ("StatusCallback", &format!("{}/status", fake.app.base)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let call: voice_agent_wire::twilio::rest::CallResource = resp.json().await.unwrap();
    let r = finished(&emu, &call.sid).await;
    let stream = r.stream().unwrap();
    assert_eq!(stream.ended, Some(StreamEnd::ConnectFailed));
    assert!(stream.connect_error.as_deref().unwrap().starts_with("319"));
    assert_eq!(r.said, vec!["After"]);
    assert_eq!(r.end_cause, Some(EndCause::TwimlEnded));
    // Without StatusCallbackEvent only the terminal callback is sent (§2.1).
    assert_eq!(r.callback_statuses(), vec!["completed"]);
    assert_eq!(r.callbacks[0].sequence_number, 0);
    assert!(r.twiml_fetches.is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_live_calls() {
    let (emu, fake) = setup(fast_config(), Agent::default()).await;
    let call = fake.app.client.create_call(&fake.create("+14155551212")).await.unwrap();
    let wait = emu.wait_finished(&call.sid);
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::time::timeout(Duration::from_secs(10), emu.shutdown())
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.end_cause, Some(EndCause::Shutdown));
    assert!(r.finished);
}
