"""`dit-sparse generate` with the image models (FLUX.1-dev, Qwen-Image): a PNG instead of an mp4.

The pipelines are the real Diffusers classes with tiny random components built in memory (tests/tiny_models.py), so
nothing is downloaded: FLUX goes through a folder written by save_pretrained (the real from_pretrained loading code),
Qwen-Image through its Hub id with the loader replaced by the in-memory pipeline.
"""

import json
import os

import numpy as np
import pytest
from tiny_models import tiny_flux_pipeline, tiny_qwen_image_pipeline

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Not square, so a swapped height and width shows; 12 x 16 tokens after 8x VAE compression and 2x2 packing.
HEIGHT, WIDTH = 192, 256
# 16-token blocks and 4x4-token tiles cut the 12 x 16 token grid into 3 x 4 tiles; a 3 x 3 tile window then skips
# some key blocks, where the preset's 128-token tiles would cover this small image densely.
# The image presets run radial and tile sparse from 6,144 image tokens (below it they were slower than dense on an
# H200); these 192-token images ask for sparse anyway.
ANY_SIZE = ["--min-sparse-tokens", "0"]
TILE_OPTIONS = ["--block-size", "16", "--tile", "1,4,4", "--window", "1,3,3", "--dense-steps", "0"]
TILE_FLAGS = TILE_OPTIONS + ANY_SIZE
RADIAL_FLAGS = ["--block-size", "16", "--dense-steps", "0", *ANY_SIZE]


def _read_png(path):
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG", (path, image.format)
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flux") / "tiny-flux"
    tiny_flux_pipeline().save_pretrained(folder)
    return folder


def _generate(model, method, out, report, extra=()):
    from dit_sparse.cli import main

    rc = main([
        "generate", "--model", str(model), "--prompt", "a red fox in snow", "--method", method, "--steps", "2",
        "--height", str(HEIGHT), "--width", str(WIDTH), "--device", "cpu", "--out", str(out), "--report",
        str(report), *extra,
    ])
    assert rc == 0
    return json.loads(report.read_text())


