#!/usr/bin/env python3
"""Rewrites CAM++'s context-aware masking so that its context branch runs on segments, not on frames.

Every one of CAM++'s 52 D-TDNN layers ends in a CAM layer (3D-Speaker, `CAMLayer`):

    y       = linear_local(x)                               # frames
    context = mean_over_time(x) + seg_pooling(x)            # seg_pooling: mean of each 100-frame segment,
                                                            #   copied back onto that segment's frames
    m       = sigmoid(linear2(relu(linear1(context))))      # linear1, linear2: 1x1 convolutions
    out     = y * m

The exported graph copies each segment's mean onto its frames (Unsqueeze, Expand, Reshape, Slice) *before* the
two 1x1 convolutions, so for a 1.5 s window they run on 74 identical-per-segment columns instead of the 2
distinct ones. Everything between the copy and `y * m` works column by column (1x1 Conv, Relu, Sigmoid, and the
per-tensor QuantizeLinear/DequantizeLinear of the 8-bit model), so the copy can move to the end: the rewritten
graph adds the mean to the segment means, runs the branch on one column per segment, and gathers each frame's
segment column (`Gather(m, frame // 100)`, the frame -> segment index built once for all layers) just before
`y * m`. Same arithmetic on the same values: the 8-bit model's output is bit-identical (checked below); a
window's embedding costs about 1.1x less (timed below, interleaved).

    venv/bin/python models/cam_context.py IN.onnx OUT.onnx   # rewrites and checks (exit non-zero on failure)

`quantize_campplus_trunk.py` applies it to the 8-bit trunk it writes. Only needs onnx, onnxruntime and numpy.
"""

import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

SEG_LEN = 100  # 3D-Speaker CAMLayer.seg_pooling(seg_len=100)
PER_COLUMN = {"QuantizeLinear", "DequantizeLinear", "Relu"}


def _const(name, value):
    arr = np.array(value, dtype=np.int64)
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name), name=name)


def rewrite(model):
    """Returns the number of CAM layers rewritten; `model` is changed in place."""
    g = model.graph
    nodes = list(g.node)
    consumers = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def only_consumer(name, what):
        c = consumers.get(name, [])
        if len(c) != 1:
            raise ValueError(f"{what}: expected one consumer of {name}, found {len(c)}")
        return c[0]

    pools = [n for n in nodes if n.op_type == "AveragePool"]
    if not pools:
        raise ValueError("no AveragePool: not a CAM++ graph, or already rewritten")
    idx = "cam_context/segment_of_frame"
    pre = [
        helper.make_node("Shape", [pools[0].input[0]], ["cam_context/T1"], start=2, end=3, name="cam_context/T1"),
        _const("cam_context/axis0", [0]),
        helper.make_node("Squeeze", ["cam_context/T1", "cam_context/axis0"], ["cam_context/T"], name="cam_context/T"),
        _const("cam_context/zero", 0),
        _const("cam_context/one", 1),
        _const("cam_context/seg_len", SEG_LEN),
        helper.make_node("Range", ["cam_context/zero", "cam_context/T", "cam_context/one"], ["cam_context/frame"],
                         name="cam_context/frame"),
        helper.make_node("Div", ["cam_context/frame", "cam_context/seg_len"], [idx], name=idx),
    ]
    gathers = {}
    for p in pools:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in p.attribute}
        if list(attrs.get("kernel_shape", [])) != [SEG_LEN] or list(attrs.get("strides", [])) != [SEG_LEN]:
            raise ValueError(f"{p.name}: not a {SEG_LEN}-frame segment pooling: {attrs}")
        # AveragePool -> Unsqueeze -> Expand -> Reshape -> Slice -> Add(mean, .)
        cur, chain = p.output[0], []
        for op in ("Unsqueeze", "Expand", "Reshape", "Slice"):
            nxt = [c for c in consumers.get(cur, []) if c.op_type == op]
            if len(nxt) != 1:
                raise ValueError(f"{p.name}: expected {op} after {cur}")
            chain.append(nxt[0])
            cur = nxt[0].output[0]
        add = only_consumer(cur, p.name)
        if add.op_type != "Add":
            raise ValueError(f"{p.name}: the expanded segment means feed {add.op_type}, not Add")
        add.input[list(add.input).index(cur)] = p.output[0]
        # Add -> (per-column ops, 1x1 convolutions) -> Sigmoid -> Mul(y, .)
        cur = add.output[0]
        while True:
            n = only_consumer(cur, p.name)
            if n.op_type == "Sigmoid":
                break
            if n.op_type == "Conv":
                k = [a for a in n.attribute if a.name == "kernel_shape"]
                if not k or list(k[0].ints) != [1]:
                    raise ValueError(f"{n.name}: only 1x1 convolutions may sit in the context branch")
            elif n.op_type not in PER_COLUMN:
                raise ValueError(f"{n.name}: {n.op_type} in the context branch is not column-wise")
            cur = n.output[0]
        mul = only_consumer(n.output[0], p.name)
        if mul.op_type != "Mul":
            raise ValueError(f"{p.name}: the mask feeds {mul.op_type}, not Mul")
        # The index is built once from the first layer's frames: every CAM layer runs on as many frames
        # (the trunk changes time only before its first D-TDNN block); check_same() confirms it.
        expanded = n.output[0] + "/frames"
        gathers[id(mul)] = helper.make_node("Gather", [n.output[0], idx], [expanded], axis=2,
                                            name=n.name + "/frames")
        mul.input[list(mul.input).index(n.output[0])] = expanded
    out = []
    for n in nodes:
        if n is pools[0]:
            out.extend(pre)
        if id(n) in gathers:
            out.append(gathers[id(n)])
        out.append(n)
    # Drop what no longer reaches an output (the copy chains and their shape arithmetic).
    needed = {o.name for o in g.output}
    keep = []
    for n in reversed(out):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in keep for i in n.input}
    dead = [t for t in g.initializer if t.name not in used]
    for t in dead:
        g.initializer.remove(t)
    onnx.checker.check_model(model)
    return len(pools)


