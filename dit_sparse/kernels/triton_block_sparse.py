"""Forward block-sparse attention in Triton, over exactly the key blocks a `BlockLayout` lists.

One program computes one query tile (a query block, or a ``BLOCK_M`` slice of one when ``block_q > 128`` or
``head_dim > 128``) of one (batch, head): it reads ``kv_counts`` and walks ``kv_indices`` with a FlashAttention-style
online softmax (exp2 with the scale pre-multiplied by log2(e), fp32 accumulators). Block boundaries are either fixed
(``block_q``/``block_kv``, last block ragged) or read from ``q_block_starts``/``kv_block_starts``; ``kv_valid_len``
masks trailing text padding. The grid is (query tiles, batch * heads); programs start longest rows first.

It also runs under ``TRITON_INTERPRET=1`` on CPU (fp16/fp32), which is how the tests exercise it without a GPU.

Knobs (environment variables, read per call):
    DIT_SPARSE_TRITON_AUTOTUNE=0   use one fixed launch config instead of autotuning on CUDA.
    DIT_SPARSE_TRITON_ORDER        program order: "head" (default; longest rows first within each head), "global"
                                   (longest rows first over all heads) or "none" (plain query-block order).
    DIT_SPARSE_TRITON_TAIL=0       mask every key tile instead of only the sequence's short last block.
    DIT_SPARSE_TRITON_TMA=1        load K/V tiles through device-side TMA descriptors (off by default: no gain
                                   measured on H200).
    DIT_SPARSE_TRITON_WS=1         warp-specialise the main key loop (``tl.range(..., warp_specialize=True)``: loads
                                   and compute in separate warps). Off by default: Triton 3.6 and 3.9 fail to
                                   compile this kernel with it on sm90 (``PassManager::run failed``, with or without
                                   TMA); a plain key loop does build with 8 warps there and runs no faster
                                   (``bench/probe_triton_loop.py``); ``bench/probe_triton_ws.sh`` measures it under
                                   another Triton.
    DIT_SPARSE_PERSISTENT_CACHE=0  do not keep autotuning results on disk (Triton's ``cache_results``, in Triton's
                                   cache directory): by default a new process reuses them instead of re-tuning.
"""

from __future__ import annotations

import inspect
import math
import os
from functools import lru_cache
from typing import Optional, Tuple

import torch

try:
    import triton
    import triton.language as tl
except Exception as exc:  # a broken triton install must only remove this engine, not the package
    raise ImportError(f"triton is not usable: {exc}") from exc

from ..config import env_flag
from ..layout import BlockLayout

OP_NAME = "dit_sparse::triton_block_sparse_fwd"
_LOG2E = 1.4426950408889634
_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_TILE = 128
_MIN_TILE = 16  # tl.dot needs every dimension >= 16

# Fixed launch parameters for the interpreter and for DIT_SPARSE_TRITON_AUTOTUNE=0. Tests may override BLOCK_N to
# exercise sub-tiles of a key block, and BLOCK_M to split query blocks over programs (None: the query block's tile, at
# most 128 rows; 64 with head_dim > 128); ``bench/probe_triton_configs.py`` times configs through it.
DEFAULT_CONFIG = {"BLOCK_N": None, "NUM_STAGES": 3, "num_warps": None, "BLOCK_M": None}


def _next_pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


def _tile(block: int) -> int:
    return min(max(_next_pow2(block), _MIN_TILE), _MAX_TILE)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def head_dim_supported(head_dim: int) -> bool:
    # Multiples of 8 keep rows 16-byte aligned (vector loads, TMA); other sizes are padded to a power-of-two tile.
    return 16 <= head_dim <= 256 and head_dim % 8 == 0


