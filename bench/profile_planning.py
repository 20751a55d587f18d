"""Planning cost of the content-aware patterns, eager against compiled (`compiled_planning`), next to the attention
it plans for (issue #13 item 3: pattern overhead <= 5 % of the sparse attention time). Wan-1.3B 480p (12 heads x
32,760 tokens) and HunyuanVideo 720p (24 heads x 118,800 tokens), random bf16 q/k/v on the GPU.

    python bench/profile_planning.py OUT.json
"""

import json
import os
import sys
import time

import torch

import dit_sparse as ds
from dit_sparse.eval.bench import STEP_METHODS, device_info, git_commit, time_cuda
from dit_sparse.geometry import VideoGeometry
from dit_sparse.kernels import block_sparse_attention, resolve_backend
from dit_sparse.patterns import make_pattern
from dit_sparse.patterns.base import COMPILE_PLANNING_ENV
from dit_sparse.schedule import BoundedCache, PlanCache

SHAPES = {"wan1.3b-480p": (VideoGeometry(21, 30, 52, "wan"), 12),
          "hunyuan-720p": (VideoGeometry(33, 45, 80, "hunyuan_video"), 24)}
rows = {}
for shape, (geometry, heads) in SHAPES.items():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, geometry.num_tokens, heads, 128, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
               for _ in range(3))
    for label in ("draft", "semantic-b64"):
        name, opts = STEP_METHODS[label]
        pattern = make_pattern(ds.make_config(name, **opts))
        row = {}
        layouts = {}
        for mode in ("0", "1"):
            os.environ[COMPILE_PLANNING_ENV] = mode
            cache = PlanCache(shared=BoundedCache())
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            layouts[mode] = pattern.plan(q, k, geometry, cache)
            torch.cuda.synchronize()
            key = "eager" if mode == "0" else "compiled"
            row[f"first_plan_s_{key}"] = time.perf_counter() - t0
            row[f"plan_ms_{key}"] = time_cuda(lambda: pattern.plan(q, k, geometry, cache), reps=7)["median_ms"]
            row[f"call_ms_{key}"] = time_cuda(
                lambda: block_sparse_attention(q, k, v, pattern.plan(q, k, geometry, cache)), reps=7)["median_ms"]
        lay = layouts["1"]
        row["attention_ms"] = time_cuda(lambda: block_sparse_attention(q, k, v, lay), reps=7)["median_ms"]
        row["density"] = float(lay.density())
        row["backend"] = resolve_backend("auto", q.device, q.dtype, 128, lay.kind)
        a, b = layouts["0"], layouts["1"]
        width = min(a.kv_indices.shape[-1], b.kv_indices.shape[-1])
        row["rows_equal_eager_compiled"] = float(
            ((a.kv_counts == b.kv_counts) & (a.kv_indices[..., :width] == b.kv_indices[..., :width]).all(-1))
            .float().mean())
        for key in ("eager", "compiled"):
            row[f"overhead_{key}"] = row[f"plan_ms_{key}"] / row["attention_ms"]
        rows[f"{shape}/{label}"] = row
        print(shape, label, json.dumps(row), flush=True)
    q = k = v = None
    torch.cuda.empty_cache()
os.environ.pop(COMPILE_PLANNING_ENV, None)
if len(sys.argv) > 1:
    with open(sys.argv[1], "w") as f:
        json.dump({"benchmark": "planning", "command": "python bench/profile_planning.py",
                   "commit": os.environ.get("DIT_SPARSE_COMMIT") or git_commit(), "env": device_info(),
                   "rows": rows}, f, indent=2)
