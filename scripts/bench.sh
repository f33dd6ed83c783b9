#!/usr/bin/env bash
# End-to-end benchmark: builds release, measures file mode, memory, live mode and start-up, runs the criterion
# stage benchmarks, and writes docs/performance.md (each number against its budget from the performance issue).
#
#   scripts/bench.sh                 # full: 3 runs, 1 h long stream, 60 s live      (~10-15 min on 2 cores)
#   BENCH_QUICK=1 scripts/bench.sh   # smoke: 1 run, 10 min long stream, 20 s live   (~3-5 min)
#
# Env: BENCH_RUNS (file-mode runs per thread count; median reported; default 3, quick 1),
#      BENCH_LONG_SECS (long-stream audio seconds; default 3600, quick 600),
#      BENCH_LIVE_SECS (live playback seconds; default 60, quick 20), BENCH_LIVE_FILE (default dev_03.wav),
#      BENCH_THREADS (file-mode --threads values; default "1 2"),
#      BENCH_CRITERION_ARGS (default "--quick"), BENCH_SKIP_LIVE=1, DEV (dev set; default ../shared/eval/dev),
#      BENCH_OUT (report; default docs/performance.md), BENCH_WORK (scratch; default target/bench).
# Needs: cargo, sox/soxi, python3, GNU time (/usr/bin/time; installed with apt-get if missing and possible), and
# for live mode pulseaudio + libasound2-plugins (scripts/testmic.sh; scripts/install-deps.sh installs them).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
quick=${BENCH_QUICK:-0}
if [ "$quick" = 1 ]; then
    runs=${BENCH_RUNS:-1} long_secs=${BENCH_LONG_SECS:-600} live_secs=${BENCH_LIVE_SECS:-20}
else
    runs=${BENCH_RUNS:-3} long_secs=${BENCH_LONG_SECS:-3600} live_secs=${BENCH_LIVE_SECS:-60}
fi
threads_list=${BENCH_THREADS:-"1 2"}
crit_args=${BENCH_CRITERION_ARGS:---quick}
dev=$(cd "${DEV:-$repo/../shared/eval/dev}" 2>/dev/null && pwd) || {
    echo "bench: no dev set at ${DEV:-$repo/../shared/eval/dev} (set DEV=...)" >&2
    exit 1
}
live_file=${BENCH_LIVE_FILE:-$dev/dev_03.wav}
out=${BENCH_OUT:-$repo/docs/performance.md}
work=${BENCH_WORK:-$repo/target/bench}
bin=$repo/target/release/whospoke

log() { echo "bench: $*" >&2; }
die() {
    echo "bench: error: $*" >&2
    exit 1
}
now() { date +%s.%N; }
diff_s() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", a - b }'; }

# ---------------------------------------------------------------------------------------------------------------
# Tools.
for t in cargo sox soxi python3; do
    command -v "$t" >/dev/null 2>&1 || die "'$t' not found (scripts/install-deps.sh installs the system packages)"
done
if [ ! -x /usr/bin/time ]; then
    log "installing GNU time (/usr/bin/time) for peak RSS"
    sudo_cmd=()
    [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get install -y -qq time >/dev/null 2>&1 ||
        { "${sudo_cmd[@]}" apt-get update -qq >/dev/null 2>&1 && "${sudo_cmd[@]}" apt-get install -y -qq time >/dev/null 2>&1; } ||
        die "/usr/bin/time is missing and could not be installed (apt-get install time)"
fi
mapfile -t wavs < <(ls "$dev"/*.wav)
[ ${#wavs[@]} -gt 0 ] || die "no *.wav in $dev"

rm -rf "$work"
mkdir -p "$work"
: >"$work/commands.txt"
cmd() { printf '%s\n' "$*" >>"$work/commands.txt"; }

# ---------------------------------------------------------------------------------------------------------------
# Build.
log "building release"
cmd "cargo build --release"
cargo build --release --quiet
[ -x "$bin" ] || die "no binary at $bin"

# ---------------------------------------------------------------------------------------------------------------
# Machine.
{
    echo "cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "cores=$(nproc)"
    echo "cores_online=$(grep -c '^processor' /proc/cpuinfo)"
    echo "mem_kb=$(awk '/^MemTotal/ {print $2}' /proc/meminfo)"
    echo "os=$( (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") || uname -s), kernel $(uname -r)"
    echo "rustc=$(rustc -V)"
    ort_lib=${ORT_DYLIB_PATH:-}
    if [ -z "$ort_lib" ]; then
        cache=${WHOSPOKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/whospoke}
        ort_lib=$(ls "$cache"/onnxruntime-*/libonnxruntime.so.* "$repo"/.cache/onnxruntime-*/libonnxruntime.so.* 2>/dev/null | head -1 || true)
    fi
    echo "ort_lib=${ort_lib:-not found}"
    echo "ort_pinned=$(sed -n 's/^pub const ORT_VERSION: &str = "\(.*\)";/\1/p' src/runtime.rs)"
    echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "quick=$quick"
    echo "runs=$runs"
    echo "long_secs=$long_secs"
    echo "live_secs=$live_secs"
    echo "dev=$dev"
    echo "live_file=$live_file"
} >"$work/machine.txt"

