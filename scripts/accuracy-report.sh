#!/usr/bin/env bash
# Regenerates the dev-set tables of docs/accuracy.md: runs scripts/eval-dev.sh for the default
# configuration and prints Markdown (per-file and corpus DER/JER at collar 0 and 0.25).
#   scripts/accuracy-report.sh [-- extra whospoke options]   > section.md
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
[ "${1:-}" = "--" ] && shift
bash "$repo/scripts/eval-dev.sh" "$out" -- "$@" > "$out/log"
python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
for c in ("0", "0.25"):
    r = json.load(open(os.path.join(out, f"score_c{c}.json")))
    print(f"\n**Collar {c} s** (`whospoke eval ../shared/eval/dev HYP --collar {c}`)\n")
    print("| file | speech (s) | speakers ref/hyp | DER % | miss % | FA % | confusion % | JER % |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    pct = lambda x: "-" if x is None else f"{100*x:.2f}"
    for f in r["files"]:
        t = f["total"] or 1
        print(f"| {f['uri']} | {f['total']:.1f} | {f['ref_speakers']}/{f['hyp_speakers']} | {pct(f['der'])} | "
              f"{pct(f['miss']/t)} | {pct(f['false_alarm']/t)} | {pct(f['confusion']/t)} | {pct(f['jer'])} |")
    t = r["total"]
    print(f"| **corpus** | {t:.1f} | {r['count_correct']}/{len(r['files'])} right | **{pct(r['der'])}** | "
          f"{pct(r['miss']/t)} | {pct(r['false_alarm']/t)} | {pct(r['confusion']/t)} | {pct(r['jer'])} |")
PY
head -1 "$out/log"
rm -rf "$out"
