import pytest
import torch
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor
from tiny_models import flux_inputs, tiny_flux

import dit_sparse as ds
from dit_sparse import DenseConfig, DraftConfig, RadialConfig
from dit_sparse.processors.flux import FluxSparseAttnProcessor


def run(model, **kw):
    with torch.no_grad():
        return model(**flux_inputs(**kw))[0]


def test_dense_config_equals_stock_and_remove_restores():
    model = tiny_flux()
    kw = dict(batch=2, height=6, width=10)
    ref = run(model, **kw)
    originals = dict(model.attn_processors)
    ds.apply_sparse_attention(model, DenseConfig())
    assert isinstance(model.transformer_blocks[0].attn.processor, FluxSparseAttnProcessor)
    assert isinstance(model.single_transformer_blocks[0].attn.processor, FluxSparseAttnProcessor)
    assert torch.equal(run(model, **kw), ref)
    assert ds.summary(model)["geometry"] == [1, 6, 10]
    ds.remove_sparse_attention(model)
    assert all(model.attn_processors[n] is p for n, p in originals.items())
    assert isinstance(model.transformer_blocks[0].attn.processor, FluxAttnProcessor)
    assert torch.equal(run(model, **kw), ref)


def test_dense_config_equals_stock_with_fused_projections():
    model = tiny_flux()
    model.fuse_qkv_projections()
    ref = run(model)
    ds.apply_sparse_attention(model, DenseConfig())
    assert torch.equal(run(model), ref)


@pytest.mark.parametrize(
    "config",
    [
        RadialConfig(decay=16.0, dense_steps=0, dense_layers=0, block_size=16),
        DraftConfig(density=1.0, dense_steps=0, dense_layers=0, block_size=16),
    ],
    ids=["radial", "draft"],
)
def test_full_budget_equals_dense_on_odd_grid_batch2(config):
    # Text first, dense in both directions and merged through the LSE: with every image block kept this is exact.
    model = tiny_flux()
    kw = dict(batch=2, height=6, width=10, text_len=7)
    ref = run(model, **kw)
    ds.apply_sparse_attention(model, config)
    out = run(model, **kw)
    s = ds.summary(model)
    assert s["sparse_calls"] == 2 and s["dense_calls"] == 0 and s["mean_density"] == 1.0
    assert s["geometry"] == [1, 6, 10]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def _image_token_mask(layout, batch, heads):
    """The layout's block mask expanded to image tokens in their original order, [B, H, L, L]."""
    blocks = layout.to_block_mask()
    out = torch.empty(batch, heads, layout.seq_len_q, layout.seq_len_kv, dtype=torch.bool)
    for b in range(batch):
        for h in range(heads):
            def block_of_token(perm, starts, block, length):
                if starts is None:
                    starts = torch.arange(0, length + block, block).clamp(max=length)
                else:
                    starts = starts[min(b, starts.shape[0] - 1), min(h, starts.shape[1] - 1)].long()
                of_pos = torch.repeat_interleave(torch.arange(starts.numel() - 1), starts[1:] - starts[:-1])
                if perm is None:
                    return of_pos
                perm = perm[min(b, perm.shape[0] - 1), min(h, perm.shape[1] - 1)]
                return torch.empty_like(of_pos).scatter_(0, perm, of_pos)

            rows = block_of_token(layout.q_perm, layout.q_block_starts, layout.block_q, layout.seq_len_q)
            cols = block_of_token(layout.kv_perm, layout.kv_block_starts, layout.block_kv, layout.seq_len_kv)
            bm = blocks[min(b, blocks.shape[0] - 1), min(h, blocks.shape[1] - 1)]
            out[b, h] = bm[rows][:, cols]
    return out


@pytest.mark.parametrize("text_first", [True, False])
def test_core_text_rows_and_columns_dense_on_either_side(text_first):
    # Token-level oracle: image queries see their layout's image blocks plus every text key; text queries see all.
    from dit_sparse.geometry import VideoGeometry
    from dit_sparse.patterns import make_pattern
    from dit_sparse.processors.base import SparseAttentionCore
    from dit_sparse.schedule import SparseState

    config = DraftConfig(density=0.3, dense_steps=0, dense_layers=0, block_size=16)
    state = SparseState(config)
    state.use(config, make_pattern(config))
    geometry = VideoGeometry(1, 6, 10, "flux")
    state.on_forward(0.9, geometry, batch=2)
    layouts = []
    plan = state.pattern.plan
    state.pattern.plan = lambda *a: layouts.append(plan(*a)) or layouts[-1]
    g = torch.Generator().manual_seed(0)
    n_text, n_img = 7, geometry.num_tokens
    q, k, v = (torch.randn(2, n_text + n_img, 2, 64, generator=g) for _ in range(3))
    out = SparseAttentionCore(state, 0, "joint")(q, k, v, text_len=n_text, text_first=text_first)

    layout = layouts[0]
    assert layout.density().mean() < 1.0
    mask = torch.ones(2, 2, n_text + n_img, n_text + n_img, dtype=torch.bool)
    img = slice(n_text, None) if text_first else slice(0, n_img)
    mask[:, :, img, img] = _image_token_mask(layout, 2, 2)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    ).transpose(1, 2)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_sparse_draft_is_sparse_finite_and_per_sample():
    model = tiny_flux()
    kw = dict(batch=2, height=12, width=14, text_len=5)
    ref = run(model, **kw)
    ds.apply_sparse_attention(model, DraftConfig(density=0.3, dense_steps=0, dense_layers=0, block_size=16))
    out = run(model, **kw)
    s = ds.summary(model)
    assert s["sparse_calls"] == 2 and s["mean_density"] < 1.0
    assert torch.isfinite(out).all()
    assert 0 < (out - ref).abs().max()
    # Batch rows are independent: the second sample alone gives its row of the batch.
    x = flux_inputs(**kw)
    single = {k: (v[1:] if k in ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep") else v)
              for k, v in x.items()}
    ds.reset_sparse_state(model)
    with torch.no_grad():
        alone = model(**single)[0]
    torch.testing.assert_close(alone[0], out[1], atol=1e-5, rtol=1e-5)


def test_positional_call_and_mismatched_ids_fall_back_dense():
    model = tiny_flux()
    x = flux_inputs(height=6, width=10)
    ref = run(model, height=6, width=10)
    # ids describing another grid (6 x 11 for 60 tokens): the processors cannot place the tokens and run dense.
    y = flux_inputs(height=6, width=10)
    y["img_ids"][:, 2] += 1
    with torch.no_grad():
        ref_y = model(**y)[0]
    ds.apply_sparse_attention(model, RadialConfig(decay=16.0, dense_steps=0, dense_layers=0, block_size=16))
    args = [x[k] for k in ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids",
                           "txt_ids")]
    with torch.no_grad():
        out = model(*args, return_dict=False)[0]
    assert ds.summary(model)["geometry"] == [1, 6, 10]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    ds.reset_sparse_state(model)
    with torch.no_grad():
        out = model(**y)[0]
    assert ds.summary(model)["dense_calls"] == 2
    assert torch.equal(out, ref_y)
