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
    assert radial_density(VideoGeometry(1, 7, 9), 16) == 1.0
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
