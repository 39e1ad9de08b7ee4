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
Timing: torch.set_num_threads(threads), torch.no_grad(), the main thread. One variant at a time,
alone: it is loaded and built, warmed up (`warmup` calls, at least 3: the profiling executor
specializes and fuses during the first calls), checked against the reference, timed over
`iterations` calls, then released before the next is loaded. This is PyTorch's own latency on
the file, with no other model in the process, as a PyTorch user would see it.

The LLGA switch is process-global in libtorch and read when the profiling executor optimizes a
graph: it is on only during frozen+llga's turn.

Prints one JSON line: {torch, threads, interop_threads, batch, rows: [{variant, samples (ms),
max_abs_error, transform_ms} | {variant, error}]}.
"""
import gc
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


def build(name, path):
    """The variant, built from its own torch.jit.load; transform_ms: the freeze (and
    optimize_for_inference) after loading. LLGA fuses later, during the first calls."""
    if name not in ("loaded", "frozen+llga", "frozen+ofi"):
        raise ValueError(f"unknown variant {name}")
    if name == "frozen+llga" and (not hasattr(torch.jit, "enable_onednn_fusion") or torch.__version__.startswith("1.")):
        raise RuntimeError(f"oneDNN Graph fusion is benched on PyTorch 2.x only (this is {torch.__version__})")
    m = torch.jit.load(path)
    t0 = time.perf_counter()
    if name == "loaded":
        return Variant(name, m, 0.0)
    frozen = torch.jit.freeze(m.eval())
    if name == "frozen+llga":
        return Variant(name, frozen, (time.perf_counter() - t0) * 1e3, llga=True)
    return Variant(name, torch.jit.optimize_for_inference(frozen), (time.perf_counter() - t0) * 1e3)


def time_alone(v, x, ref, job, llga_switch):
    """Warm-up, the error against the float64 reference, then `iterations` timed calls; the
    LLGA switch on for the whole turn of a variant that wants it, and off again after."""
    if v.llga:
        llga_switch(True)
    try:
        for _ in range(max(3, job["warmup"])):
            v.module(x)
        err = (first_tensor(v.module(x)).double() - ref).abs().max().item()
        samples = []
        for _ in range(job["iterations"]):
            t0 = time.perf_counter()
            v.module(x)
            samples.append((time.perf_counter() - t0) * 1e3)
    finally:
        if v.llga:
            llga_switch(False)
    return {"variant": v.name, "samples": samples, "max_abs_error": err, "transform_ms": v.transform_ms}


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
    rows = []
    llga_switch = getattr(torch.jit, "enable_onednn_fusion", None)
    if llga_switch:
        llga_switch(False)
    with torch.no_grad():
        for name in job["variants"]:
            try:
                rows.append(time_alone(build(name, job["file"]), x, ref, job, llga_switch))
            except Exception as e:  # noqa: BLE001 - reported as the row's error
                rows.append({"variant": name, "error": f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]})
            gc.collect()
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "interop_threads": torch.get_num_interop_threads(), "batch": batch, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
