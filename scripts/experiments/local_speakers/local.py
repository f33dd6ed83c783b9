# A diart-like local-speaker pipeline over cache.py's output: per segmentation window, its active local speakers'
# embeddings are mapped one-to-one onto global centroids (Hungarian, scipy), new speakers need agreeing far
# windows, long locals update centroids; the windows' mapped activities are aggregated (Hamming weights) with a
# latency knob and reconstructed (pyannote's speaker-count rule, or a threshold); RTTM out, scored by whospoke eval.
# Usage: local.py CACHE_DIR REF_DIR OUT_DIR [--step 1 --latency 5 --delta_new 0.7 ...]   (see README.md)
import sys, os, numpy as np, argparse, subprocess, json
REPO=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from scipy.optimize import linear_sum_assignment
PS=np.array([[0,0,0],[1,0,0],[0,1,0],[0,0,1],[1,1,0],[1,0,1],[0,1,1]],np.float32)
SR=16000; WIN=80000; TICK=160
def hamming(n): return 0.54-0.46*np.cos(2*np.pi*np.arange(n)/(n-1))
def diarize(c, a):
    ends=c['ends']; lps=c['lp']; E=c['emb']; Wsum=c['wsum']
    stepk=int(round(a.step/0.5))
    wins=[i for i in range(len(ends)) if (i+1)%stepk==0 or i==len(ends)-1]
    n_ticks=ends[-1]//TICK+1
    cent=[]; cnt=[]
    maps={}; pend=[]
    for wi in wins:
        locs=[l for l in range(3) if (wi,l) in E]
        m=[None]*3
        if locs:
            e=np.stack([E[(wi,l)]/np.linalg.norm(E[(wi,l)]) for l in locs])
            long_=[Wsum[(wi,l)]>=a.rho*100 for l in locs]
            G=len(cent)
            if G: C=np.stack([x/np.linalg.norm(x) for x in cent]); D=1-e@C.T
            else: D=np.zeros((len(locs),0))
            t_now=ends[wi]/SR
            pend[:]=[p for p in pend if t_now-p[0]<=a.pspan]
            # locals far from every centroid: pending evidence for a new speaker
            created=[]
            for i,l in enumerate(locs):
                far = G==0 or D[i].min()>a.delta_new
                if far and long_[i]:
                    grp=[p for p in pend if p[2]!=wi and float(p[1]@e[i])>=a.agree]
                    if len(grp)+1>=a.nwin and len(cent)<a.max_spk:
                        cent.append(e[i]+sum(p[1] for p in grp)); cnt.append(1+len(grp))
                        pend[:]=[p for p in pend if not any(p is q for q in grp)]
                        created.append(i)
                    else:
                        pend.append((t_now,e[i],wi))
            G2=len(cent)
            C=np.stack([x/np.linalg.norm(x) for x in cent]) if G2 else np.zeros((0,192))
            D=1-e@C.T if G2 else np.zeros((len(locs),0))
            if G2:
                BIG=1e3
                M=np.concatenate([D,np.full((len(locs),len(locs)),BIG)],1)
                r,cc=linear_sum_assignment(M)
                for i,j in zip(r,cc):
                    l=locs[i]
                    if j<G2:
                        m[l]=j
                        if long_[i] and D[i,j]<=a.delta_upd and i not in created: cent[j]=cent[j]+e[i]; cnt[j]+=1
        maps[wi]=m
    K=len(cent)
    acc=np.zeros((n_ticks,max(K,1))); wacc=np.zeros(n_ticks); cacc=np.zeros(n_ticks)
    ham=None
    for wi in wins:
        e=ends[wi]; s=e-WIN
        lp=lps[wi].astype(np.float32); p=np.exp(lp); act=p@PS  # [F,3]
        nf=len(p)
        t0=max(0,s)//TICK; t1=e//TICK
        tt=np.arange(t0,t1)
        cen=tt*TICK+TICK/2
        tt=tt[(cen>=s)&(cen<e)]; cen=tt*TICK+TICK/2
        # latency: window counts for tick if e <= tick_center + latency
        keep=e<=cen+a.latency*SR
        # final-at-end: ticks in last window are allowed
        if wi==wins[-1]: keep[:]=True
        tt=tt[keep]; cen=cen[keep]
        if len(tt)==0: continue
        fi=np.clip((cen-s-495.5)/270,0,nf-1); i0=np.floor(fi).astype(int); i1=np.minimum(i0+1,nf-1); f=(fi-i0)[:,None]
        v=act[i0]*(1-f)+act[i1]*f
        w=0.54-0.46*np.cos(2*np.pi*np.clip((cen-s)/WIN,0,1))
        if a.uniform: w=np.ones_like(w)
        wacc[tt]+=w; cacc[tt]+=w*v.sum(1)
        for l in range(3):
            g=maps[wi][l]
            if g is not None: acc[tt,g]+=w*v[:,l]
    ok=wacc>0
    acc[ok]/=wacc[ok,None]; cacc[ok]/=wacc[ok]
    out=np.zeros_like(acc,bool)
    if a.recon=='count':
        cntr=np.rint(cacc).astype(int)
        order=np.argsort(-acc,1)
        for k in range(acc.shape[1]):
            sel=(cntr>k)
            idx=order[:,k]
            rows=np.flatnonzero(sel & (acc[np.arange(len(acc)),idx]>0))
            out[rows,idx[rows]]=True
    else:
        out=acc>=a.tau
    return out
def write_rttm(out,uri,f,min_pause):
    n,K=out.shape
    for g in range(K):
        x=np.concatenate([[0],out[:,g].astype(int),[0]]); d=np.diff(x)
        st=np.flatnonzero(d==1); en=np.flatnonzero(d==-1)
        segs=[]
        for s,e in zip(st,en):
            if segs and (s-segs[-1][1])*0.01<min_pause: segs[-1][1]=e
            else: segs.append([s,e])
        for s,e in segs:
            f.write(f"SPEAKER {uri} 1 {s*0.01:.3f} {(e-s)*0.01:.3f} <NA> <NA> G{g} <NA> <NA>\n")
if __name__=='__main__':
    ap=argparse.ArgumentParser()
    ap.add_argument('cache'); ap.add_argument('ref'); ap.add_argument('out')
    ap.add_argument('--step',type=float,default=1.0); ap.add_argument('--latency',type=float,default=5)
    ap.add_argument('--rho',type=float,default=1.0); ap.add_argument('--delta_new',type=float,default=0.7)
    ap.add_argument('--delta_upd',type=float,default=0.6)
    ap.add_argument('--pspan',type=float,default=6); ap.add_argument('--agree',type=float,default=0.4); ap.add_argument('--nwin',type=int,default=3)
    ap.add_argument('--max_spk',type=int,default=20); ap.add_argument('--recon',default='count'); ap.add_argument('--tau',type=float,default=0.5)
    ap.add_argument('--uniform',action='store_true'); ap.add_argument('--min_pause',type=float,default=0.3)
    a=ap.parse_args(); os.makedirs(a.out,exist_ok=True)
    for f in sorted(os.listdir(a.cache)):
        if not f.endswith('.npy'): continue
        uri=f[:-4]; c=np.load(os.path.join(a.cache,f),allow_pickle=True).item()
        out=diarize(c,a)
        with open(os.path.join(a.out,uri+'.rttm'),'w') as fh: write_rttm(out,uri,fh,a.min_pause)
    r=subprocess.run([os.path.join(REPO,'target','release','whospoke'),'eval',a.ref,a.out],capture_output=True,text=True)
    print(r.stdout.strip().splitlines()[-1])
