import dataclasses

import torch
from tiny_models import tiny_wan, wan_inputs

import dit_sparse as ds
from dit_sparse import RadialConfig
from dit_sparse.api import get_state
from dit_sparse.schedule import DEFAULT_NUM_STEPS


def cfg_run(model, timesteps, **kw):
    """One denoising run with classifier-free guidance: two transformer calls per timestep."""
    seen = []
    state = get_state(model)
    with torch.no_grad():
        for t in timesteps:
            for _branch in range(2):
                x = wan_inputs(timestep=float(t), **kw)
                before, run_before = sum(v.dense_calls for v in state.stats.values()), state.run
                model(**x)
                if state.run != run_before:  # a new run reset the statistics
                    before = 0
                dense_now = sum(v.dense_calls for v in state.stats.values()) - before
                seen.append((state.step, state.branch, dense_now))
    return seen


def test_first_step_dense_for_both_cfg_calls_then_sparse_and_reset():
    model = tiny_wan(num_layers=2)
    ds.apply_sparse_attention(model, RadialConfig(dense_steps=1, dense_layers=0, block_size=16))
    seen = cfg_run(model, [999, 800, 600], frames=5, height=8, width=8)
    assert [(s, b) for s, b, _ in seen] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert [d for _, _, d in seen] == [2, 2, 0, 0, 0, 0]
    assert ds.summary(model)["sparse_calls"] == 8
    # A larger timestep starts a new run: step count and statistics reset.
    seen = cfg_run(model, [999], frames=5, height=8, width=8)
    assert seen == [(0, 0, 2), (0, 1, 2)]
    assert ds.summary(model)["calls"] == 4 and ds.summary(model)["sparse_calls"] == 0


def test_fractional_dense_steps_uses_scheduler_or_default(caplog):
    from diffusers import FlowMatchEulerDiscreteScheduler

    model = tiny_wan(num_layers=1)
    ds.apply_sparse_attention(model, RadialConfig(dense_steps=0.5, dense_layers=0, block_size=16))
    with caplog.at_level("WARNING", logger="dit_sparse.schedule"), torch.no_grad():
        model(**wan_inputs())
    # No step count anywhere: the documented default of DEFAULT_NUM_STEPS steps, said once.
    assert get_state(model).dense_steps == round(0.5 * DEFAULT_NUM_STEPS)
    assert "step count is unknown" in caplog.text
    ds.set_num_inference_steps(model, 4)
    seen = cfg_run(model, [999, 700, 500, 200], frames=5, height=8, width=8)
    assert [d for _, _, d in seen] == [1, 1, 1, 1, 0, 0, 0, 0]

    class Pipe:  # the attributes apply_sparse_attention reads from a pipeline
        pass

    pipe = Pipe()
    pipe.transformer = tiny_wan(num_layers=1)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe.scheduler.set_timesteps(10)
    ds.apply_sparse_attention(pipe, RadialConfig(dense_steps=0.3, dense_layers=0, block_size=16))
    with torch.no_grad():
        pipe.transformer(**wan_inputs(timestep=float(pipe.scheduler.timesteps[0])))
    assert get_state(pipe).dense_steps == 3
    # The pipeline's cache context, where it names the step count, wins (it describes the run being made).
    pipe.transformer._reset_stateful_cache()  # what a pipeline call does at its end: the next call is a new run
    with torch.no_grad(), pipe.transformer.cache_context("cond", step_index=0, num_inference_steps=20):
        pipe.transformer(**wan_inputs(timestep=999.0))
    assert get_state(pipe).dense_steps == 6


def context_run(model, calls, **kw):
    """Transformer calls ``(timestep, context kwargs or None)``; returns (step, branch, branch_key) after each."""
    state = get_state(model)
    seen = []
    with torch.no_grad():
        for t, ctx in calls:
            x = wan_inputs(timestep=float(t), **kw)
            if ctx is None:
                model(**x)
            else:
                ctx = dict(ctx)
                with model.cache_context(ctx.pop("name"), **ctx):
                    model(**x)
            seen.append((state.step, state.branch, state.branch_key))
    return seen


def test_cache_context_names_branch_and_step():
    model = tiny_wan(num_layers=1)
    ds.apply_sparse_attention(model, RadialConfig(dense_steps=1, dense_layers=0, block_size=16))
    # HunyuanVideo-style: names only. A repeated name is the next step even at an unchanged timestep (the timestep
    # rule alone would make these four calls four branches of one step).
    calls = [(900, {"name": n}) for n in ("cond", "uncond", "cond", "uncond")]
    assert context_run(model, calls) == [(0, 0, "cond"), (0, 1, "uncond"), (1, 0, "cond"), (1, 1, "uncond")]
    # Wan-style: the step index is taken as given; a smaller one starts a new run.
    calls = [(999, {"name": "cond", "step_index": 0}), (999, {"name": "uncond", "step_index": 0}),
             (999, {"name": "cond", "step_index": 1}), (998, {"name": "cond", "step_index": 0})]
    state = get_state(model)
    run = state.run
    assert context_run(model, calls) == [(0, 0, "cond"), (0, 1, "uncond"), (1, 0, "cond"), (0, 0, "cond")]
    assert state.run == run + 2
    # Without a context: the timestep rule.
    assert context_run(model, [(999, None), (999, None), (500, None)]) == [(0, 0, 0), (0, 1, 1), (1, 0, 0)]


