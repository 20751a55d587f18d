"""Train the ``tiny`` (or ``small``) text-to-video ``WanPipeline`` on procedural videos, on one GPU in minutes.

Usage::

    python -m dit_sparse.pipelines.train_tiny --out DIR [--preset {tiny,small}] [--minutes 9] [--vae-minutes 3]
        [--seed 0] [--frames 17 --height 256 --width 256] [--resume] [--init-from PIPELINE_DIR] [--pack PACK_DIR]
        [--smoke]

``--preset`` picks the architecture, the clip size, the scene statistics
(:data:`~dit_sparse.pipelines.synthetic_videos.STYLES`) and the batch / pool / evaluation defaults (explicit options
still win):

* ``tiny`` (default): the model described below, 17x256x256 clips (5x16x16 latents, 1,280 tokens), one to three
  shapes per clip;
* ``small``: the regime sparse attention is for, 33x384x640 clips (9x48x80 latents, 9x24x40 = 8,640 tokens): the same
  VAE and text encoder, a transformer of 7 layers, 6 heads x 64 = 384, ffn 1024 (15.2 M parameters; the whole bf16
  pipeline is ~36 MB), batch 16, two to eight shapes per clip, some crossing the frame or repeating another's look
  (``SMALL_STYLE``), captions tokenized to 128 tokens. Per training sample the transformer costs ~3.2 TFLOP
  (forward + backward) and ~3 GiB of saved activations in bf16 autocast (so batch 16 needs ~50 GiB of an H200, no
  gradient checkpointing; ``--grad-checkpointing`` trades compute for memory), while rendering a clip on the GPU is
  a few milliseconds and encoding it ~0.5 TFLOP of convolutions: with 4 fresh clips per step of 16 the data side is a
  few percent of the step. The VAE still trains on 9-frame 128x128 crops.

Every component is a stock Diffusers / transformers class, so the result is an ordinary ``WanPipeline`` folder
(``WanPipeline.from_pretrained(DIR)``) that runs the real generation path with a model that has learned something:

* ``AutoencoderKLWan`` (encoder base_dim 16, decoder base_dim 32, dim_mult (1, 2, 2, 2), z_dim 16, Wan's 4x
  temporal / 8x spatial compression),
  trained first for reconstruction (L1 + MSE + a small KL term, posterior samples; a re-initialisation that
  trains from scratch, see :func:`init_vae_weights`) on 9-frame 128x128 crops, after which its ``latents_mean`` /
  ``latents_std`` config are set to the measured per-channel latent statistics (WanPipeline normalises latents with
  them);
* ``WanTransformer3DModel`` (6 layers, 4 heads x 64 = 256, ffn 1024, patch (1, 2, 2)), trained by flow matching on
  VAE latents of the videos, encoded on the fly by the frozen encoder into a replay pool;
* ``UMT5EncoderModel`` (d_model 128, 2 layers) over a word-level tokenizer built from
  :data:`~dit_sparse.pipelines.synthetic_videos.VOCAB`, trained jointly with the transformer;
* ``UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)`` as Wan's.

Flow-matching convention (the one ``UniPCMultistepScheduler`` with ``flow_prediction`` inverts): ``x_t = (1 - s) x0
+ s noise``, the transformer sees ``timestep = 1000 s`` and predicts ``v = noise - x0``; the scheduler recovers
``x0 = x_t - s v``. Text is dropped (empty caption, which is WanPipeline's default negative prompt) 10% of the time so
classifier-free guidance works. The prompt embedding path mirrors ``WanPipeline._get_t5_prompt_embeds`` exactly
(embeddings of the padding positions zeroed, padded to 512).

Training is time-budgeted: it stops before ``--minutes`` (minus ``--reserve-seconds`` for the final save and samples),
saves a resumable checkpoint (``DIR/checkpoint/state.pt`` with optimizer states; ``--resume`` continues it), the
pipeline (bf16 weights, EMA of the transformer and text encoder) in ``DIR``, ``DIR/train_log.json`` (arguments, loss
curves, parameter counts, latent statistics, sample metrics), ``DIR/loss.png`` and ``DIR/samples.png`` (reference
clips and generated clips for two captions). The metrics compare generated videos with the training distribution and
with two noise baselines ("evidence that it learned"). ``--pack DIR2`` also writes the pipeline as a tar split into
parts of at most 15 MiB (``cat DIR2/tiny_model.tar.part-* | tar -x -C DEST``, ``small_model.tar.part-*`` for
``--preset small``; the PNGs are inside the tar) plus ``train_log.json``: at most four files for either preset, and
``--init-from PIPELINE_DIR`` continues training from such a saved pipeline (VAE frozen, fresh optimizer) when the
checkpoint is not at hand.

Runs are reproducible from ``--seed`` given the same number of steps (the data stream, timesteps and noise are derived
from the seed and the step; GPU kernels are not bitwise deterministic). ``--smoke`` runs a few steps of a much smaller
architecture on 5-frame 64x64 clips on a CPU in well under a minute (used by the tests; with ``--preset small`` it
keeps that preset's scenes, token length and pack name).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import random
import shutil
import sys
import tarfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from dit_sparse.pipelines.synthetic_videos import (
    COLORS,
    PALETTE,
    VOCAB,
    render_scenes,
    sample_batch,
    sample_scenes,
    shade,
)
from dit_sparse.pipelines.synthetic_videos import caption as scene_caption

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5 / UMT5
MAX_SEQUENCE_LENGTH = 512  # WanPipeline's default max_sequence_length
TOKEN_LENGTH = 96  # tiny: training tokenizes captions to this length (its captions are at most ~50 words)
NUM_TRAIN_TIMESTEPS = 1000
FLOW_SHIFT = 3.0
PIPELINE_PARTS = ("model_index.json", "scheduler", "text_encoder", "tokenizer", "transformer", "vae")

DEFAULT_ARCH = {
    "transformer": dict(
        patch_size=(1, 2, 2),
        num_attention_heads=4,
        attention_head_dim=64,
        in_channels=16,
        out_channels=16,
        text_dim=128,
        freq_dim=256,
        ffn_dim=1024,
        num_layers=6,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
    ),
    "vae": dict(
        base_dim=16,  # encoder width: it runs on every training clip of stage 2, so it is kept 4x cheaper
        decoder_base_dim=32,
        z_dim=16,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True],  # (sic, Diffusers' spelling): 4x temporal, 8x spatial like Wan
    ),
    "text_encoder": dict(
        d_model=128,
        d_kv=32,
        d_ff=512,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    ),
}
# The ``small`` model: tiny's VAE and text encoder, a wider and deeper transformer. 7 layers x (6 heads x 64, ffn 1024)
# is 15.2 M parameters, 30.4 MB in bf16, so the pipeline with the VAE (2.3 M, 4.5 MB) and text encoder (1.1 MB) is
# ~36 MB: three 15 MiB pack parts, and with tiny's ~21 MB it stays under the 64 MiB a GPU run returns. More layers
# rather than a wider ffn: the sparse methods act per layer.
SMALL_ARCH = {
    "transformer": {**DEFAULT_ARCH["transformer"], "num_attention_heads": 6, "ffn_dim": 1024, "num_layers": 7},
    "vae": dict(DEFAULT_ARCH["vae"]),
    "text_encoder": dict(DEFAULT_ARCH["text_encoder"]),
}
ARCHS = {"tiny": DEFAULT_ARCH, "small": SMALL_ARCH}
# Per-preset option defaults (explicit command-line options win; ``--smoke`` overrides the sizes of both).
PRESET_DEFAULTS = {
    "tiny": dict(frames=17, height=256, width=256),
    # 8,640 tokens a clip: batch 16 (~50 GiB of activations); 4 fresh clips a step keep rendering and encoding a few
    # percent of the step while the pool (~1.1 MB a latent) reuses each clip ~4 times. Evaluation at this size takes
    # ~30-60 s (4 prompts, 20 steps, CFG, full-size VAE decodes), hence the larger reserve. Captions of up to eight
    # shapes reach ~100 words, hence 128 tokens.
    "small": dict(frames=33, height=384, width=640, batch_size=16, pool=256, fresh=4, warmup=100, vae_minutes=2.0,
                  reserve_seconds=75.0, stat_clips=32, encode_chunk=4, eval_prompts=4, eval_batch=4,
                  token_length=128),
}
SMOKE_ARCH = {
    "transformer": {**DEFAULT_ARCH["transformer"], "num_attention_heads": 2, "in_channels": 8, "out_channels": 8,
                    "text_dim": 32, "freq_dim": 64, "ffn_dim": 256, "num_layers": 2, "rope_max_seq_len": 256},
    "vae": {**DEFAULT_ARCH["vae"], "base_dim": 4, "decoder_base_dim": 8, "z_dim": 8},
    "text_encoder": {**DEFAULT_ARCH["text_encoder"], "d_model": 32, "d_kv": 8, "d_ff": 64},
}


def log(msg: str) -> None:
    print(f"[train_tiny {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------------- components


def build_tokenizer():
    """Word-level T5-style fast tokenizer over ``VOCAB`` (``<pad>`` = 0, ``</s>`` = 1 appended, ``<unk>`` = 2).

    Supports what ``WanPipeline`` asks of it: ``tokenizer(prompts, padding="max_length", max_length=512,
    truncation=True, add_special_tokens=True, return_attention_mask=True, return_tensors="pt")``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in VOCAB:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=MAX_SEQUENCE_LENGTH,
        padding_side="right",
    )


