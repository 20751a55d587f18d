"""Would a CUDA graph make semantic's warm plan cheap at Wan-1.3B 480p? (session 21, for the next session.)

At that size the plan is bound by its launches: 2.2-3.2 ms per plan in two runs for ~1 ms of CUDA kernels (the
profile's kernel table), 10-14 % of the sparse attention per call at the preset's schedule where 720p is at 3-5 %.
This probe captures the plan's GPU part (the warm k-means and the compiled packing; not the host read of the layout
width that follows) in one ``torch.cuda.CUDAGraph`` and times its replay against the same calls launched one by one.
It only measures: the captured graph reads the centroids it was captured with (a real one would copy each plan's
centroids into its input buffer), so its output is compared with an eager call from those same centroids.

    python bench/probe_plan_graph.py OUT.json [SHAPES]   (comma-separated; default wan1.3b-480p,hunyuan-720p)
"""

import sys

import torch
from probe_io import preset_semantic, record, start  # bench/, next to this script

from dit_sparse.eval.bench import time_cuda
from dit_sparse.patterns.semantic import packed_plan


def main():
    path = sys.argv[1]
    shapes = sys.argv[2].split(",") if len(sys.argv) > 2 else ["wan1.3b-480p", "hunyuan-720p"]
    out = start("probe_plan_graph.py")
    for shape in shapes:
        row = {}
        try:
            geometry, q, k, _, pattern, cache = preset_semantic(shape)
            cfg = pattern.config
            pattern.plan(q, k, geometry, cache)  # the cold start: centroids and the clusters' rank cached
            b, h, length, d = q.shape
            n, kk = b * h, pattern.cluster_counts(length, length)[1]
            q2, k2 = q.reshape(n, length, d), k.reshape(n, length, d)
            centroids = cache["qk_centroids"].clone()
            rank = cache["qk_rank"]

            def core():
                cache["qk_centroids"] = centroids  # the same warm start every call
                labels, _, counts = pattern.cluster((q, k), kk, cache, "qk")
                return packed_plan(q2, k2, labels.view(n, length), counts.view(n, kk), rank, cfg.block_size,
                                   cfg.key_block_size, cfg.estimate, cfg.top_p, cfg.min_kv_ratio)

            row["plan_ms"] = time_cuda(lambda: pattern.plan(q, k, geometry, cache), reps=15)["median_ms"]
            row["core_eager_ms"] = time_cuda(core, reps=15)["median_ms"]
            want = core()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    core()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                got = core()
            graph.replay()
            torch.cuda.synchronize()
            row["graph_rows_equal"] = float(((got[1] == want[1]) & (got[0] == want[0]).all(-1)).float().mean())
            row["graph_perm_equal"] = bool(torch.equal(got[2], want[2]))
            row["core_graph_ms"] = time_cuda(graph.replay, reps=15)["median_ms"]
        except Exception as err:  # capture may meet a host read or an op that cannot be captured: that is a result
            row["error"] = repr(err)[:500]
        record(out, path, shape, row)


if __name__ == "__main__":
    main()
