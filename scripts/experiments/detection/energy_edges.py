# Tick-level simulation of speech edges by energy (docs/accuracy.md, "Speech edges by energy"), used to
# choose the bounds before running them in whospoke. From final speech with the energy edges off, it
# grows each region into adjacent 10 ms ticks whose 30 ms frame power (from the WAV) stands >= A dB above
# the floor (10th percentile of the last 30 s) and <= B dB under the speech level (median power of the
# last 30 s of that speech), at most M ticks each side, and prints speaker-count-aware miss and false
# alarm (% of reference speech; speech detection only, no labels) for each (A, B, M).
# Usage: energy_edges.py REF_DIR HYP_DIR [A,A.. [B,B.. [M,M..]]]
#   HYP_DIR: e.g. `scripts/eval-dev.sh HYP_DIR -- --energy-extend-max 0 --energy-trim-max 0`
# Needs numpy and soundfile.
import sys, glob, os, itertools
import numpy as np
import soundfile as sf

ref_dir, hyp_dir = sys.argv[1], sys.argv[2]
A = [float(x) for x in (sys.argv[3] if len(sys.argv) > 3 else '6,20,100').split(',')]
B = [float(x) for x in (sys.argv[4] if len(sys.argv) > 4 else '35,100').split(',')]
M = [int(x) for x in (sys.argv[5] if len(sys.argv) > 5 else '40').split(',')]


def spans(path):
    for line in open(path):
        w = line.split()
        yield int(round(float(w[3]) * 100)), int(round((float(w[3]) + float(w[4])) * 100))


def rolling(db, mask, q, win=3000, step=100, empty=None):
    out = np.zeros(len(db))
    for i in range(0, len(db), step):
        x = db[max(0, i - win):i + 1][mask[max(0, i - win):i + 1]]
        out[i:i + step] = np.percentile(x, q) if len(x) > 50 else (empty if empty is not None else db[i])
    return out


def grow(core, ok, m):
    ext = np.zeros(len(core), bool)
    for e in np.flatnonzero(np.diff(core.astype(int))):
        step, t = (-1, e) if core[e + 1] else (1, e + 1)
        k = 0
        while 0 <= t < len(core) and not core[t] and k < m and ok[t]:
            ext[t] = True; t += step; k += 1
    return ext


files = []
for r in sorted(glob.glob(ref_dir + '/*.rttm')):
    u = os.path.basename(r)[:-5]
    x, _ = sf.read(f'{ref_dir}/{u}.wav', dtype='float32')
    n = len(x) // 160
    p30 = np.array([np.mean(x[i * 480:(i + 1) * 480] ** 2) for i in range(len(x) // 480)])
    db = 10 * np.log10(np.repeat(p30, 3)[:n] + 1e-10)
    db = np.concatenate([db, np.full(n - len(db), db[-1])])
    ref = np.zeros(n, int)
    for a, b in spans(r):
        ref[a:min(b, n)] += 1
    core = np.zeros(n, bool)
    for a, b in spans(f'{hyp_dir}/{u}.rttm'):
        core[a:min(b, n)] = True
    files.append((ref, core, db, rolling(db, np.ones(n, bool), 10), rolling(db, core, 50, empty=-30.0)))

for a, b, m in itertools.product(A, B, M):
    miss = fa = tot = 0
    for ref, core, db, floor, speech in files:
        h = (core | grow(core, (db >= floor + a) & (db >= speech - b), m)).astype(int)
        miss += np.maximum(ref - h, 0).sum(); fa += np.maximum(h - ref, 0).sum(); tot += ref.sum()
    print(f'A={a:g} dB above the floor, B={b:g} dB under speech, M={m} ticks: '
          f'miss {100 * miss / tot:.2f} % false alarm {100 * fa / tot:.2f} % sum {100 * (miss + fa) / tot:.2f}')
