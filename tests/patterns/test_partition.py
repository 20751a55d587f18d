"""The balanced partition behind ``SemanticConfig(clusters="balanced")``: groups of exactly ``block`` like tokens."""

import math

import pytest
import torch

import dit_sparse as ds
from dit_sparse import VideoGeometry
from dit_sparse.kernels import block_sparse_attention
from dit_sparse.patterns import make_pattern
from dit_sparse.patterns.partition import _levels, _partition, balanced_partition


def planted(groups: int, size: int, dim: int, rows: int = 2, seed: int = 0):
    """Shuffled points of ``groups`` well-separated clusters of ``size`` points each, and their labels."""
    g = torch.Generator().manual_seed(seed)
    xs, labels = [], []
    for _ in range(rows):
        centres = torch.randn(groups, dim, generator=g) * 6
        x = centres.repeat_interleave(size, 0) + 0.2 * torch.randn(groups * size, dim, generator=g)
        lab = torch.arange(groups).repeat_interleave(size)
        order = torch.randperm(groups * size, generator=g)
        xs.append(x[order])
        labels.append(lab[order])
    return torch.stack(xs), torch.stack(labels)


@pytest.mark.parametrize("length,block", [(1024, 128), (1000, 128), (300, 32), (31, 32), (129, 64)])
def test_levels_cut_into_whole_blocks(length, block):
    levels = _levels(length, block)
    blocks = -(-length // block)
    assert len(levels) == math.ceil(math.log2(blocks)) if blocks > 1 else len(levels) == 0
    perm = balanced_partition(torch.randn(2, length, 8), block)
    assert perm.shape == (2, length)
    for row in perm:
        assert sorted(row.tolist()) == list(range(length))


@pytest.mark.parametrize("dim", [16, 80])  # 80 > PCA_DIMS: the principal-axis projection is taken
def test_groups_are_the_planted_clusters(dim):
    x, labels = planted(8, 64, dim)
    perm = balanced_partition(x, 64)
    for row in range(2):
        groups = labels[row][perm[row]].view(8, 64)
        # Every group of 64 is one planted cluster (a sort along one fixed axis, or no sort, mixes them).
        assert (groups == groups[:, :1]).all(), groups


def test_partition_compiles_as_one_graph_and_matches_eager():
    torch._dynamo.reset()
    x, _ = planted(4, 32, 48)
    eager = balanced_partition(x, 32)
    from dit_sparse.patterns.partition import PCA_DIMS, _padded_levels

    gen = torch.Generator().manual_seed(0)
    basis, axis = torch.randn(48, PCA_DIMS, generator=gen), torch.randn(PCA_DIMS, generator=gen)
    compiled = torch.compile(_partition.fn, backend="aot_eager", fullgraph=True, dynamic=False)(
        x, basis, axis, _padded_levels(128, 32, x.device))
    assert torch.equal(eager, compiled)


def test_balanced_semantic_layout_is_fixed_blocks_over_the_groups():
    geometry = VideoGeometry(3, 10, 10)  # 300 tokens: 9 full blocks of 32 and one of 12
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 300, 32) for _ in range(3))
    dense = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(32), -1) @ v
    cfg = ds.make_config("semantic", clusters="balanced", block_size=32, top_p=1.0)
    layout = make_pattern(cfg).plan(q, k, geometry, {})
    assert layout.kind == "fixed" and layout.q_perm.shape == (2, 3, 300) and layout.kv_perm is layout.q_perm
    assert float(layout.density()) == pytest.approx(1.0)
    torch.testing.assert_close(block_sparse_attention(q, k, v, layout, backend="reference"), dense, atol=1e-5,
                               rtol=1e-5)
    sparse = make_pattern(ds.make_config("semantic", clusters="balanced", block_size=32, top_p=0.3,
                                         min_kv_ratio=0.0)).plan(q, k, geometry, {})
    assert 0.1 < float(sparse.density()) < 0.6
    # Every query block keeps its own group (the diagonal), whatever top_p selects.
    idx, cnt = sparse.kv_indices, sparse.kv_counts
    rows = torch.arange(idx.shape[2]).view(1, 1, -1, 1)
    kept = (idx == rows) & (torch.arange(idx.shape[-1]) < cnt.unsqueeze(-1))
    assert kept.any(-1).all()


