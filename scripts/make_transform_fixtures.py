"""Make the fixtures for torchfold's model transforms with real PyTorch.

Usage: /usr/bin/python3 scripts/make_transform_fixtures.py [OUTDIR]
       (OUTDIR defaults to test/fixtures/transform)

OUTDIR/manifest.json has four sections. Each case's model is OUTDIR/<p>_<case>.pt
(p: const, half, graph, opt) and its tensors are TREEs (fixture_io.py) whose bytes
are in OUTDIR/<p>_<case>.<n>.bin:

  constants  module.fuse({ constants: true }): a conv/linear whose output only feeds
             mul/div/add/sub with a constant, alone or chained with BatchNorms. Per
             case: inputs, output (the model's own), output64 (an eager float64 copy),
             expect.absorbed [{conv, op (mul|div|add|sub), status, reason}],
             expect.norms_folded (BNs folded as well), and
             folded_params: float64 across the whole chain, rounded once at the end,
             checked here by running the folded float64 model against output64.
  half       module.toHalf(options): per model, option sets with the layers they
             convert and PyTorch's output for that conversion (bfloat16 only: this CPU
             libtorch has no float16 addmm/conv, so float16 sets carry no output).
  graph      forward's graph as PyTorch sees it after loading the file, inlined and
             not: every node depth-first (blocks after their owner), its inputs'
             producers, output count, and the producers of each aten::cat's list.
  optimize   models for an optimize-for-inference feature: inputs, output64, and what
             torch.jit.freeze + torch.jit.optimize_for_inference do to them (succeeds?
             saves and reloads? error text; methods left; the optimized graph's kinds).

Idempotent like make_fuse_fixtures.py: "version" is fio.source_version of this script
(this script, fixture_io.py, torch and torchvision versions); when it matches, the run
ends before torch is imported. The manifest is written last, atomically; OUTDIR
belongs to this script: .pt/.bin files there that it did not write are removed.
"""
import copy
import functools
import io
import json
import os
import sys
import time
import warnings
import zlib  # crc32 of a case's name seeds it: adding cases never changes others
from collections import Counter
from dataclasses import dataclass
from typing import Callable, List, Optional

import fixture_common  # noqa: E402  (torch-free helpers, next to this script)

SCRIPT = os.path.basename(__file__)
HERE = os.path.dirname(os.path.abspath(__file__))


# ------------------------------------------------- up-to-date check without torch

def manifest_version(outdir):
    try:
        with open(os.path.join(outdir, "manifest.json"), encoding="utf-8") as f:
            return json.load(f).get("version")
    except (OSError, ValueError, AttributeError):
        return None


if __name__ == "__main__":
    _quick = fixture_common.quick_source_version(SCRIPT)
    if _quick is not None and manifest_version(fixture_common.outdir_arg(sys.argv, 'test', 'fixtures', 'transform')) == _quick:
        print("transform fixtures up to date")
        sys.exit(0)


