//! Audio for the bridge: the G.711 μ-law codec and stateful resamplers
//! between Twilio's μ-law 8 kHz and the AI's PCM16 24 kHz. Pure: no I/O, no
//! allocation inside `process` beyond growing the caller's buffer.
//!
//! Both resamplers are polyphase forms of one linear-phase low-pass FIR at
//! 24 kHz (91 taps, Kaiser-windowed sinc, β = 7, cutoff 4 kHz; `filter.rs`):
//! - passband 0–3.4 kHz (the telephone band): flat within ±0.003 dB;
//! - stopband from 4.6 kHz: ≥ 71 dB down, so a 10 kHz tone in the AI's audio
//!   cannot reach the phone as a 2 kHz alias, and upsampling leaves no images
//!   (8 kHz ± f) for the AI to hear;
//! - 3.4–4.6 kHz is the transition band (−0.3 dB at 3.6 kHz, −6 dB at 4 kHz,
//!   −30 dB at 4.4 kHz). Downsampling, only 4.0–4.6 kHz can fold back, and it
//!   lands at 3.4–4.0 kHz, above the telephone band; upsampling, only the
//!   images of 3.4–4.0 kHz survive (at 4.0–4.6 kHz, ≥ 6 dB down), and phone
//!   audio has next to nothing there;
//! - group delay 45 samples at 24 kHz = 1.875 ms per direction (budget 2 ms).
//!
//! The seed used Python's `audioop.ratecv` per 20 ms frame: linear
//! interpolation, no anti-alias filter, state reset every frame. Its 3:1
//! decimation keeps every third sample, so a 10 kHz tone comes out at 2 kHz
//! undiminished, its interpolation leaves images ~34 dB down, and the reset
//! makes 478 samples out of each 160 (a click every 20 ms). The tests
//! measure both side by side.

mod filter;
#[cfg(test)]
mod fuzz;
mod mulaw;
mod resample;
#[cfg(test)]
mod testkit;
mod transcode;

pub use mulaw::{linear_to_ulaw, ulaw_to_linear};
pub use resample::{Downsampler3, Upsampler3};
pub use transcode::{InboundTranscoder, OutboundTranscoder};

/// μ-law bytes per millisecond at 8 kHz (protocols.md §5.4).
pub const ULAW_BYTES_PER_MS: usize = 8;
/// PCM16 bytes per millisecond at 24 kHz (protocols.md §5.4).
pub const PCM16_24K_BYTES_PER_MS: usize = 48;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_send_and_default() {
        fn check<T: Send + Default + Clone>() {}
        check::<Upsampler3>();
        check::<Downsampler3>();
        check::<InboundTranscoder>();
        check::<OutboundTranscoder>();
    }

    #[test]
    fn byte_rates_agree_with_the_transcoders() {
        // 20 ms in, 20 ms out, in both directions.
        let mut pcm = Vec::new();
        InboundTranscoder::new().process(&[0xFF; 20 * ULAW_BYTES_PER_MS], &mut pcm);
        assert_eq!(pcm.len(), 20 * PCM16_24K_BYTES_PER_MS);
        let mut ulaw = Vec::new();
        OutboundTranscoder::new().process(&pcm, &mut ulaw);
        assert_eq!(ulaw.len(), 20 * ULAW_BYTES_PER_MS);
    }
}
