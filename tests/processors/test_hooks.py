"""The step hook: cache context, pipeline runs through set_attn_processor, torch.compile."""

import numpy as np
import pytest
import torch
from tiny_models import tiny_wan, wan_inputs

import dit_sparse as ds
from dit_sparse import DenseConfig, DraftConfig, RadialConfig
from dit_sparse.api import get_state


def test_set_attn_processor_is_equivalent_to_apply_in_a_pipeline():
    from dit_sparse.pipelines.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline(random_init=True)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(prompt="a fox", height=32, width=48, num_frames=9, num_inference_steps=5, guidance_scale=2.0,
                  output_type="np")
    config = RadialConfig(block_size=16)  # the default fractional dense_steps=0.2
    frames = []
    for how in ("set_attn_processor", "apply"):
        if how == "apply":
            ds.apply_sparse_attention(pipe, config)
        else:  # the transformer alone: the step count comes from WanPipeline's cache context
            pipe.transformer.set_attn_processor(ds.sparse_attn_processors(pipe.transformer, config))
        video = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).frames[0]
        state = get_state(pipe.transformer)
        assert state.dense_steps == 1 and ds.summary(pipe.transformer)["steps"] == 5
        assert ds.summary(pipe.transformer)["sparse_calls"] > 0
        assert not state.caches  # the end of the pipeline call dropped the per-layer caches
        frames.append(video)
        ds.remove_sparse_attention(pipe)
    np.testing.assert_allclose(frames[0], frames[1], atol=1e-6)


def _compile_run(model, compiled):
    outs = []
    with torch.no_grad():
        for step, t in enumerate((999.0, 800.0)):
            for name in ("cond", "uncond"):
                with model.cache_context(name, step_index=step, num_inference_steps=2):
                    outs.append(compiled(**wan_inputs(timestep=t, seed=1 + len(outs), frames=5, height=8, width=8)))
    return outs


def test_torch_compile_fullgraph_without_recompiles():
    import torch._dynamo
    import torch._dynamo.testing

    model = tiny_wan(num_layers=2)
    eager = [o[0] for o in _compile_run(model, model)]
    # Dense warm-up steps only; sparse steps under compile: test_torch_compile_fullgraph_sparse below.
    for config in (DenseConfig(), RadialConfig(dense_steps=2, dense_layers=0, block_size=16)):
        ds.apply_sparse_attention(model, config)
        torch._dynamo.reset()
        counter = torch._dynamo.testing.CompileCounterWithBackend("eager")
        compiled = torch.compile(model, fullgraph=True, backend=counter)
        with torch._dynamo.config.patch(error_on_recompile=True):
            outs = _compile_run(model, compiled)
        # One graph for 2 steps x 2 CFG branches; the hook's bookkeeping ran outside it.
        assert counter.frame_count == 1
        state = get_state(model)
        assert (state.step, state.branch_key) == (1, "uncond")
        for got, want in zip(outs, eager):  # radial stays in its dense warm-up steps here
            torch.testing.assert_close(got[0], want, atol=1e-5, rtol=1e-5)
        ds.remove_sparse_attention(model)


SPARSE_COMPILE_CONFIGS = {
    "radial": RadialConfig(dense_steps=0, dense_layers=0, block_size=16),
    # Draft keeps nothing per layer with refresh_every=1, so it plans inside the graph on every call.
    "draft": DraftConfig(dense_steps=0, dense_layers=0, block_size=16),
}


def _eager_reference(config):
    model = tiny_wan(num_layers=2)
    ds.apply_sparse_attention(model, config)
    outs = [o[0] for o in _compile_run(model, model)]
    s = ds.summary(model)
    assert s["sparse_calls"] == 8 and s["mean_density"] < 1.0  # really sparse, in every call
    return outs


