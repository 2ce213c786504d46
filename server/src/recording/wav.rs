//! Wire format: the recording's WAV file (RIFF `WAVE`, one `fmt ` chunk of
//! 16-bit PCM, one `data` chunk), stereo at 8 kHz, left the callee and right
//! the agent.
//!
//! Why 16-bit PCM rather than the μ-law the call carries: every player and
//! every browser's `<audio>` plays PCM WAV, while μ-law WAV (format 7) is
//! refused by some (Safari among them). G.711 μ-law expands exactly to 14-bit
//! linear, so nothing is lost, and each channel's samples are the call's
//! μ-law bytes expanded ([`crate::audio::ulaw_to_linear`]): tests compare
//! them sample for sample. The price is twice the size: 32 kB a second,
//! about 115 MB an hour.
//!
//! The header's two sizes are written as 0 when the file is created and
//! patched as the data grows ([`header`] at offset 0), so a file cut short by
//! a crash is valid up to the last patch.

use crate::audio::ulaw_to_linear;

/// Samples a second (Twilio's G.711: 8 kHz).
pub const SAMPLE_RATE: u32 = 8000;
/// Left: the callee; right: the agent.
pub const CHANNELS: u16 = 2;
/// Bits per sample.
pub const BITS: u16 = 16;
/// Bytes of one stereo sample frame.
pub const BLOCK_ALIGN: u16 = CHANNELS * BITS / 8;
/// Bytes of audio a second.
pub const BYTES_PER_SECOND: u32 = SAMPLE_RATE * BLOCK_ALIGN as u32;
/// Length of the header [`header`] writes (the data starts here).
pub const HEADER_LEN: usize = 44;
/// Most data bytes a WAV file can describe (its sizes are 32-bit).
pub const MAX_DATA: u64 = u32::MAX as u64 - 36;

/// The header of a file with `data_len` bytes of audio.
pub fn header(data_len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data_len.saturating_add(36).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // WAVE_FORMAT_PCM
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&BYTES_PER_SECOND.to_le_bytes());
    h[32..34].copy_from_slice(&BLOCK_ALIGN.to_le_bytes());
    h[34..36].copy_from_slice(&BITS.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// Appends the stereo frames of `left` and `right` (μ-law, the same length)
/// to `out` as interleaved little-endian 16-bit PCM.
pub fn push_stereo(left: &[u8], right: &[u8], out: &mut Vec<u8>) {
    debug_assert_eq!(left.len(), right.len());
    out.reserve(left.len() * BLOCK_ALIGN as usize);
    for (l, r) in left.iter().zip(right) {
        out.extend_from_slice(&ulaw_to_linear(*l).to_le_bytes());
        out.extend_from_slice(&ulaw_to_linear(*r).to_le_bytes());
    }
}

/// A WAV file read back: its two channels (tests, and checking a file).
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The callee's samples.
    pub left: Vec<i16>,
    /// The agent's samples.
    pub right: Vec<i16>,
}

/// Why bytes are not a recording of ours.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a recording: {0}")]
pub struct NotOurs(&'static str);

/// Reads a file [`header`] and [`push_stereo`] wrote: checks the format, and
/// takes the data the header declares (a crash may have left more after it).
pub fn decode(bytes: &[u8]) -> Result<Decoded, NotOurs> {
    if bytes.len() < HEADER_LEN {
        return Err(NotOurs("shorter than a header"));
    }
    let declared = u32::from_le_bytes([bytes[40], bytes[41], bytes[42], bytes[43]]) as usize;
    let expected = header(declared as u32);
    if bytes[..HEADER_LEN] != expected {
        return Err(NotOurs("not 8 kHz stereo 16-bit PCM, or inconsistent sizes"));
    }
    let data = bytes
        .get(HEADER_LEN..HEADER_LEN + declared)
        .ok_or(NotOurs("shorter than its header says"))?;
    if data.len() % BLOCK_ALIGN as usize != 0 {
        return Err(NotOurs("a partial sample frame"));
    }
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for frame in data.chunks_exact(BLOCK_ALIGN as usize) {
        left.push(i16::from_le_bytes([frame[0], frame[1]]));
        right.push(i16::from_le_bytes([frame[2], frame[3]]));
    }
    Ok(Decoded { left, right })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_describes_8_khz_stereo_16_bit_pcm() {
        let h = header(32_000);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 32_036);
        assert_eq!(u16::from_le_bytes(h[22..24].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(h[24..28].try_into().unwrap()), 8000);
        assert_eq!(u32::from_le_bytes(h[28..32].try_into().unwrap()), 32_000);
        assert_eq!(u32::from_le_bytes(h[40..44].try_into().unwrap()), 32_000);
    }

    #[test]
    fn channels_round_trip_as_expanded_mu_law() {
        let left = [0xFFu8, 0x00, 0x80, 0x7E];
        let right = [0x11u8, 0xFE, 0xFF, 0x00];
        let mut data = Vec::new();
        push_stereo(&left, &right, &mut data);
        let mut file = header(data.len() as u32).to_vec();
        file.extend_from_slice(&data);
        let d = decode(&file).unwrap();
        assert_eq!(d.left, vec![0, -32124, 32124, -8]);
        assert_eq!(d.right, right.iter().map(|b| ulaw_to_linear(*b)).collect::<Vec<_>>());
    }

    #[test]
    fn a_file_cut_after_its_last_patch_reads_up_to_it() {
        let mut data = Vec::new();
        push_stereo(&[0x10; 8], &[0x20; 8], &mut data);
        let mut file = header(16).to_vec(); // patched after 4 frames
        file.extend_from_slice(&data); // 8 written before the crash
        let d = decode(&file).unwrap();
        assert_eq!(d.left.len(), 4);
        assert_eq!(decode(&file[..30]), Err(NotOurs("shorter than a header")));
        assert!(decode(&header(64)).is_err(), "declares more than it has");
    }
}
