"""Make torchfold's test fixtures with real PyTorch.

Usage: /usr/bin/python3 scripts/make_fixtures.py [OUTDIR]   (default test/fixtures)

Writes TorchScript models, raw tensor files for their inputs and expected
outputs, a few deliberately bad files, and OUTDIR/manifest.json describing it
all (TREE encoding: see fixture_io.py). The manifest's "version" hashes this
script, fixture_io.py and torch's version; when it matches nothing is redone.
The manifest is written last and atomically, so an interrupted run is redone.
"""
import json
import os
import sys
import time
import zipfile
from typing import Dict, List, Optional, Tuple

import fixture_common  # noqa: E402  (torch-free helpers, next to this script)


def pin_hash_seed():
    """Re-exec with PYTHONHASHSEED=0 (before torch loads): TorchScript saves
    module constants in set order, so a fixed hash seed makes .pt files
    byte-identical between runs."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


pin_hash_seed()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import fixture_io as fio  # noqa: E402

DEFAULT_ATOL = 1e-5
BIG_ATOL = 1e-4  # deep nets accumulate more float32 rounding


# -------------------------------------------------------------------- models

class ConvBNNet(nn.Module):
    """Two conv-bn-relu stages, global pool, linear head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


class MultiMethod(nn.Module):
    """forward gives a feature map; embed gives a scaled pooled vector."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))

    @torch.jit.export
    def embed(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(self.forward(x), 1)
        return torch.flatten(pooled, 1) * scale


@torch.jit.script
class Pair(object):
    """A TorchScript class: JS has no counterpart, so returning one is ERR_UNSUPPORTED."""

    def __init__(self, a: int, b: int):
        self.a = a
        self.b = b


class IValues(nn.Module):
    """No weights: each method exercises one corner of value mapping."""

    def forward(self, t: torch.Tensor, f: float, i: int, b: bool, s: str,
                o: Optional[torch.Tensor], l: List[torch.Tensor],
                tup: Tuple[int, float], d: Dict[str, torch.Tensor]
                ) -> Tuple[torch.Tensor, int, bool, str, bool, int, torch.Tensor,
                           int, float, Dict[str, torch.Tensor], List[int]]:
        doubled = {k: v * 2 for k, v in d.items()}
        return (t * f, i + 1, not b, s + "!", o is None, len(l),
                torch.stack(l).sum(0), tup[0] * 2, tup[1] * 2.0, doubled,
                [i, i + 1, i + 2])

    @torch.jit.export
    def int_keys(self, n: int) -> Dict[int, str]:
        return {k: str(k) for k in range(n)}

    @torch.jit.export
    def big(self) -> int:
        # 1 << 60, not 2 ** 60: in TorchScript int ** int yields a float
        return 1 << 60

    @torch.jit.export
    def nothing(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        return None

    @torch.jit.export
    def floats(self, xs: List[float]) -> float:
        return sum(xs)

    @torch.jit.export
    def ints(self, xs: List[int]) -> int:
        return sum(xs)

    @torch.jit.export
    def nested(self, d: Dict[str, List[torch.Tensor]]) -> List[Tuple[str, int]]:
        return [(k, len(v)) for k, v in d.items()]

    # The two below have no cases: torchfold must refuse their results clearly.
    @torch.jit.export
    def pair(self) -> Pair:
        return Pair(1, 2)

    @torch.jit.export
    def as_complex(self, x: torch.Tensor) -> torch.Tensor:
        return torch.view_as_complex(x)


class DTypes(nn.Module):
    @torch.jit.export
    def name(self, x: torch.Tensor) -> str:
        # Note: in TorchScript this is the ScalarType number ("6" for float32),
        # not eager Python's "torch.float32".
        return str(x.dtype)

    def forward(self, x):
        if x.dtype == torch.bool:
            return ~x
        return x + x


def fresh(cls, seed):
    """Seeded instance with randomized BN, so each model is reproducible alone."""
    torch.manual_seed(seed)
    return fio.randomize_bn(cls())


def case(method, inputs, mode="eval", atol=DEFAULT_ATOL):
    return {"method": method, "mode": mode, "inputs": inputs, "atol": atol}


def seeded_randn(seed, *shape):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


# Each builder returns (module to save, cases). Modules come back in the mode
# they are saved in; the expected outputs are computed later from the file.

def build_convbn_scripted():
    x = seeded_randn(101, 2, 3, 16, 16)
    return torch.jit.script(fresh(ConvBNNet, 1).eval()), [case("forward", [x])]


def build_convbn_traced():
    x = seeded_randn(101, 2, 3, 16, 16)
    return torch.jit.trace(fresh(ConvBNNet, 1).eval(), x), [case("forward", [x])]


def build_trainable():
    x = seeded_randn(102, 4, 3, 8, 8)
    module = torch.jit.script(fresh(ConvBNNet, 2).train())
    return module, [case("forward", [x], mode="train"), case("forward", [x], mode="eval")]


def build_multi_method():
    x = seeded_randn(103, 2, 3, 8, 8)
    module = torch.jit.script(fresh(MultiMethod, 3).eval())
    return module, [case("forward", [x]), case("embed", [x, 0.5])]


def build_ivalues():
    g = torch.Generator().manual_seed(104)
    t = torch.randn(2, 3, generator=g)
    l = [torch.randn(2, 2, generator=g) for _ in range(3)]
    d = {"alpha": torch.randn(3, generator=g), "beta": torch.randn(2, 2, generator=g)}
    o = torch.randn(2, generator=g)
    common = [1.5, 7, True, "héllo"]
    cases = [
        case("forward", [t, *common, None, l, (3, 0.25), d]),
        case("forward", [t, *common, o, l, (3, 0.25), d]),
        case("int_keys", [3]),
        case("big", []),
        case("nothing", [t]),
        case("floats", [[0.5, 1.5, 2.0]]),
        case("floats", [[1.0, 2.0]]),
        case("ints", [[1, 2, 3]]),
        case("nested", [{"a": l, "b": l[:1], "c": []}]),
    ]
    return torch.jit.script(IValues().eval()), cases


def dtype_sample(name, g):
    """Small [3,4] values of one dtype: negatives for signed/float, no overflow."""
    dtype = fio.DTYPES[name]
    if dtype.is_floating_point:
        return (torch.randn(3, 4, generator=g) * 4).to(dtype)
    if name == "bool":
        return torch.randint(0, 2, (3, 4), generator=g).to(torch.bool)
    low = 0 if name == "uint8" else -50
    return torch.randint(low, 50, (3, 4), generator=g).to(dtype)


def build_dtypes():
    g = torch.Generator().manual_seed(105)
    samples = [dtype_sample(name, g) for name in fio.DTYPES]
    cases = [case("forward", [x]) for x in samples] + [case("name", [x]) for x in samples]
    return torch.jit.script(DTypes().eval()), cases


def vision_build(name, seed, how):
    """A torchvision net with random weights (weights=None: never downloads)."""
    import torchvision  # here, so the "up to date" path does not pay for it
    x = seeded_randn(100 + seed, 1, 3, 64, 64)
    torch.manual_seed(seed)
    model = fio.randomize_bn(getattr(torchvision.models, name)(weights=None)).eval()
    module = torch.jit.script(model) if how == "script" else torch.jit.trace(model, x)
    return module, [case("forward", [x], atol=BIG_ATOL)]


def build_resnet18_scripted():
    return vision_build("resnet18", 6, "script")


def build_resnet18_traced():
    return vision_build("resnet18", 6, "trace")


def build_mobilenet_v2_traced():
    return vision_build("mobilenet_v2", 7, "trace")


# name -> builder, in definition order: every build_<name> function above.
class Nms(nn.Module):
    """Calls a torchvision operator: loads only after torchvision's op library does."""

    def forward(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return torch.ops.torchvision.nms(boxes, scores, 0.5)


def build_ops_nms():
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)
    g = torch.Generator().manual_seed(108)
    xy = torch.rand(32, 2, generator=g) * 50
    wh = torch.rand(32, 2, generator=g) * 30 + 5
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(32, generator=g)
    return torch.jit.script(Nms().eval()), [case("forward", [boxes, scores])]


