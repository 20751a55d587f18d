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
   principal axis (a few power iterations on the segment's centred points) and cut after floor(m / 2) blocks. The cut
   points depend only on (L, block), so they are computed once on the host; after ceil(log2(blocks)) levels every
   segment is one block of ``block`` tokens (the sequence's last block holds the remainder).

The result is a permutation; tokens ``[j * block, (j + 1) * block)`` of ``x.gather(perm)`` are group j.
"""

from __future__ import annotations

from functools import lru_cache
from typing import List, Optional, Tuple

import torch

from ..layout import cdiv
from .base import compiled_planning

# Power iterations per level: the split direction only has to be a direction of large spread, not the exact axis.
POWER_ITERS = 3
# Principal axes kept for the bisection: k-means on [q, k] (256 dims at head_dim 128) is dominated by a few axes on
# trained models, and [N, L, 32] float32 keeps every level's temporaries small (HunyuanVideo 720p: 24 heads x 119k).
PCA_DIMS = 32
# Subspace iterations for those axes (each multiplies by the covariance once).
SUBSPACE_ITERS = 4


@lru_cache(maxsize=64)
def _levels(length: int, block: int) -> Tuple[Tuple[int, ...], ...]:
    """Per level, the segment id of every position (as a tuple of segment start positions, first level excluded)."""
    blocks = cdiv(length, block)
    segments: List[Tuple[int, int]] = [(0, blocks)]  # [first block, end block)
    levels = []
    while any(b1 - b0 > 1 for b0, b1 in segments):
        levels.append(tuple(min(b0 * block, length) for b0, _ in segments))
        nxt = []
        for b0, b1 in segments:
            if b1 - b0 > 1:
                mid = b0 + (b1 - b0) // 2
                nxt += [(b0, mid), (mid, b1)]
            else:
                nxt.append((b0, b1))
        segments = nxt
    return tuple(levels)


@lru_cache(maxsize=64)
def _segment_ids(length: int, block: int, device: torch.device) -> Tuple[Tuple[torch.Tensor, torch.Tensor], ...]:
    """Per level: the segment id of every position int64 [L] and the segment sizes float32 [segments]."""
    out = []
    for starts in _levels(length, block):
        bounds = torch.tensor(starts[1:] + (length,))
        ids = torch.bucketize(torch.arange(length), bounds, right=True)
        sizes = torch.diff(torch.tensor((0,) + starts[1:] + (length,))).float()
        out.append((ids.to(device), sizes.to(device)))
    return tuple(out)


def principal_features(x: torch.Tensor, dims: int = PCA_DIMS, iters: int = SUBSPACE_ITERS) -> torch.Tensor:
    """x [N, L, F] centred and projected on (an orthonormal basis of) its top ``dims`` principal axes per row:
    float32 [N, L, min(dims, F)].

    Subspace iteration on the [F, F] covariance, orthonormalised by Cholesky QR, instead of ``torch.linalg.eigh``:
    batched matmuls and one small Cholesky per iteration on the GPU (``eigh`` of 12 covariances of 256 x 256 made
    the whole plan take 73 ms at Wan-1.3B 480p on an H200,
    ``2026-12-02_NVIDIA-H200_profile-semantic-balanced-eigh.json``).
    Any orthonormal basis of the subspace gives the bisection the same geometry."""
    xf = x.float()
    xf = xf - xf.mean(dim=1, keepdim=True)
    f = xf.shape[-1]
    if dims >= f:
        return xf
    cov = xf.transpose(1, 2) @ xf  # [N, F, F]
    cov = cov / cov.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1e-30)[:, None, None]  # trace 1: no overflow
    basis = torch.randn(f, dims, generator=torch.Generator().manual_seed(1)).to(xf.device).expand(xf.shape[0], f, dims)
    eye = torch.eye(dims, device=xf.device)
    for _ in range(iters):
        basis = cov @ basis
        gram = basis.transpose(1, 2) @ basis
        # A relative jitter keeps the Cholesky defined when the data has fewer than ``dims`` directions.
        jitter = 1e-6 * gram.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-30)[:, None, None] * eye
        chol = torch.linalg.cholesky(gram + jitter)
        basis = torch.linalg.solve_triangular(chol, basis.transpose(1, 2), upper=False).transpose(1, 2)
    return xf @ basis


def balanced_partition(x: torch.Tensor, block: int, dims: Optional[int] = None) -> torch.Tensor:
    """Permutation int64 [N, L] grouping the L points of each row of ``x`` [N, L, F] into blocks of ``block`` tokens
    of similar points (see the module docstring)."""
    n, length, _ = x.shape
    if block < 1:
        raise ValueError(f"balanced_partition needs block >= 1, got {block}")
    z = principal_features(x, PCA_DIMS if dims is None else dims)
    levels = _segment_ids(length, block, x.device)
    # A fixed start for the power iterations (the same for every segment): deterministic, and almost surely not
    # orthogonal to the axis it converges to.
    start = torch.randn(z.shape[-1], generator=torch.Generator().manual_seed(0)).to(x.device)
    return _bisect(z, start, tuple(seg for seg, _ in levels), tuple(sizes for _, sizes in levels))


@compiled_planning
def _bisect(z: torch.Tensor, start: torch.Tensor, segs: Tuple[torch.Tensor, ...], sizes: Tuple[torch.Tensor, ...]):
    """The bisection levels on features z [N, L, F] (tensors only, so that it compiles as one graph: eager, its
    ~20 small kernels per level are launch-bound)."""
    n, length, f = z.shape
    perm = torch.arange(length, device=z.device).expand(n, length)
    for seg, size in zip(segs, sizes):
        nseg = size.shape[0]
        zs = z.gather(1, perm.unsqueeze(-1).expand(-1, -1, f))
        mean = torch.zeros(n, nseg, f, device=z.device, dtype=z.dtype).index_add_(1, seg, zs) / size[:, None]
        zc = zs - mean[:, seg]
        axis = start.expand(n, nseg, f)
        for _ in range(POWER_ITERS):
            along = (zc * axis[:, seg]).sum(-1, keepdim=True)
            axis = torch.zeros(n, nseg, f, device=z.device, dtype=z.dtype).index_add_(1, seg, zc * along)
            axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-20)
        along = (zc * axis[:, seg]).sum(-1).double()
        along = along / along.square().mean(dim=1, keepdim=True).sqrt().clamp_min(1e-30)
        # One sort per level: segment id + a monotonic map of the projection strictly inside (0, 1) orders by
        # segment, then along the segment's axis (float64 keeps the projection's order at a thousand segments).
        local = (seg.double() + 0.5 + 0.999 * torch.atan(along) / torch.pi).argsort(dim=1)
        perm = perm.gather(1, local)
    return perm


__all__ = ["balanced_partition", "principal_features"]
