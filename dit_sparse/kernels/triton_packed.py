"""Variable-block attention with each query block's kept key pieces packed into full key tiles (Triton).

Why: the semantic pattern's blocks are cluster pieces of at most 64 tokens (up to 1,004 query pieces per head for
Wan 480p's 32,760 tokens); our block kernel (`triton_block_sparse`) spends one key tile per listed piece, so much of
every tile is masked: 14.5 ms per call against 3.45 ms for fixed blocks at about the same density on FA4
(``2026-12-02_NVIDIA-H200_profile-semantic.json``, issue #13). Here a query block walks the
concatenation of its kept key pieces in chunks of ``BLOCK_N`` *tokens*: every chunk is full (but the last), and its
rows are gathered from as many pieces as it spans. Per chunk, each lane finds its piece from ``cum`` (the prefix sums
of the row's listed piece sizes) with one comparison against a window of the next ``BLOCK_N`` boundaries (a piece
holds at least one token, so a chunk spans at most ``BLOCK_N`` pieces); the window's start is carried from chunk to
chunk.

Opt-in (``DIT_SPARSE_TRITON_PACKED=1``, through the ``triton`` backend) until measured faster on the GPU: it replaces
contiguous tile loads by row gathers and adds index arithmetic per chunk. Handles variable key blocks without text
padding (``kv_valid_len``), query blocks of at most 128 tokens and head_dim up to 128; anything else stays on the
block kernel. Runs under ``TRITON_INTERPRET=1`` (fp16/fp32) for the tests.
"""

from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl

from ..config import env_flag
from ..layout import BlockLayout
from .triton_block_sparse import _LOG2E, _MIN_TILE, _interpreting, _next_pow2, _strides

PACKED_ENV = "DIT_SPARSE_TRITON_PACKED"


