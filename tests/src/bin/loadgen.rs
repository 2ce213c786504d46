//! Load generator: drives N concurrent calls end to end through the real
//! server and measures the bridge.
//!
//! It starts the server in-process on 127.0.0.1:0 (real sockets, the real
//! gRPC API and media bridge) with a telephony provider that accepts every
//! dial at once, and plays both outer sides itself:
//! - Twilio: per call a signed media WebSocket, `connected`/`start`, one
//!   20 ms μ-law frame every 20 ms in real time, marks echoed only after their
//!   audio has played (8 bytes/ms), `clear` honoured;
//! - the realtime AI (OpenAI GA dialect): per call one 20 ms audio delta
//!   every 20 ms, and a `speech_started` every few seconds (barge-in).
//!
//! Frames map one to one through the bridge in both audio modes, so the n-th
//! append the AI receives is the n-th Twilio frame, and the n-th media message
//! Twilio receives is the n-th AI delta: latency is receive time minus send
//! time, both taken in this process. A frame later than 20 ms, or missing,
//! makes the level not carried.
//!
//! Usage: `cargo run --release -p voice-agent-tests --bin loadgen -- [--levels 50,100,250]
//! [--seconds 20] [--mode transcode|passthrough|both] [--quick]`

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use voice_agent_proto::v1 as pb;
use voice_agent_server::call::CallId;
use voice_agent_server::config::{AudioMode, Config, OpenAiConfig, Secret, VoiceLiveConfig};
use voice_agent_server::telephony::{DialRequest, Dialed, Telephony, TelephonyError};
use voice_agent_server::{Options, Server};

const FRAME: Duration = Duration::from_millis(20);
const TOKEN: &str = "loadgen-twilio-token";
const AI_KEY: &str = "loadgen-ai-key";
const BARGE_IN_EVERY: u64 = 150; // frames (3 s)

/// Accepts every call at once; the load generator opens the media streams.
struct InstantTelephony {
    next: AtomicU64,
}

#[async_trait]
impl Telephony for InstantTelephony {
    async fn dial(&self, _req: &DialRequest) -> Result<Dialed, TelephonyError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(Dialed {
            provider_call_id: format!("CA{n:032x}"),
        })
    }
    async fn hang_up(&self, _sid: &str, _answered: bool) -> Result<(), TelephonyError> {
        Ok(())
    }
    async fn say_and_hang_up(&self, _sid: &str, _text: &str) -> Result<(), TelephonyError> {
        Ok(())
    }
}

/// Per call timing, filled by both sides.
#[derive(Default)]
struct CallTimes {
    tw_sent: Vec<Instant>,
    ai_received: Vec<Instant>,
    ai_sent: Vec<Instant>,
    tw_received: Vec<Instant>,
    speech_started: Vec<Instant>,
    clears: Vec<Instant>,
}

type Registry = Arc<Mutex<HashMap<String, Arc<Mutex<CallTimes>>>>>;

fn times(reg: &Registry, key: &str) -> Arc<Mutex<CallTimes>> {
    reg.lock().unwrap().entry(key.to_string()).or_default().clone()
}

