"""Make the models, inputs and float64 references for benchmarking conv -> BatchNorm
folding tools (torchfold against its peers), with real PyTorch.

Usage: /usr/bin/python3 scripts/make_bench_models.py [OUTDIR]
       (OUTDIR defaults to bench/models; it is git-ignored, and nothing here is a test fixture)

Models (random weights; torch.manual_seed(crc32(name)) before each is built; every
BatchNorm's statistics and affine parameters randomized by fio.randomize_bn, the recipe
every fixture uses: running_mean ~ N(0, 0.5^2), running_var ~ U(0.5, 2), weight ~ U(0.5, 1.5),
bias ~ N(0, 0.2^2), so that folding changes the weights for real; eval mode):
  resnet18, resnet50, mobilenet_v2, efficientnet_b0   torchvision, weights=None
  reused   a small 64-channel net on [N,3,224,224] in which one conv's output feeds
           both its BatchNorm and a residual add: a correct folder leaves that pair alone
  tiny     conv -> BN -> ReLU -> max-pool -> linear on [N,3,8,8], for per-call overhead
Each is saved twice, OUTDIR/<name>_scripted.pt (torch.jit.script) and
OUTDIR/<name>_traced.pt (torch.jit.trace on a batch-1 example). A variant that PyTorch
cannot make is recorded as {"error": ...} in the manifest instead of a file.

Per model, raw little-endian tensors written with fixture_io's TensorSink:
  <name>_input.0.bin       float32 [8,3,224,224] (tiny: [8,3,8,8]) randn from a seed of its
                           own (crc32 of "<name>/input"). Only batch 8 is stored: the batch-1
                           input is its first row, input[0:1], which a benchmark slices.
  <name>_ref64_b<B>.0.bin  float64 output of an eager float64 copy of the model
                           (copy.deepcopy(model).double()) on the batch-B input, B in 1, 8
                           (each computed on its own, on one thread, like everything here).

OUTDIR/manifest.json:
  version, generator, torch, torchvision, threads, batches ([1, 8]), total_bytes, models:
  {name: {description, source, seed, example_shape,
          files: {scripted|traced: {file, bytes, max_abs_err_b1} | {error}},
          input: {file, dtype, shape, bytes, batch1},
          batches: [1, 8],
          reference: {"1"|"8": {file, dtype, shape, bytes}},
          reference_max_abs: {"1"|"8": max |reference|},
          float32_error: {"1"|"8": max |eager float32 output - reference|},
          stats: {params, param_bytes (parameters only, float32), buffer_bytes, conv_count,
                  bn_count, conv_bn_pairs (BNs fed directly by a conv, from an eager run),
                  foldable_pairs (conv_bn_pairs less the pairs in `unfoldable`),
                  file_bytes: {scripted, traced, input, references}},
          unfoldable: [{conv, bn, reason}]}}
float32_error is the model's own float32 error, the floor any folded float32 model is
judged against; max_abs_err_b1 is the same for the saved file, reloaded, at batch 1.

Idempotent like make_transform_fixtures.py: "version" is fio.source_version of this script
(this script, fixture_io.py, torch and torchvision versions). When it matches and every
file the manifest lists is there with its recorded size, the run ends before torch is
imported. The manifest is removed first and written last, atomically; OUTDIR belongs to
this script: .pt/.bin files there that it did not write are removed.
"""
import copy
import json
import os
import sys
import time
import warnings
import zlib  # crc32 of a model's name seeds it: adding models never changes the others

import fixture_common  # noqa: E402  (torch-free helpers, next to this script)

SCRIPT = os.path.basename(__file__)
HERE = os.path.dirname(os.path.abspath(__file__))
BATCHES = (1, 8)


# ------------------------------------------------- up-to-date check without torch