@pytest.mark.parametrize("method", ["radial", "draft"])
def test_torch_compile_fullgraph_sparse(method):
    # Sparse steps on the CPU reference kernel: the kernel is a custom op (its chunk loop is not traced), the static
    # layout and draft's tiling are built by the step hook before the graph, nothing the graph guards on changes
    # between calls. Compiled before any eager call (the eager run below is a second model).
    import torch._dynamo
    import torch._dynamo.testing

    config = SPARSE_COMPILE_CONFIGS[method]
    model = tiny_wan(num_layers=2)
    ds.apply_sparse_attention(model, config)
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    with torch._dynamo.config.patch(error_on_recompile=True):
        outs = [o[0] for o in _compile_run(model, compiled)]
    assert counter.frame_count == 1  # one graph for 2 sparse steps x 2 CFG branches
    for got, want in zip(outs, _eager_reference(config)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_compile_repeated_blocks_fullgraph_radial():
    import torch._dynamo
    import torch._dynamo.testing

    config = SPARSE_COMPILE_CONFIGS["radial"]
    model = tiny_wan(num_layers=2)
    ds.apply_sparse_attention(model, config)
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("eager")
    model.compile_repeated_blocks(fullgraph=True, backend=counter)
    with torch._dynamo.config.patch(error_on_recompile=True):
        outs = [o[0] for o in _compile_run(model, model)]
    assert counter.frame_count == 1  # one graph shared by both blocks: no guard on the block's layer index
    for got, want in zip(outs, _eager_reference(config)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_compile_draft_with_refresh_every_plans_every_call_without_recompiles():
    """The Wan and HunyuanVideo presets plan draft every other step (refresh_every=2). A layout kept for a later
    step is Python state a compiled graph would guard on (it recompiled until the limit, then failed under
    fullgraph); compiled, such a pattern plans on every call instead, so the output is refresh_every=1's."""
    import dataclasses

    import torch._dynamo
    import torch._dynamo.testing

    config = dataclasses.replace(SPARSE_COMPILE_CONFIGS["draft"], refresh_every=2)
    model = tiny_wan(num_layers=2)
    ds.apply_sparse_attention(model, config)
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("eager")
    model.compile_repeated_blocks(fullgraph=True, backend=counter)
    with torch._dynamo.config.patch(error_on_recompile=True):
        outs = [o[0] for o in _compile_run(model, model)]
    assert counter.frame_count == 1
    assert not get_state(model).caches  # nothing kept between steps inside the graph
    for got, want in zip(outs, _eager_reference(SPARSE_COMPILE_CONFIGS["draft"])):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _semantic_config():
    from dit_sparse import SemanticConfig

    return SemanticConfig(dense_steps=0, dense_layers=0, block_size=16, kv_clusters=8, top_p=0.5)


def _semantic_steps(model, call, steps, counter=None):
    """Outputs of ``steps`` denoising steps x 2 CFG branches through ``call``, and the graph count after each step."""
    outs, frames = [], []
    timesteps = (999.0, 900.0, 800.0, 700.0)[:steps]
    with torch.no_grad():
        for step, t in enumerate(timesteps):
            for name in ("cond", "uncond"):
                with model.cache_context(name, step_index=step, num_inference_steps=steps):
                    outs.append(call(**wan_inputs(timestep=t, seed=1 + len(outs), frames=5, height=8, width=8))[0])
            if counter is not None:
                frames.append(counter.frame_count)
    return outs, frames


def _assert_equals_eager(outs, num_layers, steps, **changes):
    import dataclasses

    reference = tiny_wan(num_layers=num_layers)
    ds.apply_sparse_attention(reference, dataclasses.replace(_semantic_config(), **changes))
    want, _ = _semantic_steps(reference, reference, steps)
    assert ds.summary(reference)["mean_density"] < 1.0
    for got, expected in zip(outs, want):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_torch_compile_fullgraph_semantic():
    """Semantic under torch.compile(fullgraph=True): no graph break (the plan's host read of the layout width and its
    cluster-count warning stay out of the graph: static width, warning from the step hook's prepare). Its k-means
    warm start is per-layer, per-branch state the graph guards on, so the cold first step and the warm steps compile
    once per CFG branch (4 graphs); from the second step on nothing recompiles. Output equal to eager."""
    import torch._dynamo
    import torch._dynamo.testing

    model = tiny_wan(num_layers=2)
    ds.apply_sparse_attention(model, _semantic_config())
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    outs, frames = _semantic_steps(model, compiled, 4, counter)
    assert frames == [2, 4, 4, 4]  # cold and warm per branch, then no recompilation
    _assert_equals_eager(outs, 2, 4)


def test_compile_repeated_blocks_fullgraph_semantic_shares_one_graph_across_blocks():
    """Semantic under compile_repeated_blocks(fullgraph=True), what `generate --compile` uses: its k-means warm start
    is per-layer state, reached through each processor's own entry mapping, so the shared block graph does not read
    (guard on) the layer index. 3 blocks compile the same 4 graphs as 1 (cold and warm per CFG branch; before, every
    block compiled its own, and a 30-block model ran past Dynamo's recompile limit); output equal to eager."""
    import torch._dynamo
    import torch._dynamo.testing

    model = tiny_wan(num_layers=3)
    ds.apply_sparse_attention(model, _semantic_config())
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("eager")
    model.compile_repeated_blocks(fullgraph=True, backend=counter)
    outs, frames = _semantic_steps(model, model, 3, counter)
    assert frames == [2, 4, 4]
    assert {key.layer for key in get_state(model).caches} == {0, 1, 2}  # every block kept its own warm start
    _assert_equals_eager(outs, 3, 3)


def test_compile_semantic_with_refresh_every_reuses_layouts_without_recompiling():
    """The Wan and HunyuanVideo presets plan semantic every 3rd sparse step (here every 2nd). A kept layout used to
    be stamped with the step it was planned at, so the block graph guarded on the step number and Wan-1.3B's blocks
    recompiled every step until Dynamo's limit (fullgraph: a failure, H200, session 14). It is marked with a flag the
    step hook clears outside the graph: per CFG branch a cold, a warm planning and a reusing graph (6), none after
    the third step, and the output is eager's (layouts reused as eagerly)."""
    import dataclasses

    import torch._dynamo
    import torch._dynamo.testing

    model = tiny_wan(num_layers=2)
    ds.apply_sparse_attention(model, dataclasses.replace(_semantic_config(), refresh_every=2))
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("eager")
    model.compile_repeated_blocks(fullgraph=True, backend=counter)
    outs, frames = _semantic_steps(model, model, 4, counter)
    assert frames == [2, 4, 6, 6]
    _assert_equals_eager(outs, 2, 4, refresh_every=2)


def test_compile_semantic_share_cfg_layouts_compiles_no_graph_per_branch():
    """With share_cfg_layouts the CFG branches read one cache entry, so the block graph does not guard on the branch:
    a cold planning graph, a warm one and the uncond branch's reusing one (3, not one set per branch); the output is
    eager's (the uncond branch runs the cond branch's layout in both)."""
    import dataclasses

    import torch._dynamo
    import torch._dynamo.testing

    model = tiny_wan(num_layers=2)
    ds.apply_sparse_attention(model, dataclasses.replace(_semantic_config(), share_cfg_layouts=True))
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("eager")
    model.compile_repeated_blocks(fullgraph=True, backend=counter)
    outs, frames = _semantic_steps(model, model, 4, counter)
    assert frames == [2, 3, 3, 3]
    assert len(get_state(model).caches) == 2  # one entry per layer, shared by both branches
    _assert_equals_eager(outs, 2, 4, share_cfg_layouts=True)


@pytest.mark.parametrize("method", ["draft", "semantic"])
def test_compiled_planning_in_the_processors_equals_eager(monkeypatch, method):
    """The GPU path of planning (`compiled_planning`: each plan traced as one graph) forced on the CPU with Dynamo's
    aot_eager backend, through the real processors over 2 steps x 2 CFG branches: the same outputs as eager planning,
    and the plans really went through the compiler."""
    import torch._dynamo

    from dit_sparse.patterns import base, draft, semantic

    config = SPARSE_COMPILE_CONFIGS["draft"] if method == "draft" else _semantic_config()
    planner = draft.fixed_block_plan if method == "draft" else semantic.block_plan
    want = _eager_reference(config)
    real_compile = torch.compile
    traced = []

    def aot_eager_compile(fn, **kwargs):
        traced.append(fn.__name__)
        return real_compile(fn, **{**kwargs, "backend": "aot_eager"})

    monkeypatch.setattr(torch, "compile", aot_eager_compile)
    monkeypatch.setenv(base.COMPILE_PLANNING_ENV, "all")
    monkeypatch.setattr(planner, "_compiled", None)
    monkeypatch.setattr(planner, "_failed", False)
    torch._dynamo.reset()
    model = tiny_wan(num_layers=2)
    ds.apply_sparse_attention(model, config)
    outs = [o[0] for o in _compile_run(model, model)]
    assert planner.fn.__name__ in traced and not planner._failed
    for got, expected in zip(outs, want):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
