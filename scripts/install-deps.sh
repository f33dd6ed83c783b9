#!/usr/bin/env bash
# Installs the Debian packages needed to build and test whospoke. Idempotent: installs only what is missing,
# runs `apt-get update` only when something is missing. Works as root or through sudo.
#
#   libasound2-dev pkg-config     build cpal (ALSA)
#   sox espeak-ng                 generate and convert test audio
#   pulseaudio pulseaudio-utils   the file-backed test microphone (scripts/testmic.sh)
#   libasound2-plugins            ALSA "pulse" plugin used by the test microphone
#   tmux python3-venv             TUI tests, evaluation scripts
set -euo pipefail

# `install-deps.sh run` installs only what building and running needs; `test` (the default) everything.
PACKAGES=(libasound2-dev pkg-config)
if [ "${1:-test}" != run ]; then
    PACKAGES+=(sox espeak-ng pulseaudio pulseaudio-utils libasound2-plugins tmux python3-venv time bc)
fi

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: this script needs a Debian/Ubuntu system (dpkg + apt-get); install by hand: ${PACKAGES[*]}" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    if [ "$status" != "installed" ]; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all packages present (${PACKAGES[*]})"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "install-deps: missing packages: ${missing[*]}; not root and no sudo: install them by hand" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: done"
