"""Tile-neighbourhood attention: Sliding Tile Attention (Zhang et al., 2025) / generalized neighborhood attention
(GNA, Hassani et al., 2025), static, at block level.

Tokens are grouped into 3-D tiles of ``tile = (t, h, w)`` tokens (e.g. 1 x 8 x 16 or 2 x 8 x 8 for video, 1 x 8 x 16
for an image, which is a video of one frame) by a fixed permutation that makes every tile contiguous
(`dit_sparse.patterns.draft.tile_grid` with a temporal extent), so one tile is one kernel block. Tiles at the end of
an axis are partial when the grid is not a multiple of the tile: the layout then has variable block boundaries; when
every tile holds exactly ``block_size`` tokens the blocks are fixed-size and every kernel runs them.

Token i attends token j iff their tiles' coordinates ``(a_f, a_h, a_w)`` (query) and ``(b_f, b_h, b_w)`` (key)
satisfy, on every axis with ``n`` tiles, window ``k``, dilation ``d`` and stride ``s``:
- same dilation group: ``a % d == b % d`` (NATTEN's dilated neighbourhoods; ``d = 1``: one group). In the group, tiles
  are numbered ``m = a // d`` and the group has ``n_g = ceil((n - a % d) / d)`` tiles;
- stride: groups of ``s`` query tiles share one window, that of the group's centre ``c = min(m // s * s + s // 2,
  n_g - 1)`` (``s = 1``: ``c = m``);
- window: ``start <= b // d < start + k`` with ``start = clamp(c - k // 2, 0, max(n_g - k, 0))``: centred on ``c``
  (one more tile before it for even ``k``) and shifted inward at the borders, as NATTEN, so every query tile sees
  ``min(k, n_g)`` tiles on that axis. A window at least as large as the grid (dilation 1) is dense attention.
Or, with ``global_frames = g > 0``: the key tile holds one of the first ``g`` frames (``b_f * t < g``), an attention
sink every query attends (Wan's first frame).

With ``stride <= window`` every query tile keeps its own tile (the diagonal). The block mask is the outer product of
the three per-axis tile masks (tiles x tiles, never tokens x tokens), built once per (geometry, options, device) and
shared by every layer through the state's ``shared`` cache (a plain dict cache builds it anew).
"""

from __future__ import annotations

from typing import Tuple

import torch

from ..config import TileConfig
from ..geometry import VideoGeometry
from ..layout import BlockLayout, cdiv
from ..schedule import shared_or_build
from .base import Pattern
from .draft import DraftTiles, default_pool, tile_grid


