"""Models for the GPU check, made on the GPU machine by its own PyTorch.

Usage: python3 scripts/gpu/models.py OUTDIR

Writes OUTDIR/fixtures (the two fixture models test/cuda.test.ts reads,
convbn_scripted and resnet18_scripted, in make_fixtures.py's format) and
OUTDIR/resnet50_scripted.pt for bench/gpu.js. torchvision's ResNets when
torchvision imports; otherwise the same architectures defined here (the
GPU machine's PyTorch may come without torchvision). Random weights with
randomized BatchNorm statistics, as every fixture.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import make_fixtures as mf  # noqa: E402  (re-executes with PYTHONHASHSEED=0)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import fixture_io as fio  # noqa: E402


class Block(nn.Module):
    """A ResNet block: basic (two 3x3) or bottleneck (1x1, 3x3, 1x1, widening 4x)."""

    def __init__(self, cin, width, stride, bottleneck):
        super().__init__()
        cout = width * 4 if bottleneck else width
        if bottleneck:
            shapes = [(cin, width, 1, 1), (width, width, 3, stride), (width, cout, 1, 1)]
        else:
            shapes = [(cin, width, 3, stride), (width, cout, 3, 1)]
        layers = []
        for i, (a, b, k, s) in enumerate(shapes):
            layers += [nn.Conv2d(a, b, k, s, k // 2, bias=False), nn.BatchNorm2d(b)]
            if i < len(shapes) - 1:
                layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers)
        self.down = nn.Sequential()
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + self.down(x))


class ResNet(nn.Module):
    def __init__(self, depths, bottleneck, classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for stage, n in enumerate(depths):
            width = 64 * 2 ** stage
            for i in range(n):
                blocks.append(Block(cin, width, 2 if (i == 0 and stage > 0) else 1, bottleneck))
                cin = width * 4 if bottleneck else width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


def resnet(name):
    try:
        import torchvision
        return getattr(torchvision.models, name)(weights=None)
    except ImportError:
        return ResNet([2, 2, 2, 2], False) if name == "resnet18" else ResNet([3, 4, 6, 3], True)


def vision_build(name, seed, how):
    x = mf.seeded_randn(100 + seed, 1, 3, 64, 64)
    torch.manual_seed(seed)
    model = fio.randomize_bn(resnet(name)).eval()
    module = torch.jit.script(model) if how == "script" else torch.jit.trace(model, x)
    return module, [mf.case("forward", [x], atol=mf.BIG_ATOL)]


def main(argv):
    out = argv[1]
    fixtures = os.path.join(out, "fixtures")
    os.makedirs(fixtures, exist_ok=True)
    mf.vision_build = vision_build
    written, models = [], {}
    for name in ("convbn_scripted", "resnet18_scripted"):
        models[name] = mf.make_model(fixtures, name, mf.BUILDERS[name], written)
    fio.write_json_atomic(os.path.join(fixtures, "manifest.json"),
                          {"version": "gpu", "torch": torch.__version__, "models": models, "bad": {},
                           "torchvision_ops_library": ""})
    torch.manual_seed(50)
    r50 = torch.jit.script(fio.randomize_bn(resnet("resnet50")).eval())
    torch.jit.save(r50, os.path.join(out, "resnet50_scripted.pt"))
    print(f"made the GPU fixtures and ResNet-50 in {out} (PyTorch {torch.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
