"""Batched Lloyd k-means on the device: one independent problem per row of a [N, L, D] tensor (N = batch x heads).

No host synchronisation (no ``.item()``, no convergence check, a fixed number of iterations), so it runs inside a
compiled graph or a CUDA graph. The assignment minimises ``||c||^2 - 2 x.c`` (``||x||^2`` is constant per point) on
mean-centred points (k-means is translation invariant; centring keeps half-precision dot products accurate when
queries or keys share a large common component). Centroid sums and counts are accumulated in float32.

Points may come in parts, ``(q, k)``: a point is the concatenation of its rows along the last dimension. The fused
kernel then reads each part where it lies (semantic's joint clustering of [q, k] no longer writes the concatenation:
3.1 ms of a 31 ms plan at Wan-14B 720p, ``2026-12-03_NVIDIA-H200_kmeans-micro.json``).

Two engines, same results up to rounding:
- ``triton`` (CUDA default): one fused kernel per iteration computes the distances tile by tile with a running
  argmin (the [L, K] distance matrix is never written) and adds every point to its cluster's sum and count with
  atomics, so an iteration reads the points once;
- ``torch``: a batched GEMM (``baddbmm``) and ``argmin`` in chunks, then ``scatter_add`` sums (CPU, tests, fallback).
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import torch

try:  # optional fused assignment kernel (GPU); the torch path below is always available
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - depends on the install
    triton = None

# Elements of one [N, chunk, K] distance tile; bounds the assignment's peak memory (256 MiB in half precision).
_ASSIGN_CHUNK_ELEMENTS = 1 << 27


def strided_init(x: torch.Tensor, k: int) -> torch.Tensor:
    """Deterministic initial centroids: ``k`` evenly strided points of each row (tokens ``floor(i * L / k)``).

    For frame-major video tokens this spreads the seeds over all frames and rows of the grid.

    Args:
        x (`torch.Tensor` [N, L, D]): points.
        k (`int`): number of centroids, ``1 <= k <= L``.

    Returns:
        `torch.Tensor` float32 [N, k, D].
    """
    length = x.shape[1]
    idx = torch.arange(k, device=x.device) * length // k
    return x[:, idx].float()


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    # Half-precision tensor cores on the GPU; float32 elsewhere (CPU half matmuls are slow and the tests want exact).
    if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
        return x.dtype
    return torch.float32


# Launch parameters of the fused kernel; a dict so benchmarks can try others. Measured on the H200 with [q, k] points
# (256 channels, 500 clusters; ``2026-12-03_NVIDIA-H200_kmeans-micro{-before,}.json``): 128-point tiles took 7.30 ms
# per iteration with the atomic sums at Wan-14B 720p and 1.10 ms at Wan-1.3B 480p, against 8.55 / 1.24 ms with 64;
# for the assignment alone (the sums are now sorted, below) 32-centroid tiles took 2.67 / 0.44 ms against 3.19 / 0.54
# ms with 64.
TRITON_CONFIG = {"BLOCK_L": 128, "BLOCK_K": 32, "num_warps": 8, "num_stages": 2}
# Cluster sums by sorting the points (`_triton_sums`) instead of the assignment kernel's atomics; a module switch so
# that the benchmark can time both (``bench/kmeans_micro.py``).
SUMS_BY_SORT = True

if triton is not None:

    @triton.jit
    def _assign_kernel(
        X, X2, M, C, CN, OUT, SUMS, CNT, L, K, sxn, sxl, sxd, s2n, s2l, s2d,
        D: tl.constexpr, TWO: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_K: tl.constexpr, ACCUM: tl.constexpr,
        PREC: tl.constexpr,
    ):  # fmt: skip
        # One program: BLOCK_L points of row n against all K centroids, tile by tile, keeping a running elementwise
        # minimum (the [L, K] distance matrix never leaves registers, one reduction at the end). With ACCUM the
        # points are then added to their cluster's sum and count (float32 atomics), so one k-means iteration is one
        # kernel. (Pre-summing the tile per cluster with a one-hot matmul before the atomics was measured slower on
        # H200 at K=500 and only ~10 % faster at K=100.) With TWO a point is [X row, X2 row] (D channels each): the
        # centroids' two halves are dotted with each part and summed.
        DT: tl.constexpr = 2 * D if TWO else D  # channels of a point and of a centroid
        pid = tl.program_id(0)
        n = tl.program_id(1).to(tl.int64)
        offs_l = pid * BLOCK_L + tl.arange(0, BLOCK_L)
        offs_d = tl.arange(0, D)
        lmask = offs_l < L
        x = tl.load(X + n * sxn + offs_l[:, None] * sxl + offs_d[None, :] * sxd, mask=lmask[:, None], other=0.0)
        # Centred in float32, then rounded to the dot dtype: the rounding is relative to the centred magnitude.
        xd = (x.to(tl.float32) - tl.load(M + n * DT + offs_d)[None, :]).to(C.dtype.element_ty)
        if TWO:
            x2 = tl.load(X2 + n * s2n + offs_l[:, None] * s2l + offs_d[None, :] * s2d, mask=lmask[:, None], other=0.0)
            xd2 = (x2.to(tl.float32) - tl.load(M + n * DT + D + offs_d)[None, :]).to(C.dtype.element_ty)
        best = tl.full([BLOCK_L, BLOCK_K], float("inf"), tl.float32)
        best_k = tl.zeros([BLOCK_L, BLOCK_K], tl.int32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            kmask = offs_k[:, None] < K
            c = tl.load(C + (n * K + offs_k[:, None]) * DT + offs_d[None, :], mask=kmask, other=0.0)
            cn = tl.load(CN + n * K + offs_k, mask=offs_k < K, other=float("inf"))
            dot = tl.dot(xd, tl.trans(c), input_precision=PREC)
            if TWO:
                c2 = tl.load(C + (n * K + offs_k[:, None]) * DT + D + offs_d[None, :], mask=kmask, other=0.0)
                dot += tl.dot(xd2, tl.trans(c2), input_precision=PREC)
            dist = cn[None, :] - 2.0 * dot
            better = dist < best  # strict: the earlier centroid wins a tie, like torch.argmin
            best = tl.where(better, dist, best)
            best_k = tl.where(better, offs_k[None, :], best_k)
        low = tl.min(best, 1)
        arg = tl.min(tl.where(best == low[:, None], best_k, 2147483647), 1)
        tl.store(OUT + n * L + offs_l, arg.to(tl.int64), mask=lmask)
        if ACCUM:
            # Reloaded (L2-resident) rather than kept live through the loop: fewer registers, more programs per SM.
            x = tl.load(X + n * sxn + offs_l[:, None] * sxl + offs_d[None, :] * sxd, mask=lmask[:, None], other=0.0)
            xc = x.to(tl.float32) - tl.load(M + n * DT + offs_d)[None, :]
            tl.atomic_add(SUMS + (n * K + arg[:, None]) * DT + offs_d[None, :], xc, mask=lmask[:, None])
            if TWO:
                x2 = tl.load(X2 + n * s2n + offs_l[:, None] * s2l + offs_d[None, :] * s2d, mask=lmask[:, None],
                             other=0.0)
                xc2 = x2.to(tl.float32) - tl.load(M + n * DT + D + offs_d)[None, :]
                tl.atomic_add(SUMS + (n * K + arg[:, None]) * DT + D + offs_d[None, :], xc2, mask=lmask[:, None])
            tl.atomic_add(CNT + n * K + arg, tl.full([BLOCK_L], 1.0, tl.float32), mask=lmask)


if triton is not None:

    @triton.jit
    def _segment_sum_kernel(
        X, X2, M, ORDER, STARTS, COUNTS, SUMS, L, K, sxn, sxl, sxd, s2n, s2l, s2d,
        D: tl.constexpr, TWO: tl.constexpr, BLOCK_R: tl.constexpr,
    ):  # fmt: skip
        # One program per (run, row n): the centred sum of the run's points, read through ORDER (a run - a k-means
        # cluster, a semantic cluster piece - is contiguous in ORDER), summed in registers: no atomics. K runs a row.
        DT: tl.constexpr = 2 * D if TWO else D
        c = tl.program_id(0).to(tl.int64)
        n = tl.program_id(1).to(tl.int64)
        start = tl.load(STARTS + n * K + c)
        count = tl.load(COUNTS + n * K + c)
        offs_d = tl.arange(0, D)
        acc = tl.zeros([BLOCK_R, D], tl.float32)
        acc2 = tl.zeros([BLOCK_R, D], tl.float32)
        for r0 in range(0, count, BLOCK_R):
            rows = r0 + tl.arange(0, BLOCK_R)
            rmask = rows < count
            idx = tl.load(ORDER + n * L + start + rows, mask=rmask, other=0).to(tl.int64)
            x = tl.load(X + n * sxn + idx[:, None] * sxl + offs_d[None, :] * sxd, mask=rmask[:, None], other=0.0)
            acc += x.to(tl.float32)
            if TWO:
                x2 = tl.load(X2 + n * s2n + idx[:, None] * s2l + offs_d[None, :] * s2d, mask=rmask[:, None],
                             other=0.0)
                acc2 += x2.to(tl.float32)
        # Centred: sum(x - m) = sum(x) - count * m.
        total = tl.sum(acc, 0) - count.to(tl.float32) * tl.load(M + n * DT + offs_d)
        tl.store(SUMS + (n * K + c) * DT + offs_d, total)
        if TWO:
            total2 = tl.sum(acc2, 0) - count.to(tl.float32) * tl.load(M + n * DT + D + offs_d)
            tl.store(SUMS + (n * K + c) * DT + D + offs_d, total2)


def _parts(x) -> Tuple[torch.Tensor, ...]:
    """The parts of the points (a point is the concatenation of its rows along the last dimension), checked."""
    parts = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    if not 1 <= len(parts) <= 2 or any(p.dim() != 3 for p in parts):
        raise ValueError(f"points must be one [N, L, D] tensor or two of them, got {len(parts)} part(s) of shapes "
                         f"{[tuple(p.shape) for p in parts]}")
    if len(parts) == 2 and parts[0].shape != parts[1].shape:
        raise ValueError(f"the two parts of the points must have one shape, got {tuple(parts[0].shape)} and "
                         f"{tuple(parts[1].shape)}")
    return parts


def _joined(parts: Tuple[torch.Tensor, ...]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, -1)


def _points_mean(parts: Tuple[torch.Tensor, ...]) -> torch.Tensor:
    """float32 [N, D_total]: the mean point of every row."""
    return torch.cat([p.mean(1, dtype=torch.float32) for p in parts], -1)


def _triton_ok(parts: Tuple[torch.Tensor, ...]) -> bool:
    x = parts[0]
    d = x.shape[-1]
    return (
        triton is not None
        and (x.is_cuda or os.environ.get("TRITON_INTERPRET", "0") == "1")
        and 16 <= d <= 256
        and d * len(parts) <= 256
        and d & (d - 1) == 0
    )


def _use_triton(parts: Tuple[torch.Tensor, ...], backend: str) -> bool:
    x = parts[0]
    if backend == "auto":
        return x.is_cuda and os.environ.get("DIT_SPARSE_KMEANS_TRITON", "1") != "0" and _triton_ok(parts)
    if backend == "triton":
        if not _triton_ok(parts):
            raise ValueError(
                "the triton k-means kernel needs triton, a CUDA tensor (or TRITON_INTERPRET=1) and points of at most "
                "256 channels in one or two power-of-two parts of at least 16; use backend='torch'"
            )
        return True
    if backend != "torch":
        raise ValueError(f"backend={backend!r} is not known; allowed: 'auto', 'torch', 'triton'")
    return False


def _triton_step(parts, mean, centroids, accumulate: bool):
    """Labels of the points (parts [N, L, D] each) for centroids [N, K, D_total] (float32, uncentred), and with
    ``accumulate`` the centred sums and counts of the clusters (float32 [N, K, D_total], [N, K])."""
    x = parts[0]
    x2 = parts[-1]
    n, length, d = x.shape
    d_total = d * len(parts)
    k = centroids.shape[1]
    dot_dtype = x.dtype if x.dtype in (torch.float16, torch.bfloat16) else torch.float32
    centred = centroids - mean.unsqueeze(1)
    c_norm = (centred**2).sum(-1).contiguous()
    cm = centred.to(dot_dtype).contiguous()
    labels = torch.empty(n, length, dtype=torch.int64, device=x.device)
    sums = torch.zeros(n, k, d_total, device=x.device, dtype=torch.float32) if accumulate else labels
    counts = torch.zeros(n, k, device=x.device, dtype=torch.float32) if accumulate else labels
    cfg = TRITON_CONFIG
    grid = (triton.cdiv(length, cfg["BLOCK_L"]), n)
    _assign_kernel[grid](
        x, x2, mean.contiguous(), cm, c_norm, labels, sums, counts, length, k, x.stride(0), x.stride(1), x.stride(2),
        x2.stride(0), x2.stride(1), x2.stride(2),
        D=d, TWO=len(parts) == 2, BLOCK_L=cfg["BLOCK_L"], BLOCK_K=cfg["BLOCK_K"], ACCUM=accumulate,
        PREC="ieee" if dot_dtype == torch.float32 else "tf32",
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
    return labels, sums, counts


def _triton_sums(parts, mean, labels, k: int):
    """Centred sums (float32 [N, K, D_total]) and counts (float32 [N, K]) of the clusters of ``labels``: the points
    sorted by cluster (a radix sort of the labels), then one program per cluster sums its run in registers. At
    Wan-14B 720p the assignment kernel's float32 atomics (256 per point) took as long as the assignment itself
    (4.2 of 8.6 ms per iteration, ``2026-12-03_NVIDIA-H200_kmeans-micro.json``)."""
    counts = cluster_counts(labels, k)
    icounts = counts.to(torch.int32)
    starts = icounts.cumsum(-1, dtype=torch.int32) - icounts
    order = cluster_order(labels, k).to(torch.int32)
    return segment_sums(parts, order, starts, icounts, mean), counts


def segment_sums(parts, order: torch.Tensor, starts: torch.Tensor, counts: torch.Tensor,
                 mean: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sums of runs of reordered points by one Triton program per (run, row), in registers (no atomics, no copy of
    the reordered points): run j of row n sums the points ``order[n, starts[n, j] : starts[n, j] + counts[n, j]]``.

    Args:
        parts (`torch.Tensor` [N, L, D], or a pair): points, read in place (any strides); a pair is summed as the
            concatenation of its rows, as in `batched_kmeans`.
        order (`torch.Tensor` int [N, L]): the token order the runs are contiguous in.
        starts, counts (`torch.Tensor` int [N, J]): first position (in ``order``) and length of every run; an empty
            run sums to 0.
        mean (`torch.Tensor` float32 [N, D_total], optional): subtracted from every point (k-means' centring).

    Returns:
        `torch.Tensor` float32 [N, J, D_total]. Needs `_triton_ok` (CUDA or ``TRITON_INTERPRET=1``).
    """
    parts = _parts(parts)
    if not _triton_ok(parts):
        raise ValueError("segment_sums needs triton, a CUDA tensor (or TRITON_INTERPRET=1) and points of at most 256 "
                         "channels in one or two power-of-two parts of at least 16")
    x, x2 = parts[0], parts[-1]
    n, length, d = x.shape
    d_total = d * len(parts)
    runs = starts.shape[-1]
    if mean is None:
        mean = torch.zeros(n, d_total, device=x.device, dtype=torch.float32)
    sums = torch.empty(n, runs, d_total, device=x.device, dtype=torch.float32)
    _segment_sum_kernel[(runs, n)](
        x, x2, mean.contiguous(), order.to(torch.int32).contiguous(), starts.to(torch.int32).contiguous(),
        counts.to(torch.int32).contiguous(), sums, length, runs,
        x.stride(0), x.stride(1), x.stride(2), x2.stride(0), x2.stride(1), x2.stride(2),
        D=d, TWO=len(parts) == 2, BLOCK_R=32, num_warps=4,
    )  # fmt: skip
    return sums


