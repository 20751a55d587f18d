"""Where the semantic pattern's planning time goes at Wan-1.3B 480p (12 heads x 32,760 tokens): CUDA time of each
planning stage and of the kernel, variable vs fixed vs balanced blocks (issue #13).

    python bench/profile_semantic.py [OUT.json [ROWS]]
"""

import json
import os
import sys

import torch

import dit_sparse as ds
from dit_sparse.eval.bench import time_cuda
from dit_sparse.geometry import VideoGeometry
from dit_sparse.kernels import block_sparse_attention
from dit_sparse.patterns import make_pattern
from dit_sparse.schedule import BoundedCache, PlanCache

geometry = VideoGeometry(21, 30, 52, "wan")
torch.manual_seed(0)
q, k, v = (torch.randn(1, geometry.num_tokens, 12, 128, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
           for _ in range(3))
rows = {}
ROWS = {"variable": {}, "variable-b64": {"block_size": 64}, "fixed": {"fixed_blocks": True},
        "variable-k64": {"kv_clusters": 64}, "balanced": {"clusters": "balanced", "block_size": 128}}
# argv[2]: the rows to run (comma-separated; default all)
for label, opts in ((x, ROWS[x]) for x in (sys.argv[2].split(",") if len(sys.argv) > 2 else ROWS)):
    pattern = make_pattern(ds.make_config("semantic", top_p=0.3, **opts))
    cache = PlanCache(shared=BoundedCache())
    layout = pattern.plan(q, k, geometry, cache)
    row = {"plan_ms": time_cuda(lambda: pattern.plan(q, k, geometry, cache), reps=5)["median_ms"],
           "attention_ms": time_cuda(lambda: block_sparse_attention(q, k, v, layout), reps=5)["median_ms"],
           "density": float(layout.density()), "kv_width": layout.kv_indices.shape[-1],
           "q_blocks": layout.num_q_blocks}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        pattern.plan(q, k, geometry, cache)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=8, max_name_column_width=50)
    print(label, json.dumps(row), "\n", table, flush=True)
    rows[label] = row
if len(sys.argv) > 1:
    with open(sys.argv[1], "w") as f:
        json.dump({"commit": os.environ.get("DIT_SPARSE_COMMIT"), "rows": rows}, f, indent=2)
