#!/usr/bin/env python3
"""Derives the CAM++ trunk + head used for speaker-conditioned (frame-weighted) embeddings from campplus.onnx.

    campplus_trunk.onnx  feats [B, T, 80] -> frames [B, 512, T']   (CAM++ up to, not including, statistics pooling)
    campplus_head.bin    the dense layer and final batch norm that follow the pooling (whospoke runs them, and the
                         frame-weighted statistics pooling, in Rust: src/embed.rs)

Why: ONNX Runtime's kernels for a weighted pooling inside the graph (models/export_campplus.py's campplus_weighted)
give results that differ in the last bits between a window embedded alone and the same window inside a batch
(SIMD reductions over differently aligned buffers), so labels would depend on how windows happen to be batched,
i.e. on thread timing. The trunk alone is batch-invariant bit for bit (checked below), and pooling plus head in
Rust are deterministic; the weights can also change without rerunning the trunk.

Only needs onnx, onnxruntime and numpy (no torch): the trunk is a plain cut of the committed campplus.onnx, whose
sha256 is checked first, and the head's numbers are copied from its initializers. Deterministic.

    python -m venv venv && venv/bin/pip install onnx==1.23.2 onnxruntime==1.31.1 numpy
    venv/bin/python models/export_campplus_trunk.py [--models-dir models] [--ref-dir tests/data/campplus-ref]

campplus_head.bin layout (little-endian): 8 bytes magic b"WSCAMHD1", u32 out_dim (192), u32 in_dim (1024 =
mean and std of 512 channels), f32 eps; then f32 W[out_dim][in_dim] (row-major), f32 running_mean[out_dim],
f32 running_var[out_dim]. embedding = (W @ concat(mean, std) - running_mean) / sqrt(running_var + eps).
"""

import argparse
import hashlib
import os
import struct
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
CAMPPLUS_SHA256 = "433893672d30524f49c25d7c96e3d179b076f939767c2f438cef5f4e7e307feb"
TRUNK_OUT = "/m/xvector/out_nonlinear/relu/Relu_output_0"
DENSE_W = "m.xvector.dense.linear.weight"
BN_MEAN = "m.xvector.dense.nonlinear.batchnorm.running_mean"
BN_VAR = "m.xvector.dense.nonlinear.batchnorm.running_var"
MAGIC = b"WSCAMHD1"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cut_trunk(model):
    g = model.graph
    k = [i for i, n in enumerate(g.node) if TRUNK_OUT in n.output]
    if len(k) != 1:
        sys.exit(f"campplus.onnx: no single node produces {TRUNK_OUT}")
    tail = [n.op_type for n in g.node[k[0] + 1:]]
    if "ReduceMean" not in tail or tail[-1] != "BatchNormalization":
        sys.exit(f"campplus.onnx: unexpected graph after the trunk: {tail}")
    keep = list(g.node[: k[0] + 1])
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in keep for i in n.input}
    inits = [x for x in g.initializer if x.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.output[:]
    g.output.append(onnx.helper.make_tensor_value_info("frames", onnx.TensorProto.FLOAT, ["batch", 512, "pooled"]))
    g.node[len(g.node) - 1].output[0] = "frames"
    del g.value_info[:]
    onnx.checker.check_model(model, full_check=True)
    return model


def head_params(model):
    inits = {x.name: numpy_helper.to_array(x) for x in model.graph.initializer}
    bn = [n for n in model.graph.node if n.op_type == "BatchNormalization" and n.output[0] == "embedding"]
    if len(bn) != 1:
        sys.exit("campplus.onnx: the output batch norm was not found")
    eps = [a.f for a in bn[0].attribute if a.name == "epsilon"][0]
    consts = {}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] in bn[0].input[1:3]:
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    scale, bias = consts[bn[0].input[1]], consts[bn[0].input[2]]
    if not (np.all(scale == 1) and np.all(bias == 0)):
        sys.exit("campplus.onnx: the output batch norm is not affine=False (scale 1, bias 0)")
    w = inits[DENSE_W]
    if w.shape != (192, 1024, 1):
        sys.exit(f"campplus.onnx: dense weight shape {w.shape}")
    return w[:, :, 0].astype(np.float32), inits[BN_MEAN].astype(np.float32), inits[BN_VAR].astype(np.float32), eps


def pooled_weights(w, t2):
    """avg_pool1d(kernel 5, stride 2, padding 2, count_include_pad=False) of [T] weights, to T' values."""
    t = len(w)
    out = np.empty(t2, np.float64)
    for j in range(t2):
        a, b = max(0, 2 * j - 2), min(t, 2 * j + 3)
        out[j] = w[a:b].mean()
    return out


