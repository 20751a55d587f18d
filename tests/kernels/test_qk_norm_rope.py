"""The fused QK-norm + RoPE kernel (`kernels.qk_norm_rope`) against Diffusers' Wan arithmetic, under the Triton
interpreter (fp32 / fp16), and the Wan processor's use of it on sparse calls only."""

import functools

import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
from tiny_models import tiny_wan, wan_inputs

import dit_sparse as ds
from dit_sparse import RadialConfig
from dit_sparse.kernels import qk_norm_rope
from dit_sparse.processors.wan import _apply_rotary_emb

pytest.importorskip("triton")


def stock(x, norm, freqs_cos, freqs_sin, heads):
    return _apply_rotary_emb(norm(x).unflatten(2, (heads, -1)), freqs_cos, freqs_sin)


def wan_freqs(frames, height, width, head_dim, dtype=torch.float32):
    rope = WanRotaryPosEmbed(head_dim, (1, 2, 2), 64)
    cos, sin = rope(torch.zeros(1, 4, frames, 2 * height, 2 * width))
    return cos.to(dtype), sin.to(dtype)


@pytest.fixture
def interpreted(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv(qk_norm_rope.ENV, "1")


@pytest.mark.parametrize("dtype,heads,batch,freq_dtype", [
    (torch.float32, 3, 2, torch.float32),
    (torch.float16, 2, 1, torch.float32),
    (torch.float16, 5, 1, torch.float16),  # 16-bit frequencies (a model cast with .to()): 16-bit products
])
def test_matches_the_stock_norm_and_rotation(interpreted, dtype, heads, batch, freq_dtype):
    torch.manual_seed(0)
    head_dim = 64
    cos, sin = wan_freqs(3, 4, 5, head_dim, freq_dtype)
    length = cos.shape[1]
    norm = torch.nn.RMSNorm(heads * head_dim, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(heads * head_dim) + 0.5)
    # A slice of a wider projection (fused to_qkv): rows are strided, the last dim contiguous.
    x = (torch.randn(batch, length, 3 * heads * head_dim) * 3).to(dtype)[..., : heads * head_dim]
    with torch.no_grad():
        ref = stock(x, norm, cos, sin, heads)
    out = qk_norm_rope.rms_norm_rope(x, norm.weight, norm.eps, cos, sin, heads)
    assert out.shape == ref.shape == (batch, length, heads, head_dim) and out.dtype == dtype
    # fp32: only the sum's order differs; fp16: one unit in the last place on a few elements at most.
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(out, ref, **tol)
    if dtype == torch.float16:
        assert (out == ref).float().mean() > 0.97


def test_rejects_shapes_it_cannot_run(interpreted):
    cos, sin = wan_freqs(1, 2, 2, 64)
    x = torch.randn(1, cos.shape[1], 128)
    with pytest.raises(ValueError, match="heads"):
        qk_norm_rope.rms_norm_rope(x, torch.ones(128), 1e-6, cos, sin, heads=3)
    with pytest.raises(ValueError, match="freqs_cos"):
        qk_norm_rope.rms_norm_rope(x[:, :-1], torch.ones(128), 1e-6, cos, sin, heads=2)


def test_enabled_only_on_cuda_unless_asked(monkeypatch):
    x = torch.zeros(1)
    monkeypatch.delenv(qk_norm_rope.ENV, raising=False)
    assert not qk_norm_rope.enabled(x)  # CPU: the stock arithmetic unless the tests ask for the interpreter
    monkeypatch.setenv(qk_norm_rope.ENV, "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert qk_norm_rope.enabled(x)
    monkeypatch.setenv(qk_norm_rope.ENV, "0")
    assert not qk_norm_rope.enabled(x)


def test_wan_processor_fuses_sparse_calls_only(interpreted, monkeypatch):
    """Dense calls (the first layer here) keep the stock arithmetic; sparse ones run the fused kernel, and the
    model's output is the unfused sparse output up to rounding."""
    calls = []
    kernel = qk_norm_rope.rms_norm_rope

    def counting(x, *args):
        calls.append(x.shape)
        return kernel(x, *args)

    model = tiny_wan(num_layers=3)
    kw = dict(frames=5, height=8, width=12)
    cfg = RadialConfig(dense_steps=0, dense_layers=1, block_size=16, decay=0.3)
    ds.apply_sparse_attention(model, cfg)
    monkeypatch.setenv(qk_norm_rope.ENV, "0")
    with torch.no_grad():
        unfused = model(**wan_inputs(**kw))[0]
    monkeypatch.setenv(qk_norm_rope.ENV, "1")
    monkeypatch.setattr(qk_norm_rope, "rms_norm_rope", counting)
    ds.reset_sparse_state(model)
    with torch.no_grad():
        fused = model(**wan_inputs(**kw))[0]
    s = ds.summary(model)
    assert s["dense_calls"] == 1 and s["sparse_calls"] == 2
    assert len(calls) == 2 * 2  # q and k of the two sparse layers, none for the dense one
    torch.testing.assert_close(fused, unfused, atol=1e-5, rtol=1e-5)


def test_wan_fast_dense_steps_fuse_only_where_fa4_runs_them(interpreted, monkeypatch):
    """``fast_dense`` dense steps run our kernel (FlashAttention-4; here a stand-in running the exact reference kernel
    on the CPU), so they take the fused prologue as well; without FA4 they stay Diffusers' own, bit for bit."""
    import dit_sparse.kernels as kernels
    import dit_sparse.processors.base as base
    from dit_sparse.kernels.reference import run as reference_run

    calls = []
    kernel = qk_norm_rope.rms_norm_rope

    def counting(x, *args):
        calls.append(x.shape)
        return kernel(x, *args)

    monkeypatch.setattr(qk_norm_rope, "rms_norm_rope", counting)
    model = tiny_wan(num_layers=2)
    kw = dict(frames=5, height=8, width=8)
    with torch.no_grad():
        ref = model(**wan_inputs(**kw))[0]
    config = RadialConfig(dense_steps=1, dense_layers=0, block_size=32, fast_dense=True)
    monkeypatch.setattr(base, "_engine_runs_cached", functools.lru_cache(base._engine_runs_cached.__wrapped__))
    ds.apply_sparse_attention(model, config)  # no FA4 on this machine: Diffusers' attention, stock q and k
    with torch.no_grad():
        assert torch.equal(model(**wan_inputs(**kw))[0], ref)
    assert calls == [] and ds.summary(model)["dense_calls"] == 2
    ds.remove_sparse_attention(model)

    backends = dict(kernels._BACKENDS, fa4=kernels._Backend("fa4", lambda *a: None, reference_run))
    monkeypatch.setattr(kernels, "_BACKENDS", backends)
    monkeypatch.setattr(kernels, "_AUTO_CACHE", {})
    monkeypatch.setattr(base, "_engine_runs_cached", functools.lru_cache(base._engine_runs_cached.__wrapped__))
    ds.apply_sparse_attention(model, config)
    with torch.no_grad():
        out = model(**wan_inputs(**kw))[0]
    assert len(calls) == 2 * 2 and ds.summary(model)["dense_calls"] == 2
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------ HunyuanVideo
def hunyuan_freqs(frames, height, width, dtype=torch.float32):
    from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoRotaryPosEmbed

    rope = HunyuanVideoRotaryPosEmbed(1, 1, (16, 24, 24), 256.0)
    cos, sin = rope(torch.zeros(1, 4, frames, height, width))
    return cos.to(dtype), sin.to(dtype)


def hunyuan_stock(x, norm, cos, sin, heads, rope_len):
    from diffusers.models.embeddings import apply_rotary_emb

    y = norm(x.unflatten(2, (heads, -1)))
    return torch.cat([apply_rotary_emb(y[:, :rope_len], (cos, sin), sequence_dim=1), y[:, rope_len:]], dim=1)


@pytest.mark.parametrize("dtype,heads,batch,freq_dtype", [
    (torch.float32, 3, 2, torch.float32),
    (torch.float16, 2, 1, torch.float32),
    (torch.float16, 5, 1, torch.float16),  # 16-bit frequencies: HunyuanVideo's products stay fp32 all the same
])
def test_head_norm_matches_hunyuan_stock_norm_and_rotation(interpreted, dtype, heads, batch, freq_dtype):
    """Per-head RMSNorm (Diffusers' class: two roundings with a 16-bit weight), the rotation on the video tokens only,
    text tokens after them only normed, written into a slice of a longer joint buffer."""
    from diffusers.models.normalization import RMSNorm

    torch.manual_seed(0)
    head_dim, text = 64, 7
    cos, sin = hunyuan_freqs(3, 4, 5, freq_dtype)
    video = cos.shape[0]
    norm = RMSNorm(head_dim, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(head_dim) + 0.5)
    x = (torch.randn(batch, video + text, heads * head_dim) * 3).to(dtype)
    with torch.no_grad():
        ref = hunyuan_stock(x, norm, cos, sin, heads, video)
    joint = torch.full((batch, video + text + 4, heads, head_dim), float("nan"), dtype=dtype)
    out = qk_norm_rope.head_rms_norm_rope(x, norm.weight, norm.eps, cos, sin, heads, video,
                                          out=joint[:, 2: 2 + video + text])
    assert out.data_ptr() == joint[:, 2:].data_ptr() and out.shape == ref.shape and out.dtype == dtype
    assert joint[:, :2].isnan().all() and joint[:, -2:].isnan().all()  # nothing written outside the slice
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(out, ref, **tol)
    if dtype == torch.float16:
        assert (out == ref).float().mean() > 0.97
        # The text rows are the norm's output, bit for bit: nothing rotated, nothing rounded twice.
        assert torch.equal(out[:, video:], ref[:, video:])


def test_head_norm_rejects_what_it_cannot_run(interpreted):
    cos, sin = hunyuan_freqs(1, 2, 2)
    x = torch.randn(1, cos.shape[0] + 3, 128)
    with pytest.raises(ValueError, match="weight"):
        qk_norm_rope.head_rms_norm_rope(x, torch.ones(128), 1e-6, cos, sin, 2, cos.shape[0])
    with pytest.raises(ValueError, match="rope_len"):
        qk_norm_rope.head_rms_norm_rope(x, torch.ones(64), 1e-6, cos, sin, 2, x.shape[1] + 1)
    with pytest.raises(ValueError, match="freqs_cos"):
        qk_norm_rope.head_rms_norm_rope(x, torch.ones(64), 1e-6, cos[:-1], sin, 2, cos.shape[0])
    with pytest.raises(ValueError, match="out"):
        qk_norm_rope.head_rms_norm_rope(x, torch.ones(64), 1e-6, cos, sin, 2, cos.shape[0],
                                        out=torch.empty(1, x.shape[1], 64, 2).transpose(2, 3))


def _randomise_norms(model):
    from diffusers.models.normalization import RMSNorm

    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, RMSNorm) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)


