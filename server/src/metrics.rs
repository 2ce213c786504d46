//! Counters and latency histograms of the media path, exported at
//! `GET /metrics` in the Prometheus text format (0.0.4) by prometheus-client.
//!
//! Recording happens on every 20 ms frame of every call, from many tasks at
//! once, so it must cost next to nothing and never lock: each histogram is a
//! fixed array of atomic counters (prometheus-client's own `Histogram` takes
//! a mutex per observation, so it is not used here). A scrape copies the
//! atomics into a [`Scrape`], a prometheus-client [`Collector`], and encodes
//! that with the library's encoder.
//!
//! Every histogram has the same fixed buckets on every scrape and every
//! instance, empty or not ([`BOUNDS_NS`]): 10 µs to 5 s in the R10 series of
//! preferred numbers (10 per decade: 1, 1.25, 1.6, 2, 2.5, 3.15, 4, 5, 6.3, 8),
//! so a bucket is at most 27 % wide and 20 ms (a frame) is a bound. A reader
//! that takes two snapshots can subtract them and get the distribution of just
//! that window (the load generator does).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::call::CallStatus;
use crate::call::lifecycle::EndClass;

/// The `Content-Type` of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Mantissas of the R10 preferred numbers, ×100.
const R10: [u64; 10] = [100, 125, 160, 200, 250, 315, 400, 500, 630, 800];
/// Number of finite bounds: five decades from 10 µs, then 1 s to 5 s.
pub const BOUNDS: usize = 5 * R10.len() + 8;

/// Upper bounds (inclusive, as Prometheus' `le`) of the finite buckets, in
/// nanoseconds, ascending. Values above the last go to the `+Inf` bucket.
pub const BOUNDS_NS: [u64; BOUNDS] = bounds_ns();

const fn bounds_ns() -> [u64; BOUNDS] {
    let mut out = [0u64; BOUNDS];
    // 10 µs = 100 × 10^2 ns.
    let mut scale = 100u64;
    let mut i = 0;
    while i < BOUNDS {
        out[i] = R10[i % R10.len()] * scale;
        i += 1;
        if i % R10.len() == 0 {
            scale *= 10;
        }
    }
    out
}

/// Bucket of a value in nanoseconds: the first whose bound is ≥ it, or
/// [`BOUNDS`] (the `+Inf` bucket).
pub fn bucket_index(ns: u64) -> usize {
    BOUNDS_NS.partition_point(|&bound| bound < ns)
}

/// A lock-free latency histogram over [`BOUNDS_NS`].
pub struct Histogram {
    /// Per-bucket counts (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BOUNDS + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_index(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Number of durations recorded (the buckets' total: no separate counter
    /// to bump on every frame).
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Per-bucket counts (not cumulative, the last is `+Inf`), a
    /// consistent-enough copy for reports.
    pub fn snapshot(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }

