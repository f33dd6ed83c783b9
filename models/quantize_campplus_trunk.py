#!/usr/bin/env python3
"""Derives campplus_trunk_int8.onnx: the CAM++ trunk (campplus_trunk.onnx) with its convolutions in 8 bits.

ONNX Runtime's static quantisation (QDQ format; convolution weights int8 per output channel, activations uint8
with ranges calibrated on real speech: the 99.999th percentile of each activation, so that rare peaks do not
stretch the range), so the convolutions run as integer kernels: about 1.8x faster per window
on a CPU with AVX-512 VNNI, less without. The input, the output and everything between the convolutions stay
float; the model file shrinks from 27.5 MB to about 8.5 MB.

Calibration audio: the repository's own assets/demo/demo.flac (LibriSpeech test-clean excerpts, CC BY 4.0),
clean and again mixed with noise at 15 dB SNR after a synthetic room (both from fixed seeds), cut into 1.5 s
windows every 0.37 s, as fbank features exactly as whospoke computes them (Kaldi fbank, per-window mean removed).
Nothing from the evaluation sets is used. Deterministic: two runs give the same bytes.

Then models/cam_context.py moves the CAM layers' per-segment context onto one column per segment (the quantized
model's output bit for bit, about 1.1x faster); the quantized model before that step had sha256
eeebe920e4c6d643642d26bfb05ee61a383175f7da47d32659707627a85c7411.

Only needs numpy, onnx, onnxruntime and soundfile (no torch):

    python -m venv venv && venv/bin/pip install onnx==1.23.2 onnxruntime==1.31.1 numpy soundfile
    venv/bin/python models/quantize_campplus_trunk.py [--models-dir models]

Self-checks (exit non-zero on failure), on tests/data/campplus-ref (two speakers of a dev recording, not used for
calibration): the int8 trunk + head embedding of each clip against the float one (cosine >= 0.98), and the two
speakers stay apart.
"""

import argparse
import os
import struct
import sys

import numpy as np
import onnx
import onnxruntime as ort
import soundfile as sf
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
from cam_context import check_same, rewrite  # noqa: E402
from export_campplus_trunk import head, sha256  # noqa: E402

TRUNK_SHA256 = "1ceaf62f27890a6daf59152609c861903c2ae613bd2b3cc006a410da98460219"
WINDOW = 148  # fbank frames of a 1.5 s window
HOP = 37


def mel_banks():
    n_fft, nb, sr = 512, 80, 16000
    mel = lambda f: 1127.0 * np.log(1 + f / 700.0)  # noqa: E731
    ml, mh = mel(20.0), mel(8000.0)
    d = (mh - ml) / (nb + 1)
    m = mel(sr / n_fft * np.arange(256))
    w = np.zeros((nb, 257))
    for b in range(nb):
        lo, c, hi = ml + b * d, ml + (b + 1) * d, ml + (b + 2) * d
        w[b, :256] = np.maximum(0, np.minimum((m - lo) / (c - lo), (hi - m) / (hi - c)))
    return w


def fbank(x):
    """Kaldi fbank as whospoke computes it (src/fbank.rs; ../shared/notes/models.md)."""
    x = np.asarray(x, np.float64)
    n = 1 + (len(x) - 400) // 160
    idx = np.arange(400)[None, :] + 160 * np.arange(n)[:, None]
    fr = x[idx]
    fr = fr - fr.mean(1, keepdims=True)
    fr = fr - 0.97 * np.concatenate([fr[:, :1], fr[:, :-1]], 1)
    fr = fr * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 399)) ** 0.85
    e = (np.abs(np.fft.rfft(fr, 512)) ** 2) @ mel_banks().T
    return np.log(np.maximum(e, 1.1920929e-07)).astype(np.float32)


def noisy_room(x, seed):
    """x through a synthetic room (exponentially decaying noise, RT60 ~0.4 s) plus noise at 15 dB SNR."""
    rng = np.random.default_rng(seed)
    n = 6400
    ir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
    ir[0] = 1.0
    y = np.convolve(x, ir)[: len(x)]
    y *= np.sqrt((x**2).mean() / max((y**2).mean(), 1e-12))
    noise = np.cumsum(rng.standard_normal(len(x)))  # brownish
    noise -= np.convolve(noise, np.ones(801) / 801, mode="same")
    noise *= np.sqrt((y**2).mean() / (noise**2).mean() / 10 ** 1.5)
    y = y + noise
    return (y / max(1.0, np.abs(y).max())).astype(np.float32)


