#!/usr/bin/env python3
"""Regenerate the scorer test data in this directory (seeded, deterministic).

    python3 tests/data/eval/make_hyps.py [--dev ../shared/eval/dev] [--score]

* ref/<uri>.rttm     copies of the 12 dev reference RTTMs
* ref/durations.tsv  exact WAV durations (frames / rate), so tests need neither ../shared nor the WAVs
* hyp/<uri>.rttm     realistic hypotheses made by perturbing the reference: boundaries jittered by
                     +-0.05..0.4 s, a few turns dropped, two speakers merged (some files) or one speaker
                     split in two (others), short false-alarm segments in pauses, anonymous labels
* score_c0.json, score_c025.json, score_c025_skipov.json
                     score.py's output (--json) for collar 0, 0.25 and 0.25 + --skip-overlap, run with
                     --audio-dir DEV so the scored region is the whole WAV, as the Rust side uses
                     durations.tsv (only with --score; needs scripts/score-ref.sh's venv).
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import wave

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, '..', '..', '..'))
SEED = 20240611


def read_rttm(path):
    out = []
    with open(path) as f:
        for line in f:
            p = line.split()
            if p and p[0] == 'SPEAKER' and float(p[4]) > 0:
                out.append((float(p[3]), float(p[3]) + float(p[4]), p[7]))
    return out


def perturb(segs, rng, mode, dur):
    """-> hypothesis segments [(start, end, label)]"""
    speakers = sorted({k for _, _, k in segs})
    relabel = {k: k for k in speakers}
    if mode == 'merge' and len(speakers) >= 2:
        a, b = rng.sample(speakers, 2)
        relabel[b] = a  # the system failed to tell b from a
    hyp = []
    split_spk = rng.choice(speakers) if mode == 'split' else None
    split_at = rng.uniform(0.3, 0.7) * dur
    for s, e, k in segs:
        if rng.random() < 0.05:  # missed turn
            continue
        s += rng.choice([-1, 1]) * rng.uniform(0.05, 0.4)
        e += rng.choice([-1, 1]) * rng.uniform(0.05, 0.4)
        s = max(0.0, s)
        if e - s < 0.1:
            continue
        lab = relabel[k]
        if k == split_spk and (s > split_at or rng.random() < 0.15):
            lab = k + '_bis'  # one speaker spread over two clusters (drift + stray turns)
        if rng.random() < 0.04:  # a turn given to the wrong (existing) speaker
            lab = relabel[rng.choice(speakers)]
        hyp.append((s, e, lab))
    # false alarms: short segments in pauses (noise, breaths) with a random label
    for _ in range(rng.randint(2, 6)):
        s = rng.uniform(0.0, dur - 1.0)
        hyp.append((s, s + rng.uniform(0.2, 1.2), relabel[rng.choice(speakers)]))
    labels = sorted({k for _, _, k in hyp})
    rng.shuffle(labels)
    anon = {k: f'spk{i}' for i, k in enumerate(labels)}
    return sorted((round(s, 3), round(e, 3), anon[k]) for s, e, k in hyp)


def write_rttm(path, uri, segs):
    with open(path, 'w') as f:
        for s, e, k in segs:
            f.write(f'SPEAKER {uri} 1 {s:.3f} {e - s:.3f} <NA> <NA> {k} <NA> <NA>\n')


def wav_duration(path):
    with wave.open(path, 'rb') as w:
        return w.getnframes() / float(w.getframerate())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--dev', default=os.path.join(REPO, '..', 'shared', 'eval', 'dev'))
    ap.add_argument('--score', action='store_true', help='also run score.py (scripts/score-ref.sh) for the JSONs')
    a = ap.parse_args()
    dev = os.path.abspath(a.dev)
    uris = [u.strip() for u in open(os.path.join(dev, 'list.txt')) if u.strip()]
    ref_dir, hyp_dir = os.path.join(HERE, 'ref'), os.path.join(HERE, 'hyp')
    os.makedirs(ref_dir, exist_ok=True)
    os.makedirs(hyp_dir, exist_ok=True)
    rng = random.Random(SEED)
    modes = ['merge', 'split', 'plain']
    with open(os.path.join(ref_dir, 'durations.tsv'), 'w') as dt:
        dt.write('uri\tduration_s\n')
        for i, uri in enumerate(uris):
            shutil.copyfile(os.path.join(dev, uri + '.rttm'), os.path.join(ref_dir, uri + '.rttm'))
            dur = wav_duration(os.path.join(dev, uri + '.wav'))
            dt.write(f'{uri}\t{dur!r}\n')
            segs = read_rttm(os.path.join(dev, uri + '.rttm'))
            write_rttm(os.path.join(hyp_dir, uri + '.rttm'), uri, perturb(segs, rng, modes[i % 3], dur))
    if not a.score:
        return
    for name, args in [('score_c0.json', []), ('score_c025.json', ['--collar', '0.25']),
                       ('score_c025_skipov.json', ['--collar', '0.25', '--skip-overlap'])]:
        out = os.path.join(HERE, name)
        subprocess.run([os.path.join(REPO, 'scripts', 'score-ref.sh'), ref_dir, hyp_dir, '--audio-dir', dev,
                        '--quiet', '--json', out] + args, check=True)
        with open(out) as f:
            res = json.load(f)
        # keep the stored file machine-independent
        for k in ('ref', 'hyp'):
            res['settings'][k] = os.path.relpath(res['settings'][k], REPO)
        with open(out, 'w') as f:
            json.dump(res, f, indent=1)
            f.write('\n')


if __name__ == '__main__':
    sys.exit(main())
