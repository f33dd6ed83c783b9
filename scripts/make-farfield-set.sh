#!/usr/bin/env bash
# Far-field copies of dev-set files: the same conversations as heard across a room, to check that voice
# profiles enrolled from clean speech still name their speakers there (and still name nobody else).
#
# Each file is lowered 3 dB (headroom), goes through sox `reverb 60 50 80 100 10` (reverberance 60 %, HF
# damping 50 %, room scale 80 %, stereo depth 100 %, pre-delay 10 ms) and gets pink noise 15 dB under the
# reverberant speech's RMS level; the
# reference RTTM is copied unchanged (reverberation smears turn ends past it, as in far-field recordings
# scored against close-talk references). Deterministic (`sox -R`).
#
# Usage: scripts/make-farfield-set.sh [OUT_DIR] [FILE ...]
#   default OUT_DIR out/farfield, FILEs dev_06 .. dev_11 (the test files of scripts/enroll-eval.sh)
# Environment: DEV (default ../shared/eval/dev). Needs sox, python3.
# Then: ENROLL_DEV=../shared/eval/dev scripts/enroll-eval.sh out/farfield
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dev="${DEV:-$here/../shared/eval/dev}"
out="${1:-$here/out/farfield}"
shift || true
files=("$@")
[[ ${#files[@]} -gt 0 ]] || files=(dev_06 dev_07 dev_08 dev_09 dev_10 dev_11)
command -v sox >/dev/null || { echo "make-farfield-set: needs sox (apt-get install sox)" >&2; exit 1; }
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
rms() { sox "$1" -n stat 2>&1 | awk '/RMS +amplitude/ {print $3}'; }
for f in "${files[@]}"; do
  src="$dev/$f.wav"
  [[ -f "$src" ]] || { echo "make-farfield-set: no $src" >&2; exit 1; }
  dur="$(soxi -D "$src")"
  sox -R "$src" "$tmp/rev.wav" gain -3 reverb 60 50 80 100 10
  sox -R -n -r 16000 -c 1 -b 16 "$tmp/noise.wav" synth "$dur" pinknoise
  vol="$(python3 -c "print($(rms "$tmp/rev.wav") / $(rms "$tmp/noise.wav") * 10 ** (-15 / 20))")"
  sox -R -m -v 1 "$tmp/rev.wav" -v "$vol" "$tmp/noise.wav" "$out/$f.wav"
  cp "$dev/$f.rttm" "$out/"
  echo "$out/$f.wav"
done
