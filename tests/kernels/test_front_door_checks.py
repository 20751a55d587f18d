"""block_sparse_attention's front door: bad dtypes, devices, shapes and layout values fail with a ValueError that
names the argument and the fix; the value checks (a host sync) are opt-in except for the CPU reference backend."""

import pytest
import torch

import dit_sparse.kernels as kernels
from dit_sparse import BlockLayout
from dit_sparse.kernels import block_sparse_attention


def qkv(dtype=torch.float32, length=64, heads=2):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, heads, length, 64, generator=g).to(dtype) for _ in range(3)]


def dense(length=64, block=32, heads=1):
    return BlockLayout.dense(1, heads, length, length, block, block)


def hand_built(indices, counts, length=64, block=32):
    idx = torch.tensor(indices, dtype=torch.int32).view(1, 1, len(indices), -1)
    cnt = torch.tensor(counts, dtype=torch.int32).view(1, 1, -1)
    return BlockLayout(idx, cnt, block, block, length, length)


@pytest.mark.parametrize(
    "dtypes, match",
    [
        ((torch.float16, torch.float32, torch.float32), r"k has dtype float32 but q has float16.*k\.to\(q\.dtype\)"),
        ((torch.float32, torch.float32, torch.bfloat16), r"v has dtype bfloat16 but q has float32"),
        ((torch.int64, torch.int64, torch.int64), r"q has dtype int64; .*float16, bfloat16 or float32"),
        ((torch.float64, torch.float64, torch.float64), r"q has dtype float64"),
    ],
)
def test_dtypes_must_be_half_bf16_or_fp32_and_equal(dtypes, match):
    q, k, v = [x.to(dt) for x, dt in zip(qkv(), dtypes)]
    with pytest.raises(ValueError, match=match):
        block_sparse_attention(q, k, v, dense())


def test_devices_must_match():
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"k is on meta but q is on cpu.*k\.to\(q\.device\)"):
        block_sparse_attention(q, k.to("meta"), v, dense())
    with pytest.raises(ValueError, match=r"layout\.kv_indices is on meta.*layout\.to\(q\.device\)"):
        block_sparse_attention(q, k, v, dense().to("meta"))


def test_shapes_against_layout():
    q, k, v = qkv(heads=2)
    with pytest.raises(ValueError, match="layout has batch 1 and heads 3"):
        block_sparse_attention(q, k, v, dense(heads=3))
    with pytest.raises(ValueError, match="k needs q's batch, heads and head_dim"):
        block_sparse_attention(q, k[:, :1], v[:, :1], dense())
    bad_perm = dense()
    bad_perm.q_perm = torch.arange(63).view(1, 1, 63)
    with pytest.raises(ValueError, match=r"layout\.q_perm has shape \(1, 1, 63\)"):
        block_sparse_attention(q, k, v, bad_perm)
    float_idx = dense()
    float_idx.kv_indices = float_idx.kv_indices.float()
    with pytest.raises(ValueError, match=r"layout\.kv_indices has dtype float32; it must hold integers"):
        block_sparse_attention(q, k, v, float_idx)


@pytest.mark.parametrize(
    "indices, counts, match",
    [
        ([[0, 5], [0, 1]], [2, 2], r"kv_indices has values in \[0, 5\].*\[0, 2\)"),
        ([[0, -1], [0, 1]], [1, 2], r"kv_indices has values in \[-1, 1\]"),
        ([[0, 1], [0, 1]], [3, 2], r"kv_counts has values in \[2, 3\].*\[0, 2\]"),
        ([[1, 0], [0, 1]], [2, 2], r"strictly increasing"),
    ],
)
def test_hand_built_layout_out_of_range_is_caught_on_the_cpu_reference(indices, counts, match):
    q, k, v = qkv(heads=1)
    with pytest.raises(ValueError, match=match):
        block_sparse_attention(q, k, v, hand_built(indices, counts), backend="reference")


def test_permutation_must_be_a_permutation():
    q, k, v = qkv(heads=1)
    layout = dense()
    layout.kv_perm = torch.zeros(1, 1, 64, dtype=torch.long)
    with pytest.raises(ValueError, match=r"layout\.kv_perm must be a permutation of 0\.\.63"):
        block_sparse_attention(q, k, v, layout)


