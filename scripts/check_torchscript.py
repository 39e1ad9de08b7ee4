"""Check that PyTorch can load a TorchScript file and reproduce a fixture model.

Usage: /usr/bin/python3 scripts/check_torchscript.py MANIFEST MODELFILE MODELNAME

MODELFILE is typically a file torchfold saved; MODELNAME picks the manifest
entry whose cases it must reproduce. Every case runs on a fresh
torch.jit.load in the case's train/eval mode, and its output is compared with
the expected TREE (atol from the case, rtol 1e-5).

Prints one line of JSON:
  {"ok": bool, "cases": N, "maxAbsDiff": number, "methods": [...], "error": "..."}
and exits 0 when ok, 1 otherwise.
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import fixture_io as fio  # noqa: E402

RTOL = 1e-5


class Mismatch(Exception):
    """An output differs from the expected value; message says where."""


class Comparer:
    """Structural comparison that remembers the largest float difference."""

    def __init__(self, atol):
        self.atol = atol
        self.max_abs_diff = 0.0

    def compare(self, actual, expected, where):
        if isinstance(expected, torch.Tensor):
            return self._tensor(actual, expected, where)
        if isinstance(expected, (list, tuple)):
            return self._sequence(actual, expected, where)
        if isinstance(expected, dict):
            return self._dict(actual, expected, where)
        if isinstance(expected, float):
            return self._float(actual, expected, where)
        # None, bool, int, str: exact, and bool must not pass for int or back
        if type(actual) is not type(expected) or actual != expected:
            raise Mismatch(f"{where}: expected {expected!r}, got {actual!r}")

    def _tensor(self, actual, expected, where):
        if not isinstance(actual, torch.Tensor):
            raise Mismatch(f"{where}: expected a tensor, got {type(actual).__name__}")
        if actual.dtype != expected.dtype or actual.shape != expected.shape:
            raise Mismatch(f"{where}: expected {expected.dtype}{list(expected.shape)}, "
                           f"got {actual.dtype}{list(actual.shape)}")
        if not expected.is_floating_point():
            if not torch.equal(actual.cpu(), expected):
                raise Mismatch(f"{where}: values differ")
            return
        a, e = actual.detach().cpu().double(), expected.double()
        diff = (a - e).abs()
        if diff.numel():
            self.max_abs_diff = max(self.max_abs_diff, float(diff.max()))
        if not torch.allclose(a, e, rtol=RTOL, atol=self.atol, equal_nan=True):
            raise Mismatch(f"{where}: max abs diff {float(diff.max()):.3g} > atol {self.atol}")

    def _sequence(self, actual, expected, where):
        # JSON has no tuples, so a tuple and a list of the same items match.
        if not isinstance(actual, (list, tuple)) or len(actual) != len(expected):
            raise Mismatch(f"{where}: expected a sequence of {len(expected)}, got {actual!r:.80}")
        for index, (a, e) in enumerate(zip(actual, expected)):
            self.compare(a, e, f"{where}[{index}]")

    def _dict(self, actual, expected, where):
        if not isinstance(actual, dict) or set(actual) != set(expected):
            raise Mismatch(f"{where}: expected keys {sorted(expected)}, got {actual!r:.80}")
        for key, e in expected.items():
            self.compare(actual[key], e, f"{where}[{key!r}]")

    def _float(self, actual, expected, where):
        if not isinstance(actual, float):
            raise Mismatch(f"{where}: expected float {expected!r}, got {actual!r}")
        diff = abs(actual - expected)
        self.max_abs_diff = max(self.max_abs_diff, diff)
        if not diff <= self.atol + RTOL * abs(expected):
            raise Mismatch(f"{where}: expected {expected!r}, got {actual!r}")


def load_entry(manifest_path, model_name):
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    if model_name not in manifest["models"]:
        raise KeyError(f"model {model_name!r} is not in {manifest_path}")
    return manifest["models"][model_name]


def run_case(model_file, spec, basedir, comparer, index):
    """Run one case on a fresh load; raise Mismatch or any PyTorch error."""
    module = torch.jit.load(model_file)
    module.train(spec["mode"] == "train")
    method = getattr(module, spec["method"])
    inputs = [fio.decode_tree(t, basedir) for t in spec["inputs"]]
    inputs = fio.coerce_args(method, inputs)
    with torch.no_grad():
        actual = method(*inputs)
    expected = fio.decode_tree(spec["output"], basedir)
    comparer.atol = spec["atol"]
    comparer.compare(actual, expected, f"case {index} ({spec['method']}) output")


def check(manifest_path, model_file, model_name):
    """Returns the result dict printed as JSON."""
    result = {"ok": False, "cases": 0, "maxAbsDiff": 0.0, "methods": []}
    comparer = Comparer(0.0)
    try:
        entry = load_entry(manifest_path, model_name)
        result["methods"] = sorted(torch.jit.load(model_file)._c._method_names())
        if result["methods"] != sorted(entry["methods"]):
            raise Mismatch(f"methods {result['methods']} differ from manifest {entry['methods']}")
        basedir = os.path.dirname(os.path.abspath(manifest_path))
        for index, spec in enumerate(entry["cases"]):
            run_case(model_file, spec, basedir, comparer, index)
            result["cases"] += 1
        result["ok"] = True
    except Exception as exc:  # report every failure as JSON, never a traceback
        # TorchScript errors span many lines; keep one line for the JSON.
        message = " ".join(str(exc).split())[:600]
        result["error"] = f"{type(exc).__name__}: {message}"
    result["maxAbsDiff"] = comparer.max_abs_diff if math.isfinite(comparer.max_abs_diff) else None
    return result


def main(argv):
    if len(argv) != 4:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    result = check(argv[1], argv[2], argv[3])
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
