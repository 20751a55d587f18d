"""The FlexAttention BlockMask built from index lists: structure, and numbers through flex's eager path."""

import warnings

import torch
from torch.nn.attention.flex_attention import flex_attention

from dit_sparse import BlockLayout
from dit_sparse.kernels import available_backends, block_sparse_attention
from dit_sparse.kernels.flex import layout_to_block_mask


def random_layout(b, h, length, block, p=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = -(-length // block)
    mask = torch.rand(b, h, n, n, generator=g) < p
    mask[0, 0, 1] = False  # an empty row
    return BlockLayout.from_block_mask(mask, block, block, length, length), mask


def test_block_mask_structure_matches_layout():
    layout, mask = random_layout(2, 3, 300, 64)
    bm = layout_to_block_mask(layout, 2, 3)
    # Everything is a full block: no partial blocks, the full lists are the layout's own.
    assert int(bm.kv_num_blocks.sum()) == 0
    assert torch.equal(bm.full_kv_num_blocks, layout.kv_counts)
    n = layout.kv_counts
    for b in range(2):
        for h in range(3):
            for i in range(layout.num_q_blocks):
                c = int(n[b, h, i])
                assert torch.equal(bm.full_kv_indices[b, h, i, :c], layout.kv_indices[b, h, i, :c])
    assert torch.equal(bm.to_dense().bool(), mask)
    assert bm.seq_lengths == (300, 300)


def test_flex_numbers_equal_reference_on_cpu():
    warnings.filterwarnings("ignore")
    for length in (256, 300):
        layout, _ = random_layout(2, 3, length, 128, seed=length)
        q, k, v = (torch.randn(2, 3, length, 64, generator=torch.Generator().manual_seed(i)) for i in range(3))
        ref, ref_lse = block_sparse_attention(q, k, v, layout, backend="reference", return_lse=True)
        out, lse = flex_attention(q, k, v, block_mask=layout_to_block_mask(layout, 2, 3), return_lse=True)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        finite = torch.isfinite(ref_lse)
        torch.testing.assert_close(lse[finite], ref_lse[finite], atol=1e-5, rtol=1e-5)
        assert torch.isneginf(lse[0, 0, 128:256]).all()


def test_flex_key_padding_mask():
    warnings.filterwarnings("ignore")
    layout, _ = random_layout(2, 1, 200, 64, p=1.0)
    layout.kv_valid_len = torch.tensor([200, 77], dtype=torch.int32)
    q, k, v = (torch.randn(2, 1, 200, 64, generator=torch.Generator().manual_seed(i)) for i in range(3))
    ref = block_sparse_attention(q, k, v, layout, backend="reference")
    out = flex_attention(q, k, v, block_mask=layout_to_block_mask(layout, 2, 1))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_flex_not_chosen_on_cpu_and_says_why():
    assert "CUDA" in available_backends("cpu")["flex"]
