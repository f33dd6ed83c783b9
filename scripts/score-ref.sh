#!/usr/bin/env bash
# Run the reference DER/JER scorer (shared/eval/score.py, pyannote.metrics) in a cached venv.
#
#   scripts/score-ref.sh REF HYP [score.py args...]     e.g. --collar 0.25 --json out.json
#
# The venv lives at ${WHOSPOKE_CACHE:-$HOME/.cache/whospoke}/scorer and is created on first use.
# score.py is looked up as $REPO/../shared/eval/score.py unless SCORE_PY is set.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
score_py="${SCORE_PY:-$repo/../shared/eval/score.py}"
venv="${WHOSPOKE_CACHE:-$HOME/.cache/whospoke}/scorer"
python="${PYTHON:-python3}"

if [ "$#" -lt 2 ]; then
    echo "usage: $0 REF HYP [--collar S] [--skip-overlap] [--json OUT] [--audio-dir DIR] [--quiet]" >&2
    exit 2
fi
if [ ! -f "$score_py" ]; then
    echo "error: score.py not found at $score_py (set SCORE_PY)" >&2
    exit 2
fi

# Idempotent setup: the marker is written only after a successful install.
if [ ! -f "$venv/.installed" ] || [ ! -x "$venv/bin/python" ]; then
    echo "setting up scorer venv in $venv ..." >&2
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet pyannote.metrics soundfile >&2
    touch "$venv/.installed"
fi

exec "$venv/bin/python" "$score_py" "$@"
