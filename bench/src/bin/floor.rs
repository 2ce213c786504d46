//! The floor under the load generator's figures: the same message pattern as
//! `loadgen` (per call and 20 ms: a Twilio frame in, an append out to the AI,
//! an AI delta in, a Twilio `media` with its mark out), over the same loopback
//! TCP, between two threads that do **nothing else** — no WebSocket framing,
//! no JSON, no audio, no async runtime: one `mio` event loop each, fixed-size
//! messages whose first 8 bytes carry the send time.
//!
//! What it answers: how many concurrent calls this machine's kernel alone
//! lets through one core for the "server" (the relay) and one for the
//! "generator" (the ends), under the same guard `loadgen` uses to call a level
//! carried (99.9 % of frames end to end within 20 ms, the generator within
//! 20 ms of its slots). No real server can carry more than this floor on the
//! same machine with the generator beside it.
//!
//! ```sh
//! cargo run --release -p voice-agent-tests --bin floor -- --levels 250,500,1000 --seconds 10
//! ```

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream as StdStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

#[derive(Parser, Debug)]
#[command(about = "Loopback TCP cost of loadgen's message pattern with no server work at all")]
struct Args {
    /// Concurrent calls per level, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "250,500,750,1000")]
    levels: Vec<usize>,
    /// Measured seconds per level (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Audio per AI delta in ms (20 or 100, as `loadgen --ai-chunk-ms`).
    #[arg(long, default_value_t = 20)]
    ai_chunk_ms: usize,
    /// Message sizes of `passthrough` (μ-law to the AI) instead of `transcode` (PCM16 at 24 kHz).
    #[arg(long)]
    passthrough: bool,
    /// CPU of the relay (the server's place) and of the ends (the generator's).
    #[arg(long, default_value_t = 0)]
    relay_cpu: usize,
    #[arg(long, default_value_t = 1)]
    ends_cpu: usize,
    /// Pin neither thread: both share every core, as `loadgen` without `--server-cpus`.
    #[arg(long)]
    no_pin: bool,
}

const FRAME: Duration = Duration::from_millis(20);
const WARMUP: Duration = Duration::from_secs(2);

/// Bytes on the wire per message, close to what the real ones weigh (JSON,
/// base64 and the WebSocket header included; see `loadgen`):
#[derive(Clone, Copy)]
struct Sizes {
    /// Twilio `media` of 160 μ-law bytes, with a mark echo beside it.
    tw_up: usize,
    /// `input_audio_buffer.append` of one frame (960 B of PCM16, or 160 B μ-law).
    ai_down: usize,
    /// One AI audio delta.
    ai_up: usize,
    /// Twilio `media` of one delta and its `mark`.
    tw_down: usize,
    /// Twilio frames per AI delta.
    frames_per_delta: u64,
}

impl Sizes {
    fn new(ai_chunk_ms: usize, passthrough: bool) -> Self {
        let frames = (ai_chunk_ms / 20).max(1);
        let b64 = |bytes: usize| bytes.div_ceil(3) * 4;
        let (append_audio, delta_audio) = if passthrough {
            (160, 160 * frames)
        } else {
            (960, 960 * frames)
        };
        Sizes {
            tw_up: 6 + 135 + b64(160) + 110,
            ai_down: 8 + 50 + b64(append_audio),
            ai_up: 8 + 170 + b64(delta_audio),
            tw_down: 4 + 70 + b64(160 * frames) + 100,
            frames_per_delta: frames as u64,
        }
    }
}

/// Reassembles fixed-size messages from a byte stream and yields each one's stamp.
#[derive(Default)]
struct Framer {
    off: usize,
    stamp: [u8; 8],
}

impl Framer {
    fn push(&mut self, mut data: &[u8], size: usize, mut done: impl FnMut(u64)) {
        while !data.is_empty() {
            if self.off < 8 {
                let n = (8 - self.off).min(data.len());
                self.stamp[self.off..self.off + n].copy_from_slice(&data[..n]);
                self.off += n;
                data = &data[n..];
                continue;
            }
            let n = (size - self.off).min(data.len());
            self.off += n;
            data = &data[n..];
            if self.off == size {
                self.off = 0;
                done(u64::from_le_bytes(self.stamp));
            }
        }
    }
}

