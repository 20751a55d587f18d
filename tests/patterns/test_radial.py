import torch

from dit_sparse.geometry import VideoGeometry
from dit_sparse.patterns.radial import radial_block_mask, radial_density


def token_level_radial(geometry, decay, sink, block):
    """Brute-force token mask -> block mask, the definition the analytic block mask must match (raster)."""
    from dit_sparse.patterns.radial import radial_window

    c = geometry.token_coords()
    f, r = c[:, 0], c[:, 1] * geometry.width + c[:, 2]
    d = (f[:, None] - f[None, :]).abs()
    width, keep = radial_window(d, geometry.tokens_per_frame, decay, block)
    tok = (d <= 1) | (keep & ((r[:, None] - r[None, :]).abs() <= width))
    if sink:
        tok |= (f[None, :] == 0)
    n = -(-geometry.num_tokens // block)
    pad = n * block - geometry.num_tokens
    tok = torch.nn.functional.pad(tok, (0, pad, 0, pad))
    return tok.view(n, block, n, block).any(3).any(1)


def test_block_mask_matches_token_definition_on_odd_grids():
    for grid, block in [((9, 5, 7), 16), ((13, 4, 6), 32), ((6, 3, 5), 64), ((17, 6, 10), 16)]:
        g = VideoGeometry(*grid)
        for decay in (0.3, 1.0):
            for sink in (False, True):
                got = radial_block_mask(g, block, decay=decay, sink=sink)
                assert torch.equal(got, token_level_radial(g, decay, sink, block)), (grid, block, decay, sink)


def test_two_frames_are_dense_and_many_frames_sparse():
    assert radial_density(VideoGeometry(2, 16, 16), 64) == 1.0
    # A single frame is not dense any more (its own 2-D window, tests below), except at the largest decay.
    assert radial_density(VideoGeometry(1, 7, 9), 16, decay=16.0) == 1.0
    assert radial_density(VideoGeometry(21, 30, 52), 128, decay=0.2) < 0.4


def test_density_monotone_in_decay():
    g = VideoGeometry(13, 16, 16)
    dens = [radial_density(g, 64, decay=d) for d in (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)]
    assert all(a <= b for a, b in zip(dens, dens[1:])), dens
    assert dens[0] < dens[-1]


def test_2d_variant_contains_same_frame_pairs_and_diagonal():
    g = VideoGeometry(9, 12, 20)
    for spatial in ("raster", "2d"):
        m = radial_block_mask(g, 32, decay=0.5, spatial=spatial)
        assert m.diagonal().all()
        assert torch.equal(m, m.T)  # the pattern is symmetric in (query, key)


def token_level_image(geometry, decay, block):
    """Brute force for a single frame: token pairs within the Chebyshev radius, then any pair -> block."""
    from dit_sparse.patterns.radial import image_radius

    c = geometry.token_coords()
    dy = (c[:, None, 1] - c[None, :, 1]).abs()
    dx = (c[:, None, 2] - c[None, :, 2]).abs()
    tok = torch.maximum(dy, dx) <= image_radius(geometry.height, geometry.width, decay, block)
    n = -(-geometry.num_tokens // block)
    pad = n * block - geometry.num_tokens
    tok = torch.nn.functional.pad(tok, (0, pad, 0, pad))
    return tok.view(n, block, n, block).any(3).any(1)


def test_single_frame_matches_token_definition_on_odd_grids():
    for grid, block in [((1, 7, 9), 16), ((1, 13, 5), 16), ((1, 11, 23), 32), ((1, 30, 17), 64), ((1, 3, 40), 16)]:
        g = VideoGeometry(*grid)
        for decay in (0.05, 0.2, 1.0, 3.0):
            got = radial_block_mask(g, block, decay=decay, sink=True)
            want = token_level_image(g, decay, block)
            assert torch.equal(got, want), (grid, block, decay)
            assert got.diagonal().all() and torch.equal(got, got.T)


def test_single_frame_is_sparse_at_default_decay_and_dense_at_16():
    from dit_sparse import RadialConfig
    from dit_sparse.patterns.radial import RadialPattern

    for model in ("wan", "hunyuan_video"):  # Wan's default sink must not make an image dense either
        g = VideoGeometry(1, 32, 32, model)
        q = torch.zeros(1, 1, g.num_tokens, 8)
        layout = RadialPattern(RadialConfig(block_size=64)).plan(q, q, g, {})
        assert float(layout.density()) < 1.0, model
        assert float(RadialPattern(RadialConfig(decay=16.0, block_size=64)).plan(q, q, g, {}).density()) == 1.0
    dens = [radial_density(VideoGeometry(1, 32, 32), 128, decay=d) for d in (0.05, 0.2, 0.95, 4.0, 16.0)]
    assert all(a <= b for a, b in zip(dens, dens[1:])) and dens[0] < 1.0 and dens[-1] == 1.0, dens
    assert dens[1] < 1.0
    # Elongated images are dense at decay 16 as well.
    for grid in [(1, 1, 300), (1, 200, 3), (1, 45, 80)]:
        assert radial_density(VideoGeometry(*grid), 16, decay=16.0) == 1.0, grid
