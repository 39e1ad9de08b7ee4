"""Compare a TorchScript module with its torchfold tune-mode rewrite, in PyTorch.

Usage: /usr/bin/python3 scripts/check_tune.py ORIGINAL.pt TUNED.pt INPUTS_JSON [--case NAME]

INPUTS_JSON is either {"inputs": [TREE, ...], "basedir": DIR, "pairs": [...]} ("basedir"
defaults to the JSON file's folder; "pairs", [{"conv", "norm"}, ...] module paths, is
optional) or a tune fixture manifest (make_tune_fixtures.py), of which --case NAME picks
the entry whose inputs and pairs are used. TREE encoding: fixture_io.py.

Prints ONE line of JSON and exits 0, however large the differences (the caller
decides); on a file that cannot be loaded or read, prints {"error": "..."} and exits 2.
When a module loads but fails to run, that section ("eval", "train" or "trainable")
is {"error": "..."}, the other sections are still there, and the exit status is 1.

  state_dict_same  bool: the tuned state_dict has the original's keys (as a set) and
                   equal values (dtype, shape, torch.equal)
  state_dict       {"missing": [keys], "extra": [keys], "different": [keys], "order_same"}
  eval             both modules .eval() (fresh loads), every parameter requires grad, one
                   forward on a fresh copy of the inputs, loss = sum(out * w) with w fixed
                   random weights (same for both), backward:
                     "outputs": {"max_abs", "max_rel"}
                     "grads": {param: {"max_abs", "max_rel"[, "missing": "original"|"tuned"]}}
                     "grad_max_abs", "grad_max_rel", "grad_worst" (param of grad_max_rel,
                       null when every gradient is equal)
                     "ops": {"original": {"conv", "batch_norm"}, "tuned": {...}}
  train            the same with both in .train() (fresh loads), plus
                     "buffers": {buffer: {"equal", "max_abs"}} after the step,
                     "outputs_identical", "grads_identical", "buffers_identical", and
                     "identical" (all three, bit for bit)
  trainable        the tuned module in .eval() (fresh load): forward, backward, one SGD step
                   (lr 0.1), forward again: "changed": {param: bool}, "conv_weights_changed"
                   and "norm_weights_changed" (all of those of the pairs, or of the modules
                   whose class is a conv/linear / a BatchNorm when no pairs are given; null
                   when there are none), "output_changed", "loss_finite"

max_rel is max|a - b| / max|a| over each tensor (a: the original's value; the largest
over the tensors of an output); it is null where the original is all zero and the
other is not, and any number that is NaN or infinite is given as null.

Op counting, in the profiled forward (torch.autograd.profiler), by event name only:
"conv" = the number of aten::_convolution events plus the number of aten::linear
events; "batch_norm" = the number of aten::batch_norm events. Every convolution entry
point (aten::conv1d/2d/3d, conv_transpose1d/2d/3d, _convolution_mode, convolution)
reaches aten::_convolution exactly once, and a linear layer is one aten::linear (which
calls addmm/matmul, never a convolution): one count per convolution or linear call,
however it was entered. batch_norm's internals (_batch_norm_impl_index, then
native_batch_norm or cudnn_batch_norm) are not counted. The profiler's parent links
are not used: they come from timestamps and now and then fail to nest an event.
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import fixture_io as fio  # noqa: E402

CONV_CLASSES = frozenset(("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
                          "ConvTranspose3d", "Linear"))
WEIGHT_SEED = 20240611
LR = 0.1


class LoadError(Exception):
    """A file could not be loaded or read: exit 2."""


def num(x):
    """float for JSON; NaN/inf become None (JSON has no form for them)."""
    x = float(x)
    return x if math.isfinite(x) else None


# --------------------------------------------------------------- inputs

def read_spec(path, case):
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except (OSError, ValueError) as exc:
        raise LoadError(f"cannot read {path}: {exc}") from exc
    basedir = os.path.dirname(os.path.abspath(path))
    if "cases" in spec:  # a fixture manifest
        if case is None or case not in spec["cases"]:
            raise LoadError(f"{path} is a manifest: --case NAME must name one of its cases")
        spec = spec["cases"][case]
    try:
        inputs = [fio.decode_tree(t, spec.get("basedir", basedir)) for t in spec["inputs"]]
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise LoadError(f"cannot read the inputs: {exc}") from exc
    return inputs, spec.get("pairs")


def load(path):
    try:
        return torch.jit.load(path, map_location="cpu")
    except Exception as exc:  # TorchScript reports a bad file with many exception types
        raise LoadError(f"cannot load {path}: {' '.join(str(exc).split())[:400]}") from exc


def clone_tree(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(clone_tree(v) for v in value)
    if isinstance(value, dict):
        return {k: clone_tree(v) for k, v in value.items()}
    return value


def tensors_of(value):
    """The floating-point tensors of an output, in a fixed order."""
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_of(v)]
    if isinstance(value, dict):
        return [t for k in sorted(value, key=str) for t in tensors_of(value[k])]
    return []


# --------------------------------------------------------------- running

def count_ops(prof):
    names = [e.name for e in prof.function_events]
    return {"conv": names.count("aten::_convolution") + names.count("aten::linear"),
            "batch_norm": names.count("aten::batch_norm")}


def loss_of(outs):
    """sum(out * w) over the output tensors; w from a fixed seed, so equal for equal shapes."""
    gen = torch.Generator().manual_seed(WEIGHT_SEED)
    loss = None
    for o in outs:
        w = torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype)
        term = (o * w).sum()
        loss = term if loss is None else loss + term
    return loss


def step(module, inputs, train):
    """Forward (profiled) + backward. Returns outputs, grads, buffers, op counts, loss."""
    module.train(train)
    for p in module.parameters():
        p.requires_grad_(True)
        p.grad = None
    args = fio.coerce_args(module.forward, clone_tree(inputs))
    with torch.autograd.profiler.profile(record_shapes=False) as prof:
        out = module(*args)
    outs = tensors_of(out)
    loss = loss_of(outs)
    if loss is not None and loss.requires_grad:
        loss.backward()
    grads = {n: (None if p.grad is None else p.grad.detach().clone())
             for n, p in module.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in module.named_buffers()}
    return ([o.detach() for o in outs], grads, buffers, count_ops(prof),
            None if loss is None else loss.item())


# --------------------------------------------------------------- comparing

def diff(a, b):
    """(max_abs, max_rel) of b against a, as floats (may be nan/inf)."""
    if a.shape != b.shape:
        return math.inf, math.inf
    if a.numel() == 0:
        return 0.0, 0.0
    a64, b64 = a.double(), b.double()
    max_abs = (a64 - b64).abs().max().item()
    scale = a64.abs().max().item()
    if max_abs == 0:
        return 0.0, 0.0
    return max_abs, (max_abs / scale if scale > 0 else math.inf)


def compare_outputs(a_outs, b_outs):
    if len(a_outs) != len(b_outs):
        return {"max_abs": None, "max_rel": None, "error": "different number of output tensors"}
    worst_abs = worst_rel = 0.0
    for a, b in zip(a_outs, b_outs):
        d_abs, d_rel = diff(a, b)
        worst_abs, worst_rel = max(worst_abs, d_abs), max(worst_rel, d_rel)
        if math.isnan(d_abs):
            worst_abs = worst_rel = math.nan
            break
    return {"max_abs": num(worst_abs), "max_rel": num(worst_rel)}


def compare_grads(a_grads, b_grads):
    """Per-parameter diffs, then the worst max_abs, max_rel and the name of the latter."""
    out, rows = {}, []
    for name in list(a_grads) + [n for n in b_grads if n not in a_grads]:
        ga, gb = a_grads.get(name), b_grads.get(name)
        if ga is None and gb is None:
            d_abs = d_rel = 0.0
        elif ga is None or gb is None:
            d_abs = d_rel = math.inf
        else:
            d_abs, d_rel = diff(ga, gb)
        out[name] = {"max_abs": num(d_abs), "max_rel": num(d_rel)}
        if (ga is None) != (gb is None):
            out[name]["missing"] = "original" if ga is None else "tuned"
        # NaN sorts as worse than anything: a NaN gradient is the worst there is
        rows.append((math.inf if math.isnan(d_rel) else d_rel, d_abs, name))
    if not rows:
        return out, 0.0, 0.0, None
    worst_rel, _, worst = max(rows, key=lambda r: r[0])
    worst_abs = max((math.inf if math.isnan(r[1]) else r[1]) for r in rows)
    return out, num(worst_abs), num(worst_rel), worst if worst_rel > 0 else None


def both(original_path, tuned_path, inputs, train):
    a_outs, a_grads, a_bufs, a_ops, _ = step(load(original_path), inputs, train)
    b_outs, b_grads, b_bufs, b_ops, _ = step(load(tuned_path), inputs, train)
    grads, g_abs, g_rel, worst = compare_grads(a_grads, b_grads)
    result = {"outputs": compare_outputs(a_outs, b_outs), "grads": grads, "grad_max_abs": g_abs,
              "grad_max_rel": g_rel, "grad_worst": worst,
              "ops": {"original": a_ops, "tuned": b_ops}}
    if train:
        outs_same = len(a_outs) == len(b_outs) and all(
            a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(a_outs, b_outs))
        grads_same = set(a_grads) == set(b_grads) and all(
            (a_grads[n] is None) == (b_grads[n] is None)
            and (a_grads[n] is None or torch.equal(a_grads[n], b_grads[n])) for n in a_grads)
        buffers = {}
        for name, a in a_bufs.items():
            b = b_bufs.get(name)
            same = b is not None and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
            max_abs = (None if b is None or a.shape != b.shape
                       else num(diff(a, b)[0]) if a.numel() else 0.0)
            buffers[name] = {"equal": same, "max_abs": max_abs}
        for name in b_bufs:
            if name not in a_bufs:
                buffers[name] = {"equal": False, "max_abs": None}
        bufs_same = all(b["equal"] for b in buffers.values())
        result.update({"buffers": buffers, "outputs_identical": outs_same,
                       "grads_identical": grads_same, "buffers_identical": bufs_same,
                       "identical": outs_same and grads_same and bufs_same})
    return result


def compare_state_dicts(original, tuned):
    a, b = original.state_dict(), tuned.state_dict()
    different = [k for k in a if k in b and not (
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]))]
    missing = [k for k in a if k not in b]
    extra = [k for k in b if k not in a]
    return not (different or missing or extra), {
        "missing": missing, "extra": extra, "different": different,
        "order_same": list(a) == list(b)}


def weight_names(original, pairs):
    """(conv weight names, norm weight names) the trainable check looks at."""
    params = dict(original.named_parameters())
    if pairs is not None:
        convs = [p["conv"] for p in pairs]
        norms = [p["norm"] for p in pairs]
    else:
        convs, norms = [], []
        for path, m in original.named_modules():
            cls = m.original_name
            if cls in CONV_CLASSES:
                convs.append(path)
            elif "BatchNorm" in cls:
                norms.append(path)

    def weights(paths):
        names = [f"{p}.weight" if p else "weight" for p in paths]
        return [n for n in names if n in params]
    return weights(convs), weights(norms)


def trainable(tuned_path, inputs, conv_w, norm_w):
    module = load(tuned_path).eval()
    for p in module.parameters():
        p.requires_grad_(True)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    opt = torch.optim.SGD(module.parameters(), lr=LR)
    opt.zero_grad()
    args = fio.coerce_args(module.forward, clone_tree(inputs))
    out1 = tensors_of(module(*args))
    loss = loss_of(out1)
    finite = loss is not None and math.isfinite(loss.item())
    if loss is not None and loss.requires_grad:
        loss.backward()
    opt.step()
    with torch.no_grad():
        out2 = tensors_of(module(*fio.coerce_args(module.forward, clone_tree(inputs))))
    changed = {n: not torch.equal(before[n], p.detach()) for n, p in module.named_parameters()}

    def all_changed(names):
        return all(changed.get(n, False) for n in names) if names else None
    return {"changed": changed, "conv_weights_changed": all_changed(conv_w),
            "norm_weights_changed": all_changed(norm_w),
            "output_changed": len(out1) != len(out2) or any(
                not torch.equal(a.detach(), b) for a, b in zip(out1, out2)),
            "loss_finite": finite}


def section(fn, *args):
    """Run one check; a module that fails to run gives {"error": ...} instead."""
    try:
        return fn(*args)
    except LoadError:
        raise
    except Exception as exc:  # TorchScript errors span many lines; keep one for the JSON
        return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:600]}"}


def check(original_path, tuned_path, spec_path, case):
    inputs, pairs = read_spec(spec_path, case)
    original, tuned = load(original_path), load(tuned_path)
    same, details = compare_state_dicts(original, tuned)
    conv_w, norm_w = weight_names(original, pairs)
    return {"state_dict_same": same, "state_dict": details,
            "eval": section(both, original_path, tuned_path, inputs, False),
            "train": section(both, original_path, tuned_path, inputs, True),
            "trainable": section(trainable, tuned_path, inputs, conv_w, norm_w)}


def main(argv):
    args = argv[1:]
    case = None
    if "--case" in args:
        at = args.index("--case")
        if at + 1 >= len(args):
            args = []
        else:
            case = args[at + 1]
            del args[at:at + 2]
    if len(args) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # the same reduction order for both modules
    try:
        result = check(args[0], args[1], args[2], case)
    except LoadError as exc:
        print(json.dumps({"error": str(exc)}, ensure_ascii=False))
        return 2
    print(json.dumps(result, ensure_ascii=False, allow_nan=False))
    return 1 if any("error" in result[k] for k in ("eval", "train", "trainable")) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
