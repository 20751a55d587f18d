"""Token permutation passes of the kernel front door (shared [1, 1, L] orders: draft, tile) at FLUX 4096^2 sizes:
index_select over L of the (B, H, L, D) view (what the front door does) against a row gather over L of Diffusers'
(B, L, H, D) memory, which copies whole H*D rows and leaves the (B, L, H, D) memory that FA4 reads.

    python bench/perm_gather.py [--out FILE]
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
from dit_sparse.eval.bench import device_info, git_commit, time_cuda  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--out", default=None)
p.add_argument("--tokens", type=int, default=256 * 256)
p.add_argument("--heads", type=int, default=24)
args = p.parse_args()
L, H, D = args.tokens, args.heads, 128
x_bl = torch.randn(1, L, H, D, device="cuda", dtype=torch.bfloat16)  # Diffusers' memory
x = x_bl.transpose(1, 2)  # (B, H, L, D) view, as the processors hand it over
perm = torch.randperm(L, device="cuda")
rows = {}
fns = {
    "gather_dim2_view (now)": lambda: x.index_select(2, perm),
    "gather_rows_bl": lambda: x_bl.index_select(1, perm).transpose(1, 2),
    "scatter_dim2_view (now)": lambda: torch.empty_like(x).index_copy_(2, perm, x),
    "scatter_rows_bl": lambda: torch.empty_like(x_bl).index_copy_(1, perm, x_bl).transpose(1, 2),
}
assert torch.equal(fns["gather_dim2_view (now)"](), fns["gather_rows_bl"]())
assert torch.equal(fns["scatter_dim2_view (now)"](), fns["scatter_rows_bl"]())
for name, fn in fns.items():
    t = time_cuda(fn, reps=20)
    t["GB_per_s"] = 2 * x.numel() * 2 / t["median_ms"] / 1e6
    rows[name] = t
    print(name, round(t["median_ms"], 3), "ms", round(t["GB_per_s"]), "GB/s", flush=True)
payload = {"benchmark": "perm-gather", "command": "python bench/perm_gather.py", "commit": git_commit(),
           "shape": {"tokens": L, "heads": H, "head_dim": D, "dtype": "bfloat16"}, "results": rows,
           "env": device_info()}
if args.out:
    with open(args.out, "w") as f:
        json.dump(payload, f, indent=2)
