"""Per-model presets: which pipeline class, native resolution and schedule, and tuned sparse settings per method.

The sparse settings follow the published recipes: Radial Attention keeps 12 of 50 steps dense (0.25) and the first
layer dense on Wan with decay 0.2, and uses decay 0.95 with no dense layer on HunyuanVideo; Sparse VideoGen2
(semantic) and DraftAttention keep the first 20-30 % of steps and the first layer dense.

Frame counts: the Wan and HunyuanVideo VAEs compress time 4x causally, so a video has ``4k + 1`` frames; heights and
widths must be multiples of 16 (8x VAE compression times the 2x2 patch). `check_video_size` says which nearby values
work instead.

Image models (FLUX.1-dev, Qwen-Image; ``kind="image"``) generate one picture: the same multiple-of-16 rule for height
and width (8x VAE compression times the 2x2 latent packing), no frame count. `check_size` applies the rule of the
preset's kind.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from ..config import EVERY_TILE

METHODS = ("dense", "radial", "semantic", "draft", "tile")
KINDS = ("video", "image")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelPreset:
    """Everything the CLI and the demo need to know about one model.

    Args:
        name (`str`): short name (``wan2.1-1.3b``, ``tiny``, ...).
        model_id (`str`): Hub id, local path or ``tiny``.
        family (`str`): ``"wan"``, ``"hunyuan_video"``, ``"flux"`` or ``"qwen_image"``.
        pipeline_class (`str`): the Diffusers pipeline class name.
        height, width, frames, steps (`int`): the model's native generation settings (``frames=1`` for images).
        guidance (`float`): ``guidance_scale`` (HunyuanVideo, FLUX.1-dev: the embedded guidance, no second CFG pass;
            Qwen-Image: ``true_cfg_scale``, real classifier-free guidance with a negative prompt).
        guidance_2 (`float`, *optional*): Wan 2.2's ``guidance_scale_2`` for the low-noise expert.
        flow_shift (`float`, *optional*): scheduler shift set at load time; `None` keeps the shipped scheduler config.
        dtype (`str`): dtype of the transformer (``"bfloat16"`` for the real models).
        vae_dtype (`str`): dtype of the VAE (float32 for Wan as Diffusers recommends, float16 for HunyuanVideo;
            the image pipelines load every component in the transformer's dtype, as Diffusers' examples do).
        fps (`int`): frame rate of the written mp4 (unused for images).
        frame_step (`int`): frames must be ``frame_step * k + 1``.
        size_multiple (`int`): height and width must be multiples of this.
        sparse (`dict`): per method, the recommended `dit_sparse.make_config` options.
        negative_prompt (`str`): default negative prompt.
        kind (`str`): ``"video"`` (written as an mp4) or ``"image"`` (one frame, written as a PNG).
    """

    name: str
    model_id: str
    family: str
    pipeline_class: str
    height: int
    width: int
    frames: int
    steps: int
    guidance: float
    guidance_2: Optional[float] = None
    flow_shift: Optional[float] = None
    dtype: str = "bfloat16"
    vae_dtype: str = "float32"
    fps: int = 16
    frame_step: int = 4
    size_multiple: int = 16
    sparse: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    negative_prompt: str = ""
    kind: str = "video"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(
                f"ModelPreset {self.name!r}: kind={self.kind!r} is not known; use one of {', '.join(KINDS)}"
            )

    @property
    def is_image(self) -> bool:
        return self.kind == "image"

    @property
    def suffix(self) -> str:
        """The file extension of what the preset generates: ``.png`` for an image model, ``.mp4`` for a video one."""
        return ".png" if self.is_image else ".mp4"

    def sparse_options(self, method: str) -> Dict[str, Any]:
        """The recommended `make_config` options of ``method`` for this model (a fresh dict)."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; known methods: {', '.join(METHODS)}")
        return dict(self.sparse.get(method, {}))

    def replace(self, **changes) -> "ModelPreset":
        return dataclasses.replace(self, **changes)


