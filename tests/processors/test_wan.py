import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor
from tiny_models import tiny_wan, wan_inputs

import dit_sparse as ds
from dit_sparse import DenseConfig, RadialConfig


def run(model, **kw):
    with torch.no_grad():
        return model(**wan_inputs(**kw))[0]


def test_dense_config_equals_stock_and_remove_restores():
    model = tiny_wan()
    ref = run(model)
    originals = dict(model.attn_processors)
    ds.apply_sparse_attention(model, DenseConfig())
    assert type(model.blocks[0].attn1.processor).__name__ == "WanSparseAttnProcessor"
    # Cross-attention keeps the very same stock processor object.
    assert model.blocks[0].attn2.processor is originals["blocks.0.attn2.processor"]
    assert torch.equal(run(model), ref)
    ds.remove_sparse_attention(model)
    for name, proc in model.attn_processors.items():
        assert proc is originals[name]
    assert isinstance(model.blocks[0].attn1.processor, WanAttnProcessor)
    assert torch.equal(run(model), ref)


def test_radial_full_coverage_equals_dense():
    model = tiny_wan()
    ref = run(model, frames=2, height=16, width=16)
    ds.apply_sparse_attention(model, RadialConfig(dense_steps=0, dense_layers=0, block_size=64))
    out = run(model, frames=2, height=16, width=16)
    s = ds.summary(model)
    assert s["sparse_calls"] == 3 and s["mean_density"] == 1.0 and s["backend"] == "reference"
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_radial_many_frames_is_sparse_and_finite():
    model = tiny_wan()
    kw = dict(frames=17, height=12, width=20, batch=2)
    ref = run(model, **kw)
    ds.apply_sparse_attention(model, RadialConfig(dense_steps=0, dense_layers=1, block_size=64, decay=0.2))
    out = run(model, **kw)
    s = ds.summary(model)
    assert s["dense_calls"] == 1 and s["sparse_calls"] == 2
    assert s["mean_density"] < 0.7
    assert torch.isfinite(out).all()
    assert 0 < (out - ref).abs().max() < 1.0


def test_odd_grid_and_batch2_match_per_sample():
    model = tiny_wan()
    cfg = RadialConfig(dense_steps=0, dense_layers=0, block_size=16, decay=0.3)
    ds.apply_sparse_attention(model, cfg)
    both = run(model, batch=2, frames=7, height=6, width=10)
    x = wan_inputs(batch=2, frames=7, height=6, width=10)
    ds.reset_sparse_state(model)
    with torch.no_grad():
        single = model(x["hidden_states"][1:], x["timestep"][1:], x["encoder_hidden_states"][1:], return_dict=False)[0]
    torch.testing.assert_close(both[1:], single, atol=1e-5, rtol=1e-5)
    assert ds.summary(model)["mean_density"] < 1.0


def test_set_attn_processor_equals_apply():
    a, b = tiny_wan(), tiny_wan()
    cfg = RadialConfig(dense_steps=0, dense_layers=0, block_size=16, decay=0.3)
    ds.apply_sparse_attention(a, cfg)
    b.set_attn_processor(ds.sparse_attn_processors(b, cfg))
    kw = dict(frames=9, height=8, width=8)
    torch.testing.assert_close(run(a, **kw), run(b, **kw), atol=0, rtol=0)
    assert ds.summary(b)["sparse_calls"] == 3
    ds.remove_sparse_attention(b)
    assert all(isinstance(p, WanAttnProcessor) for p in b.attn_processors.values())


def test_unsupported_model_and_config_errors():
    with pytest.raises(ValueError, match="neither a Diffusers transformer"):
        ds.apply_sparse_attention(torch.nn.Linear(2, 2), DenseConfig())
    with pytest.raises(ValueError, match="config must be a dit_sparse config"):
        ds.apply_sparse_attention(tiny_wan(), {"method": "radial"})
    with pytest.raises(ValueError, match="no sparse attention is applied"):
        ds.summary(tiny_wan())


def test_short_sequences_fall_back_to_dense_and_summary_says_why(caplog):
    model = tiny_wan()
    kw = dict(frames=5, height=6, width=8)  # 5 x 3 x 4 = 60 video tokens
    ref = run(model, **kw)
    ds.apply_sparse_attention(model, RadialConfig(dense_steps=0, dense_layers=0, block_size=16, min_sparse_tokens=100))
    with caplog.at_level("WARNING", logger="dit_sparse"):
        outs = [run(model, timestep=t, **kw) for t in (900.0, 900.0, 800.0)]  # cond, uncond, next step
    # Dense through Diffusers' dispatch_attention_fn: exactly the stock processor's output.
    assert torch.equal(outs[0], ref)
    s = ds.summary(model)
    assert s["dense_fallback"] == "60 video tokens < min_sparse_tokens 100"
    assert s["sparse_calls"] == 0 and s["dense_calls"] == 9
    warnings = [r for r in caplog.records if "min_sparse_tokens" in r.getMessage()]
    assert len(warnings) == 1 and "running dense" in warnings[0].getMessage()

    for threshold in (0, 60, None):  # at the threshold, explicitly 0, and the automatic value on a CPU (0)
        ds.apply_sparse_attention(
            model, RadialConfig(dense_steps=0, dense_layers=0, block_size=16, min_sparse_tokens=threshold)
        )
        out = run(model, **kw)
        s = ds.summary(model)
        assert s["dense_fallback"] is None and s["sparse_calls"] == 3 and s["dense_calls"] == 0, threshold
        assert s["mean_density"] < 1.0 and not torch.equal(out, ref)
