"""Speech / overlap detection error of the turn stage's inputs against reference RTTMs (see README.md)."""
import glob
import os
import sys

import numpy as np

DUMP, REF = sys.argv[1], sys.argv[2]


def load(stem):
    a = np.loadtxt(f"{DUMP}/{stem}.tsv", dtype=np.float64)
    ref = np.zeros(len(a) + 1000, np.int32)
    for line in open(f"{REF}/{stem}.rttm"):
        f = line.split()
        s, d = float(f[3]), float(f[4])
        ref[int(round(s * 100)) : int(round((s + d) * 100))] += 1
    return a, ref[: len(a)]


data = {os.path.basename(p)[:-4]: load(os.path.basename(p)[:-4]) for p in sorted(glob.glob(f"{DUMP}/*.tsv"))}
total = sum(r.sum() for _, r in data.values())


def runs(x):
    idx = np.flatnonzero(np.diff(np.r_[0, x.astype(np.int8), 0]))
    return zip(idx[0::2], idx[1::2])


def fill_gaps(x, maxgap):
    x = x.copy()
    r = list(runs(x))
    for (_, e), (s, _) in zip(r[:-1], r[1:]):
        if s - e < maxgap:
            x[e:s] = True
    return x


def hyp(a, th=0.5, ov=0.3, src="both", gap=30):
    vad, p, o = a[:, 0] > 0.5, a[:, 2], a[:, 3]
    seg = p >= th
    sp = {"both": vad & seg, "seg": seg, "vad": vad, "either": vad | seg}[src]
    if gap:
        sp = fill_gaps(sp, gap)
    return sp.astype(np.int32) + (sp & (o >= ov) & seg).astype(np.int32)


def score(fn):
    miss = fa = 0
    for a, r in data.values():
        h = fn(a)
        miss += np.maximum(r - h, 0).sum()
        fa += np.maximum(h - r, 0).sum()
    return 100 * miss / total, 100 * fa / total


def row(label, fn):
    m, f = score(fn)
    print(f"| {label} | {m:.2f} | {f:.2f} | {m + f:.2f} |")


print(f"{len(data)} files, {total / 100:.1f} s of reference speaker time\n")
print("| rule | miss % | false alarm % | sum |\n|---|---:|---:|---:|")
row("default: vad and P(speech) >= 0.5, pauses < 0.3 s filled, second voice at P(overlap) >= 0.3", hyp)
row("no second voice", lambda a: hyp(a, ov=2.0))
for src in ("both", "seg", "vad"):
    for th in (0.3, 0.4, 0.5, 0.6):
        for gap in (0, 30, 45):
            if src == "vad" and th != 0.5:
                continue
            row(f"{src}, P(speech) >= {th}, pauses < {gap / 100} s filled", lambda a: hyp(a, th=th, src=src, gap=gap))


def shifted(a, k, col):
    b = a.copy()
    if k > 0:
        b[k:, col] = a[:-k, col]
    elif k < 0:
        b[:k, col] = a[-k:, col]
    return b


for k in (-4, -2, 2, 4):
    row(f"segmentation shifted by {k * 10} ms (seg alone)", lambda a: hyp(shifted(a, k, 2), src="seg"))
    row(f"webrtc-vad shifted by {k * 10} ms (vad alone)", lambda a: hyp(shifted(a, k, 0), src="vad"))

edges = [-200, -60, -50, -45, -40, -35, -30, -25, 0]
hs, hm, hf = (np.zeros(len(edges) - 1) for _ in range(3))
for a, r in data.values():
    h = hyp(a)
    db = 10 * np.log10(a[:, 1] + 1e-20)
    hs += np.histogram(db, edges, weights=r)[0]
    hm += np.histogram(db, edges, weights=np.maximum(r - h, 0))[0]
    hf += np.histogram(db, edges, weights=np.maximum(h - r, 0))[0]
print("\nDefault rule, by the power of the 30 ms VAD frame (dB full scale):\n")
print("| frame power dB | reference speech % | missed (points) | false alarm (points) | miss rate in the bin |")
print("|---|---:|---:|---:|---:|")
for i in range(len(edges) - 1):
    lo = "below" if i == 0 else f"{edges[i]}"
    print(f"| {lo} .. {edges[i + 1]} | {100 * hs[i] / total:.2f} | {100 * hm[i] / total:.2f} | "
          f"{100 * hf[i] / total:.2f} | {100 * hm[i] / max(hs[i], 1):.1f} % |")
