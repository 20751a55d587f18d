import math

import pytest
import torch
from tiny_models import hunyuan_inputs, tiny_hunyuan, tiny_wan, wan_inputs

import dit_sparse as ds
from dit_sparse import DraftConfig, VideoGeometry
from dit_sparse.kernels import block_sparse_attention
from dit_sparse.patterns.draft import DraftPattern, default_pool, draft_map, pool_tiles, select_tiles, tile_grid
from dit_sparse.schedule import BoundedCache, PlanCache


def qk(geometry, batch=1, heads=2, dim=64, seed=0, v=False):
    g = torch.Generator().manual_seed(seed)
    # Diffusers hands the pattern transposed views of (B, L, H, D) tensors; test that layout, not a contiguous copy.
    shape = (batch, geometry.num_tokens, heads, dim)
    return [torch.randn(shape, generator=g).transpose(1, 2) for _ in range(3 if v else 2)]


def dense_attention(q, k, v, mask=None):
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, -1) @ v


def tile_of_token(tiles):
    """Tile id of every token in the original (raster) order, [L]."""
    perm = tiles.full_perm().view(-1)
    in_perm = torch.repeat_interleave(torch.arange(tiles.num_tiles), tiles.sizes)
    return torch.empty_like(in_perm).scatter_(0, perm, in_perm)


def plan(geometry, density=0.5, block=16, pool=None, seed=0, **kw):
    pattern = DraftPattern(DraftConfig(density=density, block_size=block, pool=pool, **kw))
    q, k, v = qk(geometry, seed=seed, v=True)
    return pattern, (q, k, v), pattern.plan(q, k, geometry, {})


def test_default_pool_and_oversized_pool_error():
    assert default_pool(128) == (8, 16)
    assert default_pool(64) == (8, 8)
    assert default_pool(32) == (4, 8)
    assert default_pool(16) == (4, 4)
    with pytest.raises(ValueError, match="must fit in one kernel block"):
        DraftPattern(DraftConfig(block_size=64, pool=(8, 16)))


