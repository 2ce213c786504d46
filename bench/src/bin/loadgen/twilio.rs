//! Twilio's side: a minimal REST API (create and update a call) that the
//! server's real Twilio client talks to, and per call what Twilio then does:
//! signed status callbacks, the signed TwiML fetch, and the signed Media
//! Streams WebSocket with 20 ms μ-law frames in real time, marks echoed once
//! their audio has played, `clear` honoured (protocols.md §1–§5).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use voice_agent_emulators::twilio::twiml;
use voice_agent_wire::twilio::signature;

use crate::{FRAME, Run, serve_until_closed, tone_ulaw};

/// The account the server is configured with.
pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
/// Its auth token (signs every request to the server).
pub const AUTH_TOKEN: &str = "loadgen-twilio-auth-token";
/// μ-law bytes Twilio plays per millisecond.
const BYTES_PER_MS: usize = 8;

/// What one call's Twilio side saw, times in µs since the run started.
#[derive(Default)]
pub struct TwRecord {
    /// Our call id (from the TwiML's stream parameters).
    pub call_id: String,
    /// When each media frame was written.
    pub sent: Vec<u32>,
    /// How late each frame was written after its 20 ms slot (generator lag).
    pub lag: Vec<u32>,
    /// When each agent media message arrived.
    pub received: Vec<u32>,
    /// Index into `received` where each segment after a `clear` starts.
    pub segments: Vec<usize>,
    /// When each `clear` arrived.
    pub clears: Vec<u32>,
    /// The server hung the call up before the run ended.
    pub ended_early: bool,
}

struct Fake {
    run: Arc<Run>,
    http: reqwest::Client,
    next_sid: AtomicU64,
    hangups: std::sync::Mutex<HashMap<String, CancellationToken>>,
}

/// Starts the REST API on 127.0.0.1:0; its base URL goes to `TWILIO_API_BASE_URL`.
pub async fn start(run: Arc<Run>) -> std::io::Result<SocketAddr> {
    let fake = Arc::new(Fake {
        run: run.clone(),
        http: reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .map_err(std::io::Error::other)?,
        next_sid: AtomicU64::new(1),
        hangups: Default::default(),
    });
    let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let fake = fake.clone();
        async move { fake.rest(method, uri, headers, body).await }
    });
    serve_until_closed(&run, app).await
}

fn resource(sid: &str, status: &str) -> String {
    serde_json::json!({
        "sid": sid, "status": status, "account_sid": ACCOUNT_SID, "direction": "outbound-api",
        "api_version": "2010-04-01", "to": "+15550100", "from": "+15005550006",
    })
    .to_string()
}