def test_value_check_is_opt_in_except_for_the_cpu_reference(monkeypatch):
    calls = []
    monkeypatch.setattr(kernels, "_check_layout_values", lambda layout: calls.append(layout))
    monkeypatch.delenv(kernels.CHECK_LAYOUT_ENV, raising=False)
    q, k, v = qkv(heads=1)
    layout = dense()
    block_sparse_attention(q, k, v, layout, backend="reference")
    assert len(calls) == 1  # the CPU reference always checks (no host sync to save)
    block_sparse_attention(q, k, v, layout, backend="reference", check_layout=False)
    assert len(calls) == 1
    if kernels.available_backends("cpu", torch.float32, 64).get("triton") != "ok":
        pytest.skip("the Triton backend does not run here")
    block_sparse_attention(q, k, v, layout, backend="triton")
    assert len(calls) == 1  # GPU engines: no sync unless asked
    block_sparse_attention(q, k, v, layout, backend="triton", check_layout=True)
    assert len(calls) == 2
    monkeypatch.setenv(kernels.CHECK_LAYOUT_ENV, "1")
    block_sparse_attention(q, k, v, layout, backend="triton")
    assert len(calls) == 3


def test_valid_inputs_still_run():
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        q, k, v = qkv(dtype)
        out = block_sparse_attention(q, k, v, hand_built([[0, 0], [0, 1]], [1, 2]), check_layout=True)
        assert out.dtype == dtype and out.shape == q.shape and torch.isfinite(out.float()).all()


def test_auto_skips_an_engine_that_cannot_run_the_block_sizes(monkeypatch):
    """FlashAttention-4 runs query blocks of whole 64/128-row tiles only: a layout of 32-token query blocks must go to
    the next engine under 'auto' (it failed deep inside FA4's launch), and naming the engine must say why."""
    ok = lambda device, dtype, head_dim, kind: None  # noqa: E731

    def whole_tiles(device, block_q, block_kv):
        return None if block_q % 64 == 0 else f"{block_q}-token query blocks"

    backends = {"fa4": kernels._Backend("fa4", ok, None, whole_tiles), "triton": kernels._Backend("triton", ok, None)}
    monkeypatch.setattr(kernels, "_BACKENDS", backends)
    monkeypatch.setattr(kernels, "_AUTO_CACHE", {})
    cuda = torch.device("cuda")
    assert kernels.resolve_backend("auto", cuda, torch.bfloat16, 128, "fixed", (128, 32)) == "fa4"
    assert kernels.resolve_backend("auto", cuda, torch.bfloat16, 128, "fixed", (32, 32)) == "triton"
    with pytest.raises(ValueError, match="32-token query blocks"):
        kernels.resolve_backend("fa4", cuda, torch.bfloat16, 128, "fixed", (32, 32))
    assert kernels.available_backends(cuda, torch.bfloat16, 128, "fixed", (32, 32))["fa4"] == "32-token query blocks"


def test_auto_skips_an_engine_that_asks_to_be_skipped_for_a_layout_kind(monkeypatch):
    # An engine may run a layout yet leave it to the next one under "auto" (FA4's 64-row query pieces, measured slower
    # than Triton reading them in place); an explicit choice still gets it.
    from dit_sparse import kernels

    def fake(name, skip):
        return kernels._Backend(name, lambda device, dtype, head_dim, kind: None, lambda *a: None,
                                auto_skip=skip)

    monkeypatch.setattr(kernels, "_BACKENDS", {
        "fa4": fake("fa4", lambda kind, blocks: kind == "variable" and blocks[0] % 128 != 0),
        "triton": fake("triton", None), "reference": fake("reference", None)})
    monkeypatch.setattr(kernels, "_AUTO_CACHE", {})
    cuda = torch.device("cuda")
    assert kernels._auto_choice(cuda, torch.float16, 128, "variable", (64, 64)) == "triton"
    assert kernels._auto_choice(cuda, torch.float16, 128, "variable", (128, 64)) == "fa4"
    assert kernels._auto_choice(cuda, torch.float16, 128, "fixed", (64, 64)) == "fa4"
    assert kernels.resolve_backend("fa4", cuda, torch.float16, 128, "variable", (64, 64)) == "fa4"
