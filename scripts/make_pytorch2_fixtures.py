"""Fixtures saved by PyTorch 2.x, for the cross-version tests.

Usage: PYTHONPATH=.libtorch/cuda python3 scripts/make_pytorch2_fixtures.py [OUTDIR]
(scripts/make-fixtures.js runs it with the PyTorch 2.14 that scripts/setup.sh --all
installs into .libtorch/cuda.) OUTDIR defaults to test/fixtures/pytorch2.

The models are the ones users export today: torchvision CNNs scripted and
traced, small conv/BN nets, attention blocks (nn.TransformerEncoderLayer and
nn.MultiheadAttention, whose TorchScript calls aten::scaled_dot_product_attention,
an operator libtorch 1.13 does not have) and a float16 conv/BN net (float16
convolutions run on the CPU since PyTorch 2.x). Each comes with inputs and
PyTorch's outputs, in the format of make_fixtures.py (test/helpers/fixtures.ts
reads both). The manifest records which models need a libtorch newer than 1.13,
and the operator that makes them so.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import make_fixtures as mf  # noqa: E402
import make_fuse_fixtures as ff  # noqa: E402  (its backbone model and eager_links)  (re-executes with PYTHONHASHSEED=0, as make_fixtures.py does)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import fixture_common  # noqa: E402
import fixture_io as fio  # noqa: E402


class ConvAttention(nn.Module):
    """A conv/BN/ReLU stem whose feature map becomes tokens for self-attention."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        tokens = self.stem(x).flatten(2).transpose(1, 2)
        mixed, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        return self.head(mixed.mean(1))


def build_convbn_scripted():
    return mf.build_convbn_scripted()


def build_convbn_traced():
    return mf.build_convbn_traced()


def build_resnet18_scripted():
    return mf.vision_build("resnet18", 6, "script")


def build_mobilenet_v2_traced():
    return mf.vision_build("mobilenet_v2", 7, "trace")


def build_efficientnet_b0_scripted():
    return mf.vision_build("efficientnet_b0", 9, "script")


def build_conv_attention_scripted():
    x = mf.seeded_randn(121, 2, 3, 8, 8)
    return torch.jit.script(mf.fresh(ConvAttention, 21).eval()), [mf.case("forward", [x], atol=mf.BIG_ATOL)]


def build_transformer_encoder_scripted():
    torch.manual_seed(22)
    layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True).eval()
    x = mf.seeded_randn(122, 2, 10, 32)
    return torch.jit.script(layer), [mf.case("forward", [x], atol=mf.BIG_ATOL)]


def build_convbn_half_scripted():
    """float16 weights and input: PyTorch computes the expected output in float16 on the CPU."""
    x = mf.seeded_randn(123, 2, 3, 16, 16).half()
    module = torch.jit.script(mf.fresh(mf.ConvBNNet, 1).eval().half())
    return module, [mf.case("forward", [x], atol=1e-2)]


# Models where not every BatchNorm follows a conv: how many do, from PyTorch's own forward hooks.
FOLDABLE = {}


def vision_scripted(name, ctor, seed):
    x = mf.seeded_randn(100 + seed, 1, 3, 64, 64)
    torch.manual_seed(seed)
    model = fio.randomize_bn(ctor()).eval()
    FOLDABLE[name] = len(ff.eager_links(model, [x])[2])  # BNs whose input a conv/linear returned
    return torch.jit.script(model), [mf.case("forward", [x], atol=mf.BIG_ATOL)]


def build_densenet121_scripted():
    """Scripted DenseNet: its dense layers decide `memory_efficient` and raise in a branch."""
    import torchvision
    return vision_scripted("densenet121_scripted",
                           lambda: torchvision.models.densenet121(weights=None, num_classes=10), 11)


def build_backbone_frozen_scripted():
    """IntermediateLayerGetter over a FrozenBatchNorm2d ResNet-18: `if name in self.return_layers`."""
    return vision_scripted("backbone_frozen_scripted", lambda: ff.backbone(frozen=True), 12)


