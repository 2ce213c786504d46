//! The chaos soak (`loadgen --chaos`): a sustained number of calls through the
//! real server binary while the fake AI drops sockets at random, the fake
//! Twilio stalls (neither reads nor writes for 2–20 s), and the server is
//! killed with SIGKILL halfway and restarted on the same database and port.
//! Calls last 20–60 s each (the callee hangs up) and are replaced at once.
//!
//! It reports (docs/benchmarks.md, "Chaos soak"):
//! - **stored events lost**: events a `WatchCall` subscriber received (the hub
//!   broadcasts an event only after its commit, so a delivered event was
//!   acknowledged as stored) that the restarted server's store does not return
//!   identically — by `WatchCall` from sequence 0 at the end of the run;
//! - **calls ended without a reason**: terminal calls in `ListCalls` whose
//!   `end_reason` is empty, and calls still not terminal after the wind-down;
//! - **memory over time**: the server's RSS every 5 s, and its least-squares
//!   slope per server life (before the kill, after the restart).
//!
//! It fails (exit 1) when an event was lost, a call ended without a reason or
//! stayed live, or nothing was placed; never on a timing.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use voice_agent_proto::v1 as pb;

use crate::server::ServerProcess;
use crate::{API_TOKEN, Args, Run, ai, twilio};

/// How long a call lasts before the callee hangs up (uniform).
const CALL_SECS: (f64, f64) = (20.0, 60.0);
/// How long a Twilio stall lasts (uniform).
const STALL_SECS: (f64, f64) = (2.0, 20.0);
/// RSS sampling period.
const SAMPLE: Duration = Duration::from_secs(5);

/// The faults of a chaos run, and what was injected.
#[derive(Default)]
pub struct Knobs {
    ai_drops_per_call_minute: f64,
    stalls_per_call_minute: f64,
    /// AI sockets dropped by the fake AI.
    pub ai_drops: AtomicUsize,
    /// Stalls of the fake Twilio.
    pub stalls: AtomicUsize,
    /// Calls the fake Twilio is busy with (REST create → final callback).
    pub twilio_live: AtomicUsize,
}

