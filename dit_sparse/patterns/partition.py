"""Balanced partition of tokens into groups of exactly ``block`` tokens, by recursive principal-axis bisection.

Why: a k-means cluster is rarely a multiple of the kernel's tile. Sparse VideoGen 2's ~65-token clusters cut into
pieces of at most 64 tokens leave the tiles of our Triton kernel about half full in each of the query and the key
dimension (1,004 pieces for 32,760 tokens at Wan-1.3B 480p, ``profile-semantic.json``: 14.5 ms of attention at
density 0.28 where a fixed layout takes 3.4 ms), and fixed blocks over a k-means order mix clusters and choose badly
(gain 0.20 against the oracle at density 0.25 on small, ``oracle-small-fixed-blocks.json``). A partition whose groups
*are* blocks has neither problem: every block is one group of similar tokens, and FlashAttention-4 runs the layout.

How (per row of [N, L, F], no host synchronisation, a fixed amount of work):

1. Features are projected on their top ``dims`` principal axes (one [F, F] covariance per row, subspace iteration),
   so the bisection below works on [N, L, dims] instead of [N, L, F].
2. A k-d-tree-like bisection: a segment of m blocks (contiguous in the current order) is sorted along its own
   principal axis (power iterations on the segment's covariance) and cut after floor(m / 2) blocks. The cut points
   depend only on (L, block), so they are computed once on the host, with the padded [segments, longest] grid that
   turns every per-segment reduction into a batched matmul and every sort into a row-wise one; after
   ceil(log2(blocks)) levels every segment is one block of ``block`` tokens (the last block holds the remainder).
   With ``sub_block``, the bisection goes on inside every block down to groups of ``sub_block`` tokens.

The result is a permutation; tokens ``[j * block, (j + 1) * block)`` of ``x.gather(perm)`` are group j.
"""

from __future__ import annotations

from functools import lru_cache
from typing import List, Optional, Tuple

import torch

from ..layout import cdiv
from .base import compiled_planning

# Power iterations per level on each segment's [dims, dims] covariance (cheap): the split direction only has to be one
# of large spread, not the exact axis.
POWER_ITERS = 8
# Principal axes kept for the bisection: k-means on [q, k] (256 dims at head_dim 128) is dominated by a few axes on
# trained models, and [N, L, 32] float32 keeps every level's temporaries small (HunyuanVideo 720p: 24 heads x 119k).
PCA_DIMS = 32
# Subspace iterations for those axes (each multiplies by the covariance once).
SUBSPACE_ITERS = 4


@lru_cache(maxsize=64)
def _levels(length: int, block: int, sub_block: Optional[int] = None) -> Tuple[Tuple[int, ...], ...]:
    """Per level, the start positions of its segments (the first level: one segment, the whole sequence).

    A segment longer than ``block`` is cut after floor(m / 2) of its m blocks; with ``sub_block`` (a divisor of
    ``block``), a segment of one block is then cut the same way in units of ``sub_block``, so that every block is a
    subtree of whole sub-blocks (the finest groups nest in the coarse ones)."""
    segments: List[Tuple[int, int]] = [(0, length)]  # token ranges [start, end)
    units = (block,) if sub_block is None or sub_block >= block else (block, sub_block)
    levels = []

    def cut(s: int, e: int) -> Optional[int]:
        for unit in units:
            if e - s > unit:
                return s + (cdiv(e - s, unit) // 2) * unit
        return None

    while any(cut(s, e) is not None for s, e in segments):
        levels.append(tuple(s for s, _ in segments))
        nxt = []
        for s, e in segments:
            mid = cut(s, e)
            nxt += [(s, e)] if mid is None else [(s, mid), (mid, e)]
        segments = nxt
    return tuple(levels)


@lru_cache(maxsize=64)
def _padded_levels(length: int, block: int, device: torch.device, sub_block: Optional[int] = None):
    """Per level, the segments as rows of a padded [S, M] grid (M = the longest segment), so that every per-segment
    reduction is a batched matmul or a row-wise sort instead of an atomic scatter over the sequence:

    - ``gather`` int64 [S * M]: the position (in the current order) each grid cell reads; padding reads position 0;
    - ``valid`` bool [S, M] and ``sizes`` float32 [S];
    - ``unpad`` int64 [L]: the grid cells of the L real positions, segment after segment (padding sorts last).
    """
    out = []
    for starts in _levels(length, block, sub_block):
        ends = starts[1:] + (length,)
        width = max(e - s for s, e in zip(starts, ends))
        col = torch.arange(width)
        start, size = torch.tensor(starts), torch.tensor(ends) - torch.tensor(starts)
        valid = col[None, :] < size[:, None]
        gather = torch.where(valid, start[:, None] + col[None, :], 0).reshape(-1)
        unpad = torch.nonzero(valid.reshape(-1)).squeeze(1)
        out.append(tuple(t.to(device) for t in (gather, valid, size.float(), unpad)))
    return tuple(out)


def principal_features(x: torch.Tensor, basis: torch.Tensor, iters: int = SUBSPACE_ITERS) -> torch.Tensor:
    """x [N, L, F] centred and projected on (an orthonormal basis of) its top principal axes per row, as many as
    ``basis`` [F, dims] (the subspace iteration's start) has columns: float32 [N, L, dims].

    Subspace iteration on the [F, F] covariance, orthonormalised by Cholesky QR, instead of ``torch.linalg.eigh``:
    batched matmuls and one small Cholesky per iteration on the GPU (``eigh`` of 12 covariances of 256 x 256 made
    the whole plan take 73 ms at Wan-1.3B 480p on an H200,
    ``2026-12-02_NVIDIA-H200_profile-semantic-balanced-eigh.json``).
    Any orthonormal basis of the subspace gives the bisection the same geometry."""
    xf = x.float()
    xf = xf - xf.mean(dim=1, keepdim=True)
    f, dims = basis.shape
    if dims >= f:
        return xf
    cov = xf.transpose(1, 2) @ xf  # [N, F, F]
    cov = cov / cov.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1e-30)[:, None, None]  # trace 1: no overflow
    basis = basis.expand(xf.shape[0], f, dims)
    eye = torch.eye(dims, device=xf.device)
    for _ in range(iters):
        basis = cov @ basis
        gram = basis.transpose(1, 2) @ basis
        # A relative jitter keeps the Cholesky defined when the data has fewer than ``dims`` directions.
        jitter = 1e-6 * gram.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-30)[:, None, None] * eye
        # cholesky_ex: no error check, whose read of the status to the host would stall the plan on the GPU (the
        # jitter keeps the matrix positive definite).
        chol = torch.linalg.cholesky_ex(gram + jitter).L
        basis = torch.linalg.solve_triangular(chol, basis.transpose(1, 2), upper=False).transpose(1, 2)
    return xf @ basis


