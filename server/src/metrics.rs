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
        }
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
        )?)
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
        assert_eq!(series(&before).len(), 3 * (BOUNDS + 1 + 2) + 5 + 4);
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
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name}");
        }
        assert!(!text.contains("_total_total"));
    }
}