def pin_hash_seed():
    """Re-exec with PYTHONHASHSEED=0 before torch loads: TorchScript saves module
    constants in set order, so a fixed seed keeps the .pt files byte-identical."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


if __name__ == "__main__":
    pin_hash_seed()

sys.path.insert(0, HERE)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import fixture_io as fio  # noqa: E402

# How close the float64 model with the expected folded parameters (absorbed ops
# and BNs removed) must come to output64: only the single rounding separates them.
FOLD_TOL = {torch.float64: 1e-9, torch.float32: 1e-5}
ERROR_CHARS = 400  # error texts in the manifest are cut to this length


def seed(name):
    torch.manual_seed(zlib.crc32(name.encode()))


def encoder(outdir, prefix):
    sink = fio.TensorSink(outdir, prefix)
    return sink, functools.partial(fio.encode_tree, sink=sink)


def save_and_load(module, outdir, file, written):
    """Save, then reload: everything recorded comes from the file, as tests see it."""
    path = os.path.join(outdir, file)
    torch.jit.save(module, path)
    written.append(file)
    return torch.jit.load(path)


def error_text(e):
    return f"{type(e).__name__}: {str(e).strip()}"[:ERROR_CHARS]


def max_abs_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


# ================================================================= constants

def conv46(**kw):
    return nn.Conv2d(4, 6, 3, padding=1, **kw)


def attach(module, name, value, how):
    """A constant tensor as a buffer, a parameter or a plain attribute."""
    if how == "buffer":
        module.register_buffer(name, value)
    elif how == "parameter":
        setattr(module, name, nn.Parameter(value))
    else:
        setattr(module, name, value)


class ConvOp(nn.Module):
    """self.conv followed by an op with a constant self.c; subclasses write forward.
    folded_forward (eager only: never scripted) is forward with the absorbed ops and
    BNs removed, for check_folding."""

    def __init__(self, c=None, conv=None, how="buffer", bn=None):
        super().__init__()
        self.conv = conv if conv is not None else conv46()
        if c is not None:
            attach(self, "c", c, how)
        if bn is not None:
            self.bn = bn

    def folded_forward(self, x):
        return self.conv(x)


class MulScalar(ConvOp):
    def forward(self, x):
        return self.conv(x) * 0.5


class MulC(ConvOp):
    def forward(self, x):
        return self.conv(x) * self.c


class CMul(ConvOp):
    def forward(self, x):
        return self.c * self.conv(x)


class DivScalar(ConvOp):
    def forward(self, x):
        return self.conv(x) / 3.0


class DivC(ConvOp):
    def forward(self, x):
        return self.conv(x) / self.c


class AddC(ConvOp):
    def forward(self, x):
        return self.conv(x) + self.c


class SubScalar(ConvOp):
    def forward(self, x):
        return self.conv(x) - 0.25


class CSub(ConvOp):
    def forward(self, x):
        return self.c - self.conv(x)


class CDiv(ConvOp):
    def forward(self, x):
        return self.c / self.conv(x)


class MulAddBN(ConvOp):
    """conv -> * c -> + d -> BN -> ReLU."""

    def __init__(self, c, d):
        super().__init__(c, bn=nn.BatchNorm2d(6))
        self.register_buffer("d", d)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x) * self.c + self.d))

    def folded_forward(self, x):
        return torch.relu(self.conv(x))


class BNMul(ConvOp):
    """conv -> BN -> * c."""

    def forward(self, x):
        return self.bn(self.conv(x)) * self.c


class AlsoRead(ConvOp):
    def forward(self, x):
        return self.conv(x) * self.c + self.c.mean()


class Computed(ConvOp):
    def forward(self, x):
        return self.conv(x) * (self.c * 2)


class UsedTwice(ConvOp):
    def forward(self, x):
        y = self.conv(x)
        return y * 0.5 + torch.relu(y)


class TensorInForward(ConvOp):
    """torch.tensor(...) in forward: traced, it is baked into the graph."""

    def forward(self, x):
        c = torch.tensor([[[1.5]], [[-2.0]], [[0.25]], [[3.0]], [[0.75]], [[-0.5]]])
        return self.conv(x) * c


class LinearMulC(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc = nn.Linear(8, 6)
        self.register_buffer("c", c)

    def forward(self, x):
        return self.fc(x) * self.c

    def folded_forward(self, x):
        return self.fc(x)


@dataclass
class ConstCase:
    model: nn.Module            # eager, eval, BNs randomized
    kind: str                   # "scripted" | "traced"
    inputs: List[torch.Tensor]
    note: str
    absorbed: list              # [(conv, op, status, reason)]
    chain: Optional[Callable] = None  # model -> {layer path: [(op, constant | BN module)]}
    norms_folded: int = 0


def fold_chain(layer, steps):
    """Expected (W', B') of a conv/linear after absorbing steps in data-flow order,
    computed in float64 and rounded once to the weight's dtype."""
    dtype, W = layer.weight.dtype, layer.weight.detach().double()
    transposed = isinstance(layer, nn.modules.conv._ConvTransposeNd)
    assert not transposed or layer.groups == 1, "grouped transposed convs are not handled here"
    channels = W.shape[1] if transposed else W.shape[0]
    B = (torch.zeros(channels, dtype=torch.float64) if layer.bias is None
         else layer.bias.detach().double())
    ones = [1] * (W.dim() - 2)
    shape = [1, channels, *ones] if transposed else [channels, 1, *ones]  # output channel axis
    for op, value in steps:
        if op == "bn":
            s = value.weight.detach().double() / torch.sqrt(value.running_var.double() + value.eps)
            W, B = W * s.reshape(shape), (B - value.running_mean.double()) * s + value.bias.double()
            continue
        if isinstance(value, torch.Tensor):
            c = value.detach().double().reshape(-1)
            c = c.expand(channels) if c.numel() == 1 else c
        else:
            c = torch.full((channels,), float(value), dtype=torch.float64)
        cw = c.reshape(shape)
        if op == "mul":
            W, B = W * cw, B * c
        elif op == "div":
            W, B = W / cw, B / c
        elif op == "add":
            B = B + c
        elif op == "sub":
            B = B - c
        elif op == "rsub":  # c - conv
            W, B = -W, c - B
        else:
            raise ValueError(op)
    return W.to(dtype), B.to(dtype)


