//! Stateful polyphase resamplers by 3 between 8 kHz and 24 kHz, in fixed
//! point (i16 samples × i16 taps summed in i32, which compilers vectorise
//! well and which makes every result bit-exact on any platform).
//!
//! Each keeps the last input samples its filter reaches back to (and the
//! downsampler its decimation phase), so a stream cut into frames of any size
//! comes out bit-identical to the whole stream. Work happens in blocks on the
//! stack: `process` allocates nothing beyond growing the caller's `out`.

use super::filter::{DELAY_24K, DOWN_SHIFT, DOWN_TAPS, UP_SHIFT, UP_TAPS};

/// Input samples handled per block (one 20 ms frame at 24 kHz).
const BLOCK: usize = 480;

/// Upsampler window: 30 taps per branch, padded to 32 for the vector unit.
const UP_WINDOW: usize = 32;
/// Input samples the upsampler carries between calls.
const UP_HISTORY: usize = UP_WINDOW - 1;
/// Where, in an upsampler window (oldest first), branch 0's delta falls:
/// 15 samples at 8 kHz before the newest.
const UP_CENTRE: usize = UP_WINDOW - 1 - DELAY_24K / 3;

/// Downsampler window: 91 taps padded to 96.
const DOWN_WINDOW: usize = 96;
/// Input samples the downsampler carries between calls.
const DOWN_HISTORY: usize = DOWN_WINDOW - 1;

/// Branch 1 taps in window order (oldest first): `UP_TAPS` reversed.
const UP_BRANCH1: [i16; UP_WINDOW] = {
    let mut w = [0i16; UP_WINDOW];
    let mut i = 0;
    while i < UP_TAPS.len() {
        w[UP_WINDOW - 1 - i] = UP_TAPS[i];
        i += 1;
    }
    w
};

/// Branch 2 taps in window order: `UP_TAPS` as is (branch 2 is branch 1
/// mirrored, and the window is oldest first).
const UP_BRANCH2: [i16; UP_WINDOW] = {
    let mut w = [0i16; UP_WINDOW];
    let mut i = 0;
    while i < UP_TAPS.len() {
        w[UP_WINDOW - UP_TAPS.len() + i] = UP_TAPS[i];
        i += 1;
    }
    w
};

/// The downsampler taps, zero-padded at the old end.
const DOWN_PADDED: [i16; DOWN_WINDOW] = {
    let mut w = [0i16; DOWN_WINDOW];
    let mut i = 0;
    while i < DOWN_TAPS.len() {
        w[DOWN_WINDOW - DOWN_TAPS.len() + i] = DOWN_TAPS[i];
        i += 1;
    }
    w
};

/// Σ taps · window in i32. The tap tables keep every partial sum inside i32
/// (filter tests: `accumulators_cannot_overflow`).
#[inline(always)]
fn dot<const N: usize>(taps: &[i16; N], window: &[i16]) -> i32 {
    let window = &window[..N];
    taps.iter()
        .zip(window)
        .map(|(&c, &x)| i32::from(c) * i32::from(x))
        .sum()
}

