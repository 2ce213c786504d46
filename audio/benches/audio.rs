//! Per-20 ms-frame cost of the audio path, each direction: μ-law codec,
//! resamplers, and the byte-level transcoders the bridge calls.
//! Run: `cargo bench -p voice-agent-audio --bench audio`.

use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use voice_agent_audio::{
    Downsampler3, InboundTranscoder, OutboundTranscoder, Upsampler3, linear_to_ulaw, ulaw_to_linear,
};

/// 20 ms of a speech-like signal at `rate` (a few partials, not a pure tone).
fn frame(rate: usize) -> Vec<i16> {
    (0..rate / 50)
        .map(|n| {
            let t = n as f64 / rate as f64;
            let s = (2.0 * std::f64::consts::PI * 220.0 * t).sin() * 6000.0
                + (2.0 * std::f64::consts::PI * 1370.0 * t).sin() * 3000.0
                + (2.0 * std::f64::consts::PI * 2900.0 * t).sin() * 1500.0;
            s as i16
        })
        .collect()
}

fn audio(c: &mut Criterion) {
    let narrow = frame(8000); // 160 samples
    let wide = frame(24_000); // 480 samples
    let ulaw: Vec<u8> = narrow.iter().map(|&s| linear_to_ulaw(s)).collect();
    let pcm: Vec<u8> = wide.iter().flat_map(|s| s.to_le_bytes()).collect();

    let mut g = c.benchmark_group("audio per 20 ms frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("mu-law decode", "160 B"), |b| {
        let mut out = vec![0i16; ulaw.len()];
        b.iter(|| {
            for (o, &x) in out.iter_mut().zip(black_box(&ulaw)) {
                *o = ulaw_to_linear(x);
            }
            black_box(&out);
        })
    });
    g.bench_function(BenchmarkId::new("mu-law encode", "160 samples"), |b| {
        let mut out = vec![0u8; narrow.len()];
        b.iter(|| {
            for (o, &s) in out.iter_mut().zip(black_box(&narrow)) {
                *o = linear_to_ulaw(s);
            }
            black_box(&out);
        })
    });
    g.bench_function(BenchmarkId::new("Upsampler3", "160 -> 480"), |b| {
        let (mut up, mut out) = (Upsampler3::new(), Vec::with_capacity(480));
        b.iter(|| {
            out.clear();
            up.process(black_box(&narrow), &mut out);
            black_box(&out);
        })
    });
    g.bench_function(BenchmarkId::new("Downsampler3", "480 -> 160"), |b| {
        let (mut down, mut out) = (Downsampler3::new(), Vec::with_capacity(160));
        b.iter(|| {
            out.clear();
            down.process(black_box(&wide), &mut out);
            black_box(&out);
        })
    });
    g.bench_function(BenchmarkId::new("InboundTranscoder", "160 B -> 960 B"), |b| {
        let (mut t, mut out) = (InboundTranscoder::new(), Vec::with_capacity(960));
        b.iter(|| {
            out.clear();
            t.process(black_box(&ulaw), &mut out);
            black_box(&out);
        })
    });
    g.bench_function(BenchmarkId::new("OutboundTranscoder", "960 B -> 160 B"), |b| {
        let (mut t, mut out) = (OutboundTranscoder::new(), Vec::with_capacity(160));
        b.iter(|| {
            out.clear();
            t.process(black_box(&pcm), &mut out);
            black_box(&out);
        })
    });
    g.finish();
}

criterion_group!(benches, audio);
criterion_main!(benches);