# Wan's default negative prompt (from the Wan 2.1 reference code, English translation used in Diffusers' examples).
WAN_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, overall "
    "gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly drawn hands, "
    "poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, messy background, three "
    "legs, many people in the background, walking backwards"
)

# Draft reuses its layout across sparse steps: it drifts little between steps (reuse penalty, error of a layout planned
# r steps earlier / a fresh one, on the trained small model: 1.00 at r = 1, 2 and 4, ``drift-small.json``; semantic's
# is 1.04 at r=2 and 1.11 at r=4), and the video agrees (small, 20 steps: 25.09 / 25.15 / 25.11 dB at r = 1 / 2 / 4;
# 10 steps: 23.69 / 23.60 / 23.48 dB, ``quality-small-draft-refresh-steps{20,10}.json``). Wan plans every 4th sparse
# step: planning (0.49 ms compiled) against attention (3.03 ms) per call at Wan-1.3B 480p is 16 % when planned every
# step, 8 % at r=2 and 4 % at r=4 (``2026-12-02_NVIDIA-H200_planning-compiled-vs-eager.json``; issue #13 asks <= 5 %).
# HunyuanVideo 720p plans every other step: 3.2 % per call there, 1.6 % at r=2. The kept layouts are int16-compact
# (`BlockLayout.compact`): draft-r2 peaks +1.17 GiB over dense at HunyuanVideo 720p with all 60 blocks
# (``2026-12-02_NVIDIA-H200_step-hunyuan-720p-full-depth.json``); the period does not change their size.
# Semantic plans every 3rd sparse step: its packed plan costs 59 / 27 / 19 % of its sparse attention per call at
# Wan-1.3B 480p / Wan-14B 720p / HunyuanVideo 720p when planned every call (2.1 / 11.1 / 10.2 ms on photographic q/k),
# so at r=3 (CFG branches sharing it on Wan) 9.8 / 4.4 / 6.3 % (``2026-12-04_NVIDIA-H200_pattern-*-semantic-r3.json``)
# against 15.8 / 6.8 / 9.5 % at r=2 (``...pattern-*-semantic-ordered-means.json``). The packed layout drifts more than
# the pieces did (reuse penalty 1.13 / 1.29 / 1.71 at r = 1 / 2 / 4, ``drift-small-packed.json``; the pieces' 1.01 /
# 1.04 / 1.11), but the video loses little: small at 768x1280 (Wan-14B's cluster size), 20 steps, 2 prompts, Wan's
# schedule with CFG sharing: 35.55 / 35.39 / 35.27 / 34.95 dB at r = 1 / 2 / 3 / 4
# (``quality-small-768p-semantic-packed-refresh.json``). r=4 would bring HunyuanVideo under 5 % (4.7 %) for another
# 0.3 dB; a step gains 0.5-1 % from r=2 to r=3 (HunyuanVideo 2.88x -> 2.91x, Wan-14B 1.81x -> 1.82x, Wan-1.3B 1.25x ->
# 1.27x, ``...step-*-semantic-ordered-means.json``).
# Its warm-started k-means (from the centroids of the last plan) runs one iteration, not two: the plan 10.4 -> 7.5 ms
# at HunyuanVideo 720p, 11.6 -> 7.9 ms at Wan-14B 720p (``2026-12-04_NVIDIA-H200_profile-semantic-packed-plan-
# sample.json``) for 0.11 dB on small (35.27 -> 35.16 dB, Wan's schedule at r=3, ``quality-small-768p-semantic-kmeans-
# sample.json``; the trained tiny model, CPU, 3 prompts: 28.65 -> 28.62 dB, ``quality-tiny-warm-iters-r3.json``).
# Fitting the first iteration on every 4th token (``kmeans_sample=4``) saved less (8.1 / 9.0 ms) and
# cost more (35.08 dB); every 2nd token: 35.25 dB. Planning per sparse call at these schedules is then 3.3 % (Wan-14B
# 720p) and 4.5 % (HunyuanVideo 720p) of the attention, 10.2 % at Wan-1.3B 480p, where the plan is bound by its
# launches (``2026-12-04_NVIDIA-H200_pattern-*-semantic-warm1.json``, ``...pattern-wan1.3b-480p-behind.json``); since
# session 22 (no host read on small layouts, two trims of the plan's GPU work) 2.9 % / 3.9 %, and 5.9 % at Wan-1.3B
# timed behind its attention call (``...pattern-*-semantic-plan-trims.json``); since session 23 (the clusters' means
# from the pieces' [q, k] sums: one pass over q and k fewer) 2.8 % / 3.9 %, and 4.3 % at Wan-1.3B behind its attention
# call (``...pattern-*-semantic-fused-pair-sums.json``).
# Its kept layouts are compact too (variable blocks: int16 key-piece lists, int32 orders).
# The tile pattern on video: 2x8x8 tiles (one 128-token block), a window of every frame and 3 x 3 tiles around the
# query in space. The Sliding-Tile-like cube (TileConfig's default 3x3x3 window) is worse than random blocks on the
# trained models' attention; a window over every frame is what their heads need (``oracle-small-tile.json``). On the
# trained small model, 20 steps: 29.0 dB vs dense video at density 0.60 (radial's preset 23.7 dB at 0.51, draft 25.1
# dB at 0.25; 2x8x8 with 1 x 3 tiles in space: 19.7 dB at 0.20; ``quality-small-tile.json``). Its density falls with
# the grid: 0.34 at Wan 480p, 0.15 at HunyuanVideo 720p. Their grids do not divide into 2x8x8 tiles: with one block
# per tile the edge blocks are partial and only our Triton kernel runs the layout (per step 1.25x dense at Wan-1.3B
# 480p, radial 1.67x; 3.20x at HunyuanVideo 720p, radial 2.99x; ``...step-{wan1.3b-480p,hunyuan-720p}-tile.json``),
# so the presets pack the edge tiles into full blocks (blocks="fixed": density 0.41 / 0.17) for FlashAttention-4
# (1.53x / 3.89x). The window counts tiles, so its share of the frame shrinks as the grid grows: on small, the
# window at Wan 480p's density (every frame x 2 x 3 tiles, 0.42) gives 23.89 dB (``quality-small-tile-wan-density-
# cpu.json``), below draft at 0.35 (27.83 dB): on the big grids draft is the better choice until tile is measured
# there.
VIDEO_TILE = {"dense_steps": 0.25, "dense_layers": 1, "tile": (2, 8, 8), "window": (EVERY_TILE, 3, 3),
              "blocks": "fixed"}
