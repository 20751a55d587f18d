"""Text-to-video and text-to-image generation with sparse attention, optionally against the dense baseline with the
same seed.

    dit-sparse generate --model tiny --prompt "a red fox running in snow" --method radial --compare-dense \\
        --steps 4 --out outputs/fox.mp4 --report outputs/fox.json
    python -m dit_sparse.pipelines.generate --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --method radial --compare-dense
    dit-sparse generate --model black-forest-labs/FLUX.1-dev --prompt "a red fox in snow" --method tile --out fox.png

Video models write an mp4, image models (FLUX.1-dev, Qwen-Image) a PNG.

The dense run (with ``--compare-dense``) goes first through the stock Diffusers processors; then
`dit_sparse.apply_sparse_attention` swaps in the sparse ones for the second run with the same seed. Each pipeline call
is timed with the wall clock (CUDA synchronised), and the two videos (or images) are compared frame by frame (PSNR,
SSIM).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from .presets import METHODS, ModelPreset, check_size, preset_for, resolve_dtype
from .tiny import dtype_kwarg

# CLI flag -> config field, and the methods each flag applies to (None = every method but dense).
METHOD_FLAGS: Dict[str, Tuple[str, Optional[Tuple[str, ...]]]] = {
    "decay": ("decay", ("radial",)),
    "top_p": ("top_p", ("semantic",)),
    "q_clusters": ("q_clusters", ("semantic",)),
    "kv_clusters": ("kv_clusters", ("semantic",)),
    "density": ("density", ("draft",)),
    "tile": ("tile", ("tile",)),
    "window": ("window", ("tile",)),
    "refresh_every": ("refresh_every", None),
    "backend": ("backend", None),
    "block_size": ("block_size", None),
    "dense_steps": ("dense_steps", None),
    "dense_layers": ("dense_layers", None),
    "min_sparse_tokens": ("min_sparse_tokens", None),
}


logger = logging.getLogger(__name__)

# torch.OutOfMemoryError since torch 2.5; the CUDA one is the same class.
OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class GenerationError(RuntimeError):
    """A problem the user can fix (unknown model, impossible size, out of memory); the message says how."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


# ---------------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------------


def dense_steps_arg(text: str):
    """``12`` -> 12 steps (int); ``0.25`` -> a quarter of the steps (float)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a step count (int, e.g. 12) nor a fraction of the steps (float, e.g. 0.25)"
        ) from None


def triple_arg(text: str) -> Tuple[int, int, int]:
    """``1,8,16`` -> (1, 8, 16): frames, height, width in tokens or tiles."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not three ints (frames,height,width), e.g. 1,8,16")
    return values


# Extensions of the files an image model's --out may name (Pillow picks the format from it).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def output_path(preset: ModelPreset, out: Optional[str], method: str) -> Path:
    """Where the sparse result goes: ``out``, or ``outputs/<model>_<method>.mp4`` (``.png`` for an image model).

    Raises:
        ValueError: an image model's ``out`` does not end in an image extension (e.g. ``.mp4``); the message names
            the path to use instead.
    """
    if not out:
        return Path("outputs") / f"{preset.name}_{method}{preset.suffix}"
    path = Path(out)
    if preset.is_image and path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(
            f"--out {out} does not name an image file, but {preset.name} generates single images: pass a path ending "
            f"in .png (e.g. --out {path.with_suffix('.png')}); {', '.join(IMAGE_SUFFIXES)} work"
        )
    return path


