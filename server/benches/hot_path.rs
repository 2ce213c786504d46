//! Micro-benchmarks of the per-frame message work of the bridge (the audio
//! codecs have their own bench, `benches/audio.rs`).
//! Run: `cargo bench -p voice-agent-server --bench hot_path`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use voice_agent_server::audio::linear_to_ulaw;
use voice_agent_server::realtime::protocol;
use voice_agent_server::telephony::twilio::media;

fn frame_ulaw() -> Vec<u8> {
    (0..160)
        .map(|i| linear_to_ulaw(((i as f64 * 0.3).sin() * 8000.0) as i16))
        .collect()
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

criterion_group!(benches, messages);
criterion_main!(benches);
