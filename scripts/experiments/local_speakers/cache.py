# Caches, per file, segmentation-3.0 log-probs of 5 s windows every 0.5 s and a speaker-conditioned CAM++ embedding
# of every active local speaker of each window (its exclusive activity as frame weights, over the whole window).
# Usage: cache.py AUDIO_DIR CACHE_DIR   (see README.md)
import sys, os, struct
import numpy as np, soundfile as sf, onnxruntime as ort
REPO=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0,os.path.join(REPO,'models')); from export_campplus_trunk import head as cam_head
sys.path.insert(0,os.path.dirname(os.path.abspath(__file__))); from feat import fbank
SR=16000; WIN=5*SR; STEP=SR//2
so=ort.SessionOptions(); so.intra_op_num_threads=1; so.inter_op_num_threads=1
seg=ort.InferenceSession(os.path.join(REPO,'models','segmentation-3.0.onnx'),so)
trunk=ort.InferenceSession(os.path.join(REPO,'models','campplus_trunk.onnx'),so)
_hb=open(os.path.join(REPO,'models','campplus_head.bin'),'rb').read()
_o,_i,_eps=struct.unpack('<IIf',_hb[8:20]); _f=np.frombuffer(_hb[20:],'<f4')
HEAD=(_f[:_o*_i].reshape(_o,_i),_f[_o*_i:_o*_i+_o],_f[_o*_i+_o:],_eps)
def embed_weighted(feats,weights):
    # one trunk pass, one weighted pooling per row of weights [S, T]
    fr=trunk.run(None,{'feats':feats[None]})[0][0]
    return np.stack([cam_head(fr,w,*HEAD) for w in weights])
PS=np.array([[0,0,0],[1,0,0],[0,1,0],[0,0,1],[1,1,0],[1,0,1],[0,1,1]],np.float32)
def frame_center(i): return i*270+495.5  # samples within window
def run(wav, out):
    x,sr=sf.read(wav,dtype='float32'); assert sr==SR
    n=len(x)
    ends=list(range(STEP,n+STEP,STEP))
    if ends[-1]>n: ends[-1]=n
    F=fbank(x)  # global fbank, frame k covers [160k,160k+400)
    res={'ends':[], 'lp':[], 'emb':{}, 'wsum':{}}
    for wi,e in enumerate(ends):
        s=e-WIN
        buf=np.zeros(WIN,np.float32)
        a=max(s,0); buf[a-s:]=x[a:e]
        lp=seg.run(None,{'waveform':buf[None,None,:]})[0][0]  # [589? ,7]
        res['ends'].append(e); res['lp'].append(lp.astype(np.float16))
        p=np.exp(lp)
        excl=p[:,1:4]  # exclusive P for A,B,C
        act=p@PS
        # fbank frames inside window (actual audio only)
        k0=max(0,(a+159)//160); k1=(e-400)//160+1
        if k1-k0<50: continue
        kc=np.arange(k0,k1)*160+200-s  # centre in window samples
        fi=(kc-495.5)/270.0
        fi=np.clip(fi,0,len(p)-1)
        i0=np.floor(fi).astype(int); i1=np.minimum(i0+1,len(p)-1); t=(fi-i0)[:,None]
        ex=excl[i0]*(1-t)+excl[i1]*t
        feats=F[k0:k1]; feats=feats-feats.mean(0,keepdims=True)
        todo=[l for l in range(3) if act[:,l].max()>=0.5 and ex[:,l].sum()>=20]
        if not todo: continue
        out_e=embed_weighted(feats.astype(np.float32),ex[:,todo].T.astype(np.float32))
        for j,l in enumerate(todo):
            res['emb'][(wi,l)]=out_e[j]; res['wsum'][(wi,l)]=float(ex[:,l].sum())
    np.save(out,res,allow_pickle=True)
if __name__=='__main__':
    d,o=sys.argv[1],sys.argv[2]; os.makedirs(o,exist_ok=True)
    for f in sorted(os.listdir(d)):
        if f.endswith('.wav'):
            p=os.path.join(o,f[:-4]+'.npy')
            if not os.path.exists(p): run(os.path.join(d,f),p); print(f,flush=True)
