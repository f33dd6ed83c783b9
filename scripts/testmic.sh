#!/usr/bin/env bash
# A file-backed, real-time paced microphone for machines without sound hardware
# (see docs: /work/shared/notes/file-backed-mic.md).
#
#   eval "$(scripts/testmic.sh start AUDIO_FILE [--format RATE:CHANNELS:ENC])"   # any format sox reads
#   whospoke --device testmic ...                    # or cpal id "alsa:testmic"
#   scripts/testmic.sh stop                          # uses $TESTMIC_DIR (set by start), or: stop DIR
#   scripts/testmic.sh unplug|crash [DIR] / replug [DIR [AUDIO_FILE]]   # device loss and return (tests/device_loss.rs)
#
# `start` converts AUDIO_FILE to raw PCM in a private temp dir, writes a PulseAudio script with a null sink (which
# paces the stream in real time) and an ALSA config defining pcm `testmic` (the ALSA `file` plugin reading the raw
# file, slaved to the sink's monitor), starts a private PulseAudio (private XDG_RUNTIME_DIR and XDG_CONFIG_HOME:
# nothing global changes) and prints `export` lines to eval. Every open of the device starts at the file's beginning.
#
# The file plugin hands out the raw bytes in whatever format the program opens the device with, so the raw file must
# be written in that format: --format RATE:CHANNELS:ENC (ENC = s16, s32 or f32; little-endian). The default,
# 48000:2:f32, is what cpal (and so whospoke) opens by default on this device; 16000:1:s16 is the format of the
# classic recipe (open the device explicitly as 16 kHz mono i16 to read it bit-exactly).
set -euo pipefail

die() {
    echo "testmic: $*" >&2
    exit 1
}

usage() {
    cat >&2 <<'EOF'
usage: scripts/testmic.sh start AUDIO_FILE [--format RATE:CHANNELS:ENC]
                                              start the test microphone; prints export lines to eval
                                              (default format 48000:2:f32, cpal's default config for it)
       scripts/testmic.sh stop [DIR]          stop it (DIR defaults to $TESTMIC_DIR)
       scripts/testmic.sh unplug [DIR]        make the device disappear (stop its sound server, keep DIR)
       scripts/testmic.sh crash [DIR]         the same, but the server is killed (SIGKILL)
       scripts/testmic.sh replug [DIR [FILE]] bring it back (restart the server); the device then plays
                                              FILE if given (else the same file again) from its beginning
EOF
    exit 2
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found; run scripts/install-deps.sh"
}

# Starts the private PulseAudio of test microphone DIR and waits until it answers.
launch() {
    local dir=$1
    local runtime=$dir/runtime
    local config=$dir/config
    if ! XDG_RUNTIME_DIR=$runtime XDG_CONFIG_HOME=$config HOME=$dir \
        pulseaudio -n -F "$dir/default.pa" --system=false --exit-idle-time=-1 --daemonize=yes \
        --use-pid-file=yes --disallow-module-loading=no --log-target="file:$dir/pulse.log" 2>>"$dir/pulse.log"; then
        cat "$dir/pulse.log" >&2 || true
        return 1
    fi
    for _ in $(seq 1 100); do
        if XDG_RUNTIME_DIR=$runtime XDG_CONFIG_HOME=$config HOME=$dir pactl info >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    cat "$dir/pulse.log" >&2 || true
    echo "testmic: pulseaudio started but 'pactl info' does not answer" >&2
    return 1
}

# Stops the private PulseAudio of test microphone DIR (the device disappears); keeps DIR.
halt() {
    local dir=$1
    local runtime=$dir/runtime
    local pidfile=$runtime/pulse/pid
    local pid=""
    [ -f "$pidfile" ] && pid=$(cat "$pidfile" 2>/dev/null || true)
    XDG_RUNTIME_DIR=$runtime XDG_CONFIG_HOME=$dir/config HOME=$dir pulseaudio -k >/dev/null 2>&1 || true
    if [ -n "$pid" ]; then
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
}

check_dir() {
    local dir=$1
    [ -n "$dir" ] || die "which test microphone? give its DIR or set TESTMIC_DIR (printed by start)"
    case $dir in
    */whospoke-testmic.*) ;;
    *) die "not a test microphone dir: $dir" ;;
    esac
    [ -d "$dir" ] || die "no such dir: $dir (already stopped?)"
}

start() {
    local input=$1
    local format=${2:-48000:2:f32}
    local rate channels enc
    IFS=: read -r rate channels enc <<<"$format"
    [[ $rate =~ ^[0-9]+$ && $rate -ge 1000 && $rate -le 384000 ]] || die "bad rate in --format $format"
    [[ $channels =~ ^[0-9]+$ && $channels -ge 1 && $channels -le 8 ]] || die "bad channel count in --format $format"
    local sox_enc pa_fmt bytes
    case $enc in
    s16) sox_enc=(-e signed-integer -b 16) pa_fmt=s16le bytes=2 ;;
    s32) sox_enc=(-e signed-integer -b 32) pa_fmt=s32le bytes=4 ;;
    f32) sox_enc=(-e floating-point -b 32) pa_fmt=float32le bytes=4 ;;
    *) die "bad encoding in --format $format (s16, s32 or f32)" ;;
    esac
    [ -f "$input" ] || die "no such file: $input"
    [ -r "$input" ] || die "cannot read: $input"
    need sox
    need pulseaudio
    need pactl
    if ! compgen -G "/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so" >/dev/null &&
        ! compgen -G "/usr/lib*/alsa-lib/libasound_module_pcm_pulse.so" >/dev/null; then
        die "the ALSA pulse plugin is missing (package libasound2-plugins); run scripts/install-deps.sh"
    fi

    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/whospoke-testmic.XXXXXX")
    local raw=$dir/input.raw
    local runtime=$dir/runtime
    local config=$dir/config
    mkdir -p "$runtime" "$config/alsa" "$config/pulse"
    chmod 700 "$runtime"

    if ! sox -V1 "$input" -t raw -r "$rate" -c "$channels" "${sox_enc[@]}" -L "$raw" 2>"$dir/sox.log"; then
        cat "$dir/sox.log" >&2
        rm -rf "$dir"
        die "sox cannot convert $input"
    fi

    cat >"$dir/default.pa" <<EOF