def add_generate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the generation options to ``parser`` (shared by ``dit-sparse generate`` and ``python -m``)."""
    m = parser.add_argument_group("model")
    m.add_argument(
        "--model",
        default="tiny",
        help="Hub id (e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers, hunyuanvideo-community/HunyuanVideo, or the image models "
        "black-forest-labs/FLUX.1-dev and Qwen/Qwen-Image, which write a PNG), a local pipeline folder, a short name "
        "(wan2.1-1.3b, wan2.1-14b, wan2.2-a14b, hunyuanvideo, flux.1-dev, qwen-image), 'tiny' (a small Wan trained "
        "on procedural videos, shipped in the package, for trying things on a CPU) or 'small' (its larger sibling at "
        "33x384x640 = 8,640 tokens, for a GPU; weights from `python -m dit_sparse.pipelines.train_tiny --preset "
        "small`). Default: tiny",
    )
    m.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda when available)")
    m.add_argument(
        "--dtype",
        default=None,
        choices=["bfloat16", "float16", "float32"],
        help="transformer dtype (default: the model's, bfloat16 for the real models; float32 on CPU)",
    )
    m.add_argument("--offload", action="store_true", help="enable_model_cpu_offload(): less GPU memory, slower")
    m.add_argument(
        "--ulysses",
        type=int,
        default=1,
        help="Ulysses context parallelism over N GPUs (relaunches itself through torchrun; heads must divide by N)",
    )
    m.add_argument(
        "--compile", action="store_true", help="torch.compile the transformer blocks (compile_repeated_blocks)"
    )

    g = parser.add_argument_group("generation (defaults: the model's preset)")
    g.add_argument("--prompt", default="A red fox running through fresh snow in a sunny forest, cinematic")
    g.add_argument("--negative-prompt", default=None, help="default: the model's usual negative prompt")
    g.add_argument("--height", type=int, default=None)
    g.add_argument("--width", type=int, default=None)
    g.add_argument("--frames", type=int, default=None, help="4k+1 frames (e.g. 17, 33, 81); image models make one")
    g.add_argument("--steps", type=int, default=None, help="denoising steps")
    g.add_argument("--guidance", type=float, default=None, help="guidance scale (Qwen-Image: true_cfg_scale)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--fps", type=int, default=None, help="frame rate of the mp4 (default: the model's; videos only)")

    s = parser.add_argument_group("sparse attention (defaults: the model's tuned settings for the method)")
    s.add_argument("--method", default="radial", choices=list(METHODS))
    s.add_argument(
        "--dense-steps",
        type=dense_steps_arg,
        default=None,
        help="first steps run dense: an int is a step count (12), a float a fraction of the steps (0.25)",
    )
    s.add_argument("--dense-layers", type=int, default=None, help="first N transformer blocks always run dense")
    s.add_argument("--decay", type=float, default=None, help="radial: window decay (Wan 0.2, HunyuanVideo 0.95)")
    s.add_argument("--top-p", type=float, default=None, help="semantic: attention mass kept per query cluster")
    s.add_argument("--q-clusters", type=int, default=None, help="semantic: query clusters")
    s.add_argument("--kv-clusters", type=int, default=None, help="semantic: key clusters")
    s.add_argument("--density", type=float, default=None, help="draft: fraction of key blocks kept")
    s.add_argument(
        "--tile", type=triple_arg, default=None, help="tile: tile size in tokens, frames,height,width (e.g. 1,8,16)"
    )
    s.add_argument(
        "--window",
        type=triple_arg,
        default=None,
        help="tile: neighbourhood in tiles, frames,height,width (e.g. 1,3,3)",
    )
    s.add_argument("--refresh-every", type=int, default=None, help="recompute dynamic patterns every N steps")
    s.add_argument("--backend", default=None, choices=["auto", "fa4", "triton", "flex", "reference"])
    s.add_argument(
        "--min-sparse-tokens",
        type=int,
        default=None,
        help="calls with fewer video/image tokens run dense, where sparse is not faster (default: the preset's, "
        "else 12288 on CUDA); 0 runs sparse at any size",
    )
    s.add_argument(
        "--block-size",
        type=int,
        default=None,
        help="tokens per block: a power of two in [16, 1024] (default: the model's preset, 128 for Wan and "
        "HunyuanVideo, 32 for tiny)",
    )

    o = parser.add_argument_group("output")
    o.add_argument(
        "--out",
        default=None,
        help="mp4 path of the sparse video, or .png path of the sparse image for image models (default: "
        "outputs/<model>_<method>.mp4 or .png)",
    )
    o.add_argument(
        "--compare-dense",
        action="store_true",
        help="also generate densely with the same seed (saved as <out>_dense.mp4 or .png); print speedup, PSNR and "
        "SSIM",
    )
    o.add_argument("--report", default=None, help="write a JSON report (timings, metrics, density, settings)")
    o.add_argument(
        "--warmup",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run an untimed 2-step call (latents only, no VAE decoding) before each timed call, so one-off costs "
        "(compilation, kernel autotuning, allocator growth) are not timed (default: on)",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dit_sparse.pipelines.generate",
        description="Generate a video (or an image) with sparse attention (and the dense baseline with "
        "--compare-dense).",
    )
    return add_generate_arguments(parser)


def sparse_options(args: argparse.Namespace, preset: ModelPreset) -> Dict[str, Any]:
    """The preset's recommended options for ``args.method``, overridden by the flags given on the command line.

    Raises:
        GenerationError: a flag of another method was given (e.g. ``--top-p`` with ``--method radial``).
    """
    options = preset.sparse_options(args.method)
    wrong = []
    for attr, (name, methods) in METHOD_FLAGS.items():
        value = getattr(args, attr, None)
        if value is None:
            continue
        if args.method == "dense" or (methods is not None and args.method not in methods):
            wrong.append(f"--{attr.replace('_', '-')} ({'/'.join(methods) if methods else 'sparse methods'} only)")
            continue
        options[name] = value
    if wrong:
        raise GenerationError(f"options that do not apply to --method {args.method}: {', '.join(wrong)}")
    return options


def make_sparse_config(method: str, options: Dict[str, Any]):
    """`dit_sparse.make_config` with a `GenerationError` (naming the flag) instead of a bare `ValueError`."""
    from .. import make_config

    try:
        return make_config(method, **options)
    except ValueError as err:
        raise GenerationError(f"invalid sparse settings for {method}: {err}") from err


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _short(err: BaseException, limit: int = 400) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def hub_access(model_id: str, pipeline_class: str = "the pipeline") -> Dict[str, Any]:
    """Extra ``from_pretrained`` arguments for a Hub id, after checking that it can be loaded at all.

    Without this check, no network and no cached copy show as five retried HEAD requests and then a misleading
    "does not appear to have a file named config.json". Returns ``{"local_files_only": True}`` when the Hub cannot be
    reached but the cache has the model (no retries then), else ``{}``.

    Raises:
        GenerationError: the model is not in the local cache and the Hub cannot be reached (or HF_HUB_OFFLINE is set).
    """
    from huggingface_hub import constants, get_session, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(model_id, "model_index.json"), str)
    fixes = (
        f"download it once where there is network (`hf download {model_id}`, into {constants.HF_HUB_CACHE} or "
        "$HF_HOME), pass a local folder written by pipe.save_pretrained(...), or use --model tiny (shipped, offline)"
    )
    where = f"could not load model {model_id!r}: tried {pipeline_class}.from_pretrained from the Hugging Face Hub"
    if constants.HF_HUB_OFFLINE:
        if cached:
            return {}
        raise GenerationError(
            f"{where}, but HF_HUB_OFFLINE is set and there is no local copy in the cache {constants.HF_HUB_CACHE}. "
            f"Unset HF_HUB_OFFLINE to download it, or: {fixes}"
        )
    try:
        get_session().head(constants.ENDPOINT, timeout=10)  # one request, honouring proxies; no retries
    except Exception as err:  # any failure to reach the endpoint (DNS, refused, timeout, proxy, TLS)
        if cached:
            logger.warning("%s is unreachable (%s): loading %s from the local cache", constants.ENDPOINT,
                           _short(err, 120), model_id)
            return {"local_files_only": True}
        raise GenerationError(
            f"{where}, but there is no network ({constants.ENDPOINT} cannot be reached: {_short(err, 160)}) and no "
            f"local copy in the cache {constants.HF_HUB_CACHE}: {fixes}"
        ) from err
    return {}


def _load_wan(model_id: str, preset: ModelPreset, dtype: torch.dtype, **hub):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    # The Wan VAE is run in float32, as Diffusers' Wan docs recommend (bf16 decoding shows artefacts).
    vae = AutoencoderKLWan.from_pretrained(
        model_id, subfolder="vae", **dtype_kwarg(resolve_dtype(preset.vae_dtype)), **hub
    )
    pipe = WanPipeline.from_pretrained(model_id, vae=vae, **dtype_kwarg(dtype), **hub)
    if preset.flow_shift is not None:
        pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=preset.flow_shift)
    return pipe


def _load_hunyuan(model_id: str, preset: ModelPreset, dtype: torch.dtype, **hub):
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline, HunyuanVideoTransformer3DModel

    # As in Diffusers' HunyuanVideo example: transformer in bf16, text encoders and VAE in fp16, tiled VAE decoding.
    transformer = HunyuanVideoTransformer3DModel.from_pretrained(
        model_id, subfolder="transformer", **dtype_kwarg(dtype), **hub
    )
    pipe = HunyuanVideoPipeline.from_pretrained(
        model_id, transformer=transformer, **dtype_kwarg(resolve_dtype(preset.vae_dtype)), **hub
    )
    pipe.vae.enable_tiling()
    if preset.flow_shift is not None:
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift=preset.flow_shift)
    return pipe


def _load_image(model_id: str, preset: ModelPreset, dtype: torch.dtype, **hub):
    """FLUX.1-dev or Qwen-Image (``preset.pipeline_class``): every component in one dtype (bfloat16 on a GPU), as
    Diffusers' examples of both load them."""
    import diffusers

    return getattr(diffusers, preset.pipeline_class).from_pretrained(model_id, **dtype_kwarg(dtype), **hub)


