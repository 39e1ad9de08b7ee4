"""Make models/demo.pt, the small TorchScript model torchfold's demo uses by default.

Usage: /usr/bin/python3 scripts/make_demo_model.py [OUT]   (default models/demo.pt)

A tiny ResNet-style CNN for 3x64x64 images with 10 output classes. Weights
are random but seeded, and BatchNorm statistics are randomized so that
eval-mode BN does real work. Besides forward, the scripted module exports
features(x), the pooled feature vector before the classifier.

Also writes demo.json next to OUT describing the expected input.
"""
import json
import os
import sys


def pin_hash_seed():
    """Re-run this script with PYTHONHASHSEED=0 unless already so.

    TorchScript writes each module's constants (stride, padding, ...) in
    Python set order, which follows the per-process string hash seed; a fixed
    seed makes torch.jit.save byte-identical from run to run. Must run
    before torch is imported.
    """
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


pin_hash_seed()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from fixture_io import randomize_bn  # noqa: E402  (same BN recipe as the fixtures)

SEED = 20240
INPUT_SHAPE = [1, 3, 64, 64]


def conv_bn(cin, cout, kernel, stride):
    """Conv without bias (BN supplies the shift) followed by BatchNorm."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    )


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus a shortcut, then relu."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(cin, cout, 3, stride), nn.ReLU(), conv_bn(cout, cout, 3, 1))
        # Identity when shapes already match; otherwise a 1x1 projection.
        if stride == 1 and cin == cout:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = conv_bn(cin, cout, 1, stride)

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class TinyResNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3, 2), nn.ReLU())  # 64 -> 32
        self.blocks = nn.Sequential(
            BasicBlock(16, 16, 1),   # identity shortcut
            BasicBlock(16, 32, 2),   # 32 -> 16, projection shortcut
            BasicBlock(32, 64, 2),   # 16 -> 8, projection shortcut
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled [N, 64] features, the input to the classifier."""
        return torch.flatten(self.pool(self.blocks(self.stem(x))), 1)

    def forward(self, x):
        return self.fc(self.features(x))


def build():
    torch.manual_seed(SEED)
    model = TinyResNet()
    randomize_bn(model)
    return torch.jit.script(model.eval())


def describe(scripted):
    params = sum(p.numel() for p in scripted.parameters())
    return {
        "input": {"shape": INPUT_SHAPE, "dtype": "float32"},
        "description": (
            f"Tiny ResNet-style CNN (stem + 3 residual blocks, {params} parameters) "
            "for 3x64x64 float32 images, 10 output logits. Random seeded weights "
            "with randomized BatchNorm statistics, eval mode. Exported method "
            "features(x) returns the pooled [N, 64] features."
        ),
        "made_by": "scripts/make_demo_model.py",
        "torch": torch.__version__,
    }


def main(argv):
    # Default is relative to the repo root so the script works from any cwd.
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = argv[1] if len(argv) > 1 else os.path.join(repo_root, "models", "demo.pt")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    scripted = build()
    torch.jit.save(scripted, out)
    # Sanity check the saved file, not the in-memory module.
    loaded = torch.jit.load(out)
    with torch.no_grad():
        logits = loaded(torch.zeros(INPUT_SHAPE))
    assert list(logits.shape) == [1, 10], logits.shape
    meta_path = os.path.splitext(out)[0] + ".json"
    with open(meta_path, "w", encoding="utf-8") as f:
        json.dump(describe(scripted), f, indent=2)
        f.write("\n")
    print(f"wrote {out} ({os.path.getsize(out)} bytes) and {meta_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
