#!/usr/bin/env bash
# Known-speaker naming on the dev set (issue 7's measurement).
#
# Enrolls some LibriSpeech speakers from their reference segments in dev_00..dev_05
# (`whospoke enroll NAME --from-session REF.rttm --speaker LABEL AUDIO`), then diarizes dev_06..dev_11
# (which mix those speakers with never-enrolled ones) with the profiles and measures, on a 10 ms grid
# over single-speaker reference speech:
#   - known: share of enrolled speakers' speech time labelled with their name (of the speech the run
#     detected, and of all of it), identifications applied to earlier turns like a consumer would;
#   - unknown: share of never-enrolled speakers' speech time given an enrolled name;
#   - delay: from each enrolled speaker's first reference turn in a file to the first event showing
#     the name;
#   - calibration: the best-profile similarity of the never-enrolled speakers' embedding windows
#     (from the matcher's debug log), to compare with the match threshold;
#   - DER (collar 0 and 0.25) of the runs with the profiles loaded, from their final turns.
# Targets (issue 7): >= 95 % known, <= 1 % unknown, <= 2 s delay.
#
# Usage: scripts/enroll-eval.sh [DEV_DIR] [-- extra whospoke run options]
# Environment: WHOSPOKE_BIN (default target/release/whospoke); KEEP=DIR keeps the profiles and the
# JSONL outputs in DIR; ENROLL="SPEAKER:FILE ..." and TESTS="FILE ..." choose another split;
# ENROLL_DEV=DIR enrolls from the files of another folder (default DEV_DIR: e.g. enroll from the clean
# dev set and test on far-field copies of the test files).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dev="${1:-$here/../shared/eval/dev}"
shift || true
[[ "${1:-}" == "--" ]] && shift
bin="${WHOSPOKE_BIN:-$here/target/release/whospoke}"
enroll_dev="${ENROLL_DEV:-$dev}"
[[ -x "$bin" ]] || (cd "$here" && cargo build --release --quiet)
if [[ -n "${KEEP:-}" ]]; then
  work="$KEEP"; rm -rf "$work/profiles"; mkdir -p "$work"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
prof="$work/profiles"

# speaker:file it is enrolled from, and the files diarized (ENROLL / TESTS override them: e.g. the
# swapped split ENROLL="ls1998:dev_07 ls2609:dev_07 ls3005:dev_07 ls3080:dev_07 ls533:dev_08"
# TESTS="dev_00 dev_01 dev_02 dev_03 dev_04 dev_05")
read -r -a enroll_from <<< "${ENROLL:-ls1998:dev_01 ls2609:dev_00 ls3005:dev_01 ls3080:dev_03 ls533:dev_00}"
read -r -a tests <<< "${TESTS:-dev_06 dev_07 dev_08 dev_09 dev_10 dev_11}"

known=()
for e in "${enroll_from[@]}"; do
  spk="${e%%:*}"; f="${e#*:}"
  known+=("$spk")
  "$bin" enroll "$spk" --profiles "$prof" --from-session "$enroll_dev/$f.rttm" --speaker "$spk" "$enroll_dev/$f.wav"
done
"$bin" profiles --profiles "$prof"

# The matcher's debug log gives every window's best-profile similarity (for the calibration line),
# the pipeline's the number of CAM++ windows embedded (for the cost line: with profiles loaded, one
# more window per speech region, at 0.75 s; counted against a run without profiles).
for t in "${tests[@]}"; do
  WHOSPOKE_LOG="${WHOSPOKE_LOG:-warn},whospoke::profiles=debug,whospoke::pipeline=debug" \
    "$bin" "$dev/$t.wav" --no-tui --format jsonl --profiles "$prof" "$@" > "$work/$t.jsonl" 2> "$work/$t.log"
  WHOSPOKE_LOG="warn,whospoke::pipeline=debug" \
    "$bin" "$dev/$t.wav" --no-tui --format rttm --no-profiles "$@" > /dev/null 2> "$work/$t.noprofiles.log"
done

