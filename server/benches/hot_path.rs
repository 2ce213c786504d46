//! Micro-benchmarks of the per-frame message work of the bridge (the audio
//! codecs alone have their own bench, `benches/audio.rs`): parsing and
//! building each message, and a whole frame through the bridge's conversions
//! in each direction, as `bridge.rs` runs them (everything but the sockets).
//! Run: `cargo bench -p voice-agent-server --bench hot_path`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use voice_agent_server::audio::linear_to_ulaw;
use voice_agent_server::bridge::frames::FrameCodec;
use voice_agent_server::config::AudioMode;
use voice_agent_server::realtime::protocol;
use voice_agent_server::telephony::twilio::media;

const STREAM_SID: &str = "MZ00000000000000000000000000000001";

fn frame_ulaw() -> Vec<u8> {
    (0..160)
        .map(|i| linear_to_ulaw(((i as f64 * 0.3).sin() * 8000.0) as i16))
        .collect()
}

fn frame_pcm24k() -> Vec<u8> {
    (0..480)
        .flat_map(|i| (((i as f64 * 0.1).sin() * 8000.0) as i16).to_le_bytes())
        .collect()
}

fn twilio_media(payload: &str) -> String {
    format!(
        r#"{{"event":"media","sequenceNumber":"4","media":{{"track":"inbound","chunk":"2","timestamp":"40","payload":"{payload}"}},"streamSid":"{STREAM_SID}"}}"#
    )
}

fn ai_delta(delta: &str) -> String {
    format!(
        r#"{{"type":"response.output_audio.delta","event_id":"event_1","response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0,"delta":"{delta}"}}"#
    )
}

fn messages(c: &mut Criterion) {
    let payload = B64.encode(frame_ulaw());
    let media_text = twilio_media(&payload);
    let mark_text =
        format!(r#"{{"event":"mark","sequenceNumber":"9","streamSid":"{STREAM_SID}","mark":{{"name":"m42"}}}}"#);
    let delta_20ms = ai_delta(&B64.encode(frame_pcm24k()));
    let mut g = c.benchmark_group("messages");
    g.bench_function("parse Twilio media (general parser)", |b| {
        b.iter(|| media::parse_inbound(black_box(&media_text)))
    });
    g.bench_function("parse Twilio media (hot path)", |b| {
        b.iter(|| media::parse_hot(black_box(&media_text)))
    });
    g.bench_function("parse Twilio mark (hot path)", |b| {
        b.iter(|| media::parse_hot(black_box(&mark_text)))
    });
    g.bench_function("build Twilio media", |b| {
        b.iter(|| media::media_message(black_box(STREAM_SID), black_box(&payload)))
    });
    g.bench_function("build input_audio_buffer.append", |b| {
        b.iter(|| protocol::input_audio_append(black_box(&payload)))
    });
    g.bench_function("parse AI audio delta, 20 ms PCM16 (general parser)", |b| {
        b.iter(|| protocol::parse_server_event(black_box(&delta_20ms)))
    });
    g.bench_function("parse AI audio delta, 20 ms PCM16 (hot path)", |b| {
        b.iter(|| protocol::parse_audio_delta(black_box(&delta_20ms)))
    });
    g.finish();
}

/// One 20 ms frame each way, from the received text to the text to send.
fn whole_frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("whole frame through the bridge");
    for (mode, name, ai_audio) in [
        (AudioMode::Transcode, "transcode", frame_pcm24k()),
        (AudioMode::Passthrough, "passthrough", frame_ulaw()),
    ] {
        let media_text = twilio_media(&B64.encode(frame_ulaw()));
        let delta_text = ai_delta(&B64.encode(&ai_audio));
        let mut codec = FrameCodec::new(mode);
        g.bench_function(format!("{name}: Twilio media → AI append"), |b| {
            b.iter(|| {
                let Some(media::HotInbound::Media(p)) = media::parse_hot(black_box(&media_text)) else {
                    unreachable!()
                };
                codec.twilio_to_ai(&p)
            })
        });
        let mut n = 0u64;
        g.bench_function(format!("{name}: AI delta → Twilio media + mark"), |b| {
            b.iter(|| {
                let d = protocol::parse_audio_delta(black_box(&delta_text)).expect("a delta");
                let out = codec.ai_to_twilio(STREAM_SID, &d.delta);
                n += 1;
                (out, media::mark_message(STREAM_SID, &format!("m{n}")))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, messages, whole_frame);
criterion_main!(benches);
