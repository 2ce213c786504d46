//! The per-frame conversions of the bridge, apart from its sockets, so that
//! a criterion bench times exactly what the bridge runs for every 20 ms frame
//! (`benches/hot_path.rs`, "whole frame").

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::audio::{InboundTranscoder, OutboundTranscoder};
use crate::config::AudioMode;
use crate::realtime::protocol;
use crate::telephony::twilio::media as tw;

/// Audio that is not base64.
#[derive(Debug, PartialEq, Eq)]
pub struct NotBase64;

/// Converts callee frames into AI appends and AI deltas into Twilio media,
/// keeping the resamplers' state across frames and reusing its buffers.
pub struct FrameCodec {
    mode: AudioMode,
    inbound: InboundTranscoder,
    outbound: OutboundTranscoder,
    decoded: Vec<u8>,
    converted: Vec<u8>,
}

impl FrameCodec {
    /// A codec for `mode`.
    pub fn new(mode: AudioMode) -> Self {
        Self {
            mode,
            inbound: InboundTranscoder::new(),
            outbound: OutboundTranscoder::new(),
            // A 20 ms frame is 160 μ-law bytes or 960 PCM bytes; larger
            // deltas grow these once.
            decoded: Vec::with_capacity(1024),
            converted: Vec::with_capacity(1024),
        }
    }

    /// A Twilio `media.payload` (base64 μ-law 8 kHz) → the text of the AI's
    /// `input_audio_buffer.append` in the session's format.
    pub fn twilio_to_ai(&mut self, payload: &str) -> Result<String, NotBase64> {
        self.decoded.clear();
        B64.decode_vec(payload, &mut self.decoded).map_err(|_| NotBase64)?;
        Ok(match self.mode {
            // μ-law both ways: the payload goes on as it came.
            AudioMode::Passthrough => protocol::input_audio_append(payload),
            AudioMode::Transcode => {
                self.converted.clear();
                self.inbound.process(&self.decoded, &mut self.converted);
                protocol::input_audio_append_bytes(&self.converted)
            }
        })
    }

    /// The μ-law bytes of the last [`FrameCodec::ai_to_twilio`]: what that
    /// `media` message carries (the call's recording takes them).
    pub fn last_ulaw(&self) -> &[u8] {
        match self.mode {
            AudioMode::Passthrough => &self.decoded,
            AudioMode::Transcode => &self.converted,
        }
    }

    /// An AI audio delta (base64 in the session's format) → the text of the
    /// Twilio `media` message and how many μ-law bytes it carries (0: nothing
    /// to send yet).
    pub fn ai_to_twilio(&mut self, stream_sid: &str, delta: &str) -> Result<(String, usize), NotBase64> {
        self.decoded.clear();
        B64.decode_vec(delta, &mut self.decoded).map_err(|_| NotBase64)?;
        Ok(match self.mode {
            // μ-law both ways: the delta's base64 goes to Twilio as it came.
            AudioMode::Passthrough => (tw::media_message(stream_sid, delta), self.decoded.len()),
            AudioMode::Transcode => {
                self.converted.clear();
                self.outbound.process(&self.decoded, &mut self.converted);
                (
                    tw::media_message_from_ulaw(stream_sid, &self.converted),
                    self.converted.len(),
                )
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload_of(append: &str) -> Vec<u8> {
        let v: serde_json::Value = serde_json::from_str(append).unwrap();
        assert_eq!(v["type"], "input_audio_buffer.append");
        B64.decode(v["audio"].as_str().unwrap()).unwrap()
    }

    #[test]
    fn passthrough_forwards_the_bytes_as_they_came() {
        let mut c = FrameCodec::new(AudioMode::Passthrough);
        let ulaw: Vec<u8> = (0..160u8).collect();
        let append = c.twilio_to_ai(&B64.encode(&ulaw)).unwrap();
        assert_eq!(payload_of(&append), ulaw);
        let (media, n) = c.ai_to_twilio("MZ1", &B64.encode(&ulaw)).unwrap();
        assert_eq!(n, 160);
        let v: serde_json::Value = serde_json::from_str(&media).unwrap();
        assert_eq!(
            (v["event"].as_str(), v["streamSid"].as_str()),
            (Some("media"), Some("MZ1"))
        );
        assert_eq!(B64.decode(v["media"]["payload"].as_str().unwrap()).unwrap(), ulaw);
        assert_eq!(c.last_ulaw(), ulaw);
    }

    #[test]
    fn transcode_turns_20_ms_into_20_ms_both_ways() {
        let mut c = FrameCodec::new(AudioMode::Transcode);
        let append = c.twilio_to_ai(&B64.encode([0xFFu8; 160])).unwrap();
        assert_eq!(payload_of(&append).len(), 960, "480 PCM16 samples at 24 kHz");
        let (media, n) = c.ai_to_twilio("MZ1", &B64.encode([0u8; 960])).unwrap();
        assert_eq!(n, 160, "160 μ-law bytes at 8 kHz");
        assert_eq!(c.last_ulaw().len(), 160);
        assert!(media.starts_with(r#"{"event":"media","streamSid":"MZ1""#));
    }

    #[test]
    fn garbage_is_refused_and_leaves_the_codec_usable() {
        let mut c = FrameCodec::new(AudioMode::Transcode);
        assert_eq!(c.twilio_to_ai("not base64!"), Err(NotBase64));
        assert_eq!(c.ai_to_twilio("MZ1", "%%%"), Err(NotBase64));
        assert!(c.twilio_to_ai(&B64.encode([0xFFu8; 160])).is_ok());
    }
}