def _packed_fwd_py(
    Q, K, V, Out, Lse, KvIdx, KvCnt, Cum, QStarts, KvStarts,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_om, stride_lb, stride_lh,
    stride_ib, stride_ih, stride_im, stride_ik, stride_cb, stride_ch, stride_cm,
    stride_ub, stride_uh, stride_um, stride_uk,
    stride_qsb, stride_qsh, stride_qsk, stride_ksb, stride_ksh, stride_ksk,
    H, LQ, qk_scale,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, D_TILE: tl.constexpr, DV_TILE: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_M: tl.constexpr, VAR_Q: tl.constexpr, BLOCK_N: tl.constexpr,
    IEEE: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    qblk = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    if VAR_Q:
        qs_ptr = QStarts + b * stride_qsb + h * stride_qsh
        m_start = tl.load(qs_ptr + qblk * stride_qsk)
        m_end = tl.minimum(tl.load(qs_ptr + (qblk + 1) * stride_qsk), LQ)
    else:
        m_start = qblk * BLOCK_Q
        m_end = tl.minimum(m_start + BLOCK_Q, LQ)
    offs_m = m_start + tl.arange(0, BLOCK_M)
    m_ok = offs_m < m_end
    offs_d = tl.arange(0, D_TILE)
    offs_dv = tl.arange(0, DV_TILE)
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DIM_V
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :],
                mask=m_ok[:, None] & d_ok[None, :], other=0.0)

    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    idx_ptr = KvIdx + b * stride_ib + h * stride_ih + qblk * stride_im
    cum_ptr = Cum + b * stride_ub + h * stride_uh + qblk * stride_um
    ks_ptr = KvStarts + b * stride_ksb + h * stride_ksh
    count = tl.load(KvCnt + b * stride_cb + h * stride_ch + qblk * stride_cm)
    total = tl.load(cum_ptr + count * stride_uk)  # kept key tokens of this query block

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, DV_TILE], dtype=tl.float32)
    offs_n = tl.arange(0, BLOCK_N)
    piece = count * 0  # the piece holding the chunk's first position (carried from chunk to chunk)
    for c in tl.range(0, tl.cdiv(total, BLOCK_N), num_stages=NUM_STAGES):
        p = c * BLOCK_N + offs_n
        # The next BLOCK_N boundaries after `piece`; past the row's count they never compare true.
        w = piece + 1 + offs_n
        bounds = tl.load(cum_ptr + w * stride_uk, mask=w <= count, other=2147483647)
        r = piece + tl.sum((bounds[None, :] <= p[:, None]).to(tl.int32), axis=1)
        n_ok = p < total
        r = tl.where(n_ok, r, piece)
        kb = tl.load(idx_ptr + r * stride_ik)
        tok = tl.load(ks_ptr + kb * stride_ksk) + (p - tl.load(cum_ptr + r * stride_uk))
        k = tl.load(k_base + tok[:, None] * stride_kn + offs_d[None, :], mask=n_ok[:, None] & d_ok[None, :],
                    other=0.0)
        if IEEE:
            qk = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            qk = tl.dot(q, tl.trans(k))
        qk = tl.where(n_ok[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.math.exp2(m_i - m_ref)
        prob = tl.math.exp2(qk * qk_scale - m_ref[:, None])
        l_i = l_i * alpha + tl.sum(prob, 1)
        acc = acc * alpha[:, None]
        v = tl.load(v_base + tok[:, None] * stride_vn + offs_dv[None, :], mask=n_ok[:, None] & dv_ok[None, :],
                    other=0.0)
        if IEEE:
            acc = tl.dot(prob.to(v.dtype), v, acc, input_precision="ieee")
        else:
            acc = tl.dot(prob.to(v.dtype), v, acc)
        m_i = m_new
        piece = piece + tl.sum((bounds <= c * BLOCK_N + BLOCK_N).to(tl.int32), axis=0)

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    o_ptrs = Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_dv[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=m_ok[:, None] & dv_ok[None, :])
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)
    tl.store(Lse + b * stride_lb + h * stride_lh + offs_m, lse, mask=m_ok)


_KERNELS = {}


def _kernel(interpret: bool):
    # Built lazily, as in `triton_block_sparse`: TRITON_INTERPRET set after import still takes effect.
    if interpret not in _KERNELS:
        _KERNELS[interpret] = triton.jit(_packed_fwd_py)
    return _KERNELS[interpret]


def enabled() -> bool:
    return env_flag(PACKED_ENV, False)


def supports(q: torch.Tensor, v: torch.Tensor, layout: BlockLayout) -> bool:
    """Whether the packed kernel runs this call (else the block kernel does)."""
    return (layout.kv_block_starts is not None and layout.kv_valid_len is None and layout.block_q <= 128
            and q.shape[-1] <= 128 and v.shape[-1] <= 128 and layout.num_q_blocks > 0)


def piece_offsets(layout: BlockLayout) -> torch.Tensor:
    """``cum`` int32 [B, H, Nq, Kmax + 1]: key tokens listed before each entry of every row (0 first; entries past
    the count repeat the row's total)."""
    starts = layout.kv_block_starts.long()
    sizes = starts[..., 1:] - starts[..., :-1]  # [b or 1, h or 1, Nk]
    idx = layout.kv_indices.long()
    b, h = idx.shape[:2]
    listed = sizes.expand(b, h, -1).gather(2, idx.flatten(2)).view_as(idx)
    kept = torch.arange(idx.shape[-1], device=idx.device) < layout.kv_counts.unsqueeze(-1)
    cum = torch.zeros(*idx.shape[:-1], idx.shape[-1] + 1, dtype=torch.int64, device=idx.device)
    cum[..., 1:] = (listed * kept).cumsum(-1)
    return cum.to(torch.int32)


def packed_forward(q, k, v, layout: BlockLayout, scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Attention over exactly the listed key pieces of a variable-block layout; ``(out, lse)`` (natural log)."""
    bsz, heads, lq, d = q.shape
    dv = v.shape[-1]
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    out = torch.empty(bsz, heads, lq, dv, device=q.device, dtype=q.dtype)
    lse = torch.empty(bsz, heads, lq, device=q.device, dtype=torch.float32)
    nq = layout.num_q_blocks
    if out.numel() == 0:
        return out, lse

    def i32(t):
        return None if t is None else t.to(device=q.device, dtype=torch.int32)

    kv_indices, kv_counts = i32(layout.kv_indices), i32(layout.kv_counts)
    q_starts, kv_starts = i32(layout.q_block_starts), i32(layout.kv_block_starts)
    cum = piece_offsets(layout).to(q.device)
    interpret = _interpreting()
    block_m = max(_MIN_TILE, _next_pow2(layout.block_q))
    d_tile, dv_tile = max(_MIN_TILE, _next_pow2(d)), max(_MIN_TILE, _next_pow2(dv))
    block_n = 64
    dummy = kv_counts

    _kernel(interpret)[(nq, bsz * heads)](
        q, k, v, out, lse, kv_indices, kv_counts, cum, dummy if q_starts is None else q_starts, kv_starts,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        lse.stride(0), lse.stride(1),
        *_strides(kv_indices, 4), *_strides(kv_counts, 3), *_strides(cum, 4),
        *_strides(q_starts, 3), *_strides(kv_starts, 3),
        heads, lq, float(scale) * _LOG2E,
        HEAD_DIM=d, HEAD_DIM_V=dv, D_TILE=d_tile, DV_TILE=dv_tile, BLOCK_Q=layout.block_q, BLOCK_M=block_m,
        VAR_Q=q_starts is not None, BLOCK_N=block_n, IEEE=q.dtype == torch.float32,
        NUM_STAGES=1 if interpret else 2, num_warps=4 if block_m <= 64 else 8,
    )
    return out, lse


__all__ = ["PACKED_ENV", "enabled", "packed_forward", "piece_offsets", "supports"]