# Wan's dense steps and layers also run through our kernels (``fast_dense``): FlashAttention-4 with every block
# listed, q and k built by the fused QK-norm + RoPE kernel (`kernels.qk_norm_rope`), which the processors use on every
# call our kernels run (the stock prologue took 1.4-2.1 ms for q and k per call at Wan-1.3B 480p, the fused one 0.22;
# 10-15 ms against 1.1 at Wan-14B 720p, ``2026-12-02_NVIDIA-H200_prologue.json``). Dense steps are then exact
# attention but not Diffusers' bits; DenseConfig (and fast_dense=False) keeps those.
WAN_SPARSE = {
    "dense": {},
    "radial": {"dense_steps": 0.25, "dense_layers": 1, "decay": 0.2, "fast_dense": True},
    # Both CFG branches of a step run the layout the conditional branch planned (``share_cfg_layouts``): half the
    # planning, and on the trained small model (20 steps, 2 prompts, CFG 5) better video, semantic 31.01 -> 32.60 dB
    # and draft 25.42 -> 25.83 dB against dense (``quality-small-share-cfg.json``; tiny, 3 prompts: semantic 24.46 ->
    # 27.94 dB, draft 21.19 -> 21.84 dB, ``quality-tiny-share-cfg.json``): likely because with one layout the two
    # branches' sparsity errors are alike and largely cancel in the guidance difference cond - uncond.
    # Cluster pieces packed whole into 128-token fixed blocks (``pack_pieces``, clusters in a similarity order): the
    # pieces' selection, computed as a cover on FlashAttention-4's full-rate tiles. Per step, every step planned,
    # top_p 0.3 on random weights: Wan-14B 720p 1.65x dense at density 0.40 against 1.41x for the 64-token pieces on
    # Triton at 0.23 (yardstick 2.21x); Wan-1.3B 480p 1.05x against 1.00x (``2026-12-03_NVIDIA-H200_step-{wan14b-720p,
    # wan1.3b-480p}-semantic-packed.json``). Against dense video on the trained small model at Wan-14B's cluster size
    # (768x1280, 20 steps): 34.73 dB at density 0.54 against 32.59 / 33.17 dB for 128 / 128 and 128 / 64 pieces at
    # 0.44-0.45 (``quality-small-768p-semantic-packed.json``). The cover computes more than the pieces select (1.2x on
    # small's captured attention, ``oracle-small-packed-pieces.json``; 1.7-3.3x on random q/k, the step JSONs) but at
    # ~600 effective TFLOP/s where pieces run at 210-250.
    "semantic": {"dense_steps": 0.2, "dense_layers": 1, "top_p": 0.9, "refresh_every": 3, "warm_iters": 1,
                 "share_cfg_layouts": True, "block_size": 128, "pack_pieces": True, "cluster_order": "similarity",
                 "fast_dense": True},
    # Fewer dense steps at a higher density: on the trained small model (20 steps, 2 prompts,
    # ``quality-small-dense-steps.json``) density 0.35 with 10 % dense steps gives 26.09 dB against dense video where
    # 0.25 with 25 % gave 25.42, and Wan-1.3B 480p's steps imply 1.49x end to end against 1.41x for the 0.25 / 30 %
    # schedule it replaces (draft-0.35-r4 1.60x, draft-r4 1.75x per step, ``...step-wan1.3b-480p-densities.json``).
    # 30 dB needs density 0.5 (30.83 dB with 20 % dense steps, 1.34x): the README's schedule trade-off table.
    "draft": {"dense_steps": 0.1, "dense_layers": 1, "density": 0.35, "refresh_every": 4, "share_cfg_layouts": True,
              "fast_dense": True},
    "tile": dict(VIDEO_TILE, fast_dense=True),
}
# HunyuanVideo's dense steps run FlashAttention-4 (exact attention, ``fast_dense``) where it is installed: Diffusers'
# default passes the text mask to SDPA, and the 720p dense step took 7.88 s that way against 5.37 s on FA4 through our
# processors (H200, 15 of 60 blocks, ``2026-12-02_NVIDIA-H200_step-hunyuan-720p-dense-variants.json``), and these
# presets keep 25-30 % of the steps dense.
HUNYUAN_SPARSE = {
    "dense": {},
    "radial": {"dense_steps": 0.25, "dense_layers": 0, "decay": 0.95, "fast_dense": True},
    # Cluster pieces packed whole into 128-token fixed blocks, as Wan's preset. Per 720p step (15 of 60 blocks,
    # top_p 0.3 on random weights, planned every other step) 2.68x dense, as the 128 / 64 pieces it replaces (2.68x,
    # FlashAttention-4 running them as whole tiles of a padded sequence; 2.35x for 64-token pieces on Triton;
    # ``2026-12-03_NVIDIA-H200_step-hunyuan-720p-semantic-{packed,b128k64-r2}.json``), with better video on the trained
    # small model: 34.73 dB at density 0.54 against 33.17 dB at 0.45 (768x1280, ``quality-small-768p-semantic-
    # packed.json``). Packed with 64-token key blocks: 34.81 dB but 2.55x against 2.65x for its pieces, every step.
    "semantic": {"dense_steps": 0.2, "dense_layers": 1, "top_p": 0.9, "refresh_every": 3, "warm_iters": 1,
                 "block_size": 128, "pack_pieces": True, "cluster_order": "similarity", "fast_dense": True},
    "draft": {"dense_steps": 0.3, "dense_layers": 1, "density": 0.1, "refresh_every": 2, "fast_dense": True},
    "tile": dict(VIDEO_TILE, fast_dense=True),
}
# The packaged tiny model (6 blocks) runs at the size it was trained at, 17x256x256: 5x16x16 = 1,280 tokens, 40 blocks
# of 32 per side, enough for the patterns to choose (at 128x128 it had 10 blocks per side).
# Both packaged models are far below the automatic dense fallback on a GPU (``min_sparse_tokens``: 12,288 tokens on
# CUDA); they are there to measure the patterns, so their presets run sparse on every device (min_sparse_tokens=0).
TINY_SPARSE = {
    "dense": {},
    "radial": {"dense_steps": 0.25, "dense_layers": 1, "decay": 0.2, "block_size": 32, "min_sparse_tokens": 0},
    # Joint clusters of ~20 tokens at 1,280 tokens (the size tiny was trained at); the exact-key estimate, as measured
    # in the README's quality table (the trained models are small enough that its cost does not matter).
    "semantic": {"dense_steps": 0.25, "dense_layers": 1, "top_p": 0.9, "kv_clusters": 64, "block_size": 32,
                 "estimate": "blocks", "min_sparse_tokens": 0},
    "draft": {"dense_steps": 0.25, "dense_layers": 1, "density": 0.25, "block_size": 32, "estimate": "blocks",
              "min_sparse_tokens": 0},
    # Tiles of 2 rows x 16 columns (one 32-token block, whole rows), a window of every frame, 3 tile rows, the
    # tile's own column: on tiny's attention the neighbourhood that matters is long in time and narrow in space.
    # Density 0.375, rel-L2 0.132 against dense attention (gain 1.48; the STA-like 1x4x8 tiles with a 3x3x3 window:
    # 0.45, 0.443, gain -0.64, worse than random), 23.07 dB against dense video (draft: 21.15 dB at 0.25, 23.56 dB at
    # 0.35; ``oracle-tiny-tile.json``, ``oracle-tiny-tile-default-windows.json``, ``quality-tiny-tile.json``).
    "tile": {"dense_steps": 0.25, "dense_layers": 1, "tile": (1, 2, 16), "window": (5, 3, 1), "block_size": 32,
             "min_sparse_tokens": 0},
}
# The trained small model (7 blocks, 6 heads x 64) at its native 33x384x640: 9x24x40 = 8,640 tokens. The same
# structure as TINY_SPARSE with Wan-sized 128-token blocks (67.5 blocks per sequence, like Wan 1.3B's partial last
# block); the values are starting points, to be tuned on this model.
SMALL_SPARSE = {
    "dense": {},
    "radial": {"dense_steps": 0.25, "dense_layers": 1, "decay": 0.2, "block_size": 128, "min_sparse_tokens": 0},
    # Joint clusters of ~34 tokens at 8,640 tokens (Sparse VideoGen 2's key clusters hold ~33 tokens at Wan 480p).
    "semantic": {"dense_steps": 0.25, "dense_layers": 1, "top_p": 0.9, "kv_clusters": 256, "block_size": 128,
                 "estimate": "blocks", "min_sparse_tokens": 0},
    "draft": {"dense_steps": 0.25, "dense_layers": 1, "density": 0.25, "block_size": 128, "estimate": "blocks",
              "min_sparse_tokens": 0},
    "tile": {**VIDEO_TILE, "block_size": 128, "min_sparse_tokens": 0},
}