BUILDERS = {k[len("build_"):]: v for k, v in list(globals().items()) if k.startswith("build_")}

# The operators these models call that libtorch 1.13 does not register.
NEWER_THAN_113 = {
    "conv_attention_scripted": "aten::scaled_dot_product_attention",
    "transformer_encoder_scripted": "aten::scaled_dot_product_attention",
}


def make_half_outputs(outdir, written):
    """PyTorch 2.x's outputs for toHalf's option sets of the transform fixtures: the same
    eager conversion, on the same weights, read back from the saved model. Those fixtures
    come from PyTorch 1.13, which has no float16 CPU kernels (so they carry no float16
    output), and whose bfloat16 kernels sum in another order than 2.x's."""
    import make_transform_fixtures as mt
    transform = os.path.join(os.path.dirname(outdir), "transform")
    with open(os.path.join(transform, "manifest.json"), encoding="utf-8") as f:
        cases = json.load(f)["half"]
    half = {}
    for name, case in cases.items():
        model = mt.HALF_MODELS[name][0]().eval()
        model.load_state_dict(torch.jit.load(os.path.join(transform, case["file"])).state_dict())
        inputs = [fio.decode_tree(t, transform) for t in case["inputs"]]
        sink = fio.TensorSink(outdir, f"half_{name}")
        half[name] = []
        for option_set in case["option_sets"]:
            dtype = fio.DTYPES[option_set["options"]["dtype"]]
            with torch.no_grad():
                y = mt.converted(model, option_set["layers"], dtype)(*inputs)
            half[name].append({"options": option_set["options"], "output": fio.encode_tree(y, sink)})
        written.extend(sink.written)
    return half


def make_all(outdir, version):
    manifest_path = fixture_common.drop_manifest(outdir)
    written, models = [], {}
    for name, builder in BUILDERS.items():
        start = time.perf_counter()
        models[name] = mf.make_model(outdir, name, builder, written)
        # BatchNorm modules; all of them follow a convolution unless `foldable` says how many do.
        loaded = torch.jit.load(os.path.join(outdir, models[name]["file"]))
        models[name]["batchNorms"] = sum(1 for _, m in loaded.named_modules()
                                         if m.original_name in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
                                                                "FrozenBatchNorm2d"))
        if name in FOLDABLE:
            models[name]["foldable"] = FOLDABLE[name]
        if name in NEWER_THAN_113:
            models[name]["needsOperator"] = NEWER_THAN_113[name]
        print(f"made {name} ({time.perf_counter() - start:.2f}s)")
    half = make_half_outputs(outdir, written)
    print(f"made half-precision outputs for toHalf ({sum(len(v) for v in half.values())} option sets)")
    fixture_common.remove_stale(outdir, written)
    manifest = {"version": version, "torch": torch.__version__, "torchvision": fio.torchvision_version(),
                "models": models, "bad": {}, "half": half}
    fio.write_json_atomic(manifest_path, manifest)


def main(argv):
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outdir = argv[1] if len(argv) > 1 else os.path.join(repo_root, "test", "fixtures", "pytorch2")
    if not torch.__version__.startswith("2."):
        print(f"make_pytorch2_fixtures: needs PyTorch 2.x, this is {torch.__version__}", file=sys.stderr)
        return 1
    version = "+".join([fio.source_version("make_pytorch2_fixtures.py"), fio.source_version("make_fixtures.py")[:12],
                        fio.source_version("make_fuse_fixtures.py")[:12],
                        fio.source_version("make_transform_fixtures.py")[:12]])
    if (fio.read_manifest(outdir) or {}).get("version") == version:
        print("PyTorch 2.x fixtures up to date")
        return 0
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    make_all(outdir, version)
    print(f"wrote {os.path.join(outdir, 'manifest.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
