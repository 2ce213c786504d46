//! Load generator: drives N concurrent calls end to end through the real
//! server and measures the bridge, its cost per call, and how many calls one
//! machine carries.
//!
//! The server is the real `voice-agent-server` binary in its own process
//! (so its CPU and memory are its own), configured as an operator would:
//! Twilio credentials with `TWILIO_API_BASE_URL` and OpenAI credentials with
//! `OPENAI_REALTIME_URL` pointing here, SQLite on disk, `API_TOKEN` set. This
//! process plays both outer sides ([`twilio`], [`ai`]); calls are placed
//! over gRPC, and everything in between is the production path: the REST
//! client, signed webhooks, TwiML, the signed media WebSocket, the bridge,
//! the transcoders, the AI socket, the store.
//!
//! Per level it reports, for a measurement window after a warm-up:
//! - bridge latency per frame, as the server measures it (`GET /metrics`):
//!   frame handed to the bridge → its conversion written to the other socket;
//! - end-to-end latency per frame as seen from here (written on one side →
//!   read on the other: two loopback hops and both processes' scheduling);
//! - barge-in reaction (`speech_started` → `clear`), both ways of measuring;
//! - frames late (> 20 ms: in the bridge, end to end, or sent late by this
//!   generator) and lost (sent but never delivered nor dropped by a barge-in);
//! - server CPU seconds per call-minute and resident memory per call.
//!
//! A level is **carried** when nothing was late or lost, every barge-in got
//! its `clear` and `truncate`, and no call ended early.
//!
//! Replicas (issue #13, [`cluster`]): `--replicas 2 --database-url postgres://…/test` runs that
//! many server processes on a PostgreSQL database of their own (made per level, dropped after),
//! `--haproxy` puts docs/haproxy.cfg in front of them, and `--watch` watches every call on every
//! replica and reports how long each event took from its stamp to each watcher.
//!
//! Usage: `loadgen [--levels 50,100,250] [--seconds 20] [--mode transcode|passthrough|both] [--quick]`,
//! or `loadgen --chaos [--chaos-calls 200] [--chaos-seconds 600] [--quick]`: the chaos soak ([`chaos`]).

mod ai;
mod chaos;
mod cluster;
mod server;
mod stats;
mod twilio;

#[path = "../../pg.rs"]
mod pg;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio_util::sync::CancellationToken;
use voice_agent_proto::v1 as pb;

use crate::server::ServerProcess;
use crate::stats::{Snapshot, Window, percentile};

/// One media frame: 20 ms.
pub const FRAME: Duration = Duration::from_millis(20);
const API_TOKEN: &str = "loadgen-api-token";
/// Later than this is late (one frame period).
const LATE_MS: f64 = 20.0;

#[derive(Parser)]
#[command(about = "Drives N concurrent calls through the real server and measures the bridge")]
struct Args {
    /// Concurrent calls per level, comma-separated.
    #[arg(long, default_value = "100,200,300,400,500,600,800,1000", value_delimiter = ',')]
    levels: Vec<usize>,
    /// Length of the measurement window per level, seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Audio mode(s) to run.
    #[arg(long, default_value = "both", value_parser = ["transcode", "passthrough", "both"])]
    mode: String,
    /// Warm-up after every call is up, seconds.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Length of one AI audio delta, ms (a multiple of 20): 20 is one delta per
    /// Twilio frame, the most messages; the built-in emulator sends 100.
    #[arg(long, default_value_t = 20)]
    ai_chunk_ms: u64,
    /// Go on with higher levels after one is not carried.
    #[arg(long)]
    keep_going: bool,
    /// 3 calls for 3 s in both modes; exits non-zero when frames were lost or nothing was measured.
    #[arg(long)]
    quick: bool,
    /// The chaos soak instead of levels: a sustained number of calls while AI
    /// sockets drop, Twilio sockets stall and the server is SIGKILLed and
    /// restarted once (with --quick: 4 calls for 16 s).
    #[arg(long)]
    chaos: bool,
    /// Chaos: concurrent calls kept up (each lasts 20–60 s, then another replaces it).
    #[arg(long, default_value_t = 200)]
    chaos_calls: usize,
    /// Chaos: length of the soak, seconds (the kill comes halfway).
    #[arg(long, default_value_t = 600)]
    chaos_seconds: u64,
    /// Chaos: AI sockets the fake AI drops, per call-minute.
    #[arg(long, default_value_t = 0.5)]
    ai_drops_per_call_minute: f64,
    /// Chaos: stalls of the fake Twilio (stops reading and sending for 2–20 s), per call-minute.
    #[arg(long, default_value_t = 0.3)]
    stalls_per_call_minute: f64,
    /// The server binary (default: voice-agent-server beside this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Run the server on these CPUs only (a `taskset -c` list, e.g. `0`);
    /// run this generator under `taskset -c 1` to give each its own core.
    #[arg(long)]
    server_cpus: Option<String>,
    /// The server's tokio worker threads (`TOKIO_WORKER_THREADS`; default: one per CPU it may use).
    #[arg(long)]
    server_workers: Option<usize>,
    /// Server processes (replicas); more than one needs --database-url.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Run the replicas on PostgreSQL: a database of their own is created
    /// beside the one this URL names, per level, and dropped after.
    #[arg(long)]
    database_url: Option<String>,
    /// Put haproxy (docs/haproxy.cfg) in front: PUBLIC_URL and PlaceCall go
    /// through it. Without it, everything goes to the first replica.
    #[arg(long)]
    haproxy: bool,
    /// Watch every call on every replica (WatchCall) and report each
    /// event's delivery latency (stamped by the replica that committed it →
    /// received here), per replica watched.
    #[arg(long)]
    watch: bool,
}

