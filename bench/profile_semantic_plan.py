"""Where semantic's planning time goes on photographic q/k at its preset (issue #13): after session 13's pattern
benchmark, planning cost 42-65 % of semantic's sparse attention at the three target shapes (density 0.14-0.16).
CUDA time of each stage of one warm plan (k-means, cluster order, the compiled block plan, the trim; with packed
pieces, the presets' layout since session 17, also the similarity order and the compiled packing), the host
wall-clock of a plan next to its CUDA time, a cold plan (k-means from its start), the CUDA kernels of a whole plan,
and plan / attention for a few variants.

    python bench/profile_semantic_plan.py OUT.json [SHAPES [VARIANTS]]   (comma-separated; default
    wan1.3b-480p,wan14b-720p and every variant)
"""

import json
import os
import sys

import torch

import dit_sparse as ds
from dit_sparse.eval.bench import _video_qkv, time_cuda
from dit_sparse.kernels import block_sparse_attention
from dit_sparse.patterns import block_mass, make_pattern
from dit_sparse.patterns.semantic import block_plan
from dit_sparse.schedule import BoundedCache, PlanCache

# Since session 17 the presets pack the pieces (pack_pieces=True): "pieces b64" is the layout they replaced.
# Since session 18 the packed plan keeps the clusters' similarity order while k-means is warm-started
# (keep_cluster_order): "order every plan" is the plan before that.
VARIANTS = {"preset": {}, "order every plan": {"keep_cluster_order": False}, "warm_iters 1": {"warm_iters": 1},
            "pieces b64": {"block_size": 64, "pack_pieces": False, "cluster_order": "label"},
            # session 20: k-means' first warm iteration on every 4th token (two warm iterations: the presets have
            # one since session 21, and "warm_iters 2" is the presets' plan before that).
            "sample 4": {"kmeans_sample": 4, "warm_iters": 2}, "warm_iters 2": {"warm_iters": 2}}


