"""The reference kernel against explicit masked attention (computed token by token from the block mask)."""

import math

import pytest
import torch

from dit_sparse import BlockLayout
from dit_sparse.kernels import available_backends, block_sparse_attention, resolve_backend


def explicit_attention(q, k, v, token_mask):
    s = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~token_mask, float("-inf"))
    lse = torch.logsumexp(s, -1)
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return (p @ v.double()), lse


def token_mask_from(layout, lq, lk):
    bm = layout.to_block_mask()
    return bm.repeat_interleave(layout.block_q, 2).repeat_interleave(layout.block_kv, 3)[:, :, :lq, :lk]


@pytest.mark.parametrize("lq,lk,d,bs", [(300, 300, 64, 64), (257, 300, 128, 128), (300, 257, 64, 128)])
def test_reference_matches_explicit(lq, lk, d, bs):
    torch.manual_seed(0)
    b, h = 2, 3
    q, k, v = torch.randn(b, h, lq, d), torch.randn(b, h, lk, d), torch.randn(b, h, lk, d)
    nq, nk = -(-lq // bs), -(-lk // bs)
    mask = torch.rand(b, h, nq, nk) < 0.5
    mask[1, 2, 0] = False  # a query block with no key blocks
    layout = BlockLayout.from_block_mask(mask, bs, bs, lq, lk)
    out, lse = block_sparse_attention(q, k, v, layout, backend="reference", return_lse=True)
    ref, ref_lse = explicit_attention(q, k, v, token_mask_from(layout, lq, lk))
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-4)
    finite = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse.double()[finite], ref_lse[finite], atol=2e-5, rtol=1e-5)
    assert torch.isneginf(lse[1, 2, :bs]).all() and (out[1, 2, :bs] == 0).all()
    assert not torch.isnan(out).any()


def test_kv_valid_len_masks_tail_keys():
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 2, 70, 64), torch.randn(2, 2, 90, 64), torch.randn(2, 2, 90, 64)
    layout = BlockLayout.dense(1, 1, 70, 90, 32, 32)
    layout.kv_valid_len = torch.tensor([90, 41], dtype=torch.int32)
    out = block_sparse_attention(q, k, v, layout, backend="reference")
    tm = torch.ones(2, 1, 70, 90, dtype=torch.bool)
    tm[1, :, :, 41:] = False
    ref, _ = explicit_attention(q, k, v, tm)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("diffusers_memory", [False, True])
@pytest.mark.parametrize("shared_perm", [False, True])
def test_variable_blocks_and_permutation(shared_perm, diffusers_memory):
    """Per-head permutations (semantic) and one permutation for every row (draft, tile: the front door's row-gather
    path), output and log-sum-exp back in the original token order; q, k, v as contiguous (B, H, L, D) tensors and
    as the transposed views of (B, L, H, D) memory that the processors pass (gathered by whole rows there)."""
    torch.manual_seed(2)
    b, h, length, d = 2, 2, 40, 64
    if diffusers_memory:
        q, k, v = (torch.randn(b, length, h, d).transpose(1, 2) for _ in range(3))
    else:
        q, k, v = torch.randn(b, h, length, d), torch.randn(b, h, length, d), torch.randn(b, h, length, d)
    starts = torch.tensor([0, 5, 16, 20, 33, 40], dtype=torch.int32).view(1, 1, -1)
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 1, 0, 1], [1, 1, 1, 1, 1], [0, 0, 0, 1, 0], [1, 0, 0, 0, 1]]).bool()
    mask = mask.view(1, 1, 5, 5).expand(b, h, 5, 5)
    perm_h = 1 if shared_perm else h
    perm = torch.stack([torch.randperm(length) for _ in range(perm_h)]).view(1, perm_h, length)
    layout = BlockLayout.from_block_mask(
        mask, 16, 16, length, length, q_block_starts=starts, kv_block_starts=starts, q_perm=perm, kv_perm=perm
    )
    out, lse = block_sparse_attention(q, k, v, layout, backend="reference", return_lse=True)
    # Token mask in the permuted order, then mapped back to original positions.
    block_of = torch.repeat_interleave(torch.arange(5), (starts[0, 0, 1:] - starts[0, 0, :-1]).long())
    tm_perm = mask[0, 0][block_of][:, block_of]
    for hh in range(h):
        p = perm[0, hh % perm_h]
        tm = torch.zeros(length, length, dtype=torch.bool)
        tm[p.unsqueeze(1), p.unsqueeze(0)] = tm_perm
        ref, ref_lse = explicit_attention(q[:, hh : hh + 1], k[:, hh : hh + 1], v[:, hh : hh + 1], tm)
        torch.testing.assert_close(out[:, hh : hh + 1].double(), ref, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(lse[:, hh : hh + 1].double(), ref_lse, atol=2e-5, rtol=1e-4)


def test_front_door_errors():
    q = torch.randn(1, 2, 100, 64)
    layout = BlockLayout.dense(1, 1, 128, 128, 64, 64)
    with pytest.raises(ValueError, match="rebuild the layout"):
        block_sparse_attention(q, q, q, layout)
    with pytest.raises(ValueError, match="unknown backend"):
        block_sparse_attention(q, q, q, BlockLayout.dense(1, 1, 100, 100, 64, 64), backend="cuda")
    with pytest.raises(ValueError, match="batch, heads, seq_len, head_dim"):
        block_sparse_attention(q[0], q[0], q[0], layout)
    assert resolve_backend("auto", "cpu", torch.float32, 64) == "reference"
    assert available_backends()["reference"] == "ok"


def test_reference_custom_op_compiles_with_a_layout_planned_in_the_graph():
    # A pattern planned inside a compiled graph sizes kv_indices from data (its Kmax is a host read of the counts):
    # the reference engine is then one custom op whose fake gives the output shapes, not a traced chunk loop.
    import torch._dynamo

    torch.manual_seed(0)
    b, h, length, d, bs = 2, 3, 80, 16, 16
    q, k, v = torch.randn(b, h, length, d), torch.randn(b, h, length, d), torch.randn(b, h, length, d)
    valid = torch.tensor([80, 50], dtype=torch.int32)
    layout = BlockLayout.from_block_mask(torch.rand(b, h, 5, 5) < 0.5, bs, bs, length, length, kv_valid_len=valid)
    args = (q, k, v, layout.kv_indices, layout.kv_counts, None, None, valid, bs, bs, 0.25)
    torch.library.opcheck(torch.ops.dit_sparse.reference_block_sparse_fwd.default, args)

    def fn(q, k, v):
        scores = q.reshape(b, h, 5, bs, d).mean(3) @ k.reshape(b, h, 5, bs, d).mean(3).transpose(-1, -2)
        mask = scores > scores.median(-1, keepdim=True).values
        planned = BlockLayout.from_block_mask(mask, bs, bs, length, length, kv_valid_len=valid)
        return block_sparse_attention(q, k, v, planned, backend="reference", return_lse=True)

    torch._dynamo.reset()
    out, lse = torch.compile(fn, fullgraph=True, backend="aot_eager")(q, k, v)
    exp_out, exp_lse = fn(q, k, v)
    torch.testing.assert_close(out, exp_out)
    torch.testing.assert_close(lse, exp_lse)