# Audio durations.
for w in "${wavs[@]}"; do
    printf '%s\t%s\n' "$(basename "$w" .wav)" "$(soxi -D "$w")"
done >"$work/durations.tsv"

# ---------------------------------------------------------------------------------------------------------------
# Sampler: every INTERVAL s while PID lives: wall, utime, stime (ticks), VmRSS, VmHWM (kB), bytes of FILE.
sample_proc() {
    local pid=$1 outf=$2 interval=$3 watch=${4:-/dev/null}
    local stat rest f rss hwm bytes
    while [ -r "/proc/$pid/stat" ]; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || break
        rest=${stat##*) }
        read -ra f <<<"$rest"
        rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        [ -n "$rss" ] || break
        bytes=$(stat -c %s "$watch" 2>/dev/null || echo 0)
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(now)" "${f[11]}" "${f[12]}" "$rss" "$hwm" "$bytes"
        sleep "$interval"
    done >>"$outf"
}

# ---------------------------------------------------------------------------------------------------------------
# File mode: whole process per file, wall time and peak RSS.
log "file mode: ${#wavs[@]} files x $runs run(s) x threads {$threads_list}"
printf 'threads\trun\tfile\twall_s\tmaxrss_kb\trc\n' >"$work/file_runs.tsv"
for th in $threads_list; do
    cmd "for f in $dev/*.wav; do /usr/bin/time -v target/release/whospoke \"\$f\" --format jsonl --no-tui --threads $th > out.jsonl; done   # x $runs, wall per process"
    for r in $(seq 1 "$runs"); do
        for w in "${wavs[@]}"; do
            u=$(basename "$w" .wav)
            t0=$(now)
            rc=0
            /usr/bin/time -v -o "$work/time.txt" "$bin" "$w" --format jsonl --no-tui --threads "$th" \
                >"$work/file_$u.jsonl" 2>"$work/file_$u.err" || rc=$?
            t1=$(now)
            rss=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' "$work/time.txt")
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$th" "$r" "$u" "$(diff_s "$t1" "$t0")" "${rss:-0}" "$rc" \
                >>"$work/file_runs.tsv"
            [ "$rc" = 0 ] || log "WARNING: $u (threads $th) exited with $rc: $(tail -2 "$work/file_$u.err")"
        done
        log "  threads $th run $r done"
    done
done
rm -f "$work"/file_*.jsonl

# ---------------------------------------------------------------------------------------------------------------
# Memory over a long stream: dev files looped, raw s16le on stdin, as fast as possible.
total=$(awk '{s += $2} END {printf "%.3f", s}' "$work/durations.tsv")
reps=$(python3 -c "import math; print(max(0, math.ceil($long_secs / $total) - 1))")
interval=5
[ "$quick" = 1 ] && interval=2
log "long stream: $long_secs s of audio through stdin (dev set x $((reps + 1)), RSS every $interval s)"
cmd "sox $dev/dev_*.wav -t raw -r 16000 -e signed-integer -b 16 -c 1 -L - repeat $reps trim 0 $long_secs | target/release/whospoke - --rate 16000 --format jsonl --no-tui > long.jsonl   # RSS from /proc/PID/status every $interval s"
: >"$work/long_samples.tsv"
t0=$(now)
sox "${wavs[@]}" -t raw -r 16000 -e signed-integer -b 16 -c 1 -L - repeat "$reps" trim 0 "$long_secs" 2>"$work/long_sox.err" |
    "$bin" - --rate 16000 --format jsonl --no-tui >"$work/long.jsonl" 2>"$work/long.err" &
long_pid=$!
sample_proc "$long_pid" "$work/long_samples.tsv" "$interval" "$work/long.jsonl" </dev/null >/dev/null 2>&1 &
sampler=$!
long_rc=0
wait "$long_pid" || long_rc=$?
t1=$(now)
wait "$sampler" 2>/dev/null || true
printf 'audio_s=%s\nwall_s=%s\nrc=%s\n' "$long_secs" "$(diff_s "$t1" "$t0")" "$long_rc" >"$work/long_meta.txt"
[ "$long_rc" = 0 ] || log "WARNING: long stream exited with $long_rc: $(tail -2 "$work/long.err")"

# ---------------------------------------------------------------------------------------------------------------
# Live mode through the file-backed microphone.
live_status=skipped
if [ "${BENCH_SKIP_LIVE:-0}" != 1 ]; then
    log "live mode: first $live_secs s of $(basename "$live_file") through the file-backed microphone"
    sox "$live_file" "$work/live_input.wav" trim 0 "$live_secs"
    cmd "sox $live_file live.wav trim 0 $live_secs"
    cmd "eval \"\$(scripts/testmic.sh start live.wav)\""
    cmd "target/release/whospoke --device testmic --format jsonl --no-tui > live.jsonl &   # CPU from /proc/PID/stat every 0.5 s; SIGINT $live_secs s + 3 s after the start event"
    cmd "scripts/testmic.sh stop"
    live_status=$(
        (
            set -euo pipefail
            if ! mic_env=$("$repo/scripts/testmic.sh" start "$work/live_input.wav" 2>"$work/testmic.err"); then
                echo "failed: testmic did not start: $(tail -1 "$work/testmic.err")"
                exit 0
            fi
            eval "$mic_env"
            # shellcheck disable=SC2317
            cleanup() { "$repo/scripts/testmic.sh" stop "$TESTMIC_DIR" >/dev/null 2>&1 || true; }
            trap cleanup EXIT
            : >"$work/live_samples.tsv"
            t_launch=$(now)
            "$bin" --device "$TESTMIC_DEVICE" --format jsonl --no-tui >"$work/live.jsonl" 2>"$work/live.err" &
            pid=$!
            sample_proc "$pid" "$work/live_samples.tsv" 0.5 </dev/null >/dev/null 2>&1 &
            sampler=$!
            t_start=""
            for _ in $(seq 1 300); do
                if grep -q '"type":"start"' "$work/live.jsonl" 2>/dev/null; then
                    t_start=$(now)
                    break
                fi
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if [ -z "$t_start" ]; then
                kill -INT "$pid" 2>/dev/null || true
                wait "$pid" 2>/dev/null || true
                echo "failed: no start event: $(tail -2 "$work/live.err" | tr '\n' ' ')"
                exit 0
            fi
            sleep "$(awk -v s="$live_secs" 'BEGIN { print s + 3 }')"
            t_sigint=$(now)
            kill -INT "$pid" 2>/dev/null || true
            rc=0
            wait "$pid" || rc=$?
            t_exit=$(now)
            wait "$sampler" 2>/dev/null || true
            printf 't_launch=%s\nt_start=%s\nt_sigint=%s\nt_exit=%s\nrc=%s\n' \
                "$t_launch" "$t_start" "$t_sigint" "$t_exit" "$rc" >"$work/live_meta.txt"
            echo ok
        ) 2>>"$work/live_shell.err"
    ) || live_status="failed: see $work/live_shell.err"
    log "  live: $live_status"
fi
echo "$live_status" >"$work/live_status.txt"

# ---------------------------------------------------------------------------------------------------------------
# Start-up: a 1 s file; whole-process wall time and time to the `start` event on stdout.
log "start-up: 5 runs on a 1 s file"
sox "${wavs[0]}" "$work/one_second.wav" trim 0 1
cmd "sox ${wavs[0]} one_second.wav trim 0 1; target/release/whospoke one_second.wav --format jsonl --no-tui   # x 5, stdout lines timestamped"
python3 - "$bin" "$work/one_second.wav" >"$work/startup.tsv" <<'EOF'
import subprocess, sys, time
binary, wav = sys.argv[1], sys.argv[2]
print("run\twhole_s\tstart_event_s\trc")
for run in range(1, 6):
    t0 = time.monotonic()
    p = subprocess.Popen([binary, wav, "--format", "jsonl", "--no-tui"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    t_start = None
    for line in p.stdout:
        if t_start is None and b'"type":"start"' in line:
            t_start = time.monotonic() - t0
    rc = p.wait()
    whole = time.monotonic() - t0
    print(f"{run}\t{whole:.4f}\t{t_start if t_start is not None else 'nan'}\t{rc}")
EOF

# ---------------------------------------------------------------------------------------------------------------
# Criterion stage benchmarks.
log "criterion stage benchmarks (cargo bench --bench stages -- $crit_args)"
cmd "cargo bench --bench stages -- $crit_args"
crit_rc=0
# shellcheck disable=SC2086
CRITERION_HOME="$work/criterion" cargo bench --quiet --bench stages -- $crit_args \
    >"$work/criterion.out" 2>"$work/criterion.err" || crit_rc=$?
[ "$crit_rc" = 0 ] || log "WARNING: criterion exited with $crit_rc (see $work/criterion.err)"

# ---------------------------------------------------------------------------------------------------------------
# Report.
log "writing $out"
mkdir -p "$(dirname "$out")"
python3 - "$work" "$out" <<'EOF'
import glob, json, math, os, re, statistics, sys

work, out_path = sys.argv[1], sys.argv[2]
W = lambda name: os.path.join(work, name)

def kv(name):
    d = {}
    if os.path.exists(W(name)):
        for line in open(W(name)):
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                d[k] = v
    return d

def tsv(name):
    if not os.path.exists(W(name)):
        return []
    lines = [l.rstrip("\n").split("\t") for l in open(W(name)) if l.strip()]
    if not lines:
        return []
    head, rows = lines[0], lines[1:]
    return [dict(zip(head, r)) for r in rows]

def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

def verdict(ok):
    return "n/a" if ok is None else ("PASS" if ok else "**FAIL**")

def fmt_t(ns):
    if ns != ns:
        return "n/a"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"

m = kv("machine.txt")
quick = m.get("quick") == "1"
commands = [l.rstrip("\n") for l in open(W("commands.txt"))]
durs = {r[0]: float(r[1]) for r in (l.split("\t") for l in open(W("durations.tsv")).read().splitlines())}
audio_total = sum(durs.values())
budgets = []  # (what, measured, budget, verdict)

L = []
P = L.append
P("# Performance")
P("")
P("Generated by `scripts/bench.sh` (`make bench`); do not edit by hand." + (
    " **Smoke run (`BENCH_QUICK=1`): 1 run, short long-stream and live sections; numbers are indicative only.**"
    if quick else ""))
P("")
P("## Machine")
P("")
mem_gb = int(m.get("mem_kb", "0") or 0) / 1024 / 1024
P(f"- CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores available")
P(f"- Memory: {mem_gb:.1f} GiB")
P(f"- OS: {m.get('os', '?')}")
P(f"- Rust: {m.get('rustc', '?')}")
ort_lib = m.get("ort_lib", "")
ort_v = re.search(r"\.so\.([0-9.]+)$", ort_lib)
P(f"- ONNX Runtime: {ort_v.group(1) if ort_v else '?'} (`{ort_lib}`; pinned {m.get('ort_pinned', '?')})")
P(f"- whospoke: commit {m.get('commit', '?')}, measured {m.get('date', '?')}")
P(f"- Dev set: {len(durs)} files, {audio_total:.1f} s of audio (`{m.get('dev')}`)")
P("")
P("Other processes may share the machine while the benchmark runs; rerun `make bench` on a quiet machine for the")
P("numbers of record.")
P("")

# ---------------------------------------------------------------------------------------------------------------
# Criterion (needed for the stage shares).
crit = {}
for bj in glob.glob(os.path.join(work, "criterion", "**", "new", "benchmark.json"), recursive=True):
    try:
        meta = json.load(open(bj))
        est = json.load(open(os.path.join(os.path.dirname(bj), "estimates.json")))
        crit[meta["full_id"]] = est["median"]["point_estimate"]
    except (OSError, ValueError, KeyError):
        pass
cerr = open(W("criterion.err")).read() if os.path.exists(W("criterion.err")) else ""
mm = re.search(r"stages: audio (.*?): ([0-9.]+) s, ([0-9]+) % speech, ([0-9]+) windows", cerr)
win_per_s = (int(mm.group(4)) / float(mm.group(2))) if mm else 2.0
mspk = re.search(r"clustering against ([0-9]+) speakers", cerr)
C = lambda name: crit.get("stage/" + name, float("nan"))

# ---------------------------------------------------------------------------------------------------------------
P("## File mode: real-time factor")
P("")
runs = tsv("file_runs.tsv")
threads = sorted({int(r["threads"]) for r in runs})
summary = {}
for th in threads:
    rs = [r for r in runs if int(r["threads"]) == th]
    per_run = {}
    for r in rs:
        per_run.setdefault(int(r["run"]), []).append(r)
    rtfs = [sum(float(x["wall_s"]) for x in v) / audio_total for v in per_run.values()]
    fails = [r for r in rs if r["rc"] != "0"]
    summary[th] = (statistics.median(rtfs), rtfs, max(int(r["maxrss_kb"]) for r in rs), fails)
P(f"Whole process per file (decode, model load, pipeline, output), summed over the {len(durs)} dev files and divided")
P(f"by their total duration; median of {m.get('runs')} run(s). `--threads` = ONNX Runtime intra-op threads; 1 is the")
P("default configuration.")
P("")
P("| mode | RTF (median) | runs | x real time | budget | |")
P("|---|---|---|---|---|---|")
for th, (med, rtfs, _, fails) in summary.items():
    default = th == 1
    ok = med <= 0.02
    P(f"| file, `--threads {th}`{' (default)' if default else ''} | {med:.4f} | {', '.join(f'{x:.4f}' for x in rtfs)} | "
      f"{1 / med:.0f}x | ≤ 0.02 | {verdict(ok)} |")
    if default:
        budgets.append(("File mode RTF (default config, `--threads 1`)", f"{med:.4f}", "≤ 0.02", verdict(ok)))
    if fails:
        P(f"| | {len(fails)} process(es) FAILED: {', '.join(sorted({f['file'] for f in fails}))} | | | | |")
P("")
if threads:
    th0 = threads[0]
    P(f"Per file (`--threads {th0}`, median wall over runs):")
    P("")
    P("| file | audio s | wall s | RTF | peak RSS MB |")
    P("|---|---|---|---|---|")
    for u in sorted(durs):
        rs = [r for r in runs if int(r["threads"]) == th0 and r["file"] == u]
        if not rs:
            continue
        wall = statistics.median(float(r["wall_s"]) for r in rs)
        rss = max(int(r["maxrss_kb"]) for r in rs) / 1024
        P(f"| {u} | {durs[u]:.1f} | {wall:.2f} | {wall / durs[u]:.4f} | {rss:.0f} |")
    P("")

# Stage shares (from criterion).
P("### Share of time per stage (estimated from the stage benchmarks)")
P("")
if crit:
    P("Stage cost per second of audio (criterion medians, below) times the dev set's duration, against the measured")
    P(f"whole-process time. Embedding windows per second of audio: {win_per_s:.2f} (counted on the benchmark's audio,")
    P("default 1.5 s window / 0.5 s step, inside VAD speech only). The dev files are 16 kHz mono, so resampling is a")
    P("pass-through in file mode (its cost below applies to a 48 kHz stereo microphone). The stages run on different")
    P("threads and overlap in time, so the shares are of CPU work, not of wall time; \"other\" is what the stage")
    P("benchmarks do not cover (decoding, model loading, process start, output, waiting).")
    P("")
    for th in threads:
        suffix = "" if th == 1 else "_threads2" if th == 2 else None
        emb_w = C(f"embed_campplus/window_1.5s{suffix}") if suffix is not None else float("nan")
        stages = [
            ("VAD (webrtc-vad + smoother)", C("vad_webrtc_smoother/1s_audio")),
            ("fbank (streaming) + window features", C("fbank_streaming/1s_audio")),
            (f"CAM++ embedding ({win_per_s:.2f} windows/s)", emb_w * win_per_s),
            ("turns (clustering, labels, events)", C("turns_tracker/1s_audio")),
            ("ring hand-offs (input ring at 16 kHz mono ≈ 1/6 of the 48 kHz stereo benchmark; VAD frames)",
             C("ring_input_48k_stereo_f32/1s_audio") / 6 + C("ring_vad_frames/1s_audio")),
        ]
        med = summary[th][0]
        wall_per_s = med * 1e9  # ns of wall time per second of audio
        P(f"`--threads {th}` (measured {fmt_t(wall_per_s)} per second of audio):")
        P("")
        P("| stage | per 1 s of audio | share of measured time |")
        P("|---|---|---|")
        tot = 0.0
        for name, ns in stages:
            if ns == ns:
                tot += ns
            P(f"| {name} | {fmt_t(ns)} | {100 * ns / wall_per_s:.1f} % |")
        P(f"| **sum of stages** | {fmt_t(tot)} | {100 * tot / wall_per_s:.1f} % |")
        P(f"| other | {fmt_t(wall_per_s - tot)} | {100 * (wall_per_s - tot) / wall_per_s:.1f} % |")
        P("")
        floor = emb_w * win_per_s
        if floor == floor:
            P(f"Floor (model inference alone): {fmt_t(floor)} per second of audio = RTF {floor / 1e9:.4f}; the whole")
            P(f"process takes {med / (floor / 1e9):.2f}x the floor.")
            P("")
else:
    P("No criterion results (see the stage benchmarks section).")
    P("")

# ---------------------------------------------------------------------------------------------------------------
P("## Memory")
P("")
all_file_rss = max((int(r["maxrss_kb"]) for r in runs), default=0) / 1024
P(f"Peak RSS of a file run (`/usr/bin/time -v`, \"Maximum resident set size\"), largest over every file and run:")
P(f"**{all_file_rss:.0f} MB** (budget ≤ 150 MB: {verdict(all_file_rss <= 150)}).")
budgets.append(("Peak RSS, file mode", f"{all_file_rss:.0f} MB", "≤ 150 MB", verdict(all_file_rss <= 150)))
P("")
lm = kv("long_meta.txt")
samples = []
for l in open(W("long_samples.tsv")).read().splitlines() if os.path.exists(W("long_samples.tsv")) else []:
    f = l.split("\t")
    if len(f) == 6 and f[3]:
        samples.append((float(f[0]), int(f[3]), int(f[4] or 0), int(f[5] or 0)))
long_audio = float(lm.get("audio_s", "0") or 0)
P(f"### Long stream ({long_audio / 60:.0f} min of audio through stdin, faster than real time)")
P("")
if samples and long_audio > 0:
    # Stream position at each sample: the newest event time in the output written so far.
    times = []  # (byte offset after line, stream time)
    off = 0
    with open(W("long.jsonl"), "rb") as fh:
        for line in fh:
            off += len(line)
            try:
                t = json.loads(line).get("time")
            except ValueError:
                t = None
            if isinstance(t, (int, float)):
                times.append((off, float(t)))
    import bisect
    offs = [o for o, _ in times]
    def pos(b):
        i = bisect.bisect_right(offs, b) - 1
        return times[i][1] if i >= 0 else 0.0
    pts = [(ts - samples[0][0], pos(b), rss / 1024, hwm / 1024) for ts, rss, hwm, b in samples]
    wall = float(lm.get("wall_s", "nan"))
    P(f"`whospoke -` on the dev set looped (raw s16le from sox); {long_audio:.0f} s of audio processed in {wall:.0f} s")
    P(f"(RTF {wall / long_audio:.4f}); exit status {lm.get('rc')}. VmRSS sampled from /proc/PID/status every few")
    P("seconds; stream position = newest event time on stdout at the moment of the sample.")
    P("")
    P("| at | stream time | wall s | RSS MB |")
    P("|---|---|---|---|")
    def at(frac):
        target = frac * long_audio
        cand = [p for p in pts if p[1] >= target]
        return cand[0] if cand else pts[-1]
    marks = [("10 %", at(0.10)), ("50 %", at(0.50)), ("100 % (last sample)", pts[-1])]
    for name, p in marks:
        P(f"| {name} | {p[1]:.0f} s | {p[0]:.0f} | {p[2]:.1f} |")
    first, last = marks[0][1], marks[2][1]
    growth = last[2] - first[2]
    span_h = max(last[1] - first[1], 1e-9) / 3600
    per_h = growth / span_h
    peak = max(p[3] for p in pts)
    P("")
    P(f"Growth after warm-up (RSS at 100 % − RSS at 10 %): **{growth:+.1f} MB** over {span_h * 60:.0f} min of audio = "
      f"**{per_h:+.1f} MB/h**{' (extrapolated)' if span_h < 0.99 else ''}; peak RSS (VmHWM) {peak:.0f} MB;")
    P(f"min/max sampled RSS after warm-up {min(p[2] for p in pts if p[1] >= first[1]):.1f} / "
      f"{max(p[2] for p in pts if p[1] >= first[1]):.1f} MB ({len(pts)} samples).")
    budgets.append(("RSS growth over a long stream", f"{per_h:+.1f} MB/h" + (" (extrapolated)" if span_h < 0.99 else ""),
                    "≤ 10 MB/h", verdict(per_h <= 10)))
    budgets.append(("Peak RSS, long stream", f"{peak:.0f} MB", "≤ 150 MB", verdict(peak <= 150)))
else:
    P("No samples (the long-stream run failed; see target/bench/long.err).")
P("")

# ---------------------------------------------------------------------------------------------------------------
P("## Live mode (file-backed microphone)")
P("")
live_status = open(W("live_status.txt")).read().strip() if os.path.exists(W("live_status.txt")) else "skipped"
if live_status != "ok":
    P(f"Not measured: {live_status}.")
    budgets.append(("Live CPU (average)", "not measured", "≤ 15 % of a core", "n/a"))
else:
    lm = kv("live_meta.txt")
    t_launch, t_start, t_sigint, t_exit = (float(lm[k]) for k in ("t_launch", "t_start", "t_sigint", "t_exit"))
    ls = []
    for l in open(W("live_samples.tsv")).read().splitlines():
        f = l.split("\t")
        if len(f) == 6 and f[1]:
            ls.append((float(f[0]), int(f[1]) + int(f[2]), int(f[3]), int(f[4] or 0)))
    hz = os.sysconf("SC_CLK_TCK")
    steady = [s for s in ls if t_start <= s[0] <= t_sigint]
    if len(steady) >= 2:
        avg = 100 * (steady[-1][1] - steady[0][1]) / hz / (steady[-1][0] - steady[0][0])
        # Peak over ~1 s windows: each sample against the newest sample at least 1 s before it.
        peaks = []
        k = 0
        for i in range(len(steady)):
            while k + 1 < i and steady[i][0] - steady[k + 1][0] >= 1.0:
                k += 1
            if i > k and steady[i][0] - steady[k][0] >= 0.9:
                peaks.append(100 * (steady[i][1] - steady[k][1]) / hz / (steady[i][0] - steady[k][0]))
        peak = max(peaks) if peaks else float("nan")
    else:
        avg = peak = float("nan")
    startup_cpu = 100 * ls[-1][1] / hz if ls else float("nan")
    hwm = max((s[3] for s in ls), default=0) / 1024
    events = []
    for line in open(W("live.jsonl")):
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    end = [e for e in events if e.get("type") == "end"]
    dropped_events = [e for e in events if e.get("type") == "dropped"]
    dropped = end[-1].get("dropped_samples") if end else None
    audio_s = end[-1]["time"] if end else float("nan")
    secs = float(m.get("live_secs", "nan"))
    P(f"The first {secs:.0f} s of `{os.path.basename(m.get('live_file', ''))}` played in real time through")
    P("`scripts/testmic.sh` (ALSA `file` plugin paced by a PulseAudio null sink; device opened by whospoke at its")
    P("default 48 kHz stereo f32); whospoke stopped with SIGINT 3 s after the audio. CPU = utime + stime of the process")
    P("from /proc/PID/stat, sampled every 0.5 s, from the `start` event to SIGINT (model loading excluded; 100 % =")
    P("one core).")
    P("")
    P(f"- Start event {t_start - t_launch:.2f} s after launch; stream time at the end {audio_s:.2f} s; exit status {lm.get('rc')}.")
    P(f"- CPU: **average {avg:.1f} %**, peak {peak:.1f} % (1 s windows) of one core; whole process incl. start-up "
      f"{startup_cpu / 100:.2f} CPU-s.")
    P(f"- Peak RSS (VmHWM): {hwm:.0f} MB.")
    P(f"- Dropped audio: **{dropped if dropped is not None else 'unknown'} samples** (`end` event), "
      f"{len(dropped_events)} `dropped` event(s).")
    P("")
    budgets.append(("Live CPU (average, one core)", f"{avg:.1f} % (peak {peak:.1f} %)", "≤ 15 %", verdict(avg <= 15)))
    budgets.append(("Live dropped audio", f"{dropped} samples, {len(dropped_events)} events", "0",
                    verdict(dropped == 0 and not dropped_events) if dropped is not None else "n/a"))
    budgets.append(("Peak RSS, live", f"{hwm:.0f} MB", "≤ 150 MB", verdict(hwm <= 150)))

    P("### Label latency")
    P("")
    P("**Algorithmic part** (stream time, imposed by the window, step, VAD smoothing and finalisation delay): for every")
    P("`turn` event, `time` − `end` (how far behind the newest audio the labelled stretch ends when the label is")
    P("emitted), and for the first event of each turn, `time` − `start` (how long after speech starts it is labelled).")
    P("")
    P("| events | n | p50 | p95 | max |")
    P("|---|---|---|---|---|")
    turns = [e for e in events if e.get("type") == "turn"]
    rows = []
    for st in ("tentative", "final"):
        xs = [e["time"] - e["end"] for e in turns if e.get("status") == st]
        rows.append((f"{st}: time − end", xs))
    seen, onset = set(), []
    for e in turns:
        if e["id"] not in seen:
            seen.add(e["id"])
            onset.append(e["time"] - e["start"])
    rows.append(("first event of a turn: time − start", onset))
    lag = [e["label_lag"] for e in events if e.get("type") == "status" and e.get("speech")]
    rows.append(("`status.label_lag` while speech", lag))
    for name, xs in rows:
        if xs:
            P(f"| {name} | {len(xs)} | {pct(xs, 50):.2f} s | {pct(xs, 95):.2f} s | {max(xs):.2f} s |")
        else:
            P(f"| {name} | 0 | | | |")
    P("")
    P("**Processing part** (wall clock from a sample entering the capture callback to its label leaving the process):")
    P("not measurable from outside the process; it needs an instrumented wall-clock timestamp on each event.")
    P("")
    P("> TODO(processing latency): add a `wall` field (capture-callback time of the newest sample behind the event) to")
    P("> the JSONL events, then report p50/p95/max of (emission wall time − `wall`) here against the 50 ms budget.")
    P("")
budgets.append(("Live processing latency p95", "not measured (TODO: needs a `wall` field)", "≤ 50 ms", "n/a"))

# ---------------------------------------------------------------------------------------------------------------
P("## Start-up")
P("")
st = tsv("startup.tsv")
if st:
    whole = [float(r["whole_s"]) for r in st]
    first = [float(r["start_event_s"]) for r in st if r["start_event_s"] != "nan"]
    P("A 1 s file, 5 runs (medians): launch to the `start` event on stdout (emitted once the models are loaded and the")
    P("pipeline threads run, just before the first audio is processed), read with timestamps by the parent; and the")
    P("whole process (launch to exit, 1 s of audio processed), an upper bound.")
    P("")
    s_med = statistics.median(first) if first else float("nan")
    w_med = statistics.median(whole)
    P(f"- launch → `start` event: **{s_med * 1000:.0f} ms** (runs: {', '.join(f'{x * 1000:.0f}' for x in first)} ms)")
    P(f"- whole process, 1 s file: {w_med * 1000:.0f} ms (runs: {', '.join(f'{x * 1000:.0f}' for x in whole)} ms)")
    budgets.append(("Start-up to first audio processed (`start` event)", f"{s_med * 1000:.0f} ms", "≤ 1 s",
                    verdict(s_med <= 1.0) if first else "n/a"))
    budgets.append(("Start-up, whole 1 s file (upper bound)", f"{w_med * 1000:.0f} ms", "≤ 1 s", verdict(w_med <= 1.0)))
P("")

# ---------------------------------------------------------------------------------------------------------------
P("## Stage benchmarks (criterion)")
P("")
if crit:
    P("`benches/stages.rs`: each `/1s_audio` benchmark processes exactly one second of real audio (`dev_00.wav`) per")
    P("iteration; medians of criterion's samples. Share = cost per second of audio / measured whole-process time per")
    P(f"second of audio (file mode, `--threads {threads[0] if threads else 1}`).")
    if mm:
        P(f"Benchmark audio: {mm.group(1)}, {float(mm.group(2)):.0f} s, {mm.group(3)} % speech, {mm.group(4)} windows"
          + (f"; clustering against {mspk.group(1)} speakers." if mspk else "."))
    P("")
    wall_per_s = summary[threads[0]][0] * 1e9 if threads else float("nan")
    P("| benchmark | median | per 1 s of audio | share |")
    P("|---|---|---|---|")
    order = ["resample_48k_stereo_to_16k_mono/1s_audio", "vad_webrtc_smoother/1s_audio", "fbank_streaming/1s_audio",
             "embed_campplus/window_1.5s", "embed_campplus/1s_audio", "embed_campplus/window_1.5s_threads2",
             "embed_campplus/1s_audio_threads2", "cluster_assign_2_windows/1s_audio", "turns_tracker/1s_audio",
             "ring_input_48k_stereo_f32/1s_audio", "ring_vad_frames/1s_audio"]
    names = order + sorted(k[len("stage/"):] for k in crit if k[len("stage/"):] not in order)
    for n in names:
        ns = C(n)
        if ns != ns:
            continue
        if n.startswith("embed_campplus/window"):
            per_s = ns * win_per_s
            note = f" (× {win_per_s:.2f} windows/s)"
        else:
            per_s, note = ns, ""
        P(f"| `{n}` | {fmt_t(ns)} | {fmt_t(per_s)}{note} | {100 * per_s / wall_per_s:.1f} % |")
    P("")
    P("`cluster_assign` is part of `turns_tracker` (the turn tracker calls the clusterer). Not benchmarked yet: the")
    P("segmentation window (no segmentation stage exists yet).")
else:
    P(f"Criterion did not produce results; see `{W('criterion.err')}`.")
P("")

# ---------------------------------------------------------------------------------------------------------------
P("## Budgets")
P("")
P("| budget | measured | limit | |")
P("|---|---|---|---|")
for what, got, lim, v in budgets:
    P(f"| {what} | {got} | {lim} | {v} |")
P("")

P("## Commands")
P("")
P("```")
P("scripts/bench.sh" + ("   # BENCH_QUICK=1" if quick else ""))
P("```")
P("")
P("which ran (scratch files in `target/bench/`):")
P("")
P("```")
for c in commands:
    P(c)
P("```")
open(out_path, "w").write("\n".join(L) + "\n")
EOF
log "done: $out"