def _loader_for(family: str):
    """The function that loads a pipeline of ``family`` from a Hub id or a local folder (looked up when called, so
    tests can replace one)."""
    loaders = {"wan": _load_wan, "hunyuan_video": _load_hunyuan, "flux": _load_image, "qwen_image": _load_image}
    if family not in loaders:
        raise GenerationError(f"no loader for model family {family!r}; known families: {', '.join(loaders)}")
    return loaders[family]


def load_pipeline(
    preset: ModelPreset,
    *,
    device: str = "cpu",
    dtype: Optional[torch.dtype] = None,
    offload: bool = False,
    compile: bool = False,
    seed: int = 0,
):
    """Loads (or, for ``tiny``, builds) the preset's pipeline, placed on ``device`` or CPU-offloaded (``tiny`` and
    ``small`` load their packaged folders, or ``$DIT_SPARSE_TINY_MODEL`` / ``$DIT_SPARSE_SMALL_MODEL``).

    Args:
        preset (`ModelPreset`): from `preset_for`.
        device (`str`): where the pipeline runs.
        dtype (`torch.dtype`, *optional*): transformer dtype; defaults to the preset's.
        offload (`bool`): ``enable_model_cpu_offload`` instead of moving everything to ``device``.
        compile (`bool`): ``compile_repeated_blocks(fullgraph=False)`` on the transformer(s).
        seed (`int`): weight seed of the random ``tiny`` model.

    Raises:
        GenerationError: the model could not be loaded (the message says what was tried), or ``offload`` on a CPU.
    """
    dtype = dtype if dtype is not None else resolve_dtype(preset.dtype)
    if offload and not str(device).startswith("cuda"):
        raise GenerationError(f"--offload moves models between the CPU and a GPU: needs a CUDA device, not {device}")
    if preset.model_id == "tiny":
        from .tiny import build_tiny_pipeline

        pipe = build_tiny_pipeline(seed=seed, device="cpu" if offload else device, dtype=dtype)
    elif preset.model_id == "small":
        from .tiny import build_small_pipeline

        try:
            pipe = build_small_pipeline(device="cpu" if offload else device, dtype=dtype)
        except ValueError as err:  # weights not installed: the message says how to train or unpack them
            raise GenerationError(str(err)) from err
    else:
        loader = _loader_for(preset.family)
        local = Path(os.path.expanduser(preset.model_id)).is_dir()
        hub = {} if local else hub_access(preset.model_id, preset.pipeline_class)
        try:
            pipe = loader(preset.model_id, preset, dtype, **hub)
        except (OSError, ValueError, ImportError, RuntimeError, KeyError, TypeError) as err:
            if isinstance(err, OutOfMemoryError):
                raise
            where = "the local folder" if local else "the Hugging Face Hub (or its local cache)"
            raise GenerationError(
                f"could not load model {preset.model_id!r}: tried {preset.pipeline_class}.from_pretrained from "
                f"{where}, which failed with {_short(err)}. Pass --model tiny, a folder written by "
                "pipe.save_pretrained(...), or a Hub id such as Wan-AI/Wan2.1-T2V-1.3B-Diffusers (downloaded once "
                "to the Hugging Face cache; set HF_HUB_OFFLINE=1 to use only the cache)"
            ) from err
        if offload:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
    if compile:
        compile_transformers(pipe)
    return pipe


