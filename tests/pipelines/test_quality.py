"""Quality floor of every method against dense on the packaged trained tiny model (CPU).

Thresholds come from measurements at exactly these settings (one prompt, 17x256x256, 6 steps, seed 0, the tiny
preset's sparse settings), each set about 3 dB below the measured value so that a regression in a pattern, the
schedule or a kernel fails while run-to-run noise on other CPUs does not. Measured values are in the comments.
"""

import pytest

from dit_sparse.eval.quality import PROMPTS, evaluate

# method -> minimum PSNR (dB) against the dense video of the same seed. Measured here (2026-12-01, torch 2.13 CPU, the
# retrained tiny at its trained size): radial 30.6 dB at density 0.76, draft 22.0 dB at 0.25, semantic 24.9 dB at 0.34.
THRESHOLDS = {"radial": 27.5, "draft": 19.0, "semantic": 22.0}


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
