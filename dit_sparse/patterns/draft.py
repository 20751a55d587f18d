"""DraftAttention: a pooled, low-resolution attention map chooses the key blocks (Shen et al., 2025).

Each frame is cut into spatial tiles of ``ph x pw`` tokens (by default one tile per block: 8 x 16 for 128-token
blocks). q and k are average-pooled per tile, the pooled logits give a draft map of N x N tiles per (batch, head), and
the most attended key tiles of every query tile are computed exactly by the block-sparse kernel. A fixed token
permutation (frame-major, then tile row, tile column, then raster inside the tile) makes every tile contiguous, so a
tile is one block of the kernel.

Differences from the published code, on purpose:
- Any grid works: tiles at the right and bottom edges are partial. By default (``blocks="fixed"``) the kernel blocks
  are ``block_size`` consecutive tokens of the tile order, every block full, so FlashAttention-4 runs every layout
  (issue #13: variable blocks ran only on our Triton kernel, at a third of FA4's rate); a block at the grid's edge
  then joins neighbouring partial tiles. ``blocks="tiles"`` keeps one block per tile (variable-size at the edges).
  When every tile has exactly ``block_size`` tokens both are the same fixed layout.
- The diagonal tile of each query tile is always kept, so no query block is left without keys.
- The budget is counted in tokens, not tiles, so ``layout.density()`` (token-weighted) matches ``density`` when edge
  tiles are partial; with equal tiles this is exactly the top ``ceil(density * N)`` tiles per row.
- The draft map weights each pooled key by its tile size (a tile of s tokens carries about s times the attention mass
  of one of its tokens); the ranking score is the estimated attention probability per key *token*, i.e. the mass a
  block buys per unit of compute. With equal tiles both reduce to the published ranking.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Tuple

import torch

from ..config import DraftConfig
from ..geometry import VideoGeometry
from ..layout import BlockLayout, block_sizes, cdiv, inverse_permutation, pack_block_mask, whole_blocks_first
from ..schedule import shared_or_build
from .base import Pattern, compiled_planning
from .block_mass import block_mass_estimate, pooled_block_mass
from .kmeans import _compute_dtype


def default_pool(block_size: int) -> Tuple[int, int]:
    """Tile (height, width) in tokens with ``ph * pw == block_size``, powers of two, ``pw >= ph`` (128 -> 8 x 16).

    Videos are wider than tall, so the longer side of a non-square tile goes along the width.
    """
    if block_size < 1 or block_size & (block_size - 1):
        raise ValueError(f"block_size={block_size} must be a power of two to derive the default draft pool")
    ph = 1 << ((block_size.bit_length() - 1) // 2)
    return ph, block_size // ph


@dataclasses.dataclass
class DraftTiles:
    """The tiling of one token grid: permutation, tile boundaries and sizes (built once per geometry and device).

    Args:
        pool (`Tuple[int, int]`): tile (height, width) in tokens.
        grid (`Tuple[int, int, int]`): tiles along (frames, height, width).
        frames_per_tile (`int`): tile extent along the frames (1 for DraftAttention's per-frame tiles).
        perm (`torch.Tensor` int64 [1, 1, L], optional): ``x.gather(2, perm)`` puts each tile's tokens together;
            `None` when the raster order already does (a tile spans the whole frame width).
        starts (`torch.Tensor` int32 [1, 1, N + 1]): token offset of every tile in the permuted order.
        sizes (`torch.Tensor` int64 [N]): tokens per tile.
        row_sizes / col_sizes (`torch.Tensor` int64 [nth] / [ntw]): tile heights and widths (edges partial).
        uniform (`bool`): every tile has exactly ``block_size`` tokens, so fixed-size blocks describe the tiling.
        packed_perm (`torch.Tensor` int64 [1, 1, L]): the order of fixed-block layouts: whole tiles first, then the
            partial tiles (see `dit_sparse.layout.whole_blocks_first`).
        packed_tiles (`torch.Tensor` int64 [L]): the tile of every position of ``packed_perm``'s order (which tiles a
            fixed block holds pieces of).
    """

    pool: Tuple[int, int]
    grid: Tuple[int, int, int]
    perm: Optional[torch.Tensor]
    starts: torch.Tensor
    sizes: torch.Tensor
    row_sizes: torch.Tensor
    col_sizes: torch.Tensor
    uniform: bool
    frames_per_tile: int = 1
    packed_perm: Optional[torch.Tensor] = None
    packed_tiles: Optional[torch.Tensor] = None

    @property
    def num_tiles(self) -> int:
        return self.sizes.shape[0]

    def full_perm(self) -> torch.Tensor:
        """The permutation, the identity included (for tests and plots)."""
        if self.perm is not None:
            return self.perm
        return torch.arange(int(self.starts[..., -1]), device=self.starts.device).view(1, 1, -1)


def tile_grid(
    geometry: VideoGeometry, pool: Tuple[int, int], block_size: int, device=None, frames_per_tile: int = 1
) -> DraftTiles:
    """Tiles ``geometry`` into ``frames_per_tile x pool``-sized tiles (edges partial) and builds the permutation that
    makes them contiguous.

    Args:
        geometry (`VideoGeometry`): the token grid.
        pool (`Tuple[int, int]`): tile (height, width) in tokens.
        block_size (`int`): kernel block size; tiles must not be longer.
        device: where the tensors live.
        frames_per_tile (`int`, defaults to 1): tile extent along the frames (the tile pattern's 3-D tiles; the
            last tile frame may be partial). Tiles are ordered tile-frame-major, then tile row, tile column; tokens
            inside a tile in raster order (frame, row, column).

    Returns:
        `DraftTiles`.
    """
    ph, pw = pool
    pt = frames_per_tile
    if pt * ph * pw > block_size:
        raise ValueError(
            f"tile {pt} x {ph} x {pw} = {pt * ph * pw} tokens is larger than block_size={block_size}: a tile must "
            f"fit in one kernel block; use a tile of at most {block_size} tokens (e.g. {default_pool(block_size)} "
            "per frame) or a larger block_size"
        )
    f, h, w = geometry.key
    ntf, nth, ntw = cdiv(f, pt), cdiv(h, ph), cdiv(w, pw)
    frame_sizes = (f - torch.arange(ntf, device=device) * pt).clamp(max=pt)
    row_sizes = (h - torch.arange(nth, device=device) * ph).clamp(max=ph)
    col_sizes = (w - torch.arange(ntw, device=device) * pw).clamp(max=pw)
    area = row_sizes[:, None] * col_sizes[None, :]  # [nth, ntw]
    sizes = (frame_sizes[:, None, None] * area[None]).flatten()
    starts = torch.zeros(sizes.numel() + 1, dtype=torch.int64, device=device)
    starts[1:] = sizes.cumsum(0)

    perm = None
    if ntw > 1 or (pt > 1 and nth > 1):
        coords = geometry.token_coords(device)
        fr, r, c = coords.unbind(-1)
        tr, tc = r // ph, c // pw
        tile = ((fr // pt) * nth + tr) * ntw + tc
        # Raster order inside a tile; partial edge tiles are narrower, hence the per-tile row and column extents.
        pos = starts[tile] + (fr % pt) * area[tr, tc] + (r % ph) * col_sizes[tc] + c % pw
        perm = inverse_permutation(pos).view(1, 1, -1)

    uniform = f % pt == 0 and h % ph == 0 and w % pw == 0 and pt * ph * pw == block_size
    # The order of fixed-block layouts: whole tiles first (each exactly one block when a tile is one block), the
    # partial edge tiles packed after them, so that they do not shift every later tile off the block grid.
    tile_of = torch.repeat_interleave(torch.arange(sizes.numel(), device=device), sizes)
    tile_order = perm.view(-1) if perm is not None else torch.arange(tile_of.numel(), device=device)
    packing = whole_blocks_first(tile_of, block_size)
    packed = tile_order[packing].view(1, 1, -1)
    return DraftTiles(
        pool=(ph, pw),
        grid=(ntf, nth, ntw),
        perm=perm,
        starts=starts.to(torch.int32).view(1, 1, -1),
        sizes=sizes,
        row_sizes=row_sizes,
        col_sizes=col_sizes,
        uniform=uniform,
        frames_per_tile=pt,
        packed_perm=packed,
        packed_tiles=tile_of[packing],
    )


def _group_sum(x: torch.Tensor, dim: int, size: int, p: int) -> torch.Tensor:
    """Float32 sums over consecutive groups of ``p`` along ``dim`` (the last group partial), without copying x."""
    full = size // p * p
    parts = []
    if full:
        parts.append(x.narrow(dim, 0, full).unflatten(dim, (full // p, p)).sum(dim + 1, dtype=torch.float32))
    if full < size:
        parts.append(x.narrow(dim, full, size - full).sum(dim, keepdim=True, dtype=torch.float32))
    return torch.cat(parts, dim) if len(parts) > 1 else parts[0]


def pool_tiles(x: torch.Tensor, geometry: VideoGeometry, tiles: DraftTiles) -> torch.Tensor:
    """Mean of x (B, H, L, D) over each tile, float32 [B, H, N, D] in the tiles' order.

    Reads x in its raster order (no permuted copy): the width is reduced first, which shrinks the tensor ``pw``-fold
    before anything is materialised.
    """
    f, h, w = geometry.key
    ph, pw = tiles.pool
    grid = x.unflatten(2, (f, h, w))  # [B, H, F, h, w, D]
    sums = _group_sum(_group_sum(grid, 4, w, pw), 3, h, ph)  # [B, H, F, nth, ntw, D]
    area = (tiles.row_sizes[:, None] * tiles.col_sizes[None, :]).to(torch.float32)
    return (sums / area[..., None]).flatten(2, 4)


def draft_map(
    q: torch.Tensor, k: torch.Tensor, geometry: VideoGeometry, tiles: DraftTiles, scale: Optional[float] = None
) -> torch.Tensor:
    """The draft attention map [B, H, N, N] (float32): per query tile, the estimated share of its attention that
    falls on each key tile.

    Args:
        q, k (`torch.Tensor` (B, H, L, D)): video queries and keys in raster order.
        geometry (`VideoGeometry`): their token grid.
        tiles (`DraftTiles`): the tiling (see `tile_grid`).
        scale (`float`, optional): softmax scale, default ``1 / sqrt(D)``.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    qp = pool_tiles(q, geometry, tiles)
    kp = pool_tiles(k, geometry, tiles)
    logits = torch.matmul(qp, kp.transpose(-1, -2)) * scale
    # A key tile of s tokens collects about s times the mass of its mean token; equal tiles make this a constant.
    return torch.softmax(logits + tiles.sizes.to(torch.float32).log(), dim=-1)


