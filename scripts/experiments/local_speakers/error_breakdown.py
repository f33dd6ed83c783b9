# Where a hypothesis' missed speech and false alarm lie (10 ms ticks): by distance to the nearest reference speech
# boundary, and whether the reference has one or two voices there. Usage: error_breakdown.py REF_DIR HYP_DIR
import sys,glob,os,collections
import numpy as np
ref_dir, hyp_dir = sys.argv[1], sys.argv[2]
R=100
def load(p):
    segs=collections.defaultdict(list)
    if not os.path.exists(p): return segs
    for l in open(p):
        q=l.split()
        if not q or q[0]!='SPEAKER': continue
        s=float(q[3]);d=float(q[4]); segs[q[7]].append((s,s+d))
    return segs
tot=collections.Counter()
for rf in sorted(glob.glob(ref_dir+'/*.rttm')):
    uri=os.path.basename(rf)[:-5]
    ref=load(rf); hyp=load(os.path.join(hyp_dir,uri+'.rttm'))
    T=int(max([e for v in ref.values() for _,e in v]+[e for v in hyp.values() for _,e in v])*R)+2
    rc=np.zeros(T,int); hc=np.zeros(T,int)
    bnd=np.zeros(T,bool)
    for v in ref.values():
        for s,e in v:
            rc[int(round(s*R)):int(round(e*R))]+=1
    for v in hyp.values():
        for s,e in v:
            hc[int(round(s*R)):int(round(e*R))]+=1
    # distance to nearest ref speech/non-speech boundary (of union)
    sp=rc>0
    edges=np.flatnonzero(np.diff(sp.astype(int)))+1
    idx=np.arange(T)
    if len(edges):
        pos=np.searchsorted(edges,idx)
        d1=np.abs(idx-edges[np.clip(pos-1,0,len(edges)-1)]); d2=np.abs(edges[np.clip(pos,0,len(edges)-1)]-idx)
        dist=np.minimum(d1,d2)/R
    else: dist=np.full(T,99.)
    tot['speech']+=rc.sum()
    miss=np.maximum(rc-hc,0); fa=np.maximum(hc-rc,0)
    for name,arr in (('miss',miss),('fa',fa)):
        for lo,hi in ((0,0.1),(0.1,0.25),(0.25,0.5),(0.5,99)):
            m=(dist>=lo)&(dist<hi)
            tot[f'{name} dist[{lo},{hi})']+=arr[m].sum()
    tot['miss ref=2 (overlap second voice)']+=miss[rc>=2].sum()
    tot['miss ref=1 hyp=0']+=miss[(rc==1)].sum()
    tot['fa in ref silence']+=fa[rc==0].sum()
    tot['fa ref>=1']+=fa[rc>=1].sum()
    # silence gaps in ref between speech: how much FA falls in gaps shorter than 0.6s
S=tot['speech']
for k,v in tot.items():
    print(f'{k:40s} {v/R:8.1f}s {100*v/S:6.2f}%')