def ops_library():
    """The shared library that registers torchvision's operators."""
    from torchvision import extension
    return extension._get_extension_path("_C")


BUILDERS = {k[len("build_"):]: v for k, v in list(globals().items()) if k.startswith("build_")}


# ---------------------------------------------------------------- expected

def run_saved(path, method, mode, inputs):
    """Run a method on a fresh load of the saved file, as the tests will."""
    module = torch.jit.load(path)
    module.train(mode == "train")
    with torch.no_grad():
        return getattr(module, method)(*inputs)


def make_model(outdir, name, builder, written):
    module, cases = builder()
    filename = f"{name}.pt"
    path = os.path.join(outdir, filename)
    torch.jit.save(module, path)
    written.append(filename)
    loaded = torch.jit.load(path)
    entry = {
        "file": filename,
        "methods": sorted(loaded._c._method_names()),
        "training": bool(loaded.training),
        "cases": [],
    }
    for index, spec in enumerate(cases):
        entry["cases"].append(encode_case(outdir, path, f"{name}.c{index}", spec, written))
    return entry


def encode_case(outdir, path, prefix, spec, written):
    output = run_saved(path, spec["method"], spec["mode"], spec["inputs"])
    in_sink = fio.TensorSink(outdir, prefix + ".in")
    out_sink = fio.TensorSink(outdir, prefix + ".out")
    encoded = {
        "method": spec["method"],
        "mode": spec["mode"],
        "inputs": [fio.encode_tree(v, in_sink) for v in spec["inputs"]],
        "output": fio.encode_tree(output, out_sink),
        "atol": spec["atol"],
    }
    written.extend(in_sink.written + out_sink.written)
    return encoded


