# How well segmentation-3.0's P(overlap) finds the reference's overlapped speech at several thresholds:
# per 10 ms tick (dump_ticks' 4th column) against the reference's speaker count (two or more = overlap).
# Usage: overlap_threshold.py TICKS_DIR REF_DIR   (TICKS_DIR from `cargo run --release --example dump_ticks`)
import sys, glob, os
import numpy as np

tdir, rdir = sys.argv[1], sys.argv[2]
for th in [0.2, 0.3, 0.4, 0.5, 0.6]:
    tp = fp = fn = 0
    for r in sorted(glob.glob(rdir + '/*.rttm')):
        u = os.path.basename(r)[:-5]
        p = np.array([float(l.split()[3]) for l in open(f'{tdir}/{u}.tsv')])
        n = len(p)
        ref = np.zeros(n, int)
        for l in open(r):
            w = l.split()
            a = int(round(float(w[3]) * 100))
            b = int(round((float(w[3]) + float(w[4])) * 100))
            ref[a:min(b, n)] += 1
        o, t = p >= th, ref >= 2
        tp += (o & t).sum(); fp += (o & ~t).sum(); fn += (~o & t).sum()
    print(f'P(overlap) >= {th}: precision {tp / max(tp + fp, 1):.2f}, recall {tp / max(tp + fn, 1):.2f} '
          f'(reference overlap {(tp + fn) / 100:.0f} s, flagged {(tp + fp) / 100:.0f} s)')
