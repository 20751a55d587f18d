import pytest
import torch
from tiny_models import tiny_wan, wan_inputs

import dit_sparse as ds
from dit_sparse import RadialConfig
from dit_sparse.api import get_state


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


def test_fractional_dense_steps_uses_scheduler_or_explains():
    from diffusers import FlowMatchEulerDiscreteScheduler

    model = tiny_wan(num_layers=1)
    ds.apply_sparse_attention(model, RadialConfig(dense_steps=0.5, dense_layers=0, block_size=16))
    with pytest.raises(ValueError, match="step count is unknown"):
        with torch.no_grad():
            model(**wan_inputs())
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
