#!/usr/bin/env bash
# The second-pass table of docs/accuracy.md: for each latency, one run per dev file gives both the live
# final labels (stdout, `--format rttm`) and the second pass's refined labels (`--rttm FILE`); both are
# scored at collar 0 and 0.25. With PER_FILE=L, also prints the per-file tables of the refined labels
# at latency L.
#   scripts/accuracy-second-pass.sh [extra whospoke options]   > table.md
# Env: LATENCIES (default "0.5 1 2 5"), DEV (default ../shared/eval/dev), PER_FILE (default 2),
#      WHOSPOKE (binary; default target/release/whospoke, built first).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dev=${DEV:-$repo/../shared/eval/dev}
bin=${WHOSPOKE:-$repo/target/release/whospoke}
per_file=${PER_FILE:-2}
[ -n "${WHOSPOKE:-}" ] || (cd "$repo" && cargo build --release --quiet)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "| latency (s) | labels | DER c0 % | miss | FA | confusion | DER c0.25 % | JER c0 % | speakers right |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
for lat in ${LATENCIES:-0.5 1 2 5}; do
  live=$work/live_$lat; refined=$work/refined_$lat
  mkdir -p "$live" "$refined"
  for wav in "$dev"/*.wav; do
    uri=$(basename "$wav" .wav)
    "$bin" "$wav" --no-tui --no-profiles --format rttm --latency "$lat" --rttm "$refined/$uri.rttm" "$@" > "$live/$uri.rttm"
  done
  for kind in live refined; do
    d=$work/${kind}_$lat
    "$bin" eval "$dev" "$d" --json "$d/c0.json" > /dev/null
    "$bin" eval "$dev" "$d" --collar 0.25 --json "$d/c25.json" > /dev/null
    python3 - "$d" "$lat" "$kind" <<'PY'
import json, sys
d, lat, kind = sys.argv[1:]
a = json.load(open(d + "/c0.json")); b = json.load(open(d + "/c25.json"))
t = a["total"]
name = "live (stdout)" if kind == "live" else "second pass (--rttm)"
print(f"| {lat} | {name} | {100*a['der']:.2f} | {100*a['miss']/t:.2f} | {100*a['false_alarm']/t:.2f} | "
      f"{100*a['confusion']/t:.2f} | {100*b['der']:.2f} | {100*a['jer']:.2f} | {a['count_correct']}/{len(a['files'])} |")
PY
  done
done
d=$work/refined_$per_file
if [ -d "$d" ]; then
  python3 - "$d" "$per_file" <<'PY'
import json, sys
d, lat = sys.argv[1:]
for c, f in (("0", "c0.json"), ("0.25", "c25.json")):
    r = json.load(open(f"{d}/{f}"))
    print(f"\n**Second pass, latency {lat} s, collar {c} s**\n")
    print("| file | speech (s) | speakers ref/hyp | DER % | miss % | FA % | confusion % | JER % |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    pct = lambda x: "-" if x is None else f"{100*x:.2f}"
    for x in r["files"]:
        t = x["total"] or 1
        print(f"| {x['uri']} | {x['total']:.1f} | {x['ref_speakers']}/{x['hyp_speakers']} | {pct(x['der'])} | "
              f"{pct(x['miss']/t)} | {pct(x['false_alarm']/t)} | {pct(x['confusion']/t)} | {pct(x['jer'])} |")
    t = r["total"]
    print(f"| **corpus** | {t:.1f} | {r['count_correct']}/{len(r['files'])} right | **{pct(r['der'])}** | "
          f"{pct(r['miss']/t)} | {pct(r['false_alarm']/t)} | {pct(r['confusion']/t)} | {pct(r['jer'])} |")
PY
fi