def test_hunyuan_processor_fuses_sparse_calls_only(interpreted, monkeypatch):
    """Dual- and single-stream blocks: dense calls keep Diffusers' arithmetic, sparse ones build q and k with the
    fused kernel (video part and text part into one buffer), and the output is the unfused sparse output up to
    rounding. The token refiner's attention is not ours and is never fused."""
    from tiny_models import hunyuan_inputs, tiny_hunyuan

    calls = []
    kernel = qk_norm_rope.head_rms_norm_rope

    def counting(x, weight, eps, cos, sin, heads, rope_len, out=None, *, norm="diffusers"):
        calls.append((x.shape[1], rope_len))
        return kernel(x, weight, eps, cos, sin, heads, rope_len, out=out, norm=norm)

    model = tiny_hunyuan(dual=2, single=2)
    _randomise_norms(model)
    kw = dict(frames=3, height=6, width=10, text_len=9, valid=(6,))
    cfg = RadialConfig(dense_steps=0, dense_layers=1, block_size=16, decay=0.3)
    ds.apply_sparse_attention(model, cfg)
    monkeypatch.setenv(qk_norm_rope.ENV, "0")
    with torch.no_grad():
        unfused = model(**hunyuan_inputs(**kw))[0]
    monkeypatch.setenv(qk_norm_rope.ENV, "1")
    monkeypatch.setattr(qk_norm_rope, "head_rms_norm_rope", counting)
    ds.reset_sparse_state(model)
    with torch.no_grad():
        fused = model(**hunyuan_inputs(**kw))[0]
    s = ds.summary(model)
    assert s["dense_calls"] == 1 and s["sparse_calls"] == 3
    video = 3 * 6 * 10
    # Dual-stream block 1: q and k each as video (rotated) + text (normed only); single-stream blocks: one call per
    # tensor over [video; text] rotating the video tokens. Block 0 is dense (stock).
    assert calls == [(video, video), (9, 0)] * 2 + [(video + 9, video)] * 4
    torch.testing.assert_close(fused, unfused, atol=1e-5, rtol=1e-5)
    assert not torch.equal(fused, model_output_dense(model, kw))  # sparse: the comparison above is not vacuous


