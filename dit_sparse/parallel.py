"""Ulysses context parallelism for the sparse path: exchange sequence shards for head shards and back.

Under Diffusers' ``ContextParallelConfig(ulysses_degree=N)`` each rank enters attention with 1/N of the tokens and all
heads. Dense calls go through ``dispatch_attention_fn``, which does its own all-to-all. Sparse calls need the whole
video grid, so we do the same exchange ourselves: after it, each rank holds every token for H/N heads, the pattern sees
the full geometry, and caches (keyed per process) live per rank.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.distributed as dist


def ulysses_group(parallel_config) -> Optional[Tuple[object, int]]:
    """(process group, degree) when Ulysses is active, None otherwise; ring attention is rejected clearly."""
    cp = getattr(parallel_config, "context_parallel_config", None) if parallel_config is not None else None
    if cp is None:
        return None
    if (getattr(cp, "ring_degree", 1) or 1) > 1:
        raise ValueError(
            "dit_sparse does not support ring attention: each rank would see only part of the video, so a pattern "
            "cannot choose blocks; use ContextParallelConfig(ulysses_degree=N) instead"
        )
    degree = getattr(cp, "ulysses_degree", 1) or 1
    if degree <= 1:
        return None
    return cp._ulysses_mesh.get_group(), degree


def _all_to_all(x: torch.Tensor, group) -> torch.Tensor:
    # Works on NCCL and on gloo (CPU tests); the input is split evenly along its first dimension.
    x = x.contiguous()
    out = torch.empty_like(x)  # after .contiguous(), so the buffer is dense in the order all_to_all assumes
    dist.all_to_all_single(out, x, group=group)
    return out


def seq_to_heads(x: torch.Tensor, group, world: int) -> torch.Tensor:
    """(B, L/N, H, D) on each rank -> (B, L, H/N, D)."""
    b, ls, h, d = x.shape
    if h % world:
        raise ValueError(f"{h} heads cannot be split over ulysses_degree={world}; choose a degree that divides it")
    x = x.reshape(b, ls, world, h // world, d).permute(2, 1, 0, 3, 4)  # chunk r -> rank r (its head group)
    x = _all_to_all(x, group)  # now chunk r = sequence shard of rank r
    return x.permute(2, 0, 1, 3, 4).reshape(b, world * ls, h // world, d)


def heads_to_seq(x: torch.Tensor, group, world: int) -> torch.Tensor:
    """(B, L, H/N, D) -> (B, L/N, H, D) on each rank (inverse of ``seq_to_heads``)."""
    b, length, hl, d = x.shape
    ls = length // world
    x = x.reshape(b, world, ls, hl, d).permute(1, 3, 0, 2, 4)  # chunk r -> rank r (its sequence shard)
    x = _all_to_all(x, group)  # now chunk r = head group r
    return x.permute(2, 3, 0, 1, 4).reshape(b, ls, world * hl, d)
