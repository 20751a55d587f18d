"""The tile-neighbourhood pattern against a token-level brute force of its definition, through the reference kernel."""

import math

import pytest
import torch

from dit_sparse import EVERY_TILE, TileConfig, VideoGeometry, make_config
from dit_sparse.kernels import block_sparse_attention
from dit_sparse.patterns import make_pattern
from dit_sparse.patterns.tile import TilePattern
from dit_sparse.schedule import BoundedCache, PlanCache


def axis_window(a, n, k, d=1, s=1):
    """Key tiles of query tile a along one axis, written as lists (NATTEN's clamped window in a dilation group)."""
    members = list(range(a % d, n, d))  # the dilation group of a, in order
    m = members.index(a)
    centre = min(m // s * s + s // 2, len(members) - 1)  # stride groups share their centre's window
    lo = centre - k // 2
    lo = max(0, min(lo, len(members) - k))  # shift inward at the borders
    return set(members[lo:lo + k])


def token_mask(geometry, tile, window, dilation=(1, 1, 1), stride=(1, 1, 1), global_frames=0):
    """Token i attends token j iff their tiles' coordinates satisfy the window rule on every axis (or j's tile holds
    one of the first ``global_frames`` frames). Bool [L, L], brute force."""
    dims = geometry.key
    ntiles = [-(-n // t) for n, t in zip(dims, tile)]
    allowed = []
    for n, k, d, s in zip(ntiles, window, dilation, stride):
        m = torch.zeros(n, n, dtype=torch.bool)
        for a in range(n):
            for b in axis_window(a, n, k, d, s):
                m[a, b] = True
        allowed.append(m)
    coords = geometry.token_coords()
    tc = [coords[:, i] // tile[i] for i in range(3)]
    mask = torch.ones(geometry.num_tokens, geometry.num_tokens, dtype=torch.bool)
    for axis in range(3):
        mask &= allowed[axis][tc[axis][:, None], tc[axis][None, :]]
    if global_frames:
        mask |= (tc[0] * tile[0] < global_frames)[None, :]
    return mask


def qkv(geometry, batch=1, heads=2, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, geometry.num_tokens, heads, dim)
    return [torch.randn(shape, generator=g).transpose(1, 2) for _ in range(3)]


def attention(q, k, v, mask=None):
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, -1) @ v


def layout_token_mask(layout):
    """The layout's block mask expanded to tokens in the original order, [L, L]."""
    perm = layout.q_perm.view(-1) if layout.q_perm is not None else torch.arange(layout.seq_len_q)
    if layout.q_block_starts is not None:
        starts = layout.q_block_starts.view(-1).long()
    else:
        starts = torch.arange(0, layout.seq_len_q + layout.block_q, layout.block_q).clamp(max=layout.seq_len_q)
    block_of_pos = torch.repeat_interleave(torch.arange(starts.numel() - 1), starts[1:] - starts[:-1])
    block_of_token = torch.empty_like(block_of_pos).scatter_(0, perm, block_of_pos)
    blocks = layout.to_block_mask()[0, 0]
    return blocks[block_of_token][:, block_of_token]


CASES = [
    # grid, block, options
    ((3, 7, 11), 16, dict(tile=(1, 4, 4), window=(1, 1, 1))),
    ((3, 7, 11), 16, dict(tile=(1, 4, 4), window=(3, 1, 3))),
    ((3, 7, 11), 16, dict(tile=(1, 4, 4), window=(1, 2, 2))),
    ((5, 9, 13), 16, dict(tile=(1, 4, 4), window=(3, 3, 3), dilation=(2, 1, 2))),
    ((5, 9, 13), 16, dict(tile=(1, 4, 4), window=(3, 3, 3), stride=(2, 1, 3))),
    ((5, 9, 13), 16, dict(tile=(1, 4, 4), window=(1, 1, 1), global_frames=1)),
    ((5, 7, 11), 32, dict(tile=(2, 4, 4), window=(1, 3, 1), global_frames=3)),
    ((4, 8, 8), 16, dict(tile=(1, 4, 4), window=(3, 1, 1))),  # fixed blocks, no partial tile
    ((3, 6, 10), 16, dict(tile=(1, 3, 5), window=(3, 1, 1))),  # tiles shorter than a block
    ((1, 13, 18), 16, dict(tile=(1, 4, 4), window=(1, 3, 3))),  # an image
    ((1, 13, 18), 16, dict(tile=(1, 4, 4), window=(1, 2, 3), dilation=(1, 2, 1), stride=(1, 1, 3))),
]


@pytest.mark.parametrize("grid, block, options", CASES)
def test_matches_token_level_definition(grid, block, options):
    g = VideoGeometry(*grid)
    pattern = TilePattern(TileConfig(block_size=block, **options))
    q, k, v = qkv(g)
    layout = pattern.plan(q, k, g, {})
    layout.validate()
    full = {"dilation": (1, 1, 1), "stride": (1, 1, 1), "global_frames": 0, **options}
    want = token_mask(g, full["tile"], full["window"], full["dilation"], full["stride"], full["global_frames"])
    assert torch.equal(layout_token_mask(layout), want)
    assert want.diagonal().all()
    out = block_sparse_attention(q, k, v, layout, backend="reference")
    torch.testing.assert_close(out, attention(q, k, v, want), atol=1e-5, rtol=1e-5)
    if not want.all():
        assert (out - attention(q, k, v)).abs().max() > 1e-3


@pytest.mark.parametrize("grid, block, options", CASES)
def test_fixed_blocks_keep_every_token_neighbourhood(grid, block, options):
    """blocks="fixed": full blocks (FlashAttention-4 runs them) whose token mask contains the token-level definition;
    only blocks that hold pieces of several partial edge tiles add keys (how many depends on how much of the grid
    the partial tiles cover: on these small grids, most of it; Wan's grid is the next test)."""
    g = VideoGeometry(*grid)
    q, k, v = qkv(g)
    exact = TilePattern(TileConfig(block_size=block, **options)).plan(q, k, g, {})
    fixed = TilePattern(TileConfig(block_size=block, blocks="fixed", **options)).plan(q, k, g, {})
    fixed.validate()
    assert not fixed.is_variable
    full = {"dilation": (1, 1, 1), "stride": (1, 1, 1), "global_frames": 0, **options}
    want = token_mask(g, full["tile"], full["window"], full["dilation"], full["stride"], full["global_frames"])
    got = layout_token_mask(fixed)
    assert bool((got | ~want).all()), "a token lost a key of its tile neighbourhood"
    if not exact.is_variable:
        assert torch.equal(got, want)  # whole tiles: the same layout
    out = block_sparse_attention(q, k, v, fixed, backend="reference")
    torch.testing.assert_close(out, attention(q, k, v, got), atol=1e-5, rtol=1e-5)


def test_fixed_blocks_on_a_video_grid_that_tiles_do_not_divide():
    """Wan 480p's token grid with the video presets' tiles: fixed blocks, whole tiles first, density 0.41 (the
    exact layout: 0.34 with variable blocks); the token order is one permutation of the sequence."""
    g = VideoGeometry(21, 30, 52)
    cfg = dict(block_size=128, tile=(2, 8, 8), window=(EVERY_TILE, 3, 3))
    q = torch.zeros(1, 1, g.num_tokens, 8)
    fixed = TilePattern(TileConfig(blocks="fixed", **cfg)).plan(q, q, g, {})
    exact = TilePattern(TileConfig(**cfg)).plan(q, q, g, {})
    assert not fixed.is_variable and exact.is_variable
    assert torch.equal(fixed.q_perm.view(-1).sort().values, torch.arange(g.num_tokens))
    assert 0.40 < float(fixed.density()) < 0.42 and 0.33 < float(exact.density()) < 0.35


def test_uniform_tiles_give_fixed_blocks_and_partial_tiles_variable_blocks():
    q = torch.zeros(1, 1, 4 * 8 * 8, 8)
    fixed = TilePattern(TileConfig(block_size=16, tile=(1, 4, 4))).plan(q, q, VideoGeometry(4, 8, 8), {})
    assert not fixed.is_variable and fixed.has_permutation
    q = torch.zeros(1, 1, 3 * 7 * 11, 8)
    variable = TilePattern(TileConfig(block_size=16, tile=(1, 4, 4))).plan(q, q, VideoGeometry(3, 7, 11), {})
    assert variable.is_variable and variable.num_q_blocks == 3 * 2 * 3


def test_batch2_and_border_windows_see_equal_counts():
    g = VideoGeometry(4, 9, 21)
    cfg = TileConfig(block_size=16, tile=(1, 4, 4), window=(3, 3, 3))
    q, k, v = qkv(g, batch=2, heads=3, seed=1)
    layout = TilePattern(cfg).plan(q, k, g, {})
    out = block_sparse_attention(q, k, v, layout, backend="reference")
    want = token_mask(g, (1, 4, 4), (3, 3, 3))
    torch.testing.assert_close(out, attention(q, k, v, want), atol=1e-5, rtol=1e-5)
    assert (out[0] - out[1]).abs().max() > 1e-3  # per-sample attention, not sample 0 broadcast
    # Grid 4 x 3 x 6 tiles, window 3 on each axis: clamped at the borders, every query tile sees 3 * 3 * 3 tiles.
    assert torch.equal(layout.kv_counts, torch.full_like(layout.kv_counts, 27))


@pytest.mark.parametrize("grid, tile", [((3, 7, 11), (1, 4, 4)), ((1, 20, 33), (1, 8, 16)), ((5, 9, 9), (2, 8, 8))])
def test_window_covering_the_grid_is_dense(grid, tile):
    g = VideoGeometry(*grid)
    block = 128 if tile[1] == 8 else 16
    cfg = make_config("tile", block_size=block, tile=tile, window=(64, 64, 64))
    pattern = make_pattern(cfg)
    assert isinstance(pattern, TilePattern)
    q, k, v = qkv(g, batch=2)
    layout = pattern.plan(q, k, g, {})
    assert float(layout.density()) == 1.0
    torch.testing.assert_close(
        block_sparse_attention(q, k, v, layout, backend="reference"), attention(q, k, v), atol=1e-5, rtol=1e-5
    )


def test_density_decreases_with_smaller_windows():
    g = VideoGeometry(9, 16, 24)
    q = torch.zeros(1, 1, g.num_tokens, 8)
    dens = [
        float(TilePattern(TileConfig(block_size=16, tile=(1, 4, 4), window=(w, w, w))).plan(q, q, g, {}).density())
        for w in (9, 5, 3, 1)
    ]
    assert dens[0] == 1.0 and all(a > b for a, b in zip(dens, dens[1:])), dens
    image = VideoGeometry(1, 32, 48)
    q = torch.zeros(1, 1, image.num_tokens, 8)
    dens = [float(TilePattern(TileConfig(window=(1, w, w))).plan(q, q, image, {}).density()) for w in (4, 3, 1)]
    assert dens[0] == 1.0 and all(a > b for a, b in zip(dens, dens[1:])), dens


def test_default_tile_is_one_block_per_frame_tile():
    assert TilePattern(TileConfig()).tile == (1, 8, 16)
    assert TilePattern(TileConfig(block_size=64)).tile == (1, 8, 8)


def test_static_layout_is_shared_between_layers():
    g = VideoGeometry(3, 7, 11)
    shared = BoundedCache()
    pattern = TilePattern(TileConfig(block_size=16, tile=(1, 4, 4), window=(1, 3, 3)))
    q = torch.zeros(1, 1, g.num_tokens, 8)
    first = pattern.plan(q, q, g, PlanCache(shared=shared))
    assert pattern.plan(q, q, g, PlanCache(shared=shared)) is first
    other = TilePattern(TileConfig(block_size=16, tile=(1, 4, 4), window=(1, 1, 1)))
    assert other.plan(q, q, g, PlanCache(shared=shared)) is not first  # options are part of the key
    assert pattern.plan(q, q, g, {}) is not first  # a plain dict works and builds anew


@pytest.mark.parametrize(
    "options, field",
    [
        ({"tile": (0, 4, 4)}, "tile"),
        ({"tile": (4, 4)}, "tile"),
        ({"tile": (1, 4, True)}, "tile"),
        ({"tile": (2, 8, 16)}, "tile"),  # 256 tokens > block_size 128
        ({"window": (3, 3)}, "window"),
        ({"window": (3, 0, 3)}, "window"),
        ({"window": (3, 3, 2.5)}, "window"),
        ({"dilation": (1, 0, 1)}, "dilation"),
        ({"stride": "x"}, "stride"),
        ({"stride": (1, 4, 1)}, "stride"),  # larger than the window
        ({"global_frames": -1}, "global_frames"),
        ({"global_frames": True}, "global_frames"),
        ({"blocks": "packed"}, "blocks"),
    ],
)
def test_invalid_configs_name_the_field(options, field):
    with pytest.raises(ValueError, match=field):
        TileConfig(**options)
    with pytest.raises(ValueError, match=field):
        make_config("tile", **options)


def test_plan_rejects_a_token_count_off_the_grid():
    q = torch.zeros(1, 1, 10, 8)
    with pytest.raises(ValueError, match="video tokens only"):
        TilePattern(TileConfig(block_size=16, tile=(1, 4, 4))).plan(q, q, VideoGeometry(3, 7, 11), {})
