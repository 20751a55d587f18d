"""Semantic's cluster pieces packed whole into fixed blocks (``SemanticConfig(pack_pieces=True)``): a cover of the
variable layout's selection that fixed-block kernels (FlashAttention-4) run on full tiles."""

import math

import pytest
import torch

import dit_sparse as ds
from dit_sparse import VideoGeometry
from dit_sparse.eval.fidelity import token_blocks
from dit_sparse.kernels import block_sparse_attention
from dit_sparse.patterns import make_pattern

GEOMETRY = VideoGeometry(3, 10, 10)  # 300 tokens: 9 blocks of 32 and a partial one


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 3, 300, 32, generator=g) for _ in range(3))
    return q, q + 0.5 * k, v  # q close to k, as in trained DiTs


def token_mask(layout, b=2, h=3):
    """bool [B, H, Lq, Lk]: query token i computes key token j (in the original order)."""
    qb, kb = token_blocks(layout, "q", b, h), token_blocks(layout, "kv", b, h)
    blocks = layout.to_block_mask().expand(b, h, -1, -1)
    rows = blocks.gather(2, qb.unsqueeze(-1).expand(-1, -1, -1, blocks.shape[-1]))
    return rows.gather(3, kb.unsqueeze(2).expand(-1, -1, rows.shape[2], -1))


def config(**extra):
    return ds.make_config("semantic", block_size=32, kv_clusters=12, **extra)


@pytest.mark.parametrize("order", ["label", "similarity"])
def test_packed_pieces_are_exact_at_full_budget(order):
    q, k, v = inputs()
    dense = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(32), -1) @ v
    layout = make_pattern(config(pack_pieces=True, cluster_order=order, top_p=1.0)).plan(q, k, GEOMETRY, {})
    assert layout.kind == "fixed" and layout.kv_perm is layout.q_perm and float(layout.density()) == pytest.approx(1)
    torch.testing.assert_close(block_sparse_attention(q, k, v, layout, backend="reference"), dense, atol=1e-5,
                               rtol=1e-5)


@pytest.mark.parametrize("order,kv_block", [("label", None), ("similarity", None), ("similarity", 16)])
@pytest.mark.parametrize("top_p", [0.3, 0.6])
def test_packed_pieces_compute_every_pair_the_pieces_selected(order, kv_block, top_p):
    q, k, _ = inputs(1)
    pieces = make_pattern(config(top_p=top_p, kv_block_size=kv_block)).plan(q, k, GEOMETRY, {})
    packed = make_pattern(config(top_p=top_p, pack_pieces=True, cluster_order=order,
                                 kv_block_size=kv_block)).plan(q, k, GEOMETRY, {})
    assert (packed.block_q, packed.block_kv) == (32, kv_block or 32)
    selected, computed = token_mask(pieces), token_mask(packed)
    assert (computed | ~selected).all()  # a cover: nothing the pieces selected is dropped
    # ... and not everything: the cover stays sparse, and computes more than it selected only in shared blocks.
    assert selected.float().mean() < computed.float().mean() < 0.95


def test_pack_pieces_is_checked():
    with pytest.raises(ValueError, match="pack_pieces"):
        ds.make_config("semantic", pack_pieces=True, clusters="separate")
    with pytest.raises(ValueError, match="cluster_order"):
        ds.make_config("semantic", cluster_order="random")
