"""Demo helpers without a browser: the layout plot and the timings text."""

import numpy as np

from dit_sparse.config import RadialConfig
from dit_sparse.geometry import VideoGeometry
from dit_sparse.pipelines.demo import format_timings, plot_layout
from dit_sparse.pipelines.generate import RunResult


def test_plot_layout_draws_the_block_mask():
    import torch

    from dit_sparse.patterns.radial import RadialPattern

    geometry = VideoGeometry(9, 8, 8, "wan")
    q = torch.zeros(1, 1, geometry.num_tokens, 64)
    layout = RadialPattern(RadialConfig(block_size=64)).plan(q, q, geometry, {})
    image = plot_layout(layout, title="radial", geometry=geometry, tokens_per_block=64)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.std() > 10  # not a blank canvas


def test_format_timings_reports_speedup_density_psnr():
    frames = np.zeros((5, 8, 8, 3), np.float32)
    summary = {"mean_density": 0.4, "calls": 12, "dense_calls": 4, "sparse_calls": 8, "backend": "reference"}
    dense, sparse = RunResult(frames, 2.0), RunResult(frames, 1.0, summary=summary)
    settings = dict(width=64, height=64, frames=17, steps=2, seed=0)
    text = format_timings(dense, sparse, "radial", {"psnr": 31.5, "ssim": 0.93}, settings, "cuda")
    assert "speedup: 2.00x" in text and "density: 0.400" in text and "31.50 dB" in text and "0.9300" in text
    assert "CPU" not in text
    alone = format_timings(None, sparse, "radial", None, settings, "cpu")
    assert "speedup: n/a" in alone and "CPU" in alone