/// How the server under test is started.
struct Launch<'a> {
    binary: &'a std::path::Path,
    cpus: Option<&'a str>,
    workers: Option<usize>,
    replicas: usize,
    database_url: Option<&'a str>,
    haproxy: bool,
    watch: bool,
}

/// State of one level's run, shared by both sides and the coordinator.
pub struct Run {
    t0: Instant,
    calls: usize,
    seconds: u64,
    /// Transcode mode: the AI speaks PCM16 24 kHz; passthrough: μ-law.
    pub pcm: bool,
    /// Audio per AI delta.
    pub ai_chunk: Duration,
    /// Both sides stop sending audio.
    pub stop_sending: CancellationToken,
    /// Twilio ends the streams; the fakes stop.
    pub close: CancellationToken,
    /// Media streams that sent `start`.
    pub media_started: AtomicUsize,
    /// AI sessions that got their first `response.create`.
    pub ai_started: AtomicUsize,
    /// Counters handing out frame phases.
    pub tw_phase: AtomicUsize,
    /// See `tw_phase`.
    pub ai_phase: AtomicUsize,
    /// Records of finished Twilio sides.
    pub tw_records: Mutex<Vec<twilio::TwRecord>>,
    /// Records of finished AI sides.
    pub ai_records: Mutex<Vec<ai::AiRecord>>,
    problems: Mutex<(usize, Vec<String>)>,
    /// The chaos soak's faults (none in a level run).
    pub chaos: Option<chaos::Knobs>,
}

impl Run {
    /// µs since the run started.
    pub fn us(&self) -> u32 {
        self.us_at(Instant::now())
    }

    /// µs from the start of the run to `t`.
    pub fn us_at(&self, t: Instant) -> u32 {
        t.saturating_duration_since(self.t0).as_micros() as u32
    }

    /// Notes something that went wrong (counted; the first few are kept).
    pub fn problem(&self, what: String) {
        let mut p = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        p.0 += 1;
        if p.1.len() < 5 {
            p.1.push(what);
        }
    }

    /// Frames a side may record in the run (for preallocation).
    pub fn expected_frames(&self) -> usize {
        ((self.seconds + 30) * 50) as usize
    }

    /// The next free frame phase: calls' 20 ms slots are spread evenly over
    /// the period, as calls that start at random times would be.
    pub fn phase_start(&self, counter: &AtomicUsize, period: Duration) -> tokio::time::Instant {
        let k = counter.fetch_add(1, Ordering::Relaxed) % self.calls.max(1);
        let offset = period * k as u32 / self.calls.max(1) as u32;
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.t0 + offset);
        let periods = elapsed.as_micros() / period.as_micros() + 1;
        (self.t0 + offset + period * periods as u32).into()
    }
}

/// Serves `app` on 127.0.0.1:0 (no Nagle, like the server's own sockets)
/// until the run closes; returns the address.
pub async fn serve_until_closed(run: &Run, app: axum::Router) -> std::io::Result<std::net::SocketAddr> {
    use axum::serve::ListenerExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let stop = run.close.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok(addr)
}

/// 20 ms of a 440 Hz tone at −12 dBFS as PCM16 24 kHz little-endian.
pub fn tone_pcm24k() -> &'static [u8] {
    static TONE: OnceLock<Vec<u8>> = OnceLock::new();
    TONE.get_or_init(|| {
        (0..480)
            .flat_map(|i| {
                let s = (8192.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 24_000.0).sin()) as i16;
                s.to_le_bytes()
            })
            .collect()
    })
}

/// 20 ms of the same tone as μ-law 8 kHz.
pub fn tone_ulaw() -> &'static [u8] {
    static TONE: OnceLock<Vec<u8>> = OnceLock::new();
    TONE.get_or_init(|| {
        (0..160)
            .map(|i| {
                let s = (8192.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 8_000.0).sin()) as i16;
                voice_agent_audio::linear_to_ulaw(s)
            })
            .collect()
    })
}

