//! The store's append path under concurrent calls: how many events per second
//! each engine commits through [`Store::update`], the one way events are
//! stored (the hub stamps them and calls it; on PostgreSQL the same
//! transaction also sends the replicas' NOTIFY).
//!
//! Per engine and number of concurrent writers (one call each, as the bridges
//! of that many live calls are): a fresh database, the calls inserted, then
//! every writer appends events to its call as fast as its commits return for
//! a window after a warm-up. Reported: events and commits per second, the
//! commit latency (p50 / p99 / max), the CPU of this process (SQLite runs in
//! it) and of the PostgreSQL backends serving the database (from
//! `pg_stat_activity` and `/proc`, when the server runs on this machine).
//! Afterwards every call's stored `event_count` must equal the events its
//! writer counted and its log must read back gapless, or the run fails.
//!
//! Engines: `sqlite` (a file, the server's own settings: WAL, `synchronous =
//! NORMAL`), `postgres` (the server's settings: `synchronous_commit = on`, an
//! fsync per commit, grouped by PostgreSQL), and `postgres-async`
//! (`synchronous_commit = off` for the store's connections, which is what
//! SQLite's NORMAL compares with: neither waits for the disk per commit).
//!
//! Usage: `storebench [--engines sqlite,postgres,postgres-async] [--writers 1,4,16,64]
//! [--seconds 10] [--events-per-commit 1] [--database-url postgres://postgres@127.0.0.1:5432/test] [--quick]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use voice_agent_server::call::{Backend, CallEvent, CallId, CallRecord, CallStatus, EventKind, Speaker};
use voice_agent_server::config::{DatabaseLocation, Secret};
use voice_agent_server::store::Store;

#[path = "../pg.rs"]
mod pg;

use crate::pg::{PgDatabase, cpu_between, cpu_of, cpu_seconds};

#[derive(Parser)]
#[command(about = "Events per second the call store commits, SQLite against PostgreSQL")]
struct Args {
    /// Engines to measure: sqlite, postgres, postgres-async.
    #[arg(long, default_value = "sqlite,postgres,postgres-async", value_delimiter = ',')]
    engines: Vec<String>,
    /// Concurrent writers (one call each), comma-separated.
    #[arg(long, default_value = "1,4,16,64", value_delimiter = ',')]
    writers: Vec<usize>,
    /// Measurement window per run, seconds (after 1 s of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Events per commit (the bridge mostly commits one at a time).
    #[arg(long, default_value_t = 1)]
    events_per_commit: usize,
    /// A PostgreSQL database the bench may create databases beside (each run
    /// makes one of its own and drops it).
    #[arg(long, env = "TEST_DATABASE_URL", default_value = voice_agent_server::store::TEST_DATABASE_URL)]
    database_url: String,
    /// SQLite and PostgreSQL with 2 writers for 1 s: proves the tool runs
    /// (exits non-zero when nothing was committed or a log is wrong).
    #[arg(long)]
    quick: bool,
}

fn record() -> CallRecord {
    CallRecord {
        call_id: CallId::new(),
        to: "+15550100".into(),
        from: "+15005550006".into(),
        backend: Backend::GptRealtime,
        status: CallStatus::InProgress,
        provider_call_id: format!("CA{}", uuid::Uuid::new_v4().simple()),
        metadata: Default::default(),
        created_at: Utc::now(),
        answered_at: Some(Utc::now()),
        ended_at: None,
        emulated: false,
        end_reason: String::new(),
        instructions: "You are a helpful assistant calling to confirm an appointment.".into(),
        voice: String::new(),
        greeting: String::new(),
        max_duration_secs: 3600,
        duration_seconds: 0,
        answered_by: String::new(),
        provider_error_code: String::new(),
        turn_latency_p50_ms: 0,
        turn_latency_p95_ms: 0,
        event_count: 0,
        stream_secret: uuid::Uuid::new_v4().simple().to_string(),
        last_provider_sequence: None,
        turn_latencies_ms: vec![],
        record: false,
        recording: None,
        tools: vec![],
        tool_timeout_ms: 0,
        voicemail: Default::default(),
        webhooks: vec![],
        transfer_targets: vec![],
        transfer: None,
        stream_generation: 0,
        resuming: None,
    }
}

/// A transcript of a typical utterance: the event the bridge stores most.
fn utterance(n: u64) -> EventKind {
    EventKind::Transcript {
        speaker: if n.is_multiple_of(2) {
            Speaker::Agent
        } else {
            Speaker::Callee
        },
        text: format!("Utterance {n}: yes, Tuesday at three in the afternoon works for me, thank you."),
        interrupted: false,
    }
}

struct Outcome {
    engine: String,
    writers: usize,
    events: u64,
    commits: u64,
    window_s: f64,
    latencies_us: Vec<u64>,
    self_cpu_pct: f64,
    pg_cpu_pct: Option<f64>,
}

