import pytest
import torch

from dit_sparse import BlockLayout


def test_from_block_mask_roundtrip_and_packing():
    torch.manual_seed(0)
    mask = torch.rand(2, 3, 5, 7) < 0.4
    mask[0, 0, 2] = False
    lay = BlockLayout.from_block_mask(mask, 64, 64, 300, 420)
    assert lay.kv_indices.dtype == torch.int32 and lay.kv_counts.dtype == torch.int32
    assert torch.equal(lay.kv_counts, mask.sum(-1).int())
    assert torch.equal(lay.to_block_mask(), mask)
    # Packed left, increasing order.
    for b in range(2):
        for h in range(3):
            for i in range(5):
                n = int(lay.kv_counts[b, h, i])
                assert lay.kv_indices[b, h, i, :n].tolist() == torch.nonzero(mask[b, h, i]).flatten().tolist()
    lay.validate()
    assert abs(float(lay.density()) - float(mask.float().mean())) < 1e-6


def test_dense_layout_and_errors():
    lay = BlockLayout.dense(1, 1, 257, 300, 128, 64)
    assert lay.num_q_blocks == 3 and lay.num_kv_blocks == 5 and float(lay.density()) == 1.0
    with pytest.raises(ValueError, match="key blocks"):
        BlockLayout.from_block_mask(torch.ones(1, 1, 3, 4, dtype=torch.bool), 128, 128, 300, 300)
    with pytest.raises(ValueError, match="B, H, Nq, Nk"):
        BlockLayout.from_block_mask(torch.ones(3, 4, dtype=torch.bool), 128, 128, 300, 300)


def test_variable_block_density_is_token_weighted():
    # Two query blocks of 3 and 1 tokens; two key blocks of 2 and 2 tokens; row 0 keeps block 0 only.
    starts_q = torch.tensor([[[0, 3, 4]]], dtype=torch.int32)
    starts_k = torch.tensor([[[0, 2, 4]]], dtype=torch.int32)
    mask = torch.tensor([[[[True, False], [True, True]]]])
    lay = BlockLayout.from_block_mask(mask, 4, 4, 4, 4, q_block_starts=starts_q, kv_block_starts=starts_k)
    assert lay.is_variable
    assert abs(float(lay.density()) - (3 * 2 + 1 * 4) / 16) < 1e-6


def test_whole_blocks_first_packs_each_groups_whole_blocks_then_remainders():
    from dit_sparse.layout import whole_blocks_first

    group = torch.tensor([[0] * 5 + [1] * 2 + [2] * 9, [0] * 16])
    order = whole_blocks_first(group, 4)
    assert torch.equal(order.sort(-1).values, torch.arange(16).expand(2, -1))
    packed = group.gather(-1, order)
    # Whole blocks of group 0 (4 tokens) and group 2 (8 tokens) first, then the remainders 0, 1, 1, 2.
    assert packed[0].tolist() == [0] * 4 + [2] * 8 + [0, 1, 1, 2]
    assert torch.equal(order[1], torch.arange(16))  # one group of whole blocks: unchanged
    # Stable: tokens keep their order within each part.
    assert order[0].tolist() == [0, 1, 2, 3, 7, 8, 9, 10, 11, 12, 13, 14, 4, 5, 6, 15]


def test_whole_blocks_first_from_cluster_counts_is_the_same_order():
    """Sorted cluster labels with their counts (semantic's packed pieces): the runs read from the counts, with empty
    clusters, give the order of the scan over the tokens."""
    from dit_sparse.layout import whole_blocks_first

    g = torch.Generator().manual_seed(0)
    for k, block in ((7, 4), (30, 8), (3, 16)):
        labels = torch.randint(0, k, (3, 200), generator=g)
        labels[labels == 1] = 0  # cluster 1 is empty
        labels = labels.sort(-1).values
        counts = torch.zeros(3, k).scatter_add_(1, labels, torch.ones(3, 200))
        assert (counts[:, 1] == 0).all() and (counts[:, 0] > block).all()
        assert torch.equal(whole_blocks_first(labels, block, counts=counts), whole_blocks_first(labels, block))
