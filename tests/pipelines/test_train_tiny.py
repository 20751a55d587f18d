"""Synthetic captioned videos and the training script of the small trained ``tiny`` WanPipeline (CPU, < 90 s)."""

import json
import os
import tarfile

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dit_sparse.pipelines import synthetic_videos as sv  # noqa: E402
from dit_sparse.pipelines import train_tiny as tt  # noqa: E402

# ------------------------------------------------------------------------------------------- synthetic videos


def test_batch_shape_range_and_determinism():
    videos, captions = sv.sample_batch(3, frames=5, height=32, width=48, seed=7)
    assert videos.shape == (3, 3, 5, 32, 48) and videos.dtype == torch.float32
    assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)
    assert videos.min() >= -1 and videos.max() <= 1
    assert videos.std() > 0.1  # not blank
    again, captions_again = sv.sample_batch(3, frames=5, height=32, width=48, seed=7)
    assert torch.equal(videos, again) and captions == captions_again
    other, _ = sv.sample_batch(3, frames=5, height=32, width=48, seed=8)
    assert not torch.equal(videos, other)
    # clip i depends only on (seed, i), not on the batch size
    first, first_caption = sv.sample_batch(1, frames=5, height=32, width=48, seed=7)
    assert torch.equal(first[0], videos[0]) and first_caption[0] == captions[0]
    # a torch.Generator draws the seed reproducibly
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(sv.sample_batch(2, 5, 16, 16, generator=g1)[0], sv.sample_batch(2, 5, 16, 16, generator=g2)[0])


def test_captions_use_exactly_the_vocabulary():
    captions = [sv.caption(s) for s in sv.sample_scenes(3000, seed=1)]
    used = {w for c in captions for w in c.split()}
    assert used <= set(sv.VOCAB)
    assert used == set(sv.VOCAB)  # every vocabulary word is reachable
    assert all(c == c.strip() and "  " not in c for c in captions)
    tok = tt.build_tokenizer()
    ids = tok(captions, padding="longest", return_tensors="pt").input_ids
    assert ids.shape[1] < tt.TOKEN_LENGTH  # training never truncates a caption
    assert not (ids == tok.unk_token_id).any()
    assert (ids == tok.eos_token_id).sum() == len(captions)


def test_small_style_scenes():
    scenes = sv.sample_scenes(2000, seed=1, style="small")
    counts = [len(s.objects) for s in scenes]
    assert min(counts) >= 2 and max(counts) == 8
    captions = [sv.caption(s) for s in scenes]
    assert {w for c in captions for w in c.split()} <= set(sv.VOCAB)  # the tiny tokenizer's vocabulary still covers it
    ids = tt.build_tokenizer()(captions, padding="longest", return_tensors="pt").input_ids
    assert ids.shape[1] < tt.PRESET_DEFAULTS["small"]["token_length"]  # never truncated in training
    # long-range structure: some shapes cross most of the frame, some repeat an earlier shape's look
    speeds = [(o.velocity[0] ** 2 + o.velocity[1] ** 2) ** 0.5 for s in scenes for o in s.objects]
    assert max(speeds) > 1.5 and sum(v > 1.1 for v in speeds) > 0.1 * len(speeds)
    assert any(len({(o.shape, o.color, o.texture) for o in s.objects}) < len(s.objects) for s in scenes)
    # the default style is still tiny's (one to three shapes), and a style changes the clips, not their determinism
    assert max(len(s.objects) for s in sv.sample_scenes(500, seed=1)) == 3
    a, caps = sv.sample_batch(2, frames=5, height=48, width=80, seed=3, style="small")
    b, caps_b = sv.sample_batch(2, frames=5, height=48, width=80, seed=3, style=sv.SMALL_STYLE)
    assert torch.equal(a, b) and caps == caps_b and a.shape == (2, 3, 5, 48, 80)
    assert caps != sv.sample_batch(2, frames=5, height=48, width=80, seed=3)[1]
    with pytest.raises(ValueError, match="unknown scene style"):
        sv.sample_batch(1, style="huge")


def _scene(obj_color="white", direction="right", pan=None):
    obj = sv.SceneObject(shape="square", color=obj_color, texture="solid", radius=0.3, center=(0.0, 0.0),
                         velocity=tuple(0.8 * v for v in sv.DIRECTIONS[direction]), direction=direction, angle=0.0,
                         spin=0.0, tex_period=0.1)
    return sv.Scene(background="solid", bg_color="black", bg_angle=0.0, bg_period=0.3, objects=[obj], pan=pan,
                    pan_speed=0.4 if pan else 0.0, verbs=["moves"])


def _centroid_x(video):
    bright = (video.mean(0) - video.mean(0).min()).clamp(min=0)  # (F, H, W): the white object over black
    xs = torch.arange(video.shape[-1]).float()
    return (bright * xs).sum(dim=(1, 2)) / bright.sum(dim=(1, 2))


