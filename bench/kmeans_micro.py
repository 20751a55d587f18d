"""k-means assignment pass at semantic's preset shapes (issue #13): the fused kernel with and without its atomic
centroid sums, the [q, k] concatenation, and alternative launch configurations, to find where semantic's k-means time
goes (17 ms of a 31 ms plan at Wan-14B 720p, ``profile-semantic-plan.json``).

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
    x = torch.cat([q, kk], -1).reshape(b * h, length, 2 * d)
    mean = x.mean(1, dtype=torch.float32)
    rows["mean_ms"] = time_cuda(lambda: x.mean(1, dtype=torch.float32), reps=5)["median_ms"]
    labels, cent, counts = kmeans.batched_kmeans(x, k, 20)
    base = dict(kmeans.TRITON_CONFIG)
    for label, cfg in (("64x64 w8 s2 (default)", {}), ("128x64 w8 s2", {"BLOCK_L": 128}),
                       ("64x128 w8 s2", {"BLOCK_K": 128}), ("128x128 w8 s3", {"BLOCK_L": 128, "BLOCK_K": 128,
                                                                               "num_stages": 3}),
                       ("64x64 w4 s3", {"num_warps": 4, "num_stages": 3})):
        kmeans.TRITON_CONFIG.clear()
        kmeans.TRITON_CONFIG.update(base, **cfg)
        try:
            rows[label] = {
                "assign_only_ms": time_cuda(lambda: kmeans._triton_step(x, mean, cent, False), reps=5)["median_ms"],
                "assign_and_sums_ms": time_cuda(lambda: kmeans._triton_step(x, mean, cent, True), reps=5)["median_ms"],
            }
        except Exception as err:
            rows[label] = {"error": repr(err)[:300]}
        print(shape, label, rows[label], flush=True)
    kmeans.TRITON_CONFIG.clear()
    kmeans.TRITON_CONFIG.update(base)
    lab = kmeans._triton_step(x, mean, cent, False)[0]
    rows["torch_scatter_sums_ms"] = time_cuda(lambda: kmeans.update_centroids(x.float(), lab, cent),
                                              reps=5)["median_ms"]
    order = torch.sort(lab.to(torch.int16), dim=-1, stable=True).indices
    rows["sort_labels_ms"] = time_cuda(lambda: torch.sort(lab.to(torch.int16), dim=-1, stable=True),
                                       reps=5)["median_ms"]
    rows["gather_sorted_ms"] = time_cuda(lambda: x.gather(1, order.unsqueeze(-1).expand(-1, -1, 2 * d)),
                                         reps=5)["median_ms"]
    print(shape, {a: b for a, b in rows.items() if not isinstance(b, dict)}, flush=True)
    out["shapes"][shape] = rows
with open(sys.argv[1], "w") as f:
    json.dump(out, f, indent=2)
