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


@pytest.mark.parametrize("with_rank,kv_block", [(True, 32), (False, 32), (True, 16)])
def test_packed_plan_compiles_as_one_graph_and_matches_eager(with_rank, kv_block):
    """On the GPU the whole packing runs compiled (`compiled_planning`, fullgraph): a graph break or a host read in it
    would fail there. Traced on the CPU with an eager backend, the result must equal eager."""
    from dit_sparse.patterns.semantic import packed_plan

    torch._dynamo.reset()
    torch.manual_seed(3)
    n, length, d, kc = 4, 300, 32, 12
    q, k = torch.randn(n, length, d), torch.randn(n, length, d)
    labels = torch.randint(0, kc, (n, length))
    counts = torch.zeros(n, kc).scatter_add_(1, labels, torch.ones(n, length))
    rank = torch.stack([torch.randperm(kc) for _ in range(n)]) if with_rank else None
    args = (q, k, labels, counts, rank, 32, kv_block, "pooled", 0.5, 0.0, True)  # with the clusters' sums
    eager = packed_plan.fn(*args)
    compiled = torch.compile(packed_plan.fn, backend="aot_eager", fullgraph=True, dynamic=False)(*args)
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)
    # The clusters' [q, k] sums, by label.
    joined = torch.cat([q, k], -1)
    want = torch.zeros(n, kc, 2 * d).scatter_add_(1, labels.unsqueeze(-1).expand(-1, -1, 2 * d), joined)
    torch.testing.assert_close(eager[3], want, atol=1e-4, rtol=1e-5)
    assert int(eager[1].sum()) > 0 and sorted(eager[2][0].tolist()) == list(range(length))


def test_cluster_order_is_kept_while_kmeans_is_warm(monkeypatch):
    """The clusters' similarity order is computed on k-means' cold start and kept while it is warm-started (the
    clusters keep their identity); a kept order still gives a cover of the pieces' selection."""
    from dit_sparse.patterns import semantic

    calls = []
    real = semantic._similarity_rank
    monkeypatch.setattr(semantic, "_similarity_rank", lambda c, kk: calls.append(kk) or real(c, kk))
    pattern = make_pattern(config(pack_pieces=True, cluster_order="similarity", top_p=0.5))
    cache = {}
    q, k, _ = inputs(0)
    pattern.plan(q, k, GEOMETRY, cache)  # cold start
    assert len(calls) == 1 and cache["qk_rank"].shape == (6, 12)
    q2, k2, _ = inputs(1)
    warm = dict(cache)
    packed = pattern.plan(q2, k2, GEOMETRY, cache)  # warm-started: the order is kept
    assert len(calls) == 1
    pieces = make_pattern(config(top_p=0.5)).plan(q2, k2, GEOMETRY, warm)  # the same warm-started clusters
    selected, computed = token_mask(pieces), token_mask(packed)
    assert (computed | ~selected).all() and computed.float().mean() < 0.95
    pattern.plan(q2[:1], k2[:1], GEOMETRY, cache)  # another batch: k-means starts cold, a new order
    assert len(calls) == 2 and cache["qk_rank"].shape == (3, 12)
    every = make_pattern(config(pack_pieces=True, cluster_order="similarity", keep_cluster_order=False))
    every.plan(q, k, GEOMETRY, cache)
    every.plan(q, k, GEOMETRY, cache)
    assert len(calls) == 4