def compile_transformers(pipe) -> None:
    """Regional compilation of the transformer blocks (``transformer`` and Wan 2.2's ``transformer_2``)."""
    for name in ("transformer", "transformer_2"):
        model = getattr(pipe, name, None)
        if model is None:
            continue
        if hasattr(model, "compile_repeated_blocks"):
            model.compile_repeated_blocks(fullgraph=False)
        else:
            model.compile(fullgraph=False)


# ---------------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """One timed pipeline call: frames (T, H, W, 3) float32 in [0, 1], wall seconds, and the sparse summary."""

    frames: np.ndarray
    seconds: float
    summary: Optional[Dict[str, Any]] = None
    peak_memory_gb: Optional[float] = None
    layout: Any = None
    layout_info: Optional[Dict[str, Any]] = None


def _sync(device) -> None:
    if torch.cuda.is_available() and str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def call_kwargs(pipe, preset: ModelPreset, settings: Dict[str, Any]) -> Dict[str, Any]:
    """The pipeline's keyword arguments for one call from the generation settings."""
    common = dict(
        prompt=settings["prompt"],
        height=settings["height"],
        width=settings["width"],
        num_inference_steps=settings["steps"],
        generator=torch.Generator(device="cpu").manual_seed(settings["seed"]),
        output_type="np",
    )
    if preset.family == "flux":
        # FLUX.1-dev's guidance is distilled into the transformer: one pass per step, no negative prompt.
        return dict(common, guidance_scale=settings["guidance"])
    if preset.family == "qwen_image":
        # Qwen-Image's guidance is true classifier-free guidance, which QwenImagePipeline runs only when a negative
        # prompt is given: an empty one is " ". Its guidance_scale is for guidance-distilled variants; left unset.
        return dict(
            common,
            true_cfg_scale=settings["guidance"],
            negative_prompt=settings.get("negative_prompt") or " ",
        )
    kwargs = dict(common, num_frames=settings["frames"], guidance_scale=settings["guidance"])
    if preset.family == "wan":
        kwargs["negative_prompt"] = settings.get("negative_prompt") or None
        if getattr(pipe.config, "boundary_ratio", None) is not None and preset.guidance_2 is not None:
            kwargs["guidance_scale_2"] = preset.guidance_2
    # HunyuanVideo uses embedded (distilled) guidance: no negative prompt unless true CFG, which we leave off.
    return kwargs


