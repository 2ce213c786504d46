//! The one low-pass filter behind both resamplers, as checked-in fixed-point
//! taps. `tests::taps_match_their_generator` holds the generator (a
//! Kaiser-windowed sinc) and fails, printing the fresh tables, if the design
//! constants and the tables ever disagree.
//!
//! Design (at 24 kHz): 91 taps, cutoff 4 kHz (= fs/6, the new Nyquist
//! frequency), Kaiser β = 7. A sinc cut at exactly fs/6 is a third-band
//! ("Nyquist") filter: every third tap counted from the centre is zero, so one
//! polyphase branch of the upsampler is a pure delay and the original 8 kHz
//! samples pass through untouched. 91 rather than the 97 the 2 ms budget
//! allows makes the delay (91 − 1) / 2 = 45 samples, a multiple of 3: 1.875 ms
//! each way and a whole 30 samples at 8 kHz for a round trip.

/// Group delay of the filter in 24 kHz samples.
pub(super) const DELAY_24K: usize = 45;

/// Fixed-point scale of the upsampler taps (Q14). Q15 would not do: the
/// branch taps sum to 2.2 in magnitude, so a worst-case full-scale input
/// could overflow an i32 accumulator (see `accumulators_cannot_overflow`).
pub(super) const UP_SHIFT: u32 = 14;

/// Fixed-point scale of the downsampler taps (Q15).
pub(super) const DOWN_SHIFT: u32 = 15;

/// Upsampler branch 1 (24 kHz taps 1, 4, …, 88, times 3 for the zero
/// stuffing), Q14, newest input first. Branch 2 is the same taps reversed
/// (the filter is symmetric); branch 0 is the delta at tap 45.
pub(super) const UP_TAPS: [i16; 30] = [
    3, -9, 19, -37, 64, -104, 160, -238, 346, -494, 702, -1012, 1528, -2603, 6731, 13528, -3301, 1789, -1152, 791,
    -555, 390, -271, 183, -120, 75, -45, 24, -12, 4,
];

