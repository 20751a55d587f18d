"""GPU check of FlashAttention-4 on padded tiles (variable layouts, `layout.pad_to_tiles`) against the reference
kernel: semantic's cluster pieces (batch 2, per-(batch, head) orders), pieces with masked tail keys (kv_valid_len),
fp16 and bf16, eager and compiled (the custom op). Writes $OUT/fa4-padded-check.json (or --out)."""

import argparse
import json
import os
import sys

import torch

import dit_sparse as ds
from dit_sparse.eval.bench import device_info, git_commit
from dit_sparse.geometry import VideoGeometry
from dit_sparse.kernels import block_sparse_attention
from dit_sparse.layout import BlockLayout
from dit_sparse.patterns import make_pattern
from dit_sparse.schedule import BoundedCache, PlanCache


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "fa4-padded-check.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = {}
    b, h, length, d = 2, 4, 6000, 128
    for dtype in (torch.float16, torch.bfloat16):
        q, k, v = (torch.randn(b, length, h, d, device="cuda", dtype=dtype).transpose(1, 2) for _ in range(3))
        cfg = ds.make_config("semantic", top_p=0.3, block_size=64, kv_clusters=100)
        plan = make_pattern(cfg).plan(q, k, VideoGeometry(1, 1, length, "wan"), PlanCache(shared=BoundedCache()))
        cases = {"semantic": plan}
        # The same pieces with the keys of the permuted sequence's tail masked (a ragged valid length per row).
        cases["semantic+kv_valid_len"] = BlockLayout(
            plan.kv_indices, plan.kv_counts, plan.block_q, plan.block_kv, length, length,
            q_block_starts=plan.q_block_starts, kv_block_starts=plan.kv_block_starts, q_perm=plan.q_perm,
            kv_perm=plan.kv_perm, kv_valid_len=torch.tensor([length - 1000, length - 37], device="cuda",
                                                            dtype=torch.int32))
        for name, layout in cases.items():
            ref, ref_lse = block_sparse_attention(q.float(), k.float(), v.float(), layout, backend="reference",
                                                  return_lse=True)
            row = {"density": float(layout.density())}
            for engine in ("fa4", "triton"):
                out, lse = block_sparse_attention(q, k, v, layout, backend=engine, return_lse=True)
                finite = torch.isfinite(ref_lse)
                row[engine] = {"max_err": float((out.float() - ref).abs().max()),
                               "lse_err": float((lse - ref_lse)[finite].abs().max()),
                               "empty_rows_match": bool(torch.equal(torch.isfinite(lse), finite)),
                               "out_stride": list(out.stride())}
            fn = torch.compile(lambda q, k, v: block_sparse_attention(q, k, v, layout, backend="fa4"), fullgraph=True)
            row["fa4_compiled_max_err"] = float((fn(q, k, v).float() - ref).abs().max())
            row["ok"] = all(row[e]["max_err"] < 3e-2 and row[e]["empty_rows_match"] for e in ("fa4", "triton")) and \
                row["fa4_compiled_max_err"] < 3e-2
            rows[f"{name} {str(dtype).replace('torch.', '')}"] = row
            print(name, dtype, row, flush=True)
    payload = {"benchmark": "fa4-padded-check", "command": "python " + " ".join(sys.argv), "commit": git_commit(),
               "shape": {"batch": b, "heads": h, "tokens": length, "head_dim": d}, "results": rows,
               "ok": all(r["ok"] for r in rows.values()), "env": device_info()}
    with open(args.out, "w") as f:
        json.dump(payload, f, indent=1)
    print("ok" if payload["ok"] else "FAILED", args.out)


if __name__ == "__main__":
    main()
