#!/usr/bin/env bash
# Fetch the ONNX Runtime shared library whospoke loads at run time (ort 2.0.0-rc.15 wraps ONNX Runtime 1.31).
#
# Source: the official `onnxruntime==1.31.1` wheel from PyPI (MIT licence), platform manylinux_2_28_x86_64,
# fetched with pip so that the same wheel (and sha256) is used whatever the local Python version is.
# Both the wheel and the extracted library are checked against pinned sha256 sums.
#
# Installs into ${WHOSPOKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/whospoke}/onnxruntime-1.31.1/
#   libonnxruntime.so.1.31.1, libonnxruntime.so -> libonnxruntime.so.1.31.1, LICENSE, ThirdPartyNotices.txt
# and prints the path of libonnxruntime.so. Idempotent: exits 0 at once if a verified library is already there.
#
# Usage: scripts/fetch-onnxruntime.sh [--wheel PATH]   (PATH: an already downloaded copy of the wheel, offline use)
set -euo pipefail

ORT_VERSION=1.31.1
WHEEL_NAME="onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
LIB_NAME="libonnxruntime.so.${ORT_VERSION}"
LIB_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3

CACHE_ROOT="${WHOSPOKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/whospoke}"
DEST="${CACHE_ROOT}/onnxruntime-${ORT_VERSION}"
LIB="${DEST}/${LIB_NAME}"
LINK="${DEST}/libonnxruntime.so"

die() {
    printf 'fetch-onnxruntime: %s\n' "$1" >&2
    cat >&2 <<EOF

To fix this, do one of:
  * install pip for python3 (Debian/Ubuntu: sudo apt-get install python3-pip; Fedora: sudo dnf install python3-pip)
    and make sure https://pypi.org is reachable (or a pip index/proxy is configured), then re-run
    scripts/fetch-onnxruntime.sh;
  * download ${WHEEL_NAME} (sha256 ${WHEEL_SHA256})
    on another machine and run: scripts/fetch-onnxruntime.sh --wheel /path/to/${WHEEL_NAME};
  * or point whospoke at an existing ONNX Runtime 1.31 library:
    export ORT_DYLIB_PATH=/path/to/libonnxruntime.so.1.31.x
EOF
    exit 1
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"
    fi
}

WHEEL=""
while [ $# -gt 0 ]; do
    case "$1" in
        --wheel) [ $# -ge 2 ] || die "--wheel needs a path"; WHEEL="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done

# Already there and verified?
if [ -f "$LIB" ] && [ "$(sha256_of "$LIB")" = "$LIB_SHA256" ]; then
    if [ "$(readlink "$LINK" 2>/dev/null || true)" != "$LIB_NAME" ]; then
        ln -sfn "$LIB_NAME" "$LINK"
    fi
    echo "$LINK"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || die "python3 is not installed."

TMP="$(mktemp -d "${TMPDIR:-/tmp}/whospoke-ort.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

if [ -z "$WHEEL" ]; then
    python3 -m pip --version >/dev/null 2>&1 || die "pip is not available for python3 (python3 -m pip failed)."
    echo "fetch-onnxruntime: downloading onnxruntime==${ORT_VERSION} (${WHEEL_NAME}) with pip" >&2
    if ! python3 -m pip download --no-deps --only-binary=:all: --python-version 311 \
            --platform manylinux_2_28_x86_64 "onnxruntime==${ORT_VERSION}" -d "$TMP" >&2; then
        die "pip download of onnxruntime==${ORT_VERSION} failed (network or index problem?)."
    fi
    WHEEL="${TMP}/${WHEEL_NAME}"
    [ -f "$WHEEL" ] || die "pip did not produce ${WHEEL_NAME} (got: $(ls "$TMP"))."
fi
[ -f "$WHEEL" ] || die "no such file: $WHEEL"

got="$(sha256_of "$WHEEL")"
[ "$got" = "$WHEEL_SHA256" ] || die "wheel checksum mismatch for $WHEEL: expected $WHEEL_SHA256, got $got."

mkdir -p "$DEST" || die "cannot create $DEST"
python3 - "$WHEEL" "$TMP/x" <<'PY' || die "cannot extract the library from $WHEEL."
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for member in ("onnxruntime/capi/libonnxruntime.so.1.31.1", "onnxruntime/LICENSE", "onnxruntime/ThirdPartyNotices.txt"):
        z.extract(member, out)
PY

got="$(sha256_of "$TMP/x/onnxruntime/capi/${LIB_NAME}")"
[ "$got" = "$LIB_SHA256" ] || die "library checksum mismatch: expected $LIB_SHA256, got $got."

# Move into place atomically (same filesystem: copy to a temp name in DEST, then rename).
for f in "capi/${LIB_NAME}:${LIB_NAME}" "LICENSE:LICENSE" "ThirdPartyNotices.txt:ThirdPartyNotices.txt"; do
    src="$TMP/x/onnxruntime/${f%%:*}"
    dst="$DEST/${f##*:}"
    cp "$src" "$dst.tmp.$$" && chmod 0644 "$dst.tmp.$$" && mv -f "$dst.tmp.$$" "$dst" || die "cannot write $dst"
done
ln -sfn "$LIB_NAME" "$LINK" || die "cannot create the symlink $LINK"

echo "fetch-onnxruntime: installed ONNX Runtime ${ORT_VERSION} in $DEST" >&2
echo "$LINK"
