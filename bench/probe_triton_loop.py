"""Which formulations of the block-sparse key loop Triton compiles and runs fastest on this GPU (issue #13 item 2:
>= 500 / 450 effective TFLOP/s at density 0.25 / 0.10; our kernel measured ~440 / 390 at Wan-1.3B 480p, ~480 per
key block, and its warp-specialised loop does not compile on sm90).

A minimal probe kernel, one program per 128-row query tile of one head, walks a list of 128-token key blocks with
the same online softmax as `dit_sparse.kernels.triton_block_sparse` but none of its generality (no masks, no
variable blocks, no ragged tail: the length is a multiple of 128). Its variants isolate what the library kernel
cannot tell apart:

    indexed      key blocks read from the row's index list (the library kernel's case), pointer loads
    contiguous   the first ``count`` key blocks, no index list (a dense loop with a shorter range)
    tma          K / V tiles through device-side TMA descriptors
    ws           ``tl.range(..., warp_specialize=True)``: does Triton's warp specialisation build on this GPU for
                 a plain attention loop, and for which of the variants above?
    pipe_qk      software-pipelined by hand: the next key block's QK^T is issued before the current block's
                 softmax and PV (FlashAttention-3's intra-warpgroup overlap), 128- or 64-key tiles

Each variant runs at densities 1.0 / 0.25 / 0.10 of random layouts (the diagonal kept); a fit of time against key
blocks per program gives its fixed cost per program and its rate per key block. The library kernel runs the same
layouts in the same process. Every variant's output is checked against the library kernel's.

    python bench/probe_triton_loop.py OUT.json [LENGTH,HEADS] [DENSITIES]
        (default 32768,12: Wan-1.3B 480p, batch 1; densities 1.0,0.25,0.1; PROBE_VARIANTS=a,b picks variants)

Runs without Diffusers (torch + triton only). Under TRITON_INTERPRET=1 on a CPU it runs a small smoke shape in
float16.
"""

import json
import os
import sys

import torch
import triton
import triton.language as tl
from probe_io import start  # bench/, next to this script

from dit_sparse.eval.bench import kernel_cuda_ms, queued_cuda_ms, random_layout, time_cuda
from dit_sparse.kernels import block_sparse_attention
from dit_sparse.kernels import triton_block_sparse as tbs

BLOCK = 128  # the layout's block (query tile rows and key block tokens)
_LOG2E = 1.4426950408889634


