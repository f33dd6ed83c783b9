#!/usr/bin/env python3
"""Builds a meeting-like stress set from the dev set: far-field (reverberant), noisy, with much overlap.

    scripts/make-meeting-set.py [OUT_DIR]        (default out/meeting; needs sox; Python stdlib only)

The dev set is clean read speech with 3 % overlap; the recordings the project is also judged on are real
meetings: short, 3-4 speakers, much overlap, far-field. This script re-mixes the dev set's own speech into
such conversations so that design choices can be checked against them, with exact references:

- pieces: every stretch of a reference segment that no other speaker overlaps (at least 0.8 s), cut from the
  dev audio (so its reference boundaries are the dev set's own, with pauses under ~0.4 s kept inside);
- conversations: 8 files of about 100 s, 3 or 4 speakers each (drawn from the dev set's 10 speakers);
  a speaker holds the floor for 1-3 pieces, the next one starts 0.2-0.6 s after the current turn ends or
  overlaps its tail by 0.4-2 s (about two changes in three), and short back-channels (pieces under 1.2 s)
  land in the middle of someone else's turn (half of the turns longer than 3 s): 15-25 % of the speech is overlapped;
- room: each speaker gets a distance of their own (gain -12 to 0 dB, sox `reverb` 40-80 % reverberance,
  room scale 60-100 %, pre-delay 5-20 ms), the sum gets pink or brown noise at 12-20 dB SNR.

Reference RTTM: one segment per piece as placed (its dev-set span), speaker = the dev speaker. Reverberation
smears ends past those spans, as in real far-field recordings scored against close-talk references.
Deterministic (seeded). The speakers are the dev set's, so this tests acoustic conditions and overlap, not
voices the models have never met.
"""

import array
import json
import os
import random
import subprocess
import sys
import tempfile
import wave

RATE = 16000


def read_wav(path):
    with wave.open(path, "rb") as w:
        if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            sys.exit(f"{path}: expected 16 kHz mono 16-bit")
        a = array.array("h")
        a.frombytes(w.readframes(w.getnframes()))
        return a


def write_wav(path, samples):
    a = array.array("h", (max(-32768, min(32767, int(round(x)))) for x in samples))
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(a.tobytes())


def read_rttm(path):
    segs = []
    for line in open(path):
        p = line.split()
        if p and p[0] == "SPEAKER":
            s, d = float(p[3]), float(p[4])
            segs.append((s, s + d, p[7]))
    return segs


def pieces_of(dev):
    """Per speaker: list of (samples, duration) of un-overlapped reference stretches >= 0.8 s."""
    out = {}
    for name in sorted(os.listdir(dev)):
        if not name.endswith(".rttm"):
            continue
        segs = read_rttm(os.path.join(dev, name))
        audio = read_wav(os.path.join(dev, name[:-5] + ".wav"))
        for i, (s, e, spk) in enumerate(segs):
            # Cut away every part another speaker overlaps; keep the longest clean stretch.
            cuts = [(s, e)]
            for j, (s2, e2, spk2) in enumerate(segs):
                if j == i or spk2 == spk or e2 <= s or s2 >= e:
                    continue
                nxt = []
                for a, b in cuts:
                    if e2 <= a or s2 >= b:
                        nxt.append((a, b))
                        continue
                    if s2 > a:
                        nxt.append((a, s2))
                    if e2 < b:
                        nxt.append((e2, b))
                cuts = nxt
            for a, b in cuts:
                if b - a >= 0.8:
                    x = audio[int(a * RATE):int(b * RATE)]
                    out.setdefault(spk, []).append(x)
    return out


def sox(args):
    # -R: repeatable random numbers (the noise), so the set is the same on every run.
    subprocess.run(["sox", "-R"] + args, check=True, stderr=subprocess.DEVNULL)