def balanced_partition(
    x: torch.Tensor, block: int, dims: Optional[int] = None, sub_block: Optional[int] = None
) -> torch.Tensor:
    """Permutation int64 [N, L] grouping the L points of each row of ``x`` [N, L, F] into blocks of ``block`` tokens
    of similar points (see the module docstring); with ``sub_block`` (a divisor of ``block``) every block is in turn
    split into groups of ``sub_block`` similar tokens, so ``[j * sub_block, (j + 1) * sub_block)`` is a finer group
    inside block ``j * sub_block // block``."""
    n, length, f = x.shape
    if block < 1:
        raise ValueError(f"balanced_partition needs block >= 1, got {block}")
    if sub_block is not None and (sub_block < 1 or block % sub_block):
        raise ValueError(f"balanced_partition needs sub_block to divide block={block}, got {sub_block}")
    basis, axis = _starts(f, min(PCA_DIMS if dims is None else dims, f), x.device)
    return _partition(x, basis, axis, _padded_levels(length, block, x.device, sub_block))


# Fixed Gaussian numbers for the starts, drawn once at import: Dynamo does not take a ``torch.Generator`` inside a
# caller's ``torch.compile(fullgraph=True)`` (it traces through `_starts`' cache), a module constant it does.
_GAUSSIAN = torch.randn(1 << 15, generator=torch.Generator().manual_seed(0))


@lru_cache(maxsize=16)
def _starts(features: int, dims: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fixed starts for the subspace and power iterations (the same for every row and segment): deterministic, and
    almost surely not orthogonal to what they converge to; consecutive entries of `_GAUSSIAN` (wrapping around past
    its end, for features * dims beyond 32k). Cached per device: a host-to-device copy in every plan would wait for
    the stream."""
    idx = torch.arange(features * dims + dims) % _GAUSSIAN.numel()
    v = _GAUSSIAN[idx].to(device)
    return v[: features * dims].view(features, dims), v[features * dims:]


@compiled_planning
def _partition(x: torch.Tensor, basis: torch.Tensor, axis0: torch.Tensor, levels):
    """`principal_features` and the bisection levels (tensors only, so that it compiles as one graph)."""
    n, length, _ = x.shape
    z = principal_features(x, basis)
    f = z.shape[-1]
    perm = torch.arange(length, device=x.device).expand(n, length)
    for gather, valid, sizes, unpad in levels:
        segments, width = valid.shape
        pos = perm[:, gather]  # [N, S * M] token ids on the padded grid
        mask = valid.unsqueeze(-1).to(z.dtype)
        zs = z.gather(1, pos.unsqueeze(-1).expand(-1, -1, f)).view(n, segments, width, f) * mask
        zc = (zs - (zs.sum(2) / sizes[:, None]).unsqueeze(2)) * mask
        cov = zc.transpose(-1, -2) @ zc  # [N, S, F, F]: the power iterations are then tiny
        axis = axis0.expand(n, segments, f).unsqueeze(-1)
        for _ in range(POWER_ITERS):
            axis = cov @ axis
            axis = axis / axis.norm(dim=-2, keepdim=True).clamp_min(1e-30)
        along = (zc @ axis).squeeze(-1).masked_fill(~valid, float("inf"))  # padding sorts last
        order = along.argsort(dim=-1)
        perm = pos.view(n, segments, width).gather(-1, order).view(n, -1)[:, unpad]
    return perm


__all__ = ["balanced_partition", "principal_features"]