# Image models: starting points, not yet tuned on the real weights (there is no trained image model here). One frame
# of packed 2x2 latents: FLUX.1-dev at 1024x1024 has 64x64 = 4,096 image tokens, Qwen-Image at 1328x1328 has 83x83 =
# 6,889. Where sparse pays was measured per step on an H200 (random full-size weights, 6 blocks, every call sparse):
# at 4,096 tokens every method is slower than Diffusers' default (radial 0.90x, tile 0.89x, draft 0.92x,
# ``2026-12-02_NVIDIA-H200_step-flux-1024.json``); at 6,889 radial and tile pay (1.16x, 1.11x), draft does not (0.88x,
# ``...step-qwen-image-1328.json``); at 16,384 all do (``...step-flux-2048-token-order.json``). So radial and tile run
# sparse from IMAGE_MIN_SPARSE_TOKENS image tokens (Qwen-Image at its native size, FLUX from ~1440x1440), and draft
# and semantic keep the automatic dense fallback (12,288 on CUDA; their planning costs more). The first quarter of the
# steps and the first block run dense, as for the video models. Densities at the native size (block 128): radial
# decay 0.1 keeps 0.31 (FLUX) / 0.26 (Qwen-Image) of the key blocks on its 2-D window; tile (1, 8, 16) tiles - one
# 128-token block each - with a 3x3 tile neighbourhood keep 0.28 / 0.15; draft keeps 0.25.
IMAGE_MIN_SPARSE_TOKENS = 6144
FLUX_SPARSE = {
    "dense": {},
    "radial": {"dense_steps": 0.25, "dense_layers": 1, "decay": 0.1, "min_sparse_tokens": IMAGE_MIN_SPARSE_TOKENS},
    "semantic": {"dense_steps": 0.25, "dense_layers": 1, "top_p": 0.9},
    "draft": {"dense_steps": 0.25, "dense_layers": 1, "density": 0.25},
    # blocks="fixed": full blocks where the image does not divide into 8x16 tiles (Qwen-Image's 83x83 at 1328^2), so
    # FlashAttention-4 runs the layout (with one block per tile: Triton, 1.11x at 1328^2).
    "tile": {"dense_steps": 0.25, "dense_layers": 1, "tile": (1, 8, 16), "window": (1, 3, 3), "blocks": "fixed",
             "min_sparse_tokens": IMAGE_MIN_SPARSE_TOKENS},
}
# The same untuned starting points (a copy: a preset's options are its own).
QWEN_IMAGE_SPARSE = {method: dict(options) for method, options in FLUX_SPARSE.items()}

