"""Sparse VideoGen 2's semantic-aware permutation (Yang et al., 2025): k-means clusters of queries and keys.

Per (batch, head), queries and keys are clustered separately by batched k-means (`dit_sparse.patterns.kmeans`). The
attention mass between a query cluster and a key cluster is estimated from the centroids,
``softmax_c(q_a . k_c * scale + log |c|)`` (a key cluster of n tokens with the same centroid gets n times the mass),
and each query cluster keeps its most massive key clusters until their mass reaches ``top_p`` (the crossing one
kept), and at least ``ceil(min_kv_ratio * kv_clusters)``. Empty clusters are never kept.

Queries are permuted by cluster label and keys/values by theirs (a stable argsort), so every cluster is a contiguous
run of the permuted sequence; the layout carries the permutations and the kernel front door gathers and scatters.

Blocks (default, ``fixed_blocks=False``): variable-size, cluster-aligned. Every cluster is cut into pieces of at most
``block_size`` tokens; a query piece computes exactly the key pieces of its cluster's selected key clusters, so the
kernel computes the selection and nothing else. The number of pieces varies per (batch, head) but is bounded by
``floor((L + K (block - 1)) / block)`` (at most ``ceil(L / block) + K``), a static bound: layouts are padded to it with
empty blocks (start == end, no keys), with no host synchronisation. The only host read of a plan is the width of
``kv_indices`` on large layouts (see ``SemanticConfig.static_kmax``).

Blocks (``fixed_blocks=True``): fixed ``block_size`` blocks over the permuted sequence, which fixed-block kernels
(FlashAttention-4, FlexAttention) run. Each cluster gives its whole blocks first and the remainders of all clusters
are packed after them (`dit_sparse.layout.whole_blocks_first`), so that a cluster shorter than a block does not push
every later cluster off the block grid; blocks are then chosen per query block like variable ones. With the
"centroids" estimate a block pair is computed when any of the query clusters touching the query block selected any of
the key clusters touching the key block (a superset of the selection).

Blocks (``clusters="balanced"``): groups of exactly ``block_size`` tokens (`dit_sparse.patterns.partition`) in one
permutation shared by queries and keys; the groups are the blocks, so the layout is a fixed one over the permuted
sequence that computes exactly the selected group pairs (no cover of partial blocks, no density blow-up).

Blocks (``pack_pieces=True``): the cluster pieces, selected as above, run as fixed ``block_size`` blocks that hold
whole pieces: every cluster's full pieces are whole blocks and the clusters' remainder pieces are packed several to a
block (in ``cluster_order``: "similarity" puts similar clusters' remainders together). A block pair is computed when
any piece in one selected any piece in the other: a cover of the selection (the layout's density counts what is
computed) that FlashAttention-4 runs on full tiles. On small's captured attention it computes ~1.2x the pieces' work
(``oracle-small-packed-pieces{,-k64}.json``), against ~2x for the pieces' own partly empty tiles.

Clusters (``clusters``). "joint" (default): one k-means of every token's [q, k]; queries and keys share one
permutation, so query block i and key block i are the same tokens and block i always keeps its diagonal (a token's
own key: with q close to k, as in trained DiTs, the most attended). "separate": Sparse VideoGen 2's two clusterings.

Selection (``estimate``). Each query block keeps its key blocks of most estimated mass per token until the estimated
mass reaches ``top_p``, at least ``ceil(min_kv_ratio * key blocks)``. "pooled" (default): block mean query against
block mean key; "blocks": block mean query against every key exactly (`dit_sparse.patterns.block_mass`).
"centroids": Sparse VideoGen 2's rule above, per query cluster (with separate clusters).

Measured with ``python -m dit_sparse.eval.oracle`` at density 0.25: on photographic attention separate clusters with
the centroid rule chose *worse* blocks than a random layout of the same density (gain -4.50, ``bench/results/
oracle-photo.json``): with separate permutations a query's own neighbourhood (its own token's key and those like it)
lands in key blocks that its query block does not select, and on peaked heads those rows keep almost none of their
mass. Joint clusters fix it (1.99 there); on tiny's captured attention both beat random, joint by more (1.54 vs
1.10, ``oracle-tiny-variants.json``); on small's joint scores 1.44 (``oracle-small.json``).

k-means is warm-started from the previous step's centroids, kept in the per-(layer, CFG branch) ``cache``:
``kmeans_iters`` iterations on the first call of a run (from evenly strided tokens, deterministic),
``warm_iters`` afterwards. A joint plan with cluster pieces and the pooled estimate leaves out k-means' last update and
takes the clusters' means from the [q, k] sums of their pieces, which the block means read anyway
(`_joint_pooled_mass`, ``FUSED_CLUSTER_SUMS``): the same clusters and layouts, one pass over q and k fewer per plan.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Optional, Tuple

import torch

from ..config import SemanticConfig
from ..geometry import VideoGeometry
from ..layout import BlockLayout, block_sizes, cdiv, pack_block_mask, whole_blocks_first
from . import kmeans
from .base import Pattern, compiled_planning
from .block_mass import (
    block_mass_estimate,
    block_sums,
    pooled_block_mass,
    pooled_mass,
    top_p_block_lists,
    top_p_block_mask,
)
from .kmeans import batched_kmeans, cluster_order
from .partition import balanced_partition

logger = logging.getLogger(__name__)

# Width of kv_indices where it is trimmed (``static_kmax`` False, or automatic on large layouts): the largest
# kv_counts, read on the host once per plan and rounded up to a multiple of this (few distinct shapes). With the static
# width (every key block) there is no host synchronisation at all, at the price of memory.
_KMAX_ROUND = 16

# The automatic ``static_kmax`` (None) keeps the static width while the untrimmed index lists hold at most this many
# entries (batch x heads x query blocks x key blocks): Wan-1.3B 480p's packed layout holds 12 x 256 x 256 = 0.79 M
# (1.6 MB per layout kept between steps as int16), HunyuanVideo 720p's 24 x 929 x 929 = 21 M (41 MB per layer, 2.5 GB
# over 60 layers). Why: the host read stops the host until the GPU has run everything queued before it, so the GPU
# then idles while the host launches the next kernels, a large share of a short sparse call. One Wan-1.3B 480p step
# (random weights, every layer sparse, the preset's r = 3 with CFG sharing) idled 28.6 ms with the read and 14.0 ms
# without (wall less busy GPU time under the profiler; 0.942 against 0.938 s per step), and the plan per sparse call
# measured 8.3 % of the attention, 10.2 % with the read in session 21 (another loan) (``2026-12-04_NVIDIA-H200_{step,
# pattern}-wan1.3b-480p-semantic-static-width.json``); a HunyuanVideo 720p step idles 4 ms with the read
# (``...step-hunyuan-720p-semantic-w1-profile.json``).
STATIC_KMAX_MAX_ENTRIES = 1 << 22

# Joint plans with the pooled estimate take their clusters' means from the [q, k] sums of the cluster pieces that the
# block means need anyway (`_joint_pooled_mass`), so k-means leaves out its last update (one pass over q and k and one
# sort of the labels fewer per plan; the same layouts): the plan's kernels 0.95 against 1.22 ms at Wan-1.3B 480p on an
# H200 (``2026-12-04_NVIDIA-H200_probe-fused-means-pair.json``). A module switch so that the benchmark can time both.
FUSED_CLUSTER_SUMS = True


def max_pieces(length: int, clusters: int, block: int) -> int:
    """Static bound on the number of pieces (<= ``block`` tokens) of ``clusters`` clusters of ``length`` tokens.

    ``sum_c ceil(n_c / block) <= floor((length + clusters * (block - 1)) / block)``, and no piece is empty.
    """
    return max(1, min(length, (length + clusters * (block - 1)) // block))


def select_clusters(
    q_centroids: torch.Tensor,
    k_centroids: torch.Tensor,
    k_counts: torch.Tensor,
    scale: float,
    top_p: float,
    min_keep: int,
) -> torch.Tensor:
    """Key clusters kept by every query cluster.

    Args:
        q_centroids (`torch.Tensor` [N, Kq, D]), k_centroids (`torch.Tensor` [N, Kk, D]): centroids.
        k_counts (`torch.Tensor` [N, Kk]): tokens per key cluster (0 = empty, never kept).
        scale (`float`): softmax scale of the attention.
        top_p (`float`): attention mass to cover per query cluster, in (0, 1]; 1.0 keeps every non-empty cluster.
        min_keep (`int`): key clusters kept at least (the most massive ones that are non-empty).

    Returns:
        `torch.Tensor` bool [N, Kq, Kk].
    """
    nonempty = (k_counts > 0).unsqueeze(1)  # [N, 1, Kk]
    if top_p >= 1.0:
        # Exactly dense: mass sums can round below 1 and underflowed clusters would otherwise be dropped.
        return nonempty.expand(-1, q_centroids.shape[1], -1).contiguous()
    logits = torch.bmm(q_centroids.float(), k_centroids.float().transpose(1, 2)) * scale
    logits = logits + torch.log(k_counts.float()).unsqueeze(1)  # log 0 = -inf: empty clusters get no mass
    probs = torch.softmax(logits, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_p.cumsum(-1) - sorted_p
    rank = torch.arange(sorted_p.shape[-1], device=probs.device)
    keep_sorted = (mass_before < top_p) | (rank < min_keep)
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return keep & nonempty


def cluster_pieces(counts: torch.Tensor, block: int, n_max: int, length: int) -> Tuple[torch.Tensor, ...]:
    """Cuts clusters, contiguous in label order, into pieces of at most ``block`` tokens, padded to ``n_max`` pieces.

    Args:
        counts (`torch.Tensor` [N, K]): tokens per cluster (sums to ``length`` per row).
        block (`int`): maximum piece length.
        n_max (`int`): static number of pieces (`max_pieces`).
        length (`int`): tokens per row.

    Returns:
        ``(starts, cluster, valid)``: int32 [N, n_max + 1] piece boundaries (monotone, padding pieces empty at the
        end, last entry ``length``), int64 [N, n_max] cluster of every piece (clamped for padding pieces) and bool
        [N, n_max] (the piece holds tokens).
    """
    n, k = counts.shape
    counts = counts.long()
    offsets = counts.cumsum(-1) - counts  # first token of every cluster
    pieces = (counts + block - 1) // block
    piece_end = pieces.cumsum(-1)  # pieces of clusters 0..c, inclusive
    p = torch.arange(n_max, device=counts.device).expand(n, n_max).contiguous()
    cluster = torch.searchsorted(piece_end, p, right=True)  # == k past the last piece
    valid = cluster < k
    cluster = cluster.clamp(max=k - 1)
    local = p - (piece_end - pieces).gather(1, cluster)
    start = offsets.gather(1, cluster) + local * block
    start = torch.where(valid, start, torch.full_like(start, length))
    starts = torch.cat([start, torch.full_like(start[:, :1], length)], dim=1)
    return starts.to(torch.int32), cluster, valid


def split_pieces(starts: torch.Tensor, parts: int, block: int) -> torch.Tensor:
    """Every piece of ``starts`` (int [N, P + 1]) cut into ``parts`` pieces of at most ``block`` tokens, in order (the
    tail ones shorter or empty): int32 [N, P * parts + 1]."""
    first, end = starts[:, :-1].long(), starts[:, 1:].long()
    cuts = (first.unsqueeze(-1) + torch.arange(parts, device=starts.device) * block).minimum(end.unsqueeze(-1))
    return torch.cat([cuts.flatten(1), starts[:, -1:].long()], dim=1).to(torch.int32)


def _overlap(counts: torch.Tensor, block: int, length: int) -> torch.Tensor:
    """bool [N, ceil(L / block), K]: fixed block i of the permuted sequence holds tokens of cluster c."""
    offsets = (counts.cumsum(-1) - counts).unsqueeze(1)
    ends = offsets + counts.unsqueeze(1)
    b0 = (torch.arange(cdiv(length, block), device=counts.device) * block).view(1, -1, 1)
    b1 = (b0 + block).clamp(max=length)
    return (counts.unsqueeze(1) > 0) & (offsets < b1) & (ends > b0)


@compiled_planning
def block_plan(q, k, q_perm, kv_perm, q_counts, k_counts, block: int, fixed_blocks: bool, estimate: str,
               top_p: float, min_kv_ratio: float, diagonal: bool, kv_block: Optional[int] = None,
               cluster_sums: bool = False):
    """The block selection of a semantic plan after clustering (tensors only, so that it compiles as one graph, see
    `compiled_planning`): q [N, Lq, D], k [N, Lk, D] in token order, their cluster orders ``q_perm`` / ``kv_perm``
    [N, L] and cluster sizes [N, K]; blocks are cluster pieces of at most ``block`` tokens (or fixed blocks), each
    query block keeping its key blocks of most estimated mass until ``top_p``. ``kv_block`` (fixed blocks only):
    finer key blocks, ``block / kv_block`` of them per query block. ``cluster_sums``: see `_select_blocks`.

    Returns kv_indices (full width: every key block), kv_counts, q_block_starts and kv_block_starts (None for fixed
    blocks), all with a leading N = B * H, and the clusters' [q, k] sums (None without ``cluster_sums``).
    """
    (idx, cnt), q_starts, kv_starts, sums = _select_blocks(
        q, k, q_perm, kv_perm, q_counts, k_counts, block, fixed_blocks, estimate, top_p, min_kv_ratio, diagonal,
        kv_block, as_mask=False, cluster_sums=cluster_sums)
    return idx, cnt, q_starts, kv_starts, sums


def _select_blocks(q, k, q_perm, kv_perm, q_counts, k_counts, block: int, fixed_blocks: bool, estimate: str,
                   top_p: float, min_kv_ratio: float, diagonal: bool, kv_block: Optional[int], as_mask: bool,
                   cluster_sums: bool = False):
    """`block_plan`'s blocks, their estimated mass and the top-p selection: ``(selection, q_starts, kv_starts,
    sums)``, the selection as block lists (kv_indices, kv_counts) or, with ``as_mask``, as a bool [N, Pq, Pk] mask
    (the packed pieces combine it further); starts are None for fixed blocks. With ``cluster_sums`` (joint clusters:
    one order and one set of counts for both sides, cluster pieces, the pooled estimate) ``sums`` is every cluster's
    [q, k] sum, float32 [N, K, 2 D] (`_joint_pooled_mass`), else None."""
    n, lq, d = q.shape
    lk = k.shape[1]
    kb = block if kv_block is None else kv_block
    if fixed_blocks:
        q_starts = kv_starts = None
        k_sizes = block_sizes(lk, kb, q.device).unsqueeze(0)
        k_valid = torch.ones_like(k_sizes, dtype=torch.bool)
        q_valid = None
    else:
        q_starts, q_cluster, q_valid = cluster_pieces(q_counts, block, max_pieces(lq, q_counts.shape[1], block), lq)
        if diagonal and kb < block:
            # One permutation for both: key pieces cut from the query pieces, so query piece i holds key pieces
            # [i * r, (i + 1) * r), its diagonal (r = block / kv_block; the shorter tails leave some empty).
            kv_starts = split_pieces(q_starts, block // kb, kb)
        else:
            kv_starts, _, _ = cluster_pieces(k_counts, kb, max_pieces(lk, k_counts.shape[1], kb), lk)
        k_sizes = (kv_starts[:, 1:] - kv_starts[:, :-1]).float()
        k_valid = k_sizes > 0
    scale = 1.0 / math.sqrt(d)
    sums = None
    if cluster_sums and (fixed_blocks or not diagonal or estimate == "blocks"):
        raise ValueError("cluster_sums needs joint clusters (diagonal) cut into pieces and the pooled estimate")
    if cluster_sums:
        mass, sums = _joint_pooled_mass(q, k, q_perm, q_starts, q_cluster, kv_starts, k_sizes, q_counts.shape[1],
                                        scale)
    elif estimate == "blocks":
        q_sorted = q.gather(1, q_perm.unsqueeze(-1).expand(-1, -1, d))
        k_sorted = k.gather(1, kv_perm.unsqueeze(-1).expand(-1, -1, d))
        mass = block_mass_estimate(q_sorted, k_sorted, scale, block, q_starts, kv_starts, kv_block=kb)
    else:
        # q and k stay in token order: the block means read them through the permutations (on CUDA one Triton pass
        # per side, no permuted copies and no float32 atomics; 1.6 ms of a 13 ms plan at HunyuanVideo 720p).
        mass = pooled_block_mass(q, k, scale, block, q_starts, kv_starts, kv_block=kb, q_order=q_perm,
                                 kv_order=kv_perm)
    min_keep = math.ceil(min_kv_ratio * mass.shape[-1] - 1e-9)
    # Padding pieces (q_valid False) compute nothing.
    select = top_p_block_mask if as_mask else top_p_block_lists
    selection = select(mass, k_sizes, top_p, min_keep, k_valid, diagonal=diagonal, kv_per_q=block // kb,
                       row_valid=q_valid)
    return selection, q_starts, kv_starts, sums


def _joint_pooled_mass(q, k, order, q_starts, q_cluster, kv_starts, k_sizes, clusters: int, scale: float):
    """The pooled estimate of joint clusters from one pass over q and k, and the clusters' sums with it.

    Queries and keys share ``order`` and the key pieces nest in the query pieces (the same pieces, or each query
    piece cut into r key pieces, `split_pieces`), so one [q, k] sum per key piece gives the key pieces' means, r of
    them summed the query pieces' means, and the query pieces' sums added per cluster (``q_cluster`` [N, Pq]; padding
    pieces are empty) every cluster's [q, k] sum: the k-means update that `batched_kmeans` with ``update_last=False``
    leaves out. ``k_sizes`` [N, Pk]: the key pieces' sizes (float). Returns the mass [N, Pq, Pk] (as
    `pooled_block_mass`) and the sums float32 [N, K, 2 D]."""
    n, _, d = q.shape
    pq, pk = q_starts.shape[1] - 1, kv_starts.shape[1] - 1
    if pk % pq:
        raise ValueError(f"the key pieces ({pk}) must nest in the query pieces ({pq})")
    fine = block_sums((q, k), kv_starts, 1, order=order)  # [N, Pk, 2 D]
    coarse = fine.view(n, pq, pk // pq, 2 * d).sum(2)  # the query pieces' sums
    q_sizes = (q_starts[:, 1:] - q_starts[:, :-1]).float()
    q_means = coarse[..., :d] / q_sizes.clamp(min=1).unsqueeze(-1)
    k_means = fine[..., d:] / k_sizes.clamp(min=1).unsqueeze(-1)
    mass = pooled_mass(q_means, k_means, k_sizes, scale, kmeans._compute_dtype(k))
    sums = torch.zeros(n, clusters, 2 * d, device=q.device, dtype=torch.float32)
    return mass, sums.scatter_add_(1, q_cluster.unsqueeze(-1).expand(-1, -1, 2 * d), coarse)


@compiled_planning
def packed_plan(q, k, labels, counts, rank: Optional[torch.Tensor], block: int, kv_block: int, estimate: str,
                top_p: float, min_kv_ratio: float, cluster_sums: bool = False):
    """Cluster pieces selected as by the variable layout, run as fixed blocks that hold whole pieces (tensors only,
    so that the whole packing compiles as one graph with the block selection, see `compiled_planning`): q, k
    [N, L, D] in token order, joint cluster ``labels`` [N, L] and sizes ``counts`` [N, K], ``rank`` [N, K] the
    clusters' similarity order (or None: label order). Returns kv_indices (full width), kv_counts, the permutation
    [N, L] and, with ``cluster_sums``, the clusters' [q, k] sums by label (`_select_blocks`; else None).

    The pieces of ``block`` of every cluster are whole blocks (first, `whole_blocks_first`); the clusters' remainder
    pieces are packed after them, in the clusters' order, several to a block. A block pair is computed when any piece
    in the query block selected any piece in the key block: every query keeps its piece's selection (a cover of it),
    and FlashAttention-4 runs the layout on full tiles."""
    n, length, d = q.shape
    kk = counts.shape[1]
    kv_block = block if kv_block is None else kv_block
    if rank is not None:
        labels = rank.gather(-1, labels)
        counts = torch.empty_like(counts).scatter_(-1, rank, counts)
    perm = cluster_order(labels, kk)
    # The pieces' selection as a mask (on CUDA the top-p kernel writes it: no lists to scatter back).
    select, q_starts, kv_starts, sums = _select_blocks(q, k, perm, perm, counts, counts, block, False, estimate,
                                                       top_p, min_kv_ratio, True, kv_block, as_mask=True,
                                                       cluster_sums=cluster_sums)
    if sums is not None and rank is not None:  # by rank -> by label: cluster c is rank[c] above
        sums = sums.gather(1, rank.unsqueeze(-1).expand(-1, -1, sums.shape[-1]))
    pq, pk = q_starts.shape[1] - 1, kv_starts.shape[1] - 1
    device = q.device
    # The query and key piece of every position of the cluster order; pieces stay whole under whole_blocks_first
    # (a cluster's full pieces are its whole blocks, its remainder piece moves as one run).
    pos = torch.arange(length, device=device).expand(n, length).contiguous()
    q_piece = torch.searchsorted(q_starts[:, 1:].contiguous(), pos.to(q_starts.dtype), right=True)
    k_piece = torch.searchsorted(kv_starts[:, 1:].contiguous(), pos.to(kv_starts.dtype), right=True)
    packed = whole_blocks_first(labels.gather(-1, perm), block, counts=counts)
    perm, q_piece, k_piece = (t.gather(-1, packed) for t in (perm, q_piece, k_piece))

    # 0 / 1 maps multiplied on tensor cores on the GPU: a count of at least 1 stays at least 1 in bfloat16.
    dtype = torch.bfloat16 if q.is_cuda else torch.float32

    def holds(piece, size, pieces):  # [N, blocks, pieces]: block i (of ``size`` tokens) holds tokens of piece p
        where = (pos // size) * pieces + piece
        ones = torch.ones(1, 1, device=device, dtype=dtype).expand(n, length)
        return torch.zeros(n, cdiv(length, size) * pieces, device=device, dtype=dtype).scatter_(
            1, where, ones).view(n, cdiv(length, size), pieces)

    mask = torch.bmm(torch.bmm(holds(q_piece, block, pq), select.to(dtype)),
                     holds(k_piece, kv_block, pk).transpose(1, 2))
    idx, cnt = pack_block_mask(mask > 0.5)
    return idx, cnt, perm, sums


def _similarity_rank(centroids: torch.Tensor, k: int) -> torch.Tensor:
    """The rank int64 [..., K] of every cluster in a k-d-tree order of its centroid (``centroids`` [..., K, F];
    `balanced_partition` into groups of one), so that clusters next to each other in rank are similar."""
    lead = centroids.shape[:-2]
    # At most k / 4 principal axes: the k centroids span at most k - 1 directions.
    order = balanced_partition(centroids.reshape(-1, k, centroids.shape[-1]), 1, dims=max(1, min(16, k // 4)))
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(k, device=order.device).expand_as(order))
    return rank.view(*lead, k)


class SemanticPattern(Pattern):
    """Sparse VideoGen 2's k-means permutation with top-p block selection.

    Args:
        config (`SemanticConfig`): clusters, top-p, iterations, block size, block kind and selection rule.
        fixed_blocks (`bool`, optional): overrides ``config.fixed_blocks`` (tests and benchmarks).
        static_kmax (`bool`, optional): overrides ``config.static_kmax`` (None there: automatic).
    """

    name = "semantic"
    static = False

    def __init__(
        self, config: SemanticConfig, fixed_blocks: Optional[bool] = None, static_kmax: Optional[bool] = None
    ):
        super().__init__(config)
        self.fixed_blocks = config.fixed_blocks if fixed_blocks is None else bool(fixed_blocks)
        # Balanced groups and packed pieces are whole blocks by construction: their layout is a fixed-block one.
        self.fixed_blocks = self.fixed_blocks or config.clusters == "balanced" or config.pack_pieces
        self.static_kmax = config.static_kmax if static_kmax is None else bool(static_kmax)  # None: automatic
        self._warned_clusters = False

    def _trim(self, idx: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """kv_indices narrowed to the largest count (rounded up), unless the static width is kept (`_static_width`)
        or inside a compiled graph (where the read would make the width a data-dependent size: the graph keeps the
        static width instead)."""
        if self._static_width(idx) or torch.compiler.is_compiling():
            return idx
        # The one host read of the plan (after all k-means work is queued): it keeps layouts small.
        kmax = int(counts.max()) if counts.numel() else 1
        kmax = min(idx.shape[-1], max(1, -(-kmax // _KMAX_ROUND) * _KMAX_ROUND))
        return idx[..., :kmax]

    def _static_width(self, idx: torch.Tensor) -> bool:
        """Whether the index lists keep their static width: ``static_kmax`` when set, else while they are small
        (`STATIC_KMAX_MAX_ENTRIES`)."""
        if self.static_kmax is not None:
            return self.static_kmax
        return idx.numel() <= STATIC_KMAX_MAX_ENTRIES

    # ------------------------------------------------------------------ clustering
    def cluster(
        self, x, k: int, cache: Dict[str, Any], which: str, update_last: bool = True
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """k-means of x (B, H, L, D) per (batch, head), warm-started from ``cache[which + "_centroids"]``. ``x`` may be
        a pair (q, k): the points are then their rows concatenated, which the k-means kernel reads in place.
        ``update_last=False``: without the last update (`batched_kmeans`); the caller then stores the clusters' means
        from their sums (`_store_cluster_means`).

        Returns labels int64 [B, H, L], centroids float32 [B, H, k, D_total] and counts float32 [B, H, k].
        """
        parts = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        b, h, length = parts[0].shape[:3]
        d = sum(part.shape[-1] for part in parts)
        key = f"{which}_centroids"
        prev: Optional[torch.Tensor] = cache.get(key)
        warm = prev is not None and prev.shape == (b, h, k, d) and prev.device == parts[0].device
        iters = self.config.warm_iters if warm else self.config.kmeans_iters
        init = prev.reshape(b * h, k, d) if warm else None
        # (B, H, L, D) views of Diffusers' (B, L, H, D) memory flatten to [B * H, L, D] without a copy when B == 1.
        points = tuple(part.reshape(b * h, length, part.shape[-1]) for part in parts)
        # A cold start (once per video and layer) fits on every token; warm plans (every refresh) may sample.
        sample = self.config.kmeans_sample if warm else 1
        labels, centroids, counts = batched_kmeans(points, k, iters, init, sample=sample, update_last=update_last)
        if not warm:  # new clusters: an order kept from the old ones (`_cluster_rank`) no longer applies
            cache.pop(f"{which}_rank", None)
        cache[key] = centroids.view(b, h, k, d)
        cache[f"{which}_iters"] = iters
        return labels.view(b, h, length), centroids.view(b, h, k, d), counts.view(b, h, k)

    @staticmethod
    def _store_cluster_means(cache: Dict[str, Any], which: str, centroids, counts, sums) -> None:
        """The k-means update that `cluster` with ``update_last=False`` left out: the next warm start's centroids are
        the means of the clusters from their sums (float32 [N, K, D_total]); an empty cluster keeps its centroid.
        Nothing with no iteration (``warm_iters=0``: k-means only assigned, its centroids stay)."""
        if cache[f"{which}_iters"] == 0:
            return
        prev = cache[f"{which}_centroids"]
        k, d = prev.shape[-2:]
        means = kmeans.cluster_means(sums.view(-1, k, d), counts.reshape(-1, k), centroids.reshape(-1, k, d))
        cache[f"{which}_centroids"] = means.view(prev.shape)

    def _fuses_cluster_means(self) -> bool:
        """Whether a joint plan takes its clusters' means from the pieces' sums (`_joint_pooled_mass`): with cluster
        pieces (variable or packed, not fixed blocks over the order) and the pooled estimate."""
        cfg = self.config
        pieces = cfg.pack_pieces or not self.fixed_blocks
        return FUSED_CLUSTER_SUMS and cfg.clusters == "joint" and pieces and cfg.estimate != "blocks"

    # ------------------------------------------------------------------ planning
    # Fewest tokens per cluster (on average) below which a user is warned that the cluster counts were cut: a
    # cluster of a handful of tokens makes k-means a token-level clustering that costs more than it saves (a new
    # user's 100 / 500 clusters on 320 tokens took 25 minutes for one CPU step). ``min_cluster_tokens`` above it cuts
    # them on purpose, silently.
    MIN_CLUSTER_TOKENS = 16

    def cluster_counts(self, lq: int, lk: int) -> Tuple[int, int]:
        """Query and key cluster counts for sequences of ``lq`` / ``lk`` tokens (the config's, cut to at most one
        cluster per ``min_cluster_tokens`` tokens, with a warning the first time they are cut below
        ``MIN_CLUSTER_TOKENS`` tokens per cluster)."""
        cfg = self.config
        joint = cfg.clusters == "joint"  # one clustering of the tokens: kv_clusters clusters, q_clusters unused
        wanted = (cfg.kv_clusters,) * 2 if joint else (cfg.q_clusters, cfg.kv_clusters)
        lengths = (min(lq, lk),) * 2 if joint else (lq, lk)
        kq, kk = (min(w, max(1, n // cfg.min_cluster_tokens)) for w, n in zip(wanted, lengths))
        too_many = any(w > max(1, n // self.MIN_CLUSTER_TOKENS) for w, n in zip(wanted, lengths))
        # Warned from `prepare` (outside any compiled graph) when the step hook calls it; logging inside a graph
        # that Dynamo traces is not supported.
        if too_many and not self._warned_clusters and not torch.compiler.is_compiling():
            if joint:
                told, fields = f"{wanted[0]} clusters for {lk} tokens; using {kk}", "kv_clusters=..."
            else:
                told = f"{wanted[0]} query / {wanted[1]} key clusters for {lq} / {lk} tokens; using {kq} / {kk}"
                fields = "q_clusters=..., kv_clusters=..."
            logger.warning(
                "semantic: %s (at least %d tokens per cluster). Set SemanticConfig(%s) for this size to silence this.",
                told, max(cfg.min_cluster_tokens, self.MIN_CLUSTER_TOKENS), fields,
            )
            self._warned_clusters = True
        return kq, kk

    def prepare(self, geometry: VideoGeometry, device, cache) -> None:
        # Before the forward, outside any compiled graph: the cluster-count warning for this video size.
        if self.config.clusters != "balanced":  # balanced groups are blocks: no cluster counts
            self.cluster_counts(geometry.num_tokens, geometry.num_tokens)

    def plan(self, q: torch.Tensor, k: torch.Tensor, geometry: VideoGeometry, cache: Dict[str, Any]) -> BlockLayout:
        cfg = self.config
        b, h, lq, d = q.shape
        lk = k.shape[2]
        n = b * h
        if cfg.clusters == "balanced":
            if lq != lk:
                raise ValueError(
                    f"SemanticConfig(clusters='balanced') partitions queries and keys together and needs as many of "
                    f"each, got {lq} and {lk}; use clusters='separate'"
                )
            # Groups of exactly block_size similar tokens (by [q, k], as joint): the blocks are the groups, so a fixed
            # layout computes exactly the selected group pairs and every kernel, FlashAttention-4 included, runs it.
            # With kv_block_size, each group is split again into finer key groups (queries keep whole tiles).
            perm = balanced_partition(torch.cat([q, k], -1).reshape(n, lq, 2 * d), cfg.block_size,
                                      sub_block=cfg.kv_block_size)
            fields, _ = self._block_layout(q.reshape(n, lq, d), k.reshape(n, lk, d), perm, perm, None, None,
                                           diagonal=True)
            perm = perm.view(b, h, lq)
            return self._layout(fields, b, h, lq, lk, perm, perm)
        kq, kk = self.cluster_counts(lq, lk)
        if cfg.clusters == "joint":
            if lq != lk:
                raise ValueError(
                    f"SemanticConfig(clusters='joint') clusters queries and keys together and needs as many of each, "
                    f"got {lq} and {lk}; use clusters='separate'"
                )
            # One k-means on [q, k] per token: one permutation for both sides, so block i of the queries and block i
            # of the keys are the same tokens and the diagonal (a token's own key, the most attended when q ~ k) is
            # always kept. Separate q and k clusters lose it: on photographic attention a query's own neighbourhood
            # then lands in key blocks its query block does not select (see the module docstring).
            fuse = self._fuses_cluster_means()
            labels, centroids, counts = self.cluster((q, k), kk, cache, "qk", update_last=not fuse)
            if cfg.pack_pieces:
                # The similarity rank of the centroids the labels were assigned to (without the last update, when
                # fused: the clusters' own centres).
                rank = self._cluster_rank(centroids.view(n, kk, 2 * d), kk, cache, "qk")
                fields, q_perm, sums = self._packed_layout(q.reshape(n, lq, d), k.reshape(n, lk, d),
                                                           labels.view(n, lq), counts.view(n, kk), rank, fuse)
                q_perm = kv_perm = q_perm.view(b, h, lq)
            else:
                q_perm = kv_perm = self._order(labels, kk, centroids, cache)
                qc = kc = counts.view(n, kk)
                fields, sums = self._block_layout(q.reshape(n, lq, d), k.reshape(n, lk, d), q_perm.view(n, lq),
                                                  kv_perm.view(n, lk), qc, kc, diagonal=True, cluster_sums=fuse)
            if fuse:
                self._store_cluster_means(cache, "qk", centroids, counts, sums)
            return self._layout(fields, b, h, lq, lk, q_perm, kv_perm)
        q_labels, q_cent, q_counts = self.cluster(q, kq, cache, "q")
        k_labels, k_cent, k_counts = self.cluster(k, kk, cache, "k")
        qc, kc = q_counts.view(n, kq), k_counts.view(n, kk)
        if cfg.estimate != "centroids":
            q_perm, kv_perm = self._order(q_labels, kq), self._order(k_labels, kk)
            fields, _ = self._block_layout(q.reshape(n, lq, d), k.reshape(n, lk, d), q_perm.view(n, lq),
                                           kv_perm.view(n, lk), qc, kc)
        else:
            q_perm, kv_perm = cluster_order(q_labels, kq), cluster_order(k_labels, kk)
            min_keep = math.ceil(cfg.min_kv_ratio * kk - 1e-9)
            select = select_clusters(q_cent.view(n, kq, d), k_cent.view(n, kk, d), kc, 1.0 / math.sqrt(d), cfg.top_p,
                                     min_keep)
            build = self._fixed_layout if self.fixed_blocks else self._variable_layout
            fields = build(select, qc, kc, lq, lk)
        return self._layout(fields, b, h, lq, lk, q_perm, kv_perm)

    def _cluster_rank(self, centroids: torch.Tensor, k: int, cache: Dict[str, Any], which: str):
        """The clusters' similarity rank (`_similarity_rank`) with ``cluster_order="similarity"``, else None. With
        ``keep_cluster_order`` it is computed when k-means starts cold (`cluster` drops the cached one) and kept
        while k-means is warm-started: the clusters keep their identity from plan to plan, and the rank (a k-d
        tree: some 90 small batched matmuls and the kernels between them) would otherwise be most of a packed plan
        (6.8 of 7.9 ms at Wan-1.3B 480p on an H200, ``2026-12-03_NVIDIA-H200_profile-semantic-packed-plan.json``)."""
        if self.config.cluster_order != "similarity":
            return None
        key = f"{which}_rank"
        rank = cache.get(key) if self.config.keep_cluster_order else None
        if rank is None:
            rank = _similarity_rank(centroids, k)
            cache[key] = rank
        return rank

    def _order(self, labels: torch.Tensor, k: int, centroids: Optional[torch.Tensor] = None,
               cache: Optional[Dict[str, Any]] = None) -> torch.Tensor:
        """Tokens by cluster; with fixed blocks, each cluster's whole blocks first and the clusters' remainders
        packed after them (`whole_blocks_first`), so that most blocks hold one cluster. With
        ``cluster_order="similarity"`` (fixed blocks) the clusters are first put in a k-d-tree order of their
        centroids (`balanced_partition` of the centroids into groups of one), so that the remainders that share a
        block come from similar clusters."""
        if self.fixed_blocks and centroids is not None and self.config.cluster_order == "similarity":
            lead = centroids.shape[:-2]
            rank = self._cluster_rank(centroids.reshape(-1, k, centroids.shape[-1]), k, {} if cache is None else cache,
                                      "qk")
            labels = rank.view(*lead, k).gather(-1, labels)
        perm = cluster_order(labels, k)
        if self.fixed_blocks:
            perm = perm.gather(-1, whole_blocks_first(labels.gather(-1, perm), self.config.block_size))
        return perm

    def _layout(self, fields, b: int, h: int, lq: int, lk: int, q_perm, kv_perm) -> BlockLayout:
        """The BlockLayout of ``fields`` (kv_indices, kv_counts, q / kv starts with a leading N = B * H)."""
        kv_indices, kv_counts, q_starts, kv_starts = (
            None if t is None else t.view(b, h, *t.shape[1:]) for t in fields
        )
        cfg = self.config
        return BlockLayout(kv_indices, kv_counts, cfg.block_size, cfg.key_block_size, lq, lk,
                           q_block_starts=q_starts, kv_block_starts=kv_starts, q_perm=q_perm, kv_perm=kv_perm)

    def _block_layout(self, q, k, q_perm, kv_perm, q_counts, k_counts, diagonal: bool = False,
                      cluster_sums: bool = False):
        """Top-p per query block on the estimated block mass: (kv_indices, kv_counts, q/kv starts) with N = B * H, and
        the clusters' [q, k] sums with ``cluster_sums`` (else None)."""
        cfg = self.config
        idx, cnt, q_starts, kv_starts, sums = block_plan(
            q, k, q_perm, kv_perm, q_counts, k_counts, cfg.block_size, self.fixed_blocks, cfg.estimate, cfg.top_p,
            cfg.min_kv_ratio, diagonal, cfg.key_block_size, cluster_sums)
        return (self._trim(idx, cnt).contiguous(), cnt, q_starts, kv_starts), sums

    def _variable_layout(self, select, q_counts, k_counts, lq: int, lk: int):
        """kv_indices, kv_counts, q_block_starts, kv_block_starts with a leading N = B * H dimension."""
        bs = self.config.block_size
        n, kq, kk = select.shape
        nq_max, nk_max = max_pieces(lq, kq, bs), max_pieces(lk, kk, bs)
        q_starts, q_cluster, q_valid = cluster_pieces(q_counts, bs, nq_max, lq)
        kv_starts, k_cluster, k_valid = cluster_pieces(k_counts, bs, nk_max, lk)
        # Per query cluster, the key pieces of its kept key clusters: [N, Kq, Nk_max].
        piece_mask = select.gather(2, k_cluster.unsqueeze(1).expand(-1, kq, -1)) & k_valid.unsqueeze(1)
        idx, cnt = pack_block_mask(piece_mask)
        idx = self._trim(idx, cnt)
        # Every query piece inherits its cluster's list; padding pieces compute nothing.
        kv_indices = idx.gather(1, q_cluster.unsqueeze(-1).expand(-1, -1, idx.shape[-1]))
        kv_counts = (cnt.gather(1, q_cluster) * q_valid).to(torch.int32)
        return kv_indices.contiguous(), kv_counts, q_starts, kv_starts

    def _packed_layout(self, q, k, labels, counts, rank, cluster_sums: bool = False):
        """Cluster pieces selected as by the variable layout, run as fixed blocks that hold whole pieces: (kv_indices,
        kv_counts, None, None), the permutation and, with ``cluster_sums``, the clusters' [q, k] sums (else None),
        with N = B * H leading (see `packed_plan`); ``rank`` the clusters' similarity order or None (label order)."""
        cfg = self.config
        idx, cnt, perm, sums = packed_plan(q, k, labels, counts, rank, cfg.block_size, cfg.key_block_size,
                                           cfg.estimate, cfg.top_p, cfg.min_kv_ratio, cluster_sums)
        return (self._trim(idx, cnt).contiguous(), cnt, None, None), perm, sums

    def _fixed_layout(self, select, q_counts, k_counts, lq: int, lk: int):
        """kv_indices, kv_counts (fixed blocks, no starts) with a leading N = B * H dimension."""
        bs = self.config.block_size
        mq = _overlap(q_counts, bs, lq).float()  # [N, nq, Kq]
        mk = _overlap(k_counts, bs, lk).float()  # [N, nk, Kk]
        mask = torch.bmm(torch.bmm(mq, select.float()), mk.transpose(1, 2)) > 0.5
        idx, cnt = pack_block_mask(mask)
        return self._trim(idx, cnt).contiguous(), cnt, None, None


__all__ = [
    "STATIC_KMAX_MAX_ENTRIES",
    "SemanticPattern",
    "block_plan",
    "cluster_order",
    "cluster_pieces",
    "max_pieces",
    "select_clusters",
    "split_pieces",
]
