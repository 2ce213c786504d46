//! Fuzz targets (property tests): the μ-law codec, the resamplers and the
//! transcoders on arbitrary input cut at arbitrary points never panic, give
//! the documented output lengths, give the same output however the input is
//! cut, and allocate nothing when the caller's buffer is large enough.
//! docs/fuzzing.md has the long run's figures.
//!
//! `cargo test -p voice-agent-audio fuzz` runs them with [`CASES`] inputs each;
//! `PROPTEST_CASES=…` overrides it.

use proptest::prelude::*;

use super::testkit::allocations;
use super::*;

/// Inputs per target in the test command; `PROPTEST_CASES` overrides it.
const CASES: u32 = 128;

fn config() -> ProptestConfig {
    // `ProptestConfig::default()` reads PROPTEST_CASES; only without it is ours the default.
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = CASES;
    }
    c
}

/// `input` cut into pieces of the given sizes (the last piece takes the rest).
fn cut<'a, T>(mut input: &'a [T], sizes: &[usize]) -> Vec<&'a [T]> {
    let mut pieces = Vec::new();
    for &n in sizes {
        let (head, tail) = input.split_at(n.min(input.len()));
        pieces.push(head);
        input = tail;
    }
    pieces.push(input);
    pieces
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(
        prop_oneof![0..4usize, 0..600usize, Just(160), Just(480), Just(960)],
        0..12,
    )
}

fn samples() -> impl Strategy<Value = Vec<i16>> {
    prop_oneof![
        proptest::collection::vec(any::<i16>(), 0..3000),
        proptest::collection::vec(prop_oneof![Just(i16::MIN), Just(i16::MAX), Just(0)], 0..1000),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_ulaw_round_trip_of_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for b in bytes {
            let back = linear_to_ulaw(ulaw_to_linear(b));
            prop_assert_eq!(back, if b == 0x7F { 0xFF } else { b });
        }
    }

    #[test]
    fn fuzz_resamplers_lengths_chunking_and_allocation(input in samples(), sizes in sizes()) {
        let (mut whole_up, mut whole_down) = (Vec::new(), Vec::new());
        Upsampler3::new().process(&input, &mut whole_up);
        Downsampler3::new().process(&input, &mut whole_down);
        prop_assert_eq!(whole_up.len(), 3 * input.len());
        prop_assert_eq!(whole_down.len(), input.len().div_ceil(3));

        let (mut up, mut down) = (Upsampler3::new(), Downsampler3::new());
        let mut out_up = Vec::with_capacity(whole_up.len());
        let mut out_down = Vec::with_capacity(whole_down.len());
        let pieces = cut(&input, &sizes);
        let before = allocations();
        for piece in &pieces {
            let n = out_up.len();
            up.process(piece, &mut out_up);
            prop_assert_eq!(out_up.len() - n, 3 * piece.len());
            down.process(piece, &mut out_down);
        }
        // The caller's buffers were large enough: nothing else may allocate.
        prop_assert_eq!(allocations(), before);
        prop_assert!(out_up == whole_up, "upsampler output depends on the cuts");
        prop_assert!(out_down == whole_down, "downsampler output depends on the cuts");
    }

    #[test]
    fn fuzz_transcoders_lengths_chunking_and_allocation(
        ulaw in proptest::collection::vec(any::<u8>(), 0..2000),
        pcm in proptest::collection::vec(any::<u8>(), 0..6000),
        sizes in sizes(),
    ) {
        let mut whole_in = Vec::new();
        InboundTranscoder::new().process(&ulaw, &mut whole_in);
        prop_assert_eq!(whole_in.len(), 6 * ulaw.len());
        let mut whole_out = Vec::new();
        OutboundTranscoder::new().process(&pcm, &mut whole_out);
        // One μ-law byte per three whole samples, starting with the first; an odd byte waits.
        prop_assert_eq!(whole_out.len(), (pcm.len() / 2).div_ceil(3));

        let (mut inbound, mut outbound) = (InboundTranscoder::new(), OutboundTranscoder::new());
        let mut out_in = Vec::with_capacity(whole_in.len());
        let mut out_out = Vec::with_capacity(whole_out.len());
        let (in_pieces, out_pieces) = (cut(&ulaw, &sizes), cut(&pcm, &sizes));
        let before = allocations();
        for piece in &in_pieces {
            let n = out_in.len();
            inbound.process(piece, &mut out_in);
            prop_assert_eq!(out_in.len() - n, 6 * piece.len());
        }
        let mut fed = 0;
        for piece in &out_pieces {
            outbound.process(piece, &mut out_out);
            fed += piece.len();
            prop_assert_eq!(out_out.len(), (fed / 2).div_ceil(3));
        }
        prop_assert_eq!(allocations(), before);
        prop_assert!(out_in == whole_in, "inbound bytes depend on the cuts");
        prop_assert!(out_out == whole_out, "outbound bytes depend on the cuts");
    }
}
