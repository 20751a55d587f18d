"""Our Triton kernel under one fixed launch config at a time (issue #13 item 2: >= 500 / 450 effective TFLOP/s at
density 0.25 / 0.10): which tile shape, warps and pipeline depth run fastest on random fixed layouts, whether 64-row
query tiles (two programs per 128-token query block) or configs small enough for two programs per SM (shared memory
and registers) beat the autotuned 128-row tiles, with each config's registers, spills and shared memory from its
compiled kernel, and its error against the reference. The autotuned kernel is timed first, in the same process.

    python bench/probe_triton_configs.py OUT.json [SHAPES] [DENSITIES]
        (comma-separated; defaults wan1.3b-480p,hunyuan-720p and 0.25,0.1)
"""

import os
import sys

import torch
from probe_io import record, start  # bench/, next to this script

from dit_sparse.eval.bench import KERNEL_SHAPES, random_layout, sampled_reference_error, time_cuda
from dit_sparse.kernels import block_sparse_attention
from dit_sparse.kernels import triton_block_sparse as tbs

# (BLOCK_M, BLOCK_N, num_warps, num_stages). Shared memory (bf16, head_dim 128): 2 * (M * 128 + stages * N * 256).
CONFIGS = [
    (128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 8, 3), (128, 64, 8, 4),
    (128, 64, 4, 2),  # 96 KB: two programs per SM if the registers allow it
    (128, 128, 4, 2),
    (64, 128, 4, 3), (64, 128, 4, 2), (64, 64, 4, 3), (64, 64, 4, 4),  # 64-row query tiles
]


def compiled_kernels() -> dict:
    """{id: (n_regs, n_spills, shared bytes)} of the fixed-config kernel's compiled variants (Triton's caches;
    best effort, their layout moves between versions)."""
    found = {}
    jit = tbs._build_kernel(False, False)
    for entry in getattr(jit, "device_caches", {}).values():
        for part in entry if isinstance(entry, tuple) else (entry,):
            if isinstance(part, dict):
                for kernel in part.values():
                    if hasattr(kernel, "metadata"):
                        found[id(kernel)] = kernel
    out = {}
    for key, kernel in found.items():
        try:
            kernel._init_handles()
        except Exception:
            pass
        out[key] = (getattr(kernel, "n_regs", None), getattr(kernel, "n_spills", None),
                    getattr(kernel.metadata, "shared", None))
    return out


def main():
    path = sys.argv[1]
    shapes = sys.argv[2].split(",") if len(sys.argv) > 2 else ["wan1.3b-480p", "hunyuan-720p"]
    densities = [float(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "0.25,0.1").split(",")]
    out = start("probe_triton_configs.py")
    out["triton"] = tbs.triton.__version__
    for shape in shapes:
        length, heads, dim = KERNEL_SHAPES[shape]
        torch.manual_seed(0)
        # A CPU smoke test runs under TRITON_INTERPRET=1 in float16 (the interpreter gets bfloat16 wrong).
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" else torch.float16
        q, k, v = (torch.randn(1, length, heads, dim, device=device, dtype=dtype).transpose(1, 2) for _ in range(3))
        layouts = {d: random_layout(1, heads, length, d, 128, device) for d in densities}
        flops = 4.0 * length * length * heads * dim
        row = {}

        def measure(layout):
            got = block_sparse_attention(q, k, v, layout, backend="triton")
            err = sampled_reference_error(q, k, v, layout, got)
            ms = time_cuda(lambda: block_sparse_attention(q, k, v, layout, backend="triton"), reps=20)["median_ms"]
            dens = float(layout.density())
            return {"ms": ms, "effective_tflops": flops * dens / ms / 1e9, "density": dens, "max_abs_err": err}

        os.environ["DIT_SPARSE_TRITON_AUTOTUNE"] = "1"
        row["autotuned"] = {str(d): measure(layout) for d, layout in layouts.items()}
        os.environ["DIT_SPARSE_TRITON_ORDER"] = "global"  # longest rows first over all heads, not within each
        row["autotuned_order_global"] = {str(d): measure(layout) for d, layout in layouts.items()}
        os.environ.pop("DIT_SPARSE_TRITON_ORDER")
        print(shape, "autotuned", row["autotuned"], "order global", row["autotuned_order_global"], flush=True)
        os.environ["DIT_SPARSE_TRITON_AUTOTUNE"] = "0"
        for block_m, block_n, warps, stages in CONFIGS:
            name = f"m{block_m}-n{block_n}-w{warps}-s{stages}"
            tbs.DEFAULT_CONFIG.update(BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, NUM_STAGES=stages)
            before = compiled_kernels()
            try:
                entry = {str(d): measure(layout) for d, layout in layouts.items()}
                new = [val for key, val in compiled_kernels().items() if key not in before]
                if new:
                    entry["n_regs"], entry["n_spills"], entry["shared_bytes"] = new[0]
            except Exception as err:
                entry = {"error": repr(err)[:400]}
            row[name] = entry
            print(shape, name, entry, flush=True)
        tbs.DEFAULT_CONFIG.update(BLOCK_M=None, BLOCK_N=None, num_warps=None, NUM_STAGES=3)
        os.environ.pop("DIT_SPARSE_TRITON_AUTOTUNE", None)
        record(out, path, shape, row)


if __name__ == "__main__":
    main()