PRESETS: Dict[str, ModelPreset] = {
    "tiny": ModelPreset(
        name="tiny",
        model_id="tiny",
        family="wan",
        pipeline_class="WanPipeline",
        height=256,
        width=256,
        frames=17,
        steps=10,
        guidance=5.0,
        flow_shift=3.0,
        dtype="float32",
        sparse=TINY_SPARSE,
    ),
    "small": ModelPreset(
        name="small",
        model_id="small",
        family="wan",
        pipeline_class="WanPipeline",
        height=384,
        width=640,
        frames=33,
        steps=20,
        guidance=5.0,
        flow_shift=3.0,
        dtype="bfloat16",  # a GPU model (trained in bf16 autocast); the CLI still defaults to float32 on a CPU
        sparse=SMALL_SPARSE,
    ),
    "wan2.1-1.3b": ModelPreset(
        name="wan2.1-1.3b",
        model_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        family="wan",
        pipeline_class="WanPipeline",
        height=480,
        width=832,
        frames=81,
        steps=50,
        guidance=5.0,
        flow_shift=3.0,  # 3.0 for 480p, 5.0 for 720p (Diffusers' Wan docs)
        sparse=WAN_SPARSE,
        negative_prompt=WAN_NEGATIVE_PROMPT,
    ),
    "wan2.1-14b": ModelPreset(
        name="wan2.1-14b",
        model_id="Wan-AI/Wan2.1-T2V-14B-Diffusers",
        family="wan",
        pipeline_class="WanPipeline",
        height=720,
        width=1280,
        frames=81,
        steps=50,
        guidance=5.0,
        flow_shift=5.0,
        sparse=WAN_SPARSE,
        negative_prompt=WAN_NEGATIVE_PROMPT,
    ),
    "wan2.2-a14b": ModelPreset(
        name="wan2.2-a14b",
        model_id="Wan-AI/Wan2.2-T2V-A14B-Diffusers",
        family="wan",
        pipeline_class="WanPipeline",
        height=720,
        width=1280,
        frames=81,
        steps=40,
        guidance=4.0,
        guidance_2=3.0,
        flow_shift=None,  # keep the shipped scheduler (tuned together with the expert boundary)
        sparse=WAN_SPARSE,
        negative_prompt=WAN_NEGATIVE_PROMPT,
    ),
    "hunyuanvideo": ModelPreset(
        name="hunyuanvideo",
        model_id="hunyuanvideo-community/HunyuanVideo",
        family="hunyuan_video",
        pipeline_class="HunyuanVideoPipeline",
        height=720,
        width=1280,
        frames=129,
        steps=50,
        guidance=6.0,
        flow_shift=7.0,
        vae_dtype="float16",
        fps=24,
        sparse=HUNYUAN_SPARSE,
    ),
    "flux.1-dev": ModelPreset(
        name="flux.1-dev",
        model_id="black-forest-labs/FLUX.1-dev",
        family="flux",
        pipeline_class="FluxPipeline",
        kind="image",
        height=1024,
        width=1024,
        frames=1,
        frame_step=1,
        steps=28,
        guidance=3.5,  # FLUX.1-dev is guidance-distilled: the scale is an input of the transformer, one pass per step
        vae_dtype="bfloat16",
        sparse=FLUX_SPARSE,
    ),
    "qwen-image": ModelPreset(
        name="qwen-image",
        model_id="Qwen/Qwen-Image",
        family="qwen_image",
        pipeline_class="QwenImagePipeline",
        kind="image",
        height=1328,
        width=1328,
        frames=1,
        frame_step=1,
        steps=50,
        guidance=4.0,  # true_cfg_scale: a second, negative-prompt pass per step
        vae_dtype="bfloat16",
        sparse=QWEN_IMAGE_SPARSE,
        # QwenImagePipeline runs classifier-free guidance only when a negative prompt is given; " " is the empty one
        # of Diffusers' Qwen-Image example.
        negative_prompt=" ",
    ),
}

