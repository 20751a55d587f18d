"""The per-head token permutation kernel (`kernels.permute`) under the Triton interpreter: a copy, so equal bit for bit
to torch's gather / scatter, and what the front door runs for per-head orders."""

import os

os.environ["TRITON_INTERPRET"] = "1"  # must precede the first triton import, which dit_sparse.kernels triggers

import pytest  # noqa: E402
import torch  # noqa: E402

import dit_sparse.kernels as kernels  # noqa: E402
from dit_sparse.kernels import block_sparse_attention, permute  # noqa: E402
from dit_sparse.layout import BlockLayout  # noqa: E402


@pytest.fixture(autouse=True)
def _interpreted(monkeypatch):
    monkeypatch.setenv(permute.ENV, "1")


def _inputs(b, h, length, d, dtype, diffusers_memory, perm_b, seed=0):
    g = torch.Generator().manual_seed(seed)
    if diffusers_memory:  # the transposed view of (B, L, H, D) memory the processors pass
        x = torch.randn(b, length, h, d, generator=g).to(dtype).transpose(1, 2)
    else:
        x = torch.randn(b, h, length, d, generator=g).to(dtype)
    perm = torch.stack([torch.randperm(length, generator=g) for _ in range(perm_b * h)]).view(perm_b, h, length)
    return x, perm


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("length,d", [(37, 64), (130, 48)])  # a partial token block; a head_dim that is no power of 2
@pytest.mark.parametrize("diffusers_memory", [True, False])
@pytest.mark.parametrize("perm_b", [1, 2])
def test_permute_tokens_equals_torch_gather_and_scatter(dtype, length, d, diffusers_memory, perm_b):
    b, h = 2, 3
    x, perm = _inputs(b, h, length, d, dtype, diffusers_memory, perm_b)
    index = perm.expand(b, h, length).unsqueeze(-1).expand(-1, -1, -1, d)
    gathered = permute.permute_tokens(x, perm)
    assert gathered.shape == x.shape
    # Written as (B, L, H, D) memory: the processors' transpose back is free.
    assert gathered.transpose(1, 2).is_contiguous()
    assert torch.equal(gathered, x.gather(2, index))
    scattered = permute.permute_tokens(x, perm, inverse=True)
    assert torch.equal(scattered, torch.empty_like(x).scatter_(2, index, x))
    assert torch.equal(permute.permute_tokens(gathered, perm, inverse=True), x)


def test_front_door_runs_per_head_orders_through_the_kernel(monkeypatch):
    b, h, length, d = 2, 3, 96, 32
    x, perm = _inputs(b, h, length, d, torch.float32, True, 1)
    q, k, v = x, x.flip(1), x * 0.5
    mask = torch.rand(1, h, 3, 3, generator=torch.Generator().manual_seed(3)) < 0.6
    mask[..., 0] = True
    layout = BlockLayout.from_block_mask(mask, 32, 32, length, length, q_perm=perm, kv_perm=perm)
    calls = []
    real = permute.permute_tokens

    def counting(*args, **kwargs):
        calls.append(kwargs.get("inverse", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(permute, "permute_tokens", counting)
    out, lse = block_sparse_attention(q, k, v, layout, backend="reference", return_lse=True)
    assert calls == [False, False, False, True]  # q, k, v gathered; the output scattered back (lse by torch)
    monkeypatch.setenv(permute.ENV, "0")
    ref_out, ref_lse = block_sparse_attention(q, k, v, layout, backend="reference", return_lse=True)
    assert len(calls) == 4
    assert torch.equal(out, ref_out) and torch.equal(lse, ref_lse)


def test_not_used_under_autograd_or_for_shared_orders(monkeypatch):
    x, perm = _inputs(1, 2, 40, 16, torch.float32, True, 1)
    assert permute.enabled(x, perm)
    assert not permute.enabled(x.clone().requires_grad_(), perm)  # no backward in the kernel
    monkeypatch.setenv(permute.ENV, "0")
    assert not permute.enabled(x, perm)
    monkeypatch.delenv(permute.ENV)
    assert not permute.enabled(x, perm)  # on a CPU only when asked for (the interpreter is slow)
    # A shared order ([1, 1, L]: draft, tile) keeps the row gather of Diffusers' memory.
    monkeypatch.setenv(permute.ENV, "1")
    monkeypatch.setattr(permute, "permute_tokens", lambda *a, **k: pytest.fail("per-head kernel used"))
    shared = perm[:, :1]
    assert torch.equal(kernels._gather_tokens(x, shared), x.index_select(2, shared.view(-1)))
