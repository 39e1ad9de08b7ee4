"""Make the fixtures for torchfold's tune mode (fuse({ mode: 'tune' })) with real PyTorch.

Usage: /usr/bin/python3 scripts/make_tune_fixtures.py [OUTDIR]   (default test/fixtures/tune)

Tune mode keeps every conv and BatchNorm parameter and buffer under its own name and,
while the BN is in eval mode, runs one convolution with W' = W * s, B' = (B - mean) * s
+ beta (s = gamma / sqrt(var + eps)) computed on the fly; in training mode the conv and
the BN run as before. The fixtures are the ORIGINAL models only: the tests tune them
with torchfold and compare with scripts/check_tune.py (original vs tuned, in PyTorch).

One TorchScript model per case (OUTDIR/<name>.pt), saved in eval mode with randomized
BN statistics. OUTDIR/manifest.json:
  {"version", "torch", "torchvision",
   "cases": {NAME: {"file", "kind": "scripted"|"traced", "note",
                    "input_shapes": [[...], ...], "inputs": [TREE, ...],
                    "output": TREE (eval output of the saved file),
                    "norms": BN applications in one eager forward,
                    "pairs": [{"conv", "norm", "status": "folded"|"either", "reason"}]}}}
(TREE encoding: fixture_io.py.) "conv"/"norm" are module paths ("" for the root).
"folded": tune mode must rewrite the pair; "either": it may also leave it alone
("reason" says why). Idempotent like make_fuse_fixtures.py: "version" hashes this
script, fixture_io.py and the torch/torchvision versions, the manifest is written last,
and .pt/.bin files in OUTDIR that this run did not write are removed.
"""
import functools
import os
import sys
import time
import warnings
import zlib  # crc32 of a case's name seeds it: adding cases never changes others
from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Optional

import fixture_common  # noqa: E402  (torch-free helpers, next to this script)


def pin_hash_seed():
    """Re-exec with PYTHONHASHSEED=0 before torch loads: TorchScript saves module
    constants in set order, so a fixed seed keeps the .pt files byte-identical."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


pin_hash_seed()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import fixture_io as fio  # noqa: E402

CONV_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
# torchvision's ResNet with one BasicBlock per stage ("resnet10"): the same stem, block
# and downsample code as resnet18 ([2, 2, 2, 2]), whose 11M parameters (45 MB) alone
# would exceed the size budget of this fixture set. This is about 20 MB.
RESNET_LAYERS = [1, 1, 1, 1]
RESNET_INPUT = (2, 3, 64, 64)
EAGER_ATOL = 1e-4  # the saved module's eval output vs the eager model's


# ------------------------------------------------------------------ helpers

def randomize_norms(model):
    """fio.randomize_bn's distributions, also for BNs without affine parameters."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn_like(m.running_mean) * 0.5)
                m.running_var.uniform_(0.5, 2.0)
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.copy_(torch.randn_like(m.bias) * 0.2)
    return model


def eager_links(model, inputs):
    """Run forward eagerly with hooks. Returns (output, BN applications, links), a
    link being (conv path, BN path) where the BN's input is the very tensor a
    conv/linear returned: checks the hand-written pairs, lists torchvision's."""
    produced, links, count, handles = {}, [], [0], []

    def on_conv(path, mod, inp, out):
        produced[id(out)] = (path, out)  # keeping out alive keeps its id unique

    def on_norm(path, mod, inp):
        count[0] += 1
        if id(inp[0]) in produced:
            links.append((produced[id(inp[0])][0], path))

    for path, m in model.named_modules():
        if isinstance(m, CONV_TYPES):
            handles.append(m.register_forward_hook(functools.partial(on_conv, path)))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            handles.append(m.register_forward_pre_hook(functools.partial(on_norm, path)))
    with torch.no_grad():
        out = model(*inputs)
    for h in handles:
        h.remove()
    return out, count[0], links


# -------------------------------------------------------------------- models