# Generic presets for a local folder or an unlisted Hub id, by pipeline class.
_GENERIC = {
    "WanPipeline": PRESETS["wan2.1-1.3b"].replace(name="wan", flow_shift=None),
    "HunyuanVideoPipeline": PRESETS["hunyuanvideo"].replace(name="hunyuanvideo", flow_shift=None),
    "FluxPipeline": PRESETS["flux.1-dev"].replace(name="flux"),
    "QwenImagePipeline": PRESETS["qwen-image"].replace(name="qwen-image"),
}


def _by_model_id() -> Dict[str, ModelPreset]:
    return {p.model_id.lower(): p for p in PRESETS.values()}


def known_models() -> Tuple[str, ...]:
    """Hub ids and short names that have a preset."""
    return tuple(p.model_id for p in PRESETS.values()) + tuple(k for k, p in PRESETS.items() if k != p.model_id)


def _read_model_index(path: Path) -> Optional[dict]:
    index = path / "model_index.json"
    if not index.is_file():
        return None
    try:
        return json.loads(index.read_text())
    except (OSError, ValueError):
        return None


def preset_for(model: str) -> ModelPreset:
    """The preset of ``model``: a short name, a listed Hub id, a local pipeline folder, or an unlisted Hub id.

    A local folder's ``model_index.json`` decides the pipeline class (a Wan folder with ``transformer_2`` gets the
    Wan 2.2 preset); an unlisted ``owner/name`` Hub id is treated as HunyuanVideo, FLUX or Qwen-Image when its name
    says so, else as Wan, and loading it later says so if that guess is wrong.

    Raises:
        ValueError: ``model`` is none of the above (the message lists the known models).
    """
    key = model.strip()
    if key.lower() in PRESETS:
        return PRESETS[key.lower()]
    if key.lower() in _by_model_id():
        return _by_model_id()[key.lower()]
    path = Path(os.path.expanduser(key))
    if path.is_dir():
        index = _read_model_index(path)
        if index is None:
            raise ValueError(
                f"{key} is a folder but has no readable model_index.json, so it is not a Diffusers pipeline folder "
                "(save one with pipe.save_pretrained(path), or pass a Hub id)"
            )
        cls = index.get("_class_name")
        if cls not in _GENERIC:
            raise ValueError(f"{key} holds a {cls}; supported pipelines: {', '.join(_GENERIC)}")
        if cls == "WanPipeline" and index.get("transformer_2") and index["transformer_2"][0] is not None:
            return PRESETS["wan2.2-a14b"].replace(name="wan2.2", model_id=str(path), flow_shift=None)
        return _GENERIC[cls].replace(model_id=str(path))
    if looks_like_hub_id(key):
        return _GENERIC[_guess_pipeline_class(key)].replace(model_id=key)
    raise ValueError(
        f"unknown model {model!r}: it is not 'tiny' or 'small', not a known short name ({', '.join(PRESETS)}), not an "
        f"existing local folder and not a Hub id of the form owner/name. Known Hub ids: "
        f"{', '.join(p.model_id for p in PRESETS.values() if p.model_id not in PRESETS)}"
    )


