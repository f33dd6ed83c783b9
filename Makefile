# whospoke: the two commands a newcomer needs.
#   make run    build, then diarize live from the default microphone (or the bundled demo without one)
#   make test   everything CI checks: formatting, lints, unit + integration + end-to-end tests
# Both install what is missing first: Debian packages (scripts/install-deps.sh) and the ONNX Runtime
# library from PyPI's onnxruntime wheel (scripts/fetch-onnxruntime.sh, cached, sha256-pinned).

CARGO ?= cargo
ARGS ?=

.PHONY: run test deps deps-test onnxruntime build bench eval clean-cache fuzz-ci

run: deps onnxruntime build
	./target/release/whospoke $(ARGS)

test: deps-test onnxruntime
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
	$(CARGO) build --release --locked
	$(CARGO) test --release --locked
	$(MAKE) fuzz-ci

deps:
	@bash scripts/install-deps.sh run

deps-test:
	@bash scripts/install-deps.sh test

onnxruntime:
	@bash scripts/fetch-onnxruntime.sh >/dev/null

build:
	$(CARGO) build --release --locked

# Accuracy on the dev set (docs/accuracy.md); needs ../shared/eval.
eval: deps onnxruntime build
	bash scripts/eval-dev.sh

# Performance report (docs/performance.md).
bench: deps-test onnxruntime build
	bash scripts/bench.sh

# Every cargo-fuzz target with a fixed seed and a fixed number of runs (about 20-30 s each here), at most
# FUZZ_SECONDS each: CI replays exactly the inputs a local run tried, so a red run is a regression, never a lucky
# draw (docs/reliability.md, "Fuzzing"); installs cargo-fuzz if missing. Explore with new seeds: scripts/fuzz.sh.
FUZZ_SECONDS ?= 45
FUZZ_SEED ?= 1
FUZZ_RUNS ?= decode_file=25000 decode_raw=1000000 profile_json=600000 read_rttm=60000
fuzz-ci:
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_SEED=$(FUZZ_SEED) FUZZ_RUNS="$(FUZZ_RUNS)" FUZZ_FRESH=1 bash scripts/fuzz.sh
