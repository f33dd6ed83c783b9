#!/usr/bin/env python3
"""Splits segmentation-3.0-int8.onnx at its first convolution, so overlapping windows share that work.

segmentation-3.0 begins with SincNet: an instance norm of the waveform (one mean and variance per window, a
learnt scale gamma and shift beta), then 80 band-pass filters of 251 taps at stride 10 (no bias), then |.|,
pooling and the rest. The first convolution is about two thirds of the front end's cost, and whospoke runs a 5 s
window every 1 s, so each second of audio went through it five times. Because the norm is affine and the
convolution linear and bias-free,

    conv(norm(x)) = a * conv(x) + c * K,   a = gamma / sqrt(var + eps),  c = beta - a * mean,  K_f = sum of filter f

where mean and var are the window's. conv(x) of the raw stream does not depend on the window (for windows that
start on a multiple of the stride), so whospoke computes it once per new second of audio and keeps it.

Writes two models next to the input:
- segmentation-3.0-sincconv.onnx: input "waveform" [1, 1, n] (raw 16 kHz samples, no normalisation) ->
  "conv" [1, 80, (n - 251) / 10 + 1]: the first convolution alone (its weights copied from the model).
- segmentation-3.0-int8-rest.onnx: inputs "conv" [1, 80, F] (the window's frames of that convolution), "mean"
  [1] and "var" [1] (the window's mean and population variance) -> "log_probs" [1, F', 7]: a and c from the
  norm's gamma, beta and eps, |a * conv + c * K|, then every node of the model after its first |.|, unchanged
  (the 8-bit LSTMs included).

    python -m venv venv && venv/bin/pip install onnx==1.23.2 onnxruntime==1.31.1 numpy soundfile
    venv/bin/python models/split_segmentation.py [--models-dir models]

Self-check (exit non-zero on failure), on 5 s windows of assets/demo/demo.flac every 1 s, the convolution
computed once over the whole recording as whospoke does: the float model split the same way gives the whole float
model's P(speech) within 1e-4 (the algebra is exact); the 8-bit split differs from the whole 8-bit model by at
most 0.005 on average and agrees on speech / non-speech on 99 % of the frames (its LSTMs scale their inputs per
call, so float rounding in front of them shows), and stays within quantize_segmentation.py's bounds of the float
model. Deterministic: two runs give the same bytes.
"""

import argparse
import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import soundfile as sf
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
from export_campplus_trunk import sha256  # noqa: E402

INT8_SHA256 = "fab1eb8fcdc1e2f103b0ef8d7a005d3221b26ae39ca49cfbd164fb6730645802"
STRIDE, TAPS = 10, 251


def split(src, front_path, rest_path):
    m = onnx.load(src)
    g = m.graph
    nodes = list(g.node)
    inits = {i.name: i for i in g.initializer}
    norm = next(n for n in nodes if n.op_type == "InstanceNormalization" and n.input[0] == "waveform")
    conv = next(n for n in nodes if n.op_type == "Conv" and n.input[0] == norm.output[0])
    absn = next(n for n in nodes if n.op_type == "Abs" and n.input[0] == conv.output[0])
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    if (len(conv.input) != 2 or attrs.get("strides") != [STRIDE] or attrs.get("kernel_shape") != [TAPS]
            or any(attrs.get("pads", [0, 0])) or attrs.get("group", 1) != 1):
        sys.exit(f"unexpected first convolution: inputs {list(conv.input)}, attributes {attrs}")
    w = numpy_helper.to_array(inits[conv.input[1]])  # [80, 1, 251]
    gamma = float(numpy_helper.to_array(inits[norm.input[1]]).reshape(-1)[0])
    beta = float(numpy_helper.to_array(inits[norm.input[2]]).reshape(-1)[0])
    eps = next(helper.get_attribute_value(a) for a in norm.attribute if a.name == "epsilon")
    filters = w.shape[0]

    # Front: the convolution alone.
    front = helper.make_graph(
        [helper.make_node("Conv", ["waveform", "W"], ["conv"], strides=[STRIDE], kernel_shape=[TAPS])],
        "sincconv",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, [1, 1, "samples"])],
        [helper.make_tensor_value_info("conv", TensorProto.FLOAT, [1, filters, "frames"])],
        [numpy_helper.from_array(w, "W")],
    )
    fm = helper.make_model(front, opset_imports=list(m.opset_import), producer_name="whospoke split_segmentation.py")
    fm.ir_version = m.ir_version
    onnx.checker.check_model(fm)
    onnx.save(fm, front_path)

    # Rest: |scale * conv + shift * K|, then everything after the first |.|.
    k = w.sum(axis=(1, 2)).astype(np.float32).reshape(1, filters, 1)
    consts = [
        numpy_helper.from_array(np.array([gamma], np.float32), "split/gamma"),
        numpy_helper.from_array(np.array([beta], np.float32), "split/beta"),
        numpy_helper.from_array(np.array([eps], np.float32), "split/eps"),
    ]
    head = [
        # scale = gamma / sqrt(var + eps), shift = beta - scale * mean: the instance norm's affine map.
        helper.make_node("Add", ["var", "split/eps"], ["split/var_eps"]),
        helper.make_node("Sqrt", ["split/var_eps"], ["split/std"]),
        helper.make_node("Div", ["split/gamma", "split/std"], ["scale"]),
        helper.make_node("Mul", ["scale", "mean"], ["split/scaled_mean"]),
        helper.make_node("Sub", ["split/beta", "split/scaled_mean"], ["shift"]),
        helper.make_node("Mul", ["conv", "scale"], ["split/scaled"]),
        helper.make_node("Mul", ["shift", "split/K"], ["split/shiftK"]),
        helper.make_node("Add", ["split/scaled", "split/shiftK"], ["split/normed"]),
        helper.make_node("Abs", ["split/normed"], [absn.output[0]]),
    ]
    drop = {norm.name, conv.name, absn.name}
    rest_nodes = head + [n for n in nodes if n.name not in drop]
    used = {i for n in rest_nodes for i in n.input}
    rest_inits = [i for i in g.initializer if i.name in used]
    rest_inits.append(numpy_helper.from_array(k, "split/K"))
    rest_inits.extend(consts)
    rest = helper.make_graph(
        rest_nodes,
        "segmentation-3.0-int8-rest",
        [
            helper.make_tensor_value_info("conv", TensorProto.FLOAT, [1, filters, "frames"]),
            helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("var", TensorProto.FLOAT, [1]),
        ],
        list(g.output),
        rest_inits,
        value_info=list(g.value_info),
    )
    rm = helper.make_model(rest, opset_imports=list(m.opset_import), producer_name="whospoke split_segmentation.py")
    rm.ir_version = m.ir_version
    onnx.checker.check_model(rm)
    onnx.save(rm, rest_path)
    return gamma, beta, eps