def build(rng, pieces, uri, tmp, out_dir):
    speakers = rng.sample(sorted(pieces), rng.choice([3, 3, 4, 4, 4]))
    target = rng.uniform(85, 115)
    placed = []  # (start_s, samples, speaker)
    t = rng.uniform(0.3, 1.0)
    last = None
    end_of_turn = t
    while end_of_turn < target:
        spk = rng.choice([s for s in speakers if s != last])
        n = rng.choice([1, 1, 1, 2, 2, 3])
        if last is not None:
            if rng.random() < 0.65:
                t = end_of_turn - rng.uniform(0.4, 2.0)
            else:
                t = end_of_turn + rng.uniform(0.2, 0.6)
        start_turn = t
        for k in range(n):
            x = rng.choice(pieces[spk])
            placed.append((t, x, spk))
            t += len(x) / RATE
            if k + 1 < n:
                t += rng.uniform(0.45, 0.8)
        # A back-channel from someone else inside a long enough turn.
        if t - start_turn > 3.0 and rng.random() < 0.5:
            other = rng.choice([s for s in speakers if s != spk])
            short = [p for p in pieces[other] if len(p) / RATE < 1.2]
            if short:
                x = rng.choice(short)
                placed.append((rng.uniform(start_turn + 1.0, t - 1.0 - len(x) / RATE), x, other))
        end_of_turn = t
        last = spk
    total = int((end_of_turn + rng.uniform(0.5, 1.5)) * RATE)
    # One track per speaker, each through its own room response, then the mix and the noise.
    tracks = []
    room = {}
    for spk in speakers:
        buf = array.array("f", bytes(4 * total))
        for st, x, s in placed:
            if s != spk:
                continue
            o = int(st * RATE)
            for i, v in enumerate(x):
                if o + i < total:
                    buf[o + i] += v
        dry = os.path.join(tmp, f"{uri}_{spk}_dry.wav")
        wet = os.path.join(tmp, f"{uri}_{spk}_wet.wav")
        write_wav(dry, buf)
        gain = rng.uniform(-12, 0)
        rev, scale, pre = rng.uniform(40, 80), rng.uniform(60, 100), rng.uniform(5, 20)
        room[spk] = {"gain_db": round(gain, 1), "reverberance": round(rev), "room_scale": round(scale),
                     "pre_delay_ms": round(pre)}
        sox([dry, wet, "gain", f"{gain:.2f}", "reverb", f"{rev:.0f}", "50", f"{scale:.0f}", "100",
             f"{pre:.0f}", "0", "remix", "1", "trim", "0", f"{total}s"])
        tracks.append(wet)
    mix = os.path.join(tmp, f"{uri}_mix.wav")
    sox(["-m"] + tracks + [mix, "trim", "0", f"{total}s"] if len(tracks) > 1 else [tracks[0], mix])
    snr = rng.uniform(12, 20)
    colour = rng.choice(["pinknoise", "brownnoise"])
    # Noise level from the mix's RMS over its speech (approximately: RMS of the whole mix).
    rms = float(subprocess.run(["sox", mix, "-n", "stat"], capture_output=True, text=True).stderr
                .split("RMS     amplitude:")[1].split()[0])
    noise_amp = rms / (10 ** (snr / 20))
    noise = os.path.join(tmp, f"{uri}_noise.wav")
    sox(["-n", "-r", str(RATE), "-c", "1", "-b", "16", noise, "synth", f"{total}s", colour, "vol",
         f"{noise_amp * 3.0:.6f}"])  # synth noise at vol v has RMS about v / 3
    wav = os.path.join(out_dir, uri + ".wav")
    sox(["-m", "-v", "1", mix, "-v", "1", noise, "-b", "16", wav, "trim", "0", f"{total}s", "gain", "-n", "-3"])
    with open(os.path.join(out_dir, uri + ".rttm"), "w") as f:
        for st, x, spk in sorted(placed, key=lambda p: p[0]):
            f.write(f"SPEAKER {uri} 1 {st:.3f} {len(x) / RATE:.3f} <NA> <NA> {spk} <NA> <NA>\n")
    # Overlap share of speech, for the manifest.
    grid = bytearray(total // 160 + 2)
    for st, x, _ in placed:
        for k in range(int(st * 100), int((st + len(x) / RATE) * 100)):
            if k < len(grid):
                grid[k] = min(grid[k] + 1, 255)
    speech = sum(1 for g in grid if g)
    over = sum(1 for g in grid if g >= 2)
    return {"uri": uri, "duration_s": round(total / RATE, 1), "speakers": len(speakers),
            "speech_s": round(speech / 100, 1), "overlap_frac": round(over / max(speech, 1), 3),
            "snr_db": round(snr, 1), "noise": colour, "room": room}


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(repo, "out", "meeting")
    dev = os.environ.get("DEV", os.path.join(repo, "..", "shared", "eval", "dev"))
    n = int(os.environ.get("FILES", "8"))
    os.makedirs(out_dir, exist_ok=True)
    pieces = pieces_of(dev)
    rng = random.Random(20261203)
    manifest = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            m = build(rng, pieces, f"meet_{i:02d}", tmp, out_dir)
            manifest.append(m)
            print(f"{m['uri']}: {m['duration_s']} s, {m['speakers']} speakers, overlap {100 * m['overlap_frac']:.1f} % "
                  f"of speech, {m['noise']} at {m['snr_db']} dB SNR", file=sys.stderr)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