def check_folding(name, model64, inputs64, ref, params, dtype):
    """Run folded_forward in float64 with the expected parameters: a wrong formula or
    channel mapping shows up as a mismatch against output64."""
    m = copy.deepcopy(model64)
    for path, t in params.items():
        layer_path, _, leaf = path.rpartition(".")
        setattr(m.get_submodule(layer_path), leaf, nn.Parameter(t.double()))
    with torch.no_grad():
        out = m.folded_forward(*inputs64)
    tol = FOLD_TOL[dtype]
    if not torch.allclose(out, ref, rtol=tol, atol=tol * ref.abs().max().item()):
        raise AssertionError(f"{name}: folded parameters do not reproduce output64 "
                             f"(max diff {(out - ref).abs().max().item():.3g})")


def const_cases():
    """name -> builder of a ConstCase, in manifest order."""
    P = functools.partial
    NCHW = (2, 4, 8, 8)
    cases = {}

    def per_channel(*shape, lo=0.5, hi=2.0):
        return torch.empty(*shape).uniform_(lo, hi) * torch.where(
            torch.rand(*shape) < 0.3, -1.0, 1.0)

    def case(factory, note, absorbed, chain=None, kind="scripted", shape=NCHW, dtype=torch.float32,
             norms_folded=0):
        model = factory().eval()
        fio.randomize_bn(model)
        if dtype != torch.float32:  # .to(float32) would also convert skip_dtype's buffer
            model = model.to(dtype)
        return ConstCase(model, kind, [torch.randn(*shape).to(dtype)], note, absorbed, chain,
                         norms_folded)

    def folded(op, conv="conv"):
        return (conv, op, "folded", None)

    def skipped(op, reason, conv="conv"):
        return (conv, op, "skipped", reason)

    def add(name, factory, note, absorbed, chain=None, **kw):
        cases[name] = P(case, factory, note, absorbed, chain, **kw)

    add("mul_scalar", MulScalar, "conv(x) * 0.5 (float literal)", [folded("mul")],
        lambda m: {"conv": [("mul", 0.5)]})
    add("mul_channel_buffer", lambda: MulC(per_channel(6, 1, 1)),
        "conv(x) * c, c a [6,1,1] buffer", [folded("mul")],
        lambda m: {"conv": [("mul", m.c)]})
    add("mul_numel1_buffer", lambda: MulC(torch.tensor([[[1.75]]])),
        "conv(x) * c, c a [1,1,1] buffer (numel 1, dim 3 = d+1)", [folded("mul")],
        lambda m: {"conv": [("mul", m.c)]})
    add("mul_0dim_attribute", lambda: MulC(torch.tensor(-1.25), how="attribute"),
        "conv(x) * c, c a 0-dim tensor held as a plain attribute (not a buffer)",
        [folded("mul")], lambda m: {"conv": [("mul", m.c)]})
    add("mul_0dim_float64_buffer", lambda: MulC(torch.tensor(1.3, dtype=torch.float64)),
        "float32 conv(x) * c, c a 0-dim float64 buffer: a 0-dim tensor does not change "
        "the result's dtype, so unlike skip_dtype it folds", [folded("mul")],
        lambda m: {"conv": [("mul", m.c)]})
    add("cmul_channel_buffer", lambda: CMul(per_channel(6, 1, 1)),
        "c * conv(x), c a [6,1,1] buffer (the conv is the mul's second operand)",
        [folded("mul")], lambda m: {"conv": [("mul", m.c)]})
    add("div_scalar", DivScalar, "conv(x) / 3.0: W/3 and B/3 in float64", [folded("div")],
        lambda m: {"conv": [("div", 3.0)]})
    add("div_channel_buffer", lambda: DivC(per_channel(6, 1, 1)),
        "conv(x) / c, c a [6,1,1] buffer", [folded("div")],
        lambda m: {"conv": [("div", m.c)]})
    add("add_channel_parameter", lambda: AddC(torch.randn(6, 1, 1), how="parameter"),
        "conv(x) + c, c a [6,1,1] Parameter", [folded("add")],
        lambda m: {"conv": [("add", m.c)]})
    add("sub_scalar", SubScalar, "conv(x) - 0.25", [folded("sub")],
        lambda m: {"conv": [("sub", 0.25)]})
    add("csub_channel_buffer", lambda: CSub(torch.randn(6, 1, 1)),
        "c - conv(x), c a [6,1,1] buffer: W' = -W, B' = c - B", [folded("sub")],
        lambda m: {"conv": [("rsub", m.c)]})
    add("nobias_add", lambda: AddC(torch.randn(6, 1, 1), conv=conv46(bias=False)),
        "Conv2d(bias=False) + c, c a [6,1,1] buffer: the tool adds a bias (B = 0)",
        [folded("add")], lambda m: {"conv": [("add", m.c)]})
    add("linear_mul_channel", lambda: LinearMulC(per_channel(6)),
        "Linear(8, 6) on [2, 5, 8], output * c, c a [6] buffer", [folded("mul", "fc")],
        lambda m: {"fc": [("mul", m.c)]}, shape=(2, 5, 8))
    add("traced_attribute_constant", lambda: MulC(per_channel(6, 1, 1), how="attribute"),
        "traced conv(x) * self.c, c a plain tensor attribute (not a buffer): the trace "
        "bakes it in as prim::Constant", [folded("mul")],
        lambda m: {"conv": [("mul", m.c)]}, kind="traced")
    add("traced_buffer", lambda: MulC(per_channel(6, 1, 1)),
        "traced conv(x) * self.c, c a [6,1,1] buffer (prim::GetAttr in the trace)",
        [folded("mul")], lambda m: {"conv": [("mul", m.c)]}, kind="traced")
    add("traced_torch_tensor", TensorInForward,
        "traced conv(x) * torch.tensor([...]) (shape [6,1,1]): the trace records "
        "prim::Constant -> aten::to -> aten::detach, so the operand is computed, not a "
        "constant: nothing is listed", [], kind="traced")
    add("traced_scalar", MulScalar,
        "traced conv(x) * 0.5: the trace turns 0.5 into a 0-dim float64 tensor constant; "
        "0-dim, so its dtype does not change the result's and it folds like a number",
        [folded("mul")], lambda m: {"conv": [("mul", 0.5)]}, kind="traced")
    add("chain_mul_add_bn", lambda: MulAddBN(per_channel(6, 1, 1), torch.randn(6, 1, 1)),
        "conv -> * c -> + d -> BN -> ReLU: all three fold into the conv",
        [folded("mul"), folded("add")],
        lambda m: {"conv": [("mul", m.c), ("add", m.d), ("bn", m.bn)]}, norms_folded=1)
    add("chain_bn_mul", lambda: BNMul(per_channel(6, 1, 1), bn=nn.BatchNorm2d(6)),
        "conv -> BN -> * c: the BN folds, then the conv's output feeds the mul",
        [folded("mul")], lambda m: {"conv": [("bn", m.bn), ("mul", m.c)]},
        norms_folded=1)
    add("conv1d_mul", lambda: MulC(per_channel(6, 1), conv=nn.Conv1d(4, 6, 3, padding=1)),
        "Conv1d * c, c [6,1]", [folded("mul")], lambda m: {"conv": [("mul", m.c)]},
        shape=(2, 4, 8))
    add("conv3d_mul", lambda: MulC(per_channel(6, 1, 1, 1), conv=nn.Conv3d(4, 6, 3, padding=1)),
        "Conv3d * c, c [6,1,1,1]", [folded("mul")], lambda m: {"conv": [("mul", m.c)]},
        shape=(2, 4, 4, 4, 4))
    add("convtranspose2d_mul",
        lambda: MulC(per_channel(6, 1, 1), conv=nn.ConvTranspose2d(4, 6, 3, stride=2)),
        "ConvTranspose2d(4, 6, 3, stride=2) * c, c [6,1,1]: weight [in, out, k, k], "
        "scaled along dim 1", [folded("mul")], lambda m: {"conv": [("mul", m.c)]})
    add("float64_mul", lambda: MulC(per_channel(6, 1, 1)),
        "float64 model: conv(x) * c, c a float64 [6,1,1] buffer", [folded("mul")],
        lambda m: {"conv": [("mul", m.c)]}, dtype=torch.float64)
    # ------------------------------------------------ skipped, or not listed
    add("skip_also_read", lambda: AlsoRead(per_channel(6, 1, 1)),
        "conv(x) * c + c.mean(): the buffer c is also read elsewhere",
        [skipped("mul", "is also read")])
    add("guard_batched_shape", lambda: MulC(per_channel(1, 6, 1, 1)),
        "conv(x) * c, c [1,6,1,1] (dim d+2: an unbatched input would gain a dim): folds "
        "behind a rank guard, the original path kept for unbatched input",
        [folded("mul")], lambda m: {"conv": [("mul", m.c)]})
    add("guard_batched_numel1", lambda: MulC(torch.tensor([[[[2.5]]]])),
        "conv(x) * c, c [1,1,1,1]: numel 1 but dim d+2, folds behind a rank guard",
        [folded("mul")], lambda m: {"conv": [("mul", m.c)]})
    add("skip_wrong_shape", lambda: MulC(per_channel(6, 1)),
        "conv(x) * c, c [6,1] on a 2-d conv (broadcasts over H, W: not per-channel)",
        [skipped("mul", "per-channel")], shape=(2, 4, 6, 6))
    add("skip_spatial", lambda: AddC(torch.randn(1, 8, 8)),
        "conv(x) + c, c [1,8,8] (varies over space)", [skipped("add", "per-channel")])
    add("skip_dtype", lambda: MulC(per_channel(6, 1, 1).double()),
        "float32 conv(x) * c, c a float64 [6,1,1] buffer (type promotion makes the "
        "output float64; folding would keep it float32)", [skipped("mul", "dtype")])
    add("skip_used_twice", UsedTwice, "y = conv(x); y * 0.5 + relu(y)",
        [skipped("mul", "used 2 times")])
    add("skip_cdiv", lambda: CDiv(per_channel(6, 1, 1)), "c / conv(x), c a [6,1,1] buffer",
        [skipped("div", "divides by")])
    add("computed_not_listed", lambda: Computed(per_channel(6, 1, 1)),
        "conv(x) * (self.c * 2): computed in forward, not a constant: nothing is listed", [])
    return cases