impl Fake {
    async fn rest(self: Arc<Self>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let expected = format!("Basic {}", B64.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}")));
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                "{\"code\":20003,\"message\":\"Authenticate\"}",
            )
                .into_response();
        }
        let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        let prefix = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls");
        let Some(rest) = uri.path().strip_prefix(&prefix) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
        match (method, rest) {
            (Method::POST, ".json") => {
                let n = self.next_sid.fetch_add(1, Ordering::Relaxed);
                let sid = format!("CA{n:032x}");
                let hangup = CancellationToken::new();
                self.hangups
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(sid.clone(), hangup.clone());
                tokio::spawn(self.clone().call(sid.clone(), form, hangup));
                (StatusCode::CREATED, json, resource(&sid, "queued")).into_response()
            }
            (Method::POST, r) if r.starts_with('/') && r.ends_with(".json") => {
                let sid = r.trim_start_matches('/').trim_end_matches(".json").to_string();
                // Status=completed|canceled, or new TwiML (the goodbye): either way this
                // side is told to end. In a load run that means the server gave up a call.
                if let Some(h) = self.hangups.lock().unwrap_or_else(|p| p.into_inner()).get(&sid) {
                    h.cancel();
                }
                (StatusCode::OK, json, resource(&sid, "in-progress")).into_response()
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }

    /// Posts a signed form, as Twilio does (§3.1).
    async fn post(&self, url: &str, params: &[(String, String)]) -> Result<String, String> {
        let sig = signature::compute(AUTH_TOKEN, url, params);
        let resp = self
            .http
            .post(url)
            .header("x-twilio-signature", sig)
            .form(params)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {}", error_chain(&e)))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("POST {url}: HTTP {status}: {body}"));
        }
        Ok(body)
    }

    /// One call, from Twilio accepting it to the final status callback.
    async fn call(self: Arc<Self>, sid: String, form: Vec<(String, String)>, hangup: CancellationToken) {
        // The chaos soak keeps its level by counting the calls Twilio is busy with.
        let _live = self.run.chaos.as_ref().map(|k| crate::chaos::Live::new(&k.twilio_live));
        let get = |k: &str| form.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
        let events: Vec<String> = form
            .iter()
            .filter(|(k, _)| k == "StatusCallbackEvent")
            .map(|(_, v)| v.clone())
            .collect();
        let base = |status: &str| -> Vec<(String, String)> {
            [
                ("AccountSid", ACCOUNT_SID),
                ("ApiVersion", "2010-04-01"),
                ("CallSid", sid.as_str()),
                ("CallStatus", status),
                ("Direction", "outbound-api"),
                ("From", "+15005550006"),
                ("To", "+15550100"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
        };
        let callback = get("StatusCallback");
        let mut sequence = 0u32;
        let mut fire = |status: &str, extra: Vec<(String, String)>| {
            let mut p = base(status);
            p.push(("CallbackSource".into(), "call-progress-events".into()));
            p.push(("SequenceNumber".into(), sequence.to_string()));
            sequence += 1;
            p.extend(extra);
            p
        };
        let mut callbacks = Vec::new();
        for (event, status) in [
            ("initiated", "initiated"),
            ("ringing", "ringing"),
            ("answered", "in-progress"),
        ] {
            if events.iter().any(|e| e == event) {
                callbacks.push(fire(status, vec![]));
            }
        }
        if let Some(cb) = &callback {
            for p in &callbacks {
                if let Err(e) = self.post(cb, p).await {
                    self.run.problem(format!("status callback refused: {e}"));
                }
            }
        }
        let Some(url) = get("Url") else {
            self.run.problem("create call without Url".into());
            return;
        };
        let stream = match self
            .post(&url, &base("in-progress"))
            .await
            .map(|xml| twiml::parse(&xml))
        {
            Ok(Ok(verbs)) => verbs.into_iter().find_map(|v| match v {
                twiml::Verb::Connect(Some(s)) => Some(s),
                _ => None,
            }),
            Ok(Err(e)) => {
                self.run.problem(format!("TwiML: {e}"));
                None
            }
            Err(e) => {
                self.run.problem(format!("TwiML fetch: {e}"));
                None
            }
        };
        let Some(stream) = stream else {
            self.run.problem("the TwiML has no <Connect><Stream>".into());
            return;
        };
        let answered = Instant::now();
        let record = match media(&self.run, &sid, &stream, &hangup).await {
            Ok(r) => r,
            Err(e) => {
                self.run.problem(format!("media stream: {e}"));
                TwRecord::default()
            }
        };
        self.run
            .tw_records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record);
        if let (Some(cb), true) = (&callback, events.iter().any(|e| e == "completed")) {
            let secs = answered.elapsed().as_secs() + 1;
            let p = fire("completed", vec![("CallDuration".into(), secs.to_string())]);
            if let Err(e) = self.post(cb, &p).await {
                self.run.problem(format!("completed callback refused: {e}"));
            }
        }
    }
}