def build_scheduler():
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=FLOW_SHIFT,
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
    )


def build_models(arch: dict, vocab_size: int, seed: int):
    """Random ``(vae, transformer, text_encoder)`` in float32 from ``arch`` and ``seed``."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    z_dim = arch["vae"]["z_dim"]
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**arch["vae"], latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim)
    init_vae_weights(vae)
    torch.manual_seed(seed + 1)
    transformer = WanTransformer3DModel(**arch["transformer"])
    torch.manual_seed(seed + 2)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=vocab_size, **arch["text_encoder"]))
    return vae.float(), transformer.float(), text_encoder.float()


@torch.no_grad()
def init_vae_weights(vae, logvar: float = -6.0) -> None:
    """Re-initialise ``AutoencoderKLWan`` for training from scratch.

    With PyTorch's default init the latent signal shrinks through every convolution and the residual branches add
    input-independent structure, so at the start the decoder output hardly depends on the input and training with
    Adam collapses to the mean color for hundreds of steps (seen on the synthetic videos). Here: variance-preserving
    normal init (std 1/sqrt(fan_in), zero biases), the last convolution of every residual branch and the attention
    output projections zeroed (each block starts as its shortcut), and the posterior log-variance starting at
    ``logvar`` (std 0.05) so sampled latents carry the input from the first step.
    """
    from diffusers.models.autoencoders import autoencoder_kl_wan as wan_vae

    for m in vae.modules():
        if isinstance(m, (torch.nn.Conv3d, torch.nn.Conv2d)):
            torch.nn.init.normal_(m.weight, std=m.weight[0].numel() ** -0.5)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
    for m in vae.modules():
        if isinstance(m, getattr(wan_vae, "WanResidualBlock", ())):
            torch.nn.init.zeros_(m.conv2.weight)
        if isinstance(m, getattr(wan_vae, "WanAttentionBlock", ())):
            torch.nn.init.zeros_(m.proj.weight)
    z = vae.config.z_dim
    vae.quant_conv.weight[z:].zero_()
    vae.quant_conv.bias[z:].fill_(logvar)


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _dtype_kwarg(dtype: torch.dtype) -> dict:
    """``dtype=`` for Diffusers versions that renamed ``torch_dtype``, else ``torch_dtype=``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401

        return {"dtype": dtype}
    except ImportError:
        return {"torch_dtype": dtype}


def load_pipeline(path, device="cpu", dtype: torch.dtype = torch.float32):
    """Load a saved pipeline the way ``dit_sparse.pipelines.tiny`` does: transformer / text encoder in ``dtype``,
    the VAE in float32."""
    from diffusers import AutoencoderKLWan, WanPipeline

    vae = AutoencoderKLWan.from_pretrained(path, subfolder="vae", **_dtype_kwarg(torch.float32))
    pipe = WanPipeline.from_pretrained(path, vae=vae, **_dtype_kwarg(dtype))
    pipe.to(device)
    with _quiet_diffusers():
        pipe.vae.to(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextlib.contextmanager
def _quiet_diffusers():
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(verbosity)


# ------------------------------------------------------------------------------------- training-side conventions


def encode_prompts(text_encoder, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> torch.Tensor:
    """Prompt embeddings exactly as ``WanPipeline._get_t5_prompt_embeds`` makes them (for right-padded ids of any
    length): the encoder output with padding positions zeroed, zero-padded to ``max_sequence_length``."""
    hidden = text_encoder(input_ids, attention_mask).last_hidden_state
    hidden = hidden * attention_mask[..., None].to(hidden.dtype)
    return F.pad(hidden, (0, 0, 0, max_sequence_length - hidden.shape[1]))


def flow_matching_inputs(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor):
    """Rectified-flow training triple for ``UniPCMultistepScheduler(prediction_type="flow_prediction")``.

    ``x_t = (1 - sigma) x0 + sigma noise``; target velocity ``noise - x0``; transformer timestep ``1000 sigma``.
    The scheduler turns a prediction ``v`` at ``sigma`` back into ``x0 = x_t - sigma v``.
    """
    s = sigma.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    x_t = (1 - s) * x0 + s * noise
    return x_t, noise - x0, sigma * NUM_TRAIN_TIMESTEPS


def sample_sigmas(n: int, generator: torch.Generator, shift: float = FLOW_SHIFT) -> torch.Tensor:
    """Logit-normal(0, 1) noise levels, shifted towards high noise as the sampler's ``flow_shift`` does."""
    u = torch.sigmoid(torch.randn(n, generator=generator))
    return (shift * u / (1 + (shift - 1) * u)).clamp(1e-4, 1.0)


def vae_decode_raw(vae, z: torch.Tensor) -> torch.Tensor:
    """``AutoencoderKLWan`` decoding without the final clamp to [-1, 1] (so the loss has gradients everywhere)."""
    try:
        vae.clear_cache()
        x = vae.post_quant_conv(z)
        frames = []
        for i in range(z.shape[2]):
            vae._conv_idx = [0]
            frames.append(vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                                      first_chunk=i == 0))
        vae.clear_cache()
        return torch.cat(frames, 2)
    except (AttributeError, TypeError):  # a Diffusers version with other internals: the public (clamped) path
        return vae.decode(z).sample


def derived_seed(*parts) -> int:
    return random.Random(":".join(str(p) for p in parts)).getrandbits(62)


class EMA:
    """Exponential moving average of parameters (decay warmed up as ``min(decay, (1 + n) / (10 + n))``)."""

    def __init__(self, params: Sequence[torch.nn.Parameter], decay: float):
        self.decay = decay
        self.shadow = [p.detach().clone().float() for p in params]

    @torch.no_grad()
    def update(self, params: Sequence[torch.nn.Parameter], step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in params], 1 - d)

    @torch.no_grad()
    def copy_to(self, params: Sequence[torch.nn.Parameter]) -> None:
        for s, p in zip(self.shadow, params):
            p.copy_(s.to(p.dtype))