def make_const_case(outdir, name, builder, written):
    seed(f"const_{name}")
    case = builder()
    dtype = next(case.model.parameters()).dtype
    model64 = copy.deepcopy(case.model).double()  # before jit touches it
    inputs64 = [x.double() for x in case.inputs]
    with torch.no_grad():
        output64 = model64(*inputs64)
        if case.kind == "scripted":
            module = torch.jit.script(case.model)
        else:
            module = torch.jit.trace(case.model, tuple(case.inputs))
    loaded = save_and_load(module, outdir, f"const_{name}.pt", written)
    params = {}
    for path, steps in (case.chain(case.model) if case.chain else {}).items():
        params[f"{path}.weight"], params[f"{path}.bias"] = fold_chain(
            case.model.get_submodule(path), steps)
    if params:
        check_folding(name, model64, inputs64, output64, params, dtype)
    folds = sum(s == "folded" for _, _, s, _ in case.absorbed)
    if bool(params) != bool(folds):
        raise AssertionError(f"{name}: folded ops and folded_params disagree")
    sink, enc = encoder(outdir, f"const_{name}")
    with torch.no_grad():
        entry = {"file": f"const_{name}.pt", "kind": case.kind, "dtype": fio.DTYPE_NAMES[dtype],
                 "note": case.note, "inputs": enc(case.inputs), "output": enc(loaded(*case.inputs)),
                 "output64": enc(output64),
                 "expect": {"absorbed": [{"conv": c, "op": o, "status": s, "reason": r}
                                         for c, o, s, r in case.absorbed],
                            "norms_folded": case.norms_folded},
                 "folded_params": {k: enc(v) for k, v in params.items()}}
    written.extend(sink.written)
    return entry