def model_output_dense(model, kw):
    from tiny_models import hunyuan_inputs

    ds.remove_sparse_attention(model)
    with torch.no_grad():
        return model(**hunyuan_inputs(**kw))[0]


def test_prologue_bench_compares_hunyuan_stock_and_fused(interpreted, tmp_path):
    """`bench prologue` at a tiny HunyuanVideo shape: both block kinds, fused agrees with Diffusers' arithmetic."""
    import json

    from dit_sparse.eval import bench

    assert bench.main(["prologue", "--shapes", "hunyuan-tiny", "--reps", "1", "--out", str(tmp_path / "p.json")]) == 0
    row = json.loads((tmp_path / "p.json").read_text())["results"]["hunyuan-tiny"]
    assert row["video_tokens"] == 60 and row["text_tokens"] == 7
    for kind in ("single-stream", "dual-stream"):
        assert row[kind]["max_abs_diff"] < 1e-5 and row[kind]["share_bit_identical"] > 0.5


# --------------------------------------------------------------------------------------------------------------- FLUX
def test_head_norm_with_torch_rms_norm_rounds_once(interpreted):
    """FLUX's heads use ``torch.nn.RMSNorm`` (one rounding, after the weight) and rotate every token."""
    from diffusers.models.embeddings import apply_rotary_emb

    torch.manual_seed(0)
    heads, head_dim = 3, 64
    cos, sin = hunyuan_freqs(2, 4, 4)
    n = cos.shape[0]
    norm = torch.nn.RMSNorm(head_dim, eps=1e-6).to(torch.float16)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(head_dim) + 0.5)
    x = (torch.randn(1, n, heads * head_dim) * 3).to(torch.float16)
    with torch.no_grad():
        ref = apply_rotary_emb(norm(x.unflatten(2, (heads, -1))), (cos, sin), sequence_dim=1)
    out = qk_norm_rope.head_rms_norm_rope(x, norm.weight, norm.eps, cos, sin, heads, n, norm="torch")
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=2e-3)
    assert (out == ref).float().mean() > 0.97
    with pytest.raises(ValueError, match="norm="):
        qk_norm_rope.head_rms_norm_rope(x, norm.weight, norm.eps, cos, sin, heads, n, norm="layer")