# --------------------------------------------------------------- bad files

def write_bad_files(outdir, written):
    """Files a loader must reject with a clear error rather than crash on."""
    state = fresh(ConvBNNet, 1).state_dict()
    torch.save(state, os.path.join(outdir, "state_dict.pt"))
    torch.save(state, os.path.join(outdir, "legacy_pickle.pt"),
               _use_new_zipfile_serialization=False)
    # Fixed date_time keeps the zip byte-identical between runs.
    with zipfile.ZipFile(os.path.join(outdir, "zip_without_code.pt"), "w") as z:
        z.writestr(zipfile.ZipInfo("archive/readme.txt", (2020, 1, 1, 0, 0, 0)),
                   "not a TorchScript archive\n")
    g = torch.Generator().manual_seed(108)
    noise = torch.randint(0, 256, (4096,), generator=g, dtype=torch.uint8)
    write_bytes(os.path.join(outdir, "random_bytes.pt"), noise.numpy().tobytes())
    with open(os.path.join(outdir, "convbn_scripted.pt"), "rb") as f:
        whole = f.read()
    write_bytes(os.path.join(outdir, "truncated.pt"), whole[: len(whole) // 2])
    bad = {k: f"{k}.pt" for k in
           ("state_dict", "legacy_pickle", "zip_without_code", "random_bytes", "truncated")}
    written.extend(bad.values())
    return bad


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


# --------------------------------------------------------------------- main

def make_all(outdir, version):
    # Remove the old manifest first: until the new one lands, the directory
    # must read as "not made".
    manifest_path = os.path.join(outdir, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    written = []
    models = {}
    for name, builder in BUILDERS.items():
        start = time.perf_counter()
        models[name] = make_model(outdir, name, builder, written)
        print(f"made {name} ({len(models[name]['cases'])} cases, "
              f"{time.perf_counter() - start:.2f}s)")
    bad = write_bad_files(outdir, written)
    print(f"made {len(bad)} bad files")
    fixture_common.remove_stale(outdir, written)
    manifest = {"version": version, "torch": torch.__version__, "models": models, "bad": bad,
                "torchvision_ops_library": ops_library()}
    fio.write_json_atomic(manifest_path, manifest)


def main(argv):
    # Default is relative to the repo root so the script works from any cwd.
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outdir = argv[1] if len(argv) > 1 else os.path.join(repo_root, "test", "fixtures")
    version = fio.source_version("make_fixtures.py")
    if (fio.read_manifest(outdir) or {}).get("version") == version:
        print("fixtures up to date")
        return 0
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)  # fewer threads, fewer reduction-order differences
    make_all(outdir, version)
    print(f"wrote {os.path.join(outdir, 'manifest.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