    fn scrape(&self) -> HistogramScrape {
        let counts = self.snapshot();
        let buckets = BOUNDS_NS
            .iter()
            .map(|&ns| ns as f64 / 1e9)
            .chain([f64::INFINITY])
            .zip(counts)
            .collect();
        HistogramScrape {
            buckets,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// A counter that only goes up.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one; the returned guard subtracts it again when dropped.
    pub fn track(&self) -> GaugeGuard<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(self)
    }
    /// The value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Sets the value (a gauge read from elsewhere, e.g. the store).
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// Undoes one [`Gauge::track`] on drop.
pub struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Everything the server measures about its media path.
#[derive(Default)]
pub struct Metrics {
    /// Twilio media message handed to the bridge by the WebSocket → its
    /// `input_audio_buffer.append` written to the AI socket.
    pub inbound_frame: Histogram,
    /// AI audio delta handed to the bridge → its Twilio `media` (and mark)
    /// written to the Twilio socket.
    pub outbound_frame: Histogram,
    /// AI `speech_started` handed to the bridge → Twilio `clear` written.
    pub barge_in: Histogram,
    /// Twilio media frames received.
    pub frames_from_twilio: Counter,
    /// Appends written to the AI.
    pub frames_to_ai: Counter,
    /// AI audio deltas received.
    pub frames_from_ai: Counter,
    /// Media messages written to Twilio.
    pub frames_to_twilio: Counter,
    /// Agent audio not sent because a barge-in made it stale: late deltas of
    /// the response the callee cut off (the bridge keeps no queue of its own
    /// for a `clear` to discard).
    pub frames_dropped_barge_in: Counter,
    /// Media Streams messages that could not be read.
    pub media_malformed: Counter,
    /// Media bridges running now (answered calls with audio flowing).
    pub active_bridges: Gauge,
    /// Calls placed since the start.
    pub calls_placed: Counter,
    /// Connections closed at once because `MAX_CONNECTIONS` were open.
    pub connections_refused: Counter,
    /// gRPC requests by method and status code, and their durations.
    pub grpc: GrpcMetrics,
    /// Calls ended, by final status and [`EndClass`].
    pub calls_ended: CallsEnded,
    /// Failed requests to the telephony provider and the realtime AI.
    pub provider_errors: ProviderErrors,
    /// Reconnects to the realtime AI mid-call that worked.
    pub ai_reconnects_ok: Counter,
    /// Reconnects to the realtime AI mid-call that failed.
    pub ai_reconnects_failed: Counter,
    /// Outcome webhook deliveries by this process: delivered, dead-lettered.
    pub webhooks_delivered: Counter,
    /// See [`Metrics::webhooks_delivered`].
    pub webhooks_dead: Counter,
    /// Outcome webhook attempts by this process that succeeded.
    pub webhook_attempts_ok: Counter,
    /// Outcome webhook attempts by this process that failed.
    pub webhook_attempts_failed: Counter,
    /// Pending outcome webhook deliveries in the store (every replica's), as last read.
    pub webhooks_pending: Gauge,
    /// Dead-lettered outcome webhook deliveries in the store, as last read.
    pub webhooks_dead_letters: Gauge,
}

/// The gRPC status codes, by number (their canonical names, as labels).
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The `method` label of a path no service has: unknown paths are many, labels must not be.
pub const UNKNOWN_METHOD: &str = "unknown";

/// The methods the server serves, `package.Service/Method`, sorted, from
/// the services' own descriptors (so a method added to the proto is counted
/// without a list to keep), then [`UNKNOWN_METHOD`].
fn served_methods() -> Vec<String> {
    use prost::Message as _;
    let mut methods = Vec::new();
    for set in [
        voice_agent_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        // The sets are compiled into the binary: one that does not decode is a build defect.
        let set = prost_types::FileDescriptorSet::decode(set).expect("a valid compiled-in descriptor set");
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!("{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
    }
    for reflection in ["grpc.reflection.v1", "grpc.reflection.v1alpha"] {
        methods.push(format!("{reflection}.ServerReflection/ServerReflectionInfo"));
    }
    methods.sort();
    methods.dedup();
    methods.push(UNKNOWN_METHOD.into());
    methods
}

/// gRPC requests per method: counts per status code, and a duration histogram.
pub struct GrpcMetrics {
    methods: Vec<String>,
    codes: Vec<[AtomicU64; GRPC_CODES.len()]>,
    duration: Vec<Histogram>,
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        let methods = served_methods();
        Self {
            codes: methods
                .iter()
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            duration: methods.iter().map(|_| Histogram::default()).collect(),
            methods,
        }
    }
}

impl GrpcMetrics {
    /// The index of the method a request path (`/package.Service/Method`)
    /// names: a served one, or the last ([`UNKNOWN_METHOD`]).
    pub fn method_index(&self, path: &str) -> usize {
        let served = &self.methods[..self.methods.len() - 1];
        let name = path.strip_prefix('/').unwrap_or(path);
        served
            .binary_search_by(|m| m.as_str().cmp(name))
            .unwrap_or(self.methods.len() - 1)
    }

    /// The label of method `index`.
    pub fn method_name(&self, index: usize) -> &str {
        &self.methods[index]
    }

    /// Records one finished request: its method, gRPC status code (an unknown
    /// number counts as UNKNOWN) and duration.
    pub fn record(&self, method: usize, code: u32, took: Duration) {
        let code = usize::try_from(code)
            .ok()
            .filter(|c| *c < GRPC_CODES.len())
            .unwrap_or(2);
        self.codes[method][code].fetch_add(1, Ordering::Relaxed);
        self.duration[method].record(took);
    }

    /// Requests of `method` (a label) answered with `code` (a name).
    pub fn count(&self, method: &str, code: &str) -> u64 {
        let (Some(m), Some(c)) = (
            self.methods.iter().position(|n| n == method),
            GRPC_CODES.iter().position(|n| *n == code),
        ) else {
            return 0;
        };
        self.codes[m][c].load(Ordering::Relaxed)
    }
}

/// The statuses a call ends with, in the order metrics list them.
pub const FINAL_STATUSES: [CallStatus; 5] = [
    CallStatus::Completed,
    CallStatus::Busy,
    CallStatus::NoAnswer,
    CallStatus::Canceled,
    CallStatus::Failed,
];

/// Calls ended, per final status × [`EndClass`].
pub struct CallsEnded([[Counter; EndClass::ALL.len()]; FINAL_STATUSES.len()]);

impl Default for CallsEnded {
    fn default() -> Self {
        Self(std::array::from_fn(|_| std::array::from_fn(|_| Counter::default())))
    }
}

impl CallsEnded {
    /// Counts a call that ended with `status` (a non-final one is not counted) and `reason`.
    pub fn record(&self, status: CallStatus, reason: &str) {
        let Some(s) = FINAL_STATUSES.iter().position(|f| *f == status) else {
            return;
        };
        let class = EndClass::of(status, reason);
        let c = EndClass::ALL
            .iter()
            .position(|k| *k == class)
            .unwrap_or(EndClass::ALL.len() - 1);
        self.0[s][c].inc();
    }

    /// Calls that ended with `status` in `class`.
    pub fn get(&self, status: CallStatus, class: EndClass) -> u64 {
        match (
            FINAL_STATUSES.iter().position(|f| *f == status),
            EndClass::ALL.iter().position(|k| *k == class),
        ) {
            (Some(s), Some(c)) => self.0[s][c].get(),
            _ => 0,
        }
    }
}

/// A kind of provider failure: who failed, and how (a fixed set of label values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderError {
    /// Twilio's REST API answered an error for a request we got wrong (4xx such as 21211).
    TwilioInvalidArgument,
    /// Twilio refused for a reason an operator fixes (authentication, permissions, account).
    TwilioRefused,
    /// Twilio could not be reached, timed out or answered 5xx.
    TwilioUnavailable,
    /// Any other Twilio failure (an answer we could not read).
    TwilioOther,
    /// The realtime AI could not be reached (TCP, TLS, WebSocket handshake, timeout).
    AiConnect,
    /// The realtime AI refused our credentials (401/403), or no token could be had.
    AiAuth,
    /// The realtime AI refused the session for another reason (an HTTP error status).
    AiRefused,
    /// The realtime AI's socket closed or failed mid-call.
    AiDrop,
    /// The realtime AI stopped taking data mid-call.
    AiStall,
    /// The realtime AI reported a fatal error.
    AiFatal,
}

impl ProviderError {
    /// Every kind, in the order metrics list them.
    pub const ALL: [ProviderError; 10] = [
        Self::TwilioInvalidArgument,
        Self::TwilioRefused,
        Self::TwilioUnavailable,
        Self::TwilioOther,
        Self::AiConnect,
        Self::AiAuth,
        Self::AiRefused,
        Self::AiDrop,
        Self::AiStall,
        Self::AiFatal,
    ];