# ====================================================================== half

class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 512), nn.Linear(512, 512), nn.Linear(512, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class SmallConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)       # 448 parameters
        self.conv2 = nn.Conv2d(16, 128, 3, padding=1)     # 18,560
        self.conv3 = nn.Conv2d(128, 128, 3, padding=1)    # 147,584: the large one
        self.fc = nn.Linear(128, 10)                      # 1,290

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class CastWrap(nn.Module):
    """What toHalf does to one layer: parameters in `dtype`, input cast to it, output
    cast back to the input's dtype."""

    def __init__(self, layer, dtype):
        super().__init__()
        self.layer = layer.to(dtype)
        self.dtype = dtype

    def forward(self, x):
        return self.layer(x.to(self.dtype)).to(x.dtype)


HALF_MODELS = {
    # name -> (factory, input shape, note, option sets)
    "mlp": (MLP, (4, 64), "Linear(64,512) -> ReLU -> Linear(512,512) -> ReLU -> Linear(512,10); "
            "parameters: fc1 33,280, fc2 262,656, fc3 5,130",
            [{"minParams": 100000}, {"layers": ["fc2"]}, {"minParams": 1000},
             {"layers": ["fc1", "fc3"]}]),
    "convnet": (SmallConvNet, (2, 3, 16, 16),
                "conv1 (448) -> conv2 (18,560) -> conv3 (147,584) -> pool -> fc (1,290)",
                [{"minParams": 100000}, {"layers": ["conv1", "fc"]}, {"minParams": 1000}]),
}


