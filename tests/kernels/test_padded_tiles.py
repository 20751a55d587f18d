"""`pad_to_tiles`: a variable layout as whole tiles of a padded sequence (what FlashAttention-4 runs for semantic's
cluster pieces). The padded attention is emulated here exactly as FA4 computes it — listed tiles (full and partial),
every slot of a tile, keys masked by ``key_ok`` — and read back through ``q_slot``; it must equal the reference
backend's attention of the variable layout itself."""

import math

import pytest
import torch

from dit_sparse.kernels import block_sparse_attention
from dit_sparse.layout import BlockLayout, pad_to_tiles

B, H, D = 2, 3, 16


def _starts(sizes, length, lead=(1, 1)):
    cuts, pos, i = [0], 0, 0
    while pos < length:
        pos = min(length, pos + sizes[i % len(sizes)])
        cuts.append(pos)
        i += 1
    cuts += [length, length]  # two empty padding pieces at the end, as semantic's static bound leaves
    return torch.tensor(cuts, dtype=torch.int32).view(1, 1, -1).expand(*lead, -1).contiguous()


def _layout(lq, sizes_q, sizes_k, tile, seed, perm_shape=(1, H), valid=None, density=0.4):
    g = torch.Generator().manual_seed(seed)
    qs, ks = _starts(sizes_q, lq), _starts(sizes_k, lq)
    nq, nk = qs.shape[-1] - 1, ks.shape[-1] - 1
    k_sizes = ks[0, 0, 1:] - ks[0, 0, :-1]
    mask = (torch.rand(B, H, nq, nk, generator=g) < density) & (k_sizes > 0)
    mask[..., 0, :] = k_sizes > 0  # one row with every key piece
    mask[0, 0, 1] = False  # a query piece with no keys
    mask[..., nq - 2:, :] = False  # padding pieces compute nothing
    perm = torch.stack([torch.randperm(lq, generator=g) for _ in range(perm_shape[0] * perm_shape[1])])
    perm = perm.view(*perm_shape, lq)
    return BlockLayout.from_block_mask(mask, tile, tile, lq, lq, q_block_starts=qs, kv_block_starts=ks, q_perm=perm,
                                       kv_perm=perm, kv_valid_len=valid)


def _padded_attention(q, k, v, pt, scale):
    """FA4 on the padded tiles, emulated in float64: out and lse in the inputs' token order."""
    def gather(x, src):
        return x.double().gather(2, src.unsqueeze(-1).expand(-1, -1, -1, x.shape[-1]))

    qp, kp, vp = gather(q, pt.q_src), gather(k, pt.kv_src), gather(v, pt.kv_src)
    nq, nk = qp.shape[2] // pt.tile_q, kp.shape[2] // pt.tile_kv
    blocks = torch.zeros(B, H, nq, nk + 1, dtype=torch.bool)
    for idx, cnt, partial in ((pt.full_indices, pt.full_counts, False),
                              (pt.partial_indices, pt.partial_counts, True)):
        listed = torch.arange(idx.shape[-1]) < cnt.unsqueeze(-1)
        blocks.scatter_(-1, torch.where(listed, idx.long(), nk), True)
        # A full tile holds only valid keys; a partial one holds at least one masked slot.
        tile_ok = pt.key_ok.view(B, H, nk, pt.tile_kv).bool().all(-1)
        listed_ok = tile_ok.gather(-1, idx.long().flatten(2)).view_as(idx)
        assert bool((listed_ok[listed] != partial).all())
    blocks = blocks[..., :nk]
    tok = blocks.repeat_interleave(pt.tile_q, 2).repeat_interleave(pt.tile_kv, 3)
    tok = tok & pt.key_ok.bool().unsqueeze(2)
    s = torch.einsum("bhqd,bhkd->bhqk", qp, kp) * scale
    s = s.masked_fill(~tok, float("-inf"))
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - torch.where(torch.isinf(lse), 0.0, lse).unsqueeze(-1))
    out = torch.einsum("bhqk,bhkd->bhqd", p, vp)
    out = out.gather(2, pt.q_slot.unsqueeze(-1).expand(-1, -1, -1, out.shape[-1]))
    return out.float(), lse.gather(2, pt.q_slot).float()


@pytest.mark.parametrize("lq,sizes_q,sizes_k,tile,perm_shape,valid", [
    (300, (64, 1, 37), (64, 1, 2, 33, 17), 64, (1, H), None),  # semantic's pieces: full, 1-token and ragged
    (200, (16, 5), (7, 16, 3), 16, (B, H), None),  # per-batch orders, small tiles
    (257, (32,), (32, 32, 5), 32, (B, 1), torch.tensor([250, 131], dtype=torch.int32)),  # masked tail keys
])
def test_padded_tiles_compute_the_variable_layout(lq, sizes_q, sizes_k, tile, perm_shape, valid):
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, lq, D) for _ in range(3))
    layout = _layout(lq, sizes_q, sizes_k, tile, seed=1, perm_shape=perm_shape, valid=valid)
    pt = pad_to_tiles(layout, B, H)
    assert pt.q_src.shape == (B, H, layout.num_q_blocks * tile) and pt.q_slot.shape == (B, H, lq)
    # Every token has one slot, and that slot reads it.
    assert bool((pt.q_src.gather(2, pt.q_slot) == torch.arange(lq)).all())
    # Padding keys are masked: a tile of a piece of n tokens has n valid slots (fewer with kv_valid_len).
    assert int(pt.key_ok.sum()) <= B * H * lq
    if valid is None:
        assert int(pt.key_ok.sum()) == B * H * lq
    scale = 1.0 / math.sqrt(D)
    want, want_lse = block_sparse_attention(q, k, v, layout, backend="reference", return_lse=True)
    got, got_lse = _padded_attention(q, k, v, pt, scale)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(got_lse, want_lse, atol=2e-5, rtol=2e-5)
    # Both kinds of tile occur in these layouts (the split is exercised).
    assert int(pt.full_counts.sum()) > 0 and int(pt.partial_counts.sum()) > 0


def test_padded_tiles_with_fixed_query_blocks_and_no_permutation():
    # Query blocks of the fixed grid (the last one ragged), variable key pieces, tokens in their own order.
    torch.manual_seed(0)
    lq, tile = 150, 32
    q, k, v = (torch.randn(B, H, lq, D) for _ in range(3))
    ks = _starts((32, 7, 20), lq)
    nq, nk = -(-lq // tile), ks.shape[-1] - 1
    g = torch.Generator().manual_seed(3)
    mask = (torch.rand(B, H, nq, nk, generator=g) < 0.5) & (ks[0, 0, 1:] > ks[0, 0, :-1])
    layout = BlockLayout.from_block_mask(mask, tile, tile, lq, lq, kv_block_starts=ks)
    pt = pad_to_tiles(layout, B, H)
    assert bool((pt.q_src.gather(2, pt.q_slot) == torch.arange(lq)).all())
    want, want_lse = block_sparse_attention(q, k, v, layout, backend="reference", return_lse=True)
    got, got_lse = _padded_attention(q, k, v, pt, 1.0 / math.sqrt(D))
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)
    finite = torch.isfinite(want_lse)
    assert torch.equal(torch.isfinite(got_lse), finite)
    torch.testing.assert_close(got_lse[finite], want_lse[finite], atol=2e-5, rtol=2e-5)
