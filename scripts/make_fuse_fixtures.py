"""Make the fixtures for torchfold's conv -> BatchNorm folding tests with real PyTorch.

Usage: /usr/bin/python3 scripts/make_fuse_fixtures.py [OUTDIR]   (default test/fixtures/fuse)

One TorchScript model per case (OUTDIR/<name>.pt); OUTDIR/manifest.json gives its inputs,
its own output, a float64 reference output, the (conv, BN) pairs a correct tool reports
(folded, or skipped with a reason substring) and the folded parameters it must produce
(TREE encoding: fixture_io.py). Idempotent like make_fixtures.py: "version" hashes this
script, fixture_io.py and the torch/torchvision versions; the manifest is written last.
OUTDIR belongs to this script: .pt/.bin files there that it did not write are removed.
"""
import copy
import functools
import itertools
import json
import os
import sys
import time
import warnings
import zlib  # crc32 of a case's name seeds it: adding cases never changes others
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import fixture_common  # noqa: E402  (torch-free helpers, next to this script)


def pin_hash_seed():
    """Re-exec with PYTHONHASHSEED=0 before torch loads: TorchScript saves module
    constants in set order, so a fixed seed keeps the .pt files byte-identical."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


pin_hash_seed()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import fixture_io as fio  # noqa: E402

VISION_TIME_LIMIT_S = 10.0  # a torchvision model slower than this to build is left out
# How close the float64 model with the expected folded parameters (BNs removed)
# must come to output64: only the single rounding of W' and B' separates them.
FOLD_TOL = {torch.float64: 1e-9, torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 5e-2}
CONV_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


# ------------------------------------------------------------ norms & seeds

def is_norm(m):
    # FrozenBatchNorm2d by name: importing torchvision here would slow every run.
    return (isinstance(m, nn.modules.batchnorm._BatchNorm)
            or type(m).__name__ == "FrozenBatchNorm2d")


def randomize_norms(model):
    """fio.randomize_bn's distributions, but also for FrozenBatchNorm2d and for BNs
    without affine parameters or running stats (randomize_bn assumes both)."""
    with torch.no_grad():
        for m in model.modules():
            if not is_norm(m):
                continue
            if m.running_mean is not None:
                m.running_mean.copy_(torch.randn_like(m.running_mean) * 0.5)
                m.running_var.uniform_(0.5, 2.0)
            if m.weight is not None:
                m.weight.uniform_(0.5, 1.5)
                m.bias.copy_(torch.randn_like(m.bias) * 0.2)
    return model


def prep(model):
    return randomize_norms(model).eval()


# ---------------------------------------------------------------- rounding

def _bf16_from_bits(bits):
    """int64 tensor of 16-bit patterns -> bfloat16 tensor."""
    return torch.where(bits >= 0x8000, bits - 0x10000, bits).to(torch.int16).view(torch.bfloat16)


def round_bf16(x64):
    """float64 -> bfloat16, rounded once (nearest, ties to even).

    torch's own cast goes through float32 and so can round twice. Its result is
    at most one ulp off, so pick the nearest of it and its two neighbours. The
    distances are exact (Sterbenz: candidate and x are within a factor of 2, or
    the candidate is 0), so a tie is a true tie; then the even pattern wins."""
    c = x64.to(torch.bfloat16)
    bits = c.view(torch.int16).to(torch.int64) & 0xFFFF
    best, best_d = bits, (c.double() - x64).abs()
    for step in (1, -1):
        nb = (bits + step) & 0xFFFF
        nd = (_bf16_from_bits(nb).double() - x64).abs()  # NaN patterns never compare true
        better = (nd < best_d) | ((nd == best_d) & (nb % 2 == 0))
        better &= torch.isfinite(c)  # leave overflow to torch (no value here is near it)
        best, best_d = torch.where(better, nb, best), torch.where(better, nd, best_d)
    return _bf16_from_bits(best)


def round_to(x64, dtype):
    x64 = x64.detach()
    if dtype == torch.bfloat16:
        return round_bf16(x64)
    if dtype == torch.float16:  # numpy's double -> half conversion rounds once
        return torch.from_numpy(np.asarray(x64.numpy(), dtype=np.float64).astype(np.float16))
    return x64.to(dtype)  # float32: one correctly rounded step; float64: exact


def check_rounding():
    """Hand-made halfway cases; also proves torch's cast alone would be wrong."""
    h, t = 2.0 ** -8, 2.0 ** -133  # half a bf16 ulp at 1.0; smallest bf16 subnormal
    cases = [(1 + h, 1.0), (1 + h + 2 ** -40, 1 + 2 * h), (1 + h - 2 ** -40, 1.0),
             (1 + 3 * h, 1 + 4 * h), (1.5 * t, 2 * t), (0.5 * t, 0.0), (0.5 * t + 2 ** -160, t)]
    cases += [(-x, -want) for x, want in cases]
    x = torch.tensor([c[0] for c in cases], dtype=torch.float64)
    want = torch.tensor([c[1] for c in cases], dtype=torch.float64)
    assert torch.equal(round_bf16(x).double(), want), "round_bf16 is wrong"
    assert not torch.equal(x.to(torch.bfloat16).double(), want), "torch's cast now rounds once"
    half = round_to(torch.tensor([1 + 2 ** -11 + 2 ** -40, 1 + 2 ** -11], dtype=torch.float64),
                    torch.float16)
    assert half.double().tolist() == [1 + 2 ** -10, 1.0], "float16 rounding is wrong"