# ----------------------------------------------------------------------------------------------------- the kernel
def _attn_inner_py(
    m_i, l_i, acc, q, k_base, v_base, idx_ptr, ks_ptr, t_lo, t_hi, kv_sub, kv_limit,
    stride_kn, stride_vn, stride_ik, stride_ksk, qk_scale, offs_d, offs_dv, d_ok, dv_ok, offs_n0,
    k_desc, v_desc,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, D_TILE: tl.constexpr, DV_TILE: tl.constexpr,
    BLOCK_KV: tl.constexpr, VAR_KV: tl.constexpr, MASK_KV: tl.constexpr, IEEE: tl.constexpr, USE_TMA: tl.constexpr,
    BLOCK_N: tl.constexpr, NUM_STAGES: tl.constexpr, WARP_SPEC: tl.constexpr,
):
    for t in tl.range(t_lo, t_hi, num_stages=NUM_STAGES, warp_specialize=WARP_SPEC):
        kb = tl.load(idx_ptr + (t // kv_sub) * stride_ik)
        if VAR_KV:
            kv_start = tl.load(ks_ptr + kb * stride_ksk)
            kv_end = tl.minimum(tl.load(ks_ptr + (kb + 1) * stride_ksk), kv_limit)
        else:
            kv_start = kb * BLOCK_KV
            kv_end = tl.minimum(kv_start + BLOCK_KV, kv_limit)
        n_start = kv_start + (t % kv_sub) * BLOCK_N
        offs_n = n_start + offs_n0
        n_ok = offs_n < kv_end
        if USE_TMA:
            k = k_desc.load([n_start.to(tl.int32), 0])
        elif MASK_KV:
            k = tl.load(k_base + offs_n[:, None] * stride_kn + offs_d[None, :],
                        mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        elif D_TILE != HEAD_DIM:
            k = tl.load(k_base + offs_n[:, None] * stride_kn + offs_d[None, :], mask=d_ok[None, :], other=0.0)
        else:
            k = tl.load(k_base + offs_n[:, None] * stride_kn + offs_d[None, :])
        if IEEE:
            qk = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            qk = tl.dot(q, tl.trans(k))
        if MASK_KV:
            qk = tl.where(n_ok[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        if MASK_KV:
            # A row may have seen only masked keys so far; subtracting -inf would give NaN.
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_ref = m_new
        alpha = tl.math.exp2(m_i - m_ref)
        p = tl.math.exp2(qk * qk_scale - m_ref[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        if USE_TMA:
            v = v_desc.load([n_start.to(tl.int32), 0])
        elif MASK_KV:
            v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_dv[None, :],
                        mask=n_ok[:, None] & dv_ok[None, :], other=0.0)
        elif DV_TILE != HEAD_DIM_V:
            v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_dv[None, :], mask=dv_ok[None, :], other=0.0)
        else:
            v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_dv[None, :])
        if IEEE:
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision="ieee")
        else:
            acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new

    return m_i, l_i, acc


# The kernel calls `_attn_inner` by name: the interpreter runs the plain function, a compiled kernel needs a
# JITFunction. `_kernel` points the name at the right one for the mode it builds (see there).
_attn_inner = _attn_inner_py


def _attn_fwd(
    Q, K, V, Out, Lse,
    KvIdx, KvCnt, QStarts, KvStarts, ValidLen, Order,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_om,
    stride_lb, stride_lh,
    stride_ib, stride_ih, stride_im, stride_ik,
    stride_cb, stride_ch, stride_cm,
    stride_qsb, stride_qsh, stride_qsk,
    stride_ksb, stride_ksh, stride_ksk,
    stride_vl,
    H, NQ, LQ, LK, qk_scale,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, D_TILE: tl.constexpr, DV_TILE: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_KV: tl.constexpr, BLOCK_M: tl.constexpr, Q_SUB: tl.constexpr,
    VAR_Q: tl.constexpr, VAR_KV: tl.constexpr, HAS_VALID: tl.constexpr, HAS_ORDER: tl.constexpr,
    MASK_KV: tl.constexpr, IEEE: tl.constexpr, USE_TMA: tl.constexpr, RAGGED_TAIL: tl.constexpr,
    WARP_SPEC: tl.constexpr, BLOCK_N: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    if HAS_ORDER:
        # CTAs are issued in linear-id order, so reading the row from a sorted list starts the longest rows first
        # and leaves the short ones to fill the tail of the last wave.
        lin = pid_bh.to(tl.int64) * (NQ * Q_SUB) + pid_m
        row = tl.load(Order + lin // Q_SUB)
        q_sub = lin % Q_SUB
        bh = row // NQ
        qblk = row % NQ
    else:
        bh = pid_bh
        qblk = pid_m // Q_SUB
        q_sub = pid_m % Q_SUB
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)

    if VAR_Q:
        qs_ptr = QStarts + b * stride_qsb + h * stride_qsh
        blk_start = tl.load(qs_ptr + qblk * stride_qsk)
        blk_end = tl.minimum(tl.load(qs_ptr + (qblk + 1) * stride_qsk), LQ)
    else:
        blk_start = qblk * BLOCK_Q
        blk_end = tl.minimum(blk_start + BLOCK_Q, LQ)
    m_start = blk_start + q_sub * BLOCK_M
    m_end = tl.minimum(blk_end, m_start + BLOCK_M)

    offs_m = m_start + tl.arange(0, BLOCK_M)
    m_ok = offs_m < m_end
    offs_d = tl.arange(0, D_TILE)
    offs_dv = tl.arange(0, DV_TILE)
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DIM_V
    offs_n0 = tl.arange(0, BLOCK_N)

    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :]
    q = tl.load(q_ptrs, mask=m_ok[:, None] & d_ok[None, :], other=0.0)

    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    if USE_TMA:
        # Out-of-range rows come back as zeros (like the masked loads); in-range rows of a neighbouring block are
        # excluded by the score mask below.
        k_desc = tl.make_tensor_descriptor(k_base, shape=[LK, HEAD_DIM], strides=[stride_kn, 1],
                                           block_shape=[BLOCK_N, D_TILE])
        v_desc = tl.make_tensor_descriptor(v_base, shape=[LK, HEAD_DIM_V], strides=[stride_vn, 1],
                                           block_shape=[BLOCK_N, DV_TILE])
    else:
        k_desc = k_base  # unused placeholders: USE_TMA is a compile-time branch
        v_desc = v_base

    idx_ptr = KvIdx + b * stride_ib + h * stride_ih + qblk * stride_im
    count = tl.load(KvCnt + b * stride_cb + h * stride_ch + qblk * stride_cm)
    kv_limit = LK
    if HAS_VALID:
        kv_limit = tl.minimum(tl.load(ValidLen + b * stride_vl), LK)
    ks_ptr = KvStarts + b * stride_ksb + h * stride_ksh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, DV_TILE], dtype=tl.float32)

    # A key block wider than the tile (block_kv > 128, or a smaller tuned BLOCK_N) is walked in BLOCK_N slices. One
    # flat loop over (listed block, slice) lets the pipeliner buffer single slices: shared memory per stage stays
    # BLOCK_N rows of K and V whatever block_kv is.
    kv_sub = (BLOCK_KV + BLOCK_N - 1) // BLOCK_N
    n_main = count
    if RAGGED_TAIL:
        # Only the sequence's last key block is short. Listed blocks are in increasing order, so it can only be the
        # last entry: the main loop runs unmasked and the short block gets its own masked pass.
        last = tl.load(idx_ptr + tl.maximum(count - 1, 0) * stride_ik)
        n_main = count - ((count > 0) & (last == (LK - 1) // BLOCK_KV)).to(tl.int32)
    m_i, l_i, acc = _attn_inner(
        m_i, l_i, acc, q, k_base, v_base, idx_ptr, ks_ptr, 0, n_main * kv_sub, kv_sub, kv_limit,
        stride_kn, stride_vn, stride_ik, stride_ksk, qk_scale, offs_d, offs_dv, d_ok, dv_ok, offs_n0,
        k_desc, v_desc,
        HEAD_DIM, HEAD_DIM_V, D_TILE, DV_TILE, BLOCK_KV, VAR_KV, MASK_KV, IEEE, USE_TMA, BLOCK_N, NUM_STAGES,
        WARP_SPEC,
    )
    if RAGGED_TAIL:
        m_i, l_i, acc = _attn_inner(
            m_i, l_i, acc, q, k_base, v_base, idx_ptr, ks_ptr, n_main * kv_sub, count * kv_sub, kv_sub, kv_limit,
            stride_kn, stride_vn, stride_ik, stride_ksk, qk_scale, offs_d, offs_dv, d_ok, dv_ok, offs_n0,
            k_desc, v_desc,
            HEAD_DIM, HEAD_DIM_V, D_TILE, DV_TILE, BLOCK_KV, VAR_KV, True, IEEE, USE_TMA, BLOCK_N, 1, False,
        )

    # Rows without any unmasked key keep l_i == 0: they return zeros and lse = -inf instead of 0/0.
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    o_ptrs = Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_dv[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=m_ok[:, None] & dv_ok[None, :])
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)
    tl.store(Lse + b * stride_lb + h * stride_lh + offs_m, lse, mask=m_ok)


def _autotune_configs():
    # Eight configs span num_warps 4/8, num_stages 2/3/4 and 64/128-key tiles; each costs a compile (seconds) on the
    # first call per key, so the list stays short. BLOCK_N is clamped to the layout's key tile by the pruner.
    grid = [(128, 8, 2), (128, 8, 3), (128, 4, 2), (128, 4, 3), (64, 4, 3), (64, 4, 4), (64, 8, 3), (64, 8, 4)]
    return [
        triton.Config({"BLOCK_N": block_n, "NUM_STAGES": stages}, num_warps=warps, num_stages=stages)
        for block_n, warps, stages in grid
    ]


def _smem_bytes(block_m: int, block_n: int, d_tile: int, dv_tile: int, elem: int, stages: int) -> int:
    # Q stays resident; the pipeliner keeps `stages` copies of one K and one V tile (matches what triton reports
    # for sm90 to the byte, e.g. 229,376 B for 128x128 tiles, head_dim 128, bf16, 3 stages).
    return elem * (block_m * d_tile + stages * block_n * (d_tile + dv_tile))


def _max_smem(device: torch.device) -> int:
    if device.type != "cuda":
        return 232448  # H100 / H200 opt-in maximum per block
    return _cuda_max_smem(device.index if device.index is not None else torch.cuda.current_device())


@lru_cache(maxsize=None)
def _cuda_max_smem(index: int) -> int:
    try:
        return int(triton.runtime.driver.active.utils.get_device_properties(index)["max_shared_mem"])
    except Exception:
        return 232448


def _prune_configs(configs, named_args, **kwargs):
    args = {**named_args, **kwargs}
    tile_kv = _tile(args["BLOCK_KV"])
    q = args["Q"]
    limit = _max_smem(q.device)
    kept, seen = [], set()
    for cfg in configs:
        block_n = min(cfg.kwargs["BLOCK_N"], tile_kv)
        key = (block_n, cfg.num_warps, cfg.num_stages)
        if key in seen:
            continue
        seen.add(key)
        smem = _smem_bytes(args["BLOCK_M"], block_n, args["D_TILE"], args["DV_TILE"], q.element_size(),
                           cfg.num_stages)
        kept.append((smem > limit, smem, triton.Config({**cfg.kwargs, "BLOCK_N": block_n}, num_warps=cfg.num_warps,
                                                       num_stages=cfg.num_stages)))
    # Configs that cannot fit would only fail to compile; keep the smallest one if nothing fits, so the error is
    # triton's own rather than an empty config list.
    fitting = [c for over, _, c in kept if not over]
    return fitting or [min(kept, key=lambda x: x[1])[2]]


_INNER_JIT = None


def _kernel(interpret: bool, autotune: bool):
    global _attn_inner, _INNER_JIT
    if interpret:
        _attn_inner = _attn_inner_py
    else:
        if _INNER_JIT is None:
            _INNER_JIT = triton.jit(_attn_inner_py)
        _attn_inner = _INNER_JIT
    return _build_kernel(interpret, autotune)


@lru_cache(maxsize=None)
def _build_kernel(interpret: bool, autotune: bool):
    # Built lazily: triton.jit decides between compiled and interpreted at decoration time, so building here lets
    # TRITON_INTERPRET set after import (as the tests do) still take effect.
    jitted = triton.jit(_attn_fwd)
    if interpret or not autotune:
        return jitted
    return triton.autotune(
        configs=_autotune_configs(),
        key=["HEAD_DIM", "HEAD_DIM_V", "BLOCK_M", "BLOCK_KV", "VAR_KV", "MASK_KV", "USE_TMA", "RAGGED_TAIL",
             "WARP_SPEC"],
        prune_configs_by={"early_config_prune": _prune_configs},
        **_disk_cache_options(),
    )(jitted)


def _disk_cache_options() -> dict:
    """Autotuning results kept on disk where this Triton can (``cache_results``): the first sparse step of Wan-14B
    720p paid +18.7 s of autotuning in every new process (issue #13)."""
    if not env_flag("DIT_SPARSE_PERSISTENT_CACHE", True):
        return {}
    return {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}


_ALLOCATOR_SET = False


def _ensure_tma_allocator():
    # Device-side tensor descriptors need a scratch allocation per launch; triton asks a process-wide allocator.
    global _ALLOCATOR_SET
    if _ALLOCATOR_SET:
        return

    def alloc(size: int, alignment: int, stream):
        return torch.empty(size, device="cuda", dtype=torch.int8)

    triton.set_allocator(alloc)
    _ALLOCATOR_SET = True


def _strides(t: Optional[torch.Tensor], n: int):
    if t is None:
        return (0,) * n
    # Broadcast dimensions (size 1) get stride 0 so one layout row serves every batch entry / head.
    return tuple(0 if t.shape[i] == 1 else t.stride(i) for i in range(n))


def _program_order(kv_counts: torch.Tensor, b: int, h: int, mode: str) -> Optional[torch.Tensor]:
    """Flat row ids (b * H + h) * Nq + i in the order programs should start; None for the natural order."""
    nq = kv_counts.shape[-1]
    if mode == "none":
        return None
    if mode == "global":
        flat = kv_counts.expand(b, h, nq).reshape(-1)
        return torch.argsort(flat, descending=True, stable=True).to(torch.int32)
    if mode != "head":
        raise ValueError(f"DIT_SPARSE_TRITON_ORDER must be 'head', 'global' or 'none', got {mode!r}")
    # Sorting within a head keeps the CTAs that run together on one head's K/V, which stays resident in L2.
    within = torch.argsort(kv_counts, dim=-1, descending=True, stable=True).expand(b, h, nq)
    base = torch.arange(b * h, device=kv_counts.device, dtype=torch.int64).view(b, h, 1) * nq
    return (within + base).reshape(-1).to(torch.int32)


_ORDER_UNSET = object()


def _order_mode() -> str:
    return os.environ.get("DIT_SPARSE_TRITON_ORDER", "head").strip().lower()


def _memo_order(layout: BlockLayout, bsz: int, heads: int) -> Optional[torch.Tensor]:
    """The program order of ``layout``, computed once while the layout lives (a layout serves many calls: every
    layer for radial, every call until the next refresh for the content-aware patterns) instead of an argsort and
    four more small kernels per call."""
    key = ("triton_order", _order_mode(), bsz, heads)
    if key not in layout.memo:
        layout.memo[key] = _program_order(layout.kv_counts.to(torch.int32), bsz, heads, key[1])
    return layout.memo[key]


def _forward(q, k, v, kv_indices, kv_counts, q_block_starts, kv_block_starts, kv_valid_len, block_q, block_kv, scale,
             order=_ORDER_UNSET):
    bsz, heads, lq, d = q.shape
    lk, dv = k.shape[2], v.shape[-1]
    nq = kv_indices.shape[2]
    device = q.device
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    # The output in (B, L, H, D) memory, as FlashAttention-4 returns it and Diffusers' processors reshape it: their
    # (B, L, H * D) view is then free instead of a copy (the kernel writes through strides either way).
    out = torch.empty(bsz, lq, heads, dv, device=device, dtype=q.dtype).transpose(1, 2)
    lse = torch.empty(bsz, heads, lq, device=device, dtype=torch.float32)

    d_tile, dv_tile = max(_next_pow2(d), _MIN_TILE), max(_next_pow2(dv), _MIN_TILE)
    # head_dim > 128: a 128-row tile's accumulator and Q alone would fill the registers and most of shared memory,
    # so large query blocks are split over programs (Q_SUB) instead.
    block_m = min(_tile(block_q), 64 if max(d_tile, dv_tile) > 128 else _MAX_TILE)
    autotune = not _interpreting() and os.environ.get("DIT_SPARSE_TRITON_AUTOTUNE", "1") != "0"
    if DEFAULT_CONFIG["BLOCK_M"] and not autotune:
        block_m = min(block_m, max(_MIN_TILE, _next_pow2(DEFAULT_CONFIG["BLOCK_M"])))
    q_sub = -(-block_q // block_m)
    if out.numel() == 0 or nq == 0:
        return out.zero_(), lse.fill_(float("-inf"))

    def i32(t):
        return None if t is None else t.to(device=device, dtype=torch.int32)

    kv_indices, kv_counts = i32(kv_indices), i32(kv_counts)
    q_block_starts, kv_block_starts, kv_valid_len = i32(q_block_starts), i32(kv_block_starts), i32(kv_valid_len)
    if order is _ORDER_UNSET:
        order = _program_order(kv_counts, bsz, heads, _order_mode())

    interpret = _interpreting()
    use_tma = os.environ.get("DIT_SPARSE_TRITON_TMA", "0") == "1"
    if use_tma and not interpret:
        _ensure_tma_allocator()
    var_q, var_kv, has_valid = q_block_starts is not None, kv_block_starts is not None, kv_valid_len is not None
    # Keys need masking unless every listed block is full: fixed blocks tiling the sequence exactly, no padding.
    mask_kv = var_kv or has_valid or lk % block_kv != 0 or _next_pow2(block_kv) != block_kv or block_kv < _MIN_TILE
    # The common ragged case (fixed power-of-two blocks, only the sequence's last block short) masks that block alone.
    ragged_tail = (mask_kv and not var_kv and not has_valid and _next_pow2(block_kv) == block_kv
                   and block_kv >= _MIN_TILE and os.environ.get("DIT_SPARSE_TRITON_TAIL", "1") == "1")
    if ragged_tail:
        mask_kv = False
    dummy = kv_counts  # any int32 tensor on the device stands in for an absent optional input
    vl_stride = 0 if kv_valid_len is None or kv_valid_len.numel() == 1 else kv_valid_len.stride(0)

    meta = dict(
        HEAD_DIM=d, HEAD_DIM_V=dv, D_TILE=d_tile, DV_TILE=dv_tile,
        BLOCK_Q=block_q, BLOCK_KV=block_kv, BLOCK_M=block_m, Q_SUB=q_sub,
        VAR_Q=var_q, VAR_KV=var_kv, HAS_VALID=has_valid, HAS_ORDER=order is not None,
        MASK_KV=mask_kv, IEEE=q.dtype == torch.float32, USE_TMA=use_tma, RAGGED_TAIL=ragged_tail,
        # Not under the interpreter, which runs the loop as a plain one anyway.
        WARP_SPEC=not interpret and os.environ.get("DIT_SPARSE_TRITON_WS", "0") == "1",
    )
    if interpret or not autotune:
        tile_kv = _tile(block_kv)
        # Full-width tiles: fewest interpreted steps on CPU, and FlashAttention's usual 128x128 choice on GPU.
        block_n = min(DEFAULT_CONFIG["BLOCK_N"] or (tile_kv if interpret or d_tile <= 128 else 64), tile_kv)
        stages = DEFAULT_CONFIG["NUM_STAGES"]
        if not interpret:
            limit = _max_smem(q.device)
            while stages > 1 and _smem_bytes(block_m, block_n, d_tile, dv_tile, q.element_size(), stages) > limit:
                stages -= 1
        meta["BLOCK_N"] = block_n
        meta["NUM_STAGES"] = stages
        meta["num_warps"] = DEFAULT_CONFIG["num_warps"] or (4 if block_m <= 64 else 8)
        meta["num_stages"] = stages

    grid = (nq * q_sub, bsz * heads)
    try:
        _kernel(interpret, autotune)[grid](
            q, k, v, out, lse,
            kv_indices, kv_counts,
            dummy if q_block_starts is None else q_block_starts,
            dummy if kv_block_starts is None else kv_block_starts,
            dummy if kv_valid_len is None else kv_valid_len,
            dummy if order is None else order,
            q.stride(0), q.stride(1), q.stride(2),
            k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2),
            out.stride(0), out.stride(1), out.stride(2),
            lse.stride(0), lse.stride(1),
            *_strides(kv_indices, 4),
            *_strides(kv_counts, 3),
            *_strides(q_block_starts, 3),
            *_strides(kv_block_starts, 3),
            vl_stride,
            heads, nq, lq, lk, float(scale) * _LOG2E,
            **meta,
        )
    except Exception as err:
        if not meta["WARP_SPEC"]:
            raise
        # An experiment's switch: say which one failed instead of leaving a compiler pass's message alone.
        raise RuntimeError(
            f"DIT_SPARSE_TRITON_WS=1: Triton {triton.__version__} could not build the warp-specialised key loop "
            f"({type(err).__name__}: {str(err)[:200]}); unset DIT_SPARSE_TRITON_WS (Triton 3.6 and 3.9 fail on sm90)"
        ) from err
    return out, lse


# ------------------------------------------------------------------------------------------- custom op + backend
@torch.library.custom_op(OP_NAME, mutates_args=())
def triton_block_sparse_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_indices: torch.Tensor,
    kv_counts: torch.Tensor,
    q_block_starts: Optional[torch.Tensor],
    kv_block_starts: Optional[torch.Tensor],
    kv_valid_len: Optional[torch.Tensor],
    block_q: int,
    block_kv: int,
    scale: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Block-sparse attention forward on (B, H, L, D) tensors; returns ``(out, lse)`` with lse in natural log."""
    return _forward(q, k, v, kv_indices, kv_counts, q_block_starts, kv_block_starts, kv_valid_len, block_q,
                    block_kv, scale)


@triton_block_sparse_fwd.register_fake
def _triton_block_sparse_fwd_fake(
    q, k, v, kv_indices, kv_counts, q_block_starts, kv_block_starts, kv_valid_len, block_q, block_kv, scale
):
    b, h, lq, _ = q.shape
    return q.new_empty(b, lq, h, v.shape[-1]).transpose(1, 2), q.new_empty(b, h, lq, dtype=torch.float32)


@lru_cache(maxsize=None)
def _cuda_capability(index: Optional[int]) -> Tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def available(device: torch.device, dtype: torch.dtype, head_dim: int, kind: str) -> Optional[str]:
    """None when this engine can run the inputs, else the reason it cannot."""
    device = torch.device(device)
    if device.type == "cuda":
        if torch.version.hip is None and _cuda_capability(device.index) < (8, 0):
            return "the triton kernel needs an NVIDIA GPU of compute capability 8.0 or newer"
    elif device.type == "cpu":
        if not _interpreting():
            return "on CPU the triton kernel runs only under TRITON_INTERPRET=1 (a slow interpreter for tests)"
        if dtype == torch.bfloat16:
            return "the triton interpreter computes bfloat16 incorrectly; use float16 or float32 on CPU"
    else:
        return f"device type {device.type!r} is not supported by the triton kernel"
    if dtype not in _SUPPORTED_DTYPES:
        return f"dtype {dtype} is not supported by the triton kernel (use float16, bfloat16 or float32)"
    if not head_dim_supported(head_dim):
        return f"head_dim {head_dim} is not supported by the triton kernel (needs a multiple of 8 in [16, 256])"
    # Every layout kind ("fixed", "masked", "variable") is handled: the kernel reads all BlockLayout fields.
    return None


def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout, scale: float, return_lse: bool):
    if not head_dim_supported(v.shape[-1]):
        raise ValueError(
            f"value head_dim {v.shape[-1]} is not supported by the triton backend; use backend='reference'"
        )
    if layout.q_block_starts is not None and layout.q_block_starts.shape[-1] != layout.num_q_blocks + 1:
        raise ValueError(
            f"q_block_starts has {layout.q_block_starts.shape[-1]} entries but the layout has "
            f"{layout.num_q_blocks} query blocks (needs num_q_blocks + 1)"
        )
    if scale <= 0 or not math.isfinite(scale):
        raise ValueError(f"the triton backend needs a positive finite softmax scale, got {scale}")
    args = (q, k, v, layout.kv_indices, layout.kv_counts, layout.q_block_starts, layout.kv_block_starts,
            layout.kv_valid_len, layout.block_q, layout.block_kv, float(scale))
    # The custom op is what torch.compile traces; eager calls skip its dispatch (host time that shows at low density).
    if torch.compiler.is_compiling():
        out, lse = torch.ops.dit_sparse.triton_block_sparse_fwd(*args)
    else:
        out, lse = _forward(*args, order=_memo_order(layout, q.shape[0], q.shape[1]))
    return (out, lse) if return_lse else out


def _register():
    from . import register_backend

    register_backend("triton", available, run)


_register()

__all__ = ["OP_NAME", "available", "head_dim_supported", "run", "triton_block_sparse_fwd"]
