//! Where each side's audio lands in the recording: a pure model, without
//! files or clock (the recorder in [`super`] feeds it and writes what it hands
//! out).
//!
//! The clock is the callee's audio. Twilio sends the inbound track without
//! gaps, 20 ms per message with silence included (protocols.md §5.4), so the
//! callee's μ-law bytes placed end to end *are* the stream's time, one byte a
//! sample; it is the clock Twilio's official samples use for barge-in too
//! (`latest_media_timestamp`, §7.5). No timestamp a peer sends can make us
//! write silence we were not sent.
//!
//! The agent's audio plays the way Twilio plays it (§5.3), and the way the
//! bridge's barge-in code counts what was heard: each chunk starts when it
//! arrives, or when the audio before it has played, whichever is later, and
//! plays in real time. A `clear` drops everything not played yet: what was
//! scheduled past "now" is cut from the right channel. Agent audio still
//! queued when the call ends was never heard, and is not written.
//!
//! Both channels are final up to "now" (a later `clear` only cuts what lies
//! after its own "now"), so [`Timeline::take`] hands out everything up to it.

use std::collections::VecDeque;

/// μ-law silence (protocols.md §5.4).
pub const SILENCE: u8 = 0xFF;

/// The agent audio scheduled past "now" went over the bound.
#[derive(Debug, PartialEq, Eq)]
pub struct TooFarAhead {
    /// The bound, in samples.
    pub limit: usize,
}

/// The two channels not handed out yet, from [`Timeline::written`] on.
#[derive(Debug)]
pub struct Timeline {
    /// Samples handed out so far (both channels).
    written: u64,
    /// The callee's samples from `written` on: `written + left.len()` is "now".
    left: VecDeque<u8>,
    /// The agent's samples from `written` on (may run past "now").
    right: VecDeque<u8>,
    /// Most agent samples that may be scheduled past "now" (memory bound:
    /// an AI sends faster than real time, but not minutes ahead).
    max_ahead: usize,
}

impl Timeline {
    /// An empty timeline; at most `max_ahead` agent samples may wait past "now".
    pub fn new(max_ahead: usize) -> Self {
        Self {
            written: 0,
            left: VecDeque::new(),
            right: VecDeque::new(),
            max_ahead,
        }
    }

    /// The stream's time, in samples: the callee's audio received so far.
    pub fn now(&self) -> u64 {
        self.written + self.left.len() as u64
    }

    /// Samples handed out so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The callee's audio, as received (μ-law).
    pub fn callee(&mut self, ulaw: &[u8]) {
        self.left.extend(ulaw);
    }

    /// Agent audio sent to the callee now (μ-law): it plays once what was
    /// sent before it has.
    pub fn agent(&mut self, ulaw: &[u8]) -> Result<(), TooFarAhead> {
        let now = self.left.len();
        if self.right.len() < now {
            // Nothing queued: it starts playing now, after silence.
            self.right.resize(now, SILENCE);
        }
        if self.right.len() - now + ulaw.len() > self.max_ahead {
            return Err(TooFarAhead { limit: self.max_ahead });
        }
        self.right.extend(ulaw);
        Ok(())
    }

    /// A `clear`: the agent audio not played yet is dropped.
    pub fn clear(&mut self) {
        self.right.truncate(self.left.len());
    }

    /// Hands out both channels up to "now": `(left, right)`, the same length.
    pub fn take(&mut self, left: &mut Vec<u8>, right: &mut Vec<u8>) {
        let n = self.left.len();
        left.clear();
        right.clear();
        left.extend(self.left.drain(..));
        right.extend(self.right.drain(..n.min(self.right.len())));
        right.resize(n, SILENCE);
        self.written += n as u64;
    }

    /// Agent samples scheduled past "now" (dropped at the end: never heard).
    pub fn ahead(&self) -> usize {
        self.right.len().saturating_sub(self.left.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(t: &mut Timeline) -> (Vec<u8>, Vec<u8>) {
        let (mut l, mut r) = (Vec::new(), Vec::new());
        t.take(&mut l, &mut r);
        (l, r)
    }

    #[test]
    fn the_callee_is_the_clock_and_the_agent_is_silent_until_it_speaks() {
        let mut t = Timeline::new(1000);
        t.callee(&[1; 160]);
        assert_eq!(t.now(), 160);
        let (l, r) = take(&mut t);
        assert_eq!((l, r), (vec![1; 160], vec![SILENCE; 160]));
        assert_eq!(t.written(), 160);
    }

    #[test]
    fn agent_audio_starts_now_and_plays_in_real_time_across_chunks() {
        let mut t = Timeline::new(10_000);
        t.callee(&[1; 100]);
        let _ = take(&mut t);
        // Two chunks arrive at once (faster than real time): they queue.
        t.agent(&[7; 150]).unwrap();
        t.agent(&[8; 150]).unwrap();
        assert_eq!(t.ahead(), 300);
        t.callee(&[2; 200]);
        let (l, r) = take(&mut t);
        assert_eq!(l, vec![2; 200]);
        assert_eq!(&r[..150], &[7; 150]);
        assert_eq!(&r[150..], &[8; 50]);
        // The rest plays on while the callee is silent; then silence.
        t.callee(&[SILENCE; 200]);
        let (_, r) = take(&mut t);
        assert_eq!(&r[..100], &[8; 100]);
        assert_eq!(&r[100..], &[SILENCE; 100]);
    }

    #[test]
    fn audio_after_a_pause_starts_when_it_arrives_not_when_the_last_ended() {
        let mut t = Timeline::new(10_000);
        t.agent(&[7; 40]).unwrap();
        t.callee(&[0; 100]);
        t.agent(&[8; 10]).unwrap();
        t.callee(&[0; 20]);
        let (_, r) = take(&mut t);
        let mut want = vec![7; 40];
        want.extend([SILENCE; 60]);
        want.extend([8; 10]);
        want.extend([SILENCE; 10]);
        assert_eq!(r, want);
    }

    #[test]
    fn a_clear_cuts_what_had_not_played() {
        let mut t = Timeline::new(10_000);
        t.agent(&[7; 1000]).unwrap();
        t.callee(&[0; 300]);
        t.clear();
        assert_eq!(t.ahead(), 0);
        t.callee(&[3; 100]);
        t.agent(&[9; 50]).unwrap();
        t.callee(&[3; 100]);
        let (l, r) = take(&mut t);
        assert_eq!(l.len(), 500);
        assert_eq!(&r[..300], &[7; 300][..], "heard before the clear");
        assert_eq!(&r[300..400], &[SILENCE; 100][..], "cut");
        assert_eq!(&r[400..450], &[9; 50][..], "the next reply");
        assert_eq!(&r[450..], &[SILENCE; 50][..]);
    }

    #[test]
    fn agent_audio_too_far_ahead_is_refused() {
        let mut t = Timeline::new(100);
        t.agent(&[7; 80]).unwrap();
        assert_eq!(t.agent(&[7; 30]), Err(TooFarAhead { limit: 100 }));
        t.callee(&[0; 50]);
        t.agent(&[7; 30]).unwrap();
    }
}