# ---------------------------------------------------------------- folding

def fold(W, B, mean, var, gamma, beta, eps, transposed=False, groups=1):
    """Expected folded (W', B') in float64, rounded once to W's dtype."""
    dtype, W = W.dtype, W.double()
    mean, var = mean.double(), var.double()
    gamma = torch.ones_like(mean) if gamma is None else gamma.double()
    beta = torch.zeros_like(mean) if beta is None else beta.double()
    B = torch.zeros_like(mean) if B is None else B.double()
    s = gamma / torch.sqrt(var + eps)
    ones = [1] * (W.dim() - 2)
    if transposed:
        # [in, out/g, k...]: element [i, j] is output channel (i // (in/g)) * (out/g) + j
        g, per_out = groups, W.shape[1]
        Wg = W.reshape(g, W.shape[0] // g, per_out, *W.shape[2:])
        Ws = (Wg * s.reshape(g, 1, per_out, *ones)).reshape(W.shape)
    else:
        Ws = W * s.reshape(-1, 1, *ones)  # [out, in/g, k...]
    return round_to(Ws, dtype), round_to((B - mean) * s + beta, dtype)


def fold_pairs(model, pairs):
    """folded_params for every pair expected to fold, keyed by parameter path."""
    out = {}
    for conv_path, norm_path, status, _ in pairs:
        if status != "folded":
            continue
        conv, bn = model.get_submodule(conv_path), model.get_submodule(norm_path)
        transposed = isinstance(conv, nn.modules.conv._ConvTransposeNd)
        w, b = fold(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight,
                    bn.bias, bn.eps, transposed, getattr(conv, "groups", 1))
        out[f"{conv_path}.weight"], out[f"{conv_path}.bias"] = w, b
    return out


def check_folding(name, model64, inputs64, ref, folded, pairs, dtype):
    """Run the float64 model with the expected parameters and the folded BNs
    removed: a wrong formula or channel mapping shows up as a mismatch."""
    m = copy.deepcopy(model64)
    for conv_path, norm_path, status, _ in pairs:
        if status == "folded":
            conv = m.get_submodule(conv_path)
            conv.weight = nn.Parameter(folded[f"{conv_path}.weight"].double())
            conv.bias = nn.Parameter(folded[f"{conv_path}.bias"].double())
            parent, _, leaf = norm_path.rpartition(".")
            setattr(m.get_submodule(parent), leaf, nn.Identity())
    with torch.no_grad():
        out = m(*inputs64)
    tol = FOLD_TOL[dtype]
    if not torch.allclose(out, ref, rtol=tol, atol=tol, equal_nan=True):
        raise AssertionError(f"{name}: folded parameters do not reproduce output64 "
                             f"(max diff {(out - ref).abs().max().item():.3g})")


def eager_links(model, inputs):
    """Run forward eagerly with hooks. Returns (output, BN applications, links),
    a link being (conv path, BN path) where the BN's input is the very tensor a
    conv/linear returned. Cross-checks the hand-written pairs, counts torchvision's."""
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
        elif is_norm(m):
            handles.append(m.register_forward_pre_hook(functools.partial(on_norm, path)))
    with torch.no_grad():
        out = model(*inputs)
    for h in handles:
        h.remove()
    return out, count[0], links


# -------------------------------------------------------------------- models

@dataclass
class Case:
    model: nn.Module              # eager, eval (unless a case says), norms randomized
    kind: str                     # "scripted" | "traced"
    inputs: List[torch.Tensor]
    note: str
    pairs: Optional[list] = None  # [(conv, norm, status, reason)]; None: torchvision, counts only
    norms: Optional[int] = None   # given only where hooks cannot see the BN (functional)
    folded: Optional[dict] = None  # given only where pairs are not module paths
    extra: List[str] = field(default_factory=list)  # exported methods, run on the same inputs
    check: Optional[Callable] = None  # must return True for the reloaded module


def folded(conv, norm):
    return (conv, norm, "folded", None)


def skipped(conv, norm, reason):
    return (conv, norm, "skipped", reason)


def conv46():
    return nn.Conv2d(4, 6, 3, padding=1)


class ConvBN(nn.Module):
    """conv -> bn. Subclasses change forward to create each condition."""

    def __init__(self, bn=None, channels=(4, 6)):
        super().__init__()
        self.conv = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.bn = bn if bn is not None else nn.BatchNorm2d(channels[1])

    def forward(self, x):
        return self.bn(self.conv(x))


class UsedTwice(ConvBN):
    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class CalledTwice(ConvBN):
    def forward(self, x):
        a = self.bn(self.conv(x))
        b = self.conv(x)
        return a + b


class Exported(ConvBN):
    @torch.jit.export
    def features(self, x):
        return self.bn(self.conv(x)).mean()


class DebugBranch(ConvBN):
    debug: torch.jit.Final[bool] = False

    def forward(self, x):
        y = self.conv(x)
        if self.debug:
            print(y.sum())
        return self.bn(y)


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = conv46()

    def forward(self, x):
        return self.conv(torch.relu(x))


class CrossBoundary(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Inner()
        self.seq = nn.Sequential(nn.BatchNorm2d(6), nn.ReLU())

    def forward(self, x):
        return self.seq(self.a(x))


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = conv46(), conv46()
        self.conv2.weight = self.conv1.weight
        self.bn1, self.bn2 = nn.BatchNorm2d(6), nn.BatchNorm2d(6)

    def forward(self, x):
        return self.bn1(self.conv1(x)) + self.bn2(self.conv2(x))


class FlagBranch(ConvBN):
    """`if self.flag: z = z + y` on a plain bool attribute no code assigns: decided (frozen)."""

    def __init__(self):
        super().__init__()
        self.flag = False

    def forward(self, x):
        y = self.conv(x)
        z = self.bn(y)
        if self.flag:
            z = z + y
        return z


class AssignedFlag(FlagBranch):
    """The same, but forward assigns the flag: not a constant, so y has two uses."""

    def forward(self, x):
        y = self.conv(x)
        z = self.bn(y)
        if self.flag:
            z = z + y
        self.flag = False
        return z


class MutatedList(ConvBN):
    """`if "extra" in self.names` on a list attribute that forward appends to: not a constant."""

    def __init__(self):
        super().__init__()
        self.names: List[str] = ["main"]

    def forward(self, x):
        y = self.conv(x)
        z = self.bn(y)
        if "extra" in self.names:
            z = z + y
        self.names.append("seen")
        return z


class LinearBN(nn.Module):
    """bn(fc(x)) on the module's own input: its rank is unknown to the graph."""

    def __init__(self):
        super().__init__()
        self.fc, self.bn = nn.Linear(4, 6), nn.BatchNorm1d(6)

    def forward(self, x):
        return self.bn(self.fc(x))


class PlainTensors(nn.Module):
    """Conv and BN tensors held as plain attributes: a trace bakes them in as constants."""

    def __init__(self):
        super().__init__()
        self.w = torch.randn(6, 4, 3, 3) * 0.3
        self.b = torch.randn(6) * 0.1
        self.rm, self.rv = torch.randn(6) * 0.5, torch.empty(6).uniform_(0.5, 2.0)
        self.g, self.beta = torch.empty(6).uniform_(0.5, 1.5), torch.randn(6) * 0.2

    PLAIN = ("w", "b", "rm", "rv", "g", "beta")

    def _apply(self, fn, *args, **kwargs):  # .double() for the float64 reference reaches them too
        for name in self.PLAIN:
            setattr(self, name, fn(getattr(self, name)))
        return super()._apply(fn, *args, **kwargs)

    def forward(self, x):
        y = F.conv2d(x, self.w, self.b, padding=1)
        return F.batch_norm(y, self.rm, self.rv, self.g, self.beta, False, 0.1, 1e-5)


class PlainWeightBN(nn.Module):
    """A plain-tensor conv weight (a traced constant) followed by a BatchNorm2d module."""

    def __init__(self):
        super().__init__()
        self.w = torch.randn(6, 4, 3, 3) * 0.3
        self.bn = nn.BatchNorm2d(6)

    def _apply(self, fn, *args, **kwargs):
        self.w = fn(self.w)
        return super()._apply(fn, *args, **kwargs)

    def forward(self, x):
        return self.bn(F.conv2d(x, self.w, None, padding=1))


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 4, 3, 3) * 0.3)
        self.b = nn.Parameter(torch.randn(6) * 0.1)
        self.g = nn.Parameter(torch.empty(6).uniform_(0.5, 1.5))
        self.beta = nn.Parameter(torch.randn(6) * 0.2)
        self.register_buffer("rm", torch.randn(6) * 0.5)
        self.register_buffer("rv", torch.empty(6).uniform_(0.5, 2.0))

    def forward(self, x):
        y = F.conv2d(x, self.w, self.b, padding=1)
        return F.batch_norm(y, self.rm, self.rv, self.g, self.beta, False, 0.1, 1e-5)