def _summary_snapshot(snapshot: Dict[str, Any], steps: int, capture_layout: bool = False):
    """A ``callback_on_step_end`` that records ``dit_sparse.summary(pipe)`` (and a layout) after the last step.

    Read inside the loop because Diffusers resets stateful hooks at the end of every pipeline call
    (``maybe_free_model_hooks``), and the step hook then drops the per-layer caches (its statistics stay).
    """
    import dit_sparse

    def callback(pipe, step_index, timestep, callback_kwargs):
        if step_index + 1 >= (getattr(pipe, "num_timesteps", None) or steps):
            snapshot["summary"] = dit_sparse.summary(pipe)
            if capture_layout:
                snapshot.update(last_layout(pipe))
        return callback_kwargs

    return callback


def last_layout(pipe) -> Dict[str, Any]:
    """The layout of the deepest sparse layer (first transformer, first CFG branch) of the current step.

    Dynamic patterns keep their layouts in the state's caches while ``state.retain_layouts`` is set (``run_pipeline``
    sets it with ``capture_layout``; otherwise a layout is kept only when a later step reuses it); a static pattern
    (radial) is planned again for the
    current geometry, which is cheap and cached (``layer`` is then None: every sparse layer uses it). Returns
    ``{"layout", "layer", "geometry", "source"}``, or ``{}`` when there is none.
    """
    try:
        return _last_layout(pipe)
    except Exception as err:  # only feeds a plot: never fail a generation over it
        logger.warning("could not read the sparse layout of the last step: %s", _short(err))
        return {}


def _last_layout(pipe) -> Dict[str, Any]:
    from ..api import get_state
    from ..schedule import PlanCache

    try:
        state = get_state(pipe)
    except ValueError:
        return {}
    geometry = state.geometry
    # The first CFG branch ("cond", or ordinal 0 without a cache context) of the first transformer.
    entries = [(key, entry) for key, entry in state.caches.items() if key.model_index == 0 and "layout" in entry]
    branches = [key.branch for key, _ in entries]
    first_branch = "cond" if "cond" in branches else 0 if 0 in branches else (branches[0] if branches else None)
    cached = [(key.layer, entry["layout"].expanded()) for key, entry in entries if key.branch == first_branch]
    if cached:
        layer, layout = max(cached, key=lambda item: item[0])
        return {"layout": layout, "layer": layer, "geometry": geometry, "source": "run"}
    if state.pattern is None or geometry is None or not getattr(state.pattern, "static", False):
        return {}
    # A static layout depends on the geometry only (q is read for its device), and every sparse layer shares it.
    q = torch.zeros(1, 1, geometry.num_tokens, 64, device=pipe.transformer.device)
    layout = state.pattern.plan(q, q, geometry, PlanCache(shared=state.shared))
    return {"layout": layout, "layer": None, "geometry": geometry, "source": "static"}


