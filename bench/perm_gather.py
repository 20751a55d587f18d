"""Token permutation passes of the kernel front door at FLUX 4096^2 sizes. Shared [1, 1, L] orders (draft, tile):
index_select over L of the (B, H, L, D) view (what the front door did until session 6) against a row gather over L of
Diffusers' (B, L, H, D) memory, which copies whole H*D rows and leaves the (B, L, H, D) memory that FA4 reads (what it
does now). Per-head [1, H, L] orders (semantic): gather with an expanded index (torch's path) against an index_select
of D-rows of the flat (B*L*H, D) memory (a candidate), and the Triton copy `kernels.permute` with its scatter back.

    python bench/perm_gather.py [--out FILE]
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
from dit_sparse.eval.bench import device_info, git_commit, time_cuda  # noqa: E402
from dit_sparse.kernels.permute import permute_tokens  # noqa: E402

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
    "gather_dim2_view (before)": lambda: x.index_select(2, perm),
    "gather_rows_bl (now)": lambda: x_bl.index_select(1, perm).transpose(1, 2),
    "scatter_dim2_view (before)": lambda: torch.empty_like(x).index_copy_(2, perm, x),
    "scatter_rows_bl": lambda: torch.empty_like(x_bl).index_copy_(1, perm, x_bl).transpose(1, 2),
}
# Per-head orders (semantic: [B, H, L]) at Wan-1.3B 480p-like sizes would go through gather with an expanded index
# today; the candidate picks 2*D-byte rows of the (B*L*H, D) memory by a flat index (row = (b*L + perm)*H + h).
ph = torch.stack([torch.randperm(L, device="cuda") for _ in range(H)]).view(1, H, L)
flat = ((torch.arange(1, device="cuda").view(1, 1, 1) * L + ph) * H + torch.arange(H, device="cuda").view(1, H, 1))
fns.update({
    "per_head_gather_torch (before)": lambda: x.gather(2, ph.unsqueeze(-1).expand(-1, -1, -1, D)),
    "per_head_flat_rows": lambda: x_bl.reshape(-1, D).index_select(0, flat.view(-1)).view(1, H, L, D),
})
# Per-head orders through the Triton copy (`kernels.permute`, what the front door runs on CUDA since session 19) and
# the scatter back, against torch's expanded-index gather and scatter_ (what it ran before).
ph_index = ph.unsqueeze(-1).expand(-1, -1, -1, D)
fns.update({
    "per_head_triton": lambda: permute_tokens(x, ph),
    "per_head_scatter_torch (before)": lambda: torch.empty_like(x).scatter_(2, ph_index, x),
    "per_head_scatter_triton": lambda: permute_tokens(x, ph, inverse=True),
})
assert torch.equal(fns["per_head_triton"](), fns["per_head_gather_torch (before)"]())
assert torch.equal(fns["per_head_scatter_triton"](), fns["per_head_scatter_torch (before)"]())
assert torch.equal(fns["per_head_flat_rows"](), fns["per_head_gather_torch (before)"]())
assert torch.equal(fns["gather_dim2_view (before)"](), fns["gather_rows_bl (now)"]())
assert torch.equal(fns["scatter_dim2_view (before)"](), fns["scatter_rows_bl"]())
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