class FunctionalNoBias(Functional):
    """F.conv2d without a bias on the root's own parameters: the fold adds one, 'w_bias'."""

    def forward(self, x):
        y = F.conv2d(x, self.w, None, padding=1)
        return F.batch_norm(y, self.rm, self.rv, self.g, self.beta, False, 0.1, 1e-5)


class BiasNameTaken(nn.Module):
    """A bias-less functional conv whose weight is 'weight', while 'bias' holds another tensor."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 4, 3, 3) * 0.3)
        self.bias = nn.Parameter(torch.randn(6) * 0.1)
        self.g = nn.Parameter(torch.empty(6).uniform_(0.5, 1.5))
        self.beta = nn.Parameter(torch.randn(6) * 0.2)
        self.register_buffer("rm", torch.randn(6) * 0.5)
        self.register_buffer("rv", torch.empty(6).uniform_(0.5, 2.0))

    def forward(self, x):
        y = F.conv2d(x, self.weight, None, padding=1)
        z = F.batch_norm(y, self.rm, self.rv, self.g, self.beta, False, 0.1, 1e-5)
        return z + self.bias.view(1, -1, 1, 1)


def two_blocks():
    # Identical configs, so TorchScript gives both blocks one class.
    return nn.Sequential(OrderedDict(block1=ConvBN(channels=(6, 6)),
                                     block2=ConvBN(channels=(6, 6))))


def frozen_bn(channels):
    from torchvision.ops.misc import FrozenBatchNorm2d  # here: the up-to-date path skips it
    return FrozenBatchNorm2d(channels)


def simple(factory, kind, shape, note, pairs, tweak=None, dtype=torch.float32, **kw):
    """Builder for the small cases: build, randomize the norms, then tweak."""
    model = prep(factory()).to(dtype)
    if tweak is not None:
        with torch.no_grad():
            tweak(model)
    return Case(model, kind, [torch.randn(*shape).to(dtype)], note, pairs, **kw)


def functional_case(kind):
    m = Functional().eval()
    params = fold(m.w, m.b, m.rm, m.rv, m.g, m.beta, 1e-5)
    return Case(m, kind, [torch.randn(2, 4, 8, 8)],
                f"F.conv2d -> F.batch_norm on the root's own parameters/buffers, {kind}; "
                "folded_params use the real names (w, b)", [folded("", "")], norms=1,
                folded=dict(zip(("w", "b"), params)))


def functional_nobias_case(kind):
    m = FunctionalNoBias().eval()
    params = fold(m.w, None, m.rm, m.rv, m.g, m.beta, 1e-5)
    return Case(m, kind, [torch.randn(2, 4, 8, 8)],
                f"F.conv2d without bias -> F.batch_norm on the root's own parameters, {kind}: "
                "the new bias is 'w_bias' (the weight is not named 'weight')", [folded("", "")],
                norms=1, folded=dict(zip(("w", "w_bias"), params)))


def bias_name_taken_case():
    m = BiasNameTaken().eval()
    params = fold(m.weight, None, m.rm, m.rv, m.g, m.beta, 1e-5)
    return Case(m, "scripted", [torch.randn(2, 4, 8, 8)],
                "bias-less F.conv2d on 'weight' while 'bias' holds another tensor (added after the "
                "BN): the new bias is 'weight_bias', 'bias' keeps its value", [folded("", "")],
                norms=1, folded={"weight": params[0], "weight_bias": params[1], "bias": m.bias.detach().clone()})


class Backbone(nn.Module):
    """A detection backbone: IntermediateLayerGetter's dict of features, returned as a tuple."""

    def __init__(self, getter):
        super().__init__()
        self.getter = getter

    def forward(self, x):
        out = self.getter(x)
        return out["feat2"], out["feat4"]


