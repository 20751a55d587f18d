"""Does the pooled block-mass product in half precision (CUDA since session 22) move semantic's selection? (CPU.)

On the GPU the product of the pieces' mean queries and keys now runs on tensor cores in the inputs' bfloat16 instead
of float32. This probe emulates it on the CPU: the same warm plan of the presets' packed semantic on photographic q/k
(`dit_sparse.eval.photo_qkv`, a few heads of the shape), once with the float32 means and once with the means rounded
to bfloat16 (what the tensor cores multiply; they accumulate in float32), from the same centroids.

    python bench/probe_pooled_half.py OUT.json [SHAPE:HEADS,...]   (default wan1.3b-480p:4,hunyuan-720p:3)
"""

import sys

import torch
from probe_io import record, start  # bench/, next to this script

import dit_sparse as ds
from dit_sparse.eval.bench import VIDEO_SHAPES
from dit_sparse.eval.photo_qkv import photo_qkv
from dit_sparse.geometry import VideoGeometry
from dit_sparse.patterns import block_mass, make_pattern
from dit_sparse.pipelines.presets import PRESETS
from dit_sparse.schedule import BoundedCache, PlanCache


def main():
    path = sys.argv[1]
    runs = (sys.argv[2] if len(sys.argv) > 2 else "wan1.3b-480p:4,hunyuan-720p:3").split(",")
    out = start("probe_pooled_half.py")
    for run in runs:
        shape, heads_used = run.split(":")
        (f, h, w), heads, dim, model, family = VIDEO_SHAPES[shape]
        geometry = VideoGeometry(f, h, w, model)
        q, k, _ = photo_qkv(geometry, heads=heads, head_dim=dim)  # (B, H, L, D)
        pick = torch.linspace(0, heads - 1, int(heads_used)).round().long()
        q, k = (x[:, pick].contiguous().float() for x in (q, k))
        options = PRESETS[family].sparse_options("semantic")
        options.update(dense_steps=0, dense_layers=0, min_sparse_tokens=0, kmeans_iters=10)
        pattern = make_pattern(ds.make_config("semantic", **options))
        cache = PlanCache(shared=BoundedCache())
        pattern.plan(q, k, geometry, cache)  # cold start (10 iterations on the CPU)
        centroids = cache["qk_centroids"].clone()
        full = pattern.plan(q, k, geometry, cache)
        cache["qk_centroids"] = centroids
        means = block_mass.segment_means
        block_mass.segment_means = lambda *a, **kw: means(*a, **kw).bfloat16().float()
        try:
            half = pattern.plan(q, k, geometry, cache)
        finally:
            block_mass.segment_means = means
        row = {"heads": pick.tolist(), "density_float32": float(full.density()),
               "density_bfloat16_means": float(half.density()),
               "query_blocks_same_count": float((full.kv_counts == half.kv_counts).float().mean()),
               "same_permutation": bool(torch.equal(full.q_perm, half.q_perm))}
        record(out, path, shape, row)


if __name__ == "__main__":
    main()
