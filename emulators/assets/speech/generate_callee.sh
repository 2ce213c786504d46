#!/usr/bin/env bash
# Regenerates the Twilio emulator's callee clips (emulators/src/twilio.rs
# embeds them with include_bytes!, so the binary is self-contained).
#
# Each clip is one callee line spoken by espeak-ng (voice en-us, 150 words/min),
# with leading/trailing silence trimmed, normalised to -3 dBFS, and stored as
# headerless G.711 mu-law, 8 kHz, mono: exactly what Twilio Media Streams carry
# (protocols.md §5.4), so the emulator sends the bytes unchanged.
#
# The texts must stay identical to CALLEE_LINES in emulators/src/twilio.rs: the
# realtime-AI emulator "transcribes" utterance n as line n.
#
# Needs: espeak-ng, sox   (Debian: apt-get install -y espeak-ng sox)
set -euo pipefail
cd "$(dirname "$0")"

lines=(
  "Hello? Yes, this is Sam speaking."
  "I'd like to move my appointment to Friday afternoon."
  "Three o'clock works. Thank you, goodbye."
)

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# What is spoken: the same words, but sentence breaks inside a line become
# plain word breaks, because espeak-ng pauses ~700 ms at a full stop (~500 ms at a comma) and a server VAD with
# 500 ms silence_duration_ms (ours) would split the line into two turns.
for i in "${!lines[@]}"; do
  n=$((i + 1))
  spoken="$(printf '%s' "${lines[$i]}" | sed -E 's/\. ([A-Z])/ \L\1/g')"
  espeak-ng -v en-us -s 150 -w "$tmp/line.wav" "$spoken"
  sox "$tmp/line.wav" -t raw -r 8000 -c 1 -e mu-law -b 8 "callee_$n.ulaw" \
    silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse gain -n -3
  echo "callee_$n.ulaw: $(stat -c %s "callee_$n.ulaw") bytes ($(( $(stat -c %s "callee_$n.ulaw") / 8 )) ms)"
done