def test_motion_camera_and_caption_semantics():
    scene = _scene()
    assert sv.caption(scene) == "a white square moves right over a black solid background"
    video = sv.render_scenes([scene], frames=9, height=32, width=32)[0]
    cx = _centroid_x(video)
    assert (cx[1:] > cx[:-1]).all()  # moves right on screen
    # the camera panning right makes a still object drift left on screen
    still = _scene(direction="up", pan="right")
    still.objects[0].velocity, still.objects[0].direction = (0.0, 0.0), None
    assert sv.caption(still).startswith("a white square stays still while the camera pans right")
    cx = _centroid_x(sv.render_scenes([still], frames=9, height=32, width=32)[0])
    assert (cx[1:] < cx[:-1]).all()


# ------------------------------------------------------------------------------------ training-side conventions


def _random_pipeline():
    from diffusers import WanPipeline

    tok = tt.build_tokenizer()
    vae, transformer, text_encoder = tt.build_models(tt.SMOKE_ARCH, len(tok), seed=0)
    pipe = WanPipeline(tokenizer=tok, text_encoder=text_encoder.eval(), vae=vae.eval(), scheduler=tt.build_scheduler(),
                       transformer=transformer.eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_prompt_embeddings_match_wan_pipeline():
    pipe = _random_pipeline()
    prompts = ["a red square moves left over a blue striped background", ""]
    with torch.no_grad():
        expected, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, max_sequence_length=512)
        enc = pipe.tokenizer(prompts, padding="max_length", max_length=tt.TOKEN_LENGTH, return_tensors="pt")
        got = tt.encode_prompts(pipe.text_encoder, enc.input_ids, enc.attention_mask)
    assert got.shape == expected.shape == (2, 512, tt.SMOKE_ARCH["text_encoder"]["d_model"])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_flow_matching_convention_samples_back_the_data_through_wan_pipeline():
    """An oracle velocity built with the training convention for a one-point data set (x0) must make WanPipeline's
    UniPC sampler land on x0; the opposite sign must not."""
    pipe = _random_pipeline()
    z = tt.SMOKE_ARCH["vae"]["z_dim"]
    x0 = torch.randn(1, z, 2, 8, 8, generator=torch.Generator().manual_seed(1))

    def oracle(sign):
        def forward(hidden_states, timestep, encoder_hidden_states=None, return_dict=False, **kwargs):
            sigma = timestep.float() / tt.NUM_TRAIN_TIMESTEPS
            s = sigma.view(-1, 1, 1, 1, 1)
            noise = (hidden_states - (1 - s) * x0) / s  # the noise that puts x0 at hidden_states
            x_t, target, t = tt.flow_matching_inputs(x0, noise, sigma)
            torch.testing.assert_close(x_t, hidden_states)
            torch.testing.assert_close(t, timestep.float())
            return (sign * target,)

        return forward

    errors = {}
    for sign in (1.0, -1.0):
        pipe.transformer.forward = oracle(sign)
        latents = pipe(prompt="a red square moves left over a blue solid background", num_frames=5, height=64,
                       width=64, num_inference_steps=12, guidance_scale=1.0, output_type="latent",
                       generator=torch.Generator().manual_seed(0)).frames
        errors[sign] = float((latents - x0).abs().max())
    assert errors[1.0] < 1e-2, errors
    assert errors[-1.0] > 1.0, errors


def test_sigmas_and_metrics():
    s = tt.sample_sigmas(4096, torch.Generator().manual_seed(0))
    assert 0 < s.min() and s.max() <= 1 and s.median() > 0.5  # shifted towards high noise like the sampler
    video = ((sv.sample_batch(2, 5, 32, 32, seed=0)[0] + 1) / 2).permute(0, 2, 3, 4, 1)
    caps = sv.sample_batch(2, 5, 32, 32, seed=0)[1]
    data = tt.video_metrics(video, caps)
    noise = tt.video_metrics(torch.rand(video.shape, generator=torch.Generator().manual_seed(0)), caps)
    assert data["temporal_ssim"] > 0.5 > noise["temporal_ssim"]
    assert data["palette_fraction"] > 0.5 > noise["palette_fraction"]
    assert data["caption_color_agreement"] > 0.9


def test_default_architecture_fits_25_mb():
    tok = tt.build_tokenizer()
    vae, transformer, text_encoder = tt.build_models(tt.DEFAULT_ARCH, len(tok), seed=0)
    total = sum(tt.param_count(m) for m in (vae, transformer, text_encoder))
    assert total * 2 <= 25e6  # bf16
    cfg = transformer.config
    assert cfg.attention_head_dim == 64 and cfg.in_channels == vae.config.z_dim
    assert cfg.text_dim == text_encoder.config.d_model


