#!/usr/bin/env bash
# Soak test: hours of real speech streamed through stdin faster than real time.
#
#   scripts/soak.sh [--cycles N] [--write-doc] [AUDIO ...] [-- WHOSPOKE_ARGS...]
#
# AUDIO (default: the dev set, /work/shared/eval/dev/dev_*.wav, about 30 min) is converted once with sox to
# 16 kHz mono s16 and the list is played N times in a row (default 4: about 2 h of audio) into
# `whospoke - --rate 16000 --format jsonl --no-tui --rttm OUT`, as fast as it reads. Each AUDIO needs its reference
# RTTM next to it (same name, .rttm).
#
# Reported: VmRSS of the whospoke process over time (sampled every 2 s), label lag (`status` events' label_lag) over
# stream time, dropped samples, and the DER of every cycle (each file's part of the final RTTM cut out, shifted to 0
# and scored with `whospoke eval` against its reference, collar 0.25 s): memory flat, DER of the last cycle no worse
# than the first, lag not growing. The report goes to stdout (Markdown); with --write-doc it also replaces the
# "Soak report" section of docs/reliability.md. Exits 1 if whospoke fails or the final turns stop before the last
# part. Needs sox and python3.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cycles=4
write_doc=0
files=()
extra=()
while [ $# -gt 0 ]; do
    case $1 in
    --cycles) cycles=$2; shift 2 ;;
    --write-doc) write_doc=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) files+=("$1"); shift ;;
    esac
done
if [ ${#files[@]} -eq 0 ]; then
    files=(/work/shared/eval/dev/dev_*.wav)
fi
[[ $cycles =~ ^[0-9]+$ && $cycles -ge 1 ]] || { echo "soak: --cycles must be a positive integer" >&2; exit 2; }
command -v sox >/dev/null || { echo "soak: sox not found (scripts/install-deps.sh test)" >&2; exit 2; }
bin=${WHOSPOKE_BIN:-$repo/target/release/whospoke}
[ -x "$bin" ] || { echo "soak: $bin missing: run cargo build --release" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/whospoke-soak.XXXXXX")
trap 'rm -rf "$work"' EXIT
for f in "${files[@]}"; do
    stem=$(basename "${f%.*}")
    ref="${f%.*}.rttm"
    [ -f "$ref" ] || { echo "soak: no reference $ref" >&2; exit 2; }
    sox "$f" -t raw -r 16000 -c 1 -e signed-integer -b 16 "$work/$stem.raw"
    cp "$ref" "$work/$stem.ref.rttm"
done

export SOAK_WORK=$work SOAK_CYCLES=$cycles SOAK_BIN=$bin SOAK_REPO=$repo SOAK_WRITE_DOC=$write_doc
export SOAK_FILES="${files[*]}"
exec python3 - "${extra[@]}" <<'PY'
import json, os, subprocess, sys, threading, time, statistics, re

work = os.environ["SOAK_WORK"]
cycles = int(os.environ["SOAK_CYCLES"])
binary = os.environ["SOAK_BIN"]
repo = os.environ["SOAK_REPO"]
files = os.environ["SOAK_FILES"].split()
extra = sys.argv[1:]
SR = 16000

stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
parts = []  # (cycle, stem, offset s, duration s)
off = 0
for c in range(cycles):
    for s in stems:
        n = os.path.getsize(f"{work}/{s}.raw") // 2
        parts.append((c, s, off / SR, n / SR))
        off += n
total_s = off / SR

hyp = f"{work}/hyp.rttm"
cmd = [binary, "-", "--rate", "16000", "--format", "jsonl", "--no-tui", "--rttm", hyp] + extra
t0 = time.time()
p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(f"{work}/stderr.txt", "wb"))

def feed():
    try:
        for c in range(cycles):
            for s in stems:
                with open(f"{work}/{s}.raw", "rb") as fh:
                    while True:
                        b = fh.read(1 << 16)
                        if not b:
                            break
                        p.stdin.write(b)
        p.stdin.close()
    except BrokenPipeError:
        pass

stream_now = [0.0]
rss = []  # (wall s, stream s, RSS MB)
done = threading.Event()

def sample():
    while not done.is_set():
        try:
            with open(f"/proc/{p.pid}/status") as fh:
                m = re.search(r"VmRSS:\s+(\d+) kB", fh.read())
            if m:
                rss.append((time.time() - t0, stream_now[0], int(m.group(1)) / 1024))
        except OSError:
            pass
        done.wait(2.0)

threading.Thread(target=feed, daemon=True).start()
threading.Thread(target=sample, daemon=True).start()
lags = []  # (stream s, label_lag s)
dropped = 0
end_at = None
end_speakers = 0
last_final = 0.0
bad_lines = 0
for line in p.stdout:
    try:
        v = json.loads(line)
    except ValueError:
        bad_lines += 1
        continue
    t = v.get("type")
    if "time" in v:
        stream_now[0] = v["time"]
    if t == "status":
        lags.append((v["time"], v.get("label_lag", 0.0)))
        dropped = max(dropped, v.get("dropped_samples", 0))
    elif t == "turn" and v.get("status") == "final":
        last_final = max(last_final, v["end"])
    elif t == "end":
        end_at = v["time"]
        end_speakers = len(v.get("speakers", []))
rc = p.wait()
wall = time.time() - t0
done.set()

# DER per cycle: cut each part out of the hypothesis, shift it to 0, score all files of a cycle together.
segs = []
with open(hyp) as fh:
    for l in fh:
        f = l.split()
        if len(f) >= 8 and f[0] == "SPEAKER":
            segs.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
refdir = f"{work}/ref"
os.makedirs(refdir, exist_ok=True)
for s in stems:
    # reference files are named after their uri: use the stem
    with open(f"{work}/{s}.ref.rttm") as src, open(f"{refdir}/{s}.rttm", "w") as dst:
        for l in src:
            f = l.split()
            if len(f) >= 8 and f[0] == "SPEAKER":
                f[1] = s
                dst.write(" ".join(f) + "\n")
ders = []
for c in range(cycles):
    d = f"{work}/hyp{c}"
    os.makedirs(d, exist_ok=True)
    for (cc, s, o, dur) in parts:
        if cc != c:
            continue
        with open(f"{d}/{s}.rttm", "w") as out:
            for (a, b, spk) in segs:
                a2, b2 = max(a, o), min(b, o + dur)
                if b2 > a2:
                    out.write(f"SPEAKER {s} 1 {a2 - o:.3f} {b2 - a2:.3f} <NA> <NA> {spk} <NA> <NA>\n")
    js = f"{work}/der{c}.json"
    r = subprocess.run([binary, "eval", refdir, d, "--collar", "0.25", "--json", js],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"soak: whospoke eval failed: {r.stderr}")
    with open(js) as fh:
        rep = json.load(fh)
    ders.append(100.0 * rep["der"])

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))] if xs else float("nan")

