"""Radial Attention: a static spatio-temporal energy-decay mask (Li et al., 2025), computed at block level.

Token pair (query in frame i, key in frame j), temporal distance d = |i - j|:
- d <= 1: the whole frame is attended;
- otherwise a spatial window of half-width ``w(d) = decay * 2**bit_length(HW) / 2**bit_length(d)`` tokens, which
  halves each time d doubles; when ``w(d)`` falls below one block, the window is one block wide and only every
  ``block / w(d)``-th frame distance is kept (far frame pairs are thinned instead of narrowed below a block);
- with the attention sink (Wan), every query also attends all of frame 0.

A single frame (an image, or a one-frame video) has no frame distance but 0, which would make it dense. Its tokens
attend within a 2-D Chebyshev window instead, ``|row_q - row_k| <= r`` and ``|col_q - col_k| <= r``, the image
counterpart of the nearest decaying frame distance: the raster band of ``d = 2`` covers a fraction
``a = (2 w(2) + 1) / HW`` of the frame, and the window is the square of side ``sqrt(a) * max(H, W)``, i.e.
``r = max(H, W) * sqrt(a) / 2`` (``w(2)`` is never under one block, as above). It grows with ``decay``; at the largest
decay, 16, ``w(2) >= 4 HW`` so ``r > max(H, W)`` and every block is kept, as ``d <= 1`` keeps whole frames on video.
The sink does not apply to a single frame (frame 0 is the image itself). The block mask is exact: each block's tokens
are at most three rectangles of the grid (a partial first row, full rows, a partial last row).

The block mask is computed analytically from per-block token segments (a block of raster tokens touches a few frames,
and in each a contiguous raster range), so no token-level L x L mask is ever built: a block pair is kept when any of
its token pairs is inside the mask. Built once per (geometry, block size, options) with vectorised torch on the device.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

from ..geometry import VideoGeometry
from ..layout import BlockLayout, cdiv
from ..schedule import shared_or_build
from .base import Pattern


def _segments(geometry: VideoGeometry, block: int, device) -> Tuple[torch.Tensor, ...]:
    """Per block, the frames it touches and the in-frame raster range in each: tensors [N, S]."""
    hw = geometry.tokens_per_frame
    length = geometry.num_tokens
    n = cdiv(length, block)
    starts = torch.arange(n, device=device) * block
    ends = (starts + block).clamp(max=length)
    f0 = starts // hw
    f1 = (ends - 1) // hw
    s_max = int(cdiv(block, hw) + 1)
    frame = f0.unsqueeze(1) + torch.arange(s_max, device=device)  # [N, S]
    valid = frame <= f1.unsqueeze(1)
    r0 = (torch.maximum(starts.unsqueeze(1), frame * hw) - frame * hw).clamp(min=0)
    r1 = torch.minimum(ends.unsqueeze(1), (frame + 1) * hw) - frame * hw  # exclusive
    return frame, r0, r1 - 1, valid


def radial_window(d: torch.Tensor, tokens_per_frame: int, decay: float, block: int):
    """Half-width of the spatial window (raster tokens) and whether distance d is kept, for d >= 2."""
    base = 2.0 ** int(tokens_per_frame).bit_length()
    # bit_length(d) for a tensor: floor(log2(d)) + 1
    group = torch.floor(torch.log2(d.clamp(min=1).double())) + 1
    width = base / torch.pow(2.0, group) * decay
    split = torch.clamp(torch.floor(block / width.clamp(min=1e-9)), min=1)
    keep = torch.where(width >= block, torch.ones_like(d, dtype=torch.bool), (d % split.long()) == 0)
    return width.clamp(min=block), keep


def image_radius(height: int, width: int, decay: float, block: int) -> float:
    """Chebyshev radius (tokens) of the single-frame window (see the module docstring)."""
    hw = height * width
    w2, _ = radial_window(torch.tensor([2]), hw, decay, block)
    return max(height, width) * math.sqrt((2 * float(w2[0]) + 1) / hw) / 2


def _image_block_mask(geometry: VideoGeometry, block: int, decay: float, device) -> torch.Tensor:
    """Exact block mask [N, N] of a single frame's 2-D Chebyshev window: a block pair is kept when any of its token
    pairs is within the radius."""
    wdt = geometry.width
    length = geometry.num_tokens
    n = cdiv(length, block)
    s = torch.arange(n, device=device) * block
    e = (s + block).clamp(max=length) - 1
    ys, xs, ye, xe = s // wdt, s % wdt, e // wdt, e % wdt
    full = torch.full_like(s, wdt - 1)
    zero = torch.zeros_like(s)
    # Rectangles [N, 3]: the first (possibly partial) row, the full rows between, the last (partial) row.
    y0 = torch.stack([ys, ys + 1, ye], 1)
    y1 = torch.stack([ys, ye - 1, ye], 1)
    x0 = torch.stack([xs, zero, zero], 1)
    x1 = torch.stack([torch.where(ys == ye, xe, full), full, xe], 1)
    valid = torch.stack([torch.ones_like(s, dtype=torch.bool), ye - ys >= 2, ye > ys], 1)

    def gap(a0, a1):
        return torch.maximum(a0.view(1, 1, n, 3) - a1.view(n, 3, 1, 1), a0.view(n, 3, 1, 1) - a1.view(1, 1, n, 3))

    radius = image_radius(geometry.height, wdt, decay, block)
    near = (gap(y0, y1).clamp(min=0) <= radius) & (gap(x0, x1).clamp(min=0) <= radius)
    ok = valid.view(n, 3, 1, 1) & valid.view(1, 1, n, 3)
    return (near & ok).any(dim=(1, 3))


def radial_block_mask(
    geometry: VideoGeometry, block: int, decay: float = 1.0, sink: bool = False, spatial: str = "raster", device=None
) -> torch.Tensor:
    """Boolean block mask [Nq, Nk] of the radial pattern for one video geometry (video tokens only)."""
    if geometry.frames == 1:
        return _image_block_mask(geometry, block, decay, device)
    frame, r0, r1, valid = _segments(geometry, block, device)
    n, s = frame.shape
    # Pairs of segments: [Nq, S, 1, 1] against [1, 1, Nk, S]
    fq, fk = frame.view(n, s, 1, 1), frame.view(1, 1, n, s)
    d = (fq - fk).abs()
    ok = valid.view(n, s, 1, 1) & valid.view(1, 1, n, s)
    width, keep_d = radial_window(d, geometry.tokens_per_frame, decay, block)
    if spatial == "raster":
        gap = torch.maximum(r0.view(1, 1, n, s) - r1.view(n, s, 1, 1), r0.view(n, s, 1, 1) - r1.view(1, 1, n, s))
        near = gap.clamp(min=0) <= width
    else:
        # Equal-area square: a raster band of 2w+1 tokens becomes a (2r+1)^2 window on the grid.
        radius = (torch.sqrt(2 * width + 1) - 1) / 2
        wdt = geometry.width
        y0, y1 = r0 // wdt, r1 // wdt
        one_row = y0 == y1
        x0 = torch.where(one_row, r0 % wdt, torch.zeros_like(r0))
        x1 = torch.where(one_row, r1 % wdt, torch.full_like(r1, wdt - 1))

        def interval_gap(a0, a1):
            return torch.maximum(a0.view(1, 1, n, s) - a1.view(n, s, 1, 1), a0.view(n, s, 1, 1) - a1.view(1, 1, n, s))

        near = (interval_gap(y0, y1).clamp(min=0) <= radius) & (interval_gap(x0, x1).clamp(min=0) <= radius)
    pair = (d <= 1) | (keep_d & near)
    if sink:
        pair = pair | (fk == 0)
    return (pair & ok).any(dim=(1, 3))


def radial_density(geometry: VideoGeometry, block: int = 128, **kwargs) -> float:
    """Fraction of blocks kept by the radial mask (for docs and tests)."""
    return float(radial_block_mask(geometry, block, **kwargs).float().mean())


# The reference scripts' decay factors (Radial Attention): Wan 0.2, HunyuanVideo 0.95.
MODEL_DEFAULT_DECAY = {"wan": 0.2, "hunyuan_video": 0.95}


class RadialPattern(Pattern):
    """Static radial mask, built once per geometry and device and shared by every layer through the state's
    ``shared`` cache (``cache.shared``; a plain dict ``cache`` builds it anew)."""

    name = "radial"
    static = True

    def sink_for(self, geometry: VideoGeometry) -> bool:
        if self.config.sink is not None:
            return self.config.sink
        return geometry.model == "wan"

    def decay_for(self, geometry: VideoGeometry) -> float:
        if self.config.decay is not None:
            return self.config.decay
        if geometry.model not in MODEL_DEFAULT_DECAY:
            # No silent fallback: the decay sets the density, and 1.0 is nobody's tuned value.
            known = ", ".join(f"{m} {d}" for m, d in MODEL_DEFAULT_DECAY.items())
            raise ValueError(
                f"radial has no default decay for model {geometry.model!r} (known: {known}); pass "
                "RadialConfig(decay=...) (larger is denser; 1.0 keeps the unscaled windows)"
            )
        return MODEL_DEFAULT_DECAY[geometry.model]

    def _key(self, geometry: VideoGeometry, device) -> tuple:
        return ("radial", geometry.key, geometry.model, self.config.block_size, str(torch.device(device)))

    def plan(self, q, k, geometry: VideoGeometry, cache) -> BlockLayout:
        return shared_or_build(cache, self._key(geometry, q.device), lambda: self._build(geometry, q.device))

    def prepare(self, geometry: VideoGeometry, device, cache) -> None:
        shared_or_build(cache, self._key(geometry, device), lambda: self._build(geometry, device))

    def _build(self, geometry: VideoGeometry, device) -> BlockLayout:
        bs = self.config.block_size
        mask = radial_block_mask(
            geometry, bs, self.decay_for(geometry), self.sink_for(geometry), self.config.spatial, device=device
        )
        length = geometry.num_tokens
        return BlockLayout.from_block_mask(mask.view(1, 1, *mask.shape), bs, bs, length, length)


__all__ = ["RadialPattern", "image_radius", "radial_block_mask", "radial_density", "radial_window"]
