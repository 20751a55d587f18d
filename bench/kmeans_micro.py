"""k-means at semantic's preset shapes (issue #13): one assignment pass of the fused kernel with and without its atomic
centroid sums, the cluster sums by sorting instead (`kmeans._triton_sums`), a whole warm iteration either way, the
[q, k] concatenation the kernel no longer needs, and launch shapes; to find where semantic's k-means time goes (17 ms
of a 31 ms plan at Wan-14B 720p, ``profile-semantic-plan.json``).

    python bench/kmeans_micro.py OUT.json
"""

import json
import os
import sys

import torch

from dit_sparse.eval.bench import _video_qkv, time_cuda
from dit_sparse.patterns import kmeans

out = {"commit": os.environ.get("DIT_SPARSE_COMMIT"), "device": torch.cuda.get_device_name(), "shapes": {}}
for shape, k in (("wan1.3b-480p", 500), ("wan14b-720p", 500)):
    geometry, q, kk, v = _video_qkv(shape, "photo")
    b, h, length, d = q.shape
    rows = {}
    rows["cat_ms"] = time_cuda(lambda: torch.cat([q, kk], -1), reps=5)["median_ms"]
    parts = (q.reshape(b * h, length, d), kk.reshape(b * h, length, d))  # views of (B, L, H, D) memory
    mean = kmeans._points_mean(parts)
    labels, cent, counts = kmeans.batched_kmeans(parts, k, 20)
    base = dict(kmeans.TRITON_CONFIG)
    # Absolute launch shapes (the default changed to 128 x 32 after the run of 968b79f, which labelled 128 x 64).
    for label, cfg in (("128x32 w8 s2", {"BLOCK_L": 128, "BLOCK_K": 32}), ("128x64 w8 s2", {"BLOCK_L": 128,
                       "BLOCK_K": 64}), ("64x64 w8 s2", {"BLOCK_L": 64, "BLOCK_K": 64}),
                       ("128x64 w8 s3", {"BLOCK_L": 128, "BLOCK_K": 64, "num_stages": 3})):
        kmeans.TRITON_CONFIG.clear()
        kmeans.TRITON_CONFIG.update(base, **cfg)
        try:
            rows[label] = {
                "assign_only_ms": time_cuda(lambda: kmeans._triton_step(parts, mean, cent, False),
                                            reps=5)["median_ms"],
                "assign_and_atomic_sums_ms": time_cuda(lambda: kmeans._triton_step(parts, mean, cent, True),
                                                       reps=5)["median_ms"],
            }
        except Exception as err:
            rows[label] = {"error": repr(err)[:300]}
        print(shape, label, rows[label], flush=True)
    kmeans.TRITON_CONFIG.clear()
    kmeans.TRITON_CONFIG.update(base)
    lab = kmeans._triton_step(parts, mean, cent, False)[0]
    rows["sums_by_sort_ms"] = time_cuda(lambda: kmeans._triton_sums(parts, mean, lab, k), reps=5)["median_ms"]
    for flag in (True, False):
        kmeans.SUMS_BY_SORT = flag
        rows[f"warm_kmeans_2_iters_sums_by_sort_{flag}_ms"] = time_cuda(
            lambda: kmeans.batched_kmeans(parts, k, 2, init=cent), reps=5)["median_ms"]
    kmeans.SUMS_BY_SORT = True
    print(shape, {a: b for a, b in rows.items() if not isinstance(b, dict)}, flush=True)
    out["shapes"][shape] = rows
with open(sys.argv[1], "w") as f:
    json.dump(out, f, indent=2)