def test_state_stays_bounded_for_many_calls_at_one_timestep():
    from dit_sparse import SemanticConfig

    model = tiny_wan(num_layers=3)
    config = SemanticConfig(dense_steps=0, dense_layers=0, refresh_every=2, block_size=16, q_clusters=4,
                            kv_clusters=8, kmeans_iters=2)
    ds.apply_sparse_attention(model, config)
    state = get_state(model)
    context_run(model, [(900, None)] * 30, frames=5, height=8, width=8)
    # 30 calls at one timestep are 30 "branches" without a context; only the latest max_slots keep caches.
    assert state.branch == 29
    assert len(state.caches) == 3 * state.max_slots
    assert sum("layout" in e for e in state.caches.values()) == 3 * state.max_slots
    # Names the caller invents are bounded the same way.
    context_run(model, [(900, {"name": f"call{i}"}) for i in range(30)], frames=5, height=8, width=8)
    assert len(state.caches) == 3 * state.max_slots and len(state._seen) <= 4 * state.max_slots


def test_layouts_kept_only_when_a_later_step_reads_them():
    from dit_sparse import SemanticConfig

    model = tiny_wan(num_layers=2)
    config = SemanticConfig(dense_steps=0, dense_layers=0, block_size=16, q_clusters=4, kv_clusters=8)
    ds.apply_sparse_attention(model, config)
    state = get_state(model)
    cfg_run(model, [999, 900], frames=5, height=8, width=8)
    # refresh_every=1: every step plans afresh, so no layout is retained; the warm-start centroids (small; the joint
    # clustering keeps "qk_centroids") are.
    assert len(state.caches) == 4
    assert all("layout" not in e and "qk_centroids" in e for e in state.caches.values())
    # refresh_every=3: kept after the refresh step and the first reuse, dropped by the last reuse before a refresh.
    ds.apply_sparse_attention(model, dataclasses.replace(config, refresh_every=3))
    state = get_state(model)
    kept = []
    for t in (999, 900, 800, 700):
        cfg_run(model, [t], frames=5, height=8, width=8) if t != 999 else cfg_run(model, [999], frames=5, height=8,
                                                                                    width=8)
        kept.append(sum("layout" in e for e in state.caches.values()))
    assert kept == [4, 4, 0, 4]


def test_share_cfg_layouts_plans_once_per_step_and_both_branches_run_it():
    from dit_sparse import SemanticConfig

    config = SemanticConfig(dense_steps=0, dense_layers=0, block_size=16, q_clusters=4, kv_clusters=8)
    outs, plans = {}, {}
    for share in (False, True):
        model = tiny_wan(num_layers=2)
        ds.apply_sparse_attention(model, dataclasses.replace(config, share_cfg_layouts=share))
        state = get_state(model)
        planned = []
        plan = state.pattern.plan
        state.pattern.plan = lambda q, k, g, c: planned.append(q.shape) or plan(q, k, g, c)
        outs[share] = []
        with torch.no_grad():
            for step, t in enumerate((999.0, 900.0, 800.0)):
                for name in ("cond", "uncond"):
                    with model.cache_context(name, step_index=step, num_inference_steps=3):
                        outs[share].append(model(**wan_inputs(timestep=t, seed=step, frames=5, height=8,
                                                              width=8))[0])
        plans[share] = len(planned)
        summary = ds.summary(model)
        assert summary["sparse_calls"] == 12  # both branches' calls run sparse and are counted
    # One plan per layer and step instead of one per layer, step and branch; one entry per layer, planned by cond.
    assert plans == {False: 12, True: 6}
    assert len(state.caches) == 2
    assert all(entry["planned_by"] == 0 and entry["planned_now"] for entry in state.caches.values())
    # The cond branch plans as without sharing (its warm start is its own either way); the uncond branch, given the
    # same inputs here, runs cond's layout and so gives cond's output.
    for i in range(0, 6, 2):
        torch.testing.assert_close(outs[True][i], outs[False][i])
        torch.testing.assert_close(outs[True][i + 1], outs[True][i])