struct LevelResult {
    mode: &'static str,
    calls: usize,
    placed: usize,
    bridge_in: Window,
    bridge_out: Window,
    bridge_barge: Window,
    e2e_in: Vec<f64>,
    e2e_out: Vec<f64>,
    e2e_barge: Vec<f64>,
    late_bridge: u64,
    late_e2e: usize,
    late_generator: usize,
    lost_in: i64,
    lost_out: i64,
    barge_ins: usize,
    missing_clears: usize,
    missing_truncates: usize,
    ended_early: usize,
    server_cpu_per_call_minute: f64,
    server_cpu_pct: f64,
    loadgen_cpu_pct: f64,
    rss_idle_kib: f64,
    rss_per_call_kib: f64,
    generator_lag_p999_ms: f64,
    problems: (usize, Vec<String>),
    server_warnings: (usize, Vec<String>),
    /// Replica runs: what is measured beside the table's columns.
    replicas: Option<ReplicaFigures>,
}

/// Figures of a run with replicas, PostgreSQL, haproxy or watchers.
struct ReplicaFigures {
    replicas: usize,
    engine: &'static str,
    front: &'static str,
    /// Media bridges live on each replica during the window (how the load spread).
    bridges: Vec<f64>,
    /// CPU seconds per call-minute over the window: the replicas together,
    /// haproxy, PostgreSQL's backends of the database (None: not visible).
    cpu_replicas: f64,
    cpu_haproxy: Option<f64>,
    cpu_postgres: Option<f64>,
    watched: Option<cluster::Watched>,
}

impl LevelResult {
    /// Carried: no frame late in the bridge (> 20 ms, the server's own
    /// measure) and none lost, every barge-in answered, no call ended early;
    /// and, as a guard against saturation (a saturated server queues frames
    /// in the kernel, where its own clock cannot see them), 99.9 % of frames
    /// delivered end to end within 20 ms, sent on time by the generator.
    /// The end-to-end figures include the generator's scheduling and this
    /// machine's hiccups, hence a percentile rather than none at all (see
    /// docs/benchmarks.md); their counts are reported beside.
    fn carried(&self) -> bool {
        self.placed == self.calls
            && self.bridge_in.count() > 0
            && self.bridge_out.count() > 0
            && !self.e2e_in.is_empty()
            && !self.e2e_out.is_empty()
            && self.late_bridge == 0
            && percentile(&self.e2e_in, 99.9) <= LATE_MS
            && percentile(&self.e2e_out, 99.9) <= LATE_MS
            && self.generator_lag_p999_ms <= LATE_MS
            && self.lost_in == 0
            && self.lost_out == 0
            && self.missing_clears == 0
            && self.missing_truncates == 0
            && self.ended_early == 0
            && self.problems.0 == 0
            && self
                .replicas
                .as_ref()
                .and_then(|r| r.watched.as_ref())
                .is_none_or(|w| w.disorder == 0 && w.failed == 0)
    }
}

/// The metrics of every replica, summed (histograms bucket by bucket).
async fn metrics_all(http: &reqwest::Client, bases: &[String]) -> Result<(Snapshot, Vec<Snapshot>), String> {
    let mut each = Vec::new();
    for b in bases {
        each.push(metrics(http, b).await?);
    }
    let mut sum = Snapshot::default();
    for s in &each {
        sum.add(s);
    }
    Ok((sum, each))
}

