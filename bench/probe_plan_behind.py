"""Why semantic's plan costs more launched behind a sparse attention call than alone at 720p (session 21:
HunyuanVideo 9.73 against 6.90 ms, Wan-14B 10.05 against 7.75 ms; Wan-1.3B 480p 1.58 against 2.21 ms,
``2026-12-04_NVIDIA-H200_pattern-*-behind.json``). Four timings of the same warm plan at the preset, and the CUDA time
of its kernels alone and behind the attention (the profiler's sum): if the kernels themselves run slower behind the
attention (clocks or power after a long tensor-core kernel), the isolated timings understate what a pipeline pays.

    python bench/probe_plan_behind.py OUT.json [SHAPES]   (comma-separated; default hunyuan-720p,wan1.3b-480p)
"""

import sys
import time

import torch
from probe_io import kernel_ms, preset_semantic, record, start  # bench/, next to this script

from dit_sparse.eval.bench import paired_extra_ms, time_cuda
from dit_sparse.kernels import block_sparse_attention


def after_sync_ms(before, fn, reps: int = 15) -> float:
    """Median CUDA time of ``fn`` started as soon as ``before`` has finished (a sync between): the GPU as the
    attention left it, but nothing queued for the plan's launches to overlap."""
    times = []
    for _ in range(reps):
        before()
        torch.cuda.synchronize()
        times.append(time_cuda(fn, warmup=0, reps=1)["median_ms"])
    times.sort()
    return times[len(times) // 2]


def main():
    path = sys.argv[1]
    shapes = sys.argv[2].split(",") if len(sys.argv) > 2 else ["hunyuan-720p", "wan1.3b-480p"]
    out = start("probe_plan_behind.py")
    for shape in shapes:
        geometry, q, k, v, pattern, cache = preset_semantic(shape)
        layout = pattern.plan(q, k, geometry, cache)

        def attention():
            return block_sparse_attention(q, k, v, layout)

        def plan():
            return pattern.plan(q, k, geometry, cache)

        row = {"attention_ms": time_cuda(attention, reps=15)["median_ms"],
               "plan_alone_ms": time_cuda(plan, reps=15)["median_ms"]}
        row["plan_behind_attention_ms"] = paired_extra_ms(attention, plan, reps=15)
        row["plan_after_attention_synced_ms"] = after_sync_ms(attention, plan)
        torch.cuda.synchronize()
        time.sleep(0.2)  # an idle GPU again
        row["plan_alone_after_rest_ms"] = time_cuda(plan, warmup=0, reps=1)["median_ms"]
        try:
            row["plan_kernels_alone_ms"] = kernel_ms(plan)
            # The kernels of attention + plan less the attention's alone.
            row["plan_kernels_behind_attention_ms"] = kernel_ms(lambda: (attention(), plan())) - kernel_ms(attention)
        except Exception as err:  # the profiler's field names move between torch versions
            row["kernels_error"] = repr(err)[:300]
        record(out, path, shape, row)


if __name__ == "__main__":
    main()
