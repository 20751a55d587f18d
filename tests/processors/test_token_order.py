"""The step hook puts the image tokens in the tile pattern's order once per transformer call (Flux, Qwen-Image), so the
attention calls run the layout without gathering and scattering q, k, v and the output. The output must be what the
per-call permutation gives, on a grid of whole tiles and on one with partial edge tiles."""

import pytest
import torch

import dit_sparse as ds
from dit_sparse import kernels
from dit_sparse.api import get_state
from dit_sparse.patterns.tile import TilePattern
from tests.tiny_models import flux_inputs, qwen_image_inputs, tiny_flux, tiny_qwen_image

MODELS = {
    "flux": (lambda: tiny_flux(dual=1, single=1), flux_inputs),
    "qwen_image": (lambda: tiny_qwen_image(layers=2), qwen_image_inputs),
}


def _tile_config():
    # 4 x 4 tiles, a 3 x 3 tile window: sparse on these grids (3 x 5 or 4 x 5 tiles), and a real permutation.
    return ds.make_config("tile", tile=(1, 4, 4), window=(1, 3, 3), block_size=16, dense_steps=0, dense_layers=0,
                          min_sparse_tokens=0, backend="reference")


@pytest.fixture
def gathers(monkeypatch):
    """Counts the kernel front door's token gathers (one per permuted q, k and v)."""
    seen = []
    original = kernels._gather_tokens

    def counting(x, perm):
        seen.append(perm.shape)
        return original(x, perm)

    monkeypatch.setattr(kernels, "_gather_tokens", counting)
    return seen


@pytest.mark.parametrize("grid", [(12, 20), (13, 19)], ids=["whole-tiles", "edge-tiles"])
@pytest.mark.parametrize("family", MODELS)
def test_tokens_ordered_once_per_call_give_the_per_call_permutation_output(family, grid, gathers, monkeypatch):
    build, make_inputs = MODELS[family]
    model = build()
    inputs = make_inputs(batch=2, height=grid[0], width=grid[1])
    ds.apply_sparse_attention(model, _tile_config())
    state = get_state(model)
    with torch.no_grad():
        ordered = model(**inputs)[0]
    assert not gathers, "the attention calls still permuted the tokens"
    assert state.token_order is None  # restored after the call
    assert ds.summary(model)["token_ordered_calls"] == 1
    with torch.no_grad():  # the same restore for Diffusers' output object, and with the latents passed by position
        torch.testing.assert_close(model(**{**inputs, "return_dict": True}).sample, ordered, atol=0, rtol=0)
        rest = {k: v for k, v in inputs.items() if k != "hidden_states"}
        torch.testing.assert_close(model(inputs["hidden_states"], **rest)[0], ordered, atol=0, rtol=0)
    assert not gathers
    assert ds.summary(model)["mean_density"] < 1.0

    monkeypatch.setattr(TilePattern, "token_order", lambda self, *args: None)
    with torch.no_grad():
        per_call = model(**inputs)[0]
    assert gathers, "without a token order the kernel front door permutes"
    torch.testing.assert_close(ordered, per_call, atol=2e-5, rtol=2e-5)
    ds.remove_sparse_attention(model)
    with torch.no_grad():
        dense = model(**inputs)[0]
    assert (per_call - dense).abs().max() > 1e-3  # sparse enough to tell the orders apart


def test_no_token_order_under_autograd(gathers):
    """A checkpointed block recomputed in backward runs after the post-hook restored the order: under autograd the
    tokens stay in their order and every attention call permutes, as without the hook's ordering."""
    model = tiny_flux(dual=1, single=1)
    ds.apply_sparse_attention(model, _tile_config())
    inputs = flux_inputs(height=12, width=20)
    inputs["hidden_states"].requires_grad_(True)
    out = model(**inputs)[0]
    out.square().mean().backward()
    assert gathers and get_state(model).token_order is None
    assert ds.summary(model)["token_ordered_calls"] == 0
    assert torch.isfinite(inputs["hidden_states"].grad).all()


def test_flux_controlnet_residuals_keep_the_original_order(gathers):
    """ControlNet adds per-token residuals in the original order inside the forward: no reordering then."""
    model = tiny_flux(dual=1, single=1)
    ds.apply_sparse_attention(model, _tile_config())
    inputs = flux_inputs(height=12, width=20)
    residual = [torch.randn(1, 240, model.inner_dim) * 0.1]
    with torch.no_grad():
        with_residual = model(**inputs, controlnet_block_samples=residual)[0]
    assert gathers
    with torch.no_grad():
        plain = model(**inputs)[0]
    assert (with_residual - plain).abs().max() > 1e-4  # the residual did reach the blocks


def _four_calls(model, run, make_inputs):
    outs = []
    with torch.no_grad():
        for step, t in enumerate((0.9, 0.7)):
            for name in ("cond", "uncond"):
                with model.cache_context(name, step_index=step, num_inference_steps=2):
                    outs.append(run(**make_inputs(height=12, width=20, seed=1 + len(outs), timestep=t))[0])
    return outs


@pytest.mark.parametrize("route", ["model", "blocks"])
@pytest.mark.parametrize("family", MODELS)
def test_token_order_under_torch_compile(family, route, gathers):
    """`torch.compile(transformer, fullgraph=True)` and `compile_repeated_blocks` (what `--compile` uses) with the tile
    pattern: the tokens are ordered outside the graph, the graph reads the order as an input; no recompilation over
    2 steps x 2 CFG branches, output equal to eager."""
    import torch._dynamo
    import torch._dynamo.testing

    build, make_inputs = MODELS[family]
    eager_model = build()
    ds.apply_sparse_attention(eager_model, _tile_config())
    want = _four_calls(eager_model, eager_model, make_inputs)

    model = build()
    ds.apply_sparse_attention(model, _tile_config())
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    if route == "model":
        run = torch.compile(model, fullgraph=True, backend=counter)
    else:
        model.compile_repeated_blocks(fullgraph=True, backend=counter)
        run = model
    with torch._dynamo.config.patch(error_on_recompile=True):
        got = _four_calls(model, run, make_inputs)
    assert get_state(model).token_order is None and counter.frame_count >= 1
    assert not gathers  # neither the eager calls nor the traced graphs permuted in the attention calls
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
