#!/usr/bin/env python3
"""Our network against a standard inference engine, same architecture, same shapes, same run.

1. `cargo bench --bench net` times ICHNet (flex CPU backend, bundled weights, rayon's default
   pool: every core) on the grids the pipeline builds, and prints the network's configuration.
2. From that configuration this script builds the same network as an ONNX graph (random weights:
   timing does not depend on them) -- 3x3 dilated conv + BatchNormalization + ReLU blocks with
   2x2 max-pools, a 1x1 projection of each resolution's hypercolumn taps, bilinear Resize
   (half-pixel centres, as model/bilinear.rs), the sum, and the pixel MLP as 1x1 convolutions --
   and times it in ONNX Runtime with 2 intra-op threads on the same slices in the same batches.
3. It measures the machine's 2-thread f32 GEMM peak (numpy's OpenBLAS sgemm, 2048^3, best of 5)
   and prints GFLOP (multiply-adds x 2 of the convolutions, projections and MLP; pooling,
   resize, ReLU and sigmoid are not counted), GFLOP/s of each, the ratio ours/peer and the
   fraction of the GEMM peak each reaches.

Run from the repository root:  python3 scripts/peer-bench.py [--case sample --case clinical
--case N,H,W ...] [--batch B] [--reps R] [--ops]. Installs numpy, onnx and onnxruntime with pip if
missing. `--ours-json FILE` reuses saved `cargo bench --bench net` output instead of building.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

THREADS = 2


def ensure_packages():
    missing = []
    for mod in ("numpy", "onnx", "onnxruntime"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        print(f"== pip install {' '.join(missing)}", flush=True)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *missing])


def run_ours(cases, batch, reps, extra):
    cmd = ["cargo", "bench", "--profile", "dev", "--bench", "net", "--", *extra]
    for c in cases:
        cmd += ["--case", c]
    if batch:
        cmd += ["--batch", str(batch)]
    cmd += ["--reps", str(reps)]
    env = dict(os.environ)
    # This crate at opt-level 3 as in --release; dependencies are at 3 in every profile.
    env.setdefault("CARGO_PROFILE_DEV_OPT_LEVEL", "3")
    env.setdefault("RAYON_NUM_THREADS", str(THREADS))
    print("== " + " ".join(cmd), flush=True)
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return out


def parse_ours(text):
    config, results = None, []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            if line:
                print("   " + line)
            continue
        obj = json.loads(line)
        if "config" in obj:
            config = obj["config"]
        else:
            results.append(obj)
    if config is None or not results:
        sys.exit("the net benchmark printed no configuration or no results")
    return config, results


def blocks(cfg):
    """(pool, [(c_in, c_out, dilation)], factor) per block, exactly as IchNetConfig::init."""
    out, c_in, factor = [], cfg["in_channels"], 1
    for i, w in enumerate(cfg["widths"]):
        d = max(cfg["dilations"][i] if i < len(cfg["dilations"]) else 1, 1)
        pool = 1 <= i <= cfg["pools"]
        if pool:
            factor *= 2
        convs = []
        for k in range(max(cfg["convs_per_block"], 1)):
            convs.append((c_in if k == 0 else w, w, d))
        out.append((pool, convs, factor))
        c_in = w
    return out


def gflop(cfg, slices, h, w):
    hidden = cfg["mlp"][0] if cfg["mlp"] else 64
    total = 0.0
    for _pool, convs, f in blocks(cfg):
        px = (h // f) * (w // f)
        for ci, co, _d in convs:
            total += 2 * 9 * ci * co * px
        total += 2 * convs[-1][1] * hidden * px  # this tap's rows of the first MLP layer
    prev = hidden
    for m in list(cfg["mlp"][1:]) + [1]:
        total += 2 * prev * m * h * w
        prev = m
    return total * slices / 1e9


def build_onnx(cfg, n, h, w):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    inits, nodes = [], []

    def param(name, arr):
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def conv(x, name, c_in, c_out, k, d, bias=True):
        wt = rng.normal(0, (2.0 / (c_in * k * k)) ** 0.5, (c_out, c_in, k, k))
        ins = [x, param(name + ".w", wt)]
        if bias:
            ins.append(param(name + ".b", rng.normal(0, 0.01, c_out)))
        pad = d * (k // 2)
        nodes.append(
            helper.make_node(
                "Conv", ins, [name], kernel_shape=[k, k], dilations=[d, d], pads=[pad] * 4
            )
        )
        return name

    x = "x"
    taps = []
    for bi, (pool, convs, f) in enumerate(blocks(cfg)):
        if pool:
            nodes.append(
                helper.make_node("MaxPool", [x], [f"pool{bi}"], kernel_shape=[2, 2], strides=[2, 2])
            )
            x = f"pool{bi}"
        for ki, (ci, co, d) in enumerate(convs):
            name = f"b{bi}c{ki}"
            y = conv(x, name, ci, co, 3, d)
            bn = [
                y,
                param(name + ".g", rng.uniform(0.5, 1.5, co)),
                param(name + ".beta", rng.normal(0, 0.1, co)),
                param(name + ".mean", rng.normal(0, 0.1, co)),
                param(name + ".var", rng.uniform(0.5, 1.5, co)),
            ]
            nodes.append(helper.make_node("BatchNormalization", bn, [name + ".bn"]))
            nodes.append(helper.make_node("Relu", [name + ".bn"], [name + ".r"]))
            x = name + ".r"
        taps.append((x, convs[-1][1], f))

    hidden = cfg["mlp"][0] if cfg["mlp"] else 64
    # Taps of one resolution share one 1x1 projection (their rows of the first MLP layer) and one
    # Resize; only the full-resolution projection carries the layer's bias.
    by_factor = {}
    for t, c, f in taps:
        by_factor.setdefault(f, []).append((t, c))
    parts = []
    for f, group in sorted(by_factor.items()):
        if len(group) > 1:
            cat = f"cat{f}"
            nodes.append(helper.make_node("Concat", [t for t, _ in group], [cat], axis=1))
        else:
            cat = group[0][0]
        c = sum(c for _, c in group)
        p = conv(cat, f"proj{f}", c, hidden, 1, 1, bias=(f == 1))
        if f > 1:
            scales = param(f"scales{f}", np.array([1, 1, f, f], dtype=np.float32))
            nodes.append(
                helper.make_node(
                    "Resize",
                    [p, "", scales],
                    [f"up{f}"],
                    mode="linear",
                    coordinate_transformation_mode="half_pixel",
                )
            )
            p = f"up{f}"
        parts.append(p)
    nodes.append(helper.make_node("Sum", parts, ["z"]))
    nodes.append(helper.make_node("Relu", ["z"], ["h0"]))
    prev, hname = hidden, "h0"
    for i, m in enumerate(cfg["mlp"][1:]):
        y = conv(hname, f"mlp{i}", prev, m, 1, 1)
        nodes.append(helper.make_node("Relu", [y], [f"h{i + 1}"]))
        prev, hname = m, f"h{i + 1}"
    logit = conv(hname, "out", prev, 1, 1, 1)
    nodes.append(helper.make_node("Sigmoid", [logit], ["prob"]))

    graph = helper.make_graph(
        nodes,
        "ichnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, cfg["in_channels"], h, w])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [n, 1, h, w])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def time_peer(cfg, case, reps):
    import numpy as np
    import onnxruntime as ort

    n_all, h, w, batch = case["slices"], case["height"], case["width"], case["batch"]
    sizes = []
    s = 0
    while s < n_all:
        sizes.append(min(batch, n_all - s))
        s += batch
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sessions = {}
    for n in set(sizes):
        sessions[n] = ort.InferenceSession(
            build_onnx(cfg, n, h, w), opts, providers=["CPUExecutionProvider"]
        )
    rng = np.random.default_rng(1)
    xs = [rng.random((n, cfg["in_channels"], h, w), dtype=np.float32) for n in sizes]
    runs = []
    for _ in range(reps + 1):
        t = time.perf_counter()
        for x in xs:
            sessions[x.shape[0]].run(None, {"x": x})
        runs.append(time.perf_counter() - t)
    return runs[0], statistics.median(runs[1:])


def gemm_peak():
    code = (
        "import numpy as np, time\n"
        "n=2048\n"
        "a=np.random.rand(n,n).astype(np.float32); b=np.random.rand(n,n).astype(np.float32)\n"
        "a@b\n"
        "best=min((lambda t:(a@b, time.perf_counter()-t)[1])(time.perf_counter()) for _ in range(5))\n"
        "print(2*n**3/best/1e9)\n"
    )
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(THREADS)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return float(out.strip())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", help="sample, clinical or N,H,W (repeatable)")
    ap.add_argument("--batch", type=int, default=0, help="slices per call (default: the pipeline's)")
    ap.add_argument("--reps", type=int, default=3, help="timed runs after one warm-up run")
    ap.add_argument("--ours-json", help="saved output of cargo bench --bench net")
    ap.add_argument("--ops", action="store_true",
                    help="time our network through burn's ops (the GPU path) instead of the CPU path")
    args = ap.parse_args()
    ensure_packages()
    cases = args.case or ["sample", "clinical"]
    if args.ours_json:
        with open(args.ours_json) as f:
            text = f.read()
    else:
        text = run_ours(cases, args.batch, args.reps, ["--ops"] if args.ops else [])
    cfg, ours = parse_ours(text)
    import onnxruntime as ort

    print(f"== ONNX Runtime {ort.__version__}, {THREADS} intra-op threads", flush=True)
    rows = []
    for case in ours:
        peer_first, peer = time_peer(cfg, case, args.reps)
        rows.append((case, peer_first, peer))
    peak = gemm_peak()
    print(f"\n2-thread f32 GEMM peak (numpy/OpenBLAS sgemm 2048^3, best of 5): {peak:.1f} GFLOP/s\n")
    head = ("case", "slices x HxW", "batch", "GFLOP", "ours s", "peer s", "ours/peer",
            "ours GFLOP/s", "peer GFLOP/s", "ours %peak", "peer %peak")
    print(" | ".join(head))
    for case, _peer_first, peer in rows:
        g = gflop(cfg, case["slices"], case["height"], case["width"])
        o = case["median_s"]
        print(" | ".join([
            case["case"],
            f"{case['slices']} x {case['height']}x{case['width']}",
            str(case["batch"]),
            f"{g:.2f}",
            f"{o:.3f}",
            f"{peer:.3f}",
            f"{o / peer:.2f}x",
            f"{g / o:.1f}",
            f"{g / peer:.1f}",
            f"{100 * g / o / peak:.0f}%",
            f"{100 * g / peer / peak:.0f}%",
        ]))
        print(json.dumps({
            "case": case["case"], "gflop": round(g, 3), "ours_s": o, "peer_s": peer,
            "ratio": o / peer, "ours_threads": case["threads"], "peer_threads": THREADS,
            "gemm_peak_gflops": peak,
        }))


if __name__ == "__main__":
    main()
