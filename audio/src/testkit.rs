//! Test helpers for the audio module: signals, level measurement, a
//! deterministic PRNG, an allocation counter, and the seed's naive resampler
//! (Python's `audioop.ratecv`) for comparison.

// The allocation counter is a `GlobalAlloc`, which only unsafe code can be;
// each block forwards to `System` under the caller's contract.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::f64::consts::PI;

/// Counts allocations per thread so a test can prove a call allocated
/// nothing (tests run on parallel threads; each sees only its own count).
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator; the
// counter is a const-initialised thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Allocations made so far on this thread.
pub fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// xorshift64*: deterministic, good enough for chunk sizes and phases.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in 0..=max.
    pub fn below_or(&mut self, max: usize) -> usize {
        (self.next_u64() % (max as u64 + 1)) as usize
    }
}

/// `amp · sin(2π f n / fs)` for n in 0..len, rounded to i16.
pub fn tone(freq: f64, fs: f64, len: usize, amp: f64) -> Vec<i16> {
    (0..len)
        .map(|n| (amp * (2.0 * PI * freq * n as f64 / fs).sin()).round() as i16)
        .collect()
}

/// Amplitude of `freq` in `x` by a single-bin DFT. Callers analyse a whole
/// number of periods (lengths of fs/10 with frequencies on a 100 Hz grid)
/// so there is no leakage to window away.
pub fn amplitude(x: &[i16], freq: f64, fs: f64) -> f64 {
    let (mut re, mut im) = (0.0, 0.0);
    for (n, &s) in x.iter().enumerate() {
        let w = 2.0 * PI * freq * n as f64 / fs;
        re += f64::from(s) * w.cos();
        im -= f64::from(s) * w.sin();
    }
    (re * re + im * im).sqrt() * 2.0 / x.len() as f64
}

pub fn db(ratio: f64) -> f64 {
    20.0 * ratio.max(1e-12).log10()
}

/// Band-limited noise as a sum of many sines at random frequencies and
/// phases within a band: an analytic, speech-like test signal that can be
/// evaluated at any instant (so delays need not be whole samples).
pub struct BandNoise {
    tones: Vec<(f64, f64)>,
    amp: f64,
}

impl BandNoise {
    /// `count` components between `lo` and `hi` Hz, total RMS `rms`.
    pub fn new(seed: u64, lo: f64, hi: f64, count: usize, rms: f64) -> Self {
        let mut rng = Rng::new(seed);
        let tones = (0..count)
            .map(|_| (lo + (hi - lo) * rng.unit(), 2.0 * PI * rng.unit()))
            .collect();
        // Each unit sine has power 1/2.
        let amp = rms / (count as f64 / 2.0).sqrt();
        Self { tones, amp }
    }
    pub fn at(&self, t: f64) -> f64 {
        self.amp
            * self
                .tones
                .iter()
                .map(|&(f, phase)| (2.0 * PI * f * t + phase).sin())
                .sum::<f64>()
    }
    /// Samples n / fs for n in 0..len, rounded to i16.
    pub fn samples(&self, fs: f64, len: usize) -> Vec<i16> {
        (0..len).map(|n| self.at(n as f64 / fs).round() as i16).collect()
    }
}

/// The seed's resampler: CPython's `audioop.ratecv` for mono 16-bit with the
/// default weights (1, 0), transcribed from Modules/audioop.c. `state` is
/// `(d, prev, cur)`; the seed passed `None` for every 20 ms frame.
pub fn ratecv(input: &[i16], inrate: i32, outrate: i32, state: Option<(i32, i32, i32)>) -> (Vec<i16>, (i32, i32, i32)) {
    let g = gcd(inrate, outrate);
    let (inrate, outrate) = (inrate / g, outrate / g);
    let (mut d, mut prev, mut cur) = state.unwrap_or((-outrate, 0, 0));
    let mut out = Vec::new();
    let mut samples = input.iter();
    loop {
        while d < 0 {
            let Some(&s) = samples.next() else {
                return (out, (d, prev, cur));
            };
            prev = cur;
            cur = i32::from(s) << 16; // GETSAMPLE32 for width 2
            d += outrate;
        }
        while d >= 0 {
            let o = ((f64::from(prev) * f64::from(d) + f64::from(cur) * f64::from(outrate - d)) / f64::from(outrate))
                as i32;
            out.push((o >> 16) as i16);
            d -= inrate;
        }
    }
}

fn gcd(a: i32, b: i32) -> i32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// `ratecv` the seed's way: each frame converted with a fresh state.
pub fn ratecv_per_frame(input: &[i16], frame: usize, inrate: i32, outrate: i32) -> Vec<i16> {
    input
        .chunks(frame)
        .flat_map(|f| ratecv(f, inrate, outrate, None).0)
        .collect()
}

/// Energy of `x` between `lo` and `hi` Hz: Hann window, then the sum of the
/// DFT bins' power (bins are fs / len apart).
pub fn band_energy(x: &[i16], fs: f64, lo: f64, hi: f64) -> f64 {
    let len = x.len() as f64;
    let windowed: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(n, &s)| f64::from(s) * (0.5 - 0.5 * (2.0 * PI * n as f64 / len).cos()))
        .collect();
    let (first, last) = ((lo * len / fs).ceil() as usize, (hi * len / fs).floor() as usize);
    (first..=last)
        .map(|k| {
            let (mut re, mut im) = (0.0, 0.0);
            for (n, &s) in windowed.iter().enumerate() {
                let w = 2.0 * PI * (k * n) as f64 / len;
                re += s * w.cos();
                im -= s * w.sin();
            }
            re * re + im * im
        })
        .sum()
}