/// The full 91-tap filter, Q15, unity DC gain (symmetric, so order does not
/// matter).
pub(super) const DOWN_TAPS: [i16; 91] = [
    0, 2, 3, 0, -6, -8, 0, 13, 16, 0, -25, -30, 0, 43, 50, 0, -69, -80, 0, 107, 122, 0, -159, -180, 0, 231, 260, 0,
    -329, -370, 0, 468, 527, 0, -675, -768, 0, 1018, 1193, 0, -1735, -2201, 0, 4487, 9018, 10922, 9018, 4487, 0, -2201,
    -1735, 0, 1193, 1018, 0, -768, -675, 0, 527, 468, 0, -370, -329, 0, 260, 231, 0, -180, -159, 0, 122, 107, 0, -80,
    -69, 0, 50, 43, 0, -30, -25, 0, 16, 13, 0, -8, -6, 0, 3, 2, 0,
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    const TAPS: usize = 91;
    const BETA: f64 = 7.0;

    /// Modified Bessel function of the first kind, order 0 (power series).
    fn bessel_i0(x: f64) -> f64 {
        let (mut sum, mut term) = (1.0, 1.0);
        for k in 1..100 {
            term *= x / 2.0 / k as f64;
            sum += term * term;
        }
        sum
    }

    /// The filter in f64: Kaiser-windowed sinc with cutoff fs/6, each of the
    /// three polyphase branches normalised to a DC gain of exactly 1/3 (so a
    /// constant input comes out of the upsampler without an 8 kHz ripple).
    fn design() -> [f64; TAPS] {
        let mid = (TAPS - 1) / 2;
        let mut h = [0.0; TAPS];
        for (n, v) in h.iter_mut().enumerate() {
            let t = n as f64 - mid as f64;
            if n == mid {
                *v = 1.0;
            } else if (n as i64 - mid as i64) % 3 == 0 {
                *v = 0.0; // exact zeros of sinc(t/3)
            } else {
                let r = t / mid as f64;
                let window = bessel_i0(BETA * (1.0 - r * r).sqrt()) / bessel_i0(BETA);
                *v = (PI * t / 3.0).sin() / (PI * t / 3.0) * window;
            }
        }
        for p in 0..3 {
            let sum: f64 = h.iter().skip(p).step_by(3).sum();
            for v in h.iter_mut().skip(p).step_by(3) {
                *v /= 3.0 * sum;
            }
        }
        h
    }

    /// Rounds `x · 2^shift` to integers and moves the rounding residual of the
    /// sum onto tap `fix`, so the DC gain is exact.
    fn quantise(x: &[f64], shift: u32, target: i64, fix: usize) -> Vec<i16> {
        let scale = f64::from(1u32 << shift);
        let mut q: Vec<i64> = x.iter().map(|v| (v * scale).round() as i64).collect();
        let sum: i64 = q.iter().sum();
        q[fix] += target - sum;
        q.iter().map(|&v| i16::try_from(v).expect("tap fits i16")).collect()
    }

    fn generate() -> (Vec<i16>, Vec<i16>) {
        let h = design();
        let branch1: Vec<f64> = (0..30).map(|j| 3.0 * h[3 * j + 1]).collect();
        // Tap 15 of branch 1 is 24 kHz tap 46, the largest.
        let up = quantise(&branch1, UP_SHIFT, 1 << UP_SHIFT, 15);
        let down = quantise(&h, DOWN_SHIFT, 1 << DOWN_SHIFT, DELAY_24K);
        (up, down)
    }

    #[test]
    fn taps_match_their_generator() {
        let (up, down) = generate();
        assert!(
            up == UP_TAPS && down == DOWN_TAPS,
            "regenerate the tables:\nUP_TAPS = {up:?}\nDOWN_TAPS = {down:?}"
        );
    }

    #[test]
    fn taps_are_symmetric_with_exact_dc_gain() {
        for n in 0..DOWN_TAPS.len() {
            assert_eq!(DOWN_TAPS[n], DOWN_TAPS[DOWN_TAPS.len() - 1 - n], "tap {n}");
        }
        // Third-band: every third tap from the centre is zero.
        for n in (0..DOWN_TAPS.len()).filter(|n| n % 3 == 0 && *n != DELAY_24K) {
            assert_eq!(DOWN_TAPS[n], 0, "tap {n}");
        }
        assert_eq!(DOWN_TAPS.iter().map(|&c| i32::from(c)).sum::<i32>(), 1 << DOWN_SHIFT);
        assert_eq!(UP_TAPS.iter().map(|&c| i32::from(c)).sum::<i32>(), 1 << UP_SHIFT);
    }

    #[test]
    fn accumulators_cannot_overflow() {
        // Worst case: every input at −32768 with the sign of its tap; the
        // bound holds for every partial sum, so summation order is free.
        let worst = |taps: &[i16], shift: u32| -> i64 {
            taps.iter().map(|&c| i64::from(c).abs()).sum::<i64>() * 32768 + (1 << (shift - 1))
        };
        let (up, down) = (worst(&UP_TAPS, UP_SHIFT), worst(&DOWN_TAPS, DOWN_SHIFT));
        eprintln!(
            "worst-case accumulators: up {up} ({:.0}% of i32), down {down} ({:.0}%)",
            100.0 * up as f64 / f64::from(i32::MAX),
            100.0 * down as f64 / f64::from(i32::MAX)
        );
        assert!(up <= i64::from(i32::MAX) && down <= i64::from(i32::MAX));
    }

    /// Gain in dB of each resampler at `freq` (24 kHz side), computed from
    /// the quantised taps.
    fn response_db(freq: f64) -> (f64, f64) {
        let gain = |taps: &[(usize, f64)]| {
            let w = 2.0 * PI * freq / 24_000.0;
            let (re, im) = taps.iter().fold((0.0, 0.0), |(re, im), &(n, c)| {
                (re + c * (w * n as f64).cos(), im - c * (w * n as f64).sin())
            });
            20.0 * (re * re + im * im).sqrt().log10()
        };
        // The upsampler's 24 kHz filter is 3·h (the zero stuffing divides by 3).
        let mut up = vec![(DELAY_24K, 1.0 / 3.0)];
        for (j, &c) in UP_TAPS.iter().enumerate() {
            let c = f64::from(c) / f64::from(1u32 << UP_SHIFT) / 3.0;
            up.push((3 * j + 1, c));
            up.push((3 * (29 - j) + 2, c));
        }
        let down: Vec<(usize, f64)> = DOWN_TAPS
            .iter()
            .enumerate()
            .map(|(n, &c)| (n, f64::from(c) / f64::from(1u32 << DOWN_SHIFT)))
            .collect();
        (gain(&up), gain(&down))
    }

    #[test]
    fn response_meets_the_band_targets() {
        let (mut ripple, mut stop) = (0.0f64, f64::NEG_INFINITY);
        for f in (0..=3400).step_by(10) {
            let (up, down) = response_db(f64::from(f));
            ripple = ripple.max(up.abs()).max(down.abs());
        }
        for f in (4600..=12_000).step_by(10) {
            let (up, down) = response_db(f64::from(f));
            stop = stop.max(up).max(down);
        }
        let transition: Vec<String> = [3400.0, 3600.0, 3800.0, 4000.0, 4200.0, 4400.0, 4600.0]
            .iter()
            .map(|&f| format!("{:.0} Hz {:.1} dB", f, response_db(f).1))
            .collect();
        eprintln!(
            "filter (from the taps): passband 0-3.4 kHz within ±{ripple:.4} dB (target 1 dB), \
             stopband 4.6-12 kHz <= {stop:.1} dB (target -60 dB); transition: {}",
            transition.join(", ")
        );
        assert!(ripple <= 1.0, "passband ripple {ripple} dB");
        assert!(stop <= -60.0, "stopband {stop} dB");
    }
}
