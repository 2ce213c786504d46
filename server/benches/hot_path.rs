//! Micro-benchmarks of the per-frame hot path: what the bridge does for every
//! 20 ms of audio in each direction. Run: `cargo bench -p voice-agent-server --bench hot_path`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use voice_agent_server::audio::{
    Downsampler3, InboundTranscoder, OutboundTranscoder, Upsampler3, linear_to_ulaw, ulaw_to_linear,
};
use voice_agent_server::realtime::protocol;
use voice_agent_server::telephony::twilio::media;

fn frame_ulaw() -> Vec<u8> {
    (0..160)
        .map(|i| linear_to_ulaw(((i as f64 * 0.3).sin() * 8000.0) as i16))
        .collect()
}

fn audio(c: &mut Criterion) {
    let ulaw = frame_ulaw();
    let linear: Vec<i16> = ulaw.iter().map(|&b| ulaw_to_linear(b)).collect();
    let wide: Vec<i16> = (0..480).map(|i| ((i as f64 * 0.1).sin() * 8000.0) as i16).collect();
    let wide_bytes: Vec<u8> = wide.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut g = c.benchmark_group("audio per 20 ms frame");
    g.bench_function("mu-law decode 160 B", |b| {
        b.iter(|| black_box(&ulaw).iter().map(|&x| ulaw_to_linear(x) as i32).sum::<i32>())
    });
    g.bench_function("mu-law encode 160 samples", |b| {
        b.iter(|| {
            black_box(&linear)
                .iter()
                .map(|&s| linear_to_ulaw(s) as u32)
                .sum::<u32>()
        })
    });
    let mut up = Upsampler3::new();
    let mut out = Vec::with_capacity(1024);
    g.bench_function("upsample 8->24 kHz", |b| {
        b.iter(|| {
            out.clear();
            up.process(black_box(&linear), &mut out);
        })
    });
    let mut down = Downsampler3::new();
    g.bench_function("downsample 24->8 kHz", |b| {
        b.iter(|| {
            out.clear();
            down.process(black_box(&wide), &mut out);
        })
    });
    let mut inbound = InboundTranscoder::new();
    let mut bytes = Vec::with_capacity(2048);
    g.bench_function("inbound transcode (Twilio -> AI)", |b| {
        b.iter(|| {
            bytes.clear();
            inbound.process(black_box(&ulaw), &mut bytes);
        })
    });
    let mut outbound = OutboundTranscoder::new();
    g.bench_function("outbound transcode (AI -> Twilio)", |b| {
        b.iter(|| {
            bytes.clear();
            outbound.process(black_box(&wide_bytes), &mut bytes);
        })
    });
    g.finish();
}

fn messages(c: &mut Criterion) {
    let payload = B64.encode(frame_ulaw());
    let twilio_media = format!(
        r#"{{"event":"media","sequenceNumber":"4","media":{{"track":"inbound","chunk":"2","timestamp":"40","payload":"{payload}"}},"streamSid":"MZ00000000000000000000000000000001"}}"#
    );
    let delta_payload = B64.encode(vec![0u8; 4800]);
    let ai_delta = format!(
        r#"{{"type":"response.output_audio.delta","event_id":"event_1","response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0,"delta":"{delta_payload}"}}"#
    );
    let mut g = c.benchmark_group("messages");
    g.bench_function("parse Twilio media", |b| {
        b.iter(|| media::parse_inbound(black_box(&twilio_media)))
    });
    g.bench_function("build Twilio media", |b| {
        b.iter(|| media::media_message(black_box("MZ00000000000000000000000000000001"), black_box(&payload)))
    });
    g.bench_function("build input_audio_buffer.append", |b| {
        b.iter(|| protocol::input_audio_append(black_box(&payload)))
    });
    g.bench_function("parse AI audio delta (100 ms PCM16)", |b| {
        b.iter(|| protocol::parse_server_event(black_box(&ai_delta)))
    });
    g.finish();
}

criterion_group!(benches, audio, messages);
criterion_main!(benches);