def half_layers(model, options):
    """The layers an option set picks: `layers` as given, else every Linear/Conv*d
    with at least minParams parameters (weight + bias), in module order."""
    if "layers" in options:
        return list(options["layers"])
    return [p for p, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
            and sum(t.numel() for t in m.parameters()) >= options["minParams"]]


def converted(model, layers, dtype):
    m = copy.deepcopy(model)
    for path in layers:
        parent, _, leaf = path.rpartition(".")
        owner = m.get_submodule(parent)
        setattr(owner, leaf, CastWrap(getattr(owner, leaf), dtype))
    return m


def make_half_case(outdir, name, spec, written):
    factory, shape, note, option_sets = spec
    seed(f"half_{name}")
    model = factory().eval()
    inputs = [torch.randn(*shape)]
    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        output64 = model64(*[x.double() for x in inputs])
        loaded = save_and_load(torch.jit.script(model), outdir, f"half_{name}.pt", written)
        output = loaded(*inputs)
    sink, enc = encoder(outdir, f"half_{name}")
    sets = []
    for options in option_sets:
        for dtype_name in ("bfloat16", "float16"):
            opts = dict(options, dtype=dtype_name)
            layers = half_layers(model, opts)
            out = None
            if dtype_name == "bfloat16":  # CPU 1.13 has no float16 addmm/conv kernels
                with torch.no_grad():
                    out = converted(model, layers, torch.bfloat16)(*inputs)
                assert out.dtype == torch.float32
            sets.append({"options": opts, "layers": layers, "output": enc(out),
                         "max_abs_diff_to_output64": None if out is None
                         else max_abs_diff(out, output64)})
    entry = {"file": f"half_{name}.pt", "note": note, "inputs": enc(inputs),
             "output": enc(output), "output64": enc(output64),
             "params": {p: sum(t.numel() for t in m.parameters())
                        for p, m in model.named_modules()
                        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))},
             "option_sets": sets}
    written.extend(sink.written)
    return entry


# ===================================================================== graph