def wall_ms(fn, reps: int = 5) -> float:
    """Host wall-clock of fn() to a synchronised end, median: against the CUDA time it shows host stalls (a read
    to the host, launches the GPU waits for)."""
    import time

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(1e3 * (time.perf_counter() - t))
    return sorted(times)[len(times) // 2]


def packed_stages(pattern, q, k, labels, centroids, counts) -> dict:
    """The packing stages of ``pack_pieces``: the clusters' similarity order (once per k-means cold start since
    session 18) and the compiled packing (`packed_plan`: cluster order, block plan, piece maps and their products,
    block lists), whether it ran compiled, and the trim."""
    from dit_sparse.patterns.semantic import _similarity_rank, packed_plan

    cfg = pattern.config
    b, h, length, d = q.shape
    n, kk = b * h, counts.shape[-1]
    q2, k2, labels2 = q.reshape(n, length, d), k.reshape(n, length, d), labels.view(n, length)
    cent2, counts2 = centroids.view(n, kk, 2 * d), counts.view(n, kk)
    rank = _similarity_rank(cent2, kk)

    def pack():
        return packed_plan(q2, k2, labels2, counts2, rank, cfg.block_size, cfg.key_block_size, cfg.estimate,
                           cfg.top_p, cfg.min_kv_ratio)

    out = {"similarity_rank_ms": time_cuda(lambda: _similarity_rank(cent2, kk), reps=5)["median_ms"],
           "packed_plan_ms": time_cuda(pack, reps=5)["median_ms"], "packed_plan_wall_ms": wall_ms(pack),
           "packed_plan_compiled": bool(q.is_cuda and not packed_plan._failed and packed_plan._compiled is not None)}
    idx, cnt, perm = pack()[:3]
    out["trim_ms"] = time_cuda(lambda: pattern._trim(idx, cnt), reps=5)["median_ms"]
    # Session 20: the pooled block means read q and k through the cluster order in one Triton pass per side. The
    # packing with the gather + scatter-add means instead: its time, and how many query blocks get the same key-block
    # list (sums in another order round differently, so a block at the top-p threshold can flip).
    # Session 21: below `block_mass.ORDERED_MEANS_MIN_ROWS` the plan takes the gather path; both are timed anyway.
    out["ordered_means_used"] = block_mass.use_ordered_means(n * length, q.is_cuda)
    min_rows, block_mass.ORDERED_MEANS_MIN_ROWS = block_mass.ORDERED_MEANS_MIN_ROWS, 0
    try:
        out["packed_plan_ordered_means_ms"] = time_cuda(pack, reps=5)["median_ms"]
        idx, cnt, perm = pack()[:3]
        block_mass.ORDERED_MEANS_KERNEL = False
        out["packed_plan_gather_means_ms"] = time_cuda(pack, reps=5)["median_ms"]
        idx_g, cnt_g, perm_g = pack()[:3]
    finally:
        block_mass.ORDERED_MEANS_KERNEL, block_mass.ORDERED_MEANS_MIN_ROWS = True, min_rows
    out["ordered_means_rows_equal"] = float(((cnt == cnt_g) & (idx == idx_g).all(-1)).float().mean())
    out["ordered_means_perm_equal"] = bool(torch.equal(perm, perm_g))
    out["density_ordered_vs_gather_means"] = [float(cnt.float().mean()), float(cnt_g.float().mean())]
    return out


def stages(pattern, q, k, cache) -> dict:
    cfg = pattern.config
    b, h, length, d = q.shape
    n = b * h
    kk = pattern.cluster_counts(length, length)[1]
    out = {}
    x = (q, k)  # read in place by the k-means kernel (joint clusters of [q, k])
    out["kmeans_ms"] = time_cuda(lambda: pattern.cluster(x, kk, cache, "qk"), reps=5)["median_ms"]
    labels, centroids, counts = pattern.cluster(x, kk, cache, "qk")
    if cfg.pack_pieces:
        out.update(packed_stages(pattern, q, k, labels, centroids, counts))
        return out
    out["order_ms"] = time_cuda(lambda: pattern._order(labels, kk), reps=5)["median_ms"]
    perm = pattern._order(labels, kk).view(n, length)
    qc = counts.view(n, kk)

    def plan_blocks():
        return block_plan(q.reshape(n, length, d), k.reshape(n, length, d), perm, perm, qc, qc, cfg.block_size,
                          pattern.fixed_blocks, cfg.estimate, cfg.top_p, cfg.min_kv_ratio, True, cfg.key_block_size)

    out["block_plan_ms"] = time_cuda(plan_blocks, reps=5)["median_ms"]
    idx, cnt = plan_blocks()[:2]
    # The same plan with the top-p selection by sort (the torch path) instead of the fused kernel: its time, and how
    # many query blocks get the same key-block list (they differ only where scores tie at the threshold).
    block_mass.TOP_P_KERNEL = False
    try:
        out["block_plan_sort_ms"] = time_cuda(plan_blocks, reps=5)["median_ms"]
        idx_sort, cnt_sort = plan_blocks()[:2]
    finally:
        block_mass.TOP_P_KERNEL = True
    same = (cnt == cnt_sort) & (idx == idx_sort).all(-1)
    out["top_p_kernel_rows_equal_to_sort"] = float(same.float().mean())
    out["density_kernel_vs_sort"] = [float(cnt.float().mean()), float(cnt_sort.float().mean())]
    out["trim_ms"] = time_cuda(lambda: pattern._trim(idx, cnt), reps=5)["median_ms"]
    out["pieces_per_head"] = int(idx.shape[-2])
    return out


def main():
    path = sys.argv[1]
    shapes = sys.argv[2].split(",") if len(sys.argv) > 2 else ["wan1.3b-480p", "wan14b-720p"]
    variants = sys.argv[3].split(",") if len(sys.argv) > 3 else list(VARIANTS)
    from dit_sparse.eval.bench import VIDEO_SHAPES
    from dit_sparse.pipelines.presets import PRESETS

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    result = {"commit": os.environ.get("DIT_SPARSE_COMMIT"), "command": "python bench/profile_semantic_plan.py "
              + " ".join(sys.argv[1:]), "device": device, "shapes": {}}
    for shape in shapes:
        geometry, q, k, v = _video_qkv(shape, "photo")
        base = PRESETS[VIDEO_SHAPES[shape][4]].sparse_options("semantic")
        base.update(dense_steps=0, dense_layers=0, min_sparse_tokens=0)
        rows = {}
        for label in variants:
            opts = VARIANTS[label]
            pattern = make_pattern(ds.make_config("semantic", **{**base, **opts}))
            cache = PlanCache(shared=BoundedCache())
            layout = pattern.plan(q, k, geometry, cache)
            # A cold plan (k-means from its start, the similarity order): once per layer and video.
            cold_ms = time_cuda(lambda: pattern.plan(q, k, geometry, PlanCache(shared=cache.shared)),
                                reps=3)["median_ms"]
            row = {"plan_ms": time_cuda(lambda: pattern.plan(q, k, geometry, cache), reps=5)["median_ms"],
                   "cold_plan_ms": cold_ms,
                   "plan_wall_ms": wall_ms(lambda: pattern.plan(q, k, geometry, cache)),
                   "attention_ms": time_cuda(lambda: block_sparse_attention(q, k, v, layout), reps=5)["median_ms"],
                   "density": float(layout.density())}
            if label == "preset":
                row.update(stages(pattern, q, k, cache))
                with torch.profiler.profile() as prof:
                    pattern.plan(q, k, geometry, cache)
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                row["kernels"] = prof.key_averages().table(sort_by="cuda_time_total", row_limit=15,
                                                           max_name_column_width=60)
            rows[label] = row
            print(shape, label, json.dumps({x: y for x, y in row.items() if x != "kernels"}), flush=True)
            if "kernels" in row:
                print(row["kernels"], flush=True)
        result["shapes"][shape] = rows
        # Written after every shape: a run that hits its time limit keeps the shapes it finished.
        with open(path, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