async fn metrics(http: &reqwest::Client, base: &str) -> Result<Snapshot, String> {
    let resp = http
        .get(format!("{base}/metrics"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET /metrics: HTTP {}", resp.status()));
    }
    Ok(Snapshot::parse(&resp.text().await.map_err(|e| e.to_string())?))
}

async fn run_level(
    launch: &Launch<'_>,
    calls: usize,
    seconds: u64,
    warmup: u64,
    transcode: bool,
    ai_chunk: Duration,
) -> Result<LevelResult, String> {
    let mode = if transcode { "transcode" } else { "passthrough" };
    let run = Arc::new(Run {
        t0: Instant::now(),
        calls,
        seconds,
        pcm: transcode,
        ai_chunk,
        stop_sending: CancellationToken::new(),
        close: CancellationToken::new(),
        media_started: AtomicUsize::new(0),
        ai_started: AtomicUsize::new(0),
        tw_phase: AtomicUsize::new(0),
        ai_phase: AtomicUsize::new(0),
        tw_records: Mutex::default(),
        ai_records: Mutex::default(),
        problems: Mutex::default(),
        chaos: None,
    });
    let twilio_addr = twilio::start(run.clone()).await.map_err(|e| e.to_string())?;
    let ai_addr = ai::start(run.clone()).await.map_err(|e| e.to_string())?;
    let env: Vec<(&str, String)> = vec![
        ("HOST", "127.0.0.1".into()),
        ("PORT", "0".into()),
        // The production default: an operator's server logs at info.
        ("RUST_LOG", "info".into()),
        ("API_TOKEN", API_TOKEN.into()),
        ("TWILIO_ACCOUNT_SID", twilio::ACCOUNT_SID.into()),
        ("TWILIO_AUTH_TOKEN", twilio::AUTH_TOKEN.into()),
        ("TWILIO_PHONE_NUMBER", "+15005550006".into()),
        ("TWILIO_API_BASE_URL", format!("http://{twilio_addr}")),
        ("OPENAI_API_KEY", ai::API_KEY.into()),
        ("OPENAI_REALTIME_URL", format!("ws://{ai_addr}/v1/realtime")),
        // Voice Live pointed here too, so the server starts no emulator of its own.
        ("AZURE_VOICE_LIVE_ENDPOINT", format!("http://{ai_addr}")),
        ("AZURE_VOICE_LIVE_API_KEY", ai::API_KEY.into()),
        ("DEFAULT_BACKEND", "gpt-realtime".into()),
        ("AUDIO_MODE", mode.into()),
        ("MAX_CALL_DURATION", "3600".into()),
    ];
    let mut env = env;
    if let Some(n) = launch.workers {
        env.push(("TOKIO_WORKER_THREADS", n.to_string()));
    }
    let db = match launch.database_url {
        Some(url) => Some(pg::PgDatabase::create(url, None).await?),
        None => None,
    };
    let result = run_servers(launch, env, db.as_ref(), run, calls, seconds, warmup, mode).await;
    if let Some(db) = db {
        db.drop_database().await;
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_servers(
    launch: &Launch<'_>,
    mut env: Vec<(&str, String)>,
    db: Option<&pg::PgDatabase>,
    run: Arc<Run>,
    calls: usize,
    seconds: u64,
    warmup: u64,
    mode: &'static str,
) -> Result<LevelResult, String> {
    if let Some(db) = db {
        env.push(("DATABASE_URL", db.url.clone()));
    }
    let lb_port = if launch.haproxy {
        Some(cluster::free_port()?)
    } else {
        None
    };
    if let Some(port) = lb_port {
        env.push(("PUBLIC_URL", format!("http://127.0.0.1:{port}")));
    }
    let mut servers = Vec::new();
    for _ in 0..launch.replicas.max(1) {
        servers.push(ServerProcess::start(launch.binary, launch.cpus, &env)?);
    }
    let addrs: Vec<std::net::SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let bases: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    let lb = match lb_port {
        Some(port) => {
            let lb = cluster::Haproxy::start(port, &addrs)?;
            lb.wait_ready(&addrs).await?;
            Some(lb)
        }
        None => None,
    };
    // Calls are placed through haproxy, or on the first replica.
    let base = lb
        .as_ref()
        .map_or_else(|| bases[0].clone(), |lb| format!("http://127.0.0.1:{}", lb.port));
    let http = reqwest::Client::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle: f64 = servers.iter().map(ServerProcess::rss_kib).sum();
    let watched: Arc<Mutex<cluster::Watched>> = Arc::default();
    let watch_window: Arc<Mutex<Option<(std::time::SystemTime, std::time::SystemTime)>>> = Arc::default();
    let watch_stop = CancellationToken::new();
    // Watchers: one HTTP/2 connection per replica and 50 streams.
    let mut watch_channels: Vec<Vec<tonic::transport::Channel>> = Vec::new();
    if launch.watch {
        for _ in 0..calls.div_ceil(50) {
            let mut per_replica = Vec::new();
            for b in &bases {
                per_replica.push(
                    tonic::transport::Channel::from_shared(b.clone())
                        .map_err(|e| e.to_string())?
                        .connect()
                        .await
                        .map_err(|e| format!("gRPC connect {b}: {e}"))?,
                );
            }
            watch_channels.push(per_replica);
        }
    }

    // Place the calls, a few at a time, over one HTTP/2 connection.
    let channel = tonic::transport::Channel::from_shared(base.clone())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("gRPC connect: {e}"))?;
    let client = pb::voice_agent_service_client::VoiceAgentServiceClient::new(channel);
    let placing_started = Instant::now();
    let placed = Arc::new(AtomicUsize::new(0));
    let keys: Arc<Mutex<std::collections::HashMap<String, String>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let mut placers = Vec::new();
    for _ in 0..8 {
        let (mut client, run, placed, next, keys) =
            (client.clone(), run.clone(), placed.clone(), next.clone(), keys.clone());
        let (watch_channels, watched, watch_window, watch_stop) = (
            watch_channels.clone(),
            watched.clone(),
            watch_window.clone(),
            watch_stop.clone(),
        );
        placers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= calls {
                    break;
                }
                let key = format!("loadgen call {i}");
                let mut req = tonic::Request::new(pb::PlaceCallRequest {
                    to: "+15550100".into(),
                    backend: pb::Backend::GptRealtime as i32,
                    instructions: key.clone(),
                    ..Default::default()
                });
                req.metadata_mut()
                    .insert("authorization", format!("Bearer {API_TOKEN}").parse().expect("ascii"));
                match client.place_call(req).await {
                    Ok(resp) => {
                        let call_id = resp.into_inner().call_id;
                        if !watch_channels.is_empty() {
                            cluster::watch_everywhere(
                                &watch_channels[i / 50 % watch_channels.len()],
                                call_id.clone(),
                                API_TOKEN,
                                watch_window.clone(),
                                watched.clone(),
                                watch_stop.clone(),
                            );
                        }
                        keys.lock().unwrap_or_else(|p| p.into_inner()).insert(call_id, key);
                        placed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => run.problem(format!("PlaceCall: {e}")),
                }
            }
        }));
    }
    for p in placers {
        let _ = p.await;
    }
    // Every call answered, streaming, and its agent speaking.
    let deadline = Instant::now() + Duration::from_secs(30);
    while (run.media_started.load(Ordering::Relaxed) < calls || run.ai_started.load(Ordering::Relaxed) < calls)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let setup = placing_started.elapsed();
    tokio::time::sleep(Duration::from_secs(warmup)).await;

    // The measurement window.
    let cpu_all = |servers: &[ServerProcess]| servers.iter().map(ServerProcess::cpu_seconds).sum::<f64>();
    let pg_pids = match db {
        Some(db) => db.backend_pids().await,
        None => vec![],
    };
    let lb_cpu = |lb: &Option<cluster::Haproxy>| lb.as_ref().and_then(|l| pg::cpu_seconds(i64::from(l.pid())));
    let (m0, _) = metrics_all(&http, &bases).await?;
    let (pg0, lb0) = (pg::cpu_of(&pg_pids), lb_cpu(&lb));
    let (cpu0, self0, w0) = (cpu_all(&servers), server::cpu_seconds("/proc/self/stat"), run.us());
    let wall0 = std::time::SystemTime::now();
    *watch_window.lock().unwrap_or_else(|p| p.into_inner()) = Some((wall0, wall0 + Duration::from_secs(86_400)));
    let started = Instant::now();
    let mut rss = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        rss.push(servers.iter().map(ServerProcess::rss_kib).sum::<f64>());
    }
    let (cpu1, self1, w1) = (cpu_all(&servers), server::cpu_seconds("/proc/self/stat"), run.us());
    *watch_window.lock().unwrap_or_else(|p| p.into_inner()) = Some((wall0, std::time::SystemTime::now()));
    let (pg1, lb1) = (pg::cpu_of(&pg_pids), lb_cpu(&lb));
    let window_s = started.elapsed().as_secs_f64();
    let (m1, each1) = metrics_all(&http, &bases).await?;

    // Wind down: stop the audio, let what is in flight arrive, end the streams.
    run.stop_sending.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.close.cancel();
    let deadline = Instant::now() + Duration::from_secs(15);
    while (run.tw_records.lock().unwrap_or_else(|p| p.into_inner()).len() < run.media_started.load(Ordering::Relaxed)
        || run.ai_records.lock().unwrap_or_else(|p| p.into_inner()).len() < run.ai_started.load(Ordering::Relaxed))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The bridges have ended when the servers' count of live ones is back to 0.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut m_end, _) = metrics_all(&http, &bases).await?;
    while m_end.value("voice_agent_active_media_bridges") > 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        m_end = metrics_all(&http, &bases).await?.0;
    }
    watch_stop.cancel();
    let mut server_warnings = (0, Vec::new());
    for s in &servers {
        let w = s.warnings.lock().unwrap_or_else(|p| p.into_inner()).clone();
        server_warnings.0 += w.0;
        server_warnings
            .1
            .extend(w.1.into_iter().take(10usize.saturating_sub(server_warnings.1.len())));
    }
    drop(lb);
    for s in servers {
        if let Err(e) = s.stop(Duration::from_secs(10)) {
            run.problem(e);
        }
    }
    let call_minutes = calls as f64 * window_s / 60.0;
    let replica_figures =
        (launch.replicas > 1 || db.is_some() || lb_port.is_some() || launch.watch).then(|| ReplicaFigures {
            replicas: launch.replicas.max(1),
            engine: if db.is_some() { "PostgreSQL" } else { "SQLite" },
            front: if lb_port.is_some() { "haproxy" } else { "first replica" },
            bridges: each1
                .iter()
                .map(|m| m.value("voice_agent_active_media_bridges"))
                .collect(),
            cpu_replicas: (cpu1 - cpu0) / call_minutes,
            cpu_haproxy: lb0.zip(lb1).map(|(a, b)| (b - a) / call_minutes),
            cpu_postgres: pg::cpu_between(&pg0, &pg1).map(|c| c / call_minutes),
            watched: launch
                .watch
                .then(|| std::mem::take(&mut *watched.lock().unwrap_or_else(|p| p.into_inner()))),
        });

    // Join both sides' records by call.
    let tw = std::mem::take(&mut *run.tw_records.lock().unwrap_or_else(|p| p.into_inner()));
    let ai = std::mem::take(&mut *run.ai_records.lock().unwrap_or_else(|p| p.into_inner()));
    let in_window = |t: u32| t >= w0 && t < w1;
    let ms = |a: u32, b: u32| (b.saturating_sub(a)) as f64 / 1000.0;
    let mut r = LevelResult {
        mode,
        calls,
        placed: placed.load(Ordering::Relaxed),
        bridge_in: Window::between(
            &m0,
            &m1,
            "voice_agent_bridge_frame_latency_seconds{direction=\"inbound\"}",
        ),
        bridge_out: Window::between(
            &m0,
            &m1,
            "voice_agent_bridge_frame_latency_seconds{direction=\"outbound\"}",
        ),
        bridge_barge: Window::between(&m0, &m1, "voice_agent_barge_in_reaction_seconds{}"),
        e2e_in: vec![],
        e2e_out: vec![],
        e2e_barge: vec![],
        late_bridge: 0,
        late_e2e: 0,
        late_generator: 0,
        lost_in: 0,
        lost_out: 0,
        barge_ins: 0,
        missing_clears: 0,
        missing_truncates: 0,
        ended_early: tw.iter().filter(|t| t.ended_early).count(),
        server_cpu_per_call_minute: (cpu1 - cpu0) / (calls as f64 * window_s / 60.0),
        server_cpu_pct: 100.0 * (cpu1 - cpu0) / window_s,
        loadgen_cpu_pct: 100.0 * (self1 - self0) / window_s,
        rss_idle_kib: rss_idle,
        rss_per_call_kib: if rss.is_empty() {
            f64::NAN
        } else {
            (rss.iter().sum::<f64>() / rss.len() as f64 - rss_idle).max(0.0) / calls as f64
        },
        generator_lag_p999_ms: f64::NAN,
        problems: (0, vec![]),
        server_warnings,
        replicas: replica_figures,
    };
    r.late_bridge = r.bridge_in.above_ms(LATE_MS) + r.bridge_out.above_ms(LATE_MS);
    let keys = std::mem::take(&mut *keys.lock().unwrap_or_else(|p| p.into_inner()));
    let by_key: std::collections::HashMap<&str, &ai::AiRecord> = ai.iter().map(|a| (a.key.as_str(), a)).collect();
    let (mut sent_in, mut got_in, mut sent_out, mut got_out) = (0usize, 0usize, 0usize, 0usize);
    let mut lags = Vec::new();
    for t in &tw {
        for (s, lag) in t.sent.iter().zip(&t.lag) {
            if in_window(*s) {
                lags.push(*lag as f64 / 1000.0);
            }
        }
        let Some(a) = keys.get(&t.call_id).and_then(|k| by_key.get(k.as_str())) else {
            run.problem(format!("no AI session matches call {}", t.call_id));
            continue;
        };
        for (at, lag) in &a.lag {
            // The AI side's pacing is the generator's too.
            if in_window(*at) {
                lags.push(*lag as f64 / 1000.0);
            }
        }
        // Inbound: frames map one to one, in order, none dropped by design.
        sent_in += t.sent.len();
        got_in += a.appends.len();
        for (s, got) in t.sent.iter().zip(&a.appends) {
            if in_window(*s) {
                r.e2e_in.push(ms(*s, *got));
            }
        }
        // Outbound: what arrives between two clears is one response's audio,
        // in order; a barge-in may drop only its unsent tail.
        let responses_sent: usize = a.responses.iter().map(Vec::len).sum();
        sent_out += responses_sent;
        got_out += t.received.len();
        let mut bounds = t.segments.clone();
        bounds.push(t.received.len());
        for (k, resp) in a.responses.iter().enumerate() {
            let (Some(&from), Some(&to)) = (bounds.get(k), bounds.get(k + 1)) else {
                break;
            };
            for (s, got) in resp.iter().zip(&t.received[from..to]) {
                if in_window(*s) {
                    r.e2e_out.push(ms(*s, *got));
                }
            }
        }
        // Barge-in: every speech_started must be answered by a clear before the next one.
        r.barge_ins += a.speech_started.len();
        r.missing_truncates += a.speech_started.len().saturating_sub(a.truncates);
        for (k, s) in a.speech_started.iter().enumerate() {
            let next = a.speech_started.get(k + 1).copied().unwrap_or(u32::MAX);
            match t.clears.iter().find(|c| **c >= *s && **c < next) {
                Some(c) if in_window(*s) => r.e2e_barge.push(ms(*s, *c)),
                Some(_) => {}
                None => r.missing_clears += 1,
            }
        }
    }
    if tw.len() < calls || ai.len() < calls {
        run.problem(format!(
            "{} of {calls} media streams and {} AI sessions reported back",
            tw.len(),
            ai.len()
        ));
    }
    let dropped = m_end.value("voice_agent_bridge_frames_total{hop=\"dropped_barge_in\"}") as i64;
    r.lost_in = sent_in as i64 - got_in as i64;
    r.lost_out = sent_out as i64 - got_out as i64 - dropped;
    for v in [&mut r.e2e_in, &mut r.e2e_out, &mut r.e2e_barge, &mut lags] {
        v.sort_by(f64::total_cmp);
    }
    r.late_e2e = r.e2e_in.iter().chain(&r.e2e_out).filter(|l| **l > LATE_MS).count();
    r.generator_lag_p999_ms = percentile(&lags, 99.9);
    r.late_generator = lags.iter().filter(|l| **l > LATE_MS).count();
    eprintln!(
        "{mode} {calls}: set up in {:.1} s; {} barge-ins; {} frames dropped by them; generator lag p99.9 {:.2} ms; server idle RSS {:.0} KiB",
        setup.as_secs_f64(),
        r.barge_ins,
        dropped,
        r.generator_lag_p999_ms,
        r.rss_idle_kib
    );
    r.problems = run.problems.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(r)
}