@dataclass
class Case:
    model: nn.Module             # eager, eval, norms randomized
    kind: str                    # "scripted" | "traced"
    inputs: List[torch.Tensor]
    note: str
    pairs: Optional[list]        # [(conv, norm, status, reason)]; None: from the eager run


def folded(conv, norm):
    return (conv, norm, "folded", None)


def either(conv, norm, reason):
    return (conv, norm, "either", reason)


class ConvBN(nn.Module):
    """forward calls self.conv, then self.bn (named attributes, not a Sequential)."""

    def __init__(self, bn=None):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)
        self.bn = bn if bn is not None else nn.BatchNorm2d(6)

    def forward(self, x):
        return self.bn(self.conv(x))


def small_net():
    """Two conv-bn-relu stages, a pool and a linear head."""
    return nn.Sequential(OrderedDict(
        features=nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 4, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        fc=nn.Linear(4, 5)))


def simple(factory, kind, shapes, note, pairs):
    model = randomize_norms(factory()).eval()
    return Case(model, kind, [torch.randn(*s) for s in shapes], note, pairs)


def resnet_case():
    from torchvision.models.resnet import BasicBlock, ResNet  # here: the up-to-date path skips it
    model = randomize_norms(ResNet(BasicBlock, RESNET_LAYERS, num_classes=10)).eval()
    return Case(model, "scripted", [torch.randn(*RESNET_INPUT)],
                f"torchvision ResNet(BasicBlock, {RESNET_LAYERS}, num_classes=10) "
                "(resnet18's code with one block per stage), scripted; stem conv1/bn1, "
                "block conv1/bn1 and conv2/bn2, downsample.0/downsample.1", None)


P = functools.partial
SEQ = [folded("0", "1")]
CONV_BN = [folded("conv", "bn")]


def all_cases():
    """name -> builder, in manifest order."""
    c = {}
    c["seq_bias"] = P(simple, lambda: nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()), "scripted", [(2, 4, 8, 8)],
        "nn.Sequential(Conv2d(bias=True), BatchNorm2d, ReLU), scripted", SEQ)
    c["seq_nobias"] = P(simple, lambda: nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU()), "scripted",
        [(2, 4, 8, 8)], "nn.Sequential(Conv2d(bias=False), BatchNorm2d, ReLU), scripted: "
        "no 0.bias in the state_dict (B' = -mean * s + beta)", SEQ)
    c["named_conv_bn"] = P(simple, ConvBN, "scripted", [(2, 4, 8, 8)],
                           "forward returns self.bn(self.conv(x)), scripted", CONV_BN)
    c["affine_false"] = P(simple, lambda: ConvBN(nn.BatchNorm2d(6, affine=False)), "scripted",
                          [(2, 4, 8, 8)], "BatchNorm2d(affine=False): no BN weight/bias "
                          "(gamma = 1, beta = 0), scripted", CONV_BN)
    c["conv1d_bn1d"] = P(simple, lambda: nn.Sequential(
        nn.Conv1d(4, 6, 3, stride=2, padding=1, bias=False), nn.BatchNorm1d(6)), "scripted",
        [(2, 4, 16)], "Conv1d(stride=2, bias=False) -> BatchNorm1d on [N, C, L], scripted", SEQ)
    c["conv3d_bn3d"] = P(simple, lambda: nn.Sequential(
        nn.Conv3d(4, 6, 3, padding=1), nn.BatchNorm3d(6)), "scripted", [(2, 4, 5, 5, 5)],
        "Conv3d -> BatchNorm3d, scripted", SEQ)
    c["convtranspose2d_bn"] = P(simple, lambda: nn.Sequential(
        nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(6)),
        "scripted", [(2, 4, 8, 8)], "ConvTranspose2d(groups=1, stride=2, output_padding=1) -> "
        "BatchNorm2d, scripted: weight is [in, out, k, k], s scales dim 1", SEQ)
    c["depthwise_bn"] = P(simple, lambda: nn.Sequential(
        nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.BatchNorm2d(6), nn.ReLU()), "scripted",
        [(2, 6, 8, 8)], "depthwise Conv2d(6, 6, groups=6) -> BatchNorm2d -> ReLU, scripted", SEQ)
    c["linear_bn1d"] = P(simple, lambda: nn.Sequential(nn.Linear(16, 6), nn.BatchNorm1d(6)),
                         "scripted", [(4, 16)],
                         "Linear -> BatchNorm1d on a 2-D [N, F] input, scripted", SEQ)
    c["traced_net"] = P(simple, small_net, "traced", [(2, 3, 8, 8)],
                        "features: conv-bn-relu, conv(stride 2, no bias)-bn-relu, pool, flatten; "
                        "fc: Linear; traced in eval mode, so aten::batch_norm's training "
                        "argument is the constant False: .train() changes neither the original's "
                        "output nor its running stats", [folded("features.0", "features.1"),
                                                         folded("features.3", "features.4")])
    c["padding_reflect"] = P(simple, lambda: nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(6)), "scripted",
        [(2, 4, 8, 8)], "Conv2d(padding_mode='reflect'): F.pad then a conv with padding 0, "
        "scripted", [either("0", "1", "padding_mode 'reflect' (a pad op before the conv)")])
    c["tv_resnet10_scripted"] = resnet_case
    return c


