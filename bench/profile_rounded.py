"""Where semantic's planning time goes at Wan-14B 720p (40 heads x 75,600 tokens) with cluster pieces and with
clusters rounded to whole blocks (issue #13): CUDA time of each stage, and of the attention call.

    python bench/profile_rounded.py OUT.json
"""

import json
import os
import sys

import torch

import dit_sparse as ds
from dit_sparse.eval.bench import time_cuda
from dit_sparse.geometry import VideoGeometry
from dit_sparse.kernels import block_sparse_attention
from dit_sparse.patterns import kmeans, make_pattern
from dit_sparse.schedule import BoundedCache, PlanCache

geometry = VideoGeometry(21, 45, 80, "wan")
torch.manual_seed(0)
q, k, v = (torch.randn(1, geometry.num_tokens, 40, 128, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
           for _ in range(3))
rows = {}
ROWS = {"pieces-b64": {"block_size": 64}, "rounded": {"clusters": "rounded", "block_size": 128}}
for label, opts in ROWS.items():
    pattern = make_pattern(ds.make_config("semantic", top_p=0.3, **opts))
    cache = PlanCache(shared=BoundedCache())
    layout = pattern.plan(q, k, geometry, cache)
    row = {"plan_ms": time_cuda(lambda: pattern.plan(q, k, geometry, cache), reps=5)["median_ms"],
           "attention_ms": time_cuda(lambda: block_sparse_attention(q, k, v, layout), reps=5)["median_ms"],
           "density": float(layout.density())}
    if label == "rounded":
        n, length = 40, geometry.num_tokens
        points = (q.reshape(n, length, 128), k.reshape(n, length, 128))
        _, cent, counts = pattern.cluster((q, k), 500, cache, "qk")
        cent, counts = cent.view(n, 500, 256), counts.view(n, 500)
        mean = kmeans._points_mean(points)
        row["kmeans_warm_ms"] = time_cuda(lambda: pattern.cluster((q, k), 500, cache, "qk"), reps=5)["median_ms"]
        row["nearest_ms"] = time_cuda(lambda: kmeans._nearest_clusters(points, mean, cent - mean.unsqueeze(1), 4),
                                      reps=5)["median_ms"]
        row["whole_block_order_ms"] = time_cuda(lambda: kmeans.whole_block_order(points, cent, counts, 128),
                                                reps=5)["median_ms"]
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            kmeans.whole_block_order(points, cent, counts, 128)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
    print(label, json.dumps(row), flush=True)
    rows[label] = row
with open(sys.argv[1], "w") as f:
    json.dump({"benchmark": "profile-semantic-rounded", "command": "python bench/profile_rounded.py " + sys.argv[1],
               "commit": os.environ.get("DIT_SPARSE_COMMIT"), "device": torch.cuda.get_device_name(),
               "shape": {"tokens": geometry.num_tokens, "heads": 40, "head_dim": 128}, "rows": rows}, f, indent=2)