/// Back from Q`shift` to i16: round half up, saturate.
#[inline(always)]
fn narrow(acc: i32, shift: u32) -> i16 {
    let rounded = (acc + (1 << (shift - 1))) >> shift;
    rounded.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

/// 8 kHz → 24 kHz by 3 (stateful, 1.875 ms delay).
#[derive(Clone, Debug)]
pub struct Upsampler3 {
    /// The last `UP_HISTORY` input samples, oldest first.
    history: [i16; UP_HISTORY],
}

impl Default for Upsampler3 {
    fn default() -> Self {
        Self::new()
    }
}

impl Upsampler3 {
    /// A resampler whose past is silence.
    pub fn new() -> Self {
        Self {
            history: [0; UP_HISTORY],
        }
    }

    /// Appends exactly `3 · input.len()` samples to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        let start = out.len();
        out.resize(start + 3 * input.len(), 0);
        self.process_into(input, &mut out[start..]);
    }

    /// Writes the `3 · input.len()` output samples into `out` (that long).
    pub(super) fn process_into(&mut self, input: &[i16], out: &mut [i16]) {
        debug_assert_eq!(out.len(), 3 * input.len());
        let mut buf = [0i16; UP_HISTORY + BLOCK];
        buf[..UP_HISTORY].copy_from_slice(&self.history);
        for (chunk, out) in input.chunks(BLOCK).zip(out.chunks_mut(3 * BLOCK)) {
            let n = chunk.len();
            buf[UP_HISTORY..UP_HISTORY + n].copy_from_slice(chunk);
            for (m, phases) in out.chunks_exact_mut(3).enumerate() {
                let window = &buf[m..m + UP_WINDOW];
                // Branch 0 is the filter's centre tap alone: a pure delay.
                phases[0] = window[UP_CENTRE];
                phases[1] = narrow(dot(&UP_BRANCH1, window), UP_SHIFT);
                phases[2] = narrow(dot(&UP_BRANCH2, window), UP_SHIFT);
            }
            buf.copy_within(n..n + UP_HISTORY, 0);
        }
        self.history.copy_from_slice(&buf[..UP_HISTORY]);
    }
}

/// 24 kHz → 8 kHz by 3 (stateful, 1.875 ms delay). The decimation phase is
/// kept across calls, so inputs need not be multiples of 3 samples.
#[derive(Clone, Debug)]
pub struct Downsampler3 {
    /// The last `DOWN_HISTORY` input samples, oldest first.
    history: [i16; DOWN_HISTORY],
    /// Input samples to take before the next output (0..=2): outputs fall on
    /// input samples 0, 3, 6, … of the stream.
    skip: usize,
}

impl Default for Downsampler3 {
    fn default() -> Self {
        Self::new()
    }
}

impl Downsampler3 {
    /// A resampler whose past is silence.
    pub fn new() -> Self {
        Self {
            history: [0; DOWN_HISTORY],
            skip: 0,
        }
    }

    /// How many samples the next `process` of `n` input samples yields.
    pub(super) fn output_len(&self, n: usize) -> usize {
        if n > self.skip { (n - self.skip).div_ceil(3) } else { 0 }
    }

