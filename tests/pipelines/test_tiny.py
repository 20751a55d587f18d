"""The offline tiny Wan pipeline: tokenizer contract, pretrained-folder loading, generation shape."""

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_tokenizer_does_what_wan_pipeline_asks():
    from dit_sparse.pipelines.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    enc = tok(
        ["A cat, walking!", "x"], padding="max_length", max_length=512, truncation=True, add_special_tokens=True,
        return_attention_mask=True, return_tensors="pt",
    )
    assert enc.input_ids.shape == (2, 512) and enc.attention_mask.shape == (2, 512)
    assert enc.attention_mask.sum(1).tolist() == [16, 2]  # characters + </s>
    assert enc.input_ids[0, 15] == tok.eos_token_id and enc.input_ids[0, 16] == tok.pad_token_id == 0
    # Different prompts give different ids, and text longer than 512 is truncated.
    assert tok("a dog").input_ids != tok("a cat").input_ids
    assert tok("z" * 600, truncation=True, max_length=512).input_ids.__len__() == 512


def test_pretrained_folder_is_preferred(tmp_path):
    from dit_sparse.pipelines.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline(seed=5, random_init=True)
    assert pipe._dit_sparse_tiny_source == "random"
    pipe.save_pretrained(tmp_path)
    loaded = build_tiny_pipeline(seed=0, pretrained_dir=tmp_path)
    assert loaded._dit_sparse_tiny_source == str(tmp_path)
    for (name, a), b in zip(pipe.transformer.state_dict().items(), loaded.transformer.state_dict().values()):
        assert torch.equal(a, b), name
    assert loaded.vae.dtype == torch.float32
    assert loaded.tokenizer("hello").input_ids == pipe.tokenizer("hello").input_ids
    # Random weights depend on the seed.
    other = build_tiny_pipeline(seed=6, random_init=True)
    assert not torch.equal(next(other.transformer.parameters()), next(pipe.transformer.parameters()))


def test_environment_variable_points_to_a_pretrained_folder(tmp_path, monkeypatch):
    from dit_sparse.pipelines.tiny import ENV_VAR, build_tiny_pipeline

    build_tiny_pipeline(seed=7, random_init=True).save_pretrained(tmp_path)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert build_tiny_pipeline()._dit_sparse_tiny_source == str(tmp_path)


def test_generates_4k_plus_1_frames():
    from dit_sparse.pipelines.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline()  # the packaged trained model when there is one, else random weights
    pipe.set_progress_bar_config(disable=True)
    video = pipe(
        "a fox", height=32, width=48, num_frames=9, num_inference_steps=1, guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0), output_type="np",
    ).frames[0]
    assert video.shape == (9, 32, 48, 3)
    assert 0 <= video.min() and video.max() <= 1


def test_small_model_without_weights_says_how_to_get_them(tmp_path, monkeypatch):
    import pytest

    from dit_sparse.pipelines.generate import GenerationError, load_pipeline
    from dit_sparse.pipelines.presets import PRESETS
    from dit_sparse.pipelines.tiny import SMALL_ENV_VAR, build_small_pipeline

    monkeypatch.setenv(SMALL_ENV_VAR, str(tmp_path))  # an empty folder: no model_index.json
    with pytest.raises(ValueError, match=r"--preset small.*small_model\.tar\.part-"):
        build_small_pipeline()
    with pytest.raises(ValueError, match="not installed"):
        build_small_pipeline(pretrained_dir=tmp_path)
    with pytest.raises(GenerationError, match="train_tiny --preset small"):
        load_pipeline(PRESETS["small"])