    /// (`provider`, `kind`) labels.
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            Self::TwilioInvalidArgument => ("twilio", "invalid_argument"),
            Self::TwilioRefused => ("twilio", "refused"),
            Self::TwilioUnavailable => ("twilio", "unavailable"),
            Self::TwilioOther => ("twilio", "other"),
            Self::AiConnect => ("ai", "connect"),
            Self::AiAuth => ("ai", "auth"),
            Self::AiRefused => ("ai", "refused"),
            Self::AiDrop => ("ai", "drop"),
            Self::AiStall => ("ai", "stall"),
            Self::AiFatal => ("ai", "fatal"),
        }
    }
}

/// Provider failures per [`ProviderError`].
#[derive(Default)]
pub struct ProviderErrors([Counter; ProviderError::ALL.len()]);

impl ProviderErrors {
    fn index(kind: ProviderError) -> usize {
        ProviderError::ALL.iter().position(|k| *k == kind).unwrap_or(0)
    }
    /// Counts one failure.
    pub fn inc(&self, kind: ProviderError) {
        self.0[Self::index(kind)].inc();
    }
    /// Failures of `kind` so far.
    pub fn get(&self, kind: ProviderError) -> u64 {
        self.0[Self::index(kind)].get()
    }
}

impl Metrics {
    /// The Prometheus text exposition (format 0.0.4, [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        // The registry lives for one scrape: what it encodes is a copy of the
        // atomics, so the recording side never shares anything with it.
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.scrape()));
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail, and the collector returns no
        // error of its own.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }

    /// A copy of every value, for one scrape.
    pub fn scrape(&self) -> Scrape {
        Scrape {
            inbound_frame: self.inbound_frame.scrape(),
            outbound_frame: self.outbound_frame.scrape(),
            barge_in: self.barge_in.scrape(),
            frames: [
                ("from_twilio", self.frames_from_twilio.get()),
                ("to_ai", self.frames_to_ai.get()),
                ("from_ai", self.frames_from_ai.get()),
                ("to_twilio", self.frames_to_twilio.get()),
                ("dropped_barge_in", self.frames_dropped_barge_in.get()),
            ],
            media_malformed: self.media_malformed.get(),
            calls_placed: self.calls_placed.get(),
            connections_refused: self.connections_refused.get(),
            active_bridges: self.active_bridges.get(),
            grpc: (0..self.grpc.methods.len())
                .filter_map(|m| {
                    let codes: Vec<(&'static str, u64)> = GRPC_CODES
                        .iter()
                        .zip(&self.grpc.codes[m])
                        .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
                        .filter(|(_, n)| *n > 0)
                        .collect();
                    // A method appears once it has been called: the label
                    // set stays bounded, and the page short.
                    (!codes.is_empty()).then(|| (self.grpc.methods[m].clone(), codes, self.grpc.duration[m].scrape()))
                })
                .collect(),
            calls_ended: FINAL_STATUSES
                .iter()
                .zip(&self.calls_ended.0)
                .flat_map(|(status, row)| {
                    EndClass::ALL
                        .iter()
                        .zip(row)
                        .map(move |(class, n)| (status.name(), class.as_str(), n.get()))
                })
                .collect(),
            provider_errors: std::array::from_fn(|i| {
                let (provider, kind) = ProviderError::ALL[i].labels();
                (provider, kind, self.provider_errors.0[i].get())
            }),
            ai_reconnects: [
                ("ok", self.ai_reconnects_ok.get()),
                ("failed", self.ai_reconnects_failed.get()),
            ],
            webhook_deliveries: [
                ("delivered", self.webhooks_delivered.get()),
                ("dead", self.webhooks_dead.get()),
            ],
            webhook_attempts: [
                ("ok", self.webhook_attempts_ok.get()),
                ("failed", self.webhook_attempts_failed.get()),
            ],
            webhook_store: [self.webhooks_pending.get(), self.webhooks_dead_letters.get()],
            process: process::read(),
        }
    }
}

