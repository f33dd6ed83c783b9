#!/usr/bin/env bash
# The trade-off table of docs/accuracy.md: corpus DER (collar 0 and 0.25), speaker counts and the
# dev set (speed: docs/performance.md), for each mode and latency (labels final N s behind live).
#   scripts/accuracy-modes.sh [extra whospoke options]   > table.md
# Env: MODES (default "vad seg"), LATENCIES (default "0.5 1 2 5"), DEV (default ../shared/eval/dev),
#      WHOSPOKE (binary; default target/release/whospoke, built first).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dev=${DEV:-$repo/../shared/eval/dev}
bin=${WHOSPOKE:-$repo/target/release/whospoke}
[ -n "${WHOSPOKE:-}" ] || (cd "$repo" && cargo build --release --quiet)
audio=$(python3 - "$dev" <<'PY'
import sys, glob, wave
print(sum(wave.open(p).getnframes() / wave.open(p).getframerate() for p in glob.glob(sys.argv[1] + "/*.wav")))
PY
)
echo "| mode | latency (s) | DER c0 % | miss | FA | confusion | DER c0.25 % | JER c0 % | speakers right |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for mode in ${MODES:-vad seg}; do
  for lat in ${LATENCIES:-0.5 1 2 5}; do
    out=$(mktemp -d)
    t0=$(date +%s.%N)
    for wav in "$dev"/*.wav; do
      "$bin" "$wav" --no-tui --no-profiles --format rttm --mode "$mode" --latency "$lat" "$@" > "$out/$(basename "$wav" .wav).rttm"
    done
    t1=$(date +%s.%N)
    "$bin" eval "$dev" "$out" --json "$out/c0.json" > /dev/null
    "$bin" eval "$dev" "$out" --collar 0.25 --json "$out/c25.json" > /dev/null
    python3 - "$out" "$mode" "$lat" "$t0" "$t1" "$audio" <<'PY'
import json, sys
out, mode, lat, t0, t1, audio = sys.argv[1:]
a = json.load(open(out + "/c0.json")); b = json.load(open(out + "/c25.json"))
t = a["total"]
print(f"| {mode} | {lat} | {100*a['der']:.2f} | {100*a['miss']/t:.2f} | {100*a['false_alarm']/t:.2f} | "
      f"{100*a['confusion']/t:.2f} | {100*b['der']:.2f} | {100*a['jer']:.2f} | {a['count_correct']}/{len(a['files'])} |")
PY
    rm -rf "$out"
  done
done