def load_manifest(outdir):
    try:
        with open(os.path.join(outdir, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        return manifest if isinstance(manifest, dict) else None
    except (OSError, ValueError):
        return None


def listed_files(manifest):
    """(file, bytes) of every file the manifest says was written."""
    out = []
    for entry in (manifest.get("models") or {}).values():
        specs = [v for v in entry["files"].values() if "file" in v]
        specs += [entry["input"]] + list(entry["reference"].values())
        out += [(s["file"], s["bytes"]) for s in specs]
    return out


def files_intact(outdir, manifest):
    try:
        return all(os.path.getsize(os.path.join(outdir, f)) == size
                   for f, size in listed_files(manifest))
    except (OSError, KeyError, TypeError, AttributeError):
        return False


def up_to_date(outdir, version):
    manifest = load_manifest(outdir)
    return (version is not None and manifest is not None
            and manifest.get("version") == version and files_intact(outdir, manifest))


def say_up_to_date(outdir):
    manifest = load_manifest(outdir)
    print(f"bench models up to date ({len(manifest['models'])} models, "
          f"{manifest['total_bytes'] / 2**20:.0f} MiB in {outdir})")


if __name__ == "__main__":
    if up_to_date(fixture_common.outdir_arg(sys.argv, 'bench', 'models'), fixture_common.quick_source_version(SCRIPT)):
        say_up_to_date(fixture_common.outdir_arg(sys.argv, 'bench', 'models'))
        sys.exit(0)


def pin_hash_seed():
    """Re-exec with PYTHONHASHSEED=0 before torch loads: TorchScript saves module
    constants in set order, so a fixed seed keeps the .pt files byte-identical."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable] + sys.argv,
                  dict(os.environ, PYTHONHASHSEED="0"))


if __name__ == "__main__":
    pin_hash_seed()

sys.path.insert(0, HERE)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import fixture_io as fio  # noqa: E402

ERROR_CHARS = 400  # error texts in the manifest are cut to this length
CONV_TYPES = nn.modules.conv._ConvNd
BN_TYPES = nn.modules.batchnorm._BatchNorm


# ==================================================================== models

class Reused(nn.Module):
    """stem: conv1 (3->64, 3x3, stride 2) -> bn1 -> relu            [N,64,112,112]
    y = conv2(h) (64->64, 3x3)
    a = relu(bn2(y))          y's first consumer: its BatchNorm
    b = bn3(conv3(a))         (64->64, 3x3)
    h = relu(b + y)           y's second consumer: a residual add of the RAW conv2 output
    head: conv4 (64->64, 3x3, stride 2) -> bn4 -> relu -> global avg pool -> fc (64->10)
    Folding bn2 into conv2 would change what the add sees, so (conv2, bn2) must stay;
    (conv1, bn1), (conv3, bn3) and (conv4, bn4) fold."""

    def __init__(self, channels=64, classes=10):
        super().__init__()
        c = channels

        def conv(cin, stride=1):
            return nn.Conv2d(cin, c, 3, stride=stride, padding=1, bias=False)

        self.conv1, self.bn1 = conv(3, stride=2), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = conv(c), nn.BatchNorm2d(c)
        self.conv3, self.bn3 = conv(c), nn.BatchNorm2d(c)
        self.conv4, self.bn4 = conv(c, stride=2), nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        y = self.conv2(h)
        a = torch.relu(self.bn2(y))
        h = torch.relu(self.bn3(self.conv3(a)) + y)
        h = torch.relu(self.bn4(self.conv4(h)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


class Tiny(nn.Module):
    """conv (3->8, 3x3) -> bn -> relu -> max-pool 2 -> flatten -> fc (128->10) on [N,3,8,8]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        h = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(torch.flatten(h, 1))


def vision(arch):
    def build():
        import torchvision  # here: the up-to-date path never pays for it
        return getattr(torchvision.models, arch)(weights=None)
    return build


IMAGENET = (8, 3, 224, 224)
REUSED_PAIR = {"conv": "conv2", "bn": "bn2",
               "reason": "conv2's output also feeds the residual add (relu(bn3(conv3(.)) + y))"}

MODELS = {
    # name -> (factory, input shape at the largest batch, source, description, unfoldable)
    "resnet18": (vision("resnet18"), IMAGENET, "torchvision.models.resnet18(weights=None)",
                 "torchvision ResNet-18, 1000 classes", []),
    "resnet50": (vision("resnet50"), IMAGENET, "torchvision.models.resnet50(weights=None)",
                 "torchvision ResNet-50 (bottleneck blocks), 1000 classes", []),
    "mobilenet_v2": (vision("mobilenet_v2"), IMAGENET,
                     "torchvision.models.mobilenet_v2(weights=None)",
                     "torchvision MobileNetV2 (depthwise convs, ReLU6), 1000 classes", []),
    "efficientnet_b0": (vision("efficientnet_b0"), IMAGENET,
                        "torchvision.models.efficientnet_b0(weights=None)",
                        "torchvision EfficientNet-B0 (depthwise convs, SiLU, squeeze-excitation "
                        "convs without BN, stochastic depth: identity in eval), 1000 classes", []),
    "reused": (Reused, IMAGENET, f"scripts/{SCRIPT}:Reused",
               "conv1 (3->64, 3x3, stride 2) -> bn1 -> relu; y = conv2 (64->64, 3x3); "
               "a = relu(bn2(y)); h = relu(bn3(conv3(a)) + y), a residual add of the RAW conv2 "
               "output, so conv2's output has two consumers (bn2 and the add) and (conv2, bn2) "
               "must NOT be folded; then conv4 (3x3, stride 2) -> bn4 -> relu -> global avg pool "
               "-> fc (64->10). (conv1, bn1), (conv3, bn3), (conv4, bn4) fold", [REUSED_PAIR]),
    "tiny": (Tiny, (8, 3, 8, 8), f"scripts/{SCRIPT}:Tiny",
             "conv (3->8, 3x3) -> bn -> relu -> max-pool 2 -> flatten -> fc (128->10) on "
             "[N,3,8,8]: almost no compute, for per-call overhead", []),
}


# ================================================================== helpers

def error_text(e):
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:ERROR_CHARS]


def max_abs_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


def conv_bn_links(model, x):
    """BNs whose input is a conv's output tensor itself, from one eager forward
    (forward hooks on a copy): [(conv path, bn path)] in call order."""
    model = copy.deepcopy(model)
    made = {}  # id(output tensor) -> (conv path, tensor): the tensor kept alive so ids stay unique
    links, handles = [], []

    def on_conv(path):
        def hook(mod, inp, out):
            made[id(out)] = (path, out)
        return hook

    def on_bn(path):
        def hook(mod, inp):
            hit = made.get(id(inp[0]))
            if hit is not None and hit[1] is inp[0]:
                links.append((hit[0], path))
        return hook

    for path, m in model.named_modules():
        if isinstance(m, CONV_TYPES):
            handles.append(m.register_forward_hook(on_conv(path)))
        elif isinstance(m, BN_TYPES):
            handles.append(m.register_forward_pre_hook(on_bn(path)))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return links


def save_variant(outdir, name, kind, model, example, x1, ref1, written):
    """Script or trace, save, reload and run at batch 1. {file, bytes, max_abs_err_b1}
    or {error} when PyTorch cannot make this variant."""
    file = f"{name}_{kind}.pt"
    try:
        with torch.no_grad():
            module = (torch.jit.script(model) if kind == "scripted"
                      else torch.jit.trace(model, (example,)))
    except Exception as e:  # noqa: BLE001 - the error text goes to the manifest
        print(f"  {name}: {kind} failed: {error_text(e)}", flush=True)
        return {"error": error_text(e)}
    path = os.path.join(outdir, file)
    torch.jit.save(module, path)
    written.append(file)
    loaded = torch.jit.load(path)
    with torch.no_grad():
        err = max_abs_diff(loaded(x1), ref1)
    return {"file": file, "bytes": os.path.getsize(path), "max_abs_err_b1": err}


def write_tensor(outdir, prefix, t, written):
    """One tensor through fio.TensorSink: OUTDIR/<prefix>.0.bin; {file, dtype, shape, bytes}."""
    sink = fio.TensorSink(outdir, prefix)
    spec = sink.write(t)
    written.extend(sink.written)
    return dict(spec, bytes=os.path.getsize(os.path.join(outdir, spec["file"])))


# ==================================================================== making

def make_model(outdir, name, spec, written):
    factory, shape, source, description, unfoldable = spec
    seed = zlib.crc32(name.encode())
    torch.manual_seed(seed)
    model = fio.randomize_bn(factory()).eval()

    gen = torch.Generator().manual_seed(zlib.crc32(f"{name}/input".encode()))
    x = torch.randn(*shape, generator=gen)
    xs = {b: x[:b] for b in BATCHES}

    # The reference: the eager code in float64, copied before jit touches the model.
    model64 = copy.deepcopy(model).double()
    refs, errors = {}, {}
    with torch.no_grad():
        for b in BATCHES:
            refs[b] = model64(xs[b].double())
            errors[b] = max_abs_diff(model(xs[b]), refs[b])
    del model64

    files = {kind: save_variant(outdir, name, kind, model, xs[1], xs[1], refs[1], written)
             for kind in ("scripted", "traced")}
    input_spec = dict(write_tensor(outdir, f"{name}_input", x, written),
                      batch1="input[0:1], the first row of this batch (not stored separately)")
    ref_specs = {str(b): write_tensor(outdir, f"{name}_ref64_b{b}", refs[b], written)
                 for b in BATCHES}

    links = conv_bn_links(model, xs[1])
    for u in unfoldable:
        if (u["conv"], u["bn"]) not in links:
            raise AssertionError(f"{name}: {u['conv']} -> {u['bn']} is not a conv -> BN link")
    params = list(model.parameters())
    stats = {
        "params": sum(p.numel() for p in params),
        "param_bytes": sum(p.numel() for p in params) * 4,  # float32 weights only
        "buffer_bytes": sum(b.numel() * b.element_size() for b in model.buffers()),
        "conv_count": sum(isinstance(m, CONV_TYPES) for m in model.modules()),
        "bn_count": sum(isinstance(m, BN_TYPES) for m in model.modules()),
        "conv_bn_pairs": len(links),
        "foldable_pairs": len(links) - len(unfoldable),
        "file_bytes": {
            **{k: v.get("bytes") for k, v in files.items()},
            "input": input_spec["bytes"],
            "references": sum(r["bytes"] for r in ref_specs.values()),
        },
    }
    return {
        "description": description,
        "source": source,
        "seed": seed,
        "example_shape": list(xs[1].shape),
        "files": files,
        "input": input_spec,
        "batches": list(BATCHES),
        "reference": ref_specs,
        "reference_max_abs": {str(b): refs[b].abs().max().item() for b in BATCHES},
        "float32_error": {str(b): errors[b] for b in BATCHES},
        "stats": stats,
        "unfoldable": unfoldable,
    }


def make_all(outdir, version):
    # Remove the old manifest first: until the new one lands, the directory reads as "not made".
    manifest_path = os.path.join(outdir, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    written, models = [], {}
    for name, spec in MODELS.items():
        start = time.perf_counter()
        models[name] = make_model(outdir, name, spec, written)
        print(f"made {name} ({time.perf_counter() - start:.1f}s)", flush=True)
    fixture_common.remove_stale(outdir, written)
    manifest = {
        "version": version,
        "generator": f"scripts/{SCRIPT}",
        "torch": torch.__version__,
        "torchvision": fio.torchvision_version(),
        "threads": torch.get_num_threads(),
        "batches": list(BATCHES),
        "total_bytes": sum(os.path.getsize(os.path.join(outdir, f)) for f in written),
        "models": models,
    }
    fio.write_json_atomic(manifest_path, manifest)
    return manifest


def summary(manifest):
    head = f"{'model':<16}{'scripted':>10}{'traced':>10}{'params':>11}{'conv':>6}{'bn':>5}" \
           f"{'fold':>6}{'f32 err b1':>12}{'f32 err b8':>12}"
    lines = [head]
    for name, m in manifest["models"].items():
        s = m["stats"]
        size = {k: ("error" if "error" in v else f"{v['bytes'] / 2**20:.1f}M")
                for k, v in m["files"].items()}
        lines.append(f"{name:<16}{size['scripted']:>10}{size['traced']:>10}{s['params']:>11,}"
                     f"{s['conv_count']:>6}{s['bn_count']:>5}{s['foldable_pairs']:>6}"
                     f"{m['float32_error']['1']:>12.2e}{m['float32_error']['8']:>12.2e}")
        for k, v in m["files"].items():
            if "error" in v:
                lines.append(f"  {k} failed: {v['error']}")
    lines.append(f"total {manifest['total_bytes'] / 2**20:.0f} MiB")
    return "\n".join(lines)


def main(argv):
    outdir = fixture_common.outdir_arg(argv, 'bench', 'models')
    version = fio.source_version(SCRIPT)
    if fixture_common.quick_source_version(SCRIPT) != version:
        print("note: the torch-free version check disagrees with fio.source_version; "
              "up-to-date runs will import torch", file=sys.stderr)
    if up_to_date(outdir, version):
        say_up_to_date(outdir)
        return 0
    start = time.perf_counter()
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)  # fewer threads, fewer reduction-order differences (and, on a
    # shared 2-core machine, no OpenMP barrier stalls: 1 thread measured as fast or faster)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    manifest = make_all(outdir, version)
    print(summary(manifest))
    print(f"wrote {os.path.join(outdir, 'manifest.json')} ({time.perf_counter() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
