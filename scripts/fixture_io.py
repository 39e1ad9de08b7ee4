"""Shared helpers for the torchfold fixture scripts.

Converts tensors to and from raw little-endian files, and Python/TorchScript
values to and from the JSON "TREE" format used in test/fixtures/manifest.json.
Imported by make_fixtures.py and check_torchscript.py so both sides of the
round trip agree on one encoding (and by make_demo_model.py for randomize_bn).
"""
import hashlib
import importlib.metadata
import json
import math
import os

import fixture_common  # noqa: E402  (torch-free helpers, next to this script)
import numpy as np
import torch
import torch.nn as nn

# dtype name <-> torch dtype. The names are what the JS side sees.
DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}

# numpy dtype used for the raw bytes. Explicit "<" so files are little-endian
# whatever the host. bfloat16 has no numpy type, so its bits travel as int16.
_NP_STORAGE = {
    "float32": "<f4", "float64": "<f8", "float16": "<f2", "bfloat16": "<i2",
    "int8": "i1", "int16": "<i2", "int32": "<i4", "int64": "<i8",
    "uint8": "u1", "bool": "u1",
}

# Largest integer a JS number holds exactly; bigger ints go as strings.
MAX_SAFE_INT = 2 ** 53 - 1


def tensor_to_bytes(t):
    """Raw bytes of a CPU tensor in row-major order."""
    t = t.detach().cpu().contiguous()
    name = DTYPE_NAMES[t.dtype]
    if name == "bfloat16":
        arr = t.view(torch.int16).numpy()
    elif name == "bool":
        arr = t.to(torch.uint8).numpy()  # one byte per element, 0 or 1
    else:
        arr = t.numpy()
    return arr.astype(_NP_STORAGE[name], copy=False).tobytes()


def bytes_to_tensor(data, dtype, shape):
    """Inverse of tensor_to_bytes."""
    stored = np.dtype(_NP_STORAGE[dtype])
    # astype to native order gives a writable copy torch.from_numpy accepts
    arr = np.frombuffer(data, dtype=stored).astype(stored.newbyteorder("="))
    count = math.prod(shape)
    if arr.size != count:
        raise ValueError(f"{dtype}{list(shape)} needs {count} elements, file has {arr.size}")
    t = torch.from_numpy(arr).reshape(shape)
    if dtype == "bfloat16":
        return t.view(torch.bfloat16)
    if dtype == "bool":
        return t.to(torch.bool)
    return t


class TensorSink:
    """Writes each tensor met while encoding to OUTDIR/<prefix>.<n>.bin."""

    def __init__(self, outdir, prefix):
        self.outdir = outdir
        self.prefix = prefix
        self.count = 0
        self.written = []

    def write(self, t):
        name = f"{self.prefix}.{self.count}.bin"
        self.count += 1
        with open(os.path.join(self.outdir, name), "wb") as f:
            f.write(tensor_to_bytes(t))
        self.written.append(name)
        return {"file": name, "dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape)}


def encode_tree(value, sink):
    """Python/TorchScript value -> JSON-ready TREE; tensors go to sink."""
    if isinstance(value, torch.Tensor):
        return {"__tensor__": sink.write(value)}
    if value is None or isinstance(value, (bool, str)):
        return value  # bool before int: bool is an int subclass
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INT:
            return {"__bigint__": str(value)}
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("non-finite floats have no JSON form")
        return value
    if isinstance(value, (list, tuple)):
        return [encode_tree(v, sink) for v in value]
    if isinstance(value, dict):
        return _encode_dict(value, sink)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _encode_dict(value, sink):
    keys = list(value.keys())
    if all(isinstance(k, str) for k in keys):
        return {k: encode_tree(v, sink) for k, v in value.items()}
    if all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
        return {"__intdict__": [[k, encode_tree(v, sink)] for k, v in value.items()]}
    raise TypeError("only Dict[str, X] and Dict[int, X] are encodable")


def decode_tree(tree, basedir):
    """TREE -> Python value. JSON arrays come back as lists (see coerce)."""
    if isinstance(tree, list):
        return [decode_tree(v, basedir) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        spec = tree["__tensor__"]
        with open(os.path.join(basedir, spec["file"]), "rb") as f:
            return bytes_to_tensor(f.read(), spec["dtype"], spec["shape"])
    if "__bigint__" in tree:
        return int(tree["__bigint__"])
    if "__intdict__" in tree:
        return {int(k): decode_tree(v, basedir) for k, v in tree["__intdict__"]}
    return {k: decode_tree(v, basedir) for k, v in tree.items()}


def coerce_to_type(value, jit_type):
    """Reshape a decoded value to a TorchScript argument type.

    JSON cannot tell a tuple from a list, nor 1.0 from 1, so the method
    schema decides: arrays become tuples where a Tuple is expected and
    whole numbers become floats where a float is expected.
    """
    kind = jit_type.kind()
    if value is None:
        return None
    if kind == "OptionalType":
        return coerce_to_type(value, jit_type.getElementType())
    if kind == "FloatType" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "TupleType":
        return tuple(coerce_to_type(v, t) for v, t in zip(value, jit_type.elements()))
    if kind == "ListType":
        return [coerce_to_type(v, jit_type.getElementType()) for v in value]
    if kind == "DictType":
        vt = jit_type.getValueType()
        return {k: coerce_to_type(v, vt) for k, v in value.items()}
    return value


def coerce_args(method, args):
    """Apply coerce_to_type to each positional argument of a ScriptMethod."""
    params = method.schema.arguments[1:]  # arguments[0] is self
    return [coerce_to_type(a, p.type) for a, p in zip(args, params)]


def randomize_bn(module):
    """Give every BatchNorm non-trivial stats so it is not an identity in eval."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn_like(m.running_mean) * 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.copy_(torch.randn_like(m.bias) * 0.2)
    return module


write_json_atomic = fixture_common.write_json_atomic  # one copy, torch-free (scripts/fixture_common.py)


def torchvision_version():
    """From package metadata: importing torchvision would slow the up-to-date path."""
    try:
        return importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def source_version(script_name):
    """sha256 over the sources that decide a fixture set (the script and this
    module) and the torch/torchvision versions: a change to any remakes it."""
    h = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    for name in (script_name, "fixture_io.py"):
        with open(os.path.join(here, name), "rb") as f:
            h.update(f.read())
    h.update(torch.__version__.encode())
    h.update(torchvision_version().encode())
    return h.hexdigest()


def read_manifest(outdir):
    """The manifest in outdir, or None when missing or unreadable."""
    try:
        with open(os.path.join(outdir, "manifest.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