fn fmt4(v: [f64; 4]) -> String {
    let f = |x: f64| {
        if x.is_nan() {
            "–".to_string()
        } else if x < 10.0 {
            format!("{x:.2}")
        } else {
            format!("{x:.1}")
        }
    };
    format!("{} / {} / {} / {}", f(v[0]), f(v[1]), f(v[2]), f(v[3]))
}

fn window4(w: &Window) -> String {
    fmt4([
        w.percentile_ms(50.0),
        w.percentile_ms(99.0),
        w.percentile_ms(99.9),
        w.max_ms(),
    ])
}

fn samples4(v: &[f64]) -> String {
    fmt4([
        percentile(v, 50.0),
        percentile(v, 99.0),
        percentile(v, 99.9),
        v.last().copied().unwrap_or(f64::NAN),
    ])
}

fn row(r: &LevelResult) -> String {
    format!(
        "| {} | {} | {} | {} | {} / {} | {} | {} | {} / {} | {} / {} / {} | {} / {} | {:.3} | {:.0} % / {:.0} % | {:.0} | {} |",
        r.mode,
        r.calls,
        window4(&r.bridge_in),
        window4(&r.bridge_out),
        fmt1(r.bridge_barge.percentile_ms(50.0)),
        fmt1(r.bridge_barge.percentile_ms(99.0)),
        samples4(&r.e2e_in),
        samples4(&r.e2e_out),
        fmt1(percentile(&r.e2e_barge, 50.0)),
        fmt1(percentile(&r.e2e_barge, 99.0)),
        r.late_bridge,
        r.late_e2e,
        r.late_generator,
        r.lost_in,
        r.lost_out,
        r.server_cpu_per_call_minute,
        r.server_cpu_pct,
        r.loadgen_cpu_pct,
        r.rss_per_call_kib,
        if r.carried() { "yes" } else { "no" },
    )
}