# Score elements held at once by `exact_key_map` (query tiles x keys, over a chunk of batch x head rows): 256 MiB.
_EXACT_CHUNK_ELEMENTS = 1 << 26


def exact_key_map(q: torch.Tensor, k: torch.Tensor, geometry: VideoGeometry, tiles: DraftTiles,
                  scale: Optional[float] = None) -> torch.Tensor:
    """Like `draft_map`, but each query tile's mean query meets every key exactly (mass summed per key tile) instead
    of the key tile's mean (see `dit_sparse.patterns.block_mass`); [B, H, N, N] float32.

    Mean keys lose what a tile's keys look like individually (photographic detail, the tokens right next to a query
    in a local head): on photographic attention this estimate reached a gain of 1.22 against 0.91 for the pooled map
    at density 0.25 (``bench/results/oracle-photo.json``; equal on tiny's captured attention), for 1 / block_size of
    dense attention's score FLOPs. Everything
    stays in raster order: the per-tile sums of the probabilities are grouped sums over the (frame, row, column) grid,
    like `pool_tiles`, so no permutation, gather or scan of the [N, L] scores is needed.
    """
    b, h, length, d = q.shape
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    f, gh, gw = geometry.key
    ph, pw = tiles.pool
    dot_dtype = _compute_dtype(k)  # half precision on the GPU (tensor cores), float32 on the CPU
    qp = pool_tiles(q, geometry, tiles).flatten(0, 1).to(dot_dtype)  # [BH, N, D]
    kt = k.flatten(0, 1).to(dot_dtype).transpose(1, 2)  # [BH, D, L]
    n_rows, n = qp.shape[:2]
    out = torch.empty(n_rows, n, n, dtype=torch.float32, device=q.device)
    rows = max(1, _EXACT_CHUNK_ELEMENTS // max(1, n * length))
    for r0 in range(0, n_rows, rows):
        r1 = min(n_rows, r0 + rows)
        s = torch.bmm(qp[r0:r1], kt[r0:r1]).float().mul_(scale)  # [c, N, L]
        e = s.sub_(s.amax(-1, keepdim=True)).exp_().view(r1 - r0, n, f, gh, gw)
        sums = _group_sum(_group_sum(e, 4, gw, pw), 3, gh, ph).flatten(2)  # [c, N, tiles] in the tiles' order
        out[r0:r1] = sums / sums.sum(-1, keepdim=True)
    return out.view(b, h, n, n)


def select_tiles(dmap: torch.Tensor, sizes: torch.Tensor, density: float, global_budget: bool = False) -> torch.Tensor:
    """Boolean tile mask [B, H, N, N] from a draft map, keeping about ``density`` of the token pairs.

    Tiles are ranked by estimated attention per key token (``dmap / size``) and taken greedily until the token budget
    is spent: per query tile ``density * L`` key tokens, or with ``global_budget`` ``density * L * L`` token pairs per
    head over the whole map. The diagonal is ranked first, so every row keeps its own tile.

    Args:
        dmap (`torch.Tensor` [B, H, N, N]): the draft map (see `draft_map`).
        sizes (`torch.Tensor` int64 [N]): tokens per tile.
        density (`float`): fraction of token pairs to keep, in (0, 1].
        global_budget (`bool`): one budget per head instead of one per query tile.
    """
    n = dmap.shape[-1]
    length = sizes.sum()  # stays on the device: the budget compares tensors, no host read
    score = dmap / sizes.to(dmap.dtype)
    score.diagonal(dim1=-2, dim2=-1).fill_(float("inf"))
    if not global_budget:
        order = score.argsort(dim=-1, descending=True)
        cost = sizes[order]
        budget = length
    else:
        order = score.flatten(2).argsort(dim=-1, descending=True)
        cost = (sizes[:, None] * sizes[None, :]).flatten()[order]
        budget = length * length
    spent_before = cost.cumsum(-1) - cost
    # cum < density * budget <=> cum < ceil(density * budget) for integers; the ceil keeps density 1.0 exact.
    keep = spent_before < torch.ceil(budget.double() * density).to(torch.int64)
    mask = torch.zeros_like(keep).scatter_(-1, order, keep)
    return mask.view(*dmap.shape[:2], n, n)


class DraftPattern(Pattern):
    """DraftAttention's dynamic tile selection; the tiling is built once per geometry and device (shared cache)."""

    name = "draft"
    static = False
    layer_state = False  # the tiling is per geometry (``tiles_for``); nothing is carried between a layer's calls

    def __init__(self, config: DraftConfig):
        super().__init__(config)
        self.pool = tuple(config.pool) if config.pool is not None else default_pool(config.block_size)
        ph, pw = self.pool
        if ph * pw > config.block_size:
            raise ValueError(
                f"DraftConfig.pool={self.pool} has {ph * pw} tokens per tile, more than block_size="
                f"{config.block_size}: a tile must fit in one kernel block; use a pool with ph * pw <= "
                f"{config.block_size} (default {default_pool(config.block_size)}) or a larger block_size"
            )

    def tiles_for(self, geometry: VideoGeometry, device, cache=None) -> DraftTiles:
        """The tiling of ``geometry`` on ``device``, kept in the state's shared per-geometry cache (``cache.shared``,
        the one home of what layers share); a plain dict or `None` builds it anew."""
        bs = self.config.block_size
        key = ("draft-tiles", geometry.key, bs, self.pool, str(device))
        return shared_or_build(cache, key, lambda: tile_grid(geometry, self.pool, bs, device=device))

    def prepare(self, geometry: VideoGeometry, device, cache) -> None:
        # The tiling is built before the forward, so a compiled graph only reads the shared cache (no guard changes).
        self.tiles_for(geometry, device, cache)

    def plan(self, q: torch.Tensor, k: torch.Tensor, geometry: VideoGeometry, cache) -> BlockLayout:
        """Selects key tiles from the draft map of q, k (B, H, L, D); returns a per-(batch, head) layout over the
        tile-permuted sequence."""
        length = geometry.num_tokens
        if q.shape[2] != length or k.shape[2] != length:
            raise ValueError(
                f"draft pattern got {q.shape[2]} query and {k.shape[2]} key tokens but the grid {geometry.key} has "
                f"{length}; pass video tokens only"
            )
        tiles = self.tiles_for(geometry, q.device, cache)
        if self.config.blocks == "fixed":
            return self._plan_fixed(q, k, tiles, length)
        if self.config.estimate == "blocks":
            dmap = exact_key_map(q, k, geometry, tiles)
        else:
            dmap = draft_map(q, k, geometry, tiles)
        mask = select_tiles(dmap, tiles.sizes, self.config.density, self.config.global_budget)
        bs = self.config.block_size
        extra = {"q_perm": tiles.perm, "kv_perm": tiles.perm}
        if not tiles.uniform:
            extra.update(q_block_starts=tiles.starts, kv_block_starts=tiles.starts)
        return BlockLayout.from_block_mask(mask, bs, bs, length, length, **extra)

    def _plan_fixed(self, q: torch.Tensor, k: torch.Tensor, tiles: DraftTiles, length: int) -> BlockLayout:
        """Fixed ``block_size`` blocks over the packed tile order (whole tiles first, one block each when a tile is a
        block; the partial edge tiles after them, a few neighbouring ones per block): the draft map scores those
        blocks, every block is full and a fixed-block kernel (FlashAttention-4) runs the layout."""
        bs = self.config.block_size
        if not self.config.global_budget:
            # A row keeps blocks while the tokens spent before them are under its budget B = ceil(density * L); all
            # blocks are full but (at most) the last, so a row holds at most ceil(B / block) + 1 of them. Knowing the
            # width saves the host read of the largest count, a sync in every call.
            kmax = -(-math.ceil(self.config.density * length) // bs) + 1
        else:
            kmax = cdiv(length, bs)  # every block: still no host read
        # Equal whole tiles that the raster order already keeps together (a tile spans the frame's width) need no
        # permutation at all.
        perm = None if tiles.uniform and tiles.perm is None else tiles.packed_perm
        indices, counts = fixed_block_plan(q, k, perm, bs, self.config.density, self.config.global_budget,
                                           self.config.estimate, kmax)
        return BlockLayout(indices, counts, bs, bs, length, length, q_perm=perm, kv_perm=perm)


@compiled_planning
def fixed_block_plan(q: torch.Tensor, k: torch.Tensor, perm: Optional[torch.Tensor], block: int, density: float,
                     global_budget: bool, estimate: str, kmax: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """kv_indices, kv_counts of draft's fixed-block layout: q, k (B, H, L, D) in raster order, ``perm`` [1, 1, L] the
    packed tile order (`None`: the raster order); ``kmax`` the static width of kv_indices (a bound on every row's
    count). Tensors only, so that it compiles as one graph (see `compiled_planning`)."""
    b, h, length, d = q.shape
    # Gathers of q and k into the packed tile order make the block pooling a reshape (compiled, they fuse into it).
    if perm is not None:
        q, k = (x.index_select(2, perm.view(-1)) for x in (q, k))
    qs, ks = (x.reshape(b * h, length, d) for x in (q, k))
    mass = block_mass_estimate if estimate == "blocks" else pooled_block_mass
    dmap = mass(qs, ks, 1.0 / math.sqrt(d), block).view(b, h, -1, cdiv(length, block))
    sizes = block_sizes(length, block, q.device).long()
    mask = select_tiles(dmap, sizes, density, global_budget)
    return pack_block_mask(mask, kmax)


__all__ = [
    "DraftPattern", "DraftTiles", "default_pool", "draft_map", "exact_key_map", "fixed_block_plan", "pool_tiles",
    "select_tiles",
    "tile_grid",
]