def mean_var(window):
    """The window's mean and (population) variance, as whospoke computes them (src/segment.rs, in f64)."""
    x = window.astype(np.float64)
    mean = x.mean()
    return np.float32(mean), np.float32(((x - mean) ** 2).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default=HERE)
    ap.add_argument("--demo", default=os.path.join(HERE, "..", "assets", "demo", "demo.flac"))
    args = ap.parse_args()
    src = os.path.join(args.models_dir, "segmentation-3.0-int8.onnx")
    if sha256(src) != INT8_SHA256:
        sys.exit(f"{src}: sha256 {sha256(src)}, expected {INT8_SHA256}")
    front_path = os.path.join(args.models_dir, "segmentation-3.0-sincconv.onnx")
    rest_path = os.path.join(args.models_dir, "segmentation-3.0-int8-rest.onnx")
    split(src, front_path, rest_path)

    audio, sr = sf.read(args.demo, dtype="float32")
    if sr != 16000 or audio.ndim != 1:
        sys.exit(f"{args.demo}: expected 16 kHz mono")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1

    def session(path):
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    # The algebra, on the float model split the same way (in a temporary directory): equal within float error.
    float_src = os.path.join(args.models_dir, "segmentation-3.0.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        ff, fr = os.path.join(tmp, "front.onnx"), os.path.join(tmp, "rest.onnx")
        split(float_src, ff, fr)
        float_parts = (session(ff), session(fr))
    float_whole = session(float_src)
    int8_whole = session(src)
    int8_parts = (session(front_path), session(rest_path))
    frames = (80000 - TAPS) // STRIDE + 1

    def p_speech_split(parts, conv, s, x):
        mean, var = mean_var(x)
        c0 = s // STRIDE
        feeds = {"conv": conv[None, :, c0 : c0 + frames], "mean": np.array([mean]), "var": np.array([var])}
        return 1 - np.exp(parts[1].run(None, feeds)[0][0][:, 0])

    def p_speech(sess, x):
        return 1 - np.exp(sess.run(None, {"waveform": x[None, None]})[0][0][:, 0])

    # The convolution once over the whole recording, as whospoke keeps it.
    conv_f = float_parts[0].run(None, {"waveform": audio[None, None]})[0][0]
    conv_i = int8_parts[0].run(None, {"waveform": audio[None, None]})[0][0]
    exact, vs_int8, vs_float, agree, total = [], [], [], 0, 0
    for s in range(0, len(audio) - 80000, 16000):
        x = audio[s : s + 80000]
        pf = p_speech(float_whole, x)
        exact.append(np.abs(p_speech_split(float_parts, conv_f, s, x) - pf).max())
        pi = p_speech(int8_whole, x)
        ps = p_speech_split(int8_parts, conv_i, s, x)
        vs_int8.append(np.abs(ps - pi))
        vs_float.append(np.abs(ps - pf))
        agree += int(((ps >= 0.5) == (pi >= 0.5)).sum())
        total += len(ps)
    d8, df = np.concatenate(vs_int8), np.concatenate(vs_float)
    checks = [
        (max(exact) <= 1e-4, f"float model: max |P(speech) split - whole| {max(exact):.1e} (<= 1e-4: the algebra is exact)"),
        # The 8-bit LSTMs scale their inputs per call, so float rounding in front of them moves P(speech) a
        # little: by less than the 8-bit model differs from the float one (quantize_segmentation.py's bounds).
        (d8.mean() <= 0.005, f"8-bit: mean |P(speech) split - whole| {d8.mean():.4f} (<= 0.005), max {d8.max():.3f}"),
        (agree / total >= 0.99, f"8-bit: speech / non-speech agreement with the whole model {100 * agree / total:.2f} % of {total} frames (>= 99 %)"),
        (df.max() <= 0.15 and df.mean() <= 0.02, f"8-bit split vs float: max {df.max():.3f} (<= 0.15), mean {df.mean():.4f} (<= 0.02)"),
    ]
    for ok, what in checks:
        print(("ok   " if ok else "FAIL ") + what)
    if not all(ok for ok, _ in checks):
        sys.exit("self-check FAILED")
    print(f"wrote {front_path} ({sha256(front_path)})")
    print(f"wrote {rest_path} ({sha256(rest_path)})")


if __name__ == "__main__":
    main()