@pytest.mark.parametrize("method, flags", [("dense", []), ("tile", TILE_FLAGS)], ids=["dense", "tile"])
def test_flux_folder_writes_png(flux_folder, tmp_path, method, flags, capsys):
    out = tmp_path / "fox.png"
    report = _generate(flux_folder, method, out, tmp_path / "report.json", ["--compare-dense", *flags])
    assert "256x192" in capsys.readouterr().out
    for path in (out, tmp_path / "fox_dense.png"):
        image = _read_png(path)
        assert image.shape == (HEIGHT, WIDTH, 3), (path, image.shape)
        assert image.std() > 0  # a picture, not a constant
    assert report["pipeline_class"] == "FluxPipeline" and report["preset"] == "flux"
    assert report["kind"] == "image" and report["frames"] == 1 and report["fps"] is None
    assert report["sparse_image"] == str(out) and report["dense_image"].endswith("fox_dense.png")
    assert "sparse_video" not in report
    assert report["method"] == method
    if report["identical_to_dense"]:
        assert report["psnr"] is None  # infinite
    else:
        assert report["psnr"] > 10
    if method == "dense":
        assert report["density"] == 1.0
    else:
        # Sparse attention ran on the image's token grid and skipped key blocks.
        assert report["summary"]["geometry"] == [1, HEIGHT // 16, WIDTH // 16]
        assert report["summary"]["sparse_calls"] > 0 and 0 < report["density"] < 1
        assert report["config"]["tile"] == [1, 4, 4]


@pytest.mark.parametrize("method, flags", [("dense", []), ("radial", RADIAL_FLAGS)], ids=["dense", "radial"])
def test_qwen_image_hub_id_writes_png(monkeypatch, tmp_path, method, flags):
    import torch

    from dit_sparse.pipelines import generate

    loaded = []

    def load_in_memory(model_id, preset, dtype, **hub):
        loaded.append((model_id, preset.name, dtype))
        return tiny_qwen_image_pipeline()

    monkeypatch.setattr(generate, "hub_access", lambda *args, **kwargs: {})
    monkeypatch.setattr(generate, "_load_image", load_in_memory)
    out = tmp_path / "fox.png"
    report = _generate("Qwen/Qwen-Image", method, out, tmp_path / "report.json", flags)
    assert loaded == [("Qwen/Qwen-Image", "qwen-image", torch.float32)]  # float32 on a CPU
    image = _read_png(out)
    assert image.shape == (HEIGHT, WIDTH, 3) and image.std() > 0
    assert report["pipeline_class"] == "QwenImagePipeline" and report["kind"] == "image"
    assert report["guidance"] == 4.0 and report["negative_prompt"] == " "
    if method != "dense":
        # Both CFG branches (the negative prompt enables true CFG) ran sparse in the sparse layer.
        assert report["summary"]["sparse_calls"] == 2 * 2 and 0 < report["density"] < 1


def test_image_call_arguments():
    from dit_sparse.pipelines.generate import call_kwargs
    from dit_sparse.pipelines.presets import PRESETS

    settings = dict(prompt="p", negative_prompt="", height=64, width=96, frames=1, steps=3, guidance=4.0, seed=0)
    flux = call_kwargs(None, PRESETS["flux.1-dev"], settings)
    assert flux["guidance_scale"] == 4.0 and "num_frames" not in flux and "negative_prompt" not in flux
    qwen = call_kwargs(None, PRESETS["qwen-image"], settings)
    # Qwen-Image's scale is true CFG, which needs a negative prompt; guidance_scale is for distilled variants only.
    assert qwen["true_cfg_scale"] == 4.0 and qwen["negative_prompt"] == " " and "guidance_scale" not in qwen
    assert "num_frames" not in qwen and qwen["height"] == 64 and qwen["width"] == 96


@pytest.mark.parametrize("model", ["black-forest-labs/FLUX.1-dev", "Qwen/Qwen-Image"])
def test_mp4_out_for_image_model_is_a_value_error(model, monkeypatch, tmp_path, capsys):
    from dit_sparse.pipelines import generate
    from dit_sparse.pipelines.presets import preset_for

    with pytest.raises(ValueError, match=r"generates single images.*\.png \(e\.g\. --out .*x\.png\)"):
        generate.output_path(preset_for(model), str(tmp_path / "x.mp4"), "tile")
    assert generate.output_path(preset_for(model), None, "tile").suffix == ".png"
    assert generate.output_path(preset_for("tiny"), None, "tile").suffix == ".mp4"

    def must_not_load(*args, **kwargs):
        raise AssertionError("the bad --out must be rejected before loading the model")

    monkeypatch.setattr(generate, "load_pipeline", must_not_load)
    with pytest.raises(SystemExit) as exc:
        generate.main(["--model", model, "--method", "tile", "--out", str(tmp_path / "x.mp4")])
    assert exc.value.code == 2
    assert "x.png" in capsys.readouterr().err


def test_frames_or_fps_for_image_model_are_rejected(capsys):
    from dit_sparse.pipelines.generate import main

    with pytest.raises(SystemExit) as exc:
        main(["--model", "flux.1-dev", "--frames", "17"])
    assert exc.value.code == 2
    assert "single images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model", "qwen-image", "--fps", "24"])
    assert "--fps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model", "flux.1-dev", "--height", "1000"])
    assert "992 or 1008" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model", "flux.1-dev", "--negative-prompt", "blurry"])
    assert "--negative-prompt has no effect" in capsys.readouterr().err


def test_tile_flags_apply_to_tile_only(capsys):
    from dit_sparse.pipelines.generate import build_parser, sparse_options
    from dit_sparse.pipelines.presets import PRESETS

    parser = build_parser()
    args = parser.parse_args(["--method", "tile", "--tile", "1,4,8", "--window", "1,5,5"])
    options = sparse_options(args, PRESETS["flux.1-dev"])
    assert options["tile"] == (1, 4, 8) and options["window"] == (1, 5, 5) and options["dense_layers"] == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["--tile", "8x16"])
    from dit_sparse.pipelines.generate import main

    with pytest.raises(SystemExit):
        main(["--model", "flux.1-dev", "--method", "radial", "--window", "1,3,3"])
    assert "--window (tile only)" in capsys.readouterr().err


def test_flux_preset_runs_dense_below_its_threshold_and_says_why(flux_folder, tmp_path):
    """Without --min-sparse-tokens the preset's threshold (6,144 image tokens, measured on an H200) applies: a
    192-token image runs dense, and the report says why instead of claiming a sparse run."""
    report = _generate(flux_folder, "tile", tmp_path / "fox.png", tmp_path / "report.json", TILE_OPTIONS)
    assert report["summary"]["sparse_calls"] == 0
    assert report["summary"]["dense_fallback"] == "192 video tokens < min_sparse_tokens 6,144"
