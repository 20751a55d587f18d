"""FA4 adapter overhead: our front door (`block_sparse_attention(..., backend="fa4")`) against FlashAttention-4 called
directly with prebuilt block-sparse tensors, Wan-1.3B 480p shape, density 0.25. Writes JSON to $OUT or bench/results."""

import json
import os
import sys

import torch

from dit_sparse.eval.bench import device_info, git_commit, random_layout, time_cuda
from dit_sparse.kernels import block_sparse_attention


def main():
    from flash_attn.cute.block_sparsity import BlockSparseTensorsTorch
    from flash_attn.cute.interface import flash_attn_func

    length, heads, d = 32760, 12, 128
    q, k, v = (torch.randn(1, length, heads, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    rows = {}
    for density in (0.25, 0.1):
        layout = random_layout(1, heads, length, density, 128, "cuda")
        sparse = BlockSparseTensorsTorch(
            mask_block_cnt=torch.zeros_like(layout.kv_counts),
            mask_block_idx=torch.zeros(*layout.kv_indices.shape[:3], 1, dtype=torch.int32, device="cuda"),
            full_block_cnt=layout.kv_counts, full_block_idx=layout.kv_indices, block_size=(128, 128),
        )
        direct = time_cuda(lambda: flash_attn_func(q, k, v, block_sparse_tensors=sparse, return_lse=True), reps=21)
        ours = time_cuda(lambda: block_sparse_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                        layout, backend="fa4"), reps=21)
        rows[str(density)] = {"direct_ms": direct["median_ms"], "front_door_ms": ours["median_ms"],
                              "overhead": ours["median_ms"] / direct["median_ms"] - 1.0}
        print(density, rows[str(density)], flush=True)
    out = {"benchmark": "fa4-adapter-overhead", "commit": git_commit(), "env": device_info(),
           "shape": [1, length, heads, d], "command": "python bench/fa4_overhead.py", "results": rows}
    path = os.path.join(os.environ.get("OUT", "bench/results"), "fa4_adapter_overhead.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