class CatNet(nn.Module):
    """Two branches joined by torch.cat, then conv -> BN -> ReLU."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        y = torch.cat([self.a(x), torch.relu(self.b(x))], 1)
        return torch.relu(self.bn(self.conv(y)))


def graph_records(graph):
    """Every node of graph, depth-first pre-order (a node, then its blocks' nodes).

    Each input is [producer's index in the list, which of its outputs]; [-1, k] for
    graph input k (input 0 is the module itself); [i, -1 - j] for parameter j of
    node i's block (only prim::Loop's one block has parameters: the iteration count
    and the loop-carried values). depth is the block nesting, block [owner index,
    block number] (null at top level); block_returns, on an owner, lists each
    block's returned values the same way."""
    src, records = {}, []
    for k, v in enumerate(graph.inputs()):
        src[v.unique()] = [-1, k]

    def where(v):
        return src[v.unique()]

    def walk(nodes, depth, owner):
        for node in nodes:
            idx = len(records)
            rec = {"kind": node.kind(), "depth": depth, "block": owner,
                   "inputs": [where(v) for v in node.inputs()], "outputs": node.outputsSize()}
            if node.hasAttribute("name"):  # prim::GetAttr, prim::CallMethod
                rec["name"] = node.s("name")
            records.append(rec)
            for k, v in enumerate(node.outputs()):
                src[v.unique()] = [idx, k]
            if node.kind() == "aten::cat":
                lst = next(node.inputs()).node()
                rec["cat_inputs"] = ([v.node().kind() for v in lst.inputs()]
                                     if lst.kind() == "prim::ListConstruct" else None)
            blocks = list(node.blocks())
            if sum(bool(list(bl.inputs())) for bl in blocks) > 1:
                raise NotImplementedError("parameters in two blocks of one node")
            for b, block in enumerate(blocks):
                for j, v in enumerate(block.inputs()):
                    src[v.unique()] = [idx, -1 - j]
                walk(block.nodes(), depth + 1, [idx, b])
            if blocks:
                rec["block_returns"] = [[where(v) for v in bl.returnNode().inputs()]
                                        for bl in blocks]

    walk(graph.nodes(), 0, None)
    return {"inputs": [str(v.type()) for v in graph.inputs()], "nodes": records,
            "returns": [where(v) for v in graph.return_node().inputs()]}


def make_graph_case(outdir, name, kind, written):
    seed(f"graph_{name}")
    model = fio.randomize_bn(CatNet()).eval()
    inputs = [torch.randn(1, 3, 8, 8)]
    with torch.no_grad():
        module = (torch.jit.script(model) if kind == "scripted"
                  else torch.jit.trace(model, tuple(inputs)))
    loaded = save_and_load(module, outdir, f"graph_{name}.pt", written)
    raw = loaded.forward.graph.copy()
    inlined = loaded.forward.graph.copy()
    torch._C._jit_pass_inline(inlined)
    sink, enc = encoder(outdir, f"graph_{name}")
    with torch.no_grad():
        entry = {"file": f"graph_{name}.pt", "kind": kind,
                 "note": f"CatNet {kind}: cat([a(x), relu(b(x))], 1) -> conv -> bn -> relu",
                 "inputs": enc(inputs), "output": enc(loaded(*inputs)),
                 "inlined": graph_records(inlined), "graph": graph_records(raw)}
    written.extend(sink.written)
    return entry


# ================================================================== optimize

class ReusedConv(nn.Module):
    """The conv's output has two consumers. optimize_for_inference moves the conv and
    both consumers to MKLDNN layout, converting in and out around them: on a tiny
    input like this one ([1, 3, 8, 8]) the conversions cost more than they save and
    the optimized module is slower (about 2.5x on one thread when this was written;
    from [1, 3, 32, 32] up it is faster)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return torch.relu(y) + y.sigmoid()


class ExportedBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))

    @torch.jit.export
    def features(self, x):
        return self.bn(self.conv(x)).mean((2, 3))


def resnet18():
    import torchvision  # here: the up-to-date path never pays for it
    return torchvision.models.resnet18(weights=None, num_classes=10)


OPTIMIZE_MODELS = {
    # name -> (factory, input shape, exported methods, note)
    "reused_conv": (ReusedConv, (1, 3, 8, 8), [],
                    "y = conv(x); relu(y) + y.sigmoid(): two consumers of one conv output; "
                    "on this tiny input optimize_for_inference makes it slower"),
    "exported_bn": (ExportedBN, (1, 3, 16, 16), ["features"],
                    "conv -> BN -> ReLU, and an exported method features(x)"),
    "resnet18": (resnet18, (1, 3, 64, 64), [],
                 "torchvision resnet18(num_classes=10), scripted, eval, randomized BN stats"),
}


def try_optimize(loaded, inputs, output64, methods, preserve):
    """torch.jit.freeze then torch.jit.optimize_for_inference, then save + reload.
    Each step: {ok, error}; later steps are null after a failure."""
    rec = {"preserved_attrs": preserve, "freeze": None, "optimize": None, "save_reload": None,
           "methods": None, "kinds": None, "max_abs_diff": None}
    try:
        frozen = torch.jit.freeze(loaded, preserved_attrs=preserve)
        rec["freeze"] = {"ok": True, "error": None}
    except Exception as e:  # noqa: BLE001 - the error text is the fixture
        rec["freeze"] = {"ok": False, "error": error_text(e)}
        return rec
    try:
        opt = torch.jit.optimize_for_inference(frozen, other_methods=preserve)
        rec["optimize"] = {"ok": True, "error": None}
    except Exception as e:  # noqa: BLE001
        rec["optimize"] = {"ok": False, "error": error_text(e)}
        return rec
    rec["methods"] = ["forward"] + [m for m in methods if hasattr(opt, m)]
    rec["kinds"] = dict(sorted(Counter(n.kind() for n in opt.forward.graph.nodes()).items()))
    with torch.no_grad():
        rec["max_abs_diff"] = max_abs_diff(opt(*inputs), output64)
    try:
        buf = io.BytesIO()
        torch.jit.save(opt, buf)
        buf.seek(0)
        again = torch.jit.load(buf)
        with torch.no_grad():
            again(*inputs)
        rec["save_reload"] = {"ok": True, "error": None}
    except Exception as e:  # noqa: BLE001
        rec["save_reload"] = {"ok": False, "error": error_text(e)}
    return rec


def make_optimize_case(outdir, name, spec, written):
    factory, shape, methods, note = spec
    seed(f"opt_{name}")
    model = fio.randomize_bn(factory()).eval()
    inputs = [torch.randn(*shape)]
    model64 = copy.deepcopy(model).double()
    inputs64 = [x.double() for x in inputs]
    with torch.no_grad():
        output64 = model64(*inputs64)
        loaded = save_and_load(torch.jit.script(model), outdir, f"opt_{name}.pt", written)
    sink, enc = encoder(outdir, f"opt_{name}")
    attempts = [try_optimize(loaded, inputs, output64, methods, None)]
    if methods:
        attempts.append(try_optimize(loaded, inputs, output64, methods, list(methods)))
    with torch.no_grad():
        entry = {"file": f"opt_{name}.pt", "note": note, "input_shapes": [list(shape)],
                 "inputs": enc(inputs), "output": enc(loaded(*inputs)), "output64": enc(output64),
                 "extra_cases": [{"method": m, "inputs": enc(inputs),
                                  "output": enc(getattr(loaded, m)(*inputs)),
                                  "output64": enc(getattr(model64, m)(*inputs64))}
                                 for m in methods],
                 "attempts": attempts}
    written.extend(sink.written)
    return entry


# =================================================================== writing

def timed(label, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    print(f"made {label} ({time.perf_counter() - start:.2f}s)", flush=True)
    return out


def make_all(outdir, version):
    # Remove the old manifest first: until the new one lands, the directory reads as "not made".
    manifest_path = os.path.join(outdir, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    written = []
    constants = {name: timed(f"constants/{name}", make_const_case, outdir, name, builder, written)
                 for name, builder in const_cases().items()}
    half = {name: timed(f"half/{name}", make_half_case, outdir, name, spec, written)
            for name, spec in HALF_MODELS.items()}
    graph = {f"catnet_{kind}": timed(f"graph/catnet_{kind}", make_graph_case, outdir,
                                     f"catnet_{kind}", kind, written)
             for kind in ("scripted", "traced")}
    optimize = {name: timed(f"optimize/{name}", make_optimize_case, outdir, name, spec, written)
                for name, spec in OPTIMIZE_MODELS.items()}
    fixture_common.remove_stale(outdir, written)
    fio.write_json_atomic(manifest_path, {
        "version": version, "torch": torch.__version__, "torchvision": fio.torchvision_version(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "constants": constants, "half": half, "graph": graph, "optimize": optimize})


def main(argv):
    outdir = fixture_common.outdir_arg(argv, 'test', 'fixtures', 'transform')
    version = fio.source_version(SCRIPT)
    if fixture_common.quick_source_version(SCRIPT) != version:
        print("note: the torch-free version check disagrees with fio.source_version; "
              "up-to-date runs will import torch", file=sys.stderr)
    if (fio.read_manifest(outdir) or {}).get("version") == version:
        print("transform fixtures up to date")
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