def backbone(frozen):
    import torchvision
    from torchvision.models._utils import IntermediateLayerGetter
    kwargs = {"norm_layer": torchvision.ops.misc.FrozenBatchNorm2d} if frozen else {}
    net = torchvision.models.resnet18(weights=None, **kwargs)
    return Backbone(IntermediateLayerGetter(net, {"layer2": "feat2", "layer4": "feat4"}))


def vision_case(arch, kind, shape, note):
    import torchvision
    kwargs = {"num_classes": 10}  # a smaller head: same BNs, fewer megabytes
    if arch in ("backbone", "backbone_frozen"):
        return Case(prep(backbone(arch == "backbone_frozen")), kind, [torch.randn(*shape)],
                    f"torchvision {note}, {kind}")
    if arch == "resnet18_frozen":
        ctor = torchvision.models.resnet18
        kwargs["norm_layer"] = torchvision.ops.misc.FrozenBatchNorm2d
    else:
        ctor = functools.reduce(getattr, arch.split("."), torchvision.models)
    model = ctor(weights=None, **kwargs)
    if arch == "vgg11_bn":  # its 120M-parameter classifier has no BN: keep the file small
        model.classifier = nn.Linear(512 * 7 * 7, 10)
    return Case(prep(model), kind, [torch.randn(*shape)], f"torchvision {note}, {kind}")


