#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) each; exits non-zero if any target finds a
# crash, panic, leak, timeout or out-of-memory input (saved under fuzz/artifacts/<target>/).
#
# Needs cargo-fuzz, installed here if missing (`cargo install cargo-fuzz --locked`, into ~/.cargo/bin, so later runs
# reuse it), and a nightly compiler for -Zsanitizer=address. On a stable-only machine RUSTC_BOOTSTRAP=1 unlocks the
# nightly flags on the stable compiler; this script sets it. Works on a clean clone: corpus directories are created,
# and fuzz/seeds/<target>/ (committed) seeds a target's corpus.
#
#   scripts/fuzz.sh                 all targets, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh decode_file
#   make fuzz-ci                    all targets, fixed seed and fixed run counts, at most 30 s each (part of make test)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${FUZZ_SECONDS:-60}"
# FUZZ_SEED fixes libFuzzer's random seed (make fuzz-ci does, so CI replays the same mutations on a clean clone and a
# red CI run means a regression, not a lucky draw). Unset: a new seed each run, for exploring.
seed_arg=""
[ -n "${FUZZ_SEED:-}" ] && seed_arg="-seed=${FUZZ_SEED}"
# FUZZ_RUNS="target=N ..." caps a target's executions at N (with a fixed seed, the same N inputs on every machine;
# a slower machine that hits FUZZ_SECONDS first runs a prefix of them, so it can never find what this one did not).
runs_for() {
    local t="$1" kv
    for kv in ${FUZZ_RUNS:-}; do
        [ "${kv%%=*}" = "$t" ] && { echo "-runs=${kv#*=}"; return; }
    done
}
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked >&2
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build -O >/dev/null
failed=()
# FUZZ_FRESH=1 (make fuzz-ci): start every target from its committed seeds alone, in a scratch corpus, as a clean
# clone does, so that a local run tries exactly the inputs CI will. Otherwise fuzz/corpus/ grows across runs.
corpus_root=corpus
if [ "${FUZZ_FRESH:-0}" = 1 ]; then
    corpus_root=$(mktemp -d)
    trap 'rm -rf "$corpus_root"' EXIT
fi
for t in "${targets[@]}"; do
    mkdir -p "$corpus_root/$t"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    runs_arg=$(runs_for "$t")
    echo "== $t: ${secs} s${runs_arg:+, ${runs_arg#-runs=} runs}"
    # symphonia-metadata allocates a Vorbis comment's declared length (up to 4 GiB, lazily zeroed, never touched
    # when the file is shorter) before reading it: allow that single allocation rather than report it as an OOM.
    if cargo fuzz run -O "$t" "$corpus_root/$t" "${seeds[@]}" -- -max_total_time="$secs" ${seed_arg} ${runs_arg} -malloc_limit_mb=4200 -rss_limit_mb=2048 \
        -print_final_stats=1 >"/tmp/whospoke-fuzz-$t.log" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units)' "/tmp/whospoke-fuzz-$t.log" || true
    else
        echo "fuzz.sh: $t FAILED; log /tmp/whospoke-fuzz-$t.log:" >&2
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "/tmp/whospoke-fuzz-$t.log" >&2 || tail -20 "/tmp/whospoke-fuzz-$t.log" >&2
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} target(s), ${secs} s each, no crash"
