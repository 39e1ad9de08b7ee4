"""Export the benchmark models (scripts/make_bench_models.py) to ONNX for bench/run.js's
onnxruntime-node row, with PyTorch 2.x's TorchScript-based exporter.

Usage: PYTHONPATH=.libtorch/cuda:.libtorch/onnx python3 scripts/make_bench_onnx.py [MODELSDIR]
       (MODELSDIR defaults to bench/models; the ONNX files go to MODELSDIR/onnx/, git-ignored.
        bench/ort.js runs this, after installing onnx and onnxscript into .libtorch/onnx.)

Every model in MODELSDIR/manifest.json is exported from its saved TorchScript file (the traced
one, else the scripted one), loaded with torch.jit.load: the very weights every other bench row
runs, whichever PyTorch made the file. torch.onnx.export(module, (x,), f, dynamo=False,
opset_version=OPSET, dynamic_axes batch), x the first row of the model's stored input. Input
"input", output "output", both with a symbolic batch axis "batch": one file serves batch 1 and 8.
onnx.checker checks each file. Numbers are checked in onnxruntime by bench/ort.js (and by every
bench run's ort row) against the float64 reference make_bench_models.py stored.

MODELSDIR/onnx/manifest.json:
  version, generator, torch, onnx, opset, models_version (the bench manifest's version),
  models: {name: {file, bytes, source (the .pt file exported), source_bytes, opset,
                  input_name, output_name, export_s} | {error, source}}
"version" hashes this script, the bench manifest's version, the source files' sizes and the
torch and onnx versions, all read without importing torch: when it matches and every file is
there with its recorded size, the run ends before torch is imported. The manifest is removed
first and written last, atomically; .onnx files this run did not write are removed.
"""
import hashlib
import importlib.metadata
import json
import os
import sys
import time

import fixture_common  # torch-free helpers, next to this script

SCRIPT = os.path.basename(__file__)
HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = 17
ERROR_CHARS = 400


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
        return value if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None


def package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_of(entry):
    """The TorchScript file to export: traced (plain ops, what the ONNX exporter handles
    best), else scripted. None when neither was made."""
    for form in ("traced", "scripted"):
        spec = entry["files"].get(form) or {}
        if "file" in spec:
            return spec["file"]
    return None


def version_of(modelsdir, models_manifest):
    """The export's version, computed without torch (see the module docstring)."""
    h = hashlib.sha256()
    with open(os.path.join(HERE, SCRIPT), "rb") as f:
        h.update(f.read())
    h.update(str(models_manifest.get("version")).encode())
    for name in sorted(models_manifest["models"]):
        src = source_of(models_manifest["models"][name])
        size = os.path.getsize(os.path.join(modelsdir, src)) if src else -1
        h.update(f"{name}:{src}:{size}".encode())
    h.update(str(fixture_common.torch_version_without_import()).encode())
    h.update(str(package_version("onnx")).encode())
    return h.hexdigest()


def up_to_date(outdir, version):
    manifest = read_json(os.path.join(outdir, "manifest.json"))
    if manifest is None or manifest.get("version") != version:
        return False
    try:
        return all(os.path.getsize(os.path.join(outdir, m["file"])) == m["bytes"]
                   for m in manifest["models"].values() if "file" in m)
    except (OSError, KeyError, TypeError):
        return False


def error_text(e):
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:ERROR_CHARS]


def first_row(modelsdir, spec):
    """The first row of a model's stored float32 input, as a [1, ...] tensor."""
    import numpy as np
    import torch
    shape = spec["shape"]
    per = 1
    for d in shape[1:]:
        per *= d
    data = np.fromfile(os.path.join(modelsdir, spec["file"]), dtype="<f4", count=per)
    return torch.from_numpy(data.copy()).reshape([1] + list(shape[1:]))


def export_one(modelsdir, outdir, name, entry, written):
    import onnx
    import torch
    src = source_of(entry)
    if src is None:
        return {"error": "no TorchScript file was made for this model", "source": None}
    file = f"{name}.onnx"
    path = os.path.join(outdir, file)
    tmp = f"{path}.tmp-{os.getpid()}"
    start = time.perf_counter()
    try:
        module = torch.jit.load(os.path.join(modelsdir, src)).eval()
        x = first_row(modelsdir, entry["input"])
        with torch.no_grad():
            torch.onnx.export(module, (x,), tmp, dynamo=False, opset_version=OPSET,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                              do_constant_folding=True)
        onnx.checker.check_model(tmp, full_check=True)
        os.replace(tmp, path)
    except Exception as e:  # noqa: BLE001 - recorded in the manifest; the bench skips the model visibly
        if os.path.exists(tmp):
            os.remove(tmp)
        print(f"  {name}: ONNX export failed: {error_text(e)}", flush=True)
        return {"error": error_text(e), "source": src}
    written.append(file)
    return {"file": file, "bytes": os.path.getsize(path), "source": src,
            "source_bytes": os.path.getsize(os.path.join(modelsdir, src)), "opset": OPSET,
            "input_name": "input", "output_name": "output",
            "export_s": round(time.perf_counter() - start, 2)}


def main(argv):
    modelsdir = fixture_common.outdir_arg(argv, "bench", "models")
    outdir = os.path.join(modelsdir, "onnx")
    models_manifest = read_json(os.path.join(modelsdir, "manifest.json"))
    if models_manifest is None:
        print(f"{SCRIPT}: {modelsdir}/manifest.json is missing: run scripts/make_bench_models.py first",
              file=sys.stderr)
        return 1
    version = version_of(modelsdir, models_manifest)
    if up_to_date(outdir, version):
        m = read_json(os.path.join(outdir, "manifest.json"))
        ok = sum("file" in v for v in m["models"].values())
        print(f"bench ONNX models up to date ({ok} of {len(m['models'])} exported, in {outdir})")
        return 0

    import warnings
    import torch
    warnings.simplefilter("ignore")  # TorchScript's and the exporter's deprecation warnings
    torch.set_num_threads(1)
    os.makedirs(outdir, exist_ok=True)
    manifest_path = os.path.join(outdir, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    start = time.perf_counter()
    written, models = [], {}
    for name, entry in models_manifest["models"].items():
        models[name] = export_one(modelsdir, outdir, name, entry, written)
        if "file" in models[name]:
            print(f"exported {name} to ONNX (from {models[name]['source']}, "
                  f"{models[name]['bytes'] / 2**20:.1f} MiB, {models[name]['export_s']:.1f}s)", flush=True)
    for stale in set(os.listdir(outdir)) - set(written):
        if stale.endswith(".onnx"):
            os.remove(os.path.join(outdir, stale))
    fixture_common.write_json_atomic(manifest_path, {
        "version": version,
        "generator": f"scripts/{SCRIPT}",
        "torch": torch.__version__,
        "onnx": package_version("onnx"),
        "onnxscript": package_version("onnxscript"),
        "opset": OPSET,
        "models_version": models_manifest.get("version"),
        "models": models,
    })
    print(f"wrote {manifest_path} ({time.perf_counter() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
