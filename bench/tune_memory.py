"""Memory and time of "training-style" use of a tune-mode module, against the original.

Usage: /usr/bin/python3 bench/tune_memory.py ORIGINAL.pt TUNED.pt --input 8,3,224,224
           [--input SHAPE ...] [--fold FOLDED.pt] [--iters 10] [--warmup 2] [--threads N]

Every module is loaded with torch.jit.load, put in eval mode (frozen BN statistics, as
when fine-tuning with frozen BN) with every parameter requiring grad, and run forward +
backward of loss = sum(out * w) (w fixed random weights) on float32 randn inputs of the
given shapes (one --input per forward argument). Per module:
  saved_bytes             bytes of the unique storages autograd saved for backward
                          during one forward of the module, the loss not included
                          (torch.autograd.graph.saved_tensors_hooks; a storage packed
                          twice counts once), after the warm-up
  saved_activation_bytes  the same without the module's own parameter/buffer storages:
                          the memory a forward keeps alive for backward
  saved_tensors           how many tensors were packed
  saved_bytes_first_call  saved_bytes of the very first forward (TorchScript's profiling
                          executor may run a different graph before it has warmed up)
  peak_rss_delta_bytes    peak RSS (VmHWM, reset through /proc/self/clear_refs) minus the RSS
                          before one forward + backward; null where Linux does not allow it.
                          The script re-executes itself with MALLOC_MMAP_THRESHOLD_ fixed, so
                          glibc returns freed tensors to the system and the peak is per call
  median_ms, min_ms       of --iters timed forward + backward rounds; the modules take
                          turns within each round (in a rotating order) so that machine
                          load hits them alike
Prints a short table on stderr and one JSON line on stdout. FOLDED.pt (optional) is the
inference-folded module (fuse's default mode): BNs removed, a lower bound for memory.
"""
import argparse
import json
import os
import statistics
import sys
import time

MMAP_THRESHOLD = "131072"  # 128 KiB, glibc's default; setting it turns off the dynamic threshold


def pin_malloc():
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_THRESHOLD:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD)
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


if __name__ == "__main__":
    pin_malloc()

import torch  # noqa: E402

SEED = 20240611


def parse_shape(text):
    try:
        shape = [int(d) for d in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: want e.g. 8,3,224,224")
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"bad shape {text!r}")
    return shape


def proc_status_kb(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def storage_key(t):
    """(address, bytes) of the storage behind t, for de-duplication."""
    try:
        s = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()
        return s.data_ptr(), s.nbytes()
    except (RuntimeError, NotImplementedError):  # e.g. tensors without a storage
        return t.data_ptr(), t.numel() * t.element_size()


class Runner:
    """One module in eval mode with trainable parameters."""

    def __init__(self, label, path, inputs):
        self.label, self.path, self.inputs = label, path, inputs
        self.module = torch.jit.load(path, map_location="cpu").eval()
        for p in self.module.parameters():
            p.requires_grad_(True)
        self.own = {storage_key(t)[0] for t in
                    list(self.module.parameters()) + list(self.module.buffers())}
        self.weights = None
        self.times = []

    def loss(self, out):
        outs = [out] if isinstance(out, torch.Tensor) else [
            o for o in (out.values() if isinstance(out, dict) else out)
            if isinstance(o, torch.Tensor)]
        if self.weights is None:
            gen = torch.Generator().manual_seed(SEED)
            self.weights = [torch.randn(o.shape, generator=gen).to(o.dtype) for o in outs]
        return sum((o * w).sum() for o, w in zip(outs, self.weights))

    def step(self):
        for p in self.module.parameters():
            p.grad = None
        self.loss(self.module(*self.inputs)).backward()

    def saved(self):
        """One forward + backward under saved_tensors_hooks: what the forward saved."""
        seen, count = {}, [0]

        def pack(t):
            count[0] += 1
            ptr, nbytes = storage_key(t)
            seen[ptr] = max(nbytes, seen.get(ptr, 0))
            return t

        for p in self.module.parameters():
            p.grad = None
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = self.module(*self.inputs)
        self.loss(out).backward()  # the loss's own saved tensors are not the module's
        return {"saved_bytes": sum(seen.values()),
                "saved_activation_bytes": sum(n for p, n in seen.items() if p not in self.own),
                "saved_tensors": count[0]}

    def peak_rss_delta(self):
        for p in self.module.parameters():
            p.grad = None
        before = proc_status_kb("VmRSS")
        if before is None or not reset_peak_rss():
            return None
        self.step()
        peak = proc_status_kb("VmHWM")
        return None if peak is None else (peak - before) * 1024

    def timed(self):
        start = time.perf_counter()
        self.step()
        self.times.append((time.perf_counter() - start) * 1e3)


def mib(n):
    return "-" if n is None else f"{n / 2 ** 20:.1f}"


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("original")
    ap.add_argument("tuned")
    ap.add_argument("--fold", help="the inference-folded module (optional)")
    ap.add_argument("--input", action="append", type=parse_shape, required=True,
                    help="input shape, e.g. 8,3,224,224 (once per forward argument)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv[1:])
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(SEED + 1)
    inputs = [torch.randn(s, generator=gen) for s in args.input]
    files = [("original", args.original), ("tuned", args.tuned)]
    if args.fold:
        files.append(("folded", args.fold))
    try:
        runners = [Runner(label, path, inputs) for label, path in files]
    except Exception as exc:  # a file that torch.jit.load refuses
        print(json.dumps({"error": " ".join(str(exc).split())[:400]}))
        return 2

    results = {r.label: {"file": r.path} for r in runners}
    for r in runners:  # the first call, before TorchScript has optimized anything
        results[r.label]["saved_bytes_first_call"] = r.saved()["saved_bytes"]
    for _ in range(args.warmup):
        for r in runners:
            r.step()
    for r in runners:
        results[r.label].update(r.saved())
        results[r.label]["peak_rss_delta_bytes"] = r.peak_rss_delta()
    for i in range(args.iters):
        for k in range(len(runners)):
            runners[(i + k) % len(runners)].timed()
    for r in runners:
        results[r.label].update({"median_ms": round(statistics.median(r.times), 3),
                                 "min_ms": round(min(r.times), 3)})

    base = results["original"]
    ratios = {}
    for label, res in results.items():
        if label != "original":
            ratios[label] = {k: (round(res[k] / base[k], 4) if base[k] else None)
                             for k in ("saved_activation_bytes", "peak_rss_delta_bytes",
                                       "median_ms")
                             if res[k] is not None and base[k] is not None}
    report = {"input_shapes": args.input, "threads": torch.get_num_threads(),
              "iters": args.iters, "warmup": args.warmup, "torch": torch.__version__,
              "modules": results, "vs_original": ratios}

    print(f"{'module':10} {'saved MiB':>10} {'activ. MiB':>11} {'tensors':>8} "
          f"{'peak RSS MiB':>13} {'median ms':>10} {'min ms':>9}", file=sys.stderr)
    for label, res in results.items():
        print(f"{label:10} {mib(res['saved_bytes']):>10} {mib(res['saved_activation_bytes']):>11} "
              f"{res['saved_tensors']:>8} {mib(res['peak_rss_delta_bytes']):>13} "
              f"{res['median_ms']:>10.1f} {res['min_ms']:>9.1f}", file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