/// One socket: its reassembly state and what the kernel would not take yet.
struct Conn {
    sock: TcpStream,
    framer: Framer,
    backlog: Vec<u8>,
}

impl Conn {
    /// Writes one message (the relay and the ends write each as it comes, as the bridge does).
    fn send(&mut self, msg: &[u8]) -> std::io::Result<()> {
        if self.backlog.is_empty() {
            match self.sock.write(msg) {
                Ok(n) if n == msg.len() => return Ok(()),
                Ok(n) => self.backlog.extend_from_slice(&msg[n..]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.backlog.extend_from_slice(msg),
                Err(e) => return Err(e),
            }
        } else {
            self.backlog.extend_from_slice(msg);
        }
        Ok(())
    }

    fn drain_backlog(&mut self) -> std::io::Result<()> {
        while !self.backlog.is_empty() {
            match self.sock.write(&self.backlog) {
                Ok(n) => {
                    self.backlog.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads everything available; calls `each` per complete message.
    fn receive(&mut self, scratch: &mut [u8], size: usize, mut each: impl FnMut(u64)) -> std::io::Result<()> {
        loop {
            match self.sock.read(scratch) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.framer.push(&scratch[..n], size, &mut each);
                    if n < scratch.len() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[allow(unsafe_code)] // sched_setaffinity has no safe wrapper in libc
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("floor: cannot pin to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
}

/// This thread's CPU time (user + system).
#[allow(unsafe_code)] // clock_gettime has no safe wrapper in libc
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time spent inside the measured window, sampled whenever the loop passes by.
struct Window {
    start: Instant,
    end: Instant,
    cpu_at_start: Option<Duration>,
    cpu: Option<Duration>,
}

impl Window {
    fn observe(&mut self, now: Instant) {
        if self.cpu_at_start.is_none() && now >= self.start {
            self.cpu_at_start = Some(thread_cpu());
        }
        if self.cpu.is_none() && now >= self.end {
            self.cpu = self.cpu_at_start.map(|s| thread_cpu() - s);
        }
    }
}

fn stamp(origin: Instant, at: Instant) -> u64 {
    at.duration_since(origin).as_nanos() as u64
}

/// One thread's event loop over `conns` (token = index, edge-triggered
/// reads and writes), its event buffer and its read buffer.
fn event_loop(conns: &mut [Conn]) -> std::io::Result<(Poll, Events, Vec<u8>)> {
    let poll = Poll::new()?;
    for (i, c) in conns.iter_mut().enumerate() {
        poll.registry()
            .register(&mut c.sock, Token(i), Interest::READABLE | Interest::WRITABLE)?;
    }
    Ok((poll, Events::with_capacity(1024), vec![0u8; 64 * 1024]))
}

/// The server's place: every message in is answered by one out on the call's other socket.
fn relay(mut conns: Vec<Conn>, sizes: Sizes, mut window: Window, stop: Arc<AtomicBool>) -> std::io::Result<Duration> {
    let (mut poll, mut events, mut scratch) = event_loop(&mut conns)?;
    let mut to_ai = vec![b'a'; sizes.ai_down];
    let mut to_tw = vec![b't'; sizes.tw_down];
    let mut stamps = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        window.observe(Instant::now());
        for ev in events.iter() {
            let i = ev.token().0;
            let (call, is_tw) = (i / 2, i % 2 == 0);
            if ev.is_writable() {
                conns[i].drain_backlog()?;
            }
            if ev.is_readable() {
                let size = if is_tw { sizes.tw_up } else { sizes.ai_up };
                stamps.clear();
                conns[i].receive(&mut scratch, size, |s| stamps.push(s))?;
                let (out, msg) = if is_tw {
                    (call * 2 + 1, &mut to_ai)
                } else {
                    (call * 2, &mut to_tw)
                };
                for s in &stamps {
                    msg[..8].copy_from_slice(&s.to_le_bytes());
                    conns[out].send(msg)?;
                }
            }
        }
    }
    window
        .cpu
        .ok_or_else(|| std::io::Error::other("the relay's window never closed"))
}

struct EndsReport {
    cpu: Duration,
    /// Kept open until the relay has stopped (it takes an end of stream as a failure).
    _conns: Vec<Conn>,
    /// Twilio frame sent → its append read (µs), AI delta sent → its Twilio media read.
    inbound: Vec<u32>,
    outbound: Vec<u32>,
    lag: Vec<u32>,
}

/// The generator's place: sends each call's Twilio frame every 20 ms (phases
/// spread evenly) and its AI delta every `frames_per_delta` frames, and times
/// what comes back.
fn ends(mut conns: Vec<Conn>, sizes: Sizes, origin: Instant, mut window: Window) -> std::io::Result<EndsReport> {
    let n = conns.len() / 2;
    let (mut poll, mut events, mut scratch) = event_loop(&mut conns)?;
    let mut tw = vec![b'T'; sizes.tw_up];
    let mut ai = vec![b'A'; sizes.ai_up];
    let per_second = n * 50;
    let secs = window.end.duration_since(window.start).as_secs() as usize + 1;
    let mut report = EndsReport {
        cpu: Duration::ZERO,
        _conns: Vec::new(),
        inbound: Vec::with_capacity(per_second * secs),
        outbound: Vec::with_capacity(per_second * secs),
        lag: Vec::with_capacity(per_second * secs),
    };
    let slot = FRAME / n as u32;
    let first = origin + Duration::from_millis(50);
    let (mut k, mut i) = (0u64, 0usize);
    let due = |k: u64, i: usize| first + FRAME * k as u32 + slot * i as u32;
    // Let the relay's last answers arrive before the sockets close.
    let finish = window.end + Duration::from_millis(200);
    loop {
        let now = Instant::now();
        window.observe(now);
        if now >= finish {
            break;
        }
        let measuring = now >= window.start && now < window.end;
        while due(k, i) <= now && due(k, i) < window.end {
            let at = Instant::now();
            if measuring {
                report.lag.push(at.duration_since(due(k, i)).as_micros() as u32);
            }
            let s = stamp(origin, at).to_le_bytes();
            tw[..8].copy_from_slice(&s);
            conns[2 * i].send(&tw)?;
            if (k + i as u64).is_multiple_of(sizes.frames_per_delta) {
                ai[..8].copy_from_slice(&s);
                conns[2 * i + 1].send(&ai)?;
            }
            i += 1;
            if i == n {
                (k, i) = (k + 1, 0);
            }
        }
        let next = due(k, i).min(finish);
        poll.poll(&mut events, Some(next.saturating_duration_since(Instant::now())))?;
        let now = Instant::now();
        let measuring = now >= window.start && now < window.end + Duration::from_millis(100);
        let now_ns = stamp(origin, now);
        for ev in events.iter() {
            let c = ev.token().0;
            if ev.is_writable() {
                conns[c].drain_backlog()?;
            }
            if ev.is_readable() {
                // The call's AI socket brings appends (inbound path), its Twilio socket media (outbound).
                let (size, into) = if c % 2 == 1 {
                    (sizes.ai_down, &mut report.inbound)
                } else {
                    (sizes.tw_down, &mut report.outbound)
                };
                conns[c].receive(&mut scratch, size, |s| {
                    if measuring {
                        into.push((now_ns.saturating_sub(s) / 1000) as u32);
                    }
                })?;
            }
        }
    }
    report.cpu = window
        .cpu
        .ok_or_else(|| std::io::Error::other("the ends' window never closed"))?;
    report._conns = conns;
    Ok(report)
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn summary(v: &mut [u32]) -> String {
    v.sort_unstable();
    format!(
        "{:.2} / {:.2} / {:.2} / {:.1}",
        pct(v, 0.5),
        pct(v, 0.99),
        pct(v, 0.999),
        v.last().copied().unwrap_or(0) as f64 / 1000.0
    )
}

fn level(args: &Args, n: usize) -> std::io::Result<String> {
    let sizes = Sizes::new(args.ai_chunk_ms, args.passthrough);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (mut near, mut far) = (Vec::new(), Vec::new());
    // Connected one at a time, so each accepted socket is the one just connected:
    // socket 2i is call i's "Twilio" stream, 2i + 1 its "AI" stream.
    for _ in 0..2 * n {
        let c = StdStream::connect(addr)?;
        let (s, _) = listener.accept()?;
        for sock in [&c, &s] {
            sock.set_nodelay(true)?;
            sock.set_nonblocking(true)?;
        }
        near.push(Conn {
            sock: TcpStream::from_std(c),
            framer: Framer::default(),
            backlog: Vec::new(),
        });
        far.push(Conn {
            sock: TcpStream::from_std(s),
            framer: Framer::default(),
            backlog: Vec::new(),
        });
    }
    let origin = Instant::now();
    let window = || Window {
        start: origin + WARMUP,
        end: origin + WARMUP + Duration::from_secs(args.seconds),
        cpu_at_start: None,
        cpu: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (relay_cpu, ends_cpu) = match args.no_pin {
        true => (None, None),
        false => (Some(args.relay_cpu), Some(args.ends_cpu)),
    };
    let relay = {
        let (stop, w) = (stop.clone(), window());
        std::thread::spawn(move || {
            if let Some(cpu) = relay_cpu {
                pin(cpu);
            }
            relay(far, sizes, w, stop)
        })
    };
    let ends = {
        let w = window();
        std::thread::spawn(move || {
            if let Some(cpu) = ends_cpu {
                pin(cpu);
            }
            ends(near, sizes, origin, w)
        })
    };
    let mut report = ends.join().map_err(|_| std::io::Error::other("the ends panicked"))??;
    stop.store(true, Ordering::Relaxed);
    let relay = relay
        .join()
        .map_err(|_| std::io::Error::other("the relay panicked"))??;
    let secs = args.seconds as f64;
    let (ins, outs) = (report.inbound.len(), report.outbound.len());
    if ins == 0 || outs == 0 || report.lag.is_empty() {
        return Err(std::io::Error::other(format!(
            "nothing measured: {} frames sent, {ins} appends and {outs} media received in the window",
            report.lag.len()
        )));
    }
    let mut lag = std::mem::take(&mut report.lag);
    lag.sort_unstable();
    let lag999 = pct(&lag, 0.999);
    let e2e999 = {
        let mut all = [report.inbound.as_slice(), report.outbound.as_slice()].concat();
        all.sort_unstable();
        pct(&all, 0.999)
    };
    // Messages each side wrote and read in the window, per call and 20 ms.
    let per_call_frame = |cpu: Duration| cpu.as_secs_f64() * 1e6 / (n as f64 * secs * 50.0);
    let fits = e2e999 <= 20.0 && lag999 <= 20.0;
    Ok(format!(
        "| {n} | {:.0} % | {:.0} % | {:.1} | {:.1} | {} | {} | {lag999:.2} | {ins} / {outs} | {} |",
        relay.as_secs_f64() / secs * 100.0,
        report.cpu.as_secs_f64() / secs * 100.0,
        per_call_frame(relay),
        per_call_frame(report.cpu),
        summary(&mut report.inbound),
        summary(&mut report.outbound),
        if fits { "yes" } else { "no" },
    ))
}

fn main() {
    let args = Args::parse();
    let sizes = Sizes::new(args.ai_chunk_ms, args.passthrough);
    println!(
        "{} sizes, AI deltas of {} ms: bytes per message Twilio frame {}, append {}, AI delta {}, Twilio media+mark {}; \
         {}; {} s per level after {} s of warm-up",
        if args.passthrough { "passthrough" } else { "transcode" },
        args.ai_chunk_ms,
        sizes.tw_up,
        sizes.ai_down,
        sizes.ai_up,
        sizes.tw_down,
        match args.no_pin {
            true => "relay and ends not pinned".to_string(),
            false => format!("relay on CPU {}, ends on CPU {}", args.relay_cpu, args.ends_cpu),
        },
        args.seconds,
        WARMUP.as_secs()
    );
    println!();
    println!(
        "| calls | CPU relay | CPU ends | relay µs per call and 20 ms | ends µs per call and 20 ms | \
         in ms p50 / p99 / p99.9 / max | out ms p50 / p99 / p99.9 / max | ends lag p99.9 ms | in / out received | fits |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &n in &args.levels {
        match level(&args, n) {
            Ok(row) => println!("{row}"),
            Err(e) => {
                eprintln!("floor: {n} calls: {e}");
                std::process::exit(1);
            }
        }
    }
}
