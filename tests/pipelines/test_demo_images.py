"""The demo with an image model (FLUX.1-dev's preset, a tiny random FluxPipeline injected): PNG outputs in image
components, no frame count."""

import numpy as np
import pytest
from tiny_models import tiny_flux_pipeline

HEIGHT, WIDTH = 192, 256
FLUX = "black-forest-labs/FLUX.1-dev"


def _values(**changes):
    values = dict(height=HEIGHT, width=WIDTH, frames=81, steps=2, seed=0, guidance=3.5, dense_steps=0.0,
                  dense_layers=1)
    values.update(changes)
    return values


def test_runner_writes_png_images_for_an_image_model(tmp_path):
    from PIL import Image

    from dit_sparse.pipelines.demo import DemoRunner

    runner = DemoRunner(FLUX, "cpu", pipe=tiny_flux_pipeline(), out_dir=str(tmp_path))
    # frames=81 comes from the (hidden) frames slider: an image model ignores it instead of failing the 4k+1 rule.
    dense_path, sparse_path, text, layout = runner.run("a red fox", "radial", _values(), True)
    assert runner.last_settings["frames"] == 1
    for path in (dense_path, sparse_path):
        assert path.suffix == ".png" and path.parent == tmp_path
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (WIDTH, HEIGHT)
    assert "256x192, 2 steps" in text and "frames" not in text and "PSNR" in text
    assert layout.dtype == np.uint8 and layout.ndim == 3
    with pytest.raises(ValueError, match="multiple of 16"):
        runner.run("a red fox", "dense", _values(height=100), False)


def test_demo_shows_images_for_an_image_model_and_videos_for_a_video_model():
    gr = pytest.importorskip("gradio")  # the demo's optional dependency, as in test_demo_browser.py

    from dit_sparse.pipelines.demo import build_demo

    def components(demo):
        return {block.elem_id: block for block in demo.blocks.values() if getattr(block, "elem_id", None)}

    image_demo = components(build_demo(FLUX, "cpu", pipe=tiny_flux_pipeline()))
    assert isinstance(image_demo["dense_image"], gr.Image) and isinstance(image_demo["sparse_image"], gr.Image)
    assert "dense_video" not in image_demo and "sparse_video" not in image_demo
    assert image_demo["frames"].visible is False
    assert image_demo["height"].value == 1024 and image_demo["width"].value == 1024  # the preset's native size

    video_demo = components(build_demo("tiny", "cpu"))
    assert isinstance(video_demo["dense_video"], gr.Video) and isinstance(video_demo["sparse_video"], gr.Video)
    assert "dense_image" not in video_demo and video_demo["frames"].visible is not False
