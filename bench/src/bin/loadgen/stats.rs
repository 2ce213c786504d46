//! Figures: percentiles of measured samples, and windows of the server's
//! `/metrics` histograms (two snapshots subtracted).

use std::collections::BTreeMap;

/// Percentile `p` (0–100) of sorted samples; NaN when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// One snapshot of the server's metrics.
#[derive(Default, Clone)]
pub struct Snapshot {
    /// Plain samples: `name{labels}` → value.
    pub values: BTreeMap<String, f64>,
    /// Histograms: `name{labels without le}` → (le in seconds, cumulative count), ascending le.
    pub histograms: BTreeMap<String, Vec<(f64, u64)>>,
}

impl Snapshot {
    /// Parses the Prometheus text format (the subset the server writes).
    pub fn parse(text: &str) -> Self {
        let mut snap = Snapshot::default();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else { continue };
            if let Some((name, labels)) = series.split_once("_bucket{") {
                let labels = labels.trim_end_matches('}');
                let mut le = None;
                let mut rest = Vec::new();
                for l in labels.split(',').filter(|l| !l.is_empty()) {
                    match l.strip_prefix("le=") {
                        Some(v) => le = Some(v.trim_matches('"').to_string()),
                        None => rest.push(l),
                    }
                }
                let Some(le) = le else { continue };
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                let key = format!("{name}{{{}}}", rest.join(","));
                snap.histograms.entry(key).or_default().push((le, value as u64));
            } else {
                snap.values.insert(series.to_string(), value);
            }
        }
        for buckets in snap.histograms.values_mut() {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        snap
    }

    /// Adds `other` to this one: values summed, histograms bucket by
    /// bucket (the servers' buckets are one fixed set), so several replicas
    /// read as one server.
    pub fn add(&mut self, other: &Snapshot) {
        for (k, v) in &other.values {
            *self.values.entry(k.clone()).or_default() += v;
        }
        for (k, buckets) in &other.histograms {
            let mine = self.histograms.entry(k.clone()).or_default();
            for (le, c) in buckets {
                match mine.iter_mut().find(|(l, _)| l == le) {
                    Some((_, n)) => *n += c,
                    None => mine.push((*le, *c)),
                }
            }
            mine.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
    }

    /// A plain value (0 when absent).
    pub fn value(&self, series: &str) -> f64 {
        self.values.get(series).copied().unwrap_or(0.0)
    }

    /// Cumulative count at `le` of a histogram: the count at the largest
    /// listed bound ≤ `le` (exact: the server lists every bucket of its fixed
    /// set; a text that left out empty ones would read the same).
    fn cumulative(&self, key: &str, le: f64) -> u64 {
        self.histograms
            .get(key)
            .and_then(|b| b.iter().take_while(|(l, _)| *l <= le).last())
            .map_or(0, |(_, c)| *c)
    }
}

/// The distribution a histogram gained between two snapshots.
pub struct Window {
    /// (upper bound in seconds, count) per non-empty bucket, ascending.
    buckets: Vec<(f64, u64)>,
}

impl Window {
    /// `end − start` of histogram `key`.
    pub fn between(start: &Snapshot, end: &Snapshot, key: &str) -> Self {
        let mut bounds: Vec<f64> = start
            .histograms
            .get(key)
            .into_iter()
            .chain(end.histograms.get(key))
            .flatten()
            .map(|(le, _)| *le)
            .collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let mut buckets = Vec::new();
        let mut before = 0u64;
        for le in bounds {
            let c = end.cumulative(key, le).saturating_sub(start.cumulative(key, le));
            if c > before {
                buckets.push((le, c - before));
            }
            before = before.max(c);
        }
        Self { buckets }
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }

    /// Upper bound (ms) of the bucket holding percentile `p`; NaN when empty.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return f64::NAN;
        }
        let rank = (((p / 100.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (le, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return le * 1000.0;
            }
        }
        f64::NAN
    }

    /// Upper bound (ms) of the highest non-empty bucket (infinite when a
    /// sample was above the server's last finite bound, 5 s).
    pub fn max_ms(&self) -> f64 {
        self.buckets.last().map_or(f64::NAN, |(le, _)| le * 1000.0)
    }

    /// Samples in buckets that reach above `ms` (conservative: a bucket that
    /// straddles `ms` counts whole).
    pub fn above_ms(&self, ms: f64) -> u64 {
        self.buckets
            .iter()
            .filter(|(le, _)| le * 1000.0 > ms)
            .map(|(_, c)| c)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "# TYPE x histogram\n\
        x_bucket{direction=\"in\",le=\"1e-4\"} 2\n\
        x_bucket{direction=\"in\",le=\"+Inf\"} 2\n\
        x_count{direction=\"in\"} 2\n\
        frames{hop=\"a\"} 7\n";
    const B: &str = "x_bucket{direction=\"in\",le=\"1e-4\"} 5\n\
        x_bucket{direction=\"in\",le=\"2e-3\"} 6\n\
        x_bucket{direction=\"in\",le=\"3e-2\"} 8\n\
        x_bucket{direction=\"in\",le=\"+Inf\"} 8\n\
        frames{hop=\"a\"} 9\n";

    #[test]
    fn windows_subtract_snapshots() {
        let (a, b) = (Snapshot::parse(A), Snapshot::parse(B));
        assert_eq!(b.value("frames{hop=\"a\"}") - a.value("frames{hop=\"a\"}"), 2.0);
        let w = Window::between(&a, &b, "x{direction=\"in\"}");
        assert_eq!(w.count(), 6);
        assert!((w.percentile_ms(50.0) - 0.1).abs() < 1e-9);
        assert!((w.percentile_ms(60.0) - 2.0).abs() < 1e-9);
        assert!((w.max_ms() - 30.0).abs() < 1e-9);
        assert_eq!(w.above_ms(20.0), 2);
        assert_eq!(w.above_ms(50.0), 0);
        assert!(
            Window::between(&b, &b, "x{direction=\"in\"}")
                .percentile_ms(50.0)
                .is_nan()
        );
    }

    #[test]
    fn windows_of_the_servers_own_exposition() {
        use std::time::Duration;
        let m = voice_agent_server::metrics::Metrics::default();
        m.inbound_frame.record(Duration::from_micros(500));
        let a = Snapshot::parse(&m.render());
        for us in [30, 30, 90, 25_000] {
            m.inbound_frame.record(Duration::from_micros(us));
        }
        let b = Snapshot::parse(&m.render());
        let key = "voice_agent_bridge_frame_latency_seconds{direction=\"inbound\"}";
        assert_eq!(a.histograms[key].len(), b.histograms[key].len(), "the same buckets");
        let w = Window::between(&a, &b, key);
        assert_eq!(w.count(), 4);
        // Bucket upper bounds: 31.5 µs, 100 µs, 25 ms.
        assert!(
            (w.percentile_ms(50.0) - 0.0315).abs() < 1e-9,
            "{}",
            w.percentile_ms(50.0)
        );
        assert!((w.percentile_ms(75.0) - 0.1).abs() < 1e-9);
        assert!((w.max_ms() - 25.0).abs() < 1e-9);
        assert_eq!(w.above_ms(20.0), 1);
        assert_eq!(b.value("voice_agent_bridge_frames_total{hop=\"to_ai\"}"), 0.0);
    }

    #[test]
    fn percentiles_of_samples() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
