"""Which ops take the time: PyTorch's profiler on a bench model, frozen, with
oneDNN Graph fusion on (2.x) or optimize_for_inference, 2 threads, no_grad.
The note of issue 16 uses it where a speed target is missed.

  PYTHONPATH=.libtorch/cpu python3 bench/profile_ops.py bench/models/efficientnet_b0_traced.pt 1 [llga|ofi|frozen]
"""
import sys
import warnings

import torch

warnings.filterwarnings("ignore")


def main():
    path, batch = sys.argv[1], int(sys.argv[2])
    how = sys.argv[3] if len(sys.argv) > 3 else "llga"
    torch.set_num_threads(2)
    m = torch.jit.freeze(torch.jit.load(path).eval())
    if how == "ofi":
        m = torch.jit.optimize_for_inference(m)
    x = torch.randn(batch, 3, 224, 224)
    if how == "llga":
        torch.jit.enable_onednn_fusion(True)
    with torch.no_grad():
        for _ in range(5):
            m(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(10):
                m(x)
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=12))
    fused = [e for e in events if e.key.startswith("LlgaPartition")]
    other = [e for e in events if not e.key.startswith("LlgaPartition") and e.key != "forward"]
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{len(fused)} oneDNN Graph partitions: {sum(e.self_cpu_time_total for e in fused) / total:.0%} of the time; "
          f"other ops: " + ", ".join(f"{e.key} {e.self_cpu_time_total / total:.1%}" for e in sorted(other, key=lambda e: -e.self_cpu_time_total)[:6]))


main()