/// The `voice_agent_build_info` labels: the crate version, and the git
/// commit when the build was given one (`VOICE_AGENT_GIT_SHA` at compile time).
pub const BUILD_INFO: [(&str, &str); 2] = [
    ("version", env!("CARGO_PKG_VERSION")),
    (
        "git_sha",
        match option_env!("VOICE_AGENT_GIT_SHA") {
            Some(sha) => sha,
            None => "unknown",
        },
    ),
];

/// The standard `process_*` series, read from `/proc/self` (Linux; elsewhere
/// they are absent).
mod process {
    /// Clock ticks per second of `/proc/*/stat` times: `USER_HZ`, which the
    /// Linux ABI fixes at 100 for user space on every architecture it supports.
    const USER_HZ: f64 = 100.0;

    /// What one scrape read.
    #[derive(Debug, Default)]
    pub struct ProcessScrape {
        pub cpu_seconds: f64,
        pub resident_bytes: i64,
        pub virtual_bytes: i64,
        pub open_fds: i64,
        pub max_fds: i64,
        pub start_time_seconds: f64,
    }

    /// Reads `/proc/self`; `None` where there is no such file system.
    pub fn read() -> Option<ProcessScrape> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) is in parentheses and may hold spaces:
        // fields are counted after its closing parenthesis, from field 3.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        let utime = field(14)?;
        let stime = field(15)?;
        let start_ticks = field(22)?;
        let vsize = field(23)?;
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            .unwrap_or(0);
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3)?.parse::<i64>().ok())
            })
            .unwrap_or(0);
        Some(ProcessScrape {
            cpu_seconds: (utime + stime) as f64 / USER_HZ,
            resident_bytes: rss_kib * 1024,
            virtual_bytes: i64::try_from(vsize).unwrap_or(i64::MAX),
            open_fds: i64::try_from(open_fds).unwrap_or(i64::MAX),
            max_fds,
            start_time_seconds: boot_time as f64 + start_ticks as f64 / USER_HZ,
        })
    }
}