ref_speakers = sum(
    len({l.split()[7] for l in open(f"{work}/{s}.ref.rttm") if l.startswith("SPEAKER")}) for s in stems
)
out = []
w = out.append
w(f"Command: `scripts/soak.sh --cycles {cycles}" + (" " + " ".join(extra) if extra else "") + "` "
  f"({len(stems)} files x {cycles} cycles = {total_s:.0f} s = {total_s / 3600:.2f} h of audio), "
  f"run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))}.")
w("")
w(f"- exit status {rc}; wall {wall:.0f} s ({total_s / wall:.1f}x real time); `end` at {end_at} s "
  f"(audio {total_s:.2f} s); last final turn ends at {last_final:.1f} s; dropped samples {dropped}; "
  f"non-JSON stdout lines {bad_lines}; speakers at the end {end_speakers} "
  f"(the {len(stems)} references have {ref_speakers} in all)")
w("")
w("| stream time (s) | RSS (MB) | label lag median / max over the preceding tenth (s) |")
w("|---|---|---|")
for k in range(1, 11):
    hi = total_s * k / 10
    lo = total_s * (k - 1) / 10
    r = [m for (_, st, m) in rss if st <= hi]
    l = [g for (st, g) in lags if lo < st <= hi]
    w(f"| {hi:.0f} | {r[-1] if r else float('nan'):.1f} | "
      f"{statistics.median(l) if l else float('nan'):.2f} / {max(l) if l else float('nan'):.2f} |")
after_first = [m for (_, st, m) in rss if st >= total_s / cycles]
growth = (max(after_first) - after_first[0]) if after_first else float("nan")
w("")
w(f"- RSS: peak {max(m for (_, _, m) in rss):.1f} MB; growth after the first cycle {growth:+.1f} MB")
w("- DER per cycle (collar 0.25 s, each file's part scored against its reference): "
  + ", ".join(f"{d:.2f} %" for d in ders))
report = "\n".join(out)
print(report)

if os.environ.get("SOAK_WRITE_DOC") == "1":
    doc = f"{repo}/docs/reliability.md"
    text = open(doc).read()
    b, e = "<!-- soak-report:begin -->", "<!-- soak-report:end -->"
    if b in text and e in text:
        text = text[: text.index(b) + len(b)] + "\n" + report + "\n" + text[text.index(e):]
        open(doc, "w").write(text)
    else:
        print(f"soak: {doc} has no {b} ... {e} markers; not written", file=sys.stderr)

ok = rc == 0 and end_at is not None and abs(end_at - total_s) < 0.05 and last_final >= parts[-1][2]
sys.exit(0 if ok else 1)
PY