@triton.jit
def _offset(idx_ptr, t, INDEXED: tl.constexpr, SUB: tl.constexpr, BLOCK_N: tl.constexpr):
    """Token offset of the loop's t-th key tile: listed block t // SUB, slice t % SUB (or tile t, contiguous)."""
    if INDEXED:
        return tl.load(idx_ptr + t // SUB) * 128 + (t % SUB) * BLOCK_N
    else:
        return t * BLOCK_N


@triton.jit
def _softmax_step(qk, m_i, l_i, acc, qk_scale):
    """One online-softmax update (the library kernel's, without masks): probabilities, new max, sum, rescaled acc."""
    m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
    alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(qk * qk_scale - m_new[:, None])
    return p, m_new, l_i * alpha + tl.sum(p, 1), acc * alpha[:, None]


@triton.jit
def _probe_fwd(
    Q, K, V, Out, Idx, Cnt, L, NQ, KMAX, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, INDEXED: tl.constexpr, TMA: tl.constexpr,
    WS: tl.constexpr, PIPE_QK: tl.constexpr, STAGES: tl.constexpr, PREFETCH: tl.constexpr,
    VEC_INDEX: tl.constexpr,
):
    BLOCK_M: tl.constexpr = 128
    SUB: tl.constexpr = 128 // BLOCK_N
    pid_m = tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    base = h * L * HEAD_DIM
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    q = tl.load(Q + base + offs_m[:, None] * HEAD_DIM + offs_d[None, :])
    count = tl.load(Cnt + h * NQ + pid_m) * SUB
    idx_ptr = Idx + (h * NQ + pid_m) * KMAX
    if TMA:
        k_desc = tl.make_tensor_descriptor(K + base, shape=[L, HEAD_DIM], strides=[HEAD_DIM, 1],
                                           block_shape=[BLOCK_N, HEAD_DIM])
        v_desc = tl.make_tensor_descriptor(V + base, shape=[L, HEAD_DIM], strides=[HEAD_DIM, 1],
                                           block_shape=[BLOCK_N, HEAD_DIM])
    else:
        k_desc = K
        v_desc = V
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    if PIPE_QK:
        # Block 0's scores before the loop; each iteration issues tile t + 1's QK^T first (the last iteration
        # recomputes the last tile's and drops it), then the softmax and PV of tile t. PREFETCH: tile t + 2's
        # offset is read one iteration before its K load needs it.
        n_cur = _offset(idx_ptr, 0, INDEXED, SUB, BLOCK_N)
        n_next = _offset(idx_ptr, tl.minimum(1, count - 1), INDEXED, SUB, BLOCK_N)
        k = tl.load(K + base + (n_cur + offs_n)[:, None] * HEAD_DIM + offs_d[None, :])
        qk = tl.dot(q, tl.trans(k))
        for t in tl.range(0, count, num_stages=STAGES):
            if PREFETCH:
                n_after = _offset(idx_ptr, tl.minimum(t + 2, count - 1), INDEXED, SUB, BLOCK_N)
            else:
                n_next = _offset(idx_ptr, tl.minimum(t + 1, count - 1), INDEXED, SUB, BLOCK_N)
            k_next = tl.load(K + base + (n_next + offs_n)[:, None] * HEAD_DIM + offs_d[None, :])
            qk_next = tl.dot(q, tl.trans(k_next))
            p, m_new, l_i, acc = _softmax_step(qk, m_i, l_i, acc, qk_scale)
            v = tl.load(V + base + (n_cur + offs_n)[:, None] * HEAD_DIM + offs_d[None, :])
            acc = tl.dot(p.to(v.dtype), v, acc)
            m_i = m_new
            qk = qk_next
            n_cur = n_next
            if PREFETCH:
                n_next = n_after
    else:
        # PREFETCH: tile t + 1's offset is read in iteration t (a loop-carried scalar) instead of at the top of
        # iteration t + 1, where the K load's address waits for it.
        n_pre = _offset(idx_ptr, 0, INDEXED, SUB, BLOCK_N)
        for t in tl.range(0, count, num_stages=STAGES, warp_specialize=WS):
            if VEC_INDEX:
                # The block id read as a BLOCK_N vector (every row the same address): a tensor load, which the
                # pipeliner can issue as an async copy stages ahead, where a scalar load is a synchronous one.
                kb_rows = tl.load(idx_ptr + t // SUB + offs_n * 0)
                rows = kb_rows * 128 + (t % SUB) * BLOCK_N + offs_n
                n0 = 0  # unused
            elif PREFETCH:
                n0 = n_pre
                n_pre = _offset(idx_ptr, tl.minimum(t + 1, count - 1), INDEXED, SUB, BLOCK_N)
                rows = n0 + offs_n
            else:
                n0 = _offset(idx_ptr, t, INDEXED, SUB, BLOCK_N)
                rows = n0 + offs_n
            if TMA:
                k = k_desc.load([n0.to(tl.int32), 0])
            else:
                k = tl.load(K + base + rows[:, None] * HEAD_DIM + offs_d[None, :])
            qk = tl.dot(q, tl.trans(k))
            p, m_new, l_i, acc = _softmax_step(qk, m_i, l_i, acc, qk_scale)
            if TMA:
                v = v_desc.load([n0.to(tl.int32), 0])
            else:
                v = tl.load(V + base + rows[:, None] * HEAD_DIM + offs_d[None, :])
            acc = tl.dot(p.to(v.dtype), v, acc)
            m_i = m_new
    out = acc / l_i[:, None]
    tl.store(Out + base + offs_m[:, None] * HEAD_DIM + offs_d[None, :], out.to(Out.dtype.element_ty))


def _variant(indexed=True, tma=False, ws=False, pipe_qk=False, block_n=128, warps=8, stages=3, prefetch=False,
             vec_index=False):
    return dict(INDEXED=indexed, TMA=tma, WS=ws, PIPE_QK=pipe_qk, BLOCK_N=block_n, num_warps=warps, STAGES=stages,
                PREFETCH=prefetch, VEC_INDEX=vec_index)


VARIANTS = {
    "indexed": _variant(),
    "contiguous": _variant(indexed=False),
    "indexed-tma": _variant(tma=True),
    "indexed-prefetch": _variant(prefetch=True),
    "indexed-prefetch-s2": _variant(prefetch=True, stages=2),
    "indexed-n64-prefetch": _variant(prefetch=True, block_n=64),
    "pipe_qk": _variant(pipe_qk=True, stages=2),
    "pipe_qk-s3": _variant(pipe_qk=True),  # 3 stages of 128-key tiles and the extra K tile: over shared memory
    "pipe_qk-n64": _variant(pipe_qk=True, block_n=64),
    "pipe_qk-n64-s4": _variant(pipe_qk=True, block_n=64, stages=4),
    "pipe_qk-n64-prefetch": _variant(pipe_qk=True, block_n=64, prefetch=True),
    "pipe_qk-prefetch": _variant(pipe_qk=True, stages=2, prefetch=True),
    "pipe_qk-contiguous": _variant(indexed=False, pipe_qk=True, stages=2),
    "contiguous-ws-w4": _variant(indexed=False, ws=True, warps=4),
    "contiguous-ws-w8": _variant(indexed=False, ws=True),
    "contiguous-tma-ws-w4": _variant(indexed=False, tma=True, ws=True, warps=4),
    "contiguous-tma-ws-w8": _variant(indexed=False, tma=True, ws=True),
    "indexed-ws-w8": _variant(ws=True),
    "indexed-tma-ws-w8": _variant(tma=True, ws=True),
    "indexed-prefetch-ws-w8": _variant(ws=True, prefetch=True),
    "indexed-vec": _variant(vec_index=True),
    "indexed-vec-s2": _variant(vec_index=True, stages=2),
    "indexed-vec-n64": _variant(vec_index=True, block_n=64),
    "indexed-vec-n64-s4": _variant(vec_index=True, block_n=64, stages=4),
    "indexed-n64-s4": _variant(block_n=64, stages=4),
    "indexed-vec-ws-w8": _variant(vec_index=True, ws=True),
}


def probe(q, k, v, idx, cnt, scale, variant):
    meta = VARIANTS[variant]
    h, length, dim = q.shape
    nq = length // BLOCK
    out = torch.empty_like(q)
    if meta["TMA"]:
        tbs._ensure_tma_allocator()
    _probe_fwd[(nq, h)](q, k, v, out, idx, cnt, length, nq, idx.shape[-1], scale * _LOG2E, HEAD_DIM=dim, **meta)
    return out


def fit(points):
    """Least squares ms = fixed + per_block * blocks over (blocks per program, µs per program) points."""
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    slope = sum((p[0] - mx) * (p[1] - my) for p in points) / sxx if sxx else 0.0
    return {"fixed_us_per_program": my - slope * mx, "us_per_key_block": slope}


def main():
    path = sys.argv[1]
    cuda = torch.cuda.is_available()
    length, heads = (int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else
                                      ("32768,12" if cuda else "512,2")).split(","))
    dim = 128
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float16
    out = start("probe_triton_loop.py")
    out["triton"] = triton.__version__
    torch.manual_seed(0)
    q, k, v = (torch.randn(heads, length, dim, device=device, dtype=dtype) for _ in range(3))
    scale = dim ** -0.5
    nq = length // BLOCK
    sms = torch.cuda.get_device_properties(0).multi_processor_count if cuda else 1
    row = {"length": length, "heads": heads, "head_dim": dim, "dtype": str(dtype), "sms": sms}
    densities = [float(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "1.0,0.25,0.1").split(",")]
    layouts = {}
    for d in densities:
        lay = random_layout(1, heads, length, d, BLOCK, device)
        idx = lay.kv_indices[0].contiguous().to(torch.int32)
        cnt = lay.kv_counts[0].contiguous().to(torch.int32)
        if d == 1.0:
            cnt = torch.full_like(cnt, nq)
        layouts[d] = (lay, idx, cnt, float(cnt.sum()) / (heads * nq * nq))
    flops_dense = 4.0 * length * length * heads * dim
    programs = heads * nq

    def timed(fn, dens, blocks, kernel_name):
        """Three clocks: one call from an idle GPU (what the kernel benchmark reports: the launch's host cost
        included), calls queued back to back, and the main kernel's own CUDA time; TFLOP/s and µs per program
        (a wave of one program per SM) from the kernel's time."""
        if not cuda:
            return {"density": dens, "blocks_per_program": blocks}
        single = time_cuda(fn, reps=20)["median_ms"]
        queued = queued_cuda_ms(fn, single)
        kernel = kernel_cuda_ms(fn, calls=5, name=kernel_name)
        flops = flops_dense * dens / 1e9
        config = getattr(tbs._build_kernel(False, True), "best_config", None) if kernel_name != "_probe_fwd" else None
        return {"config": str(config), "single_ms": single, "back_to_back_ms": queued, "kernel_ms": kernel,
                "tflops_single": flops / single, "tflops_back_to_back": flops / queued,
                "effective_tflops": flops / kernel, "density": dens,
                "us_per_program": kernel * 1e3 / (programs / sms), "blocks_per_program": blocks}

    qb, kb, vb = (t.unsqueeze(0) for t in (q, k, v))
    os.environ["DIT_SPARSE_TRITON_AUTOTUNE"] = "1"
    os.environ.setdefault("DIT_SPARSE_PERSISTENT_CACHE", "0")
    tbs._build_kernel.cache_clear()
    reference = {}
    entry = {}
    for d, (lay, idx, cnt, dens) in layouts.items():
        reference[d] = block_sparse_attention(qb, kb, vb, lay, backend="triton")[0]
        entry[str(d)] = timed(lambda lay=lay: block_sparse_attention(qb, kb, vb, lay, backend="triton"),
                              float(lay.density()), float(lay.kv_counts.float().mean()), "_attn_fwd")
    if cuda:
        entry["fit"] = fit([(e["blocks_per_program"], e["us_per_program"]) for e in entry.values()])
    row["library_kernel"] = entry
    print("library_kernel", json.dumps(entry), flush=True)
    # Diffusers hands the processor (B, L, H, D) tensors: the library kernel reads them through strides. Each case
    # tuned for itself (the autotuner's key does not hold strides; DIT_SPARSE_PERSISTENT_CACHE=0 keeps the disk's
    # results out); "kv_copied": K and V copied to head-major memory inside the timed call.
    qs, ks, vs = (t.transpose(0, 1).contiguous().transpose(0, 1).unsqueeze(0) for t in (q, k, v))
    cases = {"library_kernel_strided": lambda lay: block_sparse_attention(qs, ks, vs, lay, backend="triton"),
             "library_kernel_kv_copied": lambda lay: block_sparse_attention(qs, ks.contiguous(), vs.contiguous(), lay,
                                                                            backend="triton")}
    for case, call in cases.items():
        tbs._build_kernel.cache_clear()
        entry = {}
        for d, (lay, idx, cnt, dens) in layouts.items():
            entry[str(d)] = timed(lambda lay=lay: call(lay), float(lay.density()), float(lay.kv_counts.float().mean()),
                                  None)  # every kernel of the call: the copies count
        if cuda:
            entry["fit"] = fit([(e["blocks_per_program"], e["us_per_program"]) for e in entry.values()])
        row[case] = entry
        print(case, json.dumps(entry), flush=True)
    chosen = os.environ.get("PROBE_VARIANTS")
    for variant in chosen.split(",") if chosen else VARIANTS:
        indexed = VARIANTS[variant]["INDEXED"]
        entry = {}
        try:
            for d, (lay, idx, cnt, dens) in layouts.items():
                got = probe(q, k, v, idx, cnt, scale, variant)
                if indexed or d == 1.0:  # a contiguous loop over every block is dense attention too
                    entry.setdefault("max_abs_err_vs_library", 0.0)
                    err = float((got.float() - reference[d].float()).abs().max())
                    entry["max_abs_err_vs_library"] = max(entry["max_abs_err_vs_library"], err)
                if not torch.isfinite(got).all():
                    raise RuntimeError("non-finite output")
                entry[str(d)] = timed(lambda idx=idx, cnt=cnt: probe(q, k, v, idx, cnt, scale, variant), dens,
                                      float(cnt.float().mean()), "_probe_fwd")
            if cuda:
                entry["fit"] = fit([(e["blocks_per_program"], e["us_per_program"])
                                    for key, e in entry.items() if isinstance(e, dict)])
        except Exception as err:  # a variant Triton cannot build here is a result too
            entry["error"] = repr(err)[:400]
        row[variant] = entry
        print(variant, json.dumps(entry), flush=True)
        out["shapes"][f"{length}x{heads}"] = row
        with open(path, "w") as f:  # rewritten after every variant: a timeout keeps what was measured
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