def test_flux_processor_fuses_sparse_calls_only(interpreted, monkeypatch):
    """Dual-stream (text part and image part into one buffer, text first) and single-stream blocks: the dense layer
    keeps Diffusers' arithmetic, sparse ones run the fused kernel, output as unfused up to rounding; with fused
    q/k/v projections as well."""
    from tiny_models import flux_inputs, tiny_flux

    calls = []
    kernel = qk_norm_rope.head_rms_norm_rope

    def counting(x, weight, eps, cos, sin, heads, rope_len, out=None, *, norm="diffusers"):
        calls.append((x.shape[1], rope_len, norm))
        return kernel(x, weight, eps, cos, sin, heads, rope_len, out=out, norm=norm)

    for fused_projections in (False, True):
        calls.clear()
        model = tiny_flux(dual=2, single=2)
        with torch.no_grad():
            g = torch.Generator().manual_seed(3)
            for m in model.modules():
                if isinstance(m, torch.nn.RMSNorm):
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        if fused_projections:
            model.fuse_qkv_projections()
        kw = dict(height=8, width=10, text_len=7)
        ds.apply_sparse_attention(model, RadialConfig(decay=0.5, dense_steps=0, dense_layers=1, block_size=16))
        monkeypatch.setenv(qk_norm_rope.ENV, "0")
        with torch.no_grad():
            unfused = model(**flux_inputs(**kw))[0]
        monkeypatch.setenv(qk_norm_rope.ENV, "1")
        monkeypatch.setattr(qk_norm_rope, "head_rms_norm_rope", counting)
        ds.reset_sparse_state(model)
        with torch.no_grad():
            fused = model(**flux_inputs(**kw))[0]
        monkeypatch.setattr(qk_norm_rope, "head_rms_norm_rope", kernel)
        s = ds.summary(model)
        assert s["dense_calls"] == 1 and s["sparse_calls"] == 3
        image = 8 * 10
        # Dual-stream block 1 (block 0 dense): text then image for q, the same for k; single-stream: one call each.
        assert calls == [(7, 7, "torch"), (image, image, "torch")] * 2 + [(7 + image, 7 + image, "torch")] * 4
        torch.testing.assert_close(fused, unfused, atol=1e-5, rtol=1e-5)
        ds.remove_sparse_attention(model)
        with torch.no_grad():
            assert not torch.equal(model(**flux_inputs(**kw))[0], fused)  # sparse: the comparison is not vacuous