def run_pipeline(
    pipe,
    preset: ModelPreset,
    settings: Dict[str, Any],
    *,
    config=None,
    warmup: bool = False,
    device: str = "cpu",
    capture_layout: bool = False,
) -> RunResult:
    """Generates one video (or image: a video of one frame); with ``config`` under sparse attention (removed again
    afterwards).

    Args:
        pipe: the Diffusers pipeline.
        preset (`ModelPreset`): the model's preset.
        settings (`dict`): prompt, negative_prompt, height, width, frames, steps, guidance, seed.
        config (`SparseConfig`, *optional*): sparse attention for this call; `None` = the stock processors.
        warmup (`bool`): run an untimed 2-step call producing latents first.
        device (`str`): for CUDA synchronisation and memory statistics.
        capture_layout (`bool`): keep one layer's `BlockLayout` of the last step (``RunResult.layout``).

    Returns:
        `RunResult` with the frames, the wall time of the timed call and ``dit_sparse.summary(pipe)`` (sparse only).
    """
    import dit_sparse

    if config is not None:
        dit_sparse.apply_sparse_attention(pipe, config)
        if capture_layout:  # keep the layouts of the last step for last_layout (not kept unless reused otherwise)
            from ..api import get_state

            get_state(pipe).retain_layouts = True
    try:
        if warmup:
            kwargs = call_kwargs(pipe, preset, dict(settings, steps=2))
            kwargs["output_type"] = "latent"
            old = dict(getattr(pipe, "_progress_bar_config", {}) or {})
            pipe.set_progress_bar_config(**dict(old, disable=True))
            try:
                with torch.inference_mode():
                    pipe(**kwargs)
            finally:
                pipe.set_progress_bar_config(**old)
        cuda = torch.cuda.is_available() and str(device).startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        kwargs = call_kwargs(pipe, preset, settings)
        snapshot: Dict[str, Any] = {}
        if config is not None:
            kwargs["callback_on_step_end"] = _summary_snapshot(snapshot, settings["steps"], capture_layout)
        _sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            output = pipe(**kwargs)
        # Image pipelines return a batch of images [B, H, W, 3]; the first is kept as a one-frame video [1, H, W, 3].
        frames = np.asarray(output.images)[:1] if preset.is_image else output.frames[0]
        _sync(device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
        summary = snapshot.get("summary") if config is not None else None
    finally:
        if config is not None:
            dit_sparse.remove_sparse_attention(pipe)
    frames = np.asarray(frames, dtype=np.float32)
    return RunResult(
        frames=np.clip(frames, 0.0, 1.0),
        seconds=seconds,
        summary=summary,
        peak_memory_gb=peak,
        layout=snapshot.get("layout"),
        layout_info={k: snapshot[k] for k in ("layer", "geometry", "source") if k in snapshot},
    )


def dense_path_for(out: Path) -> Path:
    return out.with_name(f"{out.stem}_dense{out.suffix or '.mp4'}")


def write_image(path: Path, frames: np.ndarray) -> None:
    """Writes the single frame of ``frames`` ([1, H, W, 3] floats in [0, 1]) with Pillow, in the format of the
    path's extension (PNG for ``.png``)."""
    from PIL import Image

    if frames.ndim != 4 or frames.shape[0] != 1:
        raise ValueError(f"an image is one frame [1, H, W, 3]; got frames of shape {tuple(frames.shape)}")
    pixels = (np.clip(frames[0], 0.0, 1.0) * 255.0).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_output(path: Path, frames: np.ndarray, preset: ModelPreset, fps: Optional[int]) -> None:
    """An image file for an image preset, an mp4 for a video one."""
    if preset.is_image:
        write_image(path, frames)
    else:
        write_video(path, frames, fps)


def compare(dense: np.ndarray, sparse: np.ndarray) -> Dict[str, float]:
    """PSNR (dB) and SSIM of the sparse frames against the dense ones (float frames, before mp4 encoding)."""
    from ..eval.metrics import psnr, ssim

    return {"psnr": float(psnr(dense, sparse)), "ssim": float(ssim(dense, sparse))}


def write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    from ..eval.metrics import write_video as _write

    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, frames, fps=fps)


def _git_commit() -> Optional[str]:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _device_name(device: str) -> str:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine() or "cpu"


def _json_safe(value):
    # JSON has no infinity: a non-finite number is null, never a string (identical videos: see "identical_to_dense").
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return _json_safe(value.item())
    return value