def test_caches_have_named_keys_and_one_home():
    from dit_sparse.schedule import LayerKey

    model = tiny_wan(num_layers=2)
    ds.apply_sparse_attention(model, RadialConfig(dense_steps=0, dense_layers=0, block_size=16))
    state = get_state(model)
    pattern = state.pattern
    assert not any(isinstance(v, dict) for v in vars(pattern).values())  # the pattern holds no cache of its own
    cfg_run(model, [999, 900], frames=5, height=8, width=8)
    # A static layout is built once per geometry and shared by layers, steps and branches, in the state.
    assert len(state.shared) == 1 and not state.caches
    (layout,) = state.shared._data.values()
    assert "density" in layout.memo and "density" not in layout.to("cpu").memo
    ds.remove_sparse_attention(model)
    assert len(state.shared) == 0 and not state.caches

    ds.apply_sparse_attention(model, RadialConfig(dense_steps=0, dense_layers=0, refresh_every=2, block_size=16))
    state = get_state(model)
    state.pattern = _NotStatic(state.pattern)
    with torch.no_grad(), model.cache_context("cond"):
        model(**wan_inputs(frames=5, height=8, width=8, batch=2))
    keys = list(state.caches)
    assert keys == [LayerKey(0, 0, "cond", (5, 4, 4), 2), LayerKey(0, 1, "cond", (5, 4, 4), 2)]
    assert keys[1].layer == 1 and keys[1].branch == "cond" and keys[1].batch == 2
    ds.reset_sparse_state(model)
    assert not state.caches and len(state.shared) == 0


class _NotStatic:
    """A static pattern presented as a dynamic one (so the core keeps its layouts per layer)."""

    static = False

    def __init__(self, inner):
        self.inner = inner

    def plan(self, q, k, geometry, cache):
        return self.inner.plan(q, k, geometry, cache)


def test_bounded_cache_evicts_least_recently_used():
    from dit_sparse.schedule import BoundedCache

    cache = BoundedCache(maxsize=2)
    builds = []
    for key in ("a", "b", "a", "c", "b"):
        cache.get_or_build(key, lambda key=key: builds.append(key) or key)
    assert builds == ["a", "b", "c", "b"] and len(cache) == 2 and "c" in cache


def test_dynamic_pattern_refresh_and_cache_per_branch():
    from dit_sparse.patterns.base import Pattern

    class CountingPattern(Pattern):
        name = "counting"
        static = False

        def __init__(self, config):
            super().__init__(config)
            self.calls = 0

        def plan(self, q, k, geometry, cache):
            self.calls += 1
            from dit_sparse.layout import BlockLayout

            bs = self.config.block_size
            return BlockLayout.dense(1, 1, q.shape[2], k.shape[2], bs, bs, device=q.device)

    model = tiny_wan(num_layers=2)
    ds.apply_sparse_attention(model, RadialConfig(dense_steps=1, dense_layers=0, refresh_every=2, block_size=16))
    state = get_state(model)
    state.pattern = CountingPattern(state.config)
    cfg_run(model, [999, 900, 800, 700, 600], frames=5, height=8, width=8)
    # Sparse steps 1..4; refreshed at sparse steps 0 and 2 -> 2 refreshes x 2 layers x 2 branches.
    assert state.pattern.calls == 8
    assert len(state.caches) == 4


def test_auto_dense_fallback_threshold_on_cuda_and_none_for_dense():
    from dit_sparse import DenseConfig
    from dit_sparse.geometry import VideoGeometry
    from dit_sparse.patterns import make_pattern
    from dit_sparse.schedule import DENSE, STATIC, SparseState

    # No GPU needed: the decision reads the device's type only. The packaged small model's 8,640 tokens.
    config = RadialConfig(dense_steps=0, dense_layers=0)
    state = SparseState(config)
    state.use(config, make_pattern(config))
    assert state.fallback_reason(8640, torch.device("cuda")) == "8,640 video tokens < min_sparse_tokens 12,288"
    assert state.fallback_reason(12288, torch.device("cuda")) is None
    assert state.fallback_reason(8640, torch.device("cpu")) is None
    state.on_forward(999.0, VideoGeometry(frames=9, height=24, width=40, model="wan"))
    state.prepare(torch.device("cuda"))  # the step hook's call; nothing is built for a call that falls back
    assert state.decide(3, True) == DENSE and state.summary()["dense_fallback"].startswith("8,640 video tokens")
    assert len(state.shared) == 0
    forced = dataclasses.replace(config, min_sparse_tokens=0)
    state.use(forced, make_pattern(forced))
    state.prepare(torch.device("cpu"))
    assert state.decide(3, True) == STATIC
    dense = SparseState(DenseConfig(min_sparse_tokens=10**6))
    assert dense.fallback_reason(10, torch.device("cuda")) is None  # dense anyway: nothing to report
