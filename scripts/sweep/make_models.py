"""The torchvision sweep: models with BatchNorm, scripted and traced, for scripts/sweep/fuse.mjs.

Usage: /usr/bin/python3 scripts/sweep/make_models.py OUTDIR [NAME ...]            (PyTorch 1.13)
       PYTHONPATH=.libtorch/cuda python3 scripts/sweep/make_models.py OUTDIR       (PyTorch 2.14)

Writes OUTDIR/<name>_<scripted|traced>.pt (weights=None, BatchNorm statistics randomized) and
OUTDIR/manifest.json: per model its input shape, the BatchNorm applications a forward makes
(forward pre-hooks) and how many of them take the very tensor a conv/linear returned (the
foldable pairs). Not a fixture: a check of what fuse() finds on real architectures.
"""
import sys, os, json, time, functools, warnings
warnings.filterwarnings("ignore")
import torch, torch.nn as nn, torchvision
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d
out = sys.argv[1]; os.makedirs(out, exist_ok=True)
tv = torchvision.models
def rnd(m):
    g = torch.Generator().manual_seed(0)
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) or type(mod).__name__ == "FrozenBatchNorm2d":
            with torch.no_grad():
                if getattr(mod, "running_mean", None) is not None:
                    mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.5)
                    mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
                if getattr(mod, "weight", None) is not None:
                    mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.2)
    return m.eval()
class Backbone(nn.Module):
    def __init__(self, g): super().__init__(); self.g = g
    def forward(self, x):
        o = self.g(x); return o["feat2"], o["feat4"]
class SegOut(nn.Module):
    def __init__(self, m): super().__init__(); self.m = m
    def forward(self, x): return self.m(x)["out"]
IMG = (1, 3, 64, 64)
specs = {
  "resnet18": (lambda: tv.resnet18(weights=None, num_classes=10), IMG),
  "resnet50": (lambda: tv.resnet50(weights=None, num_classes=10), IMG),
  "mobilenet_v2": (lambda: tv.mobilenet_v2(weights=None, num_classes=10), IMG),
  "mobilenet_v3_small": (lambda: tv.mobilenet_v3_small(weights=None, num_classes=10), IMG),
  "efficientnet_b0": (lambda: tv.efficientnet_b0(weights=None, num_classes=10), IMG),
  "densenet121": (lambda: tv.densenet121(weights=None, num_classes=10), IMG),
  "shufflenet_v2_x0_5": (lambda: tv.shufflenet_v2_x0_5(weights=None, num_classes=10), IMG),
  "regnet_y_400mf": (lambda: tv.regnet_y_400mf(weights=None, num_classes=10), IMG),
  "mnasnet0_5": (lambda: tv.mnasnet0_5(weights=None, num_classes=10), IMG),
  "googlenet": (lambda: tv.googlenet(weights=None, num_classes=10, aux_logits=False, init_weights=False), IMG),
  "vgg11_bn": (lambda: tv.vgg11_bn(weights=None, num_classes=10), (1, 3, 32, 32)),
  "resnext50_32x4d": (lambda: tv.resnext50_32x4d(weights=None, num_classes=10), IMG),
  "backbone_frozen": (lambda: Backbone(IntermediateLayerGetter(tv.resnet18(weights=None, norm_layer=FrozenBatchNorm2d), {"layer2": "feat2", "layer4": "feat4"})), IMG),
  "deeplabv3_mobilenet": (lambda: SegOut(tv.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5, aux_loss=False)), IMG),
  "lraspp_mobilenet": (lambda: SegOut(tv.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5)), IMG),
  "fcn_resnet50": (lambda: SegOut(tv.segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=5, aux_loss=False)), IMG),
  "r3d_18": (lambda: tv.video.r3d_18(weights=None, num_classes=10), (1, 3, 4, 32, 32)),
  "r2plus1d_18": (lambda: tv.video.r2plus1d_18(weights=None, num_classes=10), (1, 3, 4, 32, 32)),
  "mc3_18": (lambda: tv.video.mc3_18(weights=None, num_classes=10), (1, 3, 4, 32, 32)),
}
only = sys.argv[2:] or list(specs)
manifest = {}
for name in only:
    ctor, shape = specs[name]
    for kind in ("scripted", "traced"):
        t0 = time.time()
        try:
            torch.manual_seed(0)
            m = rnd(ctor())
            x = torch.randn(*shape)
            hits, links, produced = [0], [0], {}
            hs = []
            for p, mod in m.named_modules():
                if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)):
                    hs.append(mod.register_forward_hook(lambda mod, i, o: produced.__setitem__(id(o), o)))
                elif isinstance(mod, nn.modules.batchnorm._BatchNorm) or type(mod).__name__ == "FrozenBatchNorm2d":
                    def pre(mod, i):
                        hits[0] += 1
                        if id(i[0]) in produced: links[0] += 1
                    hs.append(mod.register_forward_pre_hook(pre))
            with torch.no_grad(): m(x)
            for h in hs: h.remove()
            sm = torch.jit.script(m) if kind == "scripted" else torch.jit.trace(m, x, strict=False)
            f = os.path.join(out, f"{name}_{kind}.pt"); sm.save(f)
            torch.save(x, f + ".x")
            manifest[f"{name}_{kind}"] = {"file": f, "shape": list(shape), "norms": hits[0], "foldable": links[0]}
            print(name, kind, hits[0], links[0], f"{time.time()-t0:.1f}s", flush=True)
        except Exception as e:
            print(name, kind, "FAILED to make:", str(e).split("\n")[0][:150], flush=True)
json.dump(manifest, open(os.path.join(out, "manifest.json"), "w"), indent=1)
