//! G.711 μ-law, bit-exact with Python's `audioop.ulaw2lin` / `lin2ulaw`
//! (the reference the seed and the protocol notes use, protocols.md §5.4).

/// Decodes one byte the G.711 way: invert, then sign, 3-bit segment, 4-bit
/// mantissa; `((mantissa << 3) + 0x84) << segment` − 0x84.
const fn decode(byte: u8) -> i16 {
    let u = !byte;
    let segment = (u >> 4) & 0x07;
    let mantissa = u & 0x0f;
    let magnitude = (((mantissa as i32) << 3) + 0x84) << segment;
    let sample = magnitude - 0x84;
    if u & 0x80 != 0 { -sample as i16 } else { sample as i16 }
}

/// All 256 decodings, built at compile time.
static DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = decode(i as u8);
        i += 1;
    }
    table
};

/// G.711 μ-law decode (0xFF → 0, 0x7F → 0, 0x00 → −32124, 0x80 → 32124).
#[inline]
pub fn ulaw_to_linear(byte: u8) -> i16 {
    DECODE[byte as usize]
}

/// G.711 μ-law encode, bit-exact with `audioop.lin2ulaw` (0 → 0xFF).
///
/// audioop encodes the top 14 bits (`sample >> 2`, rounding towards −∞), so
/// −1…−4 encode as 0x7E (−8) while 0…3 encode as 0xFF (0): a ±4 LSB
/// asymmetry we keep for bit-exactness with the reference.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let v = i32::from(sample) >> 2;
    let (magnitude, mask) = if v < 0 { (-v, 0x7F) } else { (v, 0xFF) };
    // 33 is G.711's bias (0x84) in 14-bit units. Clipping at 8158 + 33 = 8191,
    // the top of segment 7, gives the code audioop gives for its clip (8159).
    let biased = (magnitude.min(8158) + 33) as u32;
    // Segment = how far the value reaches above 6 bits (0..=7).
    let segment = 32 - (biased >> 6).leading_zeros();
    let code = (segment << 4) | ((biased >> (segment + 1)) & 0x0f);
    (code as u8) ^ mask
}

#[cfg(test)]
mod tests {
    use super::*;

    /// audioop's `st_14linear2ulaw` (from sox's g711.c), transcribed plainly
    /// with its segment search loop, as the reference.
    fn audioop_lin2ulaw(sample: i16) -> u8 {
        const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
        let mut pcm = i32::from(sample) >> 2;
        let mask = if pcm < 0 {
            pcm = -pcm;
            0x7F
        } else {
            0xFF
        };
        pcm = pcm.min(8159) + (0x84 >> 2);
        let segment = SEG_UEND.iter().position(|&end| pcm <= end).unwrap_or(8);
        if segment >= 8 {
            return 0x7F ^ mask;
        }
        (((segment as i32) << 4) | ((pcm >> (segment + 1)) & 0x0F)) as u8 ^ mask
    }

    #[test]
    fn decode_spot_values_match_audioop() {
        // protocols.md §5.4.
        for (byte, value) in [
            (0xFFu8, 0i16),
            (0x7F, 0),
            (0x00, -32124),
            (0x80, 32124),
            (0x7E, -8),
            (0xFE, 8),
            (0x01, -31100),
            (0xF0, 120),
        ] {
            assert_eq!(ulaw_to_linear(byte), value, "{byte:#04x}");
        }
    }

    #[test]
    fn encode_matches_audioop_for_every_sample() {
        for s in i16::MIN..=i16::MAX {
            assert_eq!(linear_to_ulaw(s), audioop_lin2ulaw(s), "sample {s}");
        }
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(-1), 0x7E);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for byte in 0..=255u8 {
            let back = linear_to_ulaw(ulaw_to_linear(byte));
            // 0x7F ("negative zero") decodes to 0, which encodes as 0xFF.
            let expected = if byte == 0x7F { 0xFF } else { byte };
            assert_eq!(back, expected, "{byte:#04x}");
        }
    }

    #[test]
    fn quantisation_error_stays_within_half_a_step() {
        // The decoded value is the centre of the encoding interval (within
        // the 4-sample granularity of the 14-bit input), so the error is at
        // most half a step: 2^(segment+2) + 4 in 16-bit units.
        for s in -32_000..=32_000i16 {
            let byte = linear_to_ulaw(s);
            let segment = u32::from((!byte >> 4) & 0x07);
            let err = (i32::from(ulaw_to_linear(byte)) - i32::from(s)).abs();
            assert!(err <= (1 << (segment + 2)) + 4, "{s}: err {err}, segment {segment}");
        }
    }
}
