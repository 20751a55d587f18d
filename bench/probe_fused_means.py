"""Semantic's joint plan with the clusters' means taken from its pieces' [q, k] sums (session 23,
``semantic.FUSED_CLUSTER_SUMS``: k-means leaves out its last update, one pass over q and k and one label sort fewer)
against the plan with k-means' own update, at each shape's preset on photographic q / k, in one process: the plan
alone, behind one sparse attention call (what a pipeline pays), its kernels' CUDA time (the profiler's sum), the
density, and whether both give the same layout. The fused plan's pieces' sums read q and k through the order in one
Triton pass (``block_mass.ORDERED_PAIR_MIN_ROWS``, session 23 after the first run of this probe at a6bbfef, whose
"fused_triton_sums" was that pass and "fused" the gather + scatter-add below ``ORDERED_MEANS_MIN_ROWS``); the fused
plan with the gather + scatter-add is timed as well.

    python bench/probe_fused_means.py OUT.json [SHAPES]   (comma-separated; default wan1.3b-480p)
"""

import sys

import torch
from probe_io import kernel_ms, preset_semantic, record, start  # bench/, next to this script

from dit_sparse.eval.bench import paired_extra_ms, time_cuda
from dit_sparse.kernels import block_sparse_attention
from dit_sparse.patterns import block_mass, semantic


def variants():
    """(name, FUSED_CLUSTER_SUMS, ORDERED_PAIR_MIN_ROWS); the first one again last: drift within the run."""
    default = block_mass.ORDERED_PAIR_MIN_ROWS
    return [("fused", True, default), ("kmeans_update", False, default), ("fused_gather_sums", True, 1 << 62),
            ("fused_again", True, default)]


def main():
    path = sys.argv[1]
    shapes = sys.argv[2].split(",") if len(sys.argv) > 2 else ["wan1.3b-480p"]
    out = start("probe_fused_means.py")
    for shape in shapes:
        row = {}
        layouts = {}
        geometry, q, k, v, pattern, base = preset_semantic(shape)
        pattern.plan(q, k, geometry, base)  # one cold start: every variant warm-starts from its centroids and rank
        for name, fused, min_rows in variants():
            semantic.FUSED_CLUSTER_SUMS, block_mass.ORDERED_PAIR_MIN_ROWS = fused, min_rows
            try:
                pattern, cache = preset_semantic(shape)[4:]
                cache.update({key: val for key, val in base.items() if key.startswith("qk_")})
                snapshot = base["qk_centroids"].clone()

                def plan():
                    cache["qk_centroids"] = snapshot  # the same warm start every call
                    return pattern.plan(q, k, geometry, cache)

                def attention():
                    return block_sparse_attention(q, k, v, layout)

                layout = plan()
                layouts[name] = layout
                entry = {"attention_ms": time_cuda(attention, reps=15)["median_ms"],
                         "plan_alone_ms": time_cuda(plan, reps=15)["median_ms"],
                         "plan_behind_attention_ms": paired_extra_ms(attention, plan, reps=21),
                         "density": float(layout.density())}
                try:
                    entry["plan_kernels_ms"] = kernel_ms(plan)
                except Exception as err:  # the profiler's field names move between torch versions
                    entry["kernels_error"] = repr(err)[:300]
            except Exception as err:
                entry = {"error": repr(err)[:500]}
            row[name] = entry
        semantic.FUSED_CLUSTER_SUMS, block_mass.ORDERED_PAIR_MIN_ROWS = True, variants()[0][2]
        if "fused" in layouts and "kmeans_update" in layouts:
            a, b = layouts["fused"], layouts["kmeans_update"]
            same = (a.kv_counts == b.kv_counts) & (a.kv_indices == b.kv_indices).all(-1)
            row["rows_equal_fused_vs_update"] = float(same.float().mean())
            row["perm_equal_fused_vs_update"] = bool(torch.equal(a.q_perm, b.q_perm))
        record(out, path, shape, row)


if __name__ == "__main__":
    main()
