# Where each reference speaker's missed speech lies within their reference turns: before the first
# detected tick of a turn (its start), after the last (its end), or inside. 10 ms ticks; a tick is
# missed when no hypothesis turn covers it. Usage: turn_edges.py REF_DIR HYP_DIR
import collections, glob, os, sys

ref_dir, hyp_dir = sys.argv[1], sys.argv[2]


def load(path):
    out = []
    if os.path.exists(path):
        for line in open(path):
            w = line.split()
            if w and w[0] == "SPEAKER":
                s, d = float(w[3]), float(w[4])
                out.append((s, s + d, w[7]))
    return out


tot = collections.defaultdict(lambda: [0, 0, 0, 0, set()])  # speech, start, end, inside (ticks), files
for rf in sorted(glob.glob(os.path.join(ref_dir, "*.rttm"))):
    uri = os.path.basename(rf)[:-5]
    ref, hyp = load(rf), load(os.path.join(hyp_dir, uri + ".rttm"))
    n = int(max([e for _, e, _ in ref + hyp] + [0]) * 100) + 2
    covered = [False] * n
    for s, e, _ in hyp:
        for t in range(int(round(s * 100)), int(round(e * 100))):
            covered[t] = True
    for s, e, spk in ref:
        ticks = covered[int(round(s * 100)):int(round(e * 100))]
        t = tot[spk]
        t[0] += len(ticks)
        t[4].add(uri)
        if not any(ticks):
            t[1] += len(ticks)  # a turn missed whole counts as its start
            continue
        lead = ticks.index(True)
        trail = ticks[::-1].index(True)
        t[1] += lead
        t[2] += trail
        t[3] += ticks[lead:len(ticks) - trail].count(False)
speech = sum(t[0] for t in tot.values())
print(f"{'speaker':>8} {'files':>5} {'speech s':>9} {'missed %':>9} {'at starts s':>11} {'at ends s':>9} {'inside s':>8}  (share of corpus speech missed at starts)")
for spk, (sp, a, b, c, files) in sorted(tot.items(), key=lambda kv: -(kv[1][1] / max(kv[1][0], 1))):
    print(f"{spk:>8} {len(files):>5} {sp / 100:9.1f} {100 * (a + b + c) / sp:9.1f} {a / 100:11.1f} {b / 100:9.1f} {c / 100:8.1f}  {100 * a / speech:.2f} %")
a, b, c = (sum(t[i] for t in tot.values()) for i in (1, 2, 3))
print(f"{'all':>8} {'':>5} {speech / 100:9.1f} {100 * (a + b + c) / speech:9.1f} {a / 100:11.1f} {b / 100:9.1f} {c / 100:8.1f}")