def _assign_torch(xc: torch.Tensor, centred: torch.Tensor) -> torch.Tensor:
    """Labels of centred points xc [N, L, D] for centred centroids [N, K, D], by batched GEMM and argmin."""
    dtype = _compute_dtype(xc)
    xm, cm = xc.to(dtype), centred.to(dtype)
    c_norm = (centred.float() ** 2).sum(-1).to(dtype).unsqueeze(1)  # [N, 1, K]
    n, length, _ = xc.shape
    k = centred.shape[1]
    chunk = max(1, _ASSIGN_CHUNK_ELEMENTS // max(1, n * k))
    labels = []
    for s in range(0, length, chunk):
        # ||c||^2 - 2 x.c in one batched GEMM; the tile never exceeds _ASSIGN_CHUNK_ELEMENTS.
        dist = torch.baddbmm(c_norm, xm[:, s : s + chunk], cm.transpose(1, 2), alpha=-2.0)
        labels.append(dist.argmin(-1))
    return labels[0] if len(labels) == 1 else torch.cat(labels, 1)


def assign_clusters(x: torch.Tensor, centroids: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Index of the nearest centroid of every point.

    Args:
        x (`torch.Tensor` [N, L, D], or a pair of them): points (a pair: each point is its two rows concatenated).
        centroids (`torch.Tensor` [N, K, D_total]): centroids.
        backend (`str`, defaults to "auto"): "torch" (batched GEMM, then argmin), "triton" (fused kernel: the
            distance matrix is never written) or "auto" (triton on CUDA when available, unless the environment
            variable ``DIT_SPARSE_KMEANS_TRITON=0``).

    Returns:
        `torch.Tensor` int64 [N, L].
    """
    parts = _parts(x)
    mean = _points_mean(parts)
    if _use_triton(parts, backend):
        return _triton_step(parts, mean, centroids.float(), False)[0]
    return _assign_torch(_joined(parts).float() - mean.unsqueeze(1), centroids.float() - mean.unsqueeze(1))


def update_centroids(
    x32: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Centroids as the means of their points (segmented sums); empty clusters keep their previous centroid.

    Args:
        x32 (`torch.Tensor` float32 [N, L, D]): points.
        labels (`torch.Tensor` int64 [N, L]): cluster of every point.
        centroids (`torch.Tensor` float32 [N, K, D]): previous centroids.

    Returns:
        ``(centroids, counts)``: float32 [N, K, D] and float32 [N, K] (points per cluster).
    """
    n, _, d = x32.shape
    k = centroids.shape[1]
    sums = torch.zeros(n, k, d, device=x32.device, dtype=torch.float32)
    sums.scatter_add_(1, labels.unsqueeze(-1).expand(-1, -1, d), x32)
    counts = cluster_counts(labels, k)
    return cluster_means(sums, counts, centroids), counts


def cluster_means(sums: torch.Tensor, counts: torch.Tensor, previous: torch.Tensor,
                  centre: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The k-means update: every cluster's mean from its sum (float32 [N, K, D]) and size ([N, K]), plus ``centre``
    ([N, D], where the sums are of centred points); an empty cluster keeps its ``previous`` centroid [N, K, D]."""
    means = sums / counts.clamp(min=1).unsqueeze(-1)
    if centre is not None:
        means = means + centre.unsqueeze(1)
    return torch.where(counts.unsqueeze(-1) > 0, means, previous)


def cluster_counts(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Points per cluster, float32 [N, K] (a scatter, not ``bincount``, which would read the maximum on the host)."""
    n, length = labels.shape
    ones = torch.ones(1, 1, device=labels.device, dtype=torch.float32).expand(n, length)
    return torch.zeros(n, k, device=labels.device, dtype=torch.float32).scatter_add_(1, labels, ones)


def cluster_order(labels: torch.Tensor, k: int) -> torch.Tensor:
    """The permutation (int64, same shape) that sorts ``labels`` in [0, k): clusters contiguous in label order.

    A stable sort keeps the original token order inside every cluster (coalesced gathers, reproducible layouts); the
    keys are narrowed to int16 when they fit, which makes the GPU radix sort cheaper (fewer passes).
    """
    keys = labels.to(torch.int16) if k <= torch.iinfo(torch.int16).max else labels.to(torch.int32)
    return torch.sort(keys, dim=-1, stable=True).indices


def batched_kmeans(
    x: torch.Tensor, k: int, iters: int, init: Optional[torch.Tensor] = None, backend: str = "auto",
    sample: int = 1, update_last: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with a fixed number of iterations, independently per row.

    One iteration assigns every point to its nearest centroid and moves each centroid to the mean of its points, so
    the returned centroids are exactly the means of the returned clusters (what the attention score estimate wants).
    With ``iters == 0`` the points are only assigned to ``init`` (which is returned unchanged). With ``sample`` > 1
    the iterations before the last fit the centroids on every ``sample``-th point only (a strided view, no copy); the
    last one assigns and averages every point, so the returned labels, centroids and counts stay exact.

    Args:
        x (`torch.Tensor` [N, L, D], or a pair of them): points (any float dtype; a pair: each point is its two rows
            concatenated, read in place by the triton engine).
        k (`int`): clusters per row, ``1 <= k <= L``.
        iters (`int`): Lloyd iterations (>= 0).
        init (`torch.Tensor` [N, k, D], optional): initial centroids (warm start); default `strided_init`.
        backend (`str`, defaults to "auto"): "torch", "triton" (one fused kernel per iteration) or "auto"; see
            `assign_clusters`.
        sample (`int`, defaults to 1): the iterations before the last use every ``sample``-th point (cut so that
            a sample keeps at least ``k`` points).
        update_last (`bool`, defaults to True): False leaves out the last iteration's update: the labels and counts
            are those of the last assignment and the centroids the ones it assigned to, whose means the caller takes
            itself where it sums the same points anyway (semantic's joint plan sums [q, k] per cluster piece for its
            block means: one pass over the points and one sort of the labels fewer per plan).

    Returns:
        ``(labels, centroids, counts)``: int64 [N, L], float32 [N, k, D_total], float32 [N, k].
    """
    parts = _parts(x)
    n, length = parts[0].shape[:2]
    d = sum(p.shape[-1] for p in parts)
    if not 1 <= k <= length:
        raise ValueError(f"k={k} clusters need 1 <= k <= L={length}")
    if init is not None and init.shape != (n, k, d):
        raise ValueError(f"init must have shape {(n, k, d)}, got {tuple(init.shape)}")
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise ValueError(f"sample must be an int >= 1 (every sample-th point), got {sample!r}")
    sample = max(1, min(sample, length // k))
    sampled = parts if sample == 1 else tuple(p[:, ::sample] for p in parts)
    # k-means is translation invariant: work on centred points, whose half-precision dot products stay accurate
    # when queries or keys share a large common component. Any centre near the points does; a warm start takes its
    # centroids' mean (K rows) instead of the points' (two passes over q and k: ~0.1 of a 1.3 ms plan at Wan-1.3B
    # 480p, 0.4 of 6.6 ms at HunyuanVideo 720p, session 22's profiled steps).
    if init is None:
        centroids = torch.cat([strided_init(p, k) for p in parts], -1)
        mean = _points_mean(parts)  # [N, D_total]
    else:
        centroids = init.float()
        mean = centroids.mean(1)
    if _use_triton(parts, backend):
        for i in range(max(iters, 1)):
            points = sampled if i < iters - 1 else parts
            if i == iters - 1 and not update_last:
                labels = _triton_step(points, mean, centroids, False)[0]
                return labels, centroids, cluster_counts(labels, k)
            if SUMS_BY_SORT:
                labels = _triton_step(points, mean, centroids, False)[0]
                sums, counts = _triton_sums(points, mean, labels, k)
            else:
                labels, sums, counts = _triton_step(points, mean, centroids, True)
            if iters > 0:
                centroids = cluster_means(sums, counts, centroids, mean)
        return labels, centroids, counts
    xc = _joined(parts).float() - mean.unsqueeze(1)
    centred = centroids - mean.unsqueeze(1)
    if iters == 0:  # init returned as given (not re-centred: float rounding)
        labels = _assign_torch(xc, centred)
        return labels, centroids, cluster_counts(labels, k)
    for i in range(iters):
        points = xc[:, ::sample] if i < iters - 1 else xc
        labels = _assign_torch(points, centred)
        if i == iters - 1 and not update_last:  # the centroids assigned to (as given when there was no update)
            return labels, centroids if i == 0 else centred + mean.unsqueeze(1), cluster_counts(labels, k)
        centred, counts = update_centroids(points, labels, centred)
    return labels, centred + mean.unsqueeze(1), counts


def inertia(x: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Sum of squared distances of the points to their centroids, per row, float32 [N]."""
    c = centroids.float().gather(1, labels.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return ((x.float() - c) ** 2).sum((1, 2))


__all__ = [
    "assign_clusters", "batched_kmeans", "cluster_counts", "cluster_means", "cluster_order", "inertia", "segment_sums",
    "strided_init", "update_centroids",
]