# ------------------------------------------------------------------------------------------------------ metrics


def _gray(frames: torch.Tensor) -> torch.Tensor:
    """(..., H, W, 3) in [0, 1] -> (..., H, W)."""
    return frames[..., 0] * 0.299 + frames[..., 1] * 0.587 + frames[..., 2] * 0.114


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of grayscale images (N, H, W) in [0, 1] (11x11 Gaussian window, sigma 1.5), one value per image."""
    a, b = a[:, None].float(), b[:, None].float()
    size = min(11, a.shape[-1], a.shape[-2])
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * 1.5**2))
    g = (g / g.sum()).to(a.device)
    win = (g[:, None] * g[None, :])[None, None]

    def filt(t):
        return F.conv2d(t, win)

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return m.mean(dim=(1, 2, 3)).float()


def _reference_colors() -> Tuple[torch.Tensor, List[str]]:
    rgb, names = [], []
    for name in COLORS:
        rgb += [PALETTE[name], shade(PALETTE[name])]
        names += [name, name]
    return torch.tensor(rgb), names


def video_metrics(videos: torch.Tensor, captions: Optional[Sequence[str]] = None,
                  device: Optional[torch.device] = None) -> Dict[str, float]:
    """Structure statistics of videos (N, F, H, W, 3) in [0, 1], computed one video at a time on ``device``.

    * ``temporal_ssim``: mean SSIM of consecutive frames (high for coherent video, ~0 for noise);
    * ``frame_diff``: mean absolute difference of consecutive frames (motion; large for noise);
    * ``palette_fraction``: fraction of pixels within 0.15 (RGB distance) of a palette color or its pattern shade;
    * ``caption_color_agreement`` (with captions): among those pixels, the fraction whose nearest named color is one
      the caption mentions, and ``..._shuffled``: the same against the caption of another video (chance level).
    """
    device = device or videos.device
    ref, names = _reference_colors()
    ref = ref.to(device)
    ref_label = torch.tensor([COLORS.index(n) for n in names], device=device)
    n = videos.shape[0]
    ssims, diffs, fractions, labels, closes = [], [], [], [], []
    for video in videos:
        v = video.to(device).float().clamp(0, 1)
        if v.shape[0] > 1:
            gray = _gray(v)
            ssims.append(float(ssim(gray[:-1], gray[1:]).mean()))
            diffs.append(float((v[1:] - v[:-1]).abs().mean()))
        dmin, idx = torch.cdist(v.reshape(-1, 3), ref).min(-1)
        close = dmin < 0.15
        fractions.append(float(close.float().mean()))
        labels.append(ref_label[idx])
        closes.append(close)
    out: Dict[str, float] = {}
    if ssims:
        out["temporal_ssim"] = float(np.mean(ssims))
        out["frame_diff"] = float(np.mean(diffs))
    out["palette_fraction"] = float(np.mean(fractions))
    if captions is not None:

        def agreement(caps):
            vals = []
            for cap, label, close in zip(caps, labels, closes):
                wanted = torch.tensor([c in cap.split() for c in COLORS], device=device)
                vals.append(float((wanted[label] & close).sum()) / max(float(close.sum()), 1.0))
            return float(np.mean(vals))

        out["caption_color_agreement"] = agreement(captions)
        if n > 1:
            out["caption_color_agreement_shuffled"] = agreement(list(captions[1:]) + [captions[0]])
    return out


# ------------------------------------------------------------------------------------------------------ trainer


class TinyTrainer:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.t_start = time.monotonic()
        self.deadline = self.t_start + args.minutes * 60 - args.reserve_seconds
        self.device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available()
                                                                              else "cpu"))
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        self.out = Path(args.out)
        self.ckpt_path = self.out / "checkpoint" / "state.pt"
        self.tokenizer = build_tokenizer()
        state = None
        if args.resume:
            if not self.ckpt_path.is_file():
                raise FileNotFoundError(f"--resume: no checkpoint at {self.ckpt_path}")
            state = torch.load(self.ckpt_path, map_location="cpu", weights_only=False)
            log(f"resuming from {self.ckpt_path}: vae step {state['vae_step']}, dit step {state['dit_step']}")
        self.arch = state["arch"] if state else copy.deepcopy(SMOKE_ARCH if args.smoke else ARCHS[args.preset])
        self.vae, self.transformer, self.text_encoder = build_models(self.arch, len(self.tokenizer), args.seed)
        self.history = {"vae": [], "dit": [], "runs": []}
        self.vae_step = self.dit_step = 0
        self.vae_seconds = self.dit_seconds = 0.0
        self.latents_mean: Optional[List[float]] = None
        self.latents_std: Optional[List[float]] = None
        self.vae_opt_state = self.dit_opt_state = None
        self.ema_state = None
        self.vae_eval: Dict[str, float] = {}
        self.vae_frozen = False  # set once the transformer trains on its latents
        if state:
            self.vae.load_state_dict(state["vae"])
            self.transformer.load_state_dict(state["transformer"])
            self.text_encoder.load_state_dict(state["text_encoder"])
            for key in ("vae_step", "dit_step", "vae_seconds", "dit_seconds", "latents_mean", "latents_std",
                        "history", "vae_eval", "vae_frozen"):
                setattr(self, key, state[key])
            self.vae_opt_state, self.dit_opt_state, self.ema_state = state["vae_opt"], state["dit_opt"], state["ema"]
        elif args.init_from:
            self._init_from_pipeline(args.init_from)
        if args.grad_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.vae.to(self.device)
        self.transformer.to(self.device)
        self.text_encoder.to(self.device)
        self.empty_ids = self.tokenize([""])
        self.history["runs"].append({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:],
                                     "device": self._device_name()})

    # --------------------------------------------------------------------------------------------- helpers

    def _device_name(self) -> str:
        return torch.cuda.get_device_name(self.device) if self.cuda else "cpu"

    def _init_from_pipeline(self, path) -> None:
        """Start from a saved pipeline (VAE frozen with its latent statistics; transformer / text encoder weights)."""
        pipe = load_pipeline(path, "cpu", torch.float32)
        self.arch = {
            "transformer": {k: v for k, v in dict(pipe.transformer.config).items() if not k.startswith("_")},
            "vae": {k: v for k, v in dict(pipe.vae.config).items()
                    if not k.startswith("_") and k not in ("latents_mean", "latents_std")},
            "text_encoder": {k: getattr(pipe.text_encoder.config, k) for k in DEFAULT_ARCH["text_encoder"]},
        }
        self.vae, self.transformer, self.text_encoder = pipe.vae.float(), pipe.transformer.float(), \
            pipe.text_encoder.float()
        self.latents_mean = list(pipe.vae.config.latents_mean)
        self.latents_std = list(pipe.vae.config.latents_std)
        self.vae_frozen = True
        log(f"initialised from pipeline {path} (VAE frozen)")

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def tokenize(self, captions: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(captions), padding="max_length", max_length=self.args.token_length, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        return enc.input_ids.to(self.device), enc.attention_mask.to(self.device)

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else torch.autocast("cpu", enabled=False)

    def _latent_norm(self):
        z = self.arch["vae"]["z_dim"]
        mean = torch.tensor(self.latents_mean, device=self.device).view(1, z, 1, 1, 1)
        std = torch.tensor(self.latents_std, device=self.device).view(1, z, 1, 1, 1)
        return mean, std

    def videos(self, n: int, frames: int, height: int, width: int, *stream) -> Tuple[torch.Tensor, List[str]]:
        """``n`` clips of the preset's scene style, rendered on the device ``--encode-chunk`` clips at a time (a
        33x384x640 clip has 8 M pixels a channel: rendering many at once would need tens of GiB of temporaries)."""
        scenes = sample_scenes(n, derived_seed(self.args.seed, *stream), style=self.args.preset)
        chunk = max(1, self.args.encode_chunk)
        x = torch.cat([render_scenes(scenes[i : i + chunk], frames, height, width, device=self.device)
                       for i in range(0, n, chunk)])
        return x, [scene_caption(sc) for sc in scenes]

    @torch.no_grad()
    def encode_latents(self, videos: torch.Tensor) -> torch.Tensor:
        """Normalised latents (posterior means) of videos, in float32."""
        self.vae.eval()
        chunks = []
        for part in videos.split(self.args.encode_chunk):
            with self.autocast():
                chunks.append(self.vae.encode(part).latent_dist.mean.float())
        z = torch.cat(chunks)
        mean, std = self._latent_norm()
        return (z - mean) / std

    # ----------------------------------------------------------------------------------------- VAE stage

    def vae_budget_left(self) -> float:
        return self.args.vae_minutes * 60 - self.vae_seconds

    def train_vae(self) -> bool:
        """Stage 1 (until ``--vae-minutes`` of VAE training in all runs, or ``--vae-steps``); True if it trained."""
        a = self.args
        if self.vae_frozen or self.dit_step > 0 or self.vae_budget_left() <= 0 or self.remaining() <= 0:
            return False
        if a.vae_steps is not None and self.vae_step >= a.vae_steps:
            return False
        params = list(self.vae.parameters())
        opt = torch.optim.AdamW(params, lr=a.vae_lr, betas=(0.9, 0.99), weight_decay=0.0, **self._fused())
        if self.vae_opt_state is not None:
            opt.load_state_dict(self.vae_opt_state)
        crop = min(a.vae_crop, a.height, a.width)
        frames = min(a.vae_frames, a.frames)
        log(f"stage 1: VAE ({param_count(self.vae) / 1e6:.2f} M params) on {a.vae_batch} x {frames}x{crop}x{crop} "
            f"crops, {self.vae_budget_left():.0f} s of VAE budget left")
        self.vae.train()
        t_stage = t_log = last_ckpt = time.monotonic()
        steps_this_run = 0
        while True:
            if self.vae_seconds + time.monotonic() - t_stage >= a.vae_minutes * 60 or self.remaining() <= 0:
                break
            if a.vae_steps is not None and self.vae_step >= a.vae_steps:
                break
            step = self.vae_step
            x, _ = self.videos(a.vae_batch, frames, a.height, a.width, "vae", step)
            rng = random.Random(derived_seed(a.seed, "crop", step))
            top = rng.randrange(0, a.height - crop + 1, 8)
            left = rng.randrange(0, a.width - crop + 1, 8)
            x = x[..., top : top + crop, left : left + crop]
            # linear warmup, then cosine decay to 10% over the VAE time budget (all runs together)
            progress = min(1.0, (self.vae_seconds + time.monotonic() - t_stage) / max(a.vae_minutes * 60, 1e-9))
            lr = a.vae_lr * min(1.0, (step + 1) / a.vae_warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))
            for group in opt.param_groups:
                group["lr"] = lr
            gen = torch.Generator(device=self.device).manual_seed(derived_seed(a.seed, "vae-noise", step))
            with self.autocast():
                post = self.vae.encode(x).latent_dist
                eps = torch.randn(post.mean.shape, generator=gen, device=self.device, dtype=post.mean.dtype)
                rec = vae_decode_raw(self.vae, post.mean + post.std * eps)
            rec = rec.float()
            l1 = (rec - x).abs().mean()
            mse = ((rec - x) ** 2).mean()
            kl = 0.5 * (post.mean.float() ** 2 + post.var.float() - 1.0 - post.logvar.float()).mean()
            loss = l1 + mse + a.vae_kl * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            self.vae_step += 1
            steps_this_run += 1
            if self.vae_step % a.log_every == 0 or self.vae_step == 1:
                self.history["vae"].append([self.vae_step, float(l1.detach()), float(kl.detach())])
            if time.monotonic() - t_log > a.print_seconds or steps_this_run == 1:
                dt = time.monotonic() - t_stage
                log(f"vae step {self.vae_step}: l1 {l1.item():.4f} mse {mse.item():.5f} kl {kl.item():.2f} "
                    f"lr {lr:.2e} ({steps_this_run / max(dt, 1e-9):.2f} it/s){self._mem()}")
                t_log = time.monotonic()
            if time.monotonic() - last_ckpt > a.ckpt_minutes * 60:
                self.vae_opt_state = opt.state_dict()
                self.save_checkpoint(extra_vae_seconds=time.monotonic() - t_stage)
                last_ckpt = time.monotonic()
        self.vae_seconds += time.monotonic() - t_stage
        self.vae_opt_state = opt.state_dict()
        self.vae.eval()
        log(f"stage 1 done: {self.vae_step} VAE steps, {self.vae_seconds:.0f} s in all")
        return steps_this_run > 0

    @torch.no_grad()
    def measure_latent_stats(self) -> None:
        """Per-channel mean / std of the (unnormalised) latents of fresh full-size clips, and reconstruction PSNR."""
        a = self.args
        self.vae.eval()
        zs, psnr = [], []
        n = a.stat_clips
        for i in range(0, n, a.encode_chunk):
            x, _ = self.videos(min(a.encode_chunk, n - i), a.frames, a.height, a.width, "stats", i)
            with self.autocast():
                z = self.vae.encode(x).latent_dist.mean.float()
            zs.append(z)
            if i == 0:
                rec = self.vae.decode(z).sample.float()
                mse = ((rec - x) ** 2).mean(dim=(1, 2, 3, 4))  # on [-1, 1]: peak-to-peak 2
                psnr += (10 * torch.log10(4.0 / mse.clamp(min=1e-10))).tolist()
        z = torch.cat(zs).transpose(0, 1).flatten(1)  # (C, N)
        self.latents_mean = z.mean(1).tolist()
        self.latents_std = z.std(1).clamp(min=1e-4).tolist()
        self.vae_eval = {"recon_psnr_db": float(np.mean(psnr)), "clips": n}
        log(f"latent stats from {n} clips: mean {np.round(self.latents_mean, 2).tolist()} std "
            f"{np.round(self.latents_std, 2).tolist()}; VAE reconstruction PSNR {self.vae_eval['recon_psnr_db']:.1f}"
            " dB")

    # ----------------------------------------------------------------------------------------- DiT stage

    def _fused(self) -> dict:
        return {"fused": True} if self.cuda else {}

    def _mem(self) -> str:
        return f", max mem {torch.cuda.max_memory_allocated(self.device) / 2**30:.1f} GiB" if self.cuda else ""

    def dit_params(self) -> List[torch.nn.Parameter]:
        return list(self.transformer.parameters()) + list(self.text_encoder.parameters())

    def train_dit(self) -> None:
        a = self.args
        params = self.dit_params()
        opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.99), weight_decay=a.weight_decay, **self._fused())
        if self.dit_opt_state is not None:
            opt.load_state_dict(self.dit_opt_state)
        ema = EMA(params, a.ema)
        if self.ema_state is not None:
            ema.shadow = [s.to(self.device) for s in self.ema_state]
        self.ema = ema
        if self.remaining() <= 0 or (a.dit_steps is not None and self.dit_step >= a.dit_steps):
            return
        self.vae_frozen = True
        n_tok = (a.frames - 1) // 4 + 1
        patch = self.arch["transformer"]["patch_size"]
        tokens = n_tok * (a.height // 8 // patch[1]) * (a.width // 8 // patch[2])
        log(f"stage 2: transformer ({param_count(self.transformer) / 1e6:.2f} M) + text encoder "
            f"({param_count(self.text_encoder) / 1e6:.2f} M), batch {a.batch_size} x {tokens} tokens "
            f"({a.frames}x{a.height}x{a.width}), {self.remaining():.0f} s left")
        # replay pool of normalised latents and caption ids, refreshed with `fresh` new clips a step
        pool = max(a.pool, a.batch_size)
        fresh = max(1, min(a.fresh, pool))
        pool_lat = pool_ids = pool_mask = None
        filled, cursor = 0, 0
        self.transformer.train()
        self.text_encoder.train()
        t_stage = t_log = last_ckpt = time.monotonic()
        recent: List[float] = []
        steps_this_run = 0
        while self.remaining() > 0 and (a.dit_steps is None or self.dit_step < a.dit_steps):
            step = self.dit_step
            # refresh the pool (fill it first)
            n_new = fresh if filled >= a.batch_size else a.batch_size
            x, caps = self.videos(n_new, a.frames, a.height, a.width, "dit", step, n_new)
            lat = self.encode_latents(x).to(torch.bfloat16 if self.cuda else torch.float32)
            ids, mask = self.tokenize(caps)
            if pool_lat is None:
                pool_lat = torch.empty((pool, *lat.shape[1:]), dtype=lat.dtype, device=self.device)
                pool_ids = torch.empty((pool, a.token_length), dtype=ids.dtype, device=self.device)
                pool_mask = torch.empty((pool, a.token_length), dtype=mask.dtype, device=self.device)
            where = (torch.arange(n_new, device=self.device) + cursor) % pool
            pool_lat[where], pool_ids[where], pool_mask[where] = lat, ids, mask
            cursor = (cursor + n_new) % pool
            filled = min(pool, filled + n_new)

            g = torch.Generator().manual_seed(derived_seed(a.seed, "dit-batch", step))
            pick = torch.randint(0, filled, (a.batch_size,), generator=g).to(self.device)
            x0 = pool_lat[pick].float()
            ids, mask = pool_ids[pick].clone(), pool_mask[pick].clone()
            drop = (torch.rand(a.batch_size, generator=g) < a.cfg_dropout).to(self.device)
            ids[drop], mask[drop] = self.empty_ids[0][0], self.empty_ids[1][0]
            sigma = sample_sigmas(a.batch_size, g).to(self.device)
            gn = torch.Generator(device=self.device).manual_seed(derived_seed(a.seed, "dit-noise", step))
            noise = torch.randn(x0.shape, generator=gn, device=self.device)
            x_t, target, timestep = flow_matching_inputs(x0, noise, sigma)

            lr = a.lr * min(1.0, (step + 1) / a.warmup)
            for group in opt.param_groups:
                group["lr"] = lr
            with self.autocast():
                emb = encode_prompts(self.text_encoder, ids, mask)
                pred = self.transformer(hidden_states=x_t, timestep=timestep, encoder_hidden_states=emb,
                                        return_dict=False)[0]
            loss = F.mse_loss(pred.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, a.grad_clip)
            opt.step()
            ema.update(params, self.dit_step)
            self.dit_step += 1
            steps_this_run += 1
            recent.append(loss.detach())
            if self.dit_step % a.log_every == 0 or self.dit_step == 1:
                value = float(torch.stack(recent).mean())
                recent = []
                self.history["dit"].append([self.dit_step, value])
            if time.monotonic() - t_log > a.print_seconds or self.dit_step == 1:
                dt = time.monotonic() - t_stage
                last = self.history["dit"][-1][1] if self.history["dit"] else float("nan")
                log(f"dit step {self.dit_step}: loss {last:.4f} (now {loss.item():.4f}) grad {grad_norm.item():.2f}"
                    f" lr {lr:.2e} ({steps_this_run / max(dt, 1e-9):.2f} it/s, {self.remaining():.0f} s left)"
                    f"{self._mem()}")
                t_log = time.monotonic()
            if time.monotonic() - last_ckpt > a.ckpt_minutes * 60:
                self.dit_opt_state = opt.state_dict()
                self.save_checkpoint(extra_dit_seconds=time.monotonic() - t_stage)
                last_ckpt = time.monotonic()
        self.dit_seconds += time.monotonic() - t_stage
        self.dit_opt_state = opt.state_dict()
        self.transformer.eval()
        self.text_encoder.eval()
        log(f"stage 2 stopped: {self.dit_step} transformer steps in all ({steps_this_run} this run)")

    # ------------------------------------------------------------------------------------------ saving

    def save_checkpoint(self, extra_vae_seconds: float = 0.0, extra_dit_seconds: float = 0.0) -> None:
        ema = getattr(self, "ema", None)
        state = {
            "version": 1,
            "arch": self.arch,
            "seed": self.args.seed,
            "vae": self.vae.state_dict(),
            "transformer": self.transformer.state_dict(),
            "text_encoder": self.text_encoder.state_dict(),
            "vae_opt": self.vae_opt_state,
            "dit_opt": self.dit_opt_state,
            "ema": [s.cpu() for s in ema.shadow] if ema is not None else self.ema_state,
            "vae_step": self.vae_step,
            "dit_step": self.dit_step,
            "vae_seconds": self.vae_seconds + extra_vae_seconds,
            "dit_seconds": self.dit_seconds + extra_dit_seconds,
            "latents_mean": self.latents_mean,
            "latents_std": self.latents_std,
            "vae_frozen": self.vae_frozen,
            "history": self.history,
            "vae_eval": self.vae_eval,
        }
        self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.ckpt_path)
        log(f"checkpoint saved to {self.ckpt_path} ({self.ckpt_path.stat().st_size / 2**20:.0f} MiB)")

    def save_pipeline(self) -> Dict[str, float]:
        """Save the EMA transformer / text encoder and the VAE (with its latent statistics) in bf16 as a
        ``WanPipeline`` folder in ``--out``."""
        from diffusers import WanPipeline

        transformer = copy.deepcopy(self.transformer).cpu()
        text_encoder = copy.deepcopy(self.text_encoder).cpu()
        ema = getattr(self, "ema", None)
        if ema is not None:
            ema.copy_to(list(transformer.parameters()) + list(text_encoder.parameters()))
        vae = copy.deepcopy(self.vae).cpu()
        vae.register_to_config(latents_mean=[float(v) for v in self.latents_mean],
                               latents_std=[float(v) for v in self.latents_std])
        dtype = torch.float32 if self.args.save_fp32 else torch.bfloat16
        with _quiet_diffusers():  # whole models cast to bf16 on purpose: no keep-in-fp32 warnings
            pipe = WanPipeline(tokenizer=self.tokenizer, text_encoder=text_encoder.to(dtype).eval(),
                               vae=vae.to(dtype).eval(), scheduler=build_scheduler(),
                               transformer=transformer.to(dtype).eval())
        self.out.mkdir(parents=True, exist_ok=True)
        for part in PIPELINE_PARTS:  # drop a stale pipeline first
            p = self.out / part
            if p.is_dir():
                shutil.rmtree(p)
        pipe.save_pretrained(self.out, safe_serialization=True)
        _portable_tokenizer_class(self.out)
        sizes = {part: sum(f.stat().st_size for f in (self.out / part).rglob("*.safetensors")) / 2**20
                 for part in ("transformer", "vae", "text_encoder")}
        sizes["total"] = sum(sizes.values())
        log(f"pipeline saved to {self.out} ({sizes['total']:.1f} MiB of weights)")
        return sizes

    # ---------------------------------------------------------------------------------------- evaluation

    @torch.no_grad()
    def evaluate(self) -> dict:
        return evaluate_pipeline(self.out, self.args, self.device)


def _portable_tokenizer_class(out: Path) -> None:
    """Record the tokenizer as ``PreTrainedTokenizerFast`` (transformers 5 writes its new ``TokenizersBackend``
    name, which transformers 4 cannot load; both versions load ``PreTrainedTokenizerFast``)."""
    index = out / "model_index.json"
    data = json.loads(index.read_text())
    data["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
    index.write_text(json.dumps(data, indent=2) + "\n")
    cfg = out / "tokenizer" / "tokenizer_config.json"
    if cfg.is_file():
        tc = json.loads(cfg.read_text())
        tc["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg.write_text(json.dumps(tc, indent=2) + "\n")


@torch.no_grad()
def evaluate_pipeline(path, args: argparse.Namespace, device: torch.device) -> dict:
    """Generate clips for held-out captions with the saved pipeline, save ``samples.png`` and return metrics."""
    path = Path(path)
    cuda = device.type == "cuda"
    pipe = load_pipeline(path, device, torch.bfloat16 if cuda else torch.float32)
    n = max(args.eval_prompts, 2)
    ref, captions = sample_batch(n, args.frames, args.height, args.width, seed=derived_seed(args.seed, "eval"),
                                 device=device, style=getattr(args, "preset", "tiny"))
    t0 = time.monotonic()
    frames = []
    for i in range(0, n, args.eval_batch):
        gens = [torch.Generator("cpu").manual_seed(derived_seed(args.seed, "eval-gen", j))
                for j in range(i, min(n, i + args.eval_batch))]
        out = pipe(prompt=captions[i : i + args.eval_batch], num_frames=args.frames, height=args.height,
                   width=args.width, num_inference_steps=args.eval_steps, guidance_scale=args.guidance,
                   generator=gens, output_type="pt")
        frames.append(out.frames.float().cpu())  # (B, F, 3, H, W) in [0, 1]
    gen = torch.cat(frames).permute(0, 1, 3, 4, 2).contiguous()  # (N, F, H, W, 3)
    gen_seconds = time.monotonic() - t0
    data = ((ref.float().cpu() + 1) / 2).permute(0, 2, 3, 4, 1).contiguous()
    # baselines: what the VAE decodes from pure-noise latents (an untrained transformer's output) and pixel noise
    vae = pipe.vae
    z_dim = vae.config.z_dim
    lat_shape = (n, z_dim, (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    noise = torch.randn(lat_shape, generator=torch.Generator().manual_seed(derived_seed(args.seed, "eval-noise")))
    mean = torch.tensor(vae.config.latents_mean).view(1, z_dim, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, z_dim, 1, 1, 1)
    noise_dec = []
    recon = []
    for i in range(0, n, args.eval_batch):
        z = (noise[i : i + args.eval_batch] * std + mean).to(device)
        noise_dec.append(((vae.decode(z).sample.float().cpu() + 1) / 2).permute(0, 2, 3, 4, 1))
        post = vae.encode(ref[i : i + args.eval_batch].float()).latent_dist.mean
        recon.append(((vae.decode(post).sample.float().cpu() + 1) / 2).permute(0, 2, 3, 4, 1))
    noise_dec = torch.cat(noise_dec)
    recon = torch.cat(recon)
    pixel_noise = torch.rand(data.shape, generator=torch.Generator().manual_seed(derived_seed(args.seed, "pix")))
    metrics = {
        name: video_metrics(v, captions, device)
        for name, v in (("generated", gen), ("data", data), ("vae_reconstruction", recon),
                        ("decoded_noise_latents", noise_dec), ("pixel_noise", pixel_noise))
    }
    # similarity of each generated clip to the training clip of its caption is not expected (different seeds), but
    # a trained model's clips should match the data statistics far better than the noise baselines
    result = {
        "prompts": captions,
        "num_inference_steps": args.eval_steps,
        "guidance_scale": args.guidance,
        "frames": args.frames,
        "height": args.height,
        "width": args.width,
        "generation_seconds": gen_seconds,
        "metrics": metrics,
    }
    save_sample_grid(path / "samples.png", captions[:2], data[:2], gen[:2])
    return result


def save_sample_grid(path: Path, captions: Sequence[str], data: torch.Tensor, gen: torch.Tensor,
                     max_cols: int = 9, max_frame_width: int = 256) -> None:
    """PNG grid: for each caption a row of reference frames (training distribution) and a row of generated ones.

    Frames wider than ``max_frame_width`` are shrunk (the ``small`` preset's 640-wide frames would make a grid of
    several MB, and it travels back from the GPU machine in a size-limited pack)."""
    from PIL import Image, ImageDraw

    f = data.shape[1]
    cols = np.unique(np.linspace(0, f - 1, min(max_cols, f)).round().astype(int))
    h, w = data.shape[2:4]
    scale = min(1.0, max_frame_width / w)
    h, w = max(1, round(h * scale)), max(1, round(w * scale))
    text_h = 14
    rows = []
    for cap, d, g in zip(captions, data, gen):
        for label, vid in (("training data", d), ("generated", g)):
            frames = [Image.fromarray((vid[c].numpy().clip(0, 1) * 255).round().astype(np.uint8)) for c in cols]
            strip = np.concatenate([np.asarray(fr.resize((w, h), Image.BILINEAR) if scale < 1 else fr)
                                    for fr in frames], axis=1)
            img = Image.new("RGB", (strip.shape[1], h + text_h), (255, 255, 255))
            img.paste(Image.fromarray(strip), (0, text_h))
            ImageDraw.Draw(img).text((2, 1), f"{label}: {cap}", fill=(0, 0, 0))
            rows.append(np.asarray(img))
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def save_loss_plot(path: Path, history: dict) -> None:
    curves = [(name, np.asarray(history[name], dtype=float)) for name in ("vae", "dit") if history.get(name)]
    if not curves:
        return
    titles = {"vae": "VAE L1 reconstruction loss", "dit": "transformer flow-matching loss"}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plain fallback without matplotlib
        _save_loss_plot_pil(path, curves, titles)
        return
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.5), squeeze=False)
    for ax, (name, c) in zip(axes[0], curves):
        ax.plot(c[:, 0], c[:, 1])
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(titles[name])
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _save_loss_plot_pil(path: Path, curves, titles) -> None:
    from PIL import Image, ImageDraw

    W, H, pad = 500, 300, 30
    img = Image.new("RGB", (W * len(curves), H), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for k, (name, c) in enumerate(curves):
        x, y = c[:, 0], np.log10(np.maximum(c[:, 1], 1e-12))
        x = (x - x.min()) / max(np.ptp(x), 1e-9)
        y = (y - y.min()) / max(np.ptp(y), 1e-9)
        pts = [(k * W + pad + xi * (W - 2 * pad), H - pad - yi * (H - 2 * pad)) for xi, yi in zip(x, y)]
        if len(pts) > 1:
            draw.line(pts, fill=(31, 119, 180), width=2)
        draw.text((k * W + pad, 5), f"{titles[name]} (log scale)", fill=(0, 0, 0))
    img.save(path)


def pack(out: Path, dest: Path, part_mib: int = 15, name: str = "tiny_model") -> List[Path]:
    """Write the pipeline of ``out`` with its log and images as ``{name}.tar.part-NN`` files of at most ``part_mib``
    MiB, plus a copy of ``train_log.json``, into ``dest``; stale parts of the same name are removed first.

    The PNGs go inside the tar, not next to it, so a pack is few files (a GPU run returns only a handful): three for
    ``tiny`` (~21 MB), four for ``small`` (~36 MB). Rebuild with ``cat dest/{name}.tar.part-* | tar -x -C DIR``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for part in PIPELINE_PARTS + ("train_log.json", "loss.png", "samples.png"):
            if (out / part).exists():
                tar.add(out / part, arcname=part)
    data = buf.getvalue()
    size = part_mib * 2**20
    written = []
    for old in dest.glob(f"{name}.tar.part-*"):
        old.unlink()
    for i in range(0, len(data), size):
        p = dest / f"{name}.tar.part-{i // size:02d}"
        p.write_bytes(data[i : i + size])
        written.append(p)
    log_file = out / "train_log.json"
    if log_file.is_file() and log_file.resolve() != (dest / log_file.name).resolve():
        shutil.copyfile(log_file, dest / log_file.name)
        written.append(dest / log_file.name)
    return written


