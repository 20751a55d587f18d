"""Model presets: lookup by name, Hub id and local folder; frame and resolution rules."""

import json

import pytest

from dit_sparse import EVERY_TILE, make_config
from dit_sparse.pipelines.presets import (
    METHODS,
    PRESETS,
    check_size,
    check_video_size,
    known_models,
    preset_for,
    valid_frame_counts,
)


@pytest.mark.parametrize(
    "model, name, cls",
    [
        ("tiny", "tiny", "WanPipeline"),
        ("small", "small", "WanPipeline"),
        ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "wan2.1-1.3b", "WanPipeline"),
        ("Wan-AI/Wan2.1-T2V-14B-Diffusers", "wan2.1-14b", "WanPipeline"),
        ("Wan-AI/Wan2.2-T2V-A14B-Diffusers", "wan2.2-a14b", "WanPipeline"),
        ("hunyuanvideo-community/HunyuanVideo", "hunyuanvideo", "HunyuanVideoPipeline"),
        ("wan2.1-1.3b", "wan2.1-1.3b", "WanPipeline"),
        ("someone/HunyuanVideo-finetune", "hunyuanvideo", "HunyuanVideoPipeline"),
        ("someone/my-wan-finetune", "wan", "WanPipeline"),
        ("black-forest-labs/FLUX.1-dev", "flux.1-dev", "FluxPipeline"),
        ("flux.1-dev", "flux.1-dev", "FluxPipeline"),
        ("Qwen/Qwen-Image", "qwen-image", "QwenImagePipeline"),
        ("qwen-image", "qwen-image", "QwenImagePipeline"),
        ("someone/flux-finetune", "flux", "FluxPipeline"),
        ("someone/Qwen-Image-finetune", "qwen-image", "QwenImagePipeline"),
    ],
)
def test_preset_lookup(model, name, cls):
    preset = preset_for(model)
    assert preset.name == name and preset.pipeline_class == cls


def test_recommended_sparse_settings():
    wan, hy = PRESETS["wan2.1-1.3b"], PRESETS["hunyuanvideo"]
    assert wan.sparse_options("radial") == {"dense_steps": 0.25, "dense_layers": 1, "decay": 0.2, "fast_dense": True}
    assert hy.sparse_options("radial")["decay"] == 0.95 and hy.sparse_options("radial")["dense_layers"] == 0
    assert wan.sparse_options("semantic") == {"dense_steps": 0.2, "dense_layers": 1, "top_p": 0.9, "refresh_every": 3,
                                              "warm_iters": 1, "share_cfg_layouts": True, "block_size": 128,
                                              "pack_pieces": True, "cluster_order": "similarity", "fast_dense": True}
    # Both video families run semantic as packed pieces on FlashAttention-4's full tiles (presets.py says why).
    assert {k: hy.sparse_options("semantic").get(k) for k in ("block_size", "pack_pieces", "kv_block_size")} == {
        "block_size": 128, "pack_pieces": True, "kv_block_size": None}
    # One warm k-means iteration on both (presets.py: the plan's cost against the video).
    assert hy.sparse_options("semantic")["warm_iters"] == 1
    # HunyuanVideo makes one transformer call per step (guidance-distilled): nothing to share there.
    assert wan.sparse_options("draft")["share_cfg_layouts"] and "share_cfg_layouts" not in hy.sparse_options("draft")
    assert wan.sparse_options("draft")["density"] == 0.35 and hy.sparse_options("draft")["density"] == 0.1
    assert wan.sparse_options("draft")["dense_steps"] == 0.1
    assert hy.sparse_options("draft")["dense_steps"] == 0.3
    # A fresh dict each time: callers may change it.
    wan.sparse_options("radial")["decay"] = 9
    assert wan.sparse_options("radial")["decay"] == 0.2
    assert PRESETS["wan2.2-a14b"].guidance_2 == 3.0
    # The video presets' tile window covers every frame and is narrow in space (the 3x3x3 cube, TileConfig's
    # default, is worse than random blocks on the trained models' attention: presets.py).
    for preset in (wan, hy, PRESETS["small"]):
        tile = make_config("tile", **preset.sparse_options("tile"))
        assert tile.tile == (2, 8, 8) and tile.window == (EVERY_TILE, 3, 3), preset.name


def test_local_folder_uses_model_index(tmp_path):
    index = tmp_path / "model_index.json"
    index.write_text(json.dumps({"_class_name": "WanPipeline", "transformer_2": [None, None]}))
    assert preset_for(str(tmp_path)).pipeline_class == "WanPipeline"
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": "WanPipeline", "transformer_2": ["diffusers", "WanTransformer3DModel"]})
    )
    assert preset_for(str(tmp_path)).guidance_2 == 3.0
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    flux = preset_for(str(tmp_path))
    assert flux.pipeline_class == "FluxPipeline" and flux.is_image and flux.model_id == str(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="StableDiffusionPipeline.*FluxPipeline"):
        preset_for(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="model_index.json"):
        preset_for(str(empty))