@pytest.mark.parametrize("grid,block,pool,blocks,variable", [
    ((5, 9, 13), 16, (4, 4), "tiles", True), ((5, 9, 13), 16, (4, 4), "fixed", False),
    ((4, 8, 16), 32, None, "tiles", False), ((4, 8, 16), 32, None, "fixed", False),
])
def test_full_density_equals_dense(grid, block, pool, blocks, variable):
    g = VideoGeometry(*grid)
    _, (q, k, v), layout = plan(g, density=1.0, block=block, pool=pool, blocks=blocks)
    assert layout.is_variable == variable
    assert layout.has_permutation
    assert float(layout.density()) == 1.0
    out = block_sparse_attention(q, k, v, layout, backend="reference")
    torch.testing.assert_close(out, dense_attention(q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "grid,pool", [((5, 9, 13), (4, 4)), ((3, 8, 16), (4, 8)), ((2, 7, 5), (2, 8)), ((1, 3, 3), (4, 4))]
)
def test_permutation_round_trip_and_tiles_contiguous(grid, pool):
    g = VideoGeometry(*grid)
    tiles = tile_grid(g, pool, 32)
    perm = tiles.full_perm()
    assert perm.shape == (1, 1, g.num_tokens) and perm.dtype == torch.int64
    assert torch.equal(perm.view(-1).sort().values, torch.arange(g.num_tokens))
    x = torch.randn(2, 3, g.num_tokens, 4)
    idx = perm.expand(2, 3, -1).unsqueeze(-1).expand_as(x)
    xp = x.gather(2, idx)
    assert torch.equal(torch.empty_like(xp).scatter_(2, idx, xp), x)
    # Each tile is one frame's ph x pw box (edges partial), in raster order inside the box.
    coords = g.token_coords()[perm.view(-1)]
    starts = tiles.starts.view(-1).tolist()
    assert starts[-1] == g.num_tokens and int(tiles.sizes.max()) <= pool[0] * pool[1]
    for t in range(tiles.num_tiles):
        c = coords[starts[t] : starts[t + 1]]
        assert (c[:, 0] == c[0, 0]).all()
        assert (c[:, 1] // pool[0] == c[0, 1] // pool[0]).all() and (c[:, 2] // pool[1] == c[0, 2] // pool[1]).all()
        raster = c[:, 1] * g.width + c[:, 2]
        assert (raster[1:] > raster[:-1]).all()
    assert sum(b - a for a, b in zip(starts, starts[1:])) == g.num_tokens


def test_pooling_matches_permuted_segment_means():
    g = VideoGeometry(3, 9, 13)
    tiles = tile_grid(g, (4, 4), 16)
    (q, _) = qk(g, batch=2)
    tid = tile_of_token(tiles)
    want = torch.zeros(2, 2, tiles.num_tiles, 64).index_add_(2, tid, q) / tiles.sizes[:, None].float()
    torch.testing.assert_close(pool_tiles(q, g, tiles), want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("density", [0.2, 0.3, 0.5])
def test_requested_density_met_and_diagonal_kept(density):
    g = VideoGeometry(13, 8, 16)
    _, _, layout = plan(g, density=density, block=32)  # pool (4, 8): 52 full tiles, fixed blocks
    assert not layout.is_variable
    assert abs(float(layout.density()) - density) <= 0.05
    n = layout.num_q_blocks
    assert (layout.kv_counts == math.ceil(density * n)).all()
    mask = layout.to_block_mask()
    assert mask.diagonal(dim1=-2, dim2=-1).all()
    # Partial edge tiles: the budget counts tokens, so the token-weighted density still matches, with one block per
    # tile (variable) and with fixed blocks over the packed tile order (the default).
    for blocks in ("tiles", "fixed"):
        _, _, odd = plan(VideoGeometry(13, 9, 13), density=density, block=32, blocks=blocks)
        assert odd.is_variable == (blocks == "tiles")
        assert abs(float(odd.density()) - density) <= 0.05
        assert odd.to_block_mask().diagonal(dim1=-2, dim2=-1).all()


def test_global_budget_density_and_no_empty_row():
    for grid in [(13, 8, 16), (13, 9, 13)]:
        _, _, layout = plan(VideoGeometry(*grid), density=0.3, block=32, global_budget=True)
        assert abs(float(layout.density()) - 0.3) <= 0.05
        assert (layout.kv_counts >= 1).all()
        assert layout.to_block_mask().diagonal(dim1=-2, dim2=-1).all()
        # A global budget lets rows differ in length, which per-row budgets never do on uniform tiles.
        assert layout.kv_counts.min() < layout.kv_counts.max()


def test_draft_map_finds_planted_key_tiles():
    g = VideoGeometry(4, 8, 16)
    tiles = tile_grid(g, (4, 8), 32)
    n = tiles.num_tiles
    tid = tile_of_token(tiles)
    target = (torch.arange(n) + 5) % n  # no tile prefers itself
    eye = torch.eye(64)
    k = (4.0 * eye[tid] + 0.1 * torch.randn(g.num_tokens, 64)).expand(1, 2, -1, -1)
    q = (4.0 * eye[target[tid]] + 0.1 * torch.randn(g.num_tokens, 64)).expand(1, 2, -1, -1)
    dmap = draft_map(q, k, g, tiles)
    torch.testing.assert_close(dmap.sum(-1), torch.ones(1, 2, n))
    mask = select_tiles(dmap, tiles.sizes, 2 / n)
    assert (mask.sum(-1) == 2).all()
    assert mask[..., torch.arange(n), target].all() and mask.diagonal(dim1=-2, dim2=-1).all()


def test_batch2_gets_per_sample_layouts():
    g = VideoGeometry(5, 9, 13)
    pattern = DraftPattern(DraftConfig(density=0.3, block_size=16, pool=(4, 4)))
    q, k = qk(g, batch=2, seed=3)
    shared = BoundedCache()
    layout = pattern.plan(q, k, g, PlanCache(shared=shared))
    assert layout.batch_size == 2 and layout.num_heads == 2
    mask = layout.to_block_mask()
    assert not torch.equal(mask[0], mask[1])
    tiles = pattern.tiles_for(g, "cpu", PlanCache(shared=shared))
    single = pattern.plan(q[1:], k[1:], g, PlanCache(shared=shared)).to_block_mask()
    assert torch.equal(single[0], mask[1])
    # The tiling lives in the state's shared cache (one entry for the geometry), reused by every later call.
    assert len(shared) == 1 and pattern.tiles_for(g, "cpu", PlanCache(shared=shared)) is tiles
    assert pattern.tiles_for(g, "cpu", {}) is not tiles  # a plain dict has nothing shared: built anew


def test_odd_grid_matches_token_level_masked_attention():
    g = VideoGeometry(5, 9, 13)
    pattern, (q, k, v), layout = plan(g, density=0.5, block=16, pool=(4, 4), blocks="tiles")
    assert layout.is_variable and 0.4 < float(layout.density()) < 0.6
    tid = tile_of_token(pattern.tiles_for(g, "cpu"))
    block = layout.to_block_mask()  # [B, H, N, N]
    token_mask = block[:, :, tid][:, :, :, tid]
    out = block_sparse_attention(q, k, v, layout, backend="reference")
    torch.testing.assert_close(out, dense_attention(q, k, v, token_mask), atol=1e-5, rtol=1e-5)
    assert (out - dense_attention(q, k, v)).abs().max() > 1e-3


def test_low_precision_inputs():
    g = VideoGeometry(3, 9, 13)
    pattern = DraftPattern(DraftConfig(density=0.4, block_size=16, pool=(4, 4)))
    q, k = qk(g)
    a = pattern.plan(q, k, g, {})
    b = pattern.plan(q.bfloat16(), k.bfloat16(), g, {})
    assert abs(float(a.density()) - float(b.density())) < 0.05


def run_wan(model, **kw):
    with torch.no_grad():
        return model(**wan_inputs(**kw))[0]


@pytest.mark.parametrize("size", [(16, 16), (12, 20)])
def test_wan_full_density_equals_dense(size):
    model = tiny_wan()
    kw = dict(frames=5, height=size[0], width=size[1])
    ref = run_wan(model, **kw)
    ds.apply_sparse_attention(model, DraftConfig(density=1.0, dense_steps=0, dense_layers=0, block_size=16))
    out = run_wan(model, **kw)
    s = ds.summary(model)
    assert s["sparse_calls"] == 3 and s["mean_density"] == 1.0
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_wan_sparse_is_finite_and_sparse():
    model = tiny_wan()
    ref = run_wan(model, frames=5, height=16, width=16)
    ds.apply_sparse_attention(model, DraftConfig(density=0.3, dense_steps=0, dense_layers=0, block_size=16))
    out = run_wan(model, frames=5, height=16, width=16)
    s = ds.summary(model)
    assert torch.isfinite(out).all()
    assert s["sparse_calls"] == 3 and s["mean_density"] < 0.5
    assert (out - ref).abs().max() > 0


def test_hunyuan_full_density_equals_dense():
    model = tiny_hunyuan()
    kw = dict(batch=2, valid=(6, 2), frames=5, height=6, width=10)
    with torch.no_grad():
        ref = model(**hunyuan_inputs(**kw))[0]
    ds.apply_sparse_attention(model, DraftConfig(density=1.0, dense_steps=0, dense_layers=0, block_size=16))
    with torch.no_grad():
        out = model(**hunyuan_inputs(**kw))[0]
    s = ds.summary(model)
    assert s["sparse_calls"] == 4 and s["mean_density"] == 1.0
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)


def test_exact_key_map_equals_block_mass_over_the_tile_permutation():
    # The raster-order grouped sums of `exact_key_map` must equal the generic estimate on tile-permuted tokens
    # (cumulative sums at the tile boundaries), partial edge tiles included.
    from dit_sparse.patterns.block_mass import block_mass_estimate
    from dit_sparse.patterns.draft import exact_key_map, tile_grid

    geometry = VideoGeometry(3, 7, 11)
    tiles = tile_grid(geometry, (4, 4), 16)
    assert not tiles.uniform
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 3, geometry.num_tokens, 16, generator=g) for _ in range(2))
    perm = tiles.full_perm().expand(2, 3, -1).unsqueeze(-1).expand(-1, -1, -1, 16)
    starts = tiles.starts.view(1, -1)
    expected = block_mass_estimate(q.gather(2, perm).flatten(0, 1), k.gather(2, perm).flatten(0, 1),
                                   1 / math.sqrt(16), 16, starts, starts)
    got = exact_key_map(q, k, geometry, tiles)
    torch.testing.assert_close(got.flatten(0, 1), expected, atol=1e-6, rtol=1e-5)
    # Brute force for one query tile: its mean query's softmax summed over the keys of each tile.
    pos = tiles.full_perm()[0, 0]
    members = pos[tiles.starts[0, 0, 1]:tiles.starts[0, 0, 2]]  # tokens of tile 1
    p = torch.softmax(k[0, 0] @ q[0, 0, members].mean(0) / 4.0, -1)
    tile_of = torch.empty(geometry.num_tokens, dtype=torch.long)
    for t in range(tiles.num_tiles):
        tile_of[pos[tiles.starts[0, 0, t]:tiles.starts[0, 0, t + 1]]] = t
    brute = torch.zeros(tiles.num_tiles).index_add_(0, tile_of, p)
    torch.testing.assert_close(got[0, 0, 1], brute, atol=1e-6, rtol=1e-5)


