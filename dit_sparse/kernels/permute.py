"""Per-head token permutations (semantic's orders) in one Triton pass over contiguous rows.

A layout with a token order per head (``q_perm`` / ``kv_perm`` of shape [B or 1, H, L]: semantic's k-means clusters)
makes the front door gather q, k and v into that order and scatter the output back. With torch these were
``gather`` / ``scatter_`` along L of the (B, H, L, D) view of Diffusers' (B, L, H, D) memory, with an index expanded
over D: ~1.1 TB/s on an H200, and the largest part of what a semantic step added to the yardstick's GPU time besides
planning (85 ms per HunyuanVideo 720p step of 15 blocks, 120 ms per Wan-14B 720p step of 10 blocks;
``2026-12-04_NVIDIA-H200_step-{hunyuan-720p,wan14b-720p}-semantic-profile.json``).

Here a program copies a run of tokens of one (batch, head): it reads each token's D channels (one contiguous row of
2·D bytes in the input's memory) and writes them contiguously into (B, L, H, D) memory, the layout Diffusers'
processors hand over and read back, so the processor's transpose after attention is free. The scatter (``inverse``)
reads the rows in order and writes them to their original positions; a permutation writes every row once, so no two
programs write the same place.

Measured on an H200 (``python bench/perm_gather.py --tokens 119056 --heads 24``, HunyuanVideo 720p's size,
``2026-12-04_NVIDIA-H200_perm-gather-per-head-hunyuan.json``): 3.57 TB/s for the gather and 3.55 for the scatter,
against 1.25 / 1.11 for torch's; in a HunyuanVideo step the passes went from 85 to 23 ms.

It is a copy: the result is bit for bit the torch path's. Used on CUDA outside torch.compile (Inductor compiles the
torch gather itself) and without autograd (no backward here); ``DIT_SPARSE_TRITON_PERMUTE``: unset = on CUDA, ``0`` =
never, ``1`` = also under ``TRITON_INTERPRET=1`` on a CPU (the tests).
"""

from __future__ import annotations

import os

import torch

from ..config import env_flag

try:
    import triton
    import triton.language as tl
except Exception:  # no (usable) triton: the front door keeps torch's gather
    triton = None

ENV = "DIT_SPARSE_TRITON_PERMUTE"
_BLOCK_TOKENS = 64


def enabled(x: torch.Tensor, perm: torch.Tensor) -> bool:
    """Whether `permute_tokens` runs for x (B, H, L, D) and a per-head order ``perm`` here."""
    if triton is None or not env_flag(ENV, True) or torch.compiler.is_compiling():
        return False
    if torch.is_grad_enabled() and x.requires_grad:
        return False
    if x.dim() != 4 or perm.dim() != 3 or x.device != perm.device:
        return False
    return x.is_cuda or (env_flag(ENV, False) and os.environ.get("TRITON_INTERPRET", "0") == "1")


if triton is not None:

    @triton.jit
    def _permute_rows(x_ptr, out_ptr, perm_ptr, L, H, D,
                      sx_b, sx_h, sx_l, sx_d, so_b, so_h, so_l, so_d, sp_b, sp_h, sp_l,
                      SCATTER: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        pid_t = tl.program_id(0)
        bh = tl.program_id(1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        t = (pid_t * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
        d = tl.arange(0, BLOCK_D).to(tl.int64)
        in_seq = t < L
        p = tl.load(perm_ptr + b * sp_b + h * sp_h + t * sp_l, mask=in_seq, other=0).to(tl.int64)
        mask = in_seq[:, None] & (d[None, :] < D)
        if SCATTER:  # out[b, h, p[t]] = x[b, h, t]
            src, dst = t, p
        else:  # out[b, h, t] = x[b, h, p[t]]
            src, dst = p, t
        rows = tl.load(x_ptr + b * sx_b + h * sx_h + src[:, None] * sx_l + d[None, :] * sx_d, mask=mask)
        tl.store(out_ptr + b * so_b + h * so_h + dst[:, None] * so_l + d[None, :] * so_d, rows, mask=mask)


def permute_tokens(x: torch.Tensor, perm: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """x (B, H, L, D), any strides, with each (batch, head) row's tokens in ``perm``'s order ([B or 1, H or 1, L]):
    token i of the result is x's token ``perm[b, h, i]``; with ``inverse``, token ``perm[b, h, i]`` of the result is
    x's token i (the scatter back). Returns a (B, H, L, D) view of new (B, L, H, D) memory."""
    b, h, length, d = x.shape
    out = torch.empty(b, length, h, d, device=x.device, dtype=x.dtype).transpose(1, 2)
    index = perm.expand(b, h, length)
    grid = (triton.cdiv(length, _BLOCK_TOKENS), b * h)
    _permute_rows[grid](x, out, index, length, h, d, *x.stride(), *out.stride(), *index.stride(),
                        SCATTER=inverse, BLOCK_T=_BLOCK_TOKENS, BLOCK_D=triton.next_power_of_2(d))
    return out


__all__ = ["ENV", "enabled", "permute_tokens"]