def test_balanced_needs_as_many_queries_as_keys():
    cfg = ds.make_config("semantic", clusters="balanced", block_size=32)
    with pytest.raises(ValueError, match="clusters='balanced'.*clusters='separate'"):
        make_pattern(cfg).plan(torch.randn(1, 1, 64, 16), torch.randn(1, 1, 96, 16), VideoGeometry(1, 8, 8), {})
    with pytest.raises(ValueError, match="'joint', 'separate', 'balanced'"):
        ds.make_config("semantic", clusters="kmeans")


@pytest.mark.parametrize("length,block,sub", [(1024, 128, 32), (1000, 128, 64), (300, 64, 16), (130, 128, 32)])
def test_sub_groups_nest_inside_the_blocks(length, block, sub):
    """With ``sub_block`` every block is the same set of tokens as without it, only ordered into finer groups: the
    cuts above the block size are the same, the extra levels stay inside each block."""
    x = torch.randn(2, length, 24)
    coarse = balanced_partition(x, block)
    fine = balanced_partition(x, block, sub_block=sub)
    for row in range(2):
        for start in range(0, length, block):
            assert sorted(coarse[row, start:start + block].tolist()) == sorted(fine[row, start:start + block].tolist())
    # Every cut lies on the sub-group grid and no final group is longer than ``sub``.
    for starts in _levels(length, block, sub):
        assert all(s % sub == 0 for s in starts)


def test_sub_groups_are_the_planted_clusters():
    x, labels = planted(8, 16, 16)  # 128 points: blocks of 64 hold 4 planted clusters of 16
    perm = balanced_partition(x, 64, sub_block=16)
    for row in range(2):
        groups = labels[row][perm[row]].view(8, 16)
        assert (groups == groups[:, :1]).all(), groups


def test_balanced_kv_block_size_layout_keeps_each_query_groups_own_keys():
    geometry = VideoGeometry(3, 10, 10)  # 300 tokens: query groups of 64 (the last 44), key groups of 16
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 300, 32) for _ in range(3))
    dense = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(32), -1) @ v
    full = make_pattern(ds.make_config("semantic", clusters="balanced", block_size=64, kv_block_size=16,
                                       top_p=1.0)).plan(q, k, geometry, {})
    assert (full.block_q, full.block_kv, full.num_q_blocks, full.num_kv_blocks) == (64, 16, 5, 19)
    torch.testing.assert_close(block_sparse_attention(q, k, v, full, backend="reference"), dense, atol=1e-5,
                               rtol=1e-5)
    sparse = make_pattern(ds.make_config("semantic", clusters="balanced", block_size=64, kv_block_size=16,
                                         top_p=0.3, min_kv_ratio=0.0)).plan(q, k, geometry, {})
    assert sparse.kind == "fixed" and 0.05 < float(sparse.density()) < 0.6
    # Query group i holds key groups [4i, 4i + 4): all of them are kept (its own tokens' keys).
    mask = sparse.to_block_mask()
    own = (torch.arange(19) // 4).view(1, -1) == torch.arange(5).view(-1, 1)
    assert mask[..., own].all()


def test_kv_block_size_is_checked():
    with pytest.raises(ValueError, match="estimate='centroids' does not select"):
        ds.make_config("semantic", clusters="separate", estimate="centroids", kv_block_size=32)
    with pytest.raises(ValueError, match="must divide block_size=128"):
        ds.make_config("semantic", clusters="balanced", block_size=128, kv_block_size=48)
    with pytest.raises(ValueError, match=r"kv_block_size=8 is out of range; allowed: \[16"):
        ds.make_config("semantic", clusters="balanced", block_size=128, kv_block_size=8)
