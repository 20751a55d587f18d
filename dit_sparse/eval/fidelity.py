"""Attention fidelity of the block-selection patterns at matched density, on synthetic video-DiT q/k/v (CPU).

For every method and target density this module tunes the method's knob until its layout reaches the density, then
measures how far the block-sparse output is from dense attention (``rel_l2``) and how much of the dense attention
probability mass falls inside the selected blocks (``mass_kept``). A random block layout at the same density is the
baseline. Nothing here builds an L x L tensor for the whole sequence: dense attention and the mass are computed in
chunks of query rows.

    python -m dit_sparse.eval.fidelity [--out bench/results/fidelity.json] [--markdown]

The synthetic q/k/v (`synthetic_qkv`) mimic the two structures video DiTs are known to show, with the model's real
3-D RoPE; see its docstring for the construction and the parameters. They are a stand-in for captured activations
(``bench`` measures those on a GPU), so the numbers compare methods against each other, not against the papers.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from ..geometry import VideoGeometry
from ..layout import BlockLayout, cdiv

# Score elements (B * H * rows * L) per chunk of dense attention: 2**24 floats = 64 MiB.
_DENSE_CHUNK_ELEMENTS = 1 << 24

DEFAULT_GEOMETRY = VideoGeometry(21, 16, 16)
DEFAULT_METHODS = ("radial", "draft", "semantic", "random")
DEFAULT_DENSITIES = (0.1, 0.2, 0.3)

# --------------------------------------------------------------------------------------------- 3-D rotary embedding
# theta and rope_axes_dim of the Diffusers models (WanRotaryPosEmbed, HunyuanVideoRotaryPosEmbed).
ROPE_THETA = {"wan": 10000.0, "hunyuan_video": 256.0}


def rope_axes_dims(head_dim: int, model: str = "wan") -> Tuple[int, int, int]:
    """(t, h, w) channels of the 3-D RoPE for ``head_dim``.

    Wan (Diffusers' ``WanRotaryPosEmbed``): ``h = w = 2 * (head_dim // 6)``, ``t = head_dim - h - w`` (44, 42, 42 for
    128). HunyuanVideo: ``rope_axes_dim = (16, 56, 56)`` for 128, scaled proportionally (8, 28, 28 for 64), every band
    even.
    """
    if head_dim < 6 or head_dim % 2:
        raise ValueError(f"head_dim must be an even number >= 6, got {head_dim}")
    if model == "wan":
        h = w = 2 * (head_dim // 6)
        return head_dim - h - w, h, w
    if model == "hunyuan_video":
        t = max(2, 2 * round(head_dim * 16 / 128 / 2))
        h = 2 * ((head_dim - t) // 4)
        return t, h, head_dim - t - h
    raise ValueError(f"model must be 'wan' or 'hunyuan_video', got {model!r}")


def rope_3d(
    x: torch.Tensor, geometry: VideoGeometry, model: str = "wan", theta: Optional[float] = None
) -> torch.Tensor:
    """Applies the model's 3-D RoPE to ``x`` (..., L, D): consecutive channel pairs rotate by position x frequency.

    Channels ``[0, t)`` rotate with the frame index, ``[t, t + h)`` with the row, ``[t + h, D)`` with the column;
    each band has the frequencies ``theta ** (-2i / band)`` (Diffusers' ``get_1d_rotary_pos_embed``).
    """
    d = x.shape[-1]
    theta = ROPE_THETA[model] if theta is None else theta
    coords = geometry.token_coords(device=x.device).double()  # [L, 3]
    angles = []
    for axis, band in enumerate(rope_axes_dims(d, model)):
        freqs = theta ** (-torch.arange(0, band, 2, device=x.device, dtype=torch.float64) / band)
        angles.append(coords[:, axis : axis + 1] * freqs)  # [L, band / 2]
    ang = torch.cat(angles, dim=-1)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out


# ----------------------------------------------------------------------------------------------- synthetic q, k, v
def _random_orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    qm, r = torch.linalg.qr(a)
    return (qm * torch.sign(torch.diagonal(r))).float()


def _smooth_field(geometry: VideoGeometry, dim: int, sigma: Tuple[float, float, float], gen) -> torch.Tensor:
    """White noise on the (F, H, W) grid blurred by a separable Gaussian, unit variance per channel: [L, dim]."""
    f, h, w = geometry.key
    x = torch.randn(dim, f, h, w, generator=gen)
    for axis, s in zip((1, 2, 3), sigma):
        if s <= 0:
            continue
        radius = max(1, int(math.ceil(3 * s)))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kern = torch.exp(-0.5 * (t / s) ** 2)
        kern = kern / kern.sum()
        n = x.shape[axis]
        # Reflect-free "same" convolution by explicit shifts (grids are small; avoids conv padding limits).
        out = torch.zeros_like(x)
        norm = torch.zeros(n)
        for off, wt in zip(t.long().tolist(), kern.tolist()):
            lo, hi = max(0, -off), min(n, n - off)
            if lo >= hi:
                continue
            src = x.narrow(axis, lo + off, hi - lo)
            out.narrow(axis, lo, hi - lo).add_(src, alpha=wt)
            norm[lo:hi] += wt
        shape = [1, 1, 1, 1]
        shape[axis] = n
        x = out / norm.view(shape)
    x = x.reshape(dim, -1).t()
    return (x - x.mean(0)) / x.std(0).clamp(min=1e-6)


def _object_memberships(geometry: VideoGeometry, n_objects: int, gen: torch.Generator) -> torch.Tensor:
    """Soft blobs whose centres move across frames: [n_objects, L] in [0, 1]."""
    f, h, w = geometry.key
    coords = geometry.token_coords().float()
    fr, yy, xx = coords[:, 0], coords[:, 1], coords[:, 2]
    out = []
    for _ in range(n_objects):
        u = torch.rand(5, generator=gen)
        cy0, cx0 = u[0] * (h - 1), u[1] * (w - 1)
        # Speed up to ~0.6 tokens/frame in each direction; radius 12-22 % of the frame's smaller side.
        vy, vx = (u[2] - 0.5) * 1.2, (u[3] - 0.5) * 1.2
        radius = (0.12 + 0.10 * u[4]) * min(h, w) + 0.5

        def bounce(p, n):  # reflect at the frame borders (triangle wave)
            period = 2 * max(n - 1, 1)
            p = torch.remainder(p, period)
            return torch.where(p > n - 1, period - p, p)

        cy = bounce(cy0 + vy * fr, h)
        cx = bounce(cx0 + vx * fr, w)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        out.append(torch.exp(-0.5 * d2 / radius**2))
    return torch.stack(out) if out else torch.zeros(0, geometry.num_tokens)


def synthetic_qkv(
    geometry: VideoGeometry,
    heads: int = 4,
    head_dim: int = 64,
    seed: int = 0,
    model: Optional[str] = None,
    batch: int = 1,
    n_objects: int = 4,
    semantic_heads: float = 0.25,
    pos_scale: float = 1.8,
    sem_scale: float = 1.0,
    smooth_sigma: Tuple[float, float, float] = (1.0, 2.0, 2.0),
    smooth_weight: float = 0.5,
    background_weight: float = 0.5,
    noise: float = 0.5,
    dtype: torch.dtype = torch.float32,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic video-DiT queries, keys and values (B, H, L, D) with the structure real DiT attention shows.

    Construction, per batch entry and head ``h`` (all random draws from ``torch.Generator(seed)``):

    1. **Positional decay through the model's 3-D RoPE.** A per-head vector ``c_h`` (D channels, unit variance, its
       energy split between the t/h/w RoPE bands with log-uniform band gains in [1/4, 4], so some heads decay mostly
       in time and others mostly in space) plus a slowly varying field ``S`` (white noise on the (F, H, W) grid blurred
       by a Gaussian of ``smooth_sigma`` = (frames, rows, cols) tokens, mixed into each head by a random orthogonal
       matrix, weight ``smooth_weight``) forms a positional component shared by q and k; it is rotated with the
       model's RoPE (`rope_3d`: Wan's 44/42/42 split of 128 channels, HunyuanVideo's 16/56/56, proportionally for
       other head sizes). ``RoPE(c)_m . RoPE(c)_n`` is a sum of cosines of the position difference, largest at 0
       and falling with distance along each axis, so nearby tokens score high.
    2. **Content clusters that move.** ``n_objects`` soft blobs (Gaussian, radius 12-22 % of the frame) whose centres
       move up to 0.6 tokens per frame and bounce at the borders; each has a prototype vector, and the remaining
       tokens share a background prototype (weight ``background_weight``). The membership-weighted prototypes, mixed
       by a per-head random orthogonal matrix, are added to q and k after RoPE (content living in the slowly
       rotating RoPE channels, which barely turn across the grid), so same-object tokens attend each other however
       far apart they are.
    3. **Heads differ.** A fraction ``semantic_heads`` of the heads is semantic (positional scale x 0.5, content
       scale x 1.5); the others are positional (positional scale x 1, content x 0.5); every head's scales are then
       jittered by a factor in [0.85, 1.15]. With the defaults most heads are dominated by positional decay, as the
       Radial Attention and Sparse-vDiT analyses report for Wan and HunyuanVideo.
    4. Independent Gaussian noise of std ``noise`` is added to q and to k. v is a smooth field, per-object value
       prototypes and noise (equal weights), so the dense output carries both local and object structure.

    Scales: q and k channels have roughly unit variance times ``pos_scale`` (positional) and ``sem_scale`` (content);
    attention uses the standard ``1 / sqrt(D)`` softmax scale. ``pos_scale = 1.8`` was chosen so that, on the default
    21 x 16 x 16 grid, the positional heads put 60-80 % of their mass on the frames at distance <= 1 (3 of 21
    frames) and the semantic head ~45 %; the mean entropy per head is 40-60 % of ``log L`` (3.5-5.2 nats of 8.6),
    between a one-hot and a uniform softmax. At 1.0 attention is diffuse (entropy ~85 % of ``log L``, ~30 % of the
    mass on those frames); at 2.0 the entropy falls to ~30 % of ``log L``.

    Args:
        geometry (`VideoGeometry`): the token grid; ``model`` defaults to ``geometry.model``.
        heads, head_dim, batch (`int`): tensor sizes.
        seed (`int`): random seed (the result is deterministic).

    Returns:
        ``(q, k, v)``, each (batch, heads, L, head_dim) in ``dtype``.
    """
    model = geometry.model if model is None else model
    if model not in ROPE_THETA:
        raise ValueError(f"model must be 'wan' or 'hunyuan_video', got {model!r}")
    gen = torch.Generator().manual_seed(int(seed))
    length, d = geometry.num_tokens, head_dim
    bands = rope_axes_dims(d, model)
    band_of = torch.repeat_interleave(torch.arange(3), torch.tensor(bands))

    n_sem = int(round(heads * semantic_heads))
    qs, ks, vs = [], [], []
    for _ in range(batch):
        member = _object_memberships(geometry, n_objects, gen)  # [O, L]
        background = (1.0 - member.sum(0)).clamp(min=0.0)  # [L]
        smooth = _smooth_field(geometry, d, smooth_sigma, gen)  # [L, D]
        smooth_v = _smooth_field(geometry, d, smooth_sigma, gen)
        protos = torch.randn(n_objects + 1, d, generator=gen)  # objects + background
        protos_v = torch.randn(n_objects + 1, d, generator=gen)
        weights = torch.cat([member, background_weight * background.unsqueeze(0)], 0)  # [O + 1, L]
        content = weights.t() @ protos  # [L, D]
        content_v = weights.t() @ protos_v
        semantic = torch.zeros(heads, dtype=torch.bool)
        semantic[torch.randperm(heads, generator=gen)[:n_sem]] = True
        qh, kh, vh = [], [], []
        for h in range(heads):
            gains = torch.exp((torch.rand(3, generator=gen) * 2 - 1) * math.log(4.0))  # log-uniform [1/4, 4]
            c = torch.randn(d, generator=gen) * gains[band_of].sqrt()
            c = c / c.pow(2).mean().sqrt()
            mix_s, mix_c, mix_v = (_random_orthogonal(d, gen) for _ in range(3))
            jitter = 0.85 + 0.3 * torch.rand(2, generator=gen)
            p_scale = pos_scale * (0.5 if semantic[h] else 1.0) * float(jitter[0])
            c_scale = sem_scale * (1.5 if semantic[h] else 0.5) * float(jitter[1])
            pos = rope_3d(p_scale * (c + smooth_weight * smooth @ mix_s), geometry, model)  # [L, D]
            cont = c_scale * (content @ mix_c)
            q = pos + cont + noise * torch.randn(length, d, generator=gen)
            k = pos + cont + noise * torch.randn(length, d, generator=gen)
            v = (smooth_v @ mix_v + content_v @ mix_v.t() + torch.randn(length, d, generator=gen)) / math.sqrt(3)
            qh.append(q)
            kh.append(k)
            vh.append(v)
        qs.append(torch.stack(qh))
        ks.append(torch.stack(kh))
        vs.append(torch.stack(vh))
    return tuple(torch.stack(x).to(dtype).contiguous() for x in (qs, ks, vs))


# ------------------------------------------------------------------------------------------------ dense attention
def _row_chunk(b: int, h: int, lk: int, chunk_size: Optional[int]) -> int:
    if chunk_size is not None:
        return max(1, int(chunk_size))
    return max(1, _DENSE_CHUNK_ELEMENTS // max(1, b * h * lk))


def _score_chunks(q, k, scale, chunk_size=None, kv_valid_len=None) -> Iterator[Tuple[int, int, torch.Tensor]]:
    """Yields ``(r0, r1, S)``: the scaled scores [B, H, r1 - r0, Lk] of query rows r0:r1 (masked keys -inf)."""
    b, h, lq, _ = q.shape
    lk = k.shape[2]
    rows = _row_chunk(b, h, lk, chunk_size)
    kt = k.float().transpose(-1, -2)
    key_mask = None
    if kv_valid_len is not None:
        key_mask = torch.arange(lk, device=q.device).view(1, lk) >= kv_valid_len.to(q.device).long().view(-1, 1)
        key_mask = key_mask.view(-1, 1, 1, lk)
    for r0 in range(0, lq, rows):
        r1 = min(lq, r0 + rows)
        s = torch.matmul(q[:, :, r0:r1].float(), kt) * scale
        if key_mask is not None:
            s = s.masked_fill(key_mask, float("-inf"))
        yield r0, r1, s


def dense_attention(q, k, v, scale: Optional[float] = None, chunk_size: Optional[int] = None) -> torch.Tensor:
    """Exact softmax attention (B, H, L, D) in float32, chunked over query rows (``chunk_size`` rows at a time)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    out = torch.empty(*q.shape[:3], v.shape[-1], dtype=torch.float32, device=q.device)
    vf = v.float()
    for r0, r1, s in _score_chunks(q, k, scale, chunk_size):
        out[:, :, r0:r1] = torch.matmul(torch.softmax(s, dim=-1), vf)
    return out


def attention_entropy(q, k, scale: Optional[float] = None, chunk_size: Optional[int] = None) -> torch.Tensor:
    """Entropy (nats) of every query's dense attention distribution, [B, H, L] (chunked)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    out = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    for r0, r1, s in _score_chunks(q, k, scale, chunk_size):
        logp = torch.log_softmax(s, dim=-1)
        out[:, :, r0:r1] = -(logp.exp() * logp).sum(-1)
    return out


# ------------------------------------------------------------------------------------- token -> block maps of a layout
def _expand_bh(x: torch.Tensor, b: int, h: int) -> torch.Tensor:
    return x.expand(b, h, *x.shape[2:])


def token_blocks(layout: BlockLayout, which: str, batch: int, heads: int, device=None) -> torch.Tensor:
    """Block index of every token in the *original* order, [B, H, L] int64 (``which`` = "q" or "kv").

    The layout's block lists refer to the permuted sequence ``x.gather(2, perm)``: the token at permuted position p
    is original token ``perm[p]`` and lies in the block whose ``[start, next start)`` contains p (empty padding
    blocks, start == end, contain no token).
    """
    from ..kernels.reference import block_starts

    device = layout.kv_indices.device if device is None else device
    length = layout.seq_len_q if which == "q" else layout.seq_len_kv
    perm = layout.q_perm if which == "q" else layout.kv_perm
    starts = _expand_bh(block_starts(layout, which, device), batch, heads).contiguous()
    pos = torch.arange(length, device=device).expand(batch, heads, length).contiguous()
    blk_of_pos = (torch.searchsorted(starts, pos, right=True) - 1).clamp(0, max(starts.shape[-1] - 2, 0))
    if perm is None:
        return blk_of_pos
    perm = _expand_bh(perm.to(device=device, dtype=torch.long), batch, heads)
    return torch.empty_like(blk_of_pos).scatter_(2, perm, blk_of_pos)


class DenseReference:
    """Dense attention of one (q, k, v), computed once, and the dense block mass of fixed-block layouts (cached).

    ``out`` is the dense output [B, H, L, Dv] and ``entropy`` the entropy of every query's attention [B, H, L].

    Args:
        q, k, v (`torch.Tensor` (B, H, L, D)): the inputs.
        scale (`float`, optional): softmax scale, default ``1 / sqrt(D)``.
        chunk_size (`int`, optional): query rows per chunk (default: about 64 MiB of scores per chunk).
    """

    def __init__(self, q, k, v, scale: Optional[float] = None, chunk_size: Optional[int] = None):
        self.q, self.k, self.v = q, k, v
        self.scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        self.chunk_size = chunk_size
        b, h, lq, _ = q.shape
        vf = v.float()
        self.out = torch.empty(b, h, lq, vf.shape[-1], dtype=torch.float32, device=q.device)
        self.entropy = torch.empty(b, h, lq, dtype=torch.float32, device=q.device)  # nats, per query
        for r0, r1, s in self.chunks():
            logp = torch.log_softmax(s, dim=-1)
            p = logp.exp()
            self.out[:, :, r0:r1] = torch.matmul(p, vf)
            self.entropy[:, :, r0:r1] = -(p * logp).sum(-1)
        self._block_mass: Dict[tuple, torch.Tensor] = {}

    def chunks(self, kv_valid_len=None):
        return _score_chunks(self.q, self.k, self.scale, self.chunk_size, kv_valid_len)

    def fixed_block_mass(self, block_kv: int, kv_perm: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Dense probability mass of every query in every key block, [B, H, Lq, Nk] (cached).

        Key block j holds the tokens at positions ``[j * block_kv, (j + 1) * block_kv)`` of the key sequence, permuted
        by ``kv_perm`` ([B or 1, H or 1, Lk]) when given. Layouts sharing a permutation (the draft tiling is fixed per
        geometry) share one dense pass.
        """
        key = (block_kv, None if kv_perm is None else hash(kv_perm.detach().cpu().numpy().tobytes()))
        if key not in self._block_mass:
            b, h, lq, _ = self.q.shape
            lk = self.k.shape[2]
            nk = cdiv(lk, block_kv)
            out = torch.zeros(b, h, lq, nk, dtype=torch.float32, device=self.q.device)
            pad = nk * block_kv - lk
            perm = None if kv_perm is None else _expand_bh(kv_perm.to(self.q.device).long(), b, h).unsqueeze(2)
            for r0, r1, s in self.chunks():
                p = torch.softmax(s, dim=-1)
                if perm is not None:
                    p = p.gather(-1, perm.expand(-1, -1, r1 - r0, -1))
                if pad:
                    p = torch.nn.functional.pad(p, (0, pad))
                out[:, :, r0:r1] = p.view(b, h, r1 - r0, nk, block_kv).sum(-1)
            if len(self._block_mass) >= 8:
                self._block_mass.pop(next(iter(self._block_mass)))
            self._block_mass[key] = out
        return self._block_mass[key]

    def masked(self, q_blocks, kv_blocks, mask, kv_valid_len=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Block-sparse attention computed token by token from the scores: (output [B, H, Lq, Dv], mass [B, H, Lq]).

        Query token i attends key token j when ``mask[b, h, q_blocks[b, h, i], kv_blocks[b, h, j]]``; the output is
        the softmax over those keys (zeros when there are none), the mass is the dense probability they carry. This is
        what any block-sparse kernel computes, at the cost of one dense pass whatever the layout's block shapes.
        """
        b, h, lq, _ = self.q.shape
        lk, nk = self.k.shape[2], mask.shape[-1]
        vf = self.v.float()
        out = torch.empty(b, h, lq, vf.shape[-1], dtype=torch.float32, device=self.q.device)
        mass = torch.empty(b, h, lq, dtype=torch.float32, device=self.q.device)
        for r0, r1, s in self.chunks(kv_valid_len):
            c = r1 - r0
            rows = mask.gather(2, q_blocks[:, :, r0:r1, None].expand(-1, -1, -1, nk))  # [B, H, c, Nk]
            sel = rows.gather(3, kv_blocks[:, :, None, :].expand(-1, -1, c, lk))  # [B, H, c, Lk]
            lse = torch.logsumexp(s, dim=-1)
            s_sel = s.masked_fill(~sel, float("-inf"))
            lse_sel = torch.logsumexp(s_sel, dim=-1)
            empty = torch.isinf(lse_sel)
            p = torch.exp(s_sel - torch.where(empty, torch.zeros_like(lse_sel), lse_sel).unsqueeze(-1))
            out[:, :, r0:r1] = torch.matmul(p, vf)
            mass[:, :, r0:r1] = torch.where(empty, torch.zeros_like(lse), torch.exp(lse_sel - lse))
        return out, mass


def attention_error(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: BlockLayout,
    *,
    chunk_size: Optional[int] = None,
    reference: Optional[DenseReference] = None,
    sparse: str = "auto",
) -> Dict[str, float]:
    """How far block-sparse attention with ``layout`` is from dense attention.

    Args:
        q, k, v (`torch.Tensor` (B, H, L, D)): inputs (video tokens).
        layout (`BlockLayout`): the layout (fixed or variable blocks, with or without token permutations).
        chunk_size (`int`, optional): query rows per chunk of the dense computation (default: ~64 MiB of scores).
        reference (`DenseReference`, optional): precomputed dense attention of the same q, k, v (reused across
            layouts; its fixed-block mass is cached).
        sparse (`str`): how the sparse output is computed. "kernel": `dit_sparse.kernels.block_sparse_attention`
            with ``backend="reference"`` (applies the layout's permutations, gathers the selected blocks). "masked":
            `DenseReference.masked`, the same attention from a token-level mask in one dense pass (the tests check
            both agree). "auto" (default): the kernel for fixed-size blocks; "masked" for variable blocks, where the
            reference kernel pads every piece to a full block (semantic layouts with the config's default 500 key
            clusters on a few thousand tokens, ~10-token pieces, took ~100x a dense pass).

    Returns:
        dict with ``rel_l2`` = ||out_sparse - out_dense|| / ||out_dense|| (over the whole tensor), ``mass_kept`` = mean
        over queries (and batch, heads) of the dense attention probability inside the selected blocks, and
        ``density`` = ``layout.density()``.
    """
    if sparse not in ("auto", "kernel", "masked"):
        raise ValueError(f"sparse must be 'auto', 'kernel' or 'masked', got {sparse!r}")
    if layout.kv_valid_len is not None:
        raise ValueError("layouts with kv_valid_len (text padding) are not supported; fidelity is about video tokens")
    if reference is None:
        reference = DenseReference(q, k, v, chunk_size=chunk_size)
    b, h, lq, _ = q.shape
    device = q.device
    use_kernel = sparse == "kernel" or (sparse == "auto" and not layout.is_variable)
    q_blocks = token_blocks(layout, "q", b, h, device)  # [B, H, Lq]
    mask = _expand_bh(layout.to_block_mask().to(device), b, h)  # [B, H, Nq, Nk]
    fixed_kv = layout.kv_block_starts is None
    if use_kernel:
        from ..kernels import block_sparse_attention

        sparse_out = block_sparse_attention(q, k, v, layout, backend="reference", scale=reference.scale).float()
    if use_kernel and fixed_kv:
        mass_blocks = reference.fixed_block_mass(layout.block_kv, layout.kv_perm)
        selected = mask.gather(2, q_blocks.unsqueeze(-1).expand(-1, -1, -1, mask.shape[-1]))  # [B, H, Lq, Nk]
        mass = (mass_blocks * selected).sum(-1)
    else:
        kv_blocks = token_blocks(layout, "kv", b, h, device)
        masked_out, mass = reference.masked(q_blocks, kv_blocks, mask)
        if not use_kernel:
            sparse_out = masked_out
    dense = reference.out
    rel_l2 = float(torch.linalg.vector_norm(sparse_out - dense) / torch.linalg.vector_norm(dense).clamp(min=1e-30))
    return {"rel_l2": rel_l2, "mass_kept": float(mass.mean()), "density": float(layout.density())}


# ---------------------------------------------------------------------------------------------- random baseline
def random_block_layout(
    q_len: int, kv_len: int, heads: int, density: float, block: int = 64, seed: int = 0, batch: int = 1,
    kv_block: Optional[int] = None,
) -> BlockLayout:
    """Random key blocks per query block at ``density`` (the diagonal block always among them); key blocks of
    ``kv_block`` tokens when given (else ``block``).

    Every (batch, head) keeps ``round(density * Nq * Nk)`` blocks (at least one per row): each row gets ``floor`` or
    ``ceil`` of ``density * Nk`` blocks (the rows with one more drawn at random), namely its diagonal block
    ``floor(i * Nk / Nq)`` and the rest drawn uniformly without replacement, independently per (batch, head, row).
    ``layout.density()`` is then the requested density up to one block in ``Nq * Nk``.
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    kv_block = block if kv_block is None else kv_block
    nq, nk = cdiv(q_len, block), cdiv(kv_len, kv_block)
    total = min(nq * nk, max(nq, int(round(density * nq * nk))))
    gen = torch.Generator().manual_seed(int(seed))
    extra_rows = torch.rand(batch, heads, nq, generator=gen).argsort(-1) < (total % nq)
    counts = total // nq + extra_rows.long()  # [B, H, Nq]
    diag = (torch.arange(nq) * nk // nq).clamp(max=nk - 1)
    score = torch.rand(batch, heads, nq, nk, generator=gen)
    score[..., torch.arange(nq), diag] = 2.0  # ranked first
    rank = score.argsort(-1, descending=True).argsort(-1)
    mask = rank < counts.unsqueeze(-1)
    return BlockLayout.from_block_mask(mask, block, kv_block, q_len, kv_len)


# -------------------------------------------------------------------------------------------- matching densities
# method -> (knob, low, high, search in log space)
KNOBS = {
    "radial": ("decay", 1e-3, 16.0, True),
    "draft": ("density", 1e-3, 1.0, False),
    "semantic": ("top_p", 1e-3, 1.0, False),
}
DENSITY_TOLERANCE = 0.005


def _tune(
    build: Callable[[float], BlockLayout],
    target: float,
    lo: float,
    hi: float,
    log: bool,
    iters: int,
    first: Optional[float] = None,
) -> Tuple[float, BlockLayout, float, int]:
    """Search for the knob whose layout density is closest to ``target`` (density non-decreasing in the knob).

    Safeguarded false position: the next knob interpolates the bracket's densities (in log space for ``log``), kept
    at least 10 % of the bracket away from its ends, with a bisection step whenever the same end moved twice in a row;
    a smooth density converges in a few steps and a step function (radial) degrades to bisection. Stops within
    ``DENSITY_TOLERANCE``. Returns (knob, layout, density, evaluations); on a tie the sparser layout wins.
    """
    tried: List[Tuple[float, BlockLayout, float]] = []

    def evaluate(x):
        layout = build(x)
        tried.append((x, layout, float(layout.density())))
        return tried[-1][2]

    def best():
        x, layout, dens = min(tried, key=lambda t: (abs(t[2] - target), t[2]))
        return x, layout, dens, len(tried)

    if first is not None and abs(evaluate(first) - target) <= DENSITY_TOLERANCE:
        return best()
    d_lo, d_hi = evaluate(lo), evaluate(hi)
    if d_lo >= target or d_hi <= target:
        return best()
    to = (lambda x: math.log(x)) if log else (lambda x: x)
    back = (lambda y: math.exp(y)) if log else (lambda y: y)
    last_side = None
    for _ in range(iters):
        a, b = to(lo), to(hi)
        frac = (target - d_lo) / max(d_hi - d_lo, 1e-12)
        # Illinois-style guard: after two moves of the same end, bisect (false position can stall on one end).
        frac = 0.5 if last_side == "stalled" else min(max(frac, 0.1), 0.9)
        mid = back(a + frac * (b - a))
        dens = evaluate(mid)
        if abs(dens - target) <= DENSITY_TOLERANCE:
            break
        side = "lo" if dens < target else "hi"
        if side == "lo":
            lo, d_lo = mid, dens
        else:
            hi, d_hi = mid, dens
        last_side = "stalled" if side == last_side else side
    return best()


# Tokens of Wan 2.1 at 480p (21 x 30 x 52), the scale the semantic config's default cluster counts are meant for.
REFERENCE_TOKENS = 32760


def default_method_options(num_tokens: int) -> Dict[str, dict]:
    """Config options besides the knob used by `fidelity_table` for a grid of ``num_tokens`` tokens.

    semantic: the default cluster counts (100 query, 500 key clusters) scaled by ``num_tokens / 32760`` so that a
    cluster holds as many tokens as at Wan 480p (about 330 queries / 65 keys). Left at 100 / 500, a few-thousand
    token grid would get ~10-token key clusters, a near token-level selection that the method never has at real
    sizes (and 6x the k-means cost).
    """
    ratio = num_tokens / REFERENCE_TOKENS
    return {"semantic": {"q_clusters": max(4, round(100 * ratio)), "kv_clusters": max(8, round(500 * ratio))}}


def _make_pattern(method: str, block_size: int, **knob):
    from .. import make_config
    from ..patterns import make_pattern

    cfg = make_config(method, dense_steps=0, dense_layers=0, block_size=block_size, **knob)
    return make_pattern(cfg)


def pattern_available(method: str, block_size: int = 64, options: Optional[dict] = None) -> Optional[str]:
    """None when ``method``'s pattern can be built here, else the reason (the error message)."""
    if method == "random":
        return None
    if method not in KNOBS:
        return f"no density knob known for method {method!r}"
    try:
        _make_pattern(method, block_size, **(options or {}))
    # AttributeError / SyntaxError: a pattern file that exists but is not finished (no class yet, half written).
    except (ValueError, ImportError, NotImplementedError, AttributeError, SyntaxError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def tune_layout(
    method: str,
    q,
    k,
    geometry: VideoGeometry,
    target: float,
    block_size: int = 64,
    seed: int = 0,
    iters: int = 12,
    cache: Optional[dict] = None,
    options: Optional[dict] = None,
    min_density: Optional[Dict[str, float]] = None,
) -> Tuple[BlockLayout, Dict[str, float], float, int]:
    """The layout of ``method`` whose density is closest to ``target``.

    radial: search on ``decay`` (log scale; the static mask density is monotone in it but a step function, and it
    cannot go below the mask of frame pairs at distance <= 1 plus the sink); draft: ``density``, first tried at the
    target itself; semantic: search on ``top_p`` (at least ``min_kv_ratio`` of the key clusters are always kept);
    random: `random_block_layout` at the target.

    ``cache`` is passed to every ``plan`` call (a fresh dict when None): the semantic pattern clusters from scratch
    on the first call and warm-starts from the cached centroids afterwards, as it does on later denoising steps.
    ``options`` are further config fields of the method (held fixed during the search). ``min_density``, when given,
    records the lowest density seen per method (the search always tries the knob's lowest value when the target is
    not met at once, so this is the method's minimum density).

    Returns:
        ``(layout, {knob: value}, density, evaluations)``.
    """
    if method == "random":
        layout = random_block_layout(q.shape[2], k.shape[2], q.shape[1], target, block_size, seed, q.shape[0])
        if min_density is not None:
            min_density.setdefault(method, 0.0)
        return layout, {"density": target}, float(layout.density()), 1
    name, lo, hi, log = KNOBS[method]
    cache = {} if cache is None else cache

    def build(x):
        layout = _make_pattern(method, block_size, **(options or {}), **{name: float(x)}).plan(q, k, geometry, cache)
        if min_density is not None:
            min_density[method] = min(min_density.get(method, 1.0), float(layout.density()))
        return layout

    knob, layout, dens, n = _tune(build, target, lo, hi, log, iters, first=target if method == "draft" else None)
    return layout, {name: round(knob, 6)}, dens, n


def _unavailable_row(method: str, reason: str, target: Optional[float] = None) -> dict:
    return dict(
        method=method,
        target_density=target,
        density=None,
        rel_l2=None,
        mass_kept=None,
        knob=None,
        note=f"unavailable ({reason})",
    )


def fidelity_table(
    geometry: VideoGeometry = DEFAULT_GEOMETRY,
    heads: int = 4,
    head_dim: int = 64,
    densities: Sequence[float] = DEFAULT_DENSITIES,
    methods: Sequence[str] = DEFAULT_METHODS,
    block_size: int = 64,
    seed: int = 0,
    compare_random: bool = True,
    method_options: Optional[Dict[str, dict]] = None,
    progress: Optional[Callable[[str], None]] = None,
    info: Optional[dict] = None,
    **synthetic_kwargs,
) -> List[dict]:
    """Fidelity of each method at each target density on `synthetic_qkv` data.

    Args:
        geometry, heads, head_dim, seed, **synthetic_kwargs: the synthetic q, k, v (`synthetic_qkv`).
        densities (`Sequence[float]`): target densities.
        methods (`Sequence[str]`): "radial", "draft", "semantic", "random".
        block_size (`int`): block size of every layout.
        compare_random (`bool`): also evaluate a random layout at each row's reached density.
        method_options (`dict`, optional): extra config fields per method; default `default_method_options`.
        progress (`callable`, optional): called with a line of text after every row.
        info (`dict`, optional): filled with the method options used and statistics of the synthetic attention
            (mean entropy per head in nats and as a fraction of ``log L``).

    Returns:
        A list of rows ``dict(method, target_density, density, rel_l2, mass_kept, knob, note, search_evals,
        search_s)``; a method whose pattern is unavailable gives one row with ``density = rel_l2 = mass_kept =
        None`` and the reason in ``note``. When the reached density differs from the target by more than 0.01,
        ``note`` says why (the target is below the method's minimum density, or the density jumps past it).
        With ``compare_random``, non-random rows also carry ``random_rel_l2`` / ``random_mass_kept``: a random
        layout at the density the method actually reached.
    """
    q, k, v = synthetic_qkv(geometry, heads=heads, head_dim=head_dim, seed=seed, **synthetic_kwargs)
    reference = DenseReference(q, k, v)
    if method_options is None:
        method_options = default_method_options(geometry.num_tokens)
    if info is not None:
        ent = reference.entropy.mean((0, 2))
        info["method_options"] = method_options
        info["entropy_per_head"] = [round(float(x), 3) for x in ent]
        info["entropy_fraction_of_log_L"] = [round(float(x) / math.log(geometry.num_tokens), 3) for x in ent]
    rows: List[dict] = []
    for method in methods:
        options = method_options.get(method, {})
        reason = pattern_available(method, block_size, options)
        if reason is not None:
            rows.append(_unavailable_row(method, reason))
            if progress:
                progress(f"{method}: unavailable ({reason})")
            continue
        cache: dict = {}  # one per method: k-means warm-starts across the search, as across denoising steps
        lowest: Dict[str, float] = {}
        for target in densities:
            t0 = time.perf_counter()
            try:
                layout, knob, dens, evals = tune_layout(
                    method, q, k, geometry, target, block_size, seed, cache=cache, options=options, min_density=lowest
                )
            except NotImplementedError as err:  # a pattern whose plan is still a stub
                rows.append(_unavailable_row(method, f"NotImplementedError: {err}", target))
                if progress:
                    progress(f"{method}: unavailable (NotImplementedError: {err})")
                break
            plan_s = time.perf_counter() - t0
            err = attention_error(q, k, v, layout, reference=reference)
            note = ""
            if abs(dens - target) > 0.01:
                if dens > target and lowest[method] >= dens - 1e-6:
                    note = f"target below the method's minimum density {dens:.3f}"
                else:
                    note = "density is a step function of the knob: nearest reachable"
            row = dict(
                method=method,
                target_density=target,
                density=err["density"],
                rel_l2=err["rel_l2"],
                mass_kept=err["mass_kept"],
                knob=knob,
                note=note,
                search_evals=evals,
                search_s=round(plan_s, 3),
            )
            if compare_random and method != "random":
                base = random_block_layout(q.shape[2], k.shape[2], heads, dens, block_size, seed, q.shape[0])
                berr = attention_error(q, k, v, base, reference=reference)
                row.update(
                    random_density=berr["density"], random_rel_l2=berr["rel_l2"], random_mass_kept=berr["mass_kept"]
                )
            rows.append(row)
            if progress:
                progress(
                    f"{method} @ {target}: density {dens:.3f} rel_l2 {err['rel_l2']:.4f} "
                    f"mass {err['mass_kept']:.3f} ({time.perf_counter() - t0:.1f} s)"
                )
    return rows


def _fmt(x, spec=".3f"):
    return "—" if x is None else format(x, spec)


def markdown_table(rows: Sequence[dict]) -> str:
    """Renders `fidelity_table` rows as a Markdown table."""
    with_random = any("random_rel_l2" in r for r in rows)
    head = ["method", "target", "density", "rel_l2", "mass_kept"]
    if with_random:
        head += ["random rel_l2 (same density)", "random mass_kept"]
    head += ["knob", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        knob = ", ".join(f"{k}={v:g}" for k, v in (r.get("knob") or {}).items())
        cells = [
            r["method"],
            _fmt(r.get("target_density"), ".2f"),
            _fmt(r.get("density")),
            _fmt(r.get("rel_l2"), ".4f"),
            _fmt(r.get("mass_kept")),
        ]
        if with_random:
            cells += [_fmt(r.get("random_rel_l2"), ".4f"), _fmt(r.get("random_mass_kept"))]
        cells += [knob or "—", r.get("note") or ""]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------- CLI
def _git_commit() -> str:
    from .bench import git_commit

    return git_commit()


def _synthetic_defaults() -> dict:
    import inspect

    skip = {"geometry", "heads", "head_dim", "seed", "model", "dtype"}
    params = inspect.signature(synthetic_qkv).parameters.values()
    return {p.name: p.default for p in params if p.name not in skip}


def _cli_method_options(geometry: VideoGeometry, args) -> Dict[str, dict]:
    options = {} if args.package_default_clusters else default_method_options(geometry.num_tokens)
    if args.radial_spatial != "raster":
        options = {**options, "radial": {**options.get("radial", {}), "spatial": args.radial_spatial}}
    return options


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dit_sparse.eval.fidelity", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench/results/fidelity.json", help="JSON output path ('' = none)")
    parser.add_argument("--markdown", action="store_true", help="print only the Markdown table")
    parser.add_argument("--geometry", default="x".join(map(str, DEFAULT_GEOMETRY.key)), help="frames x height x width")
    parser.add_argument("--model", default="wan", choices=sorted(ROPE_THETA))
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--densities", default=",".join(map(str, DEFAULT_DENSITIES)))
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--package-default-clusters",
        action="store_true",
        help="run semantic with the config's default cluster counts instead of scaling them to the grid",
    )
    parser.add_argument("--radial-spatial", default="raster", choices=["raster", "2d"],
                        help="in-frame distance of the radial mask (compare the two variants)")
    args = parser.parse_args(argv)

    f, h, w = (int(x) for x in args.geometry.lower().split("x"))
    geometry = VideoGeometry(f, h, w, args.model)
    densities = tuple(float(x) for x in args.densities.split(",") if x)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    log = (lambda msg: None) if args.markdown else (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    info: dict = {}
    rows = fidelity_table(
        geometry,
        args.heads,
        args.head_dim,
        densities,
        methods,
        args.block_size,
        args.seed,
        method_options=_cli_method_options(geometry, args),
        progress=log,
        info=info,
    )
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    table = markdown_table(rows)
    if args.out:
        result = {
            "benchmark": "fidelity",
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": _git_commit(),
            "settings": {
                "geometry": list(geometry.key),
                "model": geometry.model,
                "tokens": geometry.num_tokens,
                "heads": args.heads,
                "head_dim": args.head_dim,
                "block_size": args.block_size,
                "densities": list(densities),
                "methods": list(methods),
                "seed": args.seed,
                "synthetic": {"function": "dit_sparse.eval.fidelity.synthetic_qkv", **_synthetic_defaults()},
                "method_options": info.get("method_options"),
                "dense_steps": 0,
                "dense_layers": 0,
            },
            "synthetic_attention": {
                "entropy_per_head": info.get("entropy_per_head"),
                "entropy_fraction_of_log_L": info.get("entropy_fraction_of_log_L"),
            },
            "env": {
                "torch": torch.__version__,
                "python": platform.python_version(),
                "threads": torch.get_num_threads(),
            },
            "elapsed_s": round(elapsed, 2),
            "cpu_s": round(cpu, 2),
            "rows": rows,
        }
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {path} ({elapsed:.1f} s)")
    print(table)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