def test_fixed_blocks_pack_whole_tiles_first_and_match_token_level_attention():
    """blocks="fixed" on a grid with partial edge tiles: fixed blocks over the packed tile order, so every whole tile
    is exactly one block (none is shifted off the block grid by an edge tile) and FA4 can run the layout."""
    g = VideoGeometry(5, 9, 13)
    pattern, (q, k, v), layout = plan(g, density=0.5, block=16, pool=(4, 4))
    assert layout.kind == "fixed" and layout.num_q_blocks == math.ceil(g.num_tokens / 16)
    tiles = pattern.tiles_for(g, "cpu")
    packed = tiles.packed_perm.view(-1)
    assert torch.equal(packed.sort().values, torch.arange(g.num_tokens))
    tid = tile_of_token(tiles)[packed]  # tile of each position of the packed order
    whole = int((tiles.sizes == 16).sum())
    assert whole == 5 * 2 * 3  # 2 x 3 whole 4 x 4 tiles per frame
    assert (tid[: whole * 16].view(whole, 16) == tid[: whole * 16].view(whole, 16)[:, :1]).all()
    # Exact against the token-level mask the layout stands for.
    block_of = torch.empty(g.num_tokens, dtype=torch.long).scatter_(0, packed, torch.arange(g.num_tokens) // 16)
    token_mask = layout.to_block_mask()[:, :, block_of][:, :, :, block_of]
    out = block_sparse_attention(q, k, v, layout, backend="reference")
    torch.testing.assert_close(out, dense_attention(q, k, v, token_mask), atol=1e-5, rtol=1e-5)
    assert abs(float(layout.density()) - 0.5) <= 0.05


@pytest.mark.parametrize("density", [0.05, 0.3, 0.77, 1.0])
def test_fixed_blocks_static_width_bounds_every_row(density, monkeypatch):
    """Fixed-block draft layouts are sized from the per-row budget (no host read of the largest count); the bound
    must hold for every row, or a row would silently lose blocks."""
    g = VideoGeometry(5, 9, 13)
    calls = []
    real_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: calls.append(1) or real_item(self))
    _, (q, k, v), layout = plan(g, density=density, block=16, pool=(4, 4))
    assert not calls  # nothing read back from the device
    monkeypatch.undo()
    width = layout.kv_indices.shape[-1]
    assert int(layout.kv_counts.max()) <= width <= int(layout.kv_counts.max()) + 2
    mask = layout.to_block_mask()
    assert torch.equal(mask.sum(-1), layout.kv_counts.long())  # every counted block is listed
    out = block_sparse_attention(q, k, v, layout, backend="reference")
    assert torch.isfinite(out).all()


