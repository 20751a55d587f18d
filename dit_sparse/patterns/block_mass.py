"""Estimated attention mass of every (query block, key block) pair, from each query block's mean query and the keys.

Used by the content-aware patterns (semantic, draft) to choose blocks. Measured on attention captured from trained
models (`dit_sparse.eval.oracle`), the estimate that pools *both* sides - a query block's mean against a key block's
mean (Sparse VideoGen 2's centroid softmax, DraftAttention's pooled map) - loses what a block's keys look like
individually: a mean key is shorter than its keys and lies between them, so blocks whose keys point in many directions
(high-frequency content, the tokens near a query in a local head) are under-estimated and the selection drops mass
that the oracle keeps. Here the mean query of a block meets every key exactly:

    mass[i, j] = sum over keys t in block j of softmax_t(mean_query_i . k_t * scale)

which costs one query row per block (``1 / block_size`` of dense attention's score FLOPs) and is exact for a block
whose queries are all equal. It is computed in chunks of (batch x head) rows so that memory stays bounded, as per-block
log-sum-exps (one max and one sum per block), never as an L x L matrix.

Blocks are given by their boundaries over the (permuted) sequence, ``starts`` [N, P + 1] (variable blocks, e.g. the
semantic pattern's cluster pieces or draft's edge tiles), or implicitly as fixed ``block_size`` blocks.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import torch

from ..layout import block_sizes, cdiv, pack_block_mask
from . import kmeans

try:  # optional fused top-p selection kernel (GPU); the torch path is always available
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - depends on the install
    triton = None

# Block means read through a permutation by one Triton pass on CUDA (`segment_means` with ``order``); a module switch
# so that the benchmark can time the gather + scatter-add path against it.
ORDERED_MEANS_KERNEL = True
# ... from this many rows (batch x heads x tokens) up. Semantic's packing (H200, photographic q/k) with the ordered
# means against the gather + scatter-add: 2.38 / 1.34 ms at Wan-1.3B 480p (12 x 32,760 = 0.39 M rows), 1.79 / 1.99 ms
# at Wan-1.3B 720p (0.91 M), 2.23 / 2.60 ms at Wan-14B 480p (1.31 M), 3.58 / 4.74 ms at HunyuanVideo 720p (2.85 M),
# 4.22 / 5.43 ms at Wan-14B 720p (3.02 M) (``2026-12-04_NVIDIA-H200_profile-semantic-packed-plan-{sample,means-
# sizes}.json``). Likely because the small packing is bound by launches, not bytes (its CUDA kernels take 0.5 of its
# 2.1 ms of host time at Wan-1.3B 480p under the profiler), and the ordered means add kernels; the threshold lies
# between the measured sizes, not at a measured crossover.
ORDERED_MEANS_MIN_ROWS = 600_000
# ... and for a (q, k) pair (semantic's joint plan: one pass for both sides' block sums and the clusters' sums) at any
# size: at Wan-1.3B 480p the pair's Triton pass took the plan's kernels to 0.99 ms against 1.08 ms with the gather +
# scatter-add, 0.95 against 1.11 ms behind one attention call, the same layout (``2026-12-04_NVIDIA-H200_probe-fused-
# means.json``, "fused_triton_sums" against "fused").
ORDERED_PAIR_MIN_ROWS = 0


def use_ordered_means(rows: int, is_cuda: bool, pair: bool = False) -> bool:
    """Whether `segment_means` / `block_sums` with ``engine="auto"`` read through the order by the Triton pass: on
    CUDA, with the switch on, from ``ORDERED_MEANS_MIN_ROWS`` rows up (``ORDERED_PAIR_MIN_ROWS`` for a pair)."""
    return is_cuda and ORDERED_MEANS_KERNEL and rows >= (ORDERED_PAIR_MIN_ROWS if pair else ORDERED_MEANS_MIN_ROWS)

# Score elements per chunk (rows of queries x keys, over the batch x head rows of one chunk): 2**26 floats = 256 MiB.
_CHUNK_ELEMENTS = 1 << 26


def block_sums(x, starts: Optional[torch.Tensor], block: int, order: Optional[torch.Tensor] = None,
               engine: str = "auto") -> torch.Tensor:
    """Sum of x [N, L, D] over each block, float32 [N, P, D] (empty blocks give zeros). ``x`` may be a pair (q, k) of
    [N, L, D] tensors, summed as the concatenation of their rows ([N, P, 2 D]): one pass gives both sides' block sums
    where queries and keys share their blocks (semantic's joint clusters). Arguments as `segment_means`."""
    if engine not in ("auto", "torch", "triton"):
        raise ValueError(f"engine={engine!r} is not known; allowed: 'auto', 'torch', 'triton'")
    parts = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    n, length = parts[0].shape[:2]
    if order is not None and starts is not None:
        auto = engine == "auto" and use_ordered_means(n * length, parts[0].is_cuda, pair=len(parts) == 2)
        fused = kmeans._triton_ok(parts) and (engine == "triton" or auto)
        if engine == "triton" and not fused:
            raise ValueError("engine='triton' needs triton, a CUDA tensor (or TRITON_INTERPRET=1) and a power-of-two "
                             f"channel count in [16, 256] per part, got {parts[0].shape[-1]} channels x {len(parts)} "
                             f"on {parts[0].device}; use engine='auto'")
        if fused:
            first = starts[:, :-1].expand(n, -1)
            sizes = (starts[:, 1:] - starts[:, :-1]).expand(n, -1)
            return kmeans.segment_sums(parts, order, first, sizes)
    if order is not None:
        parts = tuple(p.gather(1, order.long().unsqueeze(-1).expand(-1, -1, p.shape[-1])) for p in parts)
    x = parts[0].float() if len(parts) == 1 else torch.cat([p.float() for p in parts], -1)
    d = x.shape[-1]
    if starts is None:
        p = cdiv(length, block)
        pad = p * block - length
        return torch.nn.functional.pad(x, (0, 0, 0, pad)).view(n, p, block, d).sum(2)
    starts = starts.long().expand(n, -1)
    p = starts.shape[1] - 1
    # Sums by block id (scatter-add). A cumulative sum along the tokens would be a scan over the outer dimension of
    # [N, L, D], which measured 11.7 ms per call on an H200 at Wan-1.3B 480p (12 x 32,760 x 128): 80 % of the
    # semantic pattern's planning. Ids: the number of block ends at or before each token (empty blocks get none).
    pos = torch.arange(length, device=x.device).expand(n, -1)
    block_of = torch.searchsorted(starts[:, 1:].contiguous(), pos.contiguous(), right=True).clamp_(max=p - 1)
    sums = torch.zeros(n, p, d, dtype=torch.float32, device=x.device)
    return sums.scatter_add_(1, block_of.unsqueeze(-1).expand(-1, -1, d), x)


def segment_means(x: torch.Tensor, starts: Optional[torch.Tensor], block: int, order: Optional[torch.Tensor] = None,
                  engine: str = "auto") -> torch.Tensor:
    """Mean of x [N, L, D] over each block, float32 [N, P, D] (empty blocks give zeros).

    Args:
        x (`torch.Tensor` [N, L, D]): tokens in block order, or in token order when ``order`` is given.
        starts (`torch.Tensor` int [N or 1, P + 1], optional): block boundaries; `None` = fixed ``block`` blocks (the
            last one ragged).
        block (`int`): block size when ``starts`` is None.
        order (`torch.Tensor` int [N, L], optional): the blocks tile ``x`` gathered by ``order`` (a permutation, e.g.
            semantic's cluster order): block j holds ``x[order[starts[j]:starts[j + 1]]]``.
        engine (`str`, defaults to "auto"): with ``order`` and ``starts``, "triton" sums every block through the order
            in one program (`kmeans.segment_sums`: the permuted copy of x and the float32 atomics of a scatter-add are
            never made), "torch" gathers then scatter-adds; "auto" is triton on CUDA from ``ORDERED_MEANS_MIN_ROWS``
            rows up (a pair in `block_sums`: ``ORDERED_PAIR_MIN_ROWS``; `use_ordered_means`).
    """
    sums = block_sums(x, starts, block, order=order, engine=engine)
    n, length = x.shape[:2]
    if starts is None:
        return sums / block_sizes(length, block, x.device).view(1, -1, 1)
    sizes = (starts[:, 1:] - starts[:, :-1]).float().clamp(min=1).expand(n, -1)
    return sums / sizes.unsqueeze(-1)


def block_mass_estimate(
    q: torch.Tensor,
    k: torch.Tensor,
    scale: float,
    block: int,
    q_starts: Optional[torch.Tensor] = None,
    kv_starts: Optional[torch.Tensor] = None,
    chunk_elements: int = _CHUNK_ELEMENTS,
    kv_block: Optional[int] = None,
) -> torch.Tensor:
    """Estimated share of each query block's attention on each key block, float32 [N, Pq, Pk] (rows sum to 1).

    Args:
        q, k (`torch.Tensor` [N, L, D]): queries and keys, already in block order (permuted if the layout permutes).
        scale (`float`): softmax scale.
        block (`int`): block size of the sides whose ``*_starts`` is None.
        q_starts, kv_starts (`torch.Tensor` int [N or 1, P + 1], optional): variable block boundaries.
        chunk_elements (`int`): bound on the score elements held at once.
        kv_block (`int`, optional): key block size when ``kv_starts`` is None and keys are blocked differently from
            queries; `None` = ``block``.

    Returns:
        `torch.Tensor` [N, Pq, Pk]; rows of empty query blocks are meaningless (callers mask them), empty key blocks
        get 0.
    """
    n, lk, d = k.shape
    qm = segment_means(q, q_starts, block)  # [N, Pq, D] float32
    pq = qm.shape[1]
    kb = block if kv_block is None else kv_block
    if kv_starts is None:
        pk = cdiv(lk, kb)
        pad = pk * kb - lk
    else:
        ks = kv_starts.long().expand(n, -1)
        pk = ks.shape[1] - 1
    # Half precision on the GPU (tensor cores; the scores of a mean query are small), float32 on the CPU.
    dot_dtype = kmeans._compute_dtype(k)
    kt = k.to(dot_dtype).transpose(1, 2)
    out = torch.empty(n, pq, pk, dtype=torch.float32, device=k.device)
    rows = max(1, chunk_elements // max(1, pq * lk))
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        s = torch.bmm(qm[r0:r1].to(dot_dtype), kt[r0:r1]).float().mul_(scale)  # [c, Pq, Lk]
        s = s - s.amax(-1, keepdim=True)
        e = s.exp_()
        if kv_starts is None:
            if pad:
                e = torch.nn.functional.pad(e, (0, pad))
            sums = e.view(r1 - r0, pq, pk, kb).sum(-1)
        else:
            cums = torch.nn.functional.pad(e.cumsum(-1), (1, 0))  # [c, Pq, Lk + 1]
            idx = ks[r0:r1, None, :].expand(-1, pq, -1)
            sums = (cums.gather(2, idx[..., 1:]) - cums.gather(2, idx[..., :-1])).clamp_(min=0)
        out[r0:r1] = sums / sums.sum(-1, keepdim=True).clamp(min=1e-30)
    return out


def pooled_block_mass(
    q: torch.Tensor,
    k: torch.Tensor,
    scale: float,
    block: int,
    q_starts: Optional[torch.Tensor] = None,
    kv_starts: Optional[torch.Tensor] = None,
    kv_block: Optional[int] = None,
    q_order: Optional[torch.Tensor] = None,
    kv_order: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The cheap estimate: each query block's mean query against each key block's mean key, a key block of s tokens
    weighted by s (``softmax(mean_q . mean_k * scale + log s)``); [N, Pq, Pk] float32, rows sum to 1.

    Costs ``Pq x Pk x D`` (DraftAttention's pooled map) instead of ``Pq x L x D``; less faithful where a key block's
    keys point in many directions (see the module docstring). ``q_order`` / ``kv_order`` (int [N, L], optional):
    q / k are in token order and their blocks tile them gathered by these orders (`segment_means`).
    """
    n, lk, _ = k.shape
    kb = block if kv_block is None else kv_block  # key blocks may be finer than query blocks
    qm = segment_means(q, q_starts, block, order=q_order)
    km = segment_means(k, kv_starts, kb, order=kv_order)
    if kv_starts is None:
        sizes = block_sizes(lk, kb, k.device).unsqueeze(0)
    else:
        sizes = (kv_starts[..., 1:] - kv_starts[..., :-1]).float().expand(n, -1)
    return pooled_mass(qm, km, sizes, scale, kmeans._compute_dtype(k))


def pooled_mass(q_means: torch.Tensor, k_means: torch.Tensor, k_sizes: torch.Tensor, scale: float,
                dot_dtype: torch.dtype) -> torch.Tensor:
    """`pooled_block_mass` from the block means (float32 [N, Pq, D], [N, Pk, D]) and the key blocks' sizes [N or 1,
    Pk]: ``softmax(mean_q . mean_k * scale + log s)``, the product in ``dot_dtype``, float32 [N, Pq, Pk]."""
    # Half precision on the GPU as in `block_mass_estimate` (tensor cores): the float32 product of some 1,400 x 1,400
    # piece means per head ran on CUDA cores, 0.42 ms of a 6.6 ms plan at HunyuanVideo 720p (session 22's profiled
    # step); the bfloat16 means leave the selection's density where it was (``bench/probe_pooled_half.py``).
    logits = torch.bmm(q_means.to(dot_dtype), k_means.to(dot_dtype).transpose(1, 2)).float() * scale
    logits = logits + k_sizes.float().log().unsqueeze(1)  # log 0 = -inf: empty blocks
    return torch.softmax(logits, dim=-1)


def select_top_p(mass: torch.Tensor, sizes: torch.Tensor, top_p: float, min_keep: int, valid: torch.Tensor,
                 diagonal: bool = False, kv_per_q: int = 1):
    """Per row, the key blocks of most estimated mass per key token, until their estimated mass reaches ``top_p``
    (the crossing block kept), and at least the ``min_keep`` best; empty key blocks never.

    Ranking by mass per token buys the most attention per unit of compute (blocks of a cluster's tail are short);
    with equal blocks it is ranking by mass.

    Args:
        mass (`torch.Tensor` [N, Pq, Pk]): estimated mass (`block_mass_estimate`).
        sizes (`torch.Tensor` [N or 1, Pk]): tokens per key block.
        top_p (`float`): mass to cover per row, in (0, 1]; 1.0 keeps every non-empty block.
        min_keep (`int`): blocks kept at least per row.
        valid (`torch.Tensor` bool [N or 1, Pk]): non-empty key blocks.
        diagonal (`bool`): query and key blocks are the same tokens (one permutation for both): key block i is ranked
            first in row i, so every query keeps its own tokens' keys (with q close to k, the most attended ones).
        kv_per_q (`int`): key blocks per query block when both tile one permuted sequence and key blocks are finer
            (query block i holds key blocks ``[i * kv_per_q, (i + 1) * kv_per_q)``: its diagonal).

    Returns:
        `torch.Tensor` bool [N, Pq, Pk].
    """
    valid = valid.unsqueeze(1)
    if top_p >= 1.0:
        return valid.expand_as(mass).contiguous()
    score = torch.where(valid, mass / sizes.float().clamp(min=1).unsqueeze(1), torch.full_like(mass, -1.0))
    own = None
    if diagonal:
        pq, pk = mass.shape[-2:]
        own = (torch.arange(pk, device=mass.device) // kv_per_q).unsqueeze(0) == torch.arange(
            pq, device=mass.device).unsqueeze(1)
        # An empty own block stays last (it is never kept and must not take a min_keep place).
        score = score.masked_fill(own & valid, float("inf"))
    order = score.argsort(-1, descending=True)
    sorted_mass = mass.gather(-1, order)
    before = sorted_mass.cumsum(-1) - sorted_mass
    rank = torch.arange(mass.shape[-1], device=mass.device)
    keep_sorted = (before < top_p) | (rank < max(1, min_keep))
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    if own is not None:
        # Every own block, not only the first: with kv_per_q > 1 the first can hold top_p alone (the kernel keeps
        # all of them too, as ties at +inf).
        keep = keep | own
    return keep & valid


# Longest row (key blocks) the fused kernel holds in registers; longer rows take the torch path. HunyuanVideo 720p's
# semantic pieces are ~2,350 per row.
TOP_P_KERNEL_MAX_BLOCKS = 8192
# The fused kernel on CUDA (a module switch so that the benchmark can time the sort against it).
TOP_P_KERNEL = True

if triton is not None:

    @triton.jit
    def _top_p_lists_kernel(
        MASS, SIZES, VALID, ROW_VALID, IDX, CNT, PQ, PK, s_sizes, s_valid, top_p, min_keep,
        KV_PER_Q: tl.constexpr, DIAGONAL: tl.constexpr, HAS_ROW_VALID: tl.constexpr, BLOCK_P: tl.constexpr,
        MASK_OUT: tl.constexpr,
    ):  # fmt: skip
        # One program = one query block's row. The sort of `select_top_p` becomes two searches for a threshold on
        # the score's bits (a non-negative float32's bit pattern orders like its value): the largest t whose blocks
        # (score >= t) hold at least top_p of the mass is the crossing block's score, and the largest t that keeps
        # at least min_keep blocks is the min_keep-th score; the row keeps every valid block at or above the lower.
        # Each search halves an integer range 31 times over the row held in registers. Then the kept blocks are
        # packed left in increasing order (pack_block_mask's layout) by a running count.
        row = tl.program_id(0).to(tl.int64)
        n = row // PQ
        i = row % PQ
        offs = tl.arange(0, BLOCK_P)
        inside = offs < PK
        mass = tl.load(MASS + row * PK + offs, mask=inside, other=0.0)
        size = tl.load(SIZES + n * s_sizes + offs, mask=inside, other=1.0)
        valid = (tl.load(VALID + n * s_valid + offs, mask=inside, other=0) != 0) & inside
        if HAS_ROW_VALID:
            valid = valid & (tl.load(ROW_VALID + row) != 0)
        score = mass / tl.maximum(size, 1.0)
        if DIAGONAL:
            score = tl.where(offs // KV_PER_Q == i, float("inf"), score)
        bits = tl.where(valid, score.to(tl.int32, bitcast=True), -1)
        mass = tl.where(valid, mass, 0.0)  # invalid blocks (bits -1) never reach a threshold >= 0
        lo_p = tl.full((), 0, tl.int32)
        hi_p = tl.full((), 0x7F800001, tl.int32)  # one past +inf's bits: no block reaches it
        lo_c = tl.full((), 0, tl.int32)
        hi_c = tl.full((), 0x7F800001, tl.int32)
        for _ in range(31):
            mid_p = lo_p + (hi_p - lo_p) // 2
            enough = tl.sum(tl.where(bits >= mid_p, mass, 0.0), axis=0) >= top_p
            lo_p = tl.where(enough, mid_p, lo_p)
            hi_p = tl.where(enough, hi_p, mid_p)
            mid_c = lo_c + (hi_c - lo_c) // 2
            many = tl.sum((bits >= mid_c).to(tl.int32), axis=0) >= min_keep
            lo_c = tl.where(many, mid_c, lo_c)
            hi_c = tl.where(many, hi_c, mid_c)
        keep = valid & (bits >= tl.minimum(lo_p, lo_c))
        if MASK_OUT:  # the selection as a 0 / 1 row of IDX (uint8 [N, Pq, Pk]); CNT is not written
            tl.store(IDX + row * PK + offs, keep.to(tl.uint8), mask=inside)
            return
        keep_i = keep.to(tl.int32)
        count = tl.sum(keep_i, axis=0)
        pos = tl.cumsum(keep_i, axis=0) - 1
        last = tl.max(tl.where(keep, offs, 0), axis=0)
        tl.store(IDX + row * PK + pos, offs, mask=keep_i != 0)
        tl.store(IDX + row * PK + offs, tl.zeros_like(offs) + last, mask=inside & (offs >= count))
        tl.store(CNT + row, count)


def _top_p_kernel_ok(mass: torch.Tensor) -> bool:
    """The fused kernel can run: triton, a CUDA tensor (or the interpreter) and a row that fits in registers."""
    return (
        triton is not None
        and (mass.is_cuda or os.environ.get("TRITON_INTERPRET", "0") == "1")
        and mass.shape[-1] <= TOP_P_KERNEL_MAX_BLOCKS
    )


def _top_p_engine(mass: torch.Tensor, top_p: float, engine: str) -> bool:
    """Whether the fused top-p kernel runs (checks ``engine``)."""
    if engine not in ("auto", "torch", "triton"):
        raise ValueError(f"engine={engine!r} is not known; allowed: 'auto', 'torch', 'triton'")
    if engine == "triton" and not _top_p_kernel_ok(mass):
        raise ValueError(
            f"engine='triton' needs triton, a CUDA tensor (or TRITON_INTERPRET=1) and at most "
            f"{TOP_P_KERNEL_MAX_BLOCKS} key blocks per row, got {mass.shape[-1]} on {mass.device}; use engine='auto'"
        )
    # "auto": the kernel on CUDA only (under the interpreter on the CPU it is far slower than the sort).
    use_kernel = engine == "triton" or (engine == "auto" and TOP_P_KERNEL and mass.is_cuda and _top_p_kernel_ok(mass))
    return use_kernel and top_p < 1.0


def _top_p_kernel(mass, sizes, top_p, min_keep, valid, diagonal, kv_per_q, row_valid, mask_out: bool):
    """Runs `_top_p_lists_kernel`: (kv_indices, kv_counts), or the uint8 [N, Pq, Pk] selection with ``mask_out``."""
    n, pq, pk = mass.shape
    mass = mass.float().contiguous()
    # [N or 1, Pk]: one row shared by all N is read with stride 0.
    sizes = sizes.float().reshape(-1, pk).contiguous()
    valid = valid.reshape(-1, pk).to(torch.int8).contiguous()
    idx = torch.empty(n, pq, pk, dtype=torch.uint8 if mask_out else torch.int32, device=mass.device)
    cnt = torch.empty(n, pq, dtype=torch.int32, device=mass.device)
    rv = row_valid.to(torch.int8).contiguous() if row_valid is not None else cnt
    block_p = max(16, triton.next_power_of_2(pk))
    _top_p_lists_kernel[(n * pq,)](
        mass, sizes, valid, rv, idx, cnt, pq, pk, pk if sizes.shape[0] > 1 else 0, pk if valid.shape[0] > 1 else 0,
        float(top_p), max(1, min_keep),
        KV_PER_Q=kv_per_q, DIAGONAL=diagonal, HAS_ROW_VALID=row_valid is not None, BLOCK_P=block_p,
        MASK_OUT=mask_out, num_warps=4 if block_p <= 2048 else 8,
    )  # fmt: skip
    return idx if mask_out else (idx, cnt)


def top_p_block_lists(mass: torch.Tensor, sizes: torch.Tensor, top_p: float, min_keep: int, valid: torch.Tensor,
                      diagonal: bool = False, kv_per_q: int = 1, row_valid: Optional[torch.Tensor] = None,
                      engine: str = "auto") -> Tuple[torch.Tensor, torch.Tensor]:
    """`select_top_p`'s selection as packed block lists: kv_indices int32 [N, Pq, Pk] and kv_counts int32 [N, Pq]
    (`dit_sparse.layout.pack_block_mask`'s layout). ``row_valid`` (bool [N, Pq], optional): rows that compute
    nothing where False (semantic's padding pieces).

    On CUDA one fused kernel per row (``engine="triton"``; the interpreter runs it on the CPU) replaces the sort, the
    cumulative sums and the scatters of the torch path: at Wan-14B 720p those took ~5 of the 11 ms of semantic's
    block plan (1,673 x 1,673 piece pairs per head, ``2026-12-03_NVIDIA-H200_profile-semantic-plan.json``). The two
    agree except where scores tie at the threshold: the kernel keeps every tied block, the sort an arbitrary subset.
    """
    if _top_p_engine(mass, top_p, engine):
        return _top_p_kernel(mass, sizes, top_p, min_keep, valid, diagonal, kv_per_q, row_valid, False)
    return pack_block_mask(top_p_block_mask(mass, sizes, top_p, min_keep, valid, diagonal, kv_per_q, row_valid,
                                            engine="torch"))


def top_p_block_mask(mass: torch.Tensor, sizes: torch.Tensor, top_p: float, min_keep: int, valid: torch.Tensor,
                     diagonal: bool = False, kv_per_q: int = 1, row_valid: Optional[torch.Tensor] = None,
                     engine: str = "auto") -> torch.Tensor:
    """`top_p_block_lists`' selection as a mask, bool [N, Pq, Pk] (for callers that combine it further, as semantic's
    packed pieces: on CUDA the kernel writes the mask, no lists to scatter back)."""
    if _top_p_engine(mass, top_p, engine):
        return _top_p_kernel(mass, sizes, top_p, min_keep, valid, diagonal, kv_per_q, row_valid, True).bool()
    select = select_top_p(mass, sizes, top_p, min_keep, valid, diagonal=diagonal, kv_per_q=kv_per_q)
    if row_valid is not None:
        select = select & row_valid.unsqueeze(-1)
    return select


__all__ = ["block_mass_estimate", "block_sums", "pooled_block_mass", "pooled_mass", "segment_means", "select_top_p",
           "top_p_block_lists", "top_p_block_mask"]