P = functools.partial
NCHW = (2, 4, 8, 8)
SEQ, CONV_BN = [folded("0", "1")], [folded("conv", "bn")]
CONV_KINDS = {
    "conv1d": (nn.Conv1d, nn.BatchNorm1d, (8,)),
    "conv2d": (nn.Conv2d, nn.BatchNorm2d, (8, 8)),
    "conv3d": (nn.Conv3d, nn.BatchNorm3d, (5, 5, 5)),
    "convtranspose1d": (nn.ConvTranspose1d, nn.BatchNorm1d, (8,)),
    "convtranspose2d": (nn.ConvTranspose2d, nn.BatchNorm2d, (8, 8)),
    "convtranspose3d": (nn.ConvTranspose3d, nn.BatchNorm3d, (5, 5, 5)),
}
# arch -> (kind, input shape, note)
VISION = {
    "resnet18": ("traced", (1, 3, 64, 64), "resnet18"),
    "mobilenet_v3_small": ("scripted", (1, 3, 64, 64), "mobilenet_v3_small"),
    "efficientnet_b0": ("traced", (1, 3, 64, 64), "efficientnet_b0"),
    "densenet121": ("traced", (1, 3, 64, 64),
                    "densenet121: norm1 of every dense layer, the 3 transitions' norm and norm5 "
                    "follow torch.cat (pre-activation): only norm0 and each layer's norm2 fold"),
    "vgg11_bn": ("traced", (1, 3, 32, 32), "vgg11_bn with a 1-layer classifier"),
    "shufflenet_v2_x0_5": ("scripted", (1, 3, 64, 64), "shufflenet_v2_x0_5"),
    "regnet_y_400mf": ("traced", (1, 3, 64, 64), "regnet_y_400mf"),
    "video.r3d_18": ("traced", (1, 3, 4, 32, 32), "video.r3d_18"),
    "resnet18_frozen": ("scripted", (1, 3, 64, 64),
                        "resnet18(norm_layer=FrozenBatchNorm2d), as detection backbones use"),
}


