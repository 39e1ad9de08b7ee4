"""PyTorch itself, timed in its own process: the reference rows of bench/run.js.

  python3 bench/pytorch_time.py JOB.json     (bench/run.js writes the job and reads the last stdout line)

JOB: {file, input: {file, shape}, batch, reference: {file, shape}, threads, iterations, warmup,
      variants: [names]}. Paths are absolute; input and reference are the raw little-endian
float32 / float64 files of scripts/make_bench_models.py (the batch-B input is the first B rows).

Variants, each built from its own torch.jit.load of the same file:
  loaded        the module as loaded (no eval(), no freeze), called under torch.no_grad()
  frozen+llga   torch.jit.freeze(module.eval()) run with torch.jit.enable_onednn_fusion(True)
                (oneDNN Graph, the LLGA fuser; PyTorch 2.x only)
  frozen+ofi    torch.jit.optimize_for_inference(torch.jit.freeze(module.eval()))
Timing: torch.set_num_threads(threads), torch.no_grad(), the main thread; every variant once per
round, interleaved, the first of each round rotating, after `warmup` rounds (at least 3: the
profiling executor specializes and fuses during the first calls).

The LLGA switch is process-global in libtorch and read when the profiling executor optimizes a
graph. It is set only around frozen+llga's calls, so the other variants' graphs are optimized
(during their own warm-up calls) with it off, as in a process that never turned it on.

Prints one JSON line: {torch, threads, interop_threads, batch, rows: [{variant, samples (ms),
max_abs_error, transform_ms} | {variant, error}]}.
"""
import json
import sys
import time
import warnings

import numpy as np
import torch


def read_rows(spec, dtype, rows):
    per = 1
    for d in spec["shape"][1:]:
        per *= d
    data = np.fromfile(spec["file"], dtype=dtype, count=rows * per)
    return torch.from_numpy(data.copy()).reshape([rows] + list(spec["shape"][1:]))


def first_tensor(out):
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


class Variant:
    def __init__(self, name, module, transform_ms, llga=False):
        self.name, self.module, self.transform_ms, self.llga = name, module, transform_ms, llga
        self.samples = []

    def __call__(self, x):
        if not self.llga:
            return self.module(x)
        torch.jit.enable_onednn_fusion(True)
        try:
            return self.module(x)
        finally:
            torch.jit.enable_onednn_fusion(False)


def build(name, path):
    t0 = time.perf_counter()
    m = torch.jit.load(path)
    load_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    if name == "loaded":
        return Variant(name, m, 0.0)
    if name == "frozen+llga":
        if not hasattr(torch.jit, "enable_onednn_fusion") or torch.__version__.startswith("1."):
            raise RuntimeError(f"oneDNN Graph fusion is benched on PyTorch 2.x only (this is {torch.__version__})")
        return Variant(name, torch.jit.freeze(m.eval()), (time.perf_counter() - t0) * 1e3, llga=True)
    if name == "frozen+ofi":
        return Variant(name, torch.jit.optimize_for_inference(torch.jit.freeze(m.eval())),
                       (time.perf_counter() - t0) * 1e3)
    raise ValueError(f"unknown variant {name} (load took {load_ms:.0f} ms)")


def main(job_path):
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    warnings.simplefilter("ignore")  # TorchScript's deprecation warnings in 2.x
    torch.set_num_threads(job["threads"])
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    batch = job["batch"]
    x = read_rows(job["input"], "<f4", batch)
    ref = read_rows(job["reference"], "<f8", batch)
    rows, variants = [], []
    if hasattr(torch.jit, "enable_onednn_fusion"):
        torch.jit.enable_onednn_fusion(False)
    with torch.no_grad():
        for name in job["variants"]:
            try:
                variants.append(build(name, job["file"]))
            except Exception as e:  # noqa: BLE001 - reported as the row's error
                rows.append({"variant": name, "error": f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]})
        warmup = max(3, job["warmup"])
        # Warm-up variant by variant (not interleaved), so each graph is optimized with the
        # LLGA switch as that variant wants it; then the error against the float64 reference.
        for v in variants:
            for _ in range(warmup):
                v(x)
            v.max_abs_error = (first_tensor(v(x)).double() - ref).abs().max().item()
        n = len(variants)
        for i in range(job["iterations"]):
            for k in range(n):
                v = variants[(i + k) % n]
                t0 = time.perf_counter()
                v(x)
                v.samples.append((time.perf_counter() - t0) * 1e3)
    for v in variants:
        rows.append({"variant": v.name, "samples": v.samples, "max_abs_error": v.max_abs_error,
                     "transform_ms": v.transform_ms})
    order = {name: i for i, name in enumerate(job["variants"])}
    rows.sort(key=lambda r: order[r["variant"]])
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "interop_threads": torch.get_num_interop_threads(), "batch": batch, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