# ---------------------------------------------------------------- writing

def pairs_json(name, case, links):
    if case.pairs is None:  # torchvision: every conv -> BN link the eager run saw folds
        return [{"conv": cv, "norm": n, "status": "folded", "reason": None} for cv, n in links]
    listed = sorted((cv, n) for cv, n, _, _ in case.pairs)
    if listed != sorted(links):
        raise AssertionError(f"{name}: pairs {listed}, but the eager run links {links}")
    return [{"conv": cv, "norm": n, "status": s, "reason": r} for cv, n, s, r in case.pairs]


def make_case(outdir, name, builder, written):
    torch.manual_seed(zlib.crc32(name.encode()))
    start = time.perf_counter()
    case = builder()
    eager_out, norms, links = eager_links(case.model, case.inputs)
    if case.kind == "scripted":
        module = torch.jit.script(case.model)
    else:
        module = torch.jit.trace(case.model, tuple(case.inputs))
    path = os.path.join(outdir, f"{name}.pt")
    torch.jit.save(module, path)
    written.append(f"{name}.pt")
    loaded = torch.jit.load(path).eval()  # the output comes from the file, as tests see it
    with torch.no_grad():
        output = loaded(*case.inputs)
    if not torch.allclose(output, eager_out, rtol=1e-5, atol=EAGER_ATOL):
        raise AssertionError(f"{name}: the saved module's output differs from the eager model's")
    sink = fio.TensorSink(outdir, name)
    entry = {"file": f"{name}.pt", "kind": case.kind, "note": case.note,
             "input_shapes": [list(x.shape) for x in case.inputs],
             "inputs": fio.encode_tree(case.inputs, sink), "output": fio.encode_tree(output, sink),
             "norms": norms, "pairs": pairs_json(name, case, links)}
    written.extend(sink.written)
    return entry, time.perf_counter() - start


def make_all(outdir, version):
    # Remove the old manifest first: until the new one lands, the directory reads as "not made".
    manifest_path = os.path.join(outdir, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    written, cases = [], {}
    for name, builder in all_cases().items():
        cases[name], seconds = make_case(outdir, name, builder, written)
        print(f"made {name} ({seconds:.2f}s)", flush=True)
    fixture_common.remove_stale(outdir, written)
    fio.write_json_atomic(manifest_path, {"version": version, "torch": torch.__version__,
                                          "torchvision": fio.torchvision_version(), "cases": cases})


def main(argv):
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outdir = argv[1] if len(argv) > 1 else os.path.join(repo_root, "test", "fixtures", "tune")
    version = fio.source_version("make_tune_fixtures.py")
    if (fio.read_manifest(outdir) or {}).get("version") == version:
        print("tune fixtures up to date")
        return 0
    start = time.perf_counter()
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)  # fewer threads, fewer reduction-order differences
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    make_all(outdir, version)
    print(f"wrote {os.path.join(outdir, 'manifest.json')} ({time.perf_counter() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