/// The Media Streams side of one call.
async fn media(
    run: &Run,
    call_sid: &str,
    stream: &twiml::StreamSpec,
    hangup: &CancellationToken,
) -> Result<TwRecord, String> {
    let url = stream.url.clone();
    let signature = signature::compute(AUTH_TOKEN, &url, &[]);
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str())
        .map_err(|e| e.to_string())?;
    req.headers_mut()
        .insert("x-twilio-signature", signature.parse().map_err(|_| "signature header")?);
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), true)
        .await
        .map_err(|e| format!("upgrade {url}: {e}"))?;
    let (mut sink, mut source) = ws.split();
    let stream_sid = format!("MZ{:032x}", uuid::Uuid::new_v4().as_u128());
    let params: serde_json::Map<String, serde_json::Value> = stream
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let mut record = TwRecord {
        call_id: stream
            .parameters
            .iter()
            .find(|(k, _)| k == "call_id")
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    let start = serde_json::json!({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
        "start": {"streamSid": stream_sid, "callSid": call_sid, "accountSid": ACCOUNT_SID,
                  "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                  "customParameters": params}});
    sink.feed(Message::Text(
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.into(),
    ))
    .await
    .map_err(|e| e.to_string())?;
    sink.send(Message::Text(start.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    run.media_started.fetch_add(1, Ordering::Relaxed);

    let payload = B64.encode(tone_ulaw());
    let capacity = run.expected_frames();
    record.sent.reserve(capacity);
    record.lag.reserve(capacity);
    record.received.reserve(capacity);
    record.segments.push(0);
    let mut tick = tokio::time::interval_at(run.phase_start(&run.tw_phase, FRAME), FRAME);
    // Playback: (bytes still to play, mark to echo once they have played).
    let mut playback: VecDeque<(usize, Option<String>)> = VecDeque::new();
    let mut echoes: Vec<String> = Vec::new();
    let mut seq = 2u64;
    let mut chunk = 0u64;
    let mark_echo = |name: &str| {
        format!(r#"{{"event":"mark","sequenceNumber":"0","streamSid":"{stream_sid}","mark":{{"name":"{name}"}}}}"#)
    };
    let sending = run.stop_sending.clone();
    // In the chaos soak a call ends on its own (the callee hangs up); otherwise with the run.
    let lifetime = run
        .chaos
        .as_ref()
        .map_or(Duration::from_secs(86_400), |_| crate::chaos::lifetime());
    let ends = tokio::time::sleep(lifetime);
    tokio::pin!(ends);
    loop {
        tokio::select! {
            scheduled = tick.tick(), if !sending.is_cancelled() => {
                if let Some(k) = &run.chaos
                    && k.roll_stall(FRAME)
                {
                    // Neither reads nor writes: the server's writes back up as on a stalled network.
                    tokio::time::sleep(crate::chaos::stall()).await;
                }
                // 20 ms of agent audio played: the marks reached are echoed.
                let mut budget = 20 * BYTES_PER_MS;
                while let Some((bytes, mark)) = playback.front_mut() {
                    if *bytes > budget {
                        *bytes -= budget;
                        break;
                    }
                    budget -= *bytes;
                    if let Some(name) = mark.take() {
                        echoes.push(mark_echo(&name));
                    }
                    playback.pop_front();
                }
                for e in echoes.drain(..) {
                    sink.feed(Message::Text(e.into())).await.map_err(|e| e.to_string())?;
                }
                chunk += 1;
                seq += 1;
                let frame = format!(
                    r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{}","payload":"{payload}"}},"streamSid":"{stream_sid}"}}"#,
                    chunk * 20
                );
                let now = Instant::now();
                record.lag.push(now.saturating_duration_since(scheduled.into_std()).as_micros() as u32);
                record.sent.push(run.us_at(now));
                sink.send(Message::Text(frame.into())).await.map_err(|e| e.to_string())?;
            }
            _ = hangup.cancelled(), if !run.close.is_cancelled() => {
                record.ended_early = true;
                break;
            }
            _ = run.close.cancelled() => break,
            _ = &mut ends => break,
            msg = source.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let text = text.as_str();
                    if text.starts_with(r#"{"event":"media""#) {
                        record.received.push(run.us());
                        // Base64 length → μ-law bytes to play.
                        let b64 = text.split(r#""payload":""#).nth(1).and_then(|p| p.split('"').next()).unwrap_or("");
                        let padding = b64.bytes().rev().take_while(|b| *b == b'=').count();
                        playback.push_back((b64.len() / 4 * 3 - padding, None));
                    } else if text.starts_with(r#"{"event":"mark""#) {
                        // The server writes `"name":"…"` last; no JSON parse on the hot path.
                        let name = text.split(r#""name":""#).nth(1).and_then(|n| n.split('"').next()).unwrap_or("");
                        playback.push_back((0, Some(name.to_string())));
                    } else if text.starts_with(r#"{"event":"clear""#) {
                        record.clears.push(run.us());
                        record.segments.push(record.received.len());
                        // §5.3: a clear empties the buffer and sends back its marks.
                        for (_, mark) in playback.drain(..) {
                            if let Some(name) = mark {
                                sink.feed(Message::Text(mark_echo(&name).into())).await.map_err(|e| e.to_string())?;
                            }
                        }
                        sink.flush().await.map_err(|e| e.to_string())?;
                    }
                }
                Some(Ok(Message::Close(_))) | None => {
                    record.ended_early = !run.close.is_cancelled();
                    return Ok(record);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
            },
        }
    }
    let stop = format!(
        r#"{{"event":"stop","sequenceNumber":"{}","streamSid":"{stream_sid}","stop":{{"accountSid":"{ACCOUNT_SID}","callSid":"{call_sid}"}}}}"#,
        seq + 1
    );
    let _ = sink.send(Message::Text(stop.into())).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    Ok(record)
}

/// An error with its causes (reqwest's own message names only the URL).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