/// The replica figures of one level (a second table beside the main one).
fn replica_row(r: &LevelResult, f: &ReplicaFigures) -> String {
    let opt = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{v:.3}"));
    let all = f.cpu_replicas + f.cpu_haproxy.unwrap_or(0.0) + f.cpu_postgres.unwrap_or(0.0);
    let (count, latency, disorder) = match &f.watched {
        Some(w) => {
            let mut each = Vec::new();
            let mut count = 0;
            for (i, l) in w.latencies.iter().enumerate() {
                let mut l = l.clone();
                l.sort_by(f64::total_cmp);
                count += l.len();
                each.push(format!("r{}: {}", i + 1, samples4(&l)));
            }
            (
                count.to_string(),
                each.join("; "),
                format!("{} / {}", w.disorder, w.failed),
            )
        }
        None => ("–".into(), "–".into(), "–".into()),
    };
    format!(
        "| {} | {} | {}, {}, {} | {} | {:.3} / {} / {} / {:.3} | {count} | {latency} | {disorder} |",
        r.mode,
        r.calls,
        f.replicas,
        f.engine,
        f.front,
        f.bridges
            .iter()
            .map(|b| format!("{b:.0}"))
            .collect::<Vec<_>>()
            .join(" / "),
        f.cpu_replicas,
        opt(f.cpu_haproxy),
        opt(f.cpu_postgres),
        all,
    )
}