def product_cases(cases):
    for conv_kind, (conv_cls, bn_cls, spatial) in CONV_KINDS.items():
        for bias, groups, kind in itertools.product((True, False), (1, 2), ("scripted", "traced")):
            # Some strides/dilations other than 1: they change the conv, never the folding.
            stride = 2 if groups == 2 and bias else 1
            dilation = 2 if groups == 2 and not bias else 1
            conv = P(conv_cls, 4, 6, 3, stride=stride, padding=1, dilation=dilation,
                     groups=groups, bias=bias)
            note = (f"{conv_cls.__name__}(bias={bias}, groups={groups}, stride={stride}, "
                    f"dilation={dilation}) -> {bn_cls.__name__}, {kind}")
            name = f"{conv_kind}_{'bias' if bias else 'nobias'}_g{groups}_{kind}"
            cases[name] = P(simple, lambda c=conv, b=bn_cls: nn.Sequential(c(), b(6)),
                            kind, (2, 4, *spatial), note, SEQ)
    for mode, kind in itertools.product(("reflect", "replicate", "circular"),
                                        ("scripted", "traced")):
        conv = P(nn.Conv2d, 4, 6, 3, padding=1, padding_mode=mode, bias=False)
        cases[f"padding_{mode}_{kind}"] = P(
            simple, lambda c=conv: nn.Sequential(c(), nn.BatchNorm2d(6)), kind, NCHW,
            f"Conv2d padding_mode={mode!r} (a pad op before the conv), {kind}", SEQ)


def structure_cases(cases):
    for kind in ("scripted", "traced"):
        cases[f"cross_boundary_{kind}"] = P(
            simple, CrossBoundary, kind, NCHW,
            f"the conv ends a child's forward, the BN starts a sibling Sequential, {kind}",
            [folded("a.conv", "seq.0")])
        cases[f"linear_bn1d_{kind}"] = P(
            simple, lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.BatchNorm1d(6)),
            kind, (2, 4, 2, 2), f"flatten -> Linear -> BatchNorm1d, {kind}", [folded("1", "2")])
        cases[f"functional_{kind}"] = P(functional_case, kind)
        cases[f"functional_nobias_{kind}"] = P(functional_nobias_case, kind)

    def add(name, factory, note, pairs, shape=NCHW, **kw):  # the rest are scripted
        cases[name] = P(simple, factory, "scripted", shape, note, pairs, **kw)

    add("conv_bn_relu", lambda: nn.Sequential(conv46(), nn.BatchNorm2d(6), nn.ReLU()),
        "conv -> BN -> ReLU", SEQ)
    # norms=1: the float64 check of the folded parameters assumes 2-D input; on this 3-D
    # input the guard runs the original Linear and BatchNorm1d.
    add("linear_3d_input", lambda: nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6)),
        "Linear on [N, L, F] with L == out_features: BatchNorm1d normalizes L, not the "
        "Linear's channels; folds behind a rank guard (2-D input), and this 3-D input runs "
        "the original path", [folded("0", "1")], shape=(2, 6, 4), norms=1)
    add("frozen_bn", lambda: nn.Sequential(conv46(), frozen_bn(6)),
        "torchvision FrozenBatchNorm2d (reshape/rsqrt/mul/sub/add in TorchScript, no "
        "aten::batch_norm) after a conv", SEQ)
    add("exported_method", Exported,
        "conv -> BN in forward and in an exported method 'features' (one pair)", CONV_BN,
        extra=["features"])
    add("affine_false", lambda: ConvBN(nn.BatchNorm2d(6, affine=False)),
        "BatchNorm2d(affine=False): gamma = 1, beta = 0", CONV_BN)
    add("debug_branch", DebugBranch, "`if self.debug: print(y.sum())` with debug: Final[bool]"
        " = False (scripting already drops the dead branch)", CONV_BN)
    for dtype in (torch.float16, torch.bfloat16):
        name = fio.DTYPE_NAMES[dtype]
        add(f"half_{name}", lambda: nn.Sequential(conv46(), nn.BatchNorm2d(6)),
            f"conv -> BN in {name}; folded params rounded once from float64" + (
                "; output is null: CPU PyTorch 1.13 has no float16 conv/batch_norm"
                if dtype == torch.float16 else " (not through float32)"), SEQ, dtype=dtype)