/// The AI side: one session per call, keyed by the call's instructions.
async fn ai_session(socket: WebSocket, reg: Registry, stop: Instant, pcm: bool) {
    let (mut sink, mut stream) = socket.split();
    let mut key: Option<String> = None;
    let delta = B64.encode(vec![0x55u8; if pcm { 960 } else { 160 }]);
    let mut tick = tokio::time::interval(FRAME);
    let mut started = false;
    let mut n = 0u64;
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(AxMessage::Text(t))) => {
                    let t = t.as_str();
                    if t.contains("\"input_audio_buffer.append\"") {
                        if let Some(k) = &key {
                            times(&reg, k).lock().unwrap().ai_received.push(Instant::now());
                        }
                    } else if t.contains("\"session.update\"") {
                        let v: serde_json::Value = serde_json::from_str(t).unwrap_or_default();
                        key = v["session"]["instructions"].as_str().map(str::to_string);
                        let _ = sink.send(AxMessage::Text(r#"{"type":"session.updated","session":{}}"#.into())).await;
                    } else if t.contains("\"response.create\"") {
                        started = true;
                        let _ = sink.send(AxMessage::Text(
                            r#"{"type":"response.created","response":{"id":"resp_1","status":"in_progress"}}"#.into(),
                        )).await;
                    }
                }
                _ => return,
            },
            _ = tick.tick(), if started => {
                if Instant::now() > stop {
                    return;
                }
                let Some(k) = &key else { continue };
                n += 1;
                let t = times(&reg, k);
                if n.is_multiple_of(BARGE_IN_EVERY) {
                    t.lock().unwrap().speech_started.push(Instant::now());
                    let _ = sink.send(AxMessage::Text(
                        r#"{"type":"input_audio_buffer.speech_started","audio_start_ms":0,"item_id":"item_u"}"#.into(),
                    )).await;
                }
                let msg = format!(
                    r#"{{"type":"response.output_audio.delta","response_id":"resp_{}","item_id":"item_{}","output_index":0,"content_index":0,"delta":"{delta}"}}"#,
                    n / BARGE_IN_EVERY, n / BARGE_IN_EVERY
                );
                t.lock().unwrap().ai_sent.push(Instant::now());
                if sink.send(AxMessage::Text(msg.into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The Twilio side of one call's media stream.
async fn twilio_side(url: String, call_sid: String, secret: String, key: String, reg: Registry, stop: Instant) {
    let signature = voice_agent_server::telephony::twilio::signature::compute(TOKEN, &url, &[]);
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    req.headers_mut()
        .insert("x-twilio-signature", signature.parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("media upgrade");
    let (mut sink, mut stream) = ws.split();
    let sid = "MZ00000000000000000000000000000001";
    let start = serde_json::json!({"event": "start", "sequenceNumber": "1", "streamSid": sid,
        "start": {"streamSid": sid, "callSid": call_sid, "accountSid": "AC00000000000000000000000000000000",
                  "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                  "customParameters": {"secret": secret}}});
    sink.send(Message::Text(
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.into(),
    ))
    .await
    .unwrap();
    sink.send(Message::Text(start.to_string().into())).await.unwrap();
    let t = times(&reg, &key);
    let payload = B64.encode(vec![0xFFu8; 160]);
    let mut tick = tokio::time::interval(FRAME);
    // Playback: bytes queued ahead of the marks, drained at 8 bytes/ms.
    let mut queue: std::collections::VecDeque<(usize, Option<String>)> = Default::default();
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() > stop {
                    let _ = sink.send(Message::Text(format!(r#"{{"event":"stop","sequenceNumber":"{}","streamSid":"{sid}","stop":{{}}}}"#, n + 2).into())).await;
                    let _ = sink.close().await;
                    return;
                }
                n += 1;
                // 20 ms played: drain 160 bytes, echo the marks reached.
                let mut budget = 160usize;
                while let Some((bytes, mark)) = queue.front_mut() {
                    if *bytes > budget {
                        *bytes -= budget;
                        break;
                    }
                    budget -= *bytes;
                    *bytes = 0;
                    if let Some(name) = mark.take() {
                        let echo = format!(r#"{{"event":"mark","sequenceNumber":"0","streamSid":"{sid}","mark":{{"name":"{name}"}}}}"#);
                        let _ = sink.send(Message::Text(echo.into())).await;
                    }
                    queue.pop_front();
                }
                let frame = format!(r#"{{"event":"media","sequenceNumber":"{}","media":{{"track":"inbound","chunk":"{n}","timestamp":"{}","payload":"{payload}"}},"streamSid":"{sid}"}}"#, n + 1, n * 20);
                t.lock().unwrap().tw_sent.push(Instant::now());
                if sink.send(Message::Text(frame.into())).await.is_err() {
                    return;
                }
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let text = text.as_str();
                    if text.contains("\"event\":\"media\"") {
                        t.lock().unwrap().tw_received.push(Instant::now());
                        queue.push_back((160, None));
                    } else if text.contains("\"event\":\"mark\"") {
                        let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
                        let name = v["mark"]["name"].as_str().unwrap_or("").to_string();
                        queue.push_back((0, Some(name)));
                    } else if text.contains("\"event\":\"clear\"") {
                        t.lock().unwrap().clears.push(Instant::now());
                        for (_, mark) in queue.drain(..) {
                            if let Some(name) = mark {
                                let echo = format!(r#"{{"event":"mark","sequenceNumber":"0","streamSid":"{sid}","mark":{{"name":"{name}"}}}}"#);
                                let _ = sink.send(Message::Text(echo.into())).await;
                            }
                        }
                    }
                }
                _ => return,
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, from /proc (Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn rss_kib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

struct LevelResult {
    calls: usize,
    inbound: Vec<f64>,
    outbound: Vec<f64>,
    barge_in: Vec<f64>,
    late: usize,
    lost: usize,
    cpu_per_call_minute: f64,
    rss_per_call_kib: f64,
}

async fn run_level(n: usize, seconds: u64, mode: AudioMode) -> LevelResult {
    let reg: Registry = Arc::default();
    let ai_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ai_addr = ai_listener.local_addr().unwrap();
    let warmup = Duration::from_secs(2);
    let stop = Instant::now() + warmup + Duration::from_secs(seconds) + Duration::from_millis(n as u64 * 4);
    let pcm = mode == AudioMode::Transcode;
    let reg_ai = reg.clone();
    let ai = Router::new().fallback(move |ws: WebSocketUpgrade| {
        let reg = reg_ai.clone();
        async move { ws.on_upgrade(move |s| ai_session(s, reg, stop, pcm)) }
    });
    let ai_task = tokio::spawn(async move {
        let _ = axum::serve(ai_listener, ai).await;
    });

    let mut config = Config::for_tests();
    config.audio_mode = mode;
    config.openai = Some(OpenAiConfig {
        api_key: Secret::new(AI_KEY),
        url: url::Url::parse(&format!("ws://{ai_addr}/v1/realtime")).unwrap(),
        model: "gpt-realtime".into(),
    });
    config.voice_live = Some(VoiceLiveConfig {
        endpoint: url::Url::parse(&format!("ws://{ai_addr}")).unwrap(),
        api_version: "2025-10-01".into(),
        model: "gpt-realtime".into(),
        api_key: Some(Secret::new(AI_KEY)),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let telephony: Arc<dyn Telephony> = Arc::new(InstantTelephony {
        next: AtomicU64::new(1),
    });
    let server = Server::with_listener(
        config,
        listener,
        Options {
            telephony: Some((telephony, Secret::new(TOKEN))),
            grace: Some(Duration::from_secs(2)),
            entra: None,
        },
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let state = server.state().clone();
    let shutdown = server.shutdown_token();
    let server_task = tokio::spawn(server.run());
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::voice_agent_service_client::VoiceAgentServiceClient::new(channel);

    let rss_before = rss_kib();
    let mut tasks = Vec::new();
    for i in 0..n {
        let key = format!("loadgen call {i}");
        let placed = client
            .place_call(pb::PlaceCallRequest {
                to: "+15550100".into(),
                backend: pb::Backend::GptRealtime as i32,
                instructions: key.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let id = CallId::parse(&placed.call_id).unwrap();
        let secret = state.hub.get(&id).await.unwrap().stream_secret;
        let url = format!("ws://{addr}/ws/media/{}", placed.call_id);
        tasks.push(tokio::spawn(twilio_side(
            url,
            placed.provider_call_id,
            secret,
            key,
            reg.clone(),
            stop,
        )));
        // Spread the starts so frames do not all fall on the same millisecond.
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    tokio::time::sleep(warmup).await;
    let cpu_start = cpu_seconds();
    let measure_from = Instant::now();
    let mut peak_rss = rss_kib();
    while Instant::now() < stop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak_rss = peak_rss.max(rss_kib());
    }
    let cpu = cpu_seconds() - cpu_start;
    let measured = measure_from.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    shutdown.cancel();
    let _ = server_task.await;
    ai_task.abort();

    let mut result = LevelResult {
        calls: n,
        inbound: vec![],
        outbound: vec![],
        barge_in: vec![],
        late: 0,
        lost: 0,
        cpu_per_call_minute: cpu / (n as f64 * measured / 60.0),
        rss_per_call_kib: (peak_rss - rss_before).max(0.0) / n as f64,
    };
    for (_, t) in reg.lock().unwrap().iter() {
        let t = t.lock().unwrap();
        // Only frames sent after the warm-up count; the last ones may still be in flight at stop.
        let pairs = |sent: &[Instant], recv: &[Instant], out: &mut Vec<f64>, late: &mut usize, lost: &mut usize| {
            let tail = 10; // frames in flight when the stream stopped
            for (i, s) in sent.iter().enumerate() {
                if *s < measure_from || i + tail >= sent.len() {
                    continue;
                }
                match recv.get(i) {
                    Some(r) => {
                        let ms = r.duration_since(*s).as_secs_f64() * 1000.0;
                        if ms > 20.0 {
                            *late += 1;
                        }
                        out.push(ms);
                    }
                    None => *lost += 1,
                }
            }
        };
        pairs(
            &t.tw_sent,
            &t.ai_received,
            &mut result.inbound,
            &mut result.late,
            &mut result.lost,
        );
        // Outbound frames after a clear are not all forwarded (the bridge drops
        // the rest of a cut response by design): compare only up to the first
        // barge-in, then count reaction times.
        let first_barge = t.speech_started.first().copied();
        let sent: Vec<Instant> = t
            .ai_sent
            .iter()
            .copied()
            .take_while(|s| first_barge.is_none_or(|b| *s < b))
            .collect();
        pairs(
            &sent,
            &t.tw_received,
            &mut result.outbound,
            &mut result.late,
            &mut result.lost,
        );
        for (s, c) in t.speech_started.iter().zip(&t.clears) {
            result.barge_in.push(c.duration_since(*s).as_secs_f64() * 1000.0);
        }
    }
    for v in [&mut result.inbound, &mut result.outbound, &mut result.barge_in] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    result
}

fn row(mode: &str, r: &LevelResult) -> String {
    let f = |v: &[f64]| {
        format!(
            "{:.2} / {:.2} / {:.2} / {:.2}",
            percentile(v, 50.0),
            percentile(v, 99.0),
            percentile(v, 99.9),
            v.last().copied().unwrap_or(f64::NAN)
        )
    };
    format!(
        "| {mode} | {} | {} | {} | {:.2} / {:.2} | {} | {} | {:.3} | {:.0} | {} |",
        r.calls,
        f(&r.inbound),
        f(&r.outbound),
        percentile(&r.barge_in, 50.0),
        percentile(&r.barge_in, 99.0),
        r.late,
        r.lost,
        r.cpu_per_call_minute,
        r.rss_per_call_kib,
        if r.late == 0 && r.lost == 0 && !r.inbound.is_empty() {
            "yes"
        } else {
            "no"
        }
    )
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let quick = args.iter().any(|a| a == "--quick");
    let levels: Vec<usize> = if quick {
        vec![3]
    } else {
        get("--levels")
            .unwrap_or_else(|| "50,100,250,500,1000".into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    };
    let seconds: u64 = if quick {
        3
    } else {
        get("--seconds").and_then(|s| s.parse().ok()).unwrap_or(20)
    };
    let modes = match get("--mode").as_deref() {
        Some("transcode") => vec![AudioMode::Transcode],
        Some("passthrough") => vec![AudioMode::Passthrough],
        _ => vec![AudioMode::Transcode, AudioMode::Passthrough],
    };
    println!(
        "| mode | calls | inbound ms p50 / p99 / p99.9 / max | outbound ms p50 / p99 / p99.9 / max | barge-in ms p50 / p99 | late | lost | CPU s per call-minute | RSS KiB per call | carried |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut failed = false;
    for mode in modes {
        let name = if mode == AudioMode::Transcode {
            "transcode"
        } else {
            "passthrough"
        };
        let mut best = 0;
        for &n in &levels {
            let r = run_level(n, seconds, mode).await;
            println!("{}", row(name, &r));
            let carried = r.late == 0 && r.lost == 0 && !r.inbound.is_empty() && !r.outbound.is_empty();
            if quick && (r.inbound.is_empty() || r.outbound.is_empty() || r.barge_in.is_empty() || r.lost > 0) {
                failed = true;
            }
            if carried {
                best = n;
            }
        }
        println!("\n{name}: highest level carried = {best} concurrent calls\n");
    }
    if failed {
        eprintln!("quick run failed: frames were lost or nothing was measured");
        std::process::exit(1);
    }
}