def windows(audio):
    f = fbank(audio)
    out = []
    for s in range(0, len(f) - WINDOW, HOP):
        w = f[s : s + WINDOW]
        out.append((w - w.mean(0))[None].astype(np.float32))
    return out


class Reader(CalibrationDataReader):
    def __init__(self, items):
        self.it = iter(items)

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {"feats": x}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default=HERE)
    ap.add_argument("--demo", default=os.path.join(HERE, "..", "assets", "demo", "demo.flac"))
    ap.add_argument("--ref-dir", default=os.path.join(HERE, "..", "tests", "data", "campplus-ref"))
    args = ap.parse_args()
    src = os.path.join(args.models_dir, "campplus_trunk.onnx")
    if sha256(src) != TRUNK_SHA256:
        sys.exit(f"{src}: sha256 {sha256(src)}, expected {TRUNK_SHA256}")
    audio, sr = sf.read(args.demo, dtype="float32")
    if sr != 16000 or audio.ndim != 1:
        sys.exit(f"{args.demo}: expected 16 kHz mono")
    cal = windows(audio) + windows(noisy_room(audio, 7))
    print(f"calibration: {len(cal)} windows of {WINDOW} frames")
    dst = os.path.join(args.models_dir, "campplus_trunk_int8.onnx")
    plain = os.path.join(args.models_dir, "campplus_trunk_int8.plain.onnx")
    quantize_static(
        src,
        plain,
        Reader(cal),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["Conv"],
        calibrate_method=CalibrationMethod.Percentile,
    )
    print(f"quantized: {plain} ({sha256(plain)})")
    # The CAM layers' context branch on one column per segment instead of per frame (models/cam_context.py):
    # bit-identical output, about 1.1x faster (models/cam_context.py times both).
    model = onnx.load(plain)
    layers = rewrite(model)
    onnx.save(model, dst)
    diff = check_same(plain, dst)
    os.remove(plain)
    print(("ok   " if diff == 0.0 else "FAIL ") + f"{layers} CAM layers rewritten; max |difference| {diff:g}")
    if diff != 0.0:
        sys.exit("self-check FAILED: the rewritten 8-bit trunk differs from the quantized one")
    # Self-checks on the reference clips.
    hb = open(os.path.join(args.models_dir, "campplus_head.bin"), "rb").read()
    o, i, eps = struct.unpack("<IIf", hb[8:20])
    v = np.frombuffer(hb[20:], "<f4")
    params = (v[: o * i].reshape(o, i), v[o * i : o * i + o], v[o * i + o :], eps)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    f32 = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    i8 = ort.InferenceSession(dst, so, providers=["CPUExecutionProvider"])
    failures = []
    embs = []
    for clip in ("clip0", "clip1"):
        raw = np.fromfile(os.path.join(args.ref_dir, f"{clip}_fbank_raw.f32"), "<f4").reshape(-1, 80)
        feats = (raw - raw.mean(0, keepdims=True)).astype(np.float32)[None]
        ones = np.ones(feats.shape[1])
        a = head(f32.run(None, {"feats": feats})[0][0], ones, *params)
        b = head(i8.run(None, {"feats": feats})[0][0], ones, *params)
        cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        ok = cos >= 0.98
        print(("ok   " if ok else "FAIL ") + f"{clip}: cosine(int8, float) {cos:.4f}")
        if not ok:
            failures.append(clip)
        embs.append(b / np.linalg.norm(b))
    cross = float(embs[0] @ embs[1])
    print(("ok   " if cross < 0.3 else "FAIL ") + f"the two speakers' int8 embeddings: cosine {cross:.3f}")
    if cross >= 0.3:
        failures.append("speakers")
    if failures:
        sys.exit(f"self-check FAILED: {failures}")
    print(f"wrote {dst} ({sha256(dst)})")


if __name__ == "__main__":
    main()