# format $rate:$channels:$enc
load-module module-native-protocol-unix
load-module module-null-sink sink_name=vsink rate=$rate channels=$channels format=$pa_fmt
EOF
    # The ALSA file plugin replaces what it captures from its slave (the null sink's monitor, which paces it in real
    # time) by the raw file's bytes, read in whatever format the program opens the device with: the raw file is
    # written in the format chosen above. (A plug converting a fixed 16 kHz mono file to any format does not work:
    # ALSA's conversion plugins refuse this file -> pulse chain with EINVAL.)
    cat >"$config/alsa/asoundrc" <<EOF
pcm.testmic {
    type file
    slave.pcm { type pulse device "vsink.monitor" }
    file "/dev/null"
    infile "$raw"
    format "raw"
    hint { show on description "whospoke file-backed test microphone: open at $rate Hz, $channels ch, $enc" }
}
EOF

    # Running as root: PulseAudio warns but works in per-user mode; keep it off the system bus and away from
    # ~/.config/pulse via the private XDG dirs. No autospawn by clients.
    cat >"$config/pulse/client.conf" <<'EOF'
autospawn = no
EOF
    if ! launch "$dir"; then
        stop "$dir" >/dev/null 2>&1 || true
        die "pulseaudio did not start"
    fi

    local secs
    secs=$(awk -v b="$(stat -c %s "$raw")" -v d="$((rate * channels * bytes))" 'BEGIN { printf "%.3f", b / d }')
    echo "testmic: device 'testmic' (ALSA; cpal id alsa:testmic) plays $input ($secs s as $rate Hz, $channels ch, $enc)" >&2
    echo "export TESTMIC_DIR='$dir'"
    echo "export XDG_RUNTIME_DIR='$runtime'"
    echo "export XDG_CONFIG_HOME='$config'"
    echo "export TESTMIC_DEVICE='testmic'"
    echo "export TESTMIC_RAW='$raw'"
    echo "export TESTMIC_FORMAT='$rate:$channels:$enc'"
}

stop() {
    local dir=${1:-${TESTMIC_DIR:-}}
    check_dir "$dir"
    halt "$dir"
    rm -rf "$dir"
    echo "testmic: stopped ($dir)" >&2
}

[ $# -ge 1 ] || usage
case $1 in
start)
    if [ $# -eq 2 ]; then
        start "$2"
    elif [ $# -eq 4 ] && [ "$3" = --format ]; then
        start "$2" "$4"
    else
        usage
    fi
    ;;
stop)
    [ $# -le 2 ] || usage
    stop "${2:-}"
    ;;
unplug)
    # The device disappears: its sound server stops (what a client sees when PulseAudio dies).
    [ $# -le 2 ] || usage
    dir=${2:-${TESTMIC_DIR:-}}
    check_dir "$dir"
    halt "$dir"
    echo "testmic: unplugged ($dir)" >&2
    ;;
crash)
    # The sound server dies (SIGKILL: no goodbye to its clients); bring it back with replug.
    [ $# -le 2 ] || usage
    dir=${2:-${TESTMIC_DIR:-}}
    check_dir "$dir"
    pid=$(cat "$dir/runtime/pulse/pid" 2>/dev/null || true)
    [ -n "$pid" ] || die "no pulseaudio pid in $dir"
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "$dir/runtime/pulse/pid"
    echo "testmic: crashed ($dir)" >&2
    ;;
replug)
    # The device comes back (the sound server starts again; the file plays from its beginning, or
    # from AUDIO_FILE if given, converted to the same format).
    [ $# -le 3 ] || usage
    dir=${2:-${TESTMIC_DIR:-}}
    check_dir "$dir"
    if [ $# -eq 3 ]; then
        fmt=$(sed -n 's/^# format //p' "$dir/default.pa")
        IFS=: read -r rate channels enc <<<"$fmt"
        case $enc in
        s16) sox_enc=(-e signed-integer -b 16) ;;
        s32) sox_enc=(-e signed-integer -b 32) ;;
        *) sox_enc=(-e floating-point -b 32) ;;
        esac
        sox -V1 "$3" -t raw -r "$rate" -c "$channels" "${sox_enc[@]}" -L "$dir/input.raw" ||
            die "sox cannot convert $3"
    fi
    launch "$dir" || die "pulseaudio did not start again"
    echo "testmic: replugged ($dir)" >&2
    ;;
*) usage ;;
esac