# ----------------------------------------------------------------------------------------------------------- CLI


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dit_sparse.pipelines.train_tiny", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder: the WanPipeline, checkpoint/, train_log.json, PNGs")
    p.add_argument("--preset", choices=sorted(ARCHS), default="tiny",
                   help="model and data: tiny (17x256x256, default) or small (33x384x640, 8,640 tokens)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint/state.pt")
    p.add_argument("--init-from", default=None, help="start from a saved pipeline folder (VAE kept frozen)")
    p.add_argument("--minutes", type=float, default=9.0, help="wall-clock budget of this invocation")
    p.add_argument("--vae-minutes", type=float, default=3.0, help="VAE training time, in all runs together")
    p.add_argument("--reserve-seconds", type=float, default=30.0, help="kept from --minutes for saving and samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--token-length", type=int, default=TOKEN_LENGTH, help="caption tokens in training")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and a few steps (CPU, < 1 minute)")
    # transformer stage
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--cfg-dropout", type=float, default=0.1)
    p.add_argument("--pool", type=int, default=512, help="replay pool of encoded clips (each is used ~4 times)")
    p.add_argument("--fresh", type=int, default=8, help="new clips generated and encoded a step")
    p.add_argument("--dit-steps", type=int, default=None, help="stop after this many transformer steps in all")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute transformer blocks in backward")
    # VAE stage
    p.add_argument("--vae-batch", type=int, default=8)
    p.add_argument("--vae-frames", type=int, default=9)
    p.add_argument("--vae-crop", type=int, default=128)
    p.add_argument("--vae-lr", type=float, default=2e-4)
    p.add_argument("--vae-warmup", type=int, default=100)
    p.add_argument("--vae-kl", type=float, default=1e-4)
    p.add_argument("--vae-steps", type=int, default=None, help="stop the VAE stage after this many steps in all")
    p.add_argument("--stat-clips", type=int, default=64, help="clips for the latent statistics")
    p.add_argument("--encode-chunk", type=int, default=16)
    # evaluation / output
    p.add_argument("--eval-prompts", type=int, default=8)
    p.add_argument("--eval-batch", type=int, default=8)
    p.add_argument("--eval-steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--eval-only", action="store_true", help="only evaluate the pipeline in OUT")
    p.add_argument("--no-eval", action="store_true", help="skip the samples and metrics after training")
    p.add_argument("--save-fp32", action="store_true", help="save float32 weights instead of bfloat16")
    p.add_argument("--pack", default=None, help="also write the pipeline as <=15 MiB tar parts + log/PNGs here")
    p.add_argument("--ckpt-minutes", type=float, default=3.0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--print-seconds", type=float, default=15.0)
    known = p.parse_known_args(argv)[0]
    p.set_defaults(**PRESET_DEFAULTS[known.preset])
    if known.smoke:  # smaller defaults; explicit options still win
        p.set_defaults(frames=5, height=64, width=64, batch_size=2, pool=4, fresh=2, warmup=1, vae_batch=2,
                       vae_frames=5, vae_crop=32, vae_warmup=1, vae_steps=2, dit_steps=3, stat_clips=2,
                       encode_chunk=2, eval_prompts=2, eval_batch=2, eval_steps=2, reserve_seconds=0.0, log_every=1,
                       print_seconds=0.0)
    args = p.parse_args(argv)
    if (args.frames - 1) % 4 or args.height % 16 or args.width % 16:
        p.error("--frames must be 4k + 1 and --height / --width multiples of 16")
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.eval_only:
        result = evaluate_pipeline(out, args, device)
        log(json.dumps(result["metrics"], indent=1))
        return result
    trainer = TinyTrainer(args)
    log(f"device {trainer._device_name()}, torch {torch.__version__}, seed {args.seed}, budget {args.minutes} min, "
        f"out {out}")
    trained_vae = trainer.train_vae()
    if trainer.latents_mean is None or (trained_vae and trainer.dit_step == 0):
        trainer.measure_latent_stats()
    trainer.train_dit()
    trainer.save_checkpoint()
    sizes = trainer.save_pipeline()
    counts = {"transformer": param_count(trainer.transformer), "vae": param_count(trainer.vae),
              "text_encoder": param_count(trainer.text_encoder)}
    counts["total"] = sum(counts.values())
    result = {
        "args": vars(args),
        "arch": trainer.arch,
        "param_counts": counts,
        "weights_mib": sizes,
        "vae": {"steps": trainer.vae_step, "seconds": trainer.vae_seconds, **trainer.vae_eval},
        "dit": {"steps": trainer.dit_step, "seconds": trainer.dit_seconds},
        "latents_mean": trainer.latents_mean,
        "latents_std": trainer.latents_std,
        "loss_curves": {"vae_l1": [c[:2] for c in trainer.history["vae"]], "dit": trainer.history["dit"],
                        "vae_kl": [[c[0], c[2]] for c in trainer.history["vae"]]},
        "runs": trainer.history["runs"],
        "versions": _versions(),
    }
    save_loss_plot(out / "loss.png", trainer.history)
    (out / "train_log.json").write_text(json.dumps(result, indent=1) + "\n")
    pack_name = f"{args.preset}_model"
    if args.pack:  # packed now as well, so a run killed during the evaluation still leaves its trained model
        pack(out, Path(args.pack), name=pack_name)
    try:
        result["samples"] = {"skipped": True} if args.no_eval else trainer.evaluate()
    except Exception as exc:  # the trained model is saved either way; report the failure in the log
        result["samples"] = {"error": repr(exc)}
        log(f"evaluation failed: {exc!r}")
    result["total_seconds"] = time.monotonic() - trainer.t_start
    if trainer.cuda:
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(trainer.device) / 2**30
    (out / "train_log.json").write_text(json.dumps(result, indent=1) + "\n")
    if "metrics" in result["samples"]:
        result["evidence"] = learning_evidence(result)
        (out / "train_log.json").write_text(json.dumps(result, indent=1) + "\n")
        m = result["samples"]["metrics"]
        log("metrics (temporal_ssim / palette_fraction / caption_color_agreement vs shuffled):")
        for name, v in m.items():
            log(f"  {name:24s} " + " ".join(f"{k}={val:.3f}" for k, val in v.items()))
    if args.pack:
        files = pack(out, Path(args.pack), name=pack_name)
        log(f"packed {len(files)} files into {args.pack}")
    log(f"done in {result['total_seconds']:.0f} s: {counts['total'] / 1e6:.2f} M params, {sizes['total']:.1f} MiB"
        + (f", peak GPU memory {result['max_memory_gib']:.1f} GiB" if trainer.cuda else ""))
    return result


def learning_evidence(result: dict) -> dict:
    """A compact summary of the signs that training worked (all inputs are in ``result``)."""
    m = result["samples"]["metrics"]
    gen, data, noise = m["generated"], m["data"], m["decoded_noise_latents"]
    dit = result["loss_curves"]["dit"]
    ev = {
        "dit_loss_first": dit[0][1] if dit else None,
        "dit_loss_last": dit[-1][1] if dit else None,
        "vae_recon_psnr_db": result["vae"].get("recon_psnr_db"),
        # share of pixels in the palette's colors: data ~ high, decoded noise latents ~ lower
        "palette_fraction": {"generated": gen["palette_fraction"], "data": data["palette_fraction"],
                             "decoded_noise_latents": noise["palette_fraction"]},
        # text conditioning: colors named in the caption vs those of another caption (chance)
        "caption_color_agreement": {"generated": gen.get("caption_color_agreement"),
                                    "generated_vs_shuffled_captions": gen.get("caption_color_agreement_shuffled"),
                                    "data": data.get("caption_color_agreement")},
    }
    if "temporal_ssim" in gen:
        ev["temporal_ssim"] = {"generated": gen["temporal_ssim"], "data": data["temporal_ssim"],
                               "pixel_noise": m["pixel_noise"]["temporal_ssim"]}
    return ev


def _versions() -> dict:
    import diffusers
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "python": sys.version.split()[0]}


__all__ = [
    "ARCHS",
    "DEFAULT_ARCH",
    "EMA",
    "PRESET_DEFAULTS",
    "SMALL_ARCH",
    "SMOKE_ARCH",
    "build_models",
    "build_scheduler",
    "build_tokenizer",
    "encode_prompts",
    "evaluate_pipeline",
    "flow_matching_inputs",
    "load_pipeline",
    "main",
    "pack",
    "sample_sigmas",
    "ssim",
    "video_metrics",
]

if __name__ == "__main__":
    main()
