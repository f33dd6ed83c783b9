# How much of the reference's overlapped time segmentation-3.0 flags: per 10 ms tick, P(two voices) averaged over the
# cached windows covering it (cache.py), against the reference's speaker count. Usage: overlap_detection.py CACHE_DIR REF_DIR
# Lines: ref2 = ticks where the reference has two or more speakers; detected@P = of those, P(two voices) >= P;
# flagged@P = ticks with fewer than two reference speakers but P >= P.
import sys,os,numpy as np,collections
PS=np.array([[0,0,0],[1,0,0],[0,1,0],[0,0,1],[1,1,0],[1,0,1],[0,1,1]],np.float32)
cdir,rdir=sys.argv[1],sys.argv[2]
tot=collections.Counter()
for f in sorted(os.listdir(cdir)):
    uri=f[:-4]; c=np.load(os.path.join(cdir,f),allow_pickle=True).item()
    n=c['ends'][-1]//160+1
    rc=np.zeros(n)
    for l in open(os.path.join(rdir,uri+'.rttm')):
        q=l.split(); a=float(q[3]); b=a+float(q[4]); rc[int(a*100):int(b*100)]+=1
    po=np.zeros(n); w=np.zeros(n)
    for wi,e in enumerate(c['ends']):
        s=e-80000; p=np.exp(c['lp'][wi].astype(np.float32)); ov=p[:,4:].sum(1)
        tt=np.arange(max(0,s)//160,e//160); cen=tt*160+80
        fi=np.clip(np.rint((cen-s-495.5)/270).astype(int),0,len(p)-1)
        po[tt]+=ov[fi]; w[tt]+=1
    po/=np.maximum(w,1)
    for th in (0.2,0.3,0.5):
        tot[f'ref2 detected@{th}']+=((rc>=2)&(po>=th)).sum(); tot[f'ref<2 flagged@{th}']+=((rc<2)&(po>=th)).sum()
    tot['ref2']+=(rc>=2).sum(); tot['ref1']+=(rc==1).sum()
for k,v in tot.items(): print(k,v)