def _fixed_plan_args(g, density=0.3, batch=2):
    torch.manual_seed(5)
    pattern = DraftPattern(DraftConfig(density=density, block_size=16, pool=(4, 4)))
    tiles = pattern.tiles_for(g, "cpu")
    q, k = torch.randn(batch, 2, g.num_tokens, 32), torch.randn(batch, 2, g.num_tokens, 32)
    kmax = -(-math.ceil(density * g.num_tokens) // 16) + 1
    return pattern, (q, k, tiles.packed_perm, 16, density, False, "pooled", kmax)


def test_fixed_block_plan_compiles_as_one_graph_and_matches_eager():
    """On the GPU draft's planning runs compiled (`compiled_planning`, fullgraph): a host read or an untraceable op
    in it would break that graph. Traced here on the CPU with an eager backend, the result must equal eager."""
    from dit_sparse.patterns.draft import fixed_block_plan

    torch._dynamo.reset()
    _, args = _fixed_plan_args(VideoGeometry(5, 9, 13))
    eager = fixed_block_plan.fn(*args)
    compiled = torch.compile(fixed_block_plan.fn, backend="aot_eager", fullgraph=True, dynamic=False)(*args)
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)
    assert eager[0].dtype == torch.int32 and eager[1].dtype == torch.int32


