"""Quality floor of every method against dense on the packaged trained tiny model (CPU).

Thresholds come from measurements at exactly these settings (one prompt, 17x256x256, 6 steps, seed 0, the tiny
preset's sparse settings), each set about 3 dB below the measured value so that a regression in a pattern, the
schedule or a kernel fails while run-to-run noise on other CPUs does not. Measured values are in the comments.
"""

import pytest

from dit_sparse.eval.quality import PROMPTS, evaluate

# method -> minimum PSNR (dB) against the dense video of the same seed. Measured here (2026-12-01, torch 2.13 CPU, the
# retrained tiny at its trained size): radial 30.6 dB at density 0.76, draft 22.0 dB at 0.25, semantic 24.9 dB at 0.34;
# tile 25.0 dB at 0.375 (2026-12-02, bench/results/quality-tiny-tile-steps6.json).
THRESHOLDS = {"radial": 27.5, "draft": 19.0, "semantic": 22.0, "tile": 22.0}


@pytest.fixture(scope="module")
def results():
    return evaluate(tuple(THRESHOLDS), prompts=PROMPTS[:1], steps=6)


@pytest.mark.parametrize("method", sorted(THRESHOLDS))
def test_method_stays_close_to_dense(results, method):
    r = results[method]
    assert r["psnr"] >= THRESHOLDS[method], r
    assert 0.0 < r["density"] < 1.0, r  # it really ran sparse


def test_trained_model_is_packaged():
    from dit_sparse.pipelines.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline()
    assert getattr(pipe, "_dit_sparse_tiny_source", "") != "random", pipe._dit_sparse_tiny_source
    assert pipe.transformer.config.num_layers == 6


def test_random_baseline_runs_sparse_with_the_presets_schedule():
    """The random-layout baseline takes the presets' schedule *and* min_sparse_tokens: without the latter it fell back
    to dense attention on a GPU under 12,288 tokens (the small model) and had no density to report."""
    rows = evaluate(("draft",), prompts=PROMPTS[:1], steps=2, random_baseline=True)
    baseline = [r for name, r in rows.items() if name.startswith("random@")]
    assert baseline, rows.keys()
    for r in baseline:
        assert r["config"]["min_sparse_tokens"] == 0 and r["config"]["dense_layers"] == 1, r["config"]
        assert 0.0 < r["density"] < 1.0, r


def test_random_yardstick_draws_once_per_geometry():
    """The step benchmark's yardstick (``RandomLayoutPattern(reuse=True)``): one random layout per geometry, drawn
    once and shared by every layer and call through the state's shared cache, at the requested density; without
    ``reuse`` every call draws anew."""
    import torch
    from tiny_models import tiny_wan, wan_inputs

    import dit_sparse as ds
    from dit_sparse.api import get_state
    from dit_sparse.eval.quality import RandomLayoutPattern

    layouts = []
    for reuse in (True, False):
        model = tiny_wan(num_layers=2)
        config = ds.RadialConfig(dense_steps=0, dense_layers=0, block_size=16, min_sparse_tokens=0)
        ds.apply_sparse_attention(model, config)
        state = get_state(model)
        state.pattern = RandomLayoutPattern(config, 0.25, reuse=reuse)
        seen = []
        real_plan = state.pattern.plan
        state.pattern.plan = lambda *a, _p=real_plan: seen.append(_p(*a)) or seen[-1]
        with torch.no_grad():
            for step in range(2):
                with model.cache_context("cond", step_index=step, num_inference_steps=2):
                    model(**wan_inputs(timestep=999.0 - step, seed=1, frames=5, height=8, width=8))
        layouts.append(seen)
    shared, fresh = layouts
    assert len(shared) == 4 and all(lay is shared[0] for lay in shared)
    assert abs(float(shared[0].density()) - 0.25) < 0.05
    assert len({id(lay) for lay in fresh}) == 4


def test_cli_runs_variants_alone(tmp_path):
    """`--methods ''` with `--variants` measures the variants only (each method row costs a whole video)."""
    import json

    from dit_sparse.eval.quality import main

    out = tmp_path / "q.json"
    variant = {"tile narrow": {"method": "tile", "window": [3, 3, 1]}}
    assert main(["--model", "tiny", "--prompts", "1", "--steps", "1", "--methods", "", "--densities", "",
                 "--no-random", "--variants", json.dumps(variant), "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert set(rows) == {"dense", "tile narrow"}
    assert rows["tile narrow"]["config"]["window"] == [3, 3, 1]