def test_small_preset_is_the_8640_token_model():
    small, tiny = PRESETS["small"], PRESETS["tiny"]
    assert (small.frames, small.height, small.width) == (33, 384, 640)
    tokens = ((small.frames - 1) // 4 + 1) * (small.height // 16) * (small.width // 16)
    assert tokens == 8640
    check_video_size(small, small.height, small.width, small.frames)
    # the same structure as the tiny model's settings, with 128-token blocks
    assert set(small.sparse) == set(tiny.sparse)
    for method in small.sparse:
        opts = tiny.sparse[method]
        # (small's tile packs its edge tiles into full blocks; tiny's 1x2x16 tiles divide its grid)
        assert set(small.sparse_options(method)) - {"blocks"} == set(opts), method
        if opts:
            assert small.sparse_options(method)["block_size"] == 128
            # 8,640 tokens are under the automatic dense fallback on a GPU (12,288): the presets run sparse anyway,
            # or the quality numbers measured with them would compare dense against dense.
            for preset in (small, tiny):
                config = make_config(method, **preset.sparse_options(method))
                assert config.resolve_min_sparse_tokens("cuda") == 0, (preset.name, method)
    assert known_models().count("small") == 1 and "tiny" in known_models()


def test_frame_rule():
    assert valid_frame_counts(80) == (77, 81)
    assert valid_frame_counts(2) == (1, 5)
    tiny = PRESETS["tiny"]
    for ok in (1, 5, 17, 81, 129):
        check_video_size(tiny, 64, 64, ok)
    with pytest.raises(ValueError, match="77 or 81"):
        check_video_size(PRESETS["wan2.1-1.3b"], 480, 832, 80)
    with pytest.raises(ValueError, match="125 or 129"):
        check_video_size(PRESETS["hunyuanvideo"], 720, 1280, 128)
    with pytest.raises(ValueError, match="width=830.*816 or 832"):
        check_video_size(PRESETS["wan2.1-1.3b"], 480, 830, 81)


def test_every_preset_builds_a_config_for_every_method():
    # What `generate` does before loading weights: a preset entry that make_config rejects would fail only there.
    for preset in PRESETS.values():
        for method in METHODS:
            config = make_config(method, **preset.sparse_options(method))
            assert config.method == method, (preset.name, method)


@pytest.mark.parametrize(
    "name, model_id, cls, family, size, steps, guidance",
    [
        ("flux.1-dev", "black-forest-labs/FLUX.1-dev", "FluxPipeline", "flux", (1024, 1024), 28, 3.5),
        ("qwen-image", "Qwen/Qwen-Image", "QwenImagePipeline", "qwen_image", (1328, 1328), 50, 4.0),
    ],
)
def test_image_presets(name, model_id, cls, family, size, steps, guidance):
    preset = PRESETS[name]
    assert (preset.model_id, preset.pipeline_class, preset.family) == (model_id, cls, family)
    assert preset.kind == "image" and preset.is_image and preset.frames == 1
    assert (preset.height, preset.width) == size and preset.steps == steps and preset.guidance == guidance
    assert preset.dtype == "bfloat16"
    check_size(preset, preset.height, preset.width, preset.frames)  # the native size passes its own rule
    assert set(preset.sparse) == set(METHODS)
    for method in METHODS:
        options = preset.sparse_options(method)
        if method == "dense":
            assert options == {}
            continue
        assert 0.2 <= options["dense_steps"] <= 0.3 and options["dense_layers"] == 1, (method, options)
        # Measured on an H200 (presets.py): radial and tile pay from ~6k image tokens, draft and semantic only above
        # the automatic fallback; at FLUX's native 4,096 tokens every method was slower than dense.
        tokens = (preset.height // 16) * (preset.width // 16)
        threshold = make_config(method, **options).resolve_min_sparse_tokens("cuda")
        if method in ("radial", "tile"):
            assert threshold == 6144, method
            assert (tokens >= threshold) == (name.startswith("qwen")), (name, method, tokens)
        else:
            assert threshold == 12288 and tokens < threshold, (name, method)
    tile = make_config("tile", **preset.sparse_options("tile"))
    assert tile.tile == (1, 8, 16) and tile.window == (1, 3, 3)
    assert tile.tile[0] * tile.tile[1] * tile.tile[2] == tile.block_size  # one tile per kernel block
    assert name in known_models() and model_id in known_models()


def test_image_size_rule_has_no_frame_count():
    flux = PRESETS["flux.1-dev"]
    check_size(flux, 512, 768, 1)
    check_size(flux, 16, 16, 1)
    with pytest.raises(ValueError, match="height=1000.*multiple of 16.*992 or 1008"):
        check_size(flux, 1000, 1024, 1)
    with pytest.raises(ValueError, match="width=8 .*16"):
        check_size(flux, 1024, 8, 1)
    with pytest.raises(ValueError, match="single images.*--frames"):
        check_size(flux, 1024, 1024, 17)
    # Video presets keep the 4k+1 rule through the same entry point.
    check_size(PRESETS["tiny"], 64, 64, 17)
    with pytest.raises(ValueError, match="13 or 17"):
        check_size(PRESETS["tiny"], 64, 64, 16)