def axis_neighbours(n: int, window: int, dilation: int = 1, stride: int = 1, device=None) -> torch.Tensor:
    """Boolean [n, n]: ``[a, b]`` is True when key tile b is in the window of query tile a along one axis (the rule
    in the module docstring)."""
    a = torch.arange(n, device=device)
    group = a % dilation
    m = a // dilation
    n_g = torch.div(n - group + dilation - 1, dilation, rounding_mode="floor")
    centre = torch.minimum(m // stride * stride + stride // 2, n_g - 1)
    start = torch.minimum((centre - window // 2).clamp(min=0), (n_g - window).clamp(min=0))
    b = a.view(1, n)
    mb = b // dilation
    same = (b % dilation) == group.view(n, 1)
    return same & (mb >= start.view(n, 1)) & (mb < (start + window).view(n, 1))


def tile_block_mask(
    geometry: VideoGeometry,
    tile: Tuple[int, int, int],
    window: Tuple[int, int, int],
    block_size: int,
    dilation: Tuple[int, int, int] = (1, 1, 1),
    stride: Tuple[int, int, int] = (1, 1, 1),
    global_frames: int = 0,
    device=None,
) -> Tuple[torch.Tensor, DraftTiles]:
    """The tile pattern's boolean mask [N, N] over tiles (in the tiles' order) and the tiling of ``geometry``.

    Args:
        geometry (`VideoGeometry`): the token grid.
        tile (`Tuple[int, int, int]`): tile (frames, height, width) in tokens, at most ``block_size`` tokens.
        window, dilation, stride (`Tuple[int, int, int]`): per axis, in tiles (see the module docstring).
        block_size (`int`): the kernel block size.
        global_frames (`int`): key tiles holding one of the first ``global_frames`` frames are attended by all.
        device: where the tensors live.

    Returns:
        `(torch.Tensor, DraftTiles)`: the mask and the tiling (permutation, tile boundaries).
    """
    tt, th, tw = tile
    tiles = tile_grid(geometry, (th, tw), block_size, device=device, frames_per_tile=tt)
    axes = [axis_neighbours(n, k, d, s, device) for n, k, d, s in zip(tiles.grid, window, dilation, stride)]
    af, ah, aw = axes
    nf, nh, nw = tiles.grid
    mask = af.view(nf, 1, 1, nf, 1, 1) & ah.view(1, nh, 1, 1, nh, 1) & aw.view(1, 1, nw, 1, 1, nw)
    if global_frames > 0:
        sink = torch.arange(nf, device=device) * tt < global_frames
        mask = mask | sink.view(1, 1, 1, nf, 1, 1)
    n = nf * nh * nw
    return mask.reshape(n, n), tiles


class TilePattern(Pattern):
    """Static tile-neighbourhood mask over a tile-permuted sequence, built once per geometry and device and shared by
    every layer through the state's ``shared`` cache (``cache.shared``; a plain dict ``cache`` builds it anew)."""

    name = "tile"
    static = True

    def __init__(self, config: TileConfig):
        super().__init__(config)
        self.tile = tuple(config.tile) if config.tile is not None else (1, *default_pool(config.block_size))

    def _key(self, geometry: VideoGeometry, device) -> tuple:
        c = self.config
        return (
            "tile", geometry.key, c.block_size, self.tile, c.window, c.dilation, c.stride, c.global_frames, c.blocks,
            str(torch.device(device)),
        )

    def plan(self, q: torch.Tensor, k: torch.Tensor, geometry: VideoGeometry, cache) -> BlockLayout:
        """The layout for video queries/keys q, k (B, H, L, D): one block per tile, over the tile-permuted sequence
        (the same for every batch element and head)."""
        length = geometry.num_tokens
        if q.shape[2] != length or k.shape[2] != length:
            raise ValueError(
                f"tile pattern got {q.shape[2]} query and {k.shape[2]} key tokens but the grid {geometry.key} has "
                f"{length}; pass video tokens only"
            )
        return shared_or_build(cache, self._key(geometry, q.device), lambda: self._build(geometry, q.device))

    def prepare(self, geometry: VideoGeometry, device, cache) -> None:
        shared_or_build(cache, self._key(geometry, device), lambda: self._build(geometry, device))

    def token_order(self, geometry: VideoGeometry, device, cache):
        """The tile order of the shared layout (the very tensor its ``q_perm`` holds), None where raster order already
        is tile order."""
        layout = shared_or_build(cache, self._key(geometry, device), lambda: self._build(geometry, device))
        return None if layout.q_perm is None else layout.q_perm.view(-1)

    def _build(self, geometry: VideoGeometry, device) -> BlockLayout:
        c = self.config
        bs = c.block_size
        mask, tiles = tile_block_mask(
            geometry, self.tile, c.window, bs, c.dilation, c.stride, c.global_frames, device=device
        )
        length = geometry.num_tokens
        if c.blocks == "fixed" and not tiles.uniform:
            return fixed_block_layout(mask, tiles, bs, length)
        extra = {"q_perm": tiles.perm, "kv_perm": tiles.perm}
        if not tiles.uniform:
            extra.update(q_block_starts=tiles.starts, kv_block_starts=tiles.starts)
        return BlockLayout.from_block_mask(mask.view(1, 1, *mask.shape), bs, bs, length, length, **extra)


def fixed_block_layout(tile_mask: torch.Tensor, tiles: DraftTiles, block_size: int, length: int) -> BlockLayout:
    """The tile mask [N, N] on fixed ``block_size`` blocks of ``tiles.packed_perm`` (whole tiles first, the partial
    edge tiles packed after them): a query block keeps a key block when any tile piece in the one needs any tile piece
    in the other, so every token keeps at least its tile's neighbourhood."""
    num_blocks = cdiv(length, block_size)
    device = tiles.packed_tiles.device
    member = torch.zeros(num_blocks, tiles.num_tiles, device=device)
    member[torch.arange(length, device=device) // block_size, tiles.packed_tiles] = 1.0  # block b holds tile t
    mask = (member @ tile_mask.float() @ member.T) > 0
    return BlockLayout.from_block_mask(
        mask.view(1, 1, num_blocks, num_blocks), block_size, block_size, length, length,
        q_perm=tiles.packed_perm, kv_perm=tiles.packed_perm,
    )


__all__ = ["TilePattern", "axis_neighbours", "tile_block_mask"]
