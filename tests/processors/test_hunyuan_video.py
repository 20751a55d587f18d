import functools

import pytest
import torch
from tiny_models import hunyuan_inputs, tiny_hunyuan

import dit_sparse as ds
from dit_sparse import DenseConfig, RadialConfig


def run(model, **kw):
    with torch.no_grad():
        return model(**hunyuan_inputs(**kw))[0]


def test_dense_config_equals_stock_and_token_refiner_untouched():
    model = tiny_hunyuan()
    kw = dict(batch=2, valid=(6, 3))
    ref = run(model, **kw)
    originals = dict(model.attn_processors)
    ds.apply_sparse_attention(model, DenseConfig())
    refiner = [n for n in originals if n.startswith("context_embedder.token_refiner")]
    assert refiner and all(model.attn_processors[n] is originals[n] for n in refiner)
    assert type(model.single_transformer_blocks[0].attn.processor).__name__ == "HunyuanVideoSparseAttnProcessor"
    assert torch.equal(run(model, **kw), ref)
    ds.remove_sparse_attention(model)
    assert all(model.attn_processors[n] is p for n, p in originals.items())


def test_full_radial_with_text_padding_equals_dense():
    # Text rows and columns are dense and merged through the LSE; with every video block kept this is exact.
    model = tiny_hunyuan()
    kw = dict(batch=2, valid=(6, 2), frames=2, height=8, width=8)
    ref = run(model, **kw)
    ds.apply_sparse_attention(model, RadialConfig(dense_steps=0, dense_layers=0, block_size=32))
    out = run(model, **kw)
    s = ds.summary(model)
    assert s["sparse_calls"] == 4 and s["mean_density"] == 1.0
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)


def test_an_engine_without_padded_text_keys_leaves_the_text_part_to_auto(monkeypatch):
    # backend="fa4" on HunyuanVideo ran the video part and then failed on the padded text keys (FA4's adapter takes no
    # kv_valid_len): the text part now runs on the automatic engine. Here the reference engine plays FA4's part.
    from dit_sparse.processors import base

    real = base.available_backends

    def available(device, dtype, head_dim, kind, blocks=None):
        return {**real(device, dtype, head_dim, kind, blocks),
                **({"reference": "no padded keys"} if kind == "masked" else {})}

    monkeypatch.setattr(base, "available_backends", available)
    monkeypatch.setattr(base, "_engine_runs_cached", functools.lru_cache(base._engine_runs_cached.__wrapped__))
    used = []
    real_attention = base.block_sparse_attention

    def spy(q, k, v, layout, **kw):
        used.append((layout.kind, kw["backend"]))
        return real_attention(q, k, v, layout, **kw)

    monkeypatch.setattr(base, "block_sparse_attention", spy)
    model = tiny_hunyuan()
    kw = dict(batch=2, valid=(6, 2), frames=2, height=8, width=8)
    ref = run(model, **kw)
    ds.apply_sparse_attention(model, RadialConfig(dense_steps=0, dense_layers=0, block_size=32, backend="reference"))
    torch.testing.assert_close(run(model, **kw), ref, atol=2e-5, rtol=1e-5)  # every block kept: exact
    assert ("masked", "auto") in used and all(b == "reference" for kind, b in used if kind != "masked")


def test_sparse_radial_finite_and_padding_respected():
    model = tiny_hunyuan()
    ds.apply_sparse_attention(model, RadialConfig(dense_steps=0, dense_layers=0, block_size=16, decay=0.3))
    kw = dict(batch=2, valid=(6, 2), frames=9, height=6, width=10)
    out = run(model, **kw)
    assert torch.isfinite(out).all() and ds.summary(model)["mean_density"] < 0.9
    # Changing padded (masked) text embeddings must not change the output.
    x = hunyuan_inputs(**kw)
    x["encoder_hidden_states"][1, 2:] += 5.0
    ds.reset_sparse_state(model)
    with torch.no_grad():
        out2 = model(**x)[0]
    torch.testing.assert_close(out, out2, atol=1e-5, rtol=1e-5)