    /// Appends one sample per three inputs (phase carried over) to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        let start = out.len();
        out.resize(start + self.output_len(input.len()), 0);
        self.process_into(input, &mut out[start..]);
    }

    /// Writes `self.output_len(input.len())` samples into `out` (that long).
    pub(super) fn process_into(&mut self, input: &[i16], out: &mut [i16]) {
        debug_assert_eq!(out.len(), self.output_len(input.len()));
        let mut buf = [0i16; DOWN_HISTORY + BLOCK];
        buf[..DOWN_HISTORY].copy_from_slice(&self.history);
        let mut outputs = out.iter_mut();
        for chunk in input.chunks(BLOCK) {
            let n = chunk.len();
            buf[DOWN_HISTORY..DOWN_HISTORY + n].copy_from_slice(chunk);
            // `i` indexes the chunk; its window (ending at chunk[i]) starts
            // at buf[i].
            let mut i = self.skip;
            while i < n {
                if let Some(o) = outputs.next() {
                    *o = narrow(dot(&DOWN_PADDED, &buf[i..]), DOWN_SHIFT);
                }
                i += 3;
            }
            self.skip = i - n;
            buf.copy_within(n..n + DOWN_HISTORY, 0);
        }
        self.history.copy_from_slice(&buf[..DOWN_HISTORY]);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{
        BandNoise, Rng, allocations, amplitude, band_energy, db, ratecv, ratecv_per_frame, tone,
    };
    use super::*;

    const AMP: f64 = 16_000.0;

    fn down(x: &[i16]) -> Vec<i16> {
        let mut out = Vec::new();
        Downsampler3::new().process(x, &mut out);
        out
    }

    fn up(x: &[i16]) -> Vec<i16> {
        let mut out = Vec::new();
        Upsampler3::new().process(x, &mut out);
        out
    }

    /// Where `freq` (at 24 kHz) lands after decimation to 8 kHz.
    fn folded(freq: f64) -> f64 {
        let f = freq % 8000.0;
        if f > 4000.0 { 8000.0 - f } else { f }
    }

    /// Level of `freq` in the 0.25 s after a 0.05 s settling time.
    fn level(x: &[i16], freq: f64, fs: f64) -> f64 {
        let settle = (fs * 0.05) as usize;
        amplitude(&x[settle..settle + (fs * 0.25) as usize], freq, fs)
    }

    /// A 0.3 s tone at 24 kHz, downsampled.
    fn down_tone(freq: f64) -> Vec<i16> {
        down(&tone(freq, 24_000.0, 24_000 * 3 / 10, AMP))
    }

    #[test]
    fn downsampler_rejects_aliases_by_60_db() {
        let reference = level(&down_tone(1000.0), 1000.0, 8000.0);
        let mut worst = (f64::NEG_INFINITY, 0.0);
        // Every 100 Hz of the stopband (4.6-12 kHz), except 8 kHz, which
        // folds to DC (measured separately below).
        for f in (4600..12_000).step_by(100).filter(|&f| f != 8000) {
            let f = f64::from(f);
            let alias = db(level(&down_tone(f), folded(f), 8000.0) / reference);
            if alias > worst.0 {
                worst = (alias, f);
            }
            assert!(alias <= -60.0, "{f} Hz folds to {} Hz at {alias:.1} dB", folded(f));
        }
        let dc_out = down_tone(8000.0);
        let mean = dc_out[400..].iter().map(|&s| f64::from(s)).sum::<f64>() / (dc_out.len() - 400) as f64;
        let dc = db(mean.abs() / reference);
        assert!(dc <= -60.0, "8 kHz folds to DC at {dc:.1} dB");
        let ten = db(level(&down_tone(10_000.0), 2000.0, 8000.0) / reference);
        eprintln!(
            "Downsampler3: worst alias of a 4.6-12 kHz tone = {:.1} dB (at {} Hz), \
             10 kHz -> 2 kHz at {ten:.1} dB, 8 kHz -> DC at {} (target <= -60 dB)",
            worst.0,
            worst.1,
            if dc < -200.0 {
                "nothing".to_string()
            } else {
                format!("{dc:.1} dB")
            }
        );

        // The seed: ratecv(…, 24000, 8000, None) per 20 ms frame keeps every
        // third sample, so the 10 kHz tone arrives at 2 kHz undiminished.
        let input = tone(10_000.0, 24_000.0, 24_000 * 3 / 10, AMP);
        let naive = ratecv_per_frame(&input, 480, 24_000, 8000);
        let reference = level(
            &ratecv_per_frame(&tone(1000.0, 24_000.0, 7200, AMP), 480, 24_000, 8000),
            1000.0,
            8000.0,
        );
        let naive = db(level(&naive, 2000.0, 8000.0) / reference);
        eprintln!("naive audioop.ratecv: 10 kHz -> 2 kHz at {naive:.1} dB (ours {ten:.1} dB)");
        assert!(naive > -6.0, "the naive decimator aliases at full level");
    }

    #[test]
    fn downsampler_passband_is_flat() {
        let mut worst: f64 = 0.0;
        for f in (300..=3400).step_by(100) {
            let f = f64::from(f);
            let gain = db(level(&down_tone(f), f, 8000.0) / AMP);
            worst = worst.max(gain.abs());
            assert!(gain.abs() <= 1.0, "{f} Hz: {gain:.2} dB");
        }
        let transition: Vec<String> = [3500.0, 3600.0, 3700.0, 3800.0, 3900.0]
            .iter()
            .map(|&f| format!("{f} Hz {:.1} dB", db(level(&down_tone(f), f, 8000.0) / AMP)))
            .collect();
        eprintln!(
            "Downsampler3: 300-3400 Hz flat within ±{worst:.3} dB (target 1 dB); transition: {}",
            transition.join(", ")
        );
    }

    #[test]
    fn upsampler_removes_images_by_60_db() {
        let mut worst = (f64::NEG_INFINITY, 0.0);
        let mut flat: f64 = 0.0;
        for f in (300..=3400).step_by(100) {
            let f = f64::from(f);
            let out = up(&tone(f, 8000.0, 2400, AMP));
            let signal = level(&out, f, 24_000.0);
            let gain = db(signal / AMP);
            flat = flat.max(gain.abs());
            assert!(gain.abs() <= 1.0, "{f} Hz: {gain:.2} dB");
            // Zero stuffing puts images at 8 kHz ± f (16 kHz ± f fold onto them).
            for image in [8000.0 - f, 8000.0 + f] {
                let level = db(level(&out, image, 24_000.0) / signal);
                if level > worst.0 {
                    worst = (level, image);
                }
                assert!(level <= -60.0, "{f} Hz: image at {image} Hz at {level:.1} dB");
            }
        }
        let out = up(&tone(1000.0, 8000.0, 2400, AMP));
        let one_k = level(&out, 1000.0, 24_000.0);
        let images_1k = [7000.0, 9000.0].map(|f| db(level(&out, f, 24_000.0) / one_k));
        eprintln!(
            "Upsampler3: 300-3400 Hz flat within ±{flat:.3} dB (target 1 dB); worst image = {:.1} dB \
             (at {} Hz); 1 kHz images at 7/9 kHz: {:.1}/{:.1} dB (target <= -60 dB)",
            worst.0, worst.1, images_1k[0], images_1k[1]
        );

        // The seed: linear interpolation, state reset every 160-sample frame
        // (which also drops 2 samples per frame, so its tone drifts off the
        // 1 kHz bin: compare all energy above 4.6 kHz with all below 4 kHz).
        let input = tone(1000.0, 8000.0, 4000, AMP);
        let per_frame = ratecv_per_frame(&input, 160, 8000, 24_000);
        let (kept, _) = ratecv(&input, 8000, 24_000, None);
        let spill = |x: &[i16]| {
            let x = &x[1200..3600];
            10.0 * (band_energy(x, 24_000.0, 4600.0, 12_000.0) / band_energy(x, 24_000.0, 0.0, 4000.0)).log10()
        };
        let (ours, kept, reset) = (spill(&up(&input)), spill(&kept), spill(&per_frame));
        eprintln!(
            "energy above 4.6 kHz vs the 1 kHz tone: Upsampler3 {ours:.1} dB; naive audioop.ratecv \
             {kept:.1} dB with state kept, {reset:.1} dB reset per frame ({} samples per \
             160-sample frame instead of 480)",
            ratecv(&input[..160], 8000, 24_000, None).0.len()
        );
        assert!(ours <= -60.0, "{ours:.1} dB");
        assert!(kept > -40.0 && reset > -40.0, "linear interpolation leaves images");
    }

    /// Delay, in 24 kHz samples, that best aligns `out` with `signal`
    /// delayed: cross-correlation over whole-sample lags, refined by a
    /// parabola through the peak. `step` is the output period in 24 kHz
    /// samples.
    fn xcorr_delay(signal: &BandNoise, out: &[i16], step: usize) -> f64 {
        let corr = |lag: usize| -> f64 {
            out.iter()
                .enumerate()
                .skip(100)
                .map(|(k, &y)| f64::from(y) * signal.at((k * step) as f64 / 24_000.0 - lag as f64 / 24_000.0))
                .sum()
        };
        let c: Vec<f64> = (0..=96).map(corr).collect();
        let peak = (1..96).max_by(|&a, &b| c[a].total_cmp(&c[b])).unwrap_or(1);
        let (l, m, r) = (c[peak - 1], c[peak], c[peak + 1]);
        peak as f64 + 0.5 * (l - r) / (l - 2.0 * m + r)
    }

    #[test]
    fn delay_is_under_2_ms_each_way() {
        let noise = BandNoise::new(7, 300.0, 3400.0, 64, 6000.0);
        let up_delay = xcorr_delay(&noise, &up(&noise.samples(8000.0, 1600)), 1) / 24.0;
        let down_delay = xcorr_delay(&noise, &down(&noise.samples(24_000.0, 4800)), 3) / 24.0;
        eprintln!(
            "delay by cross-correlation with band noise: Upsampler3 {up_delay:.3} ms, \
             Downsampler3 {down_delay:.3} ms (target <= 2 ms; taps say 45/24 = 1.875 ms)"
        );
        assert!((0.0..=2.0).contains(&up_delay), "{up_delay} ms");
        assert!((0.0..=2.0).contains(&down_delay), "{down_delay} ms");

        // Impulse responses: symmetric about the same 45-sample peak.
        let mut impulse = vec![0i16; 60];
        impulse[10] = 16_384;
        let response = up(&impulse);
        let peak = 30 + DELAY_24K;
        assert_eq!(response[peak], 16_384);
        for k in 1..=45 {
            assert_eq!(response[peak - k], response[peak + k], "up response at ±{k}");
        }
        let mut impulse = vec![0i16; 600];
        impulse[300] = 32_767;
        let response = down(&impulse);
        let peak = (300 + DELAY_24K) / 3;
        let top = response.iter().enumerate().max_by_key(|(_, v)| **v).map(|(k, _)| k);
        assert_eq!(top, Some(peak));
        for k in 1..=15 {
            assert_eq!(response[peak - k], response[peak + k], "down response at ±{k}");
        }
    }

    #[test]
    fn random_chunks_give_bit_identical_output() {
        let noise = BandNoise::new(3, 50.0, 11_000.0, 40, 9000.0);
        let input = noise.samples(24_000.0, 20_011);
        let (whole_up, whole_down) = (up(&input), down(&input));
        let mut rng = Rng::new(42);
        for _ in 0..20 {
            let (mut u, mut d) = (Upsampler3::new(), Downsampler3::new());
            let (mut out_u, mut out_d) = (Vec::new(), Vec::new());
            let mut rest = &input[..];
            while !rest.is_empty() {
                // Sizes 0..=1100 cross every block boundary and phase.
                let n = rng.below_or(1100).min(rest.len());
                u.process(&rest[..n], &mut out_u);
                d.process(&rest[..n], &mut out_d);
                rest = &rest[n..];
            }
            assert!(out_u == whole_up, "upsampler output differs when chunked");
            assert!(out_d == whole_down, "downsampler output differs when chunked");
        }
        assert_eq!(whole_up.len(), 3 * input.len());
        assert_eq!(whole_down.len(), input.len().div_ceil(3));
    }

    #[test]
    fn dc_passes_exactly_and_overload_saturates() {
        let dc = vec![-12_345i16; 600];
        assert!(up(&dc)[3 * UP_WINDOW..].iter().all(|&s| s == -12_345));
        assert!(down(&dc)[DOWN_WINDOW / 3..].iter().all(|&s| s == -12_345));

        // The worst input for each filter (full scale with its taps' signs)
        // must clip to full scale, not wrap around.
        let worst =
            |taps: &[i16]| -> Vec<i16> { taps.iter().map(|&c| if c < 0 { i16::MIN } else { i16::MAX }).collect() };
        // One leading sample puts a downsampler output on the last input.
        let mut input = vec![0i16];
        input.extend(worst(&DOWN_PADDED));
        assert_eq!(down(&input).last(), Some(&i16::MAX));
        assert_eq!(up(&worst(&UP_BRANCH2)).last(), Some(&i16::MAX));
        let out = up(&worst(&UP_BRANCH1));
        assert_eq!(out[out.len() - 2], i16::MAX);
    }

    #[test]
    fn process_allocates_nothing_beyond_out() {
        let input = tone(440.0, 24_000.0, 2000, 9000.0);
        let (mut u, mut d) = (Upsampler3::new(), Downsampler3::new());
        let mut out = Vec::with_capacity(8000);
        // Control: the counting allocator does see this thread's allocations.
        let control = allocations();
        drop(std::hint::black_box(Vec::<u8>::with_capacity(1)));
        assert!(allocations() > control);
        let before = allocations();
        for n in [0, 1, 2, 160, 479, 480, 481, 2000] {
            out.clear();
            u.process(&input[..n], &mut out);
            out.clear();
            d.process(&input[..n], &mut out);
        }
        assert_eq!(allocations(), before);
    }
}