def _guess_pipeline_class(hub_id: str) -> str:
    """The pipeline class an unlisted Hub id's name suggests (Wan when it names none)."""
    name = hub_id.lower()
    if "hunyuan" in name:
        return "HunyuanVideoPipeline"
    if "flux" in name:
        return "FluxPipeline"
    if "qwen-image" in name or "qwen_image" in name or "qwenimage" in name:
        return "QwenImagePipeline"
    return "WanPipeline"


def looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not text.startswith((".", "~"))
        and all(c.isalnum() or c in "-_." for c in text.replace("/", ""))
    )


def valid_frame_counts(frames: int, step: int = 4) -> Tuple[int, int]:
    """The valid counts ``step * k + 1`` just below and just above ``frames`` (the lower one is at least 1)."""
    frames = max(int(frames), 1)
    lower = frames - (frames - 1) % step
    return lower, lower + step


def check_size(preset: ModelPreset, height: int, width: int, frames: int) -> None:
    """`check_image_size` for an image preset, `check_video_size` for a video one.

    Raises:
        ValueError: naming valid nearby values (or, for an image model, that the frame count must be 1).
    """
    if preset.is_image:
        if frames != 1:
            raise ValueError(
                f"{preset.name} generates single images, not {frames} frames: leave out --frames (or pass 1), or use "
                "a video model such as wan2.1-1.3b"
            )
        check_image_size(preset, height, width)
    else:
        check_video_size(preset, height, width, frames)


