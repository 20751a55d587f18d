"""Model presets: lookup by name, Hub id and local folder; frame and resolution rules."""

import json

import pytest

from dit_sparse import make_config
from dit_sparse.pipelines.presets import PRESETS, check_video_size, known_models, preset_for, valid_frame_counts


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
    ],
)
def test_preset_lookup(model, name, cls):
    preset = preset_for(model)
    assert preset.name == name and preset.pipeline_class == cls


def test_recommended_sparse_settings():
    wan, hy = PRESETS["wan2.1-1.3b"], PRESETS["hunyuanvideo"]
    assert wan.sparse_options("radial") == {"dense_steps": 0.25, "dense_layers": 1, "decay": 0.2}
    assert hy.sparse_options("radial")["decay"] == 0.95 and hy.sparse_options("radial")["dense_layers"] == 0
    assert wan.sparse_options("semantic") == {"dense_steps": 0.2, "dense_layers": 1, "top_p": 0.9}
    assert wan.sparse_options("draft")["density"] == 0.25 and hy.sparse_options("draft")["density"] == 0.1
    assert hy.sparse_options("draft")["dense_steps"] == 0.3
    # A fresh dict each time: callers may change it.
    wan.sparse_options("radial")["decay"] = 9
    assert wan.sparse_options("radial")["decay"] == 0.2
    assert PRESETS["wan2.2-a14b"].guidance_2 == 3.0


def test_local_folder_uses_model_index(tmp_path):
    index = tmp_path / "model_index.json"
    index.write_text(json.dumps({"_class_name": "WanPipeline", "transformer_2": [None, None]}))
    assert preset_for(str(tmp_path)).pipeline_class == "WanPipeline"
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": "WanPipeline", "transformer_2": ["diffusers", "WanTransformer3DModel"]})
    )
    assert preset_for(str(tmp_path)).guidance_2 == 3.0
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ValueError, match="FluxPipeline"):
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
    for method, opts in tiny.sparse.items():
        assert set(small.sparse_options(method)) == set(opts), method
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