def test_compiled_planning_falls_back_to_eager_when_compilation_fails(monkeypatch, caplog):
    """A compiler failure (no toolchain, an unsupported op) must not stop a generation: it is logged once and the
    plan runs eagerly, with the same layout."""
    from dit_sparse.patterns import base
    from dit_sparse.patterns.draft import fixed_block_plan

    g = VideoGeometry(5, 9, 13)
    pattern, args = _fixed_plan_args(g)
    expected = fixed_block_plan.fn(*args)
    attempts = []

    def broken_compile(fn, **kwargs):
        def run(*a, **k):
            attempts.append(1)
            raise RuntimeError("no C++ compiler found")
        return run

    planner = base.compiled_planning(fixed_block_plan.fn)
    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setenv(base.COMPILE_PLANNING_ENV, "all")
    with caplog.at_level("WARNING"):
        first, second = planner(*args), planner(*args)
    assert attempts == [1]  # tried once, then eager for good
    assert "planning eagerly" in caplog.text and "no C++ compiler" in caplog.text
    for got in (first, second):
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
    monkeypatch.setenv(base.COMPILE_PLANNING_ENV, "0")
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(1) or fn)
    base.compiled_planning(fixed_block_plan.fn)(*args)
    assert not calls  # switched off: never compiled


def test_compiled_planning_past_the_recompile_limit_plans_eagerly(monkeypatch, caplog):
    """Every new density (a demo's slider) or shape compiles the plan once; past Dynamo's recompile_limit the plan runs
    eagerly, said as such (not as a compiler failure), with the same layouts."""
    import torch._dynamo

    from dit_sparse.patterns import base
    from dit_sparse.patterns.draft import fixed_block_plan

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": "aot_eager"}))
    monkeypatch.setenv(base.COMPILE_PLANNING_ENV, "all")
    planner = base.compiled_planning(fixed_block_plan.fn)
    torch._dynamo.reset()
    g = VideoGeometry(5, 9, 13)
    with torch._dynamo.config.patch(recompile_limit=2), caplog.at_level("WARNING"):
        for density in (0.2, 0.3, 0.4):
            _, args = _fixed_plan_args(g, density=density)
            got = planner(*args)
            assert all(torch.equal(a, b) for a, b in zip(got, fixed_block_plan.fn(*args)))
    assert planner._failed and "recompile_limit" in caplog.text and "failed" not in caplog.text