def generate(args: argparse.Namespace) -> Dict[str, Any]:
    """Runs the generation described by parsed ``args`` and returns the report (also written with ``--report``).

    Raises:
        GenerationError: with a message for the user (unknown model, impossible size, bad options, out of memory).
    """
    try:
        preset = preset_for(args.model)
    except ValueError as err:
        raise GenerationError(str(err)) from err
    settings = {
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt if args.negative_prompt is not None else preset.negative_prompt,
        "height": args.height if args.height is not None else preset.height,
        "width": args.width if args.width is not None else preset.width,
        "frames": args.frames if args.frames is not None else preset.frames,
        "steps": args.steps if args.steps is not None else preset.steps,
        "guidance": args.guidance if args.guidance is not None else preset.guidance,
        "seed": args.seed,
    }
    try:
        check_size(preset, settings["height"], settings["width"], settings["frames"])
        out = output_path(preset, args.out, args.method)
    except ValueError as err:
        raise GenerationError(str(err)) from err
    if preset.is_image and args.fps is not None:
        raise GenerationError(f"--fps is the frame rate of a video, but {preset.name} generates images: leave it out")
    if preset.family == "flux" and args.negative_prompt:
        raise GenerationError(
            f"--negative-prompt has no effect on {preset.name}: FLUX.1-dev's guidance is distilled into the model, "
            "with no negative pass; leave it out (or use Qwen/Qwen-Image, whose guidance uses one)"
        )
    if settings["steps"] < 1:
        raise GenerationError(f"--steps must be at least 1, got {settings['steps']}")
    # Validate the sparse settings before loading gigabytes of weights.
    options = sparse_options(args, preset)
    config = make_sparse_config(args.method, options)
    device = args.device or default_device()
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise GenerationError(f"--device {device} was asked for, but torch sees no CUDA GPU; use --device cpu")
    dtype_name = args.dtype or (preset.dtype if str(device).startswith("cuda") else "float32")
    # Without a warm-up the first timed call (the dense one) pays for one-off costs: compilation, autotuning, allocator
    # growth, lazy imports and page faults; that would flatter the sparse run.
    warmup = args.warmup if args.warmup is not None else True
    fps = None if preset.is_image else args.fps or preset.fps
    out.parent.mkdir(parents=True, exist_ok=True)  # fail on an unwritable path now, not after the generation

    stage = "loading the model"
    try:
        pipe = load_pipeline(
            preset,
            device=device,
            dtype=resolve_dtype(dtype_name),
            offload=args.offload,
            compile=args.compile,
            seed=0,
        )
        if getattr(args, "ulysses", 1) > 1:
            enable_ulysses(pipe, args.ulysses, preset.family)
        dense = None
        if args.compare_dense:
            stage = f"generating the dense {preset.kind}"
            dense = run_pipeline(pipe, preset, settings, config=None, warmup=warmup, device=device)
        stage = f"generating the {args.method} {preset.kind}"
        sparse = run_pipeline(
            pipe, preset, settings, config=config, warmup=warmup, device=device, capture_layout=True
        )
    except OutOfMemoryError as err:
        if preset.is_image:
            size, fewer_frames = f"{settings['width']}x{settings['height']}", ""
        else:
            size = f"{settings['width']}x{settings['height']}, {settings['frames']} frames"
            fewer_frames = f" fewer --frames (4k+1, e.g. {max(1, (settings['frames'] - 1) // 2 // 4 * 4 + 1)}),"
        raise GenerationError(
            f"out of GPU memory while {stage} ({size}, {dtype_name}). Try --offload (model CPU offload), a smaller "
            f"--height/--width,{fewer_frames} or a smaller model. ({_short(err, 200)})",
            exit_code=3,
        ) from err

    if _rank() != 0:
        return {}  # rank 0 writes the videos and the report
    write_output(out, sparse.frames, preset, fps)
    dense_out = None
    metrics: Dict[str, Optional[float]] = {"psnr": None, "ssim": None}
    if dense is not None:
        dense_out = dense_path_for(out)
        write_output(dense_out, dense.frames, preset, fps)
        metrics = compare(dense.frames, sparse.frames)

    summary = sparse.summary or {}
    density, density_source = run_density(args.method, sparse)
    report = {
        "psnr": metrics["psnr"],  # null in the JSON when the outputs are identical (infinite PSNR)
        "ssim": metrics["ssim"],
        "identical_to_dense": bool(np.array_equal(dense.frames, sparse.frames)) if dense is not None else None,
        "sparse_seconds": sparse.seconds,
        "dense_seconds": dense.seconds if dense is not None else None,
        "speedup": dense.seconds / sparse.seconds if dense is not None else None,
        "density": density,
        "density_source": density_source,
        # Over every self-attention call of the run, dense warm-up steps and layers included (what the speedup sees).
        "effective_density": _effective_density(summary, density, density_source),
        "backend": summary.get("backend"),
        "kind": preset.kind,
        # sparse_video / dense_video, or sparse_image / dense_image: the files written.
        f"sparse_{preset.kind}": str(out),
        f"dense_{preset.kind}": str(dense_out) if dense_out else None,
        "model": args.model,
        "model_id": preset.model_id,
        "preset": preset.name,
        "pipeline_class": type(pipe).__name__,
        "tiny_source": getattr(pipe, "_dit_sparse_tiny_source", None),
        "method": args.method,
        "config": config.to_dict(),
        **settings,
        "fps": fps,
        "device": str(device),
        "device_name": _device_name(device),
        "dtype": dtype_name,
        "compile": bool(args.compile),
        "offload": bool(args.offload),
        "warmup": bool(warmup),
        "peak_memory_gb": {"sparse": sparse.peak_memory_gb, "dense": dense.peak_memory_gb if dense else None},
        "summary": summary,
        "versions": _versions(),
        "commit": _git_commit(),
        "command": ["dit-sparse", "generate", *getattr(args, "argv", [])],
    }
    report = _json_safe(report)
    if args.report:
        path = Path(args.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def run_density(method: str, result: RunResult) -> Tuple[Optional[float], str]:
    """Mean fraction of key blocks computed in the sparse calls of ``result``, and where the number comes from.

    ``"summary"``: `dit_sparse.summary` statistics; ``"layout"``: the last step's layout, when the statistics were not
    recorded (compiled blocks skip Python-side counters); ``"dense"``: no call was sparse; ``"unknown"``: neither.
    """
    summary = result.summary or {}
    if method == "dense":
        return 1.0, "dense"
    if summary.get("sparse_calls"):
        return float(summary["mean_density"]), "summary"
    if summary.get("calls"):
        return 1.0, "dense"  # calls were recorded and all of them ran dense (e.g. dense_steps >= steps)
    if result.layout is not None:
        return float(result.layout.density()), "layout"
    return None, "unknown"


def _effective_density(summary: Dict[str, Any], density: Optional[float], source: str) -> Optional[float]:
    calls = summary.get("calls") or 0
    if source == "dense":
        return 1.0
    if not calls or density is None:
        return None  # call counts were not recorded (compiled blocks)
    return (summary.get("dense_calls", 0) + density * summary.get("sparse_calls", 0)) / calls


def _versions() -> Dict[str, str]:
    import diffusers

    import dit_sparse

    return {"dit_sparse": dit_sparse.__version__, "torch": torch.__version__, "diffusers": diffusers.__version__}


def _fmt(value, spec: str, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    return f"{value:{spec}}{unit}"


def format_report(report: Dict[str, Any]) -> str:
    """A few human-readable lines: timings, speedup, density, PSNR/SSIM, output paths."""
    kind = report.get("kind", "video")
    size = f"{report['width']}x{report['height']}" + (f", {report['frames']} frames" if kind == "video" else "")
    lines = [
        f"{report['method']} ({report['preset']}, {size}, "
        f"{report['steps']} steps on {report['device']}): {report['sparse_seconds']:.2f} s, "
        f"density {_fmt(report['density'], '.3f')}, backend {report['backend'] or 'n/a'} -> {report[f'sparse_{kind}']}"
    ]
    if report["dense_seconds"] is not None:
        lines.append(f"dense: {report['dense_seconds']:.2f} s -> {report[f'dense_{kind}']}")
        lines.append(
            f"speedup {report['speedup']:.2f}x  "
            f"PSNR {'inf (identical)' if report.get('identical_to_dense') else _fmt(report['psnr'], '.2f', ' dB')}  "
            f"SSIM {_fmt(report['ssim'], '.4f')}"
        )
    return "\n".join(lines)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def enable_ulysses(pipe, degree: int, family: str) -> None:
    """Initialises torch.distributed (under torchrun) and Diffusers' Ulysses context parallelism on the transformers.

    Our processors do the Ulysses exchange themselves for sparse calls, so each rank's pattern sees the whole video.
    """
    import torch.distributed as dist
    from diffusers import ContextParallelConfig

    if "WORLD_SIZE" not in os.environ:
        raise GenerationError("--ulysses needs torchrun: run `dit-sparse generate --ulysses N ...`, which relaunches")
    if int(os.environ["WORLD_SIZE"]) != degree:
        raise GenerationError(f"--ulysses {degree} but torchrun started {os.environ['WORLD_SIZE']} processes")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    plan = None
    if family == "hunyuan_video":
        from dit_sparse.processors.hunyuan_video import context_parallel_plan

        plan = context_parallel_plan()
    for name in ("transformer", "transformer_2"):
        transformer = getattr(pipe, name, None)
        if transformer is not None:
            transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree), cp_plan=plan)


def relaunch_with_torchrun(argv: List[str], degree: int) -> int:
    """``--ulysses N`` outside torchrun: start N processes of this same command through torchrun."""
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={degree}", "-m",
           "dit_sparse.pipelines.generate", *argv]
    return subprocess.call(cmd)


def run_cli(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs ``args``; user errors go through ``parser.exit`` with the message (status 2, 3 for out of memory)."""
    try:
        report = generate(args)
    except GenerationError as err:
        parser.exit(err.exit_code, f"{parser.prog}: error: {err}\n")
    if not report:  # a non-zero Ulysses rank: rank 0 reports
        return 0
    print(format_report(report))
    if args.report:
        print(f"report: {args.report}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m dit_sparse.pipelines.generate [options]``; see ``--help``."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.ulysses > 1 and "WORLD_SIZE" not in os.environ:
        return relaunch_with_torchrun(argv, args.ulysses)
    return run_cli(args, parser)


if __name__ == "__main__":
    sys.exit(main())