mkdir -p "$work/hyp" "$work/ref"
rm -f "$work"/hyp/*.rttm "$work"/ref/*.rttm
for t in "${tests[@]}"; do cp "$dev/$t.rttm" "$work/ref/"; done
python3 - "$dev" "$work" "${known[*]}" "${tests[@]}" <<'EOF'
import json, re, sys
dev, work, known, tests = sys.argv[1], sys.argv[2], set(sys.argv[3].split()), sys.argv[4:]
K = dict(tot=0, det=0, ok=0); U = dict(tot=0, named=0); delays = []
M = dict(head=0, tail=0, inside=0, whole=0)  # known speech with no turn: where in its reference turn
unknown_windows = []  # best-profile similarity of windows of never-enrolled speakers
unknown_means = []  # similarity of the mean of a new voice's evidence windows, when a never-enrolled speaker's
for t in tests:
    ref = []
    for l in open(f"{dev}/{t}.rttm"):
        w = l.split()
        ref.append((float(w[3]), float(w[3]) + float(w[4]), w[7]))
    turns, first = {}, {}
    for l in open(f"{work}/{t}.jsonl"):
        e = json.loads(l); ty = e["type"]; tm = e.get("time", 0.0)
        if ty == "turn":
            first.setdefault(e["speaker"], tm)
            if e["status"] == "final":
                turns[e["id"]] = [e["start"], e["end"], e["speaker"]]
        elif ty == "speaker":
            first.setdefault(e["speaker"], tm)
        elif ty in ("identified", "rename"):
            a, b = (e["speaker"], e["name"]) if ty == "identified" else (e["from"], e["to"])
            first.setdefault(b, tm)
            for x in turns.values():
                if x[2] == a: x[2] = b
    end = max(r[1] for r in ref)
    # A window (its last second) whose reference is one never-enrolled speaker 70 % of the time.
    unknown_now = False
    for l in open(f"{work}/{t}.log"):
        l = re.sub(r"\x1b\[[0-9;]*m", "", l)
        m = re.search(r"new voice's \d+ windows against \S+: mean similarity ([-\d.]+)", l)
        if m and unknown_now:
            unknown_means.append(float(m.group(1)))
        m = re.search(r"new-voice window at ([\d.]+) s .*best \S+ ([-\d.]+)", l)
        if not m: continue
        te, sim = float(m.group(1)), float(m.group(2))
        who = {}
        for i in range(100):
            r = [s for a, b, s in ref if a <= te - 1 + i / 100 < b]
            if len(r) == 1: who[r[0]] = who.get(r[0], 0) + 1
        unknown_now = bool(who) and max(who.values()) >= 70 and max(who, key=who.get) not in known
        if unknown_now:
            unknown_windows.append(sim)
    k = dict(tot=0, det=0, ok=0); u = dict(tot=0, named=0)
    hyp = sorted(turns.values())
    with open(f"{work}/hyp/{t}.rttm", "w") as f:  # final turns under their final labels, for the DER
        for a, b, spk in hyp:
            f.write(f"SPEAKER {t} 1 {a:.3f} {b - a:.3f} <NA> <NA> {spk} <NA> <NA>\n")
    for i in range(int(end * 100)):
        tt = (i + 0.5) / 100
        r = [s for a, b, s in ref if a <= tt < b]
        if len(r) != 1: continue
        h = {s for a, b, s in hyp if a <= tt < b}
        if r[0] in known:
            k["tot"] += 1; k["det"] += bool(h); k["ok"] += r[0] in h
        else:
            u["tot"] += 1; u["named"] += bool(h & known)
    for a, b, spk in ref:
        if spk not in known: continue
        det = []  # per single-speaker tick of the turn: detected?
        for i in range(int(a * 100), int(b * 100)):
            tt = (i + 0.5) / 100
            if a <= tt < b and sum(1 for x, y, _ in ref if x <= tt < y) == 1:
                det.append(any(x <= tt < y for x, y, _ in hyp))
        if det and not any(det):
            M["whole"] += len(det); continue
        hit = [i for i, d in enumerate(det) if d]
        for i, d in enumerate(det):
            if not d: M["head" if i < hit[0] else "tail" if i > hit[-1] else "inside"] += 1
    for d, s in ((K, k), (U, u)):
        for x in s: d[x] += s[x]
    ds = []
    for spk in sorted({s for _, _, s in ref} & known):
        st = min(a for a, _, s in ref if s == spk)
        d = first.get(spk, float("inf")) - st
        ds.append(f"{spk} {d:.2f}s"); delays.append(d)
    pct = lambda a, b: 100.0 * a / max(b, 1)
    print(f"{t}: known named {pct(k['ok'], k['det']):5.1f} % of detected ({pct(k['ok'], k['tot']):5.1f} % of all), "
          f"unknown given a known name {pct(u['named'], u['tot']):4.1f} %, delay: {', '.join(ds)}")
pct = lambda a, b: 100.0 * a / max(b, 1)
delays.sort()
med = delays[len(delays) // 2] if delays else float("nan")
print(f"ALL: known named {pct(K['ok'], K['det']):.1f} % of detected speech ({pct(K['ok'], K['tot']):.1f} % of all "
      f"{K['tot']/100:.0f} s); unknown given a known name {pct(U['named'], U['tot']):.2f} % of {U['tot']/100:.0f} s; "
      f"delay median {med:.2f} s, max {max(delays):.2f} s, within 2 s: {sum(d <= 2 for d in delays)}/{len(delays)}")
print(f"known speech with no turn: {sum(M.values())/100:.1f} s: at the start of its reference turn "
      f"{M['head']/100:.1f} s, at the end {M['tail']/100:.1f} s, inside {M['inside']/100:.1f} s, whole turns {M['whole']/100:.1f} s")
uw = sorted(unknown_windows)
if uw:
    print(f"never-enrolled speakers' windows ({len(uw)}): best-profile similarity median {uw[len(uw) // 2]:.3f}, "
          f"99th percentile {uw[int(0.99 * (len(uw) - 1))]:.3f}, max {uw[-1]:.3f} (match threshold 0.5 by default); "
          f"means of their recent windows: {len(unknown_means)}, max {max(unknown_means, default=float('nan')):.3f}")
def embedded(log):
    # windows = sum over batch sizes b of b x calls (the second session's windows are counted there too)
    n = 0
    for l in open(log):
        l = re.sub(r"\x1b\[[0-9;]*m", "", l)
        m = re.search(r"calls_by_batch_size=\[([0-9, ]*)\]", l)
        if m:
            n += sum((b + 1) * int(c) for b, c in enumerate(m.group(1).split(",")))
    return n
with_p = sum(embedded(f"{work}/{t}.log") for t in tests)
without_p = sum(embedded(f"{work}/{t}.noprofiles.log") for t in tests)
print(f"cost: CAM++ windows embedded {with_p} with the profiles, {without_p} without "
      f"({pct(with_p - without_p, without_p):+.1f} %)")
print("targets: >= 95 % known, <= 1 % unknown, <= 2 s delay")
EOF
# Diarization with the profiles loaded (names do not matter to the DER: speakers are mapped).
for c in 0 0.25; do
  "$bin" eval "$work/ref" "$work/hyp" --collar "$c" --audio-dir "$dev" | grep AGGREGATE | sed "s/^/with profiles: /"
done