def check_image_size(preset: ModelPreset, height: int, width: int) -> None:
    """Raises `ValueError` naming valid nearby values when height or width is not a positive multiple of
    ``preset.size_multiple``."""
    _check_side_multiples(preset, height, width)


def check_video_size(preset: ModelPreset, height: int, width: int, frames: int) -> None:
    """Raises `ValueError` naming valid nearby values when the model cannot generate this size.

    Args:
        preset (`ModelPreset`): the model.
        height, width (`int`): pixels, multiples of ``preset.size_multiple``.
        frames (`int`): ``preset.frame_step * k + 1`` frames.
    """
    step = preset.frame_step
    if frames < 1 or (frames - 1) % step:
        lower, upper = valid_frame_counts(max(frames, 1), step)
        candidates = [c for c in (lower, upper) if c != frames] or [upper]
        raise ValueError(
            f"{preset.name} cannot generate {frames} frames: the VAE compresses time {step}x, so the frame count "
            f"must be {step}k+1 (e.g. 17, 33, 49, 81). Nearest valid counts: "
            f"{' or '.join(str(c) for c in candidates)}"
        )
    _check_side_multiples(preset, height, width)


def _check_side_multiples(preset: ModelPreset, height: int, width: int) -> None:
    m = preset.size_multiple
    for name, value in (("height", height), ("width", width)):
        if value < m or value % m:
            down = max(m, value // m * m)
            up = down + m if down < value else down
            near = sorted({down, up} - {value}) or [m]
            raise ValueError(
                f"{name}={value} does not work with {preset.name}: it must be a positive multiple of {m}; nearest "
                f"valid: {' or '.join(str(v) for v in near)}"
            )


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose from {', '.join(DTYPES)}")
    return DTYPES[name]


__all__ = [
    "DTYPES",
    "KINDS",
    "METHODS",
    "ModelPreset",
    "PRESETS",
    "check_image_size",
    "check_size",
    "check_video_size",
    "known_models",
    "looks_like_hub_id",
    "preset_for",
    "resolve_dtype",
    "valid_frame_counts",
]