#[derive(Debug)]
struct HistogramScrape {
    /// (upper bound in seconds, count in that bucket alone), `+Inf` last.
    buckets: Vec<(f64, u64)>,
    sum_seconds: f64,
}

impl HistogramScrape {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        // The total of the buckets as read, so `+Inf` and `_count` always match them.
        let count = self.buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum_seconds, count, &self.buckets, None)
    }
}

/// One gRPC method in a scrape: its label, its non-zero (code, count), its durations.
type MethodScrape = (String, Vec<(&'static str, u64)>, HistogramScrape);

/// The values of one scrape: a prometheus-client [`Collector`] that always
/// describes the same series, whatever was recorded.
#[derive(Debug)]
pub struct Scrape {
    inbound_frame: HistogramScrape,
    outbound_frame: HistogramScrape,
    barge_in: HistogramScrape,
    frames: [(&'static str, u64); 5],
    media_malformed: u64,
    calls_placed: u64,
    connections_refused: u64,
    active_bridges: i64,
    /// Per method called so far: its non-zero codes, and its durations.
    grpc: Vec<MethodScrape>,
    /// (status, class, count), every combination.
    calls_ended: Vec<(&'static str, &'static str, u64)>,
    /// (provider, kind, count).
    provider_errors: [(&'static str, &'static str, u64); ProviderError::ALL.len()],
    /// (result, count).
    ai_reconnects: [(&'static str, u64); 2],
    /// (outcome, count) of deliveries; (result, count) of attempts; pending and dead in the store.
    webhook_deliveries: [(&'static str, u64); 2],
    webhook_attempts: [(&'static str, u64); 2],
    webhook_store: [i64; 2],
    process: Option<process::ProcessScrape>,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "voice_agent_bridge_frame_latency_seconds",
            "Time from a media frame reaching the bridge to its conversion being written to the other socket.",
            None,
            MetricType::Histogram,
        )?;
        for (direction, h) in [("inbound", &self.inbound_frame), ("outbound", &self.outbound_frame)] {
            h.encode(family.encode_family(&[("direction", direction)])?)?;
        }
        self.barge_in.encode(encoder.encode_descriptor(
            "voice_agent_barge_in_reaction_seconds",
            "Time from the AI's speech_started reaching the bridge to Twilio's clear being written.",
            None,
            MetricType::Histogram,
        )?)?;
        // Counters are named without `_total`: the encoder appends it.
        let mut family = encoder.encode_descriptor(
            "voice_agent_bridge_frames",
            "Audio frames through the bridge, by hop.",
            None,
            MetricType::Counter,
        )?;
        for (hop, n) in self.frames {
            ConstCounter::new(n).encode(family.encode_family(&[("hop", hop)])?)?;
        }
        for (name, help, n) in [
            (
                "voice_agent_media_malformed",
                "Media Streams messages that could not be read.",
                self.media_malformed,
            ),
            ("voice_agent_calls_placed", "Calls placed.", self.calls_placed),
            (
                "voice_agent_connections_refused",
                "Connections closed at once because MAX_CONNECTIONS were open.",
                self.connections_refused,
            ),
        ] {
            ConstCounter::new(n).encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }
        ConstGauge::new(self.active_bridges).encode(encoder.encode_descriptor(
            "voice_agent_active_media_bridges",
            "Media bridges running now.",
            None,
            MetricType::Gauge,
        )?)?;
        self.encode_beyond_media(&mut encoder)
    }
}

impl Scrape {
    /// The series of issue #14: RPCs, call outcomes, provider failures, build and process.
    fn encode_beyond_media(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "voice_agent_grpc_requests",
            "gRPC requests (grpc-web included) by method and status code; a method appears once called.",
            None,
            MetricType::Counter,
        )?;
        for (method, codes, _) in &self.grpc {
            for (code, n) in codes {
                ConstCounter::new(*n).encode(family.encode_family(&[("method", method.as_str()), ("code", *code)])?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "voice_agent_grpc_request_duration_seconds",
            "From a gRPC request's headers to the end of its response (a stream's whole life for WatchCall).",
            None,
            MetricType::Histogram,
        )?;
        for (method, _, h) in &self.grpc {
            h.encode(family.encode_family(&[("method", method.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "voice_agent_calls_ended",
            "Calls ended, by final status and end-reason class.",
            None,
            MetricType::Counter,
        )?;
        for (status, class, n) in &self.calls_ended {
            ConstCounter::new(*n).encode(family.encode_family(&[("status", *status), ("class", *class)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "voice_agent_provider_errors",
            "Failed requests to the telephony provider and the realtime AI, by kind.",
            None,
            MetricType::Counter,
        )?;
        for (provider, kind, n) in &self.provider_errors {
            ConstCounter::new(*n).encode(family.encode_family(&[("provider", *provider), ("kind", *kind)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "voice_agent_ai_reconnects",
            "Reconnects to the realtime AI mid-call, by result.",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in &self.ai_reconnects {
            ConstCounter::new(*n).encode(family.encode_family(&[("result", *result)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "voice_agent_webhook_deliveries",
            "Outcome webhook messages this process finished, by outcome (delivered, dead: given up on).",
            None,
            MetricType::Counter,
        )?;
        for (outcome, n) in &self.webhook_deliveries {
            ConstCounter::new(*n).encode(family.encode_family(&[("outcome", *outcome)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "voice_agent_webhook_attempts",
            "Outcome webhook POSTs this process made, by result (ok: a 2xx answer).",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in &self.webhook_attempts {
            ConstCounter::new(*n).encode(family.encode_family(&[("result", *result)])?)?;
        }
        for (name, help, v) in [
            (
                "voice_agent_webhook_pending",
                "Outcome webhook deliveries waiting in the store's outbox (every replica's), as last read.",
                self.webhook_store[0],
            ),
            (
                "voice_agent_webhook_dead_letters",
                "Outcome webhook deliveries given up on, kept in the store (every replica's), as last read.",
                self.webhook_store[1],
            ),
        ] {
            ConstGauge::new(v).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        ConstGauge::new(1i64).encode(
            encoder
                .encode_descriptor(
                    "voice_agent_build_info",
                    "The build: version and git commit (always 1).",
                    None,
                    MetricType::Gauge,
                )?
                .encode_family(&BUILD_INFO)?,
        )?;
        if let Some(p) = &self.process {
            ConstCounter::new(p.cpu_seconds).encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, seconds.",
                None,
                MetricType::Counter,
            )?)?;
            for (name, help, v) in [
                (
                    "process_resident_memory_bytes",
                    "Resident memory size, bytes.",
                    p.resident_bytes,
                ),
                (
                    "process_virtual_memory_bytes",
                    "Virtual memory size, bytes.",
                    p.virtual_bytes,
                ),
                ("process_open_fds", "Open file descriptors.", p.open_fds),
                ("process_max_fds", "Most open file descriptors allowed.", p.max_fds),
            ] {
                ConstGauge::new(v).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
            }
            ConstGauge::new(p.start_time_seconds).encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, seconds.",
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Series names with their labels (the part before the value), in order.
    fn series(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s))
            .collect()
    }

    #[test]
    fn bounds_are_r10_from_10_us_to_5_s() {
        assert_eq!(BOUNDS_NS[0], 10_000);
        assert_eq!(BOUNDS_NS[1], 12_500);
        assert_eq!(BOUNDS_NS[BOUNDS - 1], 5_000_000_000);
        assert!(BOUNDS_NS.contains(&20_000_000), "20 ms, a frame, is a bound");
        for w in BOUNDS_NS.windows(2) {
            let ratio = w[1] as f64 / w[0] as f64;
            assert!((1.2..=1.28).contains(&ratio), "{w:?}");
        }
    }

    #[test]
    fn values_land_in_the_first_bucket_whose_bound_holds_them() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(10_000), 0, "le is inclusive");
        assert_eq!(bucket_index(10_001), 1);
        assert_eq!(
            bucket_index(20_000_000),
            BOUNDS_NS.iter().position(|&b| b == 20_000_000).unwrap()
        );
        assert_eq!(bucket_index(5_000_000_000), BOUNDS - 1);
        assert_eq!(bucket_index(5_000_000_001), BOUNDS);
        assert_eq!(bucket_index(u64::MAX), BOUNDS);
    }

    #[test]
    fn export_is_cumulative_and_subtractable() {
        let m = Metrics::default();
        m.inbound_frame.record(Duration::from_micros(100));
        m.inbound_frame.record(Duration::from_micros(100));
        m.inbound_frame.record(Duration::from_millis(30));
        m.inbound_frame.record(Duration::from_secs(9));
        m.frames_to_ai.add(3);
        let _live = m.active_bridges.track();
        let text = m.render();
        let inbound: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("voice_agent_bridge_frame_latency_seconds_bucket{direction=\"inbound\""))
            .collect();
        assert_eq!(inbound.len(), BOUNDS + 1, "every bucket and +Inf: {inbound:?}");
        let count_at = |le: &str| {
            inbound
                .iter()
                .find(|l| l.contains(&format!("le=\"{le}\"}}")))
                .and_then(|l| l.rsplit_once(' '))
                .map(|(_, v)| v.to_string())
                .unwrap_or_else(|| panic!("le={le} in {inbound:?}"))
        };
        assert_eq!(count_at("1e-05"), "0");
        assert_eq!(count_at("0.0001"), "2");
        assert_eq!(count_at("0.025"), "2");
        assert_eq!(count_at("0.0315"), "3");
        assert_eq!(count_at("5"), "3");
        assert_eq!(count_at("+Inf"), "4");
        assert!(text.contains("voice_agent_bridge_frame_latency_seconds_count{direction=\"inbound\"} 4"));
        assert!(text.contains("voice_agent_bridge_frame_latency_seconds_sum{direction=\"inbound\"} 9.0302"));
        assert!(text.contains("voice_agent_bridge_frames_total{hop=\"to_ai\"} 3"));
        assert!(text.contains("voice_agent_active_media_bridges 1"));
        assert!(text.contains("voice_agent_barge_in_reaction_seconds_bucket{le=\"+Inf\"} 0"));
        drop(_live);
        assert_eq!(m.active_bridges.get(), 0);
    }

    #[test]
    fn every_scrape_has_the_same_series() {
        let m = Metrics::default();
        let before = m.render();
        m.inbound_frame.record(Duration::from_micros(37));
        m.outbound_frame.record(Duration::from_millis(3));
        m.barge_in.record(Duration::from_secs(60));
        m.frames_dropped_barge_in.add(2);
        m.media_malformed.inc();
        m.calls_placed.inc();
        let _live = m.active_bridges.track();
        let after = m.render();
        assert_ne!(before, after);
        assert_eq!(series(&before), series(&after));
        // The media path; then calls ended (status × class), provider errors,
        // reconnects, webhooks (2 outcomes, 2 results, 2 gauges), build
        // info and six process series. gRPC methods appear once called.
        assert_eq!(
            series(&before).len(),
            3 * (BOUNDS + 1 + 2) + 5 + 4 + 5 * EndClass::ALL.len() + ProviderError::ALL.len() + 2 + 6 + 1 + 6
        );
    }

    #[test]
    fn help_and_type_lines_describe_every_family() {
        let text = Metrics::default().render();
        for (name, kind) in [
            ("voice_agent_bridge_frame_latency_seconds", "histogram"),
            ("voice_agent_barge_in_reaction_seconds", "histogram"),
            ("voice_agent_bridge_frames_total", "counter"),
            ("voice_agent_media_malformed_total", "counter"),
            ("voice_agent_calls_placed_total", "counter"),
            ("voice_agent_connections_refused_total", "counter"),
            ("voice_agent_active_media_bridges", "gauge"),
            ("voice_agent_grpc_requests_total", "counter"),
            ("voice_agent_grpc_request_duration_seconds", "histogram"),
            ("voice_agent_calls_ended_total", "counter"),
            ("voice_agent_provider_errors_total", "counter"),
            ("voice_agent_ai_reconnects_total", "counter"),
            ("voice_agent_webhook_deliveries_total", "counter"),
            ("voice_agent_webhook_attempts_total", "counter"),
            ("voice_agent_webhook_pending", "gauge"),
            ("voice_agent_webhook_dead_letters", "gauge"),
            ("voice_agent_build_info", "gauge"),
            ("process_cpu_seconds_total", "counter"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_open_fds", "gauge"),
            ("process_start_time_seconds", "gauge"),
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name}");
        }
        assert!(!text.contains("_total_total"));
    }

    #[test]
    fn grpc_requests_are_counted_by_served_method_and_code() {
        let m = Metrics::default();
        let place = m.grpc.method_index("/voiceagent.v1.VoiceAgentService/PlaceCall");
        assert_eq!(m.grpc.method_name(place), "voiceagent.v1.VoiceAgentService/PlaceCall");
        let health = m.grpc.method_index("/grpc.health.v1.Health/Check");
        assert_eq!(m.grpc.method_name(health), "grpc.health.v1.Health/Check");
        // Paths nobody serves share one label, whatever they are.
        for path in [
            "/voiceagent.v1.VoiceAgentService/Nope",
            "/x",
            "",
            "/grpc.health.v1.Health/Check/more",
        ] {
            assert_eq!(m.grpc.method_name(m.grpc.method_index(path)), UNKNOWN_METHOD, "{path}");
        }
        m.grpc.record(place, 0, Duration::from_millis(3));
        m.grpc.record(place, 3, Duration::from_millis(1));
        m.grpc.record(place, 99, Duration::from_millis(1));
        assert_eq!(m.grpc.count("voiceagent.v1.VoiceAgentService/PlaceCall", "OK"), 1);
        assert_eq!(m.grpc.count("voiceagent.v1.VoiceAgentService/PlaceCall", "UNKNOWN"), 1);
        let text = m.render();
        let method = "method=\"voiceagent.v1.VoiceAgentService/PlaceCall\"";
        assert!(
            text.contains(&format!(
                "voice_agent_grpc_requests_total{{{method},code=\"INVALID_ARGUMENT\"}} 1"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "voice_agent_grpc_request_duration_seconds_count{{{method}}} 3"
            )),
            "{text}"
        );
        assert!(
            !text.contains("grpc.health.v1.Health/Check"),
            "only methods called appear"
        );
    }

    #[test]
    fn ended_calls_are_counted_by_status_and_class() {
        let m = Metrics::default();
        m.calls_ended.record(CallStatus::Busy, "the line was busy");
        m.calls_ended
            .record(CallStatus::Completed, crate::call::lifecycle::HANG_UP_REASON);
        m.calls_ended.record(CallStatus::Ringing, "not final: not counted");
        assert_eq!(m.calls_ended.get(CallStatus::Busy, EndClass::Busy), 1);
        assert_eq!(m.calls_ended.get(CallStatus::Completed, EndClass::HangUpApi), 1);
        let text = m.render();
        assert!(text.contains("voice_agent_calls_ended_total{status=\"BUSY\",class=\"busy\"} 1"));
        assert!(text.contains("voice_agent_calls_ended_total{status=\"FAILED\",class=\"ai_failure\"} 0"));
        let total: u64 = FINAL_STATUSES
            .iter()
            .flat_map(|s| {
                EndClass::ALL
                    .iter()
                    .map(|c| m.calls_ended.get(*s, *c))
                    .collect::<Vec<_>>()
            })
            .sum();
        assert_eq!(total, 2);
    }

    #[test]
    fn build_and_process_series_are_there() {
        let text = Metrics::default().render();
        assert!(text.contains(&format!(
            "voice_agent_build_info{{version=\"{}\",git_sha=\"",
            env!("CARGO_PKG_VERSION")
        )));
        let rss = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("resident memory");
        assert!(rss > 1e6, "{rss}");
    }
}