/// The CPUs this process may run on (`Cpus_allowed_list`), when restricted.
fn allowed_cpus() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim()
        .to_string();
    let all = std::thread::available_parallelism().map_or(0, |n| n.get());
    // Unrestricted: the list covers every CPU of the machine.
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    (online.trim() != list || all == 0).then_some(list)
}

fn fmt1(x: f64) -> String {
    if x.is_nan() { "–".into() } else { format!("{x:.2}") }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.chaos {
        return chaos::main(&args);
    }
    let (levels, seconds, warmup) = if args.quick {
        (vec![3], 3, 1)
    } else {
        (args.levels.clone(), args.seconds, args.warmup)
    };
    let modes: Vec<bool> = match (args.quick, args.mode.as_str()) {
        (false, "transcode") => vec![true],
        // Replicas, quickly: one mode is proof enough that the topology runs.
        (true, _) if args.replicas > 1 || args.database_url.is_some() => vec![true],
        (false, "passthrough") => vec![false],
        _ => vec![true, false],
    };
    let binary = args.server_bin.clone().unwrap_or_else(server::default_binary);
    if args.replicas > 1 && args.database_url.is_none() {
        eprintln!(
            "error: --replicas {} needs --database-url (replicas share a PostgreSQL database)",
            args.replicas
        );
        return std::process::ExitCode::FAILURE;
    }
    let launch = Launch {
        binary: &binary,
        cpus: args.server_cpus.as_deref(),
        workers: args.server_workers,
        replicas: args.replicas.max(1),
        database_url: args.database_url.as_deref(),
        haproxy: args.haproxy,
        watch: args.watch,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "AI deltas of {} ms; server on CPUs {}; generator on CPUs {}; {} s per level after {} s of warm-up\n",
        args.ai_chunk_ms.clamp(20, 1000) / 20 * 20,
        args.server_cpus.as_deref().unwrap_or("any"),
        allowed_cpus().unwrap_or_else(|| "any".into()),
        seconds,
        warmup
    );
    println!(
        "| mode | calls | bridge in ms p50 / p99 / p99.9 / max | bridge out ms p50 / p99 / p99.9 / max | barge-in ms p50 / p99 | end-to-end in ms p50 / p99 / p99.9 / max | end-to-end out ms | end-to-end barge-in ms p50 / p99 | late bridge / e2e / generator | lost in / out | server CPU s per call-minute | CPU server / loadgen | server RSS KiB per call | carried |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut failed = false;
    for transcode in modes {
        let mut best = 0;
        let mut replica_rows = Vec::new();
        for &n in &levels {
            let chunk = Duration::from_millis(args.ai_chunk_ms.clamp(20, 1000) / 20 * 20);
            let r = match runtime.block_on(run_level(&launch, n, seconds, warmup, transcode, chunk)) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("level {n}: {e}");
                    failed = true;
                    break;
                }
            };
            println!("{}", row(&r));
            if let Some(f) = &r.replicas {
                replica_rows.push(replica_row(&r, f));
            }
            if r.problems.0 > 0 {
                eprintln!("level {n}: {} problems, e.g. {:?}", r.problems.0, r.problems.1);
            }
            if r.server_warnings.0 > 0 {
                eprintln!(
                    "level {n}: {} server warnings, e.g. {:?}",
                    r.server_warnings.0, r.server_warnings.1
                );
            }
            // Quick mode checks what must hold at any speed (never a timing).
            if args.quick
                && (r.bridge_in.count() == 0
                    || r.bridge_out.count() == 0
                    || r.e2e_in.is_empty()
                    || r.e2e_out.is_empty()
                    || r.barge_ins == 0
                    || r.lost_in != 0
                    || r.lost_out != 0
                    || r.missing_clears != 0
                    || r.missing_truncates != 0
                    || r.ended_early != 0
                    || r.placed != r.calls
                    || r.problems.0 > 0
                    || r.replicas
                        .as_ref()
                        .and_then(|f| f.watched.as_ref())
                        .is_some_and(|w| w.disorder > 0 || w.failed > 0 || w.latencies.iter().all(Vec::is_empty)))
            {
                failed = true;
            }
            if r.carried() {
                best = n;
            } else if !args.keep_going && !args.quick {
                break;
            }
        }
        let name = if transcode { "transcode" } else { "passthrough" };
        println!("\n{name}: highest level carried = {best} concurrent calls\n");
        if !replica_rows.is_empty() {
            println!(
                "| mode | calls | replicas, store, front | bridges per replica | CPU s per call-minute: replicas / haproxy / PostgreSQL / all | watched events | delivery ms p50 / p99 / p99.9 / max, per replica watched | out of order / failed streams |"
            );
            println!("|---|---|---|---|---|---|---|---|");
            for r in &replica_rows {
                println!("{r}");
            }
            println!();
        }
    }
    if failed {
        eprintln!("load generator run failed: frames were lost, nothing was measured, or a call went wrong");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
