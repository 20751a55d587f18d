"""k-means clusters resized to whole blocks (``SemanticConfig(clusters="rounded")``, `kmeans.whole_block_labels`)."""

import math

import pytest
import torch

import dit_sparse as ds
from dit_sparse import VideoGeometry
from dit_sparse.kernels import block_sparse_attention
from dit_sparse.patterns import make_pattern
from dit_sparse.patterns.kmeans import (
    apportion_blocks,
    batched_kmeans,
    cluster_counts,
    whole_block_labels,
    whole_block_order,
)


@pytest.mark.parametrize("length,block,k", [(1000, 64, 20), (777, 128, 5), (100, 128, 3), (4096, 128, 40)])
def test_every_cluster_is_whole_blocks_and_only_the_last_block_is_partial(length, block, k):
    g = torch.Generator().manual_seed(length)
    # Uneven spreads per channel: k-means then finds clusters of very different sizes.
    x = torch.randn(2, length, 16, generator=g) * torch.linspace(0.2, 3.0, 16)
    labels, centroids, counts = batched_kmeans(x, k, 8)
    rounded = whole_block_labels(x, centroids, counts, block)
    sizes = cluster_counts(rounded, k + 1).long()
    assert (sizes[:, :k] % block == 0).all(), sizes
    blocks = -(-length // block)
    assert (sizes[:, k] > 0).all() and (sizes[:, k] > (sizes[:, k] // block) * block - block).all()
    assert ((sizes[:, :k] // block).sum(-1) + (-(-sizes[:, k] // block)) == blocks).all()
    # Sorted by label, every block of the sequence is one cluster's tokens.
    perm = whole_block_order(x, centroids, counts, block)
    for row in range(2):
        assert sorted(perm[row].tolist()) == list(range(length))
        runs = rounded[row][perm[row]]
        padded = torch.cat([runs, runs[-1:].expand(blocks * block - length)]).view(blocks, block)
        assert (padded == padded[:, :1]).all()
    # Whole blocks as near the k-means sizes as they can be: no cluster moves by a block or more.
    quota = counts / block
    assert ((apportion_blocks(counts, block, length) - quota).abs() < 1).all()


def test_a_rounded_down_cluster_gives_up_its_farthest_tokens_to_the_nearest_cluster():
    # Cluster A: 64 tokens near the origin and 16 out toward cluster B (48 tokens), C: 128 far away; blocks of 64:
    # A (1.25 blocks) keeps 64, B (0.75) gets a block, so A's 16 outlying tokens move to B, none to C. (Ranking
    # A's points by x.c alone, without |x|^2, would keep the outliers: it favours the points farthest along c.)
    g = torch.Generator().manual_seed(0)
    a = torch.cat([0.1 * torch.randn(64, 2, generator=g), torch.tensor([2.5, 0.0]) + 0.1 * torch.randn(16, 2,
                                                                                                          generator=g)])
    b = torch.tensor([6.0, 0.0]) + 0.1 * torch.randn(48, 2, generator=g)
    c = torch.tensor([0.0, 50.0]) + 0.1 * torch.randn(128, 2, generator=g)
    x = torch.cat([a, b, c]).unsqueeze(0)
    centroids = torch.stack([a.mean(0), b.mean(0), c.mean(0)]).unsqueeze(0)
    counts = torch.tensor([[80.0, 48.0, 128.0]])
    assert apportion_blocks(counts, 64, 256).tolist() == [[1, 1, 2]]
    rounded = whole_block_labels(x, centroids, counts, 64)[0]
    rounded = torch.where(rounded == 3, 2, rounded)  # C, the cluster with the most blocks, is put last
    assert rounded[:64].eq(0).all() and rounded[64:80].eq(1).all() and rounded[80:128].eq(1).all()
    assert rounded[128:].eq(2).all()


def test_rounded_layout_is_fixed_blocks_and_exact_at_full_budget():
    geometry = VideoGeometry(3, 10, 10)  # 300 tokens: 9 blocks of 32 and a partial one
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 300, 32) for _ in range(3))
    dense = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(32), -1) @ v
    cfg = ds.make_config("semantic", clusters="rounded", block_size=32, kv_clusters=8, top_p=1.0)
    layout = make_pattern(cfg).plan(q, k, geometry, {})
    assert layout.kind == "fixed" and layout.kv_perm is layout.q_perm and layout.q_perm.shape == (2, 3, 300)
    assert float(layout.density()) == pytest.approx(1.0)
    torch.testing.assert_close(block_sparse_attention(q, k, v, layout, backend="reference"), dense, atol=1e-5,
                               rtol=1e-5)
    sparse = make_pattern(ds.make_config("semantic", clusters="rounded", block_size=32, kv_clusters=8, top_p=0.3,
                                         min_kv_ratio=0.0)).plan(q, k, geometry, {})
    assert 0.1 < float(sparse.density()) < 0.7
    idx, cnt = sparse.kv_indices, sparse.kv_counts
    rows = torch.arange(idx.shape[2]).view(1, 1, -1, 1)
    kept = (idx == rows) & (torch.arange(idx.shape[-1]) < cnt.unsqueeze(-1))
    assert kept.any(-1).all()  # every query block keeps its own tokens' keys


def test_rounded_needs_as_many_queries_as_keys_and_counts_joint_clusters():
    cfg = ds.make_config("semantic", clusters="rounded", block_size=32)
    with pytest.raises(ValueError, match="clusters='rounded'.*clusters='separate'"):
        make_pattern(cfg).plan(torch.randn(1, 1, 64, 16), torch.randn(1, 1, 96, 16), VideoGeometry(1, 8, 8), {})
    # One clustering of the tokens, like "joint": kv_clusters, cut to one per 16 tokens; q_clusters unused.
    assert make_pattern(ds.make_config("semantic", clusters="rounded", kv_clusters=40)).cluster_counts(320, 320) \
        == (20, 20)