def test_fast_dense_runs_dense_steps_on_fa4_where_it_can(monkeypatch):
    """``fast_dense``: dense steps go through the kernel front door on FlashAttention-4 (here a stand-in engine that
    runs the exact reference kernel on the CPU), text merged as on sparse calls, and match stock attention; where FA4
    cannot run they stay Diffusers' own, bit for bit."""
    import dit_sparse.kernels as kernels
    import dit_sparse.processors.base as base
    from dit_sparse.kernels.reference import run as reference_run

    model = tiny_hunyuan()
    kw = dict(batch=2, valid=(6, 2), frames=2, height=8, width=8)
    ref = run(model, **kw)
    config = RadialConfig(dense_steps=1, dense_layers=0, block_size=32, fast_dense=True)

    monkeypatch.setattr(base, "_engine_runs_cached", functools.lru_cache(base._engine_runs_cached.__wrapped__))
    ds.apply_sparse_attention(model, config)  # no FA4 on this machine: Diffusers' attention
    assert torch.equal(run(model, **kw), ref) and ds.summary(model)["dense_calls"] == 4
    ds.remove_sparse_attention(model)

    calls = []

    def fa4_run(q, k, v, layout, scale, return_lse):
        calls.append((layout.kind, float(layout.density())))
        return reference_run(q, k, v, layout, scale, return_lse)

    backends = dict(kernels._BACKENDS, fa4=kernels._Backend("fa4", lambda *a: None, fa4_run))
    monkeypatch.setattr(kernels, "_BACKENDS", backends)
    monkeypatch.setattr(kernels, "_AUTO_CACHE", {})
    monkeypatch.setattr(base, "_engine_runs_cached", functools.lru_cache(base._engine_runs_cached.__wrapped__))
    ds.apply_sparse_attention(model, config)
    out = run(model, **kw)
    # The 4 blocks' video rows on "FA4" with every block listed; the padded text keys on the config's engine.
    assert calls == [("fixed", 1.0)] * 4 and ds.summary(model)["dense_calls"] == 4
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["radial", "draft", "semantic", "semantic-packed"])
def test_compile_repeated_blocks_fullgraph_equals_eager(method):
    """HunyuanVideo under compile_repeated_blocks(fullgraph=True) (what `generate --compile` compiles): dual- and
    single-stream blocks trace through our processors without a break (padded text, batch 2, a dense step, a dense
    layer, then sparse steps) and compute what they compute eagerly."""
    import torch._dynamo
    import torch._dynamo.testing

    from dit_sparse import DraftConfig, SemanticConfig

    config = {
        "radial": RadialConfig(dense_steps=1, dense_layers=1, block_size=32, min_sparse_tokens=0),
        "draft": DraftConfig(dense_steps=1, dense_layers=1, block_size=32, density=0.5, min_sparse_tokens=0),
        "semantic": SemanticConfig(dense_steps=1, dense_layers=1, block_size=16, kv_clusters=8, top_p=0.5,
                                   min_sparse_tokens=0),
        # The preset's layout: cluster pieces packed into fixed blocks in the clusters' similarity order.
        "semantic-packed": SemanticConfig(dense_steps=1, dense_layers=1, block_size=16, kv_clusters=8, top_p=0.5,
                                          pack_pieces=True, cluster_order="similarity", min_sparse_tokens=0),
    }[method]

    def steps(model):
        outs = []
        with torch.no_grad():
            for step, t in enumerate((999.0, 900.0, 800.0)):
                with model.cache_context("cond", step_index=step, num_inference_steps=3):
                    outs.append(model(**hunyuan_inputs(batch=2, valid=(6, 3), frames=4, height=8, width=8,
                                                       timestep=t, seed=1 + step))[0])
        return outs

    reference = tiny_hunyuan()
    ds.apply_sparse_attention(reference, config)
    want = steps(reference)
    assert ds.summary(reference)["sparse_calls"] > 0
    model = tiny_hunyuan()
    ds.apply_sparse_attention(model, config)
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("eager")
    model.compile_repeated_blocks(fullgraph=True, backend=counter)
    got = steps(model)
    assert counter.frame_count > 0
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
