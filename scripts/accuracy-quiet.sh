#!/usr/bin/env bash
# Quiet input (docs/accuracy.md, "Quiet input"): the dev set (or DEV) made quieter by each of GAINS dB
# with sox, each copy diarized with the automatic gain (default) and with --no-auto-gain; prints the
# corpus DER line of each run (collar 0 and 0.25).
#   scripts/accuracy-quiet.sh [OUT_DIR] [-- extra whospoke options]
# Env: DEV (default ../shared/eval/dev), GAINS (default "0 -10 -20 -30").
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dev=${DEV:-$repo/../shared/eval/dev}
out=${1:-$repo/out/quiet}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
command -v sox >/dev/null || { echo "accuracy-quiet: needs sox (scripts/install-deps.sh test)" >&2; exit 1; }
(cd "$repo" && cargo build --release --quiet)
bin=$repo/target/release/whospoke
for g in ${GAINS:-0 -10 -20 -30}; do
  copy=$out/gain$g
  mkdir -p "$copy"
  for wav in "$dev"/*.wav; do
    sox -R "$wav" "$copy/$(basename "$wav")" gain "$g"   # -R: the same dither every run
    cp "${wav%.wav}.rttm" "$copy/"
  done
  for variant in auto off; do
    opts=()
    [ "$variant" = off ] && opts=(--no-auto-gain)
    WHOSPOKE=$bin DEV=$copy "$repo/scripts/eval-dev.sh" "$out/hyp$g-$variant" -- "${opts[@]}" "$@" > /dev/null
    for c in 0 0.25; do
      echo "gain $g dB, auto gain $variant, collar $c: $("$bin" eval "$copy" "$out/hyp$g-$variant" --collar "$c" | tail -1)"
    done
  done
done