def head(frames, weights, W, mean, var, eps):
    """Frame-weighted statistics pooling + dense + batch norm, in float64 (what src/embed.rs does)."""
    x = frames.astype(np.float64)  # [C, T']
    w = pooled_weights(weights.astype(np.float64), x.shape[1])
    v1 = max(w.sum(), 1e-6)
    v2 = (w * w).sum()
    mu = (x * w).sum(1) / v1
    d = x - mu[:, None]
    sd = np.sqrt((w * d * d).sum(1) / max(v1 - v2 / v1, 1e-6))
    y = W.astype(np.float64) @ np.concatenate([mu, sd])
    return (y - mean) / np.sqrt(var.astype(np.float64) + eps)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default=HERE)
    ap.add_argument("--ref-dir", default=os.path.join(HERE, "..", "tests", "data", "campplus-ref"))
    args = ap.parse_args()
    plain = os.path.join(args.models_dir, "campplus.onnx")
    got = sha256(plain)
    if got != CAMPPLUS_SHA256:
        sys.exit(f"{plain}: sha256 {got}, expected {CAMPPLUS_SHA256}")
    W, bn_mean, bn_var, eps = head_params(onnx.load(plain))
    trunk_path = os.path.join(args.models_dir, "campplus_trunk.onnx")
    head_path = os.path.join(args.models_dir, "campplus_head.bin")
    onnx.save(cut_trunk(onnx.load(plain)), trunk_path)
    with open(head_path, "wb") as f:
        f.write(MAGIC + struct.pack("<IIf", W.shape[0], W.shape[1], eps))
        f.write(W.astype("<f4").tobytes() + bn_mean.astype("<f4").tobytes() + bn_var.astype("<f4").tobytes())

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    trunk = ort.InferenceSession(trunk_path, so, providers=["CPUExecutionProvider"])
    full = ort.InferenceSession(plain, so, providers=["CPUExecutionProvider"])
    failures = []

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    # 1. Trunk + head with all-ones weights == campplus.onnx; and == the PyTorch reference embeddings.
    for clip in ("clip0", "clip1"):
        raw = np.fromfile(os.path.join(args.ref_dir, f"{clip}_fbank_raw.f32"), "<f4").reshape(-1, 80)
        feats = (raw - raw.mean(0, keepdims=True)).astype(np.float32)[None]
        ref = np.fromfile(os.path.join(args.ref_dir, f"{clip}_emb.f32"), "<f4")
        frames = trunk.run(None, {"feats": feats})[0][0]
        e = head(frames, np.ones(feats.shape[1]), W, bn_mean, bn_var, eps)
        o = full.run(None, {"feats": feats})[0][0]
        d = np.abs(e - o).max() / np.abs(o).max()
        cos = float(e @ ref / np.linalg.norm(e) / np.linalg.norm(ref))
        check(d < 1e-5, f"{clip}: trunk + head (all-ones weights) vs campplus.onnx, relative max|diff| {d:.2e}")
        check(cos > 0.99999, f"{clip}: cosine to the PyTorch reference {cos:.7f}")
    # 2. The trunk is batch-invariant bit for bit (any batch size, any position, several lengths).
    rng = np.random.default_rng(0)
    for t in (51, 100, 148, 149):
        f = rng.standard_normal((4, t, 80)).astype(np.float32)
        single = [trunk.run(None, {"feats": f[i:i + 1]})[0][0] for i in range(4)]
        same = all(
            np.array_equal(trunk.run(None, {"feats": f[:b]})[0][i], single[i]) for b in (2, 3, 4) for i in range(b)
        )
        check(same, f"T={t}: trunk outputs in batches of 2-4 equal the single-window ones bit for bit")
    # 3. Optional: the in-graph weighted model of export_campplus.py, if present, agrees with the Rust-side head.
    weighted = os.path.join(args.models_dir, "campplus_weighted.onnx")
    if os.path.exists(weighted):
        ws = ort.InferenceSession(weighted, so, providers=["CPUExecutionProvider"])
        f = rng.standard_normal((1, 150, 80)).astype(np.float32)
        w = rng.uniform(0, 1, 150).astype(np.float32)
        a = ws.run(None, {"feats": f, "weights": w[None]})[0][0]
        b = head(trunk.run(None, {"feats": f})[0][0], w, W, bn_mean, bn_var, eps)
        d = np.abs(a - b).max() / np.abs(a).max()
        check(d < 1e-4, f"random weights: head vs campplus_weighted.onnx, relative max|diff| {d:.2e}")
    if failures:
        sys.exit(f"self-check FAILED: {failures}")
    print(f"wrote {trunk_path} ({sha256(trunk_path)}) and {head_path} ({sha256(head_path)})")


if __name__ == "__main__":
    main()