def skip_cases(cases):
    def add(name, factory, note, reason, **kw):
        cases[f"skip_{name}"] = P(simple, factory, "scripted", NCHW, note,
                                  [skipped("conv", "bn", reason)], **kw)

    def set_var(index, value):
        return lambda m: m.bn.running_var.__setitem__(index, value)

    add("used_twice", UsedTwice, "the conv output also feeds an add: bn(y) + y", "used 2 times")

    add("training", ConvBN, "the BN alone is in training mode", "training mode",
        tweak=lambda m: m.bn.train())
    add("no_running_stats", lambda: ConvBN(nn.BatchNorm2d(6, track_running_stats=False)),
        "BN with track_running_stats=False (batch stats even in eval)", "track_running_stats")
    add("nan_var", ConvBN, "running_var[1] is NaN (output: NaN in channel 1)", "not finite",
        tweak=set_var(1, float("nan")))
    add("negative_var", ConvBN, "running_var[0] = -1: var + eps <= 0 (output: NaN in channel 0)",
        "var + eps", tweak=set_var(0, -1.0))
    # Site copies: the weight is also read elsewhere, so the site with the BN gets its own
    # folded copy of the conv (graph constants) and the module's parameters stay as they
    # are (folded={}: nothing in the state changes; norms given: the float64 check of
    # module parameters does not apply).
    cases["site_copy_called_twice"] = P(
        simple, CalledTwice, "scripted", NCHW, "the conv module is called again without a BN: "
        "the site with the BN gets its own folded copy of the conv", [folded("conv", "bn")],
        norms=1, folded={})
    cases["site_copy_tied"] = P(
        simple, Tied, "scripted", NCHW, "two convs share one weight Parameter, each with a BN: "
        "each site gets its own folded copy, the tie stays",
        [folded("conv1", "bn1"), folded("conv2", "bn2")], norms=2, folded={},
        check=lambda m: m.conv1.weight.data_ptr() == m.conv2.weight.data_ptr())
    cases["skip_shared_class"] = P(
        simple, two_blocks, "scripted", (2, 6, 8, 8), "two instances of one scripted class; "
        "block2's BN is in training mode, so block1's shared code cannot change",
        [skipped("block1.conv", "block1.bn", "shared"),
         skipped("block2.conv", "block2.bn", "training mode")],
        tweak=lambda m: m.block2.bn.train(),
        check=lambda m: m.block1._c._type() == m.block2._c._type())


def recall_cases(cases):
    """Folds found through frozen attributes, rank guards and graph constants (issue 17)."""
    def add(name, factory, note, pairs, shape=NCHW, kind="scripted", **kw):
        cases[name] = P(simple, factory, kind, shape, note, pairs, **kw)

    cases["functional_bias_name_taken"] = P(bias_name_taken_case)
    add("frozen_flag", FlagBranch, "`if self.flag: z = z + y` with a plain bool attribute that no "
        "code assigns: decided as a constant, so y has one use", CONV_BN)
    add("skip_assigned_flag", AssignedFlag, "the same, but forward assigns self.flag: not a "
        "constant, so y may have two uses", [skipped("conv", "bn", "used 2 times")])
    add("skip_mutated_list", MutatedList, "`if 'extra' in self.names` with a list attribute "
        "that forward appends to: not a constant", [skipped("conv", "bn", "used 2 times")])
    add("linear_bn1d_unknown_rank", LinearBN, "bn(fc(x)) on the module's input (rank unknown): "
        "folds behind a rank guard for 2-D input", [folded("fc", "bn")], shape=(3, 4))
    # Graph constants: nothing in the module's state changes (folded={}), and the float64
    # check of module parameters does not apply (norms given).
    add("constants_traced", PlainTensors, "F.conv2d -> F.batch_norm on plain tensor attributes, "
        "traced: weight, bias and statistics are graph constants", [folded("", "")],
        kind="traced", norms=1, folded={})
    cases["tv_resnet18_frozen_traced"] = P(
        vision_case, "resnet18_frozen", "traced", (1, 3, 64, 64),
        "resnet18(norm_layer=FrozenBatchNorm2d), traced: its eps is a constant in the graph")
    cases["tv_densenet121_scripted"] = P(
        vision_case, "densenet121", "scripted", (1, 3, 64, 64),
        "densenet121: each dense layer's `memory_efficient` branch (a frozen bool) "
        "and its raising branches decide the path; norm1s, the transitions' norm and norm5 "
        "follow torch.cat")
    for arch, norm in (("backbone_frozen", "FrozenBatchNorm2d"), ("backbone", "BatchNorm2d")):
        cases[f"tv_{arch}_scripted"] = P(
            vision_case, arch, "scripted", (1, 3, 64, 64),
            f"IntermediateLayerGetter(resnet18(norm_layer={norm}), {{layer2, layer4}}) in a "
            "module returning the two features: `if name in self.return_layers` per child")
    add("constant_weight_bn_traced", PlainWeightBN, "F.conv2d on a plain tensor weight (a "
        "graph constant, no bias) -> BatchNorm2d module, traced", [folded("", "bn")],
        kind="traced", norms=1, folded={})


def all_cases():
    """name -> builder, in manifest order."""
    cases = {}
    product_cases(cases)
    structure_cases(cases)
    skip_cases(cases)
    recall_cases(cases)
    for arch, (kind, shape, note) in VISION.items():
        cases[f"tv_{arch.split('.')[-1]}_{kind}"] = P(vision_case, arch, kind, shape, note)
    return cases