async fn run(args: &Args, engine: &str, writers: usize, seconds: u64) -> Result<Outcome, String> {
    let dir = std::env::temp_dir().join(format!("va-storebench-{}", uuid::Uuid::new_v4().simple()));
    let (location, pg) = match engine {
        "sqlite" => {
            std::fs::create_dir_all(&dir).map_err(|e| format!("temp dir: {e}"))?;
            (DatabaseLocation::File(dir.join("calls.db")), None)
        }
        "postgres" | "postgres-async" => {
            let options = (engine == "postgres-async").then_some("options=-c%20synchronous_commit%3Doff");
            let db = PgDatabase::create(&args.database_url, options).await?;
            (DatabaseLocation::Postgres(Secret::new(db.url.clone())), Some(db))
        }
        other => return Err(format!("unknown engine {other:?} (sqlite, postgres, postgres-async)")),
    };
    let result = measure(args, engine, writers, seconds, &location, pg.as_ref()).await;
    if let Some(db) = pg {
        db.drop_database().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(
    args: &Args,
    engine: &str,
    writers: usize,
    seconds: u64,
    location: &DatabaseLocation,
    pg: Option<&PgDatabase>,
) -> Result<Outcome, String> {
    let store = Store::open(location).await.map_err(|e| format!("open {engine}: {e}"))?;
    let mut ids = Vec::new();
    for _ in 0..writers {
        let r = record();
        ids.push(r.call_id.clone());
        store.insert_call(r, None).await.map_err(|e| format!("insert: {e}"))?;
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let counted = Arc::new(AtomicU64::new(0));
    let per_commit = args.events_per_commit.max(1);
    let mut tasks = Vec::new();
    for id in ids.clone() {
        let (store, measuring, stop, counted) = (store.clone(), measuring.clone(), stop.clone(), counted.clone());
        tasks.push(tokio::spawn(async move {
            // (events stored by this writer, latencies of the commits in the window, events in the window)
            let mut stored = 0u64;
            let mut latencies = Vec::new();
            let mut in_window = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (_, events) = store
                    .update(&id, move |rec| {
                        let now = Utc::now();
                        (0..per_commit)
                            .map(|_| {
                                let kind = utterance(rec.event_count + 1);
                                rec.apply(&kind, now);
                                CallEvent {
                                    sequence: rec.event_count,
                                    time: now,
                                    kind,
                                }
                            })
                            .collect()
                    })
                    .await
                    .map_err(|e| format!("update: {e}"))?;
                stored += events.len() as u64;
                if measuring.load(Ordering::Relaxed) {
                    latencies.push(t.elapsed().as_micros() as u64);
                    in_window += events.len() as u64;
                    counted.fetch_add(events.len() as u64, Ordering::Relaxed);
                }
            }
            Ok::<_, String>((id, stored, latencies, in_window))
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pids = match pg {
        Some(db) => db.backend_pids().await,
        None => vec![],
    };
    let pg0 = cpu_of(&pids);
    let self0 = cpu_seconds(i64::from(std::process::id())).unwrap_or(0.0);
    let started = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let window_s = started.elapsed().as_secs_f64();
    let self1 = cpu_seconds(i64::from(std::process::id())).unwrap_or(0.0);
    let pg1 = cpu_of(&pids);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut stored = Vec::new();
    for t in tasks {
        let (id, n, l, _) = t.await.map_err(|e| format!("writer: {e}"))??;
        latencies.extend(l);
        stored.push((id, n));
    }
    // What was counted is what is stored: the record's count and a gapless log.
    for (id, n) in &stored {
        let rec = store
            .get_call(id)
            .await
            .map_err(|e| format!("get_call: {e}"))?
            .ok_or("a call went missing")?;
        if rec.event_count != *n {
            return Err(format!(
                "{id}: {n} events committed, the record counts {}",
                rec.event_count
            ));
        }
        let mut next = 1u64;
        while next <= *n {
            let page = store
                .events_after(id, next - 1, 5000)
                .await
                .map_err(|e| format!("events_after: {e}"))?;
            if page.is_empty() {
                return Err(format!("{id}: the log ends at {} of {n}", next - 1));
            }
            for ev in page {
                if ev.sequence != next {
                    return Err(format!("{id}: sequence {} where {next} was due", ev.sequence));
                }
                next += 1;
            }
        }
    }
    store.close().await.map_err(|e| format!("close: {e}"))?;
    latencies.sort_unstable();
    let pg_cpu_pct = cpu_between(&pg0, &pg1).map(|used| 100.0 * used / window_s);
    Ok(Outcome {
        engine: engine.to_string(),
        writers,
        events: counted.load(Ordering::Relaxed),
        commits: latencies.len() as u64,
        window_s,
        latencies_us: latencies,
        self_cpu_pct: 100.0 * (self1 - self0) / window_s,
        pg_cpu_pct,
    })
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1] as f64 / 1000.0
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let (engines, writers, seconds) = if args.quick {
        (vec!["sqlite".to_string(), "postgres".to_string()], vec![2], 1)
    } else {
        (args.engines.clone(), args.writers.clone(), args.seconds)
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "{} event(s) per commit; {seconds} s per run after 1 s of warm-up; CPU: 100 % = one core\n",
        args.events_per_commit.max(1)
    );
    println!(
        "| engine | writers | events/s | commits/s | commit ms p50 / p99 / max | CPU this process (store client) | CPU PostgreSQL backends |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut failed = false;
    for engine in &engines {
        for &n in &writers {
            match runtime.block_on(run(&args, engine, n, seconds)) {
                Ok(o) => {
                    println!(
                        "| {} | {} | {:.0} | {:.0} | {:.2} / {:.2} / {:.1} | {:.0} % | {} |",
                        o.engine,
                        o.writers,
                        o.events as f64 / o.window_s,
                        o.commits as f64 / o.window_s,
                        pct(&o.latencies_us, 50.0),
                        pct(&o.latencies_us, 99.0),
                        o.latencies_us.last().map_or(f64::NAN, |l| *l as f64 / 1000.0),
                        o.self_cpu_pct,
                        o.pg_cpu_pct.map_or("–".to_string(), |c| format!("{c:.0} %")),
                    );
                    if o.events == 0 {
                        eprintln!("{engine} with {n} writers: nothing was committed");
                        failed = true;
                    }
                }
                Err(e) => {
                    eprintln!("{engine} with {n} writers: {e}");
                    failed = true;
                }
            }
        }
    }
    if failed {
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