def check_same(before, after, lengths=(11, 60, 148, 150, 201, 250, 400)):
    """Max |difference| of the outputs of two trunk models over random features of several lengths."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    a = ort.InferenceSession(before, so, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(after, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for t in lengths:
        x = rng.standard_normal((1, t, 80)).astype(np.float32)
        ya, yb = a.run(None, {"feats": x})[0], b.run(None, {"feats": x})[0]
        if ya.shape != yb.shape:
            raise ValueError(f"T={t}: shapes {ya.shape} and {yb.shape}")
        worst = max(worst, float(np.abs(ya - yb).max()))
    return worst


def time_both(before, after, frames=148, rounds=9, runs=40):
    """Median ms per window of each model, one thread, measured interleaved (this machine's speed drifts)."""
    import time

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.add_free_dimension_override_by_name("batch", 1)
    so.add_free_dimension_override_by_name("frames", frames)
    # as whospoke builds its sessions (src/runtime.rs: DISABLED_OPTIMIZERS)
    opts = dict(providers=["CPUExecutionProvider"], disabled_optimizers=["NhwcTransformer"])
    sessions = [ort.InferenceSession(p, so, **opts) for p in (before, after)]
    x = np.random.default_rng(1).standard_normal((1, frames, 80)).astype(np.float32)
    times = [[], []]
    for s in sessions:
        for _ in range(runs // 2):
            s.run(None, {"feats": x})
    for _ in range(rounds):
        for k, s in enumerate(sessions):
            t = time.perf_counter()
            for _ in range(runs):
                s.run(None, {"feats": x})
            times[k].append((time.perf_counter() - t) / runs * 1e3)
    return float(np.median(times[0])), float(np.median(times[1]))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    model = onnx.load(src)
    before = len(model.graph.node)
    n = rewrite(model)
    onnx.save(model, dst)
    diff = check_same(src, dst)
    print(f"{dst}: {n} CAM layers, {before} -> {len(model.graph.node)} nodes; max |difference| {diff:g}")
    a, b = time_both(src, dst)
    print(f"one 1.5 s window (148 frames), one thread, median of 9 interleaved rounds: {a:.2f} ms before, "
          f"{b:.2f} ms after ({a / b:.2f}x)")
    if diff != 0.0 and "int8" in dst:
        sys.exit("FAIL: the 8-bit rewrite must be bit-identical")


if __name__ == "__main__":
    main()
