#!/usr/bin/env bash
# Regenerates the realtime-AI emulator's agent clips (emulators/src/realtime.rs
# embeds them with include_bytes!). Same recipe as generate_callee.sh, with a
# different voice so the two sides are told apart by ear: espeak-ng en-us+f3 at
# 165 words/min, trimmed, -3 dBFS, headerless G.711 mu-law 8 kHz mono. The
# emulator sends them as they are in mu-law sessions and converts them to
# PCM16 24 kHz (with crate::audio) in PCM sessions.
# sox -D (no dither) makes reruns byte-identical.
#
# The texts must stay identical to AGENT_LINES in emulators/src/realtime.rs.
#
# Needs: espeak-ng, sox   (Debian: apt-get install -y espeak-ng sox)
set -euo pipefail
cd "$(dirname "$0")"

lines=(
  "Hi, this is the assistant from Contoso Clinic. Am I speaking with Sam?"
  "Thanks, Sam. How can I help you today?"
  "Sure. I have Friday at three o'clock available. Does that work for you?"
  "You're all set for Friday at three. Goodbye!"
)

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for i in "${!lines[@]}"; do
  espeak-ng -v en-us+f3 -s 165 -w "$tmp/line.wav" "${lines[$i]}"
  sox -D "$tmp/line.wav" -t raw -r 8000 -c 1 -e mu-law -b 8 "agent_$i.ulaw" \
    silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse gain -n -3
  echo "agent_$i.ulaw: $(stat -c %s "agent_$i.ulaw") bytes ($(( $(stat -c %s "agent_$i.ulaw") / 8 )) ms)"
done