# --------------------------------------------------------------------------------------------------------- Qwen-Image
def test_qwen_image_processor_fuses_sparse_calls_only(interpreted, monkeypatch):
    """Qwen-Image's complex rotary tables read as interleaved (cos, sin) pairs, one per stream, both streams written
    into the joint [text; image] buffer; a padded text mask and the image tokens in the pattern's order (tile) as
    well. Dense layer stock, sparse ones fused, output as unfused up to rounding."""
    from diffusers.models.normalization import RMSNorm
    from tiny_models import qwen_image_inputs, tiny_qwen_image

    from dit_sparse import TileConfig

    calls = []
    kernel = qk_norm_rope.head_rms_norm_rope

    def counting(x, weight, eps, cos, sin, heads, rope_len, out=None, *, norm="diffusers"):
        calls.append((x.shape[1], rope_len, norm))
        return kernel(x, weight, eps, cos, sin, heads, rope_len, out=out, norm=norm)

    configs = (RadialConfig(decay=0.5, dense_steps=0, dense_layers=1, block_size=16),
               TileConfig(tile=(1, 4, 4), window=(1, 3, 3), dense_steps=0, dense_layers=1, block_size=16))
    for config in configs:
        calls.clear()
        model = tiny_qwen_image(layers=3)
        with torch.no_grad():
            g = torch.Generator().manual_seed(3)
            for m in model.modules():
                if isinstance(m, RMSNorm) and m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        kw = dict(height=8, width=12, text_len=7, mask=torch.tensor([[1] * 5 + [0] * 2]))
        ds.apply_sparse_attention(model, config)
        monkeypatch.setenv(qk_norm_rope.ENV, "0")
        with torch.no_grad():
            unfused = model(**qwen_image_inputs(**kw))[0]
        monkeypatch.setenv(qk_norm_rope.ENV, "1")
        monkeypatch.setattr(qk_norm_rope, "head_rms_norm_rope", counting)
        ds.reset_sparse_state(model)
        with torch.no_grad():
            fused = model(**qwen_image_inputs(**kw))[0]
        monkeypatch.setattr(qk_norm_rope, "head_rms_norm_rope", kernel)
        s = ds.summary(model)
        assert s["dense_calls"] == 1 and s["sparse_calls"] == 2
        assert calls == [(7, 7, "diffusers"), (8 * 12, 8 * 12, "diffusers")] * 4  # q then k, two sparse layers
        torch.testing.assert_close(fused, unfused, atol=1e-5, rtol=1e-5)
        ds.remove_sparse_attention(model)
        with torch.no_grad():
            assert not torch.equal(model(**qwen_image_inputs(**kw))[0], fused)


def test_fusable_refuses_what_the_kernel_would_compute_differently(interpreted):
    """One gate for every processor: the stock norm class it reproduces, weights in x's dtype, no bias, no autograd."""
    from diffusers.models.normalization import RMSNorm

    x = torch.zeros(1, 4, 128)
    torch_norms = [torch.nn.RMSNorm(64) for _ in range(2)]
    assert qk_norm_rope.fusable(x, 64, torch_norms, torch.nn.RMSNorm, (64,))
    assert not qk_norm_rope.fusable(x, 64, torch_norms, RMSNorm, (64,))  # other rounding: not this class
    assert not qk_norm_rope.fusable(x, 64, torch_norms, torch.nn.RMSNorm, (128,))  # across heads vs per head
    assert not qk_norm_rope.fusable(x.half(), 64, torch_norms, torch.nn.RMSNorm, (64,))  # fp32 weights, fp16 x
    assert not qk_norm_rope.fusable(x, 48, torch_norms, torch.nn.RMSNorm, (48,))  # not a power of two
    with_bias = [RMSNorm(64, eps=1e-6, bias=True)]
    assert not qk_norm_rope.fusable(x, 64, with_bias, RMSNorm, (64,))
    assert qk_norm_rope.fusable(x, 64, [RMSNorm(64, eps=1e-6)], RMSNorm, (64,))
    assert not qk_norm_rope.fusable(x.requires_grad_(), 64, torch_norms, torch.nn.RMSNorm, (64,))
    with torch.no_grad():
        assert qk_norm_rope.fusable(x, 64, torch_norms, torch.nn.RMSNorm, (64,))
