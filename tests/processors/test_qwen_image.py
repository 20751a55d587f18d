import pytest
import torch
from diffusers.models.transformers.transformer_qwenimage import QwenDoubleStreamAttnProcessor2_0
from tiny_models import qwen_image_inputs, tiny_qwen_image

import dit_sparse as ds
from dit_sparse import DenseConfig, DraftConfig, RadialConfig
from dit_sparse.geometry import VideoGeometry
from dit_sparse.processors.qwen_image import QwenImageSparseAttnProcessor

FULL = [
    RadialConfig(decay=16.0, dense_steps=0, dense_layers=0, block_size=16),
    DraftConfig(density=1.0, dense_steps=0, dense_layers=0, block_size=16),
]


def run(model, **kw):
    with torch.no_grad():
        return model(**qwen_image_inputs(**kw))[0]


def prefix_mask(batch, text_len, valid):
    mask = torch.zeros(batch, text_len, dtype=torch.long)
    for b in range(batch):
        mask[b, : valid[b % len(valid)]] = 1
    return mask


@pytest.mark.parametrize("mask", [None, prefix_mask(2, 9, (9, 5))], ids=["no_mask", "padded"])
def test_dense_config_equals_stock_and_remove_restores(mask):
    model = tiny_qwen_image()
    kw = dict(batch=2, height=6, width=10, text_len=9, mask=mask)
    ref = run(model, **kw)
    originals = dict(model.attn_processors)
    ds.apply_sparse_attention(model, DenseConfig())
    assert isinstance(model.transformer_blocks[0].attn.processor, QwenImageSparseAttnProcessor)
    assert torch.equal(run(model, **kw), ref)
    assert ds.summary(model)["geometry"] == [1, 6, 10]
    ds.remove_sparse_attention(model)
    assert all(model.attn_processors[n] is p for n, p in originals.items())
    assert isinstance(model.transformer_blocks[0].attn.processor, QwenDoubleStreamAttnProcessor2_0)
    assert torch.equal(run(model, **kw), ref)


@pytest.mark.parametrize("config", FULL, ids=["radial", "draft"])
@pytest.mark.parametrize(
    "mask",
    [None, prefix_mask(2, 7, (7, 4)), torch.tensor([[1, 0, 1, 1, 0, 1, 1], [0, 1, 1, 0, 1, 0, 0]])],
    ids=["no_mask", "padded", "any_pattern"],
)
def test_full_budget_equals_dense_on_odd_grid_batch2(config, mask):
    # Text first, dense in both directions and merged through the LSE: with every image block kept this is exact,
    # padding included (a text mask of any pattern, as Qwen-Image accepts).
    model = tiny_qwen_image()
    kw = dict(batch=2, height=5, width=7, text_len=7, mask=mask)
    ref = run(model, **kw)
    ds.apply_sparse_attention(model, config)
    out = run(model, **kw)
    s = ds.summary(model)
    assert s["sparse_calls"] == 2 and s["dense_calls"] == 0 and s["mean_density"] == 1.0
    assert s["geometry"] == [1, 5, 7]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_sparse_draft_is_sparse_finite_and_per_sample():
    model = tiny_qwen_image()
    kw = dict(batch=2, height=12, width=14, text_len=5)
    ref = run(model, **kw)
    ds.apply_sparse_attention(model, DraftConfig(density=0.3, dense_steps=0, dense_layers=0, block_size=16))
    out = run(model, **kw)
    s = ds.summary(model)
    assert s["sparse_calls"] == 2 and s["dense_calls"] == 0 and s["mean_density"] < 1.0
    assert torch.isfinite(out).all()
    assert 0 < (out - ref).abs().max()
    # Batch rows are independent: the second sample alone gives its row of the batch.
    x = qwen_image_inputs(**kw)
    single = dict(x, hidden_states=x["hidden_states"][1:], encoder_hidden_states=x["encoder_hidden_states"][1:],
                  timestep=x["timestep"][1:], img_shapes=x["img_shapes"][1:])
    ds.reset_sparse_state(model)
    with torch.no_grad():
        alone = model(**single)[0]
    torch.testing.assert_close(alone[0], out[1], atol=1e-5, rtol=1e-5)


def test_positional_call_and_mismatched_shapes_fall_back_dense():
    model = tiny_qwen_image()
    x = qwen_image_inputs(height=6, width=10)
    ref = run(model, height=6, width=10)
    ds.apply_sparse_attention(model, RadialConfig(decay=16.0, dense_steps=0, dense_layers=0, block_size=16))
    args = [x[k] for k in ("hidden_states", "encoder_hidden_states", "encoder_hidden_states_mask", "timestep",
                           "img_shapes")]
    with torch.no_grad():
        out = model(*args, return_dict=False)[0]
    s = ds.summary(model)
    assert s["geometry"] == [1, 6, 10] and s["sparse_calls"] == 2
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # A target and a condition image of another size (an edit): the first shape's grid does not cover the tokens.
    y = qwen_image_inputs(height=6, width=10)
    y["hidden_states"] = torch.cat([y["hidden_states"], torch.randn(1, 12, 16)], dim=1)
    y["img_shapes"] = [[(1, 6, 10), (1, 3, 4)]]
    ds.remove_sparse_attention(model)
    with torch.no_grad():
        ref_y = model(**y)[0]
    ds.apply_sparse_attention(model, RadialConfig(decay=16.0, dense_steps=0, dense_layers=0, block_size=16))
    with torch.no_grad():
        out = model(**y)[0]
    assert ds.summary(model)["dense_calls"] == 2
    assert torch.equal(out, ref_y)


def test_geometry_from_image_shapes():
    h = torch.zeros(2, 60, 16)
    assert VideoGeometry.from_image_shapes(h, [[(1, 6, 10)]] * 2, "qwen_image", 7).key == (1, 6, 10)
    assert VideoGeometry.from_image_shapes(h, [(1, 6, 10)], "qwen_image").key == (1, 6, 10)
    assert VideoGeometry.from_image_shapes(h, (1, 6, 10), "qwen_image").key == (1, 6, 10)
    # Condition images of the target's size follow it: stacked as frames, in token order.
    assert VideoGeometry.from_image_shapes(h, [[(1, 3, 10), (1, 3, 10)]], "qwen_image").key == (2, 3, 10)
    assert VideoGeometry.from_image_shapes(h, [[(1, 6, 10), (1, 3, 4)]], "qwen_image").key == (1, 6, 10)
    assert VideoGeometry.from_image_shapes(h, [[(1, 6, 10)]], "qwen_image", 7).text_tokens == 7
    with pytest.raises(ValueError, match="img_shapes"):
        VideoGeometry.from_image_shapes(h, None, "qwen_image")
    with pytest.raises(ValueError, match="img_shapes"):
        VideoGeometry.from_image_shapes(h, [[(6, 10)]], "qwen_image")
