#!/usr/bin/env bash
# Runs whospoke on every file of a dev set and scores it (corpus DER, collar 0 and 0.25).
#   scripts/eval-dev.sh [OUT_DIR] [-- extra whospoke options]
# Env: DEV (default ../shared/eval/dev), WHOSPOKE (binary; default target/release/whospoke, built if missing),
#      REF_SCORER=1 also scores with ../shared/eval/score.py (pyannote.metrics) for comparison.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dev=${DEV:-$repo/../shared/eval/dev}
out=${1:-$repo/out/dev}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
bin=${WHOSPOKE:-$repo/target/release/whospoke}
if [ -z "${WHOSPOKE:-}" ]; then
  (cd "$repo" && cargo build --release --quiet)
fi
[ -d "$dev" ] || { echo "eval-dev: no dev set at $dev (set DEV=...)" >&2; exit 1; }
mkdir -p "$out"
rm -f "$out"/*.rttm
start=$(date +%s.%N)
for wav in "$dev"/*.wav; do
  uri=$(basename "$wav" .wav)
  "$bin" "$wav" --format rttm --no-tui --no-profiles "$@" > "$out/$uri.rttm"
done
end=$(date +%s.%N)
echo "# whospoke $* on $(ls "$dev"/*.wav | wc -l) files in $(echo "$end - $start" | bc) s"
for c in 0 0.25; do
  echo "## collar $c"
  "$bin" eval "$dev" "$out" --collar "$c" --json "$out/score_c$c.json"
done
if [ "${REF_SCORER:-0}" = 1 ]; then
  for c in 0 0.25; do
    echo "## score.py, collar $c"
    "$repo/scripts/score-ref.sh" "$dev" "$out" --collar "$c" | tail -1
  done
fi