def test_small_architecture_is_the_sparse_regime_and_fits_38_mb():
    tok = tt.build_tokenizer()
    vae, transformer, text_encoder = tt.build_models(tt.SMALL_ARCH, len(tok), seed=0)
    total = sum(tt.param_count(m) for m in (vae, transformer, text_encoder))
    assert total * 2 <= 38e6  # bf16: three 15 MiB pack parts
    cfg = transformer.config
    assert cfg.attention_head_dim == 64 and cfg.num_attention_heads * 64 == 384
    assert cfg.in_channels == vae.config.z_dim and cfg.text_dim == text_encoder.config.d_model
    args = tt.parse_args(["--out", "x", "--preset", "small"])
    assert (args.frames, args.height, args.width) == (33, 384, 640)
    latent = ((args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    assert latent == (9, 48, 80) and latent[0] * (latent[1] // 2) * (latent[2] // 2) == 8640
    assert tt.parse_args(["--out", "x", "--preset", "small", "--batch-size", "3"]).batch_size == 3  # options win
    tiny = tt.parse_args(["--out", "x"])
    assert (tiny.preset, tiny.frames, tiny.height, tiny.batch_size, tiny.token_length) == ("tiny", 17, 256, 32, 96)


# -------------------------------------------------------------------------------------------- smoke training


def test_smoke_training_run_saves_a_loadable_pipeline(tmp_path):
    from diffusers import WanPipeline

    out = tmp_path / "run"
    result = tt.main(["--out", str(out), "--smoke"])
    for name in ("model_index.json", "train_log.json", "loss.png", "samples.png", "checkpoint/state.pt"):
        assert (out / name).is_file(), name
    log = json.loads((out / "train_log.json").read_text())
    assert log["vae"]["steps"] == 2 and log["dit"]["steps"] == 3
    assert len(log["loss_curves"]["dit"]) == 3 and len(log["latents_std"]) == tt.SMOKE_ARCH["vae"]["z_dim"]
    assert set(log["samples"]["metrics"]) >= {"generated", "data", "decoded_noise_latents", "pixel_noise"}
    assert result["weights_mib"]["total"] < 25
    index = json.loads((out / "model_index.json").read_text())
    assert index["tokenizer"] == ["transformers", "PreTrainedTokenizerFast"]

    pipe = WanPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae.config.latents_std == pytest.approx(log["latents_std"], rel=1e-2)
    video = pipe(prompt="a red square moves left over a blue striped background", num_frames=5, height=64, width=64,
                 num_inference_steps=2, guidance_scale=5.0, output_type="np",
                 generator=torch.Generator().manual_seed(0)).frames
    assert video.shape == (1, 5, 64, 64, 3)
    assert (video >= 0).all() and (video <= 1).all()

    # --resume continues the same run from the checkpoint
    tt.main(["--out", str(out), "--smoke", "--resume", "--dit-steps", "4", "--no-eval"])
    log = json.loads((out / "train_log.json").read_text())
    assert log["vae"]["steps"] == 2 and log["dit"]["steps"] == 4 and len(log["runs"]) == 2

    # --pack parts rebuild the pipeline folder
    files = tt.pack(out, tmp_path / "pack")
    parts = sorted(p for p in files if ".tar.part-" in p.name)
    assert parts and all(p.name.startswith("tiny_model.tar.part-") for p in parts)
    assert len(files) <= 4 and all(p.stat().st_size <= 15 * 2**20 for p in files)
    tar_path = tmp_path / "model.tar"
    tar_path.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(tar_path) as tar:
        tar.extractall(tmp_path / "unpacked")
    assert (tmp_path / "unpacked" / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "unpacked" / "samples.png").is_file()  # the images travel inside the tar


def test_smoke_training_of_the_small_preset(tmp_path, monkeypatch):
    """``--preset small`` at smoke sizes: its scenes and token length, a ``small_model`` pack of few files that
    ``build_small_pipeline`` loads."""
    from dit_sparse.pipelines.tiny import SMALL_ENV_VAR, build_small_pipeline

    out, pack_dir = tmp_path / "run", tmp_path / "pack"
    result = tt.main(["--out", str(out), "--smoke", "--preset", "small", "--pack", str(pack_dir), "--dit-steps", "2"])
    assert result["args"]["preset"] == "small" and result["args"]["token_length"] == 128
    assert result["dit"]["steps"] == 2 and "metrics" in result["samples"]
    files = sorted(p.name for p in pack_dir.iterdir())
    assert files == ["small_model.tar.part-00", "train_log.json"]
    with tarfile.open(pack_dir / "small_model.tar.part-00") as tar:
        tar.extractall(tmp_path / "unpacked")
    monkeypatch.setenv(SMALL_ENV_VAR, str(tmp_path / "unpacked"))
    pipe = build_small_pipeline()
    assert pipe._dit_sparse_tiny_source == str(tmp_path / "unpacked") and pipe.vae.dtype == torch.float32
