//! Counters and latency histograms of the media path, exported at
//! `GET /metrics` in the Prometheus text format.
//!
//! Recording happens on every 20 ms frame of every call, from many tasks at
//! once, so it must cost next to nothing and never lock: each histogram is a
//! fixed array of atomic counters over log-linear buckets (16 per power of
//! two, so a bucket is at most 6.25 % wide), in the manner of HdrHistogram
//! with 4 significant bits. The export lists the cumulative count at the upper
//! bound of every non-empty bucket, which is exact (the buckets in between are
//! empty), so a reader that takes two snapshots can subtract them and get the
//! distribution of just that window (the load generator does).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Linear sub-buckets per power of two (4 bits).
const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// Values up to 2^37 ns (about 137 s) get their own bucket; longer ones share the last.
const MAX_EXPONENT: u32 = 36;
/// Number of buckets.
pub const BUCKETS: usize = (MAX_EXPONENT as usize - SUB_BITS as usize + 2) * SUB;

/// Bucket of a value in nanoseconds.
pub fn bucket_index(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let exponent = 63 - ns.leading_zeros();
    if exponent > MAX_EXPONENT {
        return BUCKETS - 1;
    }
    let sub = ((ns >> (exponent - SUB_BITS)) as usize) & (SUB - 1);
    (exponent - SUB_BITS + 1) as usize * SUB + sub
}

/// Exclusive upper bound of a bucket, in nanoseconds.
pub fn bucket_upper_ns(index: usize) -> u64 {
    if index < SUB {
        return index as u64 + 1;
    }
    let exponent = (index / SUB) as u32 + SUB_BITS - 1;
    let sub = (index % SUB) as u64;
    (SUB as u64 + sub + 1) << (exponent - SUB_BITS)
}

/// A lock-free latency histogram.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
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

    /// Per-bucket counts (not cumulative), a consistent-enough copy for reports.
    pub fn snapshot(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }

    /// Upper bound of the bucket holding the `q` quantile (0..=1), or None when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        quantile_of(&self.snapshot(), q).map(Duration::from_nanos)
    }

    fn write_prometheus(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            cumulative += n;
            let le = bucket_upper_ns(i) as f64 / 1e9;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le:e}\"}} {cumulative}");
        }
        // The total of the buckets as read, so +Inf always matches them.
        let count = cumulative;
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum:e}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Upper bound (ns) of the bucket holding quantile `q` of per-bucket `counts`.
pub fn quantile_of(counts: &[u64], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bucket_upper_ns(i));
        }
    }
    None
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
}

impl Metrics {
    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let histograms = [
            (
                "voice_agent_bridge_frame_latency_seconds",
                "Time from a media frame reaching the bridge to its conversion being written to the other socket.",
                vec![
                    ("direction=\"inbound\"", &self.inbound_frame),
                    ("direction=\"outbound\"", &self.outbound_frame),
                ],
            ),
            (
                "voice_agent_barge_in_reaction_seconds",
                "Time from the AI's speech_started reaching the bridge to Twilio's clear being written.",
                vec![("", &self.barge_in)],
            ),
        ];
        for (name, help, series) in histograms {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (labels, h) in series {
                h.write_prometheus(&mut out, name, labels);
            }
        }
        let frames = "voice_agent_bridge_frames_total";
        let _ = writeln!(
            out,
            "# HELP {frames} Audio frames through the bridge, by hop.\n# TYPE {frames} counter"
        );
        for (hop, c) in [
            ("from_twilio", &self.frames_from_twilio),
            ("to_ai", &self.frames_to_ai),
            ("from_ai", &self.frames_from_ai),
            ("to_twilio", &self.frames_to_twilio),
            ("dropped_barge_in", &self.frames_dropped_barge_in),
        ] {
            let _ = writeln!(out, "{frames}{{hop=\"{hop}\"}} {}", c.get());
        }
        for (name, kind, help, value) in [
            (
                "voice_agent_media_malformed_total",
                "counter",
                "Media Streams messages that could not be read.",
                self.media_malformed.get() as i64,
            ),
            (
                "voice_agent_calls_placed_total",
                "counter",
                "Calls placed.",
                self.calls_placed.get() as i64,
            ),
            (
                "voice_agent_active_media_bridges",
                "gauge",
                "Media bridges running now.",
                self.active_bridges.get(),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_narrow() {
        // Every value lands in a bucket whose bounds hold it, and consecutive
        // buckets touch: no gaps, no overlaps.
        let mut lower = 0u64;
        for i in 0..BUCKETS - 1 {
            let upper = bucket_upper_ns(i);
            assert!(upper > lower, "bucket {i}");
            assert_eq!(bucket_index(lower), i, "lower bound of bucket {i}");
            assert_eq!(bucket_index(upper - 1), i, "last value of bucket {i}");
            if lower >= 16 {
                assert!(
                    (upper - lower) as f64 / lower as f64 <= 0.0625 + 1e-12,
                    "bucket {i} too wide"
                );
            }
            lower = upper;
        }
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_upper_ns(BUCKETS - 1), 1 << 37);
    }

    #[test]
    fn quantiles_come_within_a_bucket_of_the_truth() {
        let h = Histogram::default();
        // 1..=10000 µs: the true p50 is 5000 µs, p99 9900 µs.
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 10_000);
        for (q, truth) in [(0.5, 5_000_000f64), (0.99, 9_900_000f64), (1.0, 10_000_000f64)] {
            let got = h.quantile(q).unwrap().as_nanos() as f64;
            assert!(got >= truth && got <= truth * 1.0625 + 1.0, "q{q}: {got} vs {truth}");
        }
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn export_is_cumulative_and_subtractable() {
        let m = Metrics::default();
        m.inbound_frame.record(Duration::from_micros(100));
        m.inbound_frame.record(Duration::from_micros(100));
        m.inbound_frame.record(Duration::from_millis(30));
        m.frames_to_ai.add(3);
        let _live = m.active_bridges.track();
        let text = m.render();
        let inbound: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("voice_agent_bridge_frame_latency_seconds_bucket{direction=\"inbound\""))
            .collect();
        assert_eq!(inbound.len(), 3, "two non-empty buckets and +Inf: {inbound:?}");
        assert!(inbound[0].ends_with(" 2"), "{}", inbound[0]);
        assert!(inbound[1].ends_with(" 3"), "{}", inbound[1]);
        assert!(inbound[2].contains("le=\"+Inf\"") && inbound[2].ends_with(" 3"));
        assert!(text.contains("voice_agent_bridge_frame_latency_seconds_count{direction=\"inbound\"} 3"));
        assert!(text.contains("voice_agent_bridge_frames_total{hop=\"to_ai\"} 3"));
        assert!(text.contains("voice_agent_active_media_bridges 1"));
        assert!(text.contains("voice_agent_barge_in_reaction_seconds_bucket{le=\"+Inf\"} 0"));
        drop(_live);
        assert_eq!(m.active_bridges.get(), 0);
    }
}
