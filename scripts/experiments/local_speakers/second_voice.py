# Refines a whospoke hypothesis with segmentation-3.0's local speakers (cache.py's output): each segmentation
# window's locals are mapped one-to-one to the hypothesis' speakers by the time they share (Hungarian on votes:
# a local's exclusive activity over ticks the hypothesis gives one speaker); then ticks whose aggregated
# P(two voices) reaches --ovl and that have one speaker get the best other mapped local as a second voice;
# --relabel also relabels single-speaker ticks by the dominant mapped local.
# Usage: second_voice.py CACHE_DIR REF_DIR HYP_DIR OUT_DIR [--ovl 0.3] [--relabel]   (see README.md)
import sys,os,numpy as np,collections,argparse,subprocess
REPO=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from scipy.optimize import linear_sum_assignment
PS=np.array([[0,0,0],[1,0,0],[0,1,0],[0,0,1],[1,1,0],[1,0,1],[0,1,1]],np.float32)
ap=argparse.ArgumentParser(); ap.add_argument('cache'); ap.add_argument('ref'); ap.add_argument('hyp'); ap.add_argument('out')
ap.add_argument('--step',type=float,default=1.0); ap.add_argument('--ovl',type=float,default=0.3)
ap.add_argument('--relabel',action='store_true'); ap.add_argument('--minvote',type=float,default=30)
ap.add_argument('--second',default='local'); ap.add_argument('--latency',type=float,default=2.0)
a=ap.parse_args(); os.makedirs(a.out,exist_ok=True)
stepk=int(round(a.step/0.5))
for f in sorted(os.listdir(a.cache)):
    uri=f[:-4]; c=np.load(os.path.join(a.cache,f),allow_pickle=True).item()
    n=c['ends'][-1]//160+1
    hyp=collections.defaultdict(list)
    for l in open(os.path.join(a.hyp,uri+'.rttm')):
        q=l.split(); hyp[q[7]].append((float(q[3]),float(q[3])+float(q[4])))
    spk=sorted(hyp); K=len(spk)
    H=np.zeros((n+10,K),bool)
    for j,s in enumerate(spk):
        for x,y in hyp[s]: H[int(round(x*100)):int(round(y*100)),j]=True
    single=H.sum(1)==1; lab=np.where(single,np.argmax(H,1),-1)
    wins=[i for i in range(len(c['ends'])) if (i+1)%stepk==0]
    A=np.zeros((n+10,K)); Wt=np.zeros(n+10); Po=np.zeros(n+10); Pw=np.zeros(n+10)
    for wi in wins:
        e=c['ends'][wi]; s=e-80000
        p=np.exp(c['lp'][wi].astype(np.float32)); act=p@PS; ex=p[:,1:4]; ov=p[:,4:].sum(1)
        tt=np.arange(max(0,s)//160,e//160); cen=tt*160+80
        fi=np.clip(np.rint((cen-s-495.5)/270).astype(int),0,len(p)-1)
        keep=e<=cen+a.latency*16000
        # votes over all window ticks (labels known by then: approximation)
        V=np.zeros((3,K))
        for l in range(3):
            w=ex[fi,l]
            m=lab[tt]>=0
            np.add.at(V[l],lab[tt][m],w[m])
        r,cc=linear_sum_assignment(-V)
        mp=[None]*3
        for i,j in zip(r,cc):
            if V[i,j]>=a.minvote: mp[i]=j
        w=0.54-0.46*np.cos(2*np.pi*np.clip((cen-s)/80000,0,1))
        tk=tt[keep]; wk=w[keep]; fk=fi[keep]
        Wt[tk]+=wk; Po[tk]+=wk*ov[fk]
        for l in range(3):
            if mp[l] is not None: A[tk,mp[l]]+=wk*act[fk,l]
    ok=Wt>0; A[ok]/=Wt[ok,None]; Po[ok]/=Wt[ok]
    out=H.copy()
    speech=H.any(1)
    order=np.argsort(-A,1)
    if a.relabel:
        # ticks with single speaker in hyp: take the top mapped local if it has enough activity
        t=np.flatnonzero(single & (A.max(1)>0.5))
        out[t]=False; out[t,order[t,0]]=True
    # second voice on overlapped ticks
    t=np.flatnonzero(speech & (Po>=a.ovl) & (out.sum(1)==1))
    first=np.argmax(out[t],1)
    for ti,f0 in zip(t,first):
        for cand in order[ti,:2]:
            if cand!=f0 and A[ti,cand]>0.2: out[ti,cand]=True; break
    with open(os.path.join(a.out,uri+'.rttm'),'w') as fh:
        for j,s in enumerate(spk):
            x=np.concatenate([[0],out[:,j].astype(int),[0]]); d=np.diff(x)
            for st,en in zip(np.flatnonzero(d==1),np.flatnonzero(d==-1)):
                fh.write(f"SPEAKER {uri} 1 {st*0.01:.3f} {(en-st)*0.01:.3f} <NA> <NA> {s} <NA> <NA>\n")
r=subprocess.run([os.path.join(REPO,'target','release','whospoke'),'eval',a.ref,a.out],capture_output=True,text=True)
print(r.stdout.strip().splitlines()[-1][30:140])