# ---------------------------------------------------------------- writing

def make_expect(name, case, norms, links):
    if case.pairs is None:  # torchvision: counts only, from the eager run
        return {"norms": norms, "pairs": None, "foldable": len(links)}
    if case.norms is None:  # module-based: the hand-written pairs must match the hooks
        listed = sorted((c, n) for c, n, _, _ in case.pairs)
        if listed != sorted(links):
            raise AssertionError(f"{name}: pairs {listed}, but the eager run links {links}")
    return {"norms": norms if case.norms is None else case.norms,
            "pairs": [{"conv": c, "norm": n, "status": s, "reason": r}
                      for c, n, s, r in case.pairs]}


def make_case(outdir, name, builder, written):
    torch.manual_seed(zlib.crc32(name.encode()))
    start = time.perf_counter()
    case = builder()
    first = next(case.model.parameters(), None)  # a model of plain tensors has none
    dtype = first.dtype if first is not None else case.inputs[0].dtype
    # The reference runs the eager code in float64, copied before jit touches it.
    model64 = copy.deepcopy(case.model).double()
    inputs64 = [x.double() for x in case.inputs]
    output64, norms, links = eager_links(model64, inputs64)
    if case.kind == "scripted":
        module = torch.jit.script(case.model)
    else:
        module = torch.jit.trace(case.model, tuple(case.inputs))
    if case.pairs is None and time.perf_counter() - start > VISION_TIME_LIMIT_S:
        print(f"left out {name}: {time.perf_counter() - start:.1f}s to build")
        return None
    path = os.path.join(outdir, f"{name}.pt")
    torch.jit.save(module, path)
    written.append(f"{name}.pt")
    loaded = torch.jit.load(path)  # outputs come from the file, as the tests will see it
    if case.check is not None and not case.check(loaded):
        raise AssertionError(f"{name}: the saved module fails its check")
    expect = make_expect(name, case, norms, links)
    params = case.folded if case.folded is not None else fold_pairs(case.model, case.pairs or [])
    if case.norms is None and any(p[2] == "folded" for p in case.pairs or []):
        check_folding(name, model64, inputs64, output64, params, case.pairs, dtype)
    sink = fio.TensorSink(outdir, name)
    enc = functools.partial(fio.encode_tree, sink=sink)
    with torch.no_grad():
        output = None if dtype == torch.float16 else loaded(*case.inputs)
        entry = {"file": f"{name}.pt", "kind": case.kind, "dtype": fio.DTYPE_NAMES[dtype],
                 "note": case.note, "inputs": enc(case.inputs), "output": enc(output),
                 "output64": enc(output64), "expect": expect,
                 "folded_params": {k: enc(v) for k, v in params.items()}}
        if case.pairs is None:
            entry["note"] += f" ({norms} BN applications, {len(links)} directly after a conv)"
        if case.extra:
            entry["extra_cases"] = [{"method": m, "inputs": enc(case.inputs),
                                     "output": enc(getattr(loaded, m)(*case.inputs)),
                                     "output64": enc(getattr(model64, m)(*inputs64))}
                                    for m in case.extra]
    written.extend(sink.written)
    return entry, time.perf_counter() - start


def make_all(outdir, version):
    # Remove the old manifest first: until the new one lands, the directory reads as "not made".
    manifest_path = os.path.join(outdir, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    written, cases = [], {}
    for name, builder in all_cases().items():
        made = make_case(outdir, name, builder, written)
        if made is not None:
            cases[name], seconds = made
            print(f"made {name} ({seconds:.2f}s)", flush=True)
    fixture_common.remove_stale(outdir, written)
    fio.write_json_atomic(manifest_path, {"version": version, "torch": torch.__version__,
                                          "torchvision": fio.torchvision_version(), "cases": cases})


def main(argv):
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outdir = argv[1] if len(argv) > 1 else os.path.join(repo_root, "test", "fixtures", "fuse")
    version = fio.source_version("make_fuse_fixtures.py")
    if (fio.read_manifest(outdir) or {}).get("version") == version:
        print("fuse fixtures up to date")
        return 0
    start = time.perf_counter()
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)  # fewer threads, fewer reduction-order differences
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    check_rounding()
    make_all(outdir, version)
    print(f"wrote {os.path.join(outdir, 'manifest.json')} ({time.perf_counter() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