impl Knobs {
    /// Whether the AI socket drops in this tick of length `period`.
    pub fn roll_ai_drop(&self, period: Duration) -> bool {
        let hit = uniform() < self.ai_drops_per_call_minute * period.as_secs_f64() / 60.0;
        if hit {
            self.ai_drops.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// Whether Twilio stalls in this tick of length `period`.
    pub fn roll_stall(&self, period: Duration) -> bool {
        let hit = uniform() < self.stalls_per_call_minute * period.as_secs_f64() / 60.0;
        if hit {
            self.stalls.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }
}

/// Counts one live call for as long as it is held.
pub struct Live<'a>(&'a AtomicUsize);

impl<'a> Live<'a> {
    /// Counts a call in.
    pub fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Uniform in [0, 1), from the OS's randomness (uuid v4): no seed to manage.
fn uniform() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// A fair coin.
pub fn coin() -> bool {
    uniform() < 0.5
}

fn between((lo, hi): (f64, f64)) -> Duration {
    Duration::from_secs_f64(lo + (hi - lo) * uniform())
}

/// How long the next call lasts.
pub fn lifetime() -> Duration {
    between(CALL_SECS)
}

/// How long the next stall lasts.
pub fn stall() -> Duration {
    between(STALL_SECS)
}

type Client = pb::voice_agent_service_client::VoiceAgentServiceClient<tonic::transport::Channel>;

fn authed<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {API_TOKEN}").parse().expect("ascii"));
    req
}

/// Events every watcher received, per call.
type Seen = Arc<Mutex<HashMap<String, Vec<pb::CallEvent>>>>;

/// Watches one call until its stream ends or the soak stops, resuming after
/// the last sequence seen when the stream breaks (the kill).
async fn watch(mut client: Client, call_id: String, seen: Seen, stop: CancellationToken) {
    let mut last = 0;
    while !stop.is_cancelled() {
        let req = authed(pb::WatchCallRequest {
            call_id: call_id.clone(),
            after_sequence: last,
        });
        let mut stream = match client.watch_call(req).await {
            Ok(s) => s.into_inner(),
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = stop.cancelled() => return,
            };
            match msg {
                Ok(Some(pb::WatchCallResponse { event: Some(ev) })) => {
                    last = ev.sequence;
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(call_id.clone())
                        .or_default()
                        .push(ev);
                }
                Ok(Some(_)) => {}
                // The call ended and its stream with it.
                Ok(None) => return,
                Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One RSS sample: seconds since the start, KiB, which server life.
struct Sample {
    at: f64,
    kib: f64,
    life: usize,
}

/// Least-squares slope, KiB per minute.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 { f64::NAN } else { 60.0 * sxy / sxx }
}

/// What the soak found.
#[derive(Default)]
struct Report {
    placed: usize,
    place_errors: usize,
    calls_listed: usize,
    by_status: BTreeMap<String, usize>,
    reasons: BTreeMap<String, usize>,
    without_reason: Vec<String>,
    still_live: Vec<String>,
    events_seen: usize,
    events_lost: usize,
    lost_examples: Vec<String>,
    live_at_kill: usize,
    restart_ms: u128,
}

/// A reason without its ids and numbers, to group them.
fn reason_class(reason: &str) -> String {
    let class: String = reason
        .split_whitespace()
        .map(|w| if w.chars().any(|c| c.is_ascii_digit()) { "#" } else { w })
        .collect::<Vec<_>>()
        .join(" ");
    class.chars().take(90).collect()
}

fn terminal(status: i32) -> bool {
    status >= pb::CallStatus::Completed as i32
}

/// `loadgen --chaos`.
pub fn main(args: &Args) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(soak(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("chaos soak failed: events lost, calls without a reason or left live, or nothing placed");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("chaos soak: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn soak(args: &Args) -> Result<bool, String> {
    let (calls, seconds) = if args.quick {
        (4, 16)
    } else {
        (args.chaos_calls.max(1), args.chaos_seconds.max(10))
    };
    // Quick runs need a fault of each kind within seconds.
    let (drops, stalls) = if args.quick {
        (6.0, 4.0)
    } else {
        (args.ai_drops_per_call_minute, args.stalls_per_call_minute)
    };
    let transcode = args.mode != "passthrough";
    let run = Arc::new(Run {
        t0: Instant::now(),
        calls,
        // Only sizes the per-call record buffers.
        seconds: 60,
        pcm: transcode,
        ai_chunk: Duration::from_millis(args.ai_chunk_ms.clamp(20, 1000) / 20 * 20),
        stop_sending: CancellationToken::new(),
        close: CancellationToken::new(),
        media_started: AtomicUsize::new(0),
        ai_started: AtomicUsize::new(0),
        tw_phase: AtomicUsize::new(0),
        ai_phase: AtomicUsize::new(0),
        tw_records: Mutex::default(),
        ai_records: Mutex::default(),
        problems: Mutex::default(),
        chaos: Some(Knobs {
            ai_drops_per_call_minute: drops,
            stalls_per_call_minute: stalls,
            ..Default::default()
        }),
    });
    let knobs = run.chaos.as_ref().ok_or("no knobs")?;
    let twilio_addr = twilio::start(run.clone()).await.map_err(|e| e.to_string())?;
    let ai_addr = ai::start(run.clone()).await.map_err(|e| e.to_string())?;
    // A fixed port, so that the restarted server is where Twilio's URLs point.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("free port: {e}"))?
        .port();
    let env: Vec<(&str, String)> = vec![
        ("HOST", "127.0.0.1".into()),
        ("PORT", port.to_string()),
        ("RUST_LOG", "info".into()),
        ("API_TOKEN", API_TOKEN.into()),
        ("TWILIO_ACCOUNT_SID", twilio::ACCOUNT_SID.into()),
        ("TWILIO_AUTH_TOKEN", twilio::AUTH_TOKEN.into()),
        ("TWILIO_PHONE_NUMBER", "+15005550006".into()),
        ("TWILIO_API_BASE_URL", format!("http://{twilio_addr}")),
        ("OPENAI_API_KEY", ai::API_KEY.into()),
        ("OPENAI_REALTIME_URL", format!("ws://{ai_addr}/v1/realtime")),
        ("AZURE_VOICE_LIVE_ENDPOINT", format!("http://{ai_addr}")),
        ("AZURE_VOICE_LIVE_API_KEY", ai::API_KEY.into()),
        ("DEFAULT_BACKEND", "gpt-realtime".into()),
        ("AUDIO_MODE", if transcode { "transcode" } else { "passthrough" }.into()),
        ("MAX_CALL_DURATION", "3600".into()),
    ];
    let binary = args.server_bin.clone().unwrap_or_else(crate::server::default_binary);
    let cpus = args.server_cpus.as_deref();
    let mut server = ServerProcess::start(&binary, cpus, &env)?;
    let base = format!("http://{}", server.addr);
    let channel = tonic::transport::Channel::from_shared(base.clone())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    let client = Client::new(channel);
    eprintln!(
        "chaos: {calls} calls for {seconds} s, kill at {} s; {drops} AI drops and {stalls} stalls per call-minute; server on port {port}",
        seconds / 2
    );

    let seen: Seen = Arc::default();
    let placed_ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop_placing = CancellationToken::new();
    let stop_watching = CancellationToken::new();
    let place_errors = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut placers = Vec::new();
    for _ in 0..4 {
        let (mut client, stop, errors, in_flight, ids, seen, stop_watching, run) = (
            client.clone(),
            stop_placing.clone(),
            place_errors.clone(),
            in_flight.clone(),
            placed_ids.clone(),
            seen.clone(),
            stop_watching.clone(),
            run.clone(),
        );
        placers.push(tokio::spawn(async move {
            let Some(knobs) = run.chaos.as_ref() else { return };
            while !stop.is_cancelled() {
                if knobs.twilio_live.load(Ordering::Relaxed) + in_flight.load(Ordering::Relaxed) >= calls {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let _slot = Live::new(&in_flight);
                let req = authed(pb::PlaceCallRequest {
                    to: "+15550100".into(),
                    backend: pb::Backend::GptRealtime as i32,
                    instructions: "chaos".into(),
                    ..Default::default()
                });
                match client.place_call(req).await {
                    Ok(resp) => {
                        let id = resp.into_inner().call_id;
                        ids.lock().unwrap_or_else(|p| p.into_inner()).push(id.clone());
                        tokio::spawn(watch(client.clone(), id, seen.clone(), stop_watching.clone()));
                        // Let the fake Twilio count it in before the next decision.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(_) => {
                        // The server is down (the kill) or refused: try again shortly.
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }));
    }

    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut life = 0;
    let mut report = Report::default();
    let mut next_sample = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(seconds) {
        if life == 0 && started.elapsed() >= Duration::from_secs(seconds / 2) {
            report.live_at_kill = knobs.twilio_live.load(Ordering::Relaxed);
            let dir = server.kill();
            let t = Instant::now();
            server = ServerProcess::start_in(dir, &binary, cpus, &env)?;
            report.restart_ms = t.elapsed().as_millis();
            life = 1;
            eprintln!(
                "chaos: killed the server with {} calls live; restarted in {} ms",
                report.live_at_kill, report.restart_ms
            );
        }
        if started.elapsed() >= next_sample {
            next_sample += SAMPLE;
            samples.push(Sample {
                at: started.elapsed().as_secs_f64(),
                kib: server.rss_kib(),
                life,
            });
            // The level's records are not needed here: keep the generator's memory flat.
            run.tw_records.lock().unwrap_or_else(|p| p.into_inner()).clear();
            run.ai_records.lock().unwrap_or_else(|p| p.into_inner()).clear();
            if samples.len().is_multiple_of(6) {
                eprintln!(
                    "chaos: {:>4.0} s: {} live, {} placed, RSS {:.0} MiB, {} AI drops, {} stalls",
                    started.elapsed().as_secs_f64(),
                    knobs.twilio_live.load(Ordering::Relaxed),
                    placed_ids.lock().unwrap_or_else(|p| p.into_inner()).len(),
                    server.rss_kib() / 1024.0,
                    knobs.ai_drops.load(Ordering::Relaxed),
                    knobs.stalls.load(Ordering::Relaxed),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Wind down: no new calls; the callees hang up; the calls end.
    stop_placing.cancel();
    for p in placers {
        let _ = p.await;
    }
    run.stop_sending.cancel();
    run.close.cancel();
    let deadline = Instant::now() + Duration::from_secs(30);
    while knobs.twilio_live.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The bridges wind up and the last events are written.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_watching.cancel();

    let mut client = client;
    let ids = placed_ids.lock().unwrap_or_else(|p| p.into_inner()).clone();
    report.placed = ids.len();
    report.place_errors = place_errors.load(Ordering::Relaxed);
    // Every call the store holds.
    let mut token = String::new();
    loop {
        let page = client
            .list_calls(authed(pb::ListCallsRequest {
                page_size: 100,
                page_token: token.clone(),
                ..Default::default()
            }))
            .await
            .map_err(|e| format!("ListCalls: {e}"))?
            .into_inner();
        for c in &page.calls {
            report.calls_listed += 1;
            let status = pb::CallStatus::try_from(c.status)
                .map(|s| s.as_str_name().trim_start_matches("CALL_STATUS_").to_string())
                .unwrap_or_else(|_| c.status.to_string());
            *report.by_status.entry(status).or_default() += 1;
            if !terminal(c.status) {
                report.still_live.push(c.call_id.clone());
            } else if c.end_reason.is_empty() {
                report.without_reason.push(c.call_id.clone());
            } else {
                *report.reasons.entry(reason_class(&c.end_reason)).or_default() += 1;
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    // Every event a watcher received, against the store after the restart.
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    for (id, events) in &seen {
        report.events_seen += events.len();
        let Some(max) = events.iter().map(|e| e.sequence).max() else {
            continue;
        };
        let mut stored: HashMap<u64, pb::CallEvent> = HashMap::new();
        if let Ok(resp) = client
            .watch_call(authed(pb::WatchCallRequest {
                call_id: id.clone(),
                after_sequence: 0,
            }))
            .await
        {
            let mut stream = resp.into_inner();
            while let Ok(Ok(Some(msg))) = tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
                if let Some(ev) = msg.event {
                    let seq = ev.sequence;
                    stored.insert(seq, ev);
                    if seq >= max {
                        break;
                    }
                }
            }
        }
        for ev in events {
            if stored.get(&ev.sequence) != Some(ev) {
                report.events_lost += 1;
                if report.lost_examples.len() < 5 {
                    report.lost_examples.push(format!("call {id} event {}", ev.sequence));
                }
            }
        }
    }
    let warnings = server.warnings.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Err(e) = server.stop(Duration::from_secs(15)) {
        eprintln!("chaos: {e}");
    }
    let problems = run.problems.lock().unwrap_or_else(|p| p.into_inner()).clone();
    print_report(
        &report,
        &samples,
        calls,
        seconds,
        knobs,
        started.elapsed().as_secs_f64(),
        &problems,
        &warnings,
    );
    Ok(report.placed > 0
        && report.events_seen > 0
        && report.events_lost == 0
        && report.without_reason.is_empty()
        && report.still_live.is_empty())
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    r: &Report,
    samples: &[Sample],
    calls: usize,
    seconds: u64,
    knobs: &Knobs,
    elapsed: f64,
    problems: &(usize, Vec<String>),
    warnings: &(usize, Vec<String>),
) {
    println!("## Chaos soak: {calls} calls for {seconds} s (wall {elapsed:.0} s)\n");
    println!("| what | figure |");
    println!("|---|---|");
    println!(
        "| calls placed (PlaceCall OK) / refused or failed (mostly while the server was down) | {} / {} |",
        r.placed, r.place_errors
    );
    println!(
        "| AI sockets dropped / Twilio stalls injected | {} / {} |",
        knobs.ai_drops.load(Ordering::Relaxed),
        knobs.stalls.load(Ordering::Relaxed)
    );
    println!(
        "| calls live at the SIGKILL / restart to listening | {} / {} ms |",
        r.live_at_kill, r.restart_ms
    );
    println!(
        "| events received by watchers / **lost** (not returned identically after the restart) | {} / **{}** |",
        r.events_seen, r.events_lost
    );
    println!(
        "| calls in the store / **ended without a reason** / **still live** after the wind-down | {} / **{}** / **{}** |",
        r.calls_listed,
        r.without_reason.len(),
        r.still_live.len()
    );
    let statuses: Vec<String> = r.by_status.iter().map(|(s, n)| format!("{s} {n}")).collect();
    println!("| final statuses | {} |", statuses.join(", "));
    for (life, name) in [(0, "before the kill"), (1, "after the restart")] {
        let pts: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.life == life)
            .map(|s| (s.at, s.kib))
            .collect();
        // The first minute of a life is the ramp to the level, not a trend.
        let steady: Vec<(f64, f64)> = pts.iter().copied().filter(|p| p.0 - pts[0].0 >= 60.0).collect();
        let (first, last, max) = (
            pts.first().map_or(f64::NAN, |p| p.1),
            pts.last().map_or(f64::NAN, |p| p.1),
            pts.iter().map(|p| p.1).fold(f64::NAN, f64::max),
        );
        println!(
            "| server RSS {name}: first / last / max MiB; slope (after its first minute) KiB/min | {:.1} / {:.1} / {:.1}; {:.0} ({} samples) |",
            first / 1024.0,
            last / 1024.0,
            max / 1024.0,
            slope(&steady),
            steady.len()
        );
    }
    println!("\nEnd reasons (ids and numbers as #):\n");
    let mut reasons: Vec<(&String, &usize)> = r.reasons.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1));
    for (reason, n) in reasons.iter().take(12) {
        println!("- {n} × {reason}");
    }
    println!(
        "\nRSS samples (s: MiB): {}",
        samples
            .iter()
            .map(|s| format!("{:.0}:{:.1}", s.at, s.kib / 1024.0))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if !r.lost_examples.is_empty() {
        println!("\nlost, e.g.: {:?}", r.lost_examples);
    }
    if !r.without_reason.is_empty() || !r.still_live.is_empty() {
        println!(
            "\nwithout a reason, e.g.: {:?}; still live, e.g.: {:?}",
            &r.without_reason.iter().take(5).collect::<Vec<_>>(),
            &r.still_live.iter().take(5).collect::<Vec<_>>()
        );
    }
    println!(
        "\ngenerator-side errors (refused callbacks, broken streams; expected around the kill): {}, e.g. {:?}",
        problems.0, problems.1
    );
    println!(
        "server warnings and errors in its log: {}, e.g. {:?}",
        warnings.0,
        warnings.1.iter().take(4).collect::<Vec<_>>()
    );
}
