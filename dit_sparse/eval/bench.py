"""Benchmarks that write JSON under ``bench/results/``: ``kernel``, ``pattern`` and ``e2e``.

Protocol (see GPU.md): correctness first (each sparse run is checked against the exact reference on sampled query
blocks), CUDA-event timing after warm-up, median of repeated runs, dense baselines measured in the same process.

    python -m dit_sparse.eval.bench kernel [--shapes wan1.3b-480p,...] [--densities 1,0.5,0.25,0.1]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ..config import EVERY_TILE
from ..layout import BlockLayout
from ..schedule import BoundedCache, PlanCache

# name -> (tokens, heads, head_dim)
KERNEL_SHAPES = {
    "wan1.3b-480p": (32760, 12, 128),
    "wan14b-720p": (75600, 40, 128),
    "hunyuan-720p": (119056, 24, 128),
    "tiny": (1000, 2, 64),
    "hunyuan-tiny": (3 * 4 * 5 + 7, 2, 64),
    # Image transformers (one frame of 2x2-packed latents; FLUX.1-dev's 24 heads x 128) for `--layout tile`.
    "flux-2048": (128 * 128, 24, 128),
    "flux-4096": (256 * 256, 24, 128),
}
# The token grid (frames, height, width, model) of a kernel shape, for layouts that depend on it (`--layout tile`).
KERNEL_GRIDS = {
    "wan1.3b-480p": (21, 30, 52, "wan"),
    "wan14b-720p": (21, 45, 80, "wan"),
    "tiny": (10, 10, 10, "wan"),
    "flux-2048": (1, 128, 128, "flux"),
    "flux-4096": (1, 256, 256, "flux"),
}

# HunyuanVideo's latent grid (frames, height, width; patch 1x2x2 already applied) and its text tokens.
HUNYUAN_GRIDS = {"hunyuan-720p": (33, 45, 80, 256), "hunyuan-tiny": (3, 4, 5, 7)}

RESULTS_DIR = Path("bench/results")


# ---------------------------------------------------------------------------------------------------------- helpers
def git_commit() -> str:
    env = os.environ.get("DIT_SPARSE_COMMIT")
    if env:
        return env
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], stderr=subprocess.DEVNULL, text=True).strip()
    except Exception:
        return "unknown"


def device_info() -> Dict[str, str]:
    info = {"torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name()
        info["capability"] = "sm%d%d" % torch.cuda.get_device_capability()
    else:
        info["device"] = "cpu"
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        pass
    # The package's switches set for the run (kernel experiments like DIT_SPARSE_TRITON_TMA change what is timed);
    # the commit is recorded on its own.
    switches = {k: v for k, v in os.environ.items() if k.startswith("DIT_SPARSE_") and k != "DIT_SPARSE_COMMIT"}
    if switches:
        info["switches"] = dict(sorted(switches.items()))
    return info


def time_cuda(fn: Callable[[], object], warmup: int = 2, reps: int = 7) -> Dict[str, float]:
    """Median / min milliseconds of ``fn`` with CUDA events (wall clock on the CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    if torch.cuda.is_available():
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    else:
        import time

        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"median_ms": times[len(times) // 2], "min_ms": times[0], "reps": reps}


def queued_cuda_ms(fn: Callable[[], object], single_ms: float, budget_ms: float = 40.0, reps: int = 3) -> float:
    """Milliseconds per call of ``fn`` queued back to back (as many calls as fit ``budget_ms``, 1 to 10), median of
    ``reps``: the host's launch cost hides behind the GPU's work, as in a pipeline. `time_cuda` starts each call on an
    idle GPU, so its time also holds the call's host path until the first kernel starts (for our Triton kernel at
    density 0.10, Wan-1.3B 480p, ~0.6 ms of 2 ms; `bench/probe_triton_loop.py`)."""
    calls = max(1, min(10, int(round(budget_ms / max(single_ms, 1e-3)))))
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / calls)
    times.sort()
    return times[len(times) // 2]


def _profiled_kernels(fn: Callable[[], object], calls: int):
    """``fn`` run ``calls`` times under the profiler: ([(name, self µs, count)] of what ran — kernels on CUDA, host
    operators without it —, wall seconds). The one profiling loop of `kernel_cuda_ms` and `step_kernel_profile`."""
    import time

    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        wall = time.perf_counter() - t0
    events = []
    for e in prof.key_averages():
        us = e.self_device_time_total if cuda else e.self_cpu_time_total
        if us > 0:
            events.append((e.key, us, e.count))
    return events, wall


def kernel_cuda_ms(fn: Callable[[], object], calls: int = 1, name: Optional[str] = None) -> float:
    """The CUDA time of ``fn``'s kernels per call (the profiler's sum over ``calls`` calls, after one call outside
    it); with ``name``, only kernels whose name contains it."""
    fn()
    events, _ = _profiled_kernels(fn, calls)
    return sum(us for key, us, _ in events if name is None or name in key) / 1e3 / calls


def three_clocks(fn: Callable[[], object], flops: float, reps: int = 7, prefix: str = "") -> Dict[str, float]:
    """`time_cuda`'s single calls, plus on CUDA the queued time and the kernels' own time, each with its TFLOP/s
    for ``flops`` per call: ``{prefix}tflops`` (single calls, what the tables used to give alone),
    ``{prefix}queued_tflops``, ``{prefix}kernel_tflops``."""
    t = time_cuda(fn, reps=reps)
    t[f"{prefix}tflops"] = flops / t["median_ms"] / 1e9
    if torch.cuda.is_available():
        t["queued_ms"] = queued_cuda_ms(fn, t["median_ms"])
        t["kernel_ms"] = kernel_cuda_ms(fn, calls=max(1, min(5, int(round(40.0 / max(t["median_ms"], 1e-3))))))
        t[f"{prefix}queued_tflops"] = flops / t["queued_ms"] / 1e9
        t[f"{prefix}kernel_tflops"] = flops / t["kernel_ms"] / 1e9
    return t


def paired_extra_ms(before: Callable[[], object], fn: Callable[[], object], reps: int = 15) -> float:
    """Median over ``reps`` pairs of (time of ``before(); fn()``) - (time of ``before()``), each timed as
    `time_cuda` does, the two halves of a pair back to back: what ``fn`` adds when it is launched behind the GPU work
    of ``before`` (its host-side launches can overlap that work). Pairs, not two medians, so that drift between the
    runs of ``before`` (a clock change, another process) does not land in the difference."""
    def both():
        before()
        fn()

    time_cuda(both, warmup=2, reps=1)
    extra = [time_cuda(both, warmup=0, reps=1)["median_ms"] - time_cuda(before, warmup=0, reps=1)["median_ms"]
             for _ in range(reps)]
    extra.sort()
    return extra[len(extra) // 2]


def random_layout(batch, heads, length, density, block, device, seed=0, kv_block=None) -> BlockLayout:
    """Random block selection at ``density`` (rows hold ``floor`` or ``ceil`` of ``density * Nk`` blocks, the
    diagonal always kept) on ``device``: the fidelity evaluation's random layout, so the kernel benchmark and the
    quality baselines draw the same kind of layout."""
    from .fidelity import random_block_layout

    return random_block_layout(length, length, heads, density, block, seed=seed, batch=batch,
                               kv_block=kv_block).to(device)


def sampled_reference_error(q, k, v, layout: BlockLayout, out: torch.Tensor, rows: int = 4, seed: int = 0) -> float:
    """Max abs error of ``out`` against exact fp32 attention on a few sampled query blocks (all heads); layouts with
    token permutations or variable blocks (a tile layout) against the whole fp32 reference kernel."""
    from ..kernels.reference import reference_block_sparse_attention

    if any(t is not None for t in (layout.q_perm, layout.kv_perm, layout.q_block_starts, layout.kv_block_starts)):
        from ..kernels import block_sparse_attention

        ref = block_sparse_attention(q.float(), k.float(), v.float(), layout, backend="reference")
        return float((ref - out.float()).abs().max())
    g = torch.Generator(device="cpu").manual_seed(seed)
    nq = layout.num_q_blocks
    picks = torch.randperm(nq, generator=g)[:rows].tolist()
    worst = 0.0
    for i in picks:
        sub = BlockLayout(
            layout.kv_indices[:, :, i : i + 1].contiguous(), layout.kv_counts[:, :, i : i + 1].contiguous(),
            layout.block_q, layout.block_kv, min(layout.block_q, layout.seq_len_q - i * layout.block_q),
            layout.seq_len_kv,
        )
        s, e = i * layout.block_q, min((i + 1) * layout.block_q, layout.seq_len_q)
        ref = reference_block_sparse_attention(q[:, :, s:e], k, v, sub, 1.0 / math.sqrt(q.shape[-1]))
        worst = max(worst, float((ref.float() - out[:, :, s:e].float()).abs().max()))
    return worst


def write_result(kind: str, payload: dict, out: Optional[str] = None) -> Path:
    info = payload.setdefault("env", device_info())
    if out:
        path = Path(out)
    else:
        dev = info.get("device", "cpu").replace(" ", "-").replace("/", "-")
        date = _dt.datetime.utcnow().strftime("%Y-%m-%d")
        path = RESULTS_DIR / f"{date}_{dev}_{kind}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    return path


# ---------------------------------------------------------------------------------------------------------- kernel
def _dense_baselines(q, k, v) -> Dict[str, Callable[[], torch.Tensor]]:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fns = {}
    if q.is_cuda:

        def cudnn():
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                return F.scaled_dot_product_attention(q, k, v)

        fns["cudnn_sdpa"] = cudnn
        try:
            from flash_attn.cute.interface import flash_attn_func

            qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            fns["fa4_dense"] = lambda: flash_attn_func(qt, kt, vt)[0]
        except Exception:
            pass
    else:
        fns["sdpa"] = lambda: F.scaled_dot_product_attention(q, k, v)
    return fns


def _kernel_layouts(args, shape_name, q, k, densities, heads, length, device):
    """(row label, layout) pairs of the kernel benchmark: random layouts at ``densities`` (``--layout random``), or
    the image presets' tile pattern on the shape's grid — as one attention call with its token permutation ("tile")
    and without it ("tile-in-order": what the processors run when the step hook has put the tokens in tile order,
    `Pattern.token_order`) — and a random layout of the same density, the yardstick of issue #15's "tile kernel >=
    0.9x FA4's fixed-layout effective rate" (``--layout tile``)."""
    if args.layout == "random":
        return [(d, random_layout(1, heads, length, d, args.block, device, kv_block=args.block_kv))
                for d in densities]
    import dit_sparse as ds

    from ..geometry import VideoGeometry
    from ..patterns import make_pattern
    from ..pipelines.presets import FLUX_SPARSE

    if args.layout == "semantic":
        # Each of --semantic-rows (step-benchmark rows: their semantic options; --top-p 0.3 gives density ~0.25 on
        # random inputs), planned once on the shape's q and k with each of --clusters (the plan reads no geometry).
        # Yardsticks: random layouts of the first plan's density, in 128- and 64-token blocks.
        rows = []
        for row in args.semantic_rows.split(","):
            method, options = STEP_METHODS[row]
            options = {key: value for key, value in options.items() if key != "backend"}
            for clusters in (int(c) for c in args.clusters.split(",")):
                config = ds.make_config(method, **{**options, "kv_clusters": clusters, "top_p": args.top_p})
                plan = make_pattern(config).plan(q, k, VideoGeometry(1, 1, length, "wan"),
                                                 PlanCache(shared=BoundedCache()))
                rows.append((f"{row}-k{clusters}", plan))
        density = float(rows[0][1].density())
        return rows + [(f"random-{density:.3f}", random_layout(1, heads, length, density, 128, device)),
                       (f"random64-{density:.3f}", random_layout(1, heads, length, density, 64, device))]
    if shape_name not in KERNEL_GRIDS:
        raise ValueError(f"--layout tile needs a token grid; shape {shape_name!r} has none (use one of "
                         f"{', '.join(KERNEL_GRIDS)})")
    frames, height, width, model = KERNEL_GRIDS[shape_name]
    options = {key: value for key, value in FLUX_SPARSE["tile"].items() if key not in ("dense_steps", "dense_layers")}
    config = ds.make_config("tile", block_size=args.block, **options)
    geometry = VideoGeometry(frames, height, width, model)
    tile = make_pattern(config).plan(q, k, geometry, PlanCache(shared=BoundedCache()))
    density = float(tile.density())
    return [("tile", tile), ("tile-in-order", tile.without_permutation()),
            (f"random-{density:.3f}", random_layout(1, heads, length, density, args.block, device))]


def _piece_stats(layout: BlockLayout) -> dict:
    """What whole tiles cost for a variable layout: the work of every listed (query piece, key piece) pair as whole
    ``block_q`` x ``block_kv`` tiles (FA4 on padded tiles; our Triton kernel's tiles), relative to dense, and how full
    the non-empty pieces are."""
    b, h = layout.kv_indices.shape[:2]
    tiles = float(layout.kv_counts.double().sum()) * layout.block_q * layout.block_kv
    sizes = (layout.kv_block_starts[..., 1:] - layout.kv_block_starts[..., :-1]).float()
    nonempty = sizes > 0
    return {"tile_density": tiles / (b * h * layout.seq_len_q * layout.seq_len_kv),
            "key_piece_fill": float(sizes[nonempty].mean() / layout.block_kv),
            "pieces_per_head": float(nonempty.sum() / nonempty[..., 0].numel())}


def bench_kernel(args) -> dict:
    from ..kernels import available_backends, block_sparse_attention

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    densities = [float(x) for x in args.densities.split(",")]
    results: Dict[str, dict] = {}
    for shape_name in args.shapes.split(","):
        length, heads, head_dim = KERNEL_SHAPES[shape_name]
        torch.manual_seed(0)
        # Diffusers' layout (B, L, H, D), viewed as (B, H, L, D) as our processors hand it to the kernels.
        q, k, v = (torch.randn(1, length, heads, head_dim, device=device, dtype=dtype).transpose(1, 2)
                   for _ in range(3))
        if args.qkv == "photo":
            q = k = v = None
            _, q, k, v = _video_qkv(shape_name, "photo")
        flops_dense = 4.0 * length * length * heads * head_dim
        entry: Dict[str, dict] = {"tokens": length, "heads": heads, "head_dim": head_dim, "dtype": str(dtype),
                                  "dense": {}, "sparse": {}}
        for name, fn in _dense_baselines(q, k, v).items():
            try:
                entry["dense"][name] = three_clocks(fn, flops_dense, reps=args.reps)
            except Exception as err:  # a baseline that cannot run here is reported, not fatal
                entry["dense"][name] = {"error": repr(err)[:300]}
            print(shape_name, name, entry["dense"][name], flush=True)
        backends = [b for b in args.backends.split(",")]
        avail = available_backends(device, dtype, head_dim)
        for backend in backends:
            if avail.get(backend) != "ok":
                entry["sparse"][backend] = {"unavailable": avail.get(backend, "unknown backend")}
                print(shape_name, backend, entry["sparse"][backend], flush=True)
                continue
            rows = {}
            for d, layout in _kernel_layouts(args, shape_name, q, k, densities, heads, length, device):
                real_d = float(layout.density())
                try:
                    out = block_sparse_attention(q, k, v, layout, backend=backend)
                    err = sampled_reference_error(q, k, v, layout, out)
                    # Effective: the dense FLOPs times the density (the work the layout asks for). The single-call
                    # time is the historical column; the kernel time is the GPU's own (the target's measure).
                    t = three_clocks(lambda: block_sparse_attention(q, k, v, layout, backend=backend),
                                     flops_dense * real_d, reps=args.reps, prefix="effective_")
                    t["density"] = real_d
                    if layout.is_variable:
                        t.update(_piece_stats(layout))
                    t["max_abs_err_vs_reference"] = err
                    t["ok"] = bool(err < 3e-2)
                except Exception as e:
                    t = {"density": real_d, "error": repr(e)[:500]}
                rows[str(d)] = t
                print(shape_name, backend, d, t, flush=True)
            entry["sparse"][backend] = rows
        results[shape_name] = entry
        q = k = v = None  # free the inputs before the next shape
        if device == "cuda":
            torch.cuda.empty_cache()
    payload = {
        # Its own benchmark name: the README's kernel table (random layouts) and the tile table are separate.
        "benchmark": "kernel" if args.layout == "random" else f"kernel-{args.layout}",
        "command": "python -m dit_sparse.eval.bench " + " ".join(sys.argv[1:]),
        "commit": git_commit(),
        "date": _dt.datetime.utcnow().isoformat(timespec="seconds"),
        "block_size": args.block,
        **({"block_kv": args.block_kv} if args.block_kv else {}),
        "selection": {"random": "random blocks per row, diagonal kept",
                      "tile": "the image presets' tile pattern, and random blocks at its density",
                      "semantic": "each --semantic-rows plan at each --clusters and --top-p, and random 128- and "
                                  "64-token blocks at the first one's density"}[args.layout],
        "qkv": args.qkv,
        "results": results,
    }
    path = write_result(payload["benchmark"], payload, args.out)
    print("wrote", path)
    return payload


# ---------------------------------------------------------------------------------------------------------- e2e
# Full-size transformer configs (random weights: no download). Token grids after patching.
E2E_MODELS = {
    "wan1.3b-480p": dict(
        family="wan", latent=(16, 21, 60, 104), text=(512, 4096),
        config=dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                    out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024),
        flow_shift=3.0,
    ),
    "wan14b-720p": dict(
        family="wan", latent=(16, 21, 90, 160), text=(512, 4096),
        config=dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16,
                    out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
                    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024),
        flow_shift=5.0,
    ),
    "hunyuan-720p": dict(
        family="hunyuan_video", latent=(16, 33, 90, 160), text=(256, 4096), config=dict(), flow_shift=7.0,
    ),
    # Image transformers (issue #15): one frame of 2x2-packed latents, an H x W image is an (H/16) x (W/16) grid.
    # FLUX.1-dev: 19 dual- + 38 single-stream blocks, 24 heads x 128, guidance embedded (no CFG pass).
    # The native sizes (1024^2: 4,096 image tokens; Qwen-Image 1328^2: 6,889) are under the automatic dense fallback
    # on a GPU (12,288 tokens) while the image presets ask for sparse there (min_sparse_tokens=0): whether sparse pays
    # at these sizes is what these rows are for.
    "flux-1024": dict(family="flux", grid=(64, 64), text=(512, 4096), pooled=768,
                      config=dict(guidance_embeds=True), full_depth=57),
    "flux-2048": dict(family="flux", grid=(128, 128), text=(512, 4096), pooled=768,
                      config=dict(guidance_embeds=True), full_depth=57),
    "flux-4096": dict(family="flux", grid=(256, 256), text=(512, 4096), pooled=768,
                      config=dict(guidance_embeds=True), full_depth=57),
    # Qwen-Image: 60 blocks, 24 heads x 128, true classifier-free guidance (two calls per step).
    "qwen-image-1328": dict(family="qwen_image", grid=(83, 83), text=(256, 3584), config=dict(), full_depth=60),
    "qwen-image-2048": dict(family="qwen_image", grid=(128, 128), text=(256, 3584), config=dict(), full_depth=60),
    "qwen-image-4096": dict(family="qwen_image", grid=(256, 256), text=(256, 3584), config=dict(), full_depth=60),
    # CPU-sized smoke configurations (tests and `--model tiny`).
    "flux-tiny": dict(family="flux", grid=(8, 16), text=(7, 32), pooled=32, full_depth=3,
                      config=dict(in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=64,
                                  num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                                  guidance_embeds=True, axes_dims_rope=(16, 24, 24))),
    "qwen-image-tiny": dict(family="qwen_image", grid=(8, 16), text=(7, 32), full_depth=2,
                            config=dict(in_channels=16, out_channels=4, num_layers=2, attention_head_dim=64,
                                        num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(16, 24, 24))),
    "hunyuan-tiny": dict(
        family="hunyuan_video", latent=(4, 4, 8, 8), text=(9, 16), pooled=8, flow_shift=7.0, full_depth=4,
        config=dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=64, num_layers=2,
                    num_single_layers=2, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
                    text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(16, 24, 24)),
    ),
    "tiny": dict(
        family="wan", latent=(4, 5, 16, 16), text=(8, 32),
        config=dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=64, in_channels=4,
                    out_channels=4, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, rope_max_seq_len=64),
        flow_shift=3.0,
    ),
}


def _build_transformer(spec, device, dtype):
    import diffusers

    cls = getattr(diffusers, {"wan": "WanTransformer3DModel", "hunyuan_video": "HunyuanVideoTransformer3DModel",
                              "flux": "FluxTransformer2DModel", "qwen_image": "QwenImageTransformer2DModel"}[
                                  spec["family"]])
    torch.manual_seed(0)
    with torch.device(device):
        model = cls(**spec["config"])
    return model.to(dtype).eval()


def _extra_inputs(spec, g, device, dtype) -> dict:
    """The model-specific transformer inputs besides latents, timestep and text (HunyuanVideo's mask, pooled text
    embedding and distilled guidance)."""
    if spec["family"] != "hunyuan_video":
        return {}
    n_text = spec["text"][0]
    return {"encoder_attention_mask": torch.ones(1, n_text, device=device, dtype=torch.long),
            "pooled_projections": torch.randn(1, spec.get("pooled", 768), generator=g).to(device, dtype),
            "guidance": torch.tensor([6000.0], device=device, dtype=dtype)}


def _denoise(model, spec, timesteps, device, dtype, guidance: float, seed: int, cache_contexts: bool):
    """A CFG denoising loop with the scheduler's timesteps (Euler flow-matching update); returns final latents."""
    import contextlib

    calls, to_model_time = _step_inputs(spec, device, dtype, seed)
    latents = calls[0][1]["hidden_states"]
    sigmas = list(timesteps / 1000.0) + [0.0]
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            tt = torch.full((1,), to_model_time(float(t)), device=device)
            outs = []
            for name, inputs in calls:
                with model.cache_context(name) if cache_contexts else contextlib.nullcontext():
                    outs.append(model(timestep=tt, return_dict=False, **dict(inputs, hidden_states=latents))[0])
            noise_pred = outs[0] if len(outs) == 1 else outs[1] + guidance * (outs[0] - outs[1])
            latents = latents + (sigmas[i + 1] - sigmas[i]) * noise_pred
    return latents.float()


def _attention_share(model, spec, device, dtype) -> float:
    """Share of one dense forward's time spent in self-attention (measured: SDPA at the model's shape x layers)."""
    import torch.nn.functional as F

    c, f, h, w = spec["latent"]
    heads, dim = model.config.num_attention_heads, model.config.attention_head_dim
    tokens = f * (h // 2) * (w // 2)
    layers = model.config.num_layers
    if spec["family"] == "hunyuan_video":  # joint attention over [video; text] in dual- and single-stream blocks
        tokens += spec["text"][0]
        layers += model.config.num_single_layers
    q = torch.randn(1, tokens, heads, dim, device=device, dtype=dtype).transpose(1, 2)
    # Diffusers' HunyuanVideo passes its text mask to SDPA (no flash kernel then): time the call it makes.
    mask = (torch.ones(1, 1, 1, tokens, device=device, dtype=torch.bool)
            if spec["family"] == "hunyuan_video" else None)
    t_attn = time_cuda(lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=mask), reps=3)["median_ms"]
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(1, c, f, h, w, generator=g).to(device, dtype)
    n_text, d_text = spec["text"]
    text = torch.randn(1, n_text, d_text, generator=g).to(device, dtype)
    extra = _extra_inputs(spec, g, device, dtype)
    tt = torch.full((1,), 500.0, device=device)
    with torch.no_grad():
        t_fwd = time_cuda(lambda: model(x, tt, text, return_dict=False, **extra), warmup=1, reps=3)["median_ms"]
    return min(1.0, layers * t_attn / t_fwd)


def warmup_steps_like(cfg, warmup_steps: int, steps: int) -> int:
    """The shortest warm-up of at least ``warmup_steps`` steps whose schedule has the kinds of step the timed run of
    ``steps`` has (dense steps, sparse steps): a kind the warm-up lacks is compiled (or autotuned) in the timed run.
    Draft's 10 % dense steps round to none in a 4-step warm-up of a 10-step run."""
    dense = cfg.resolve_dense_steps(steps)
    for n in range(warmup_steps, steps + 1):
        warm_dense = cfg.resolve_dense_steps(n)
        if (warm_dense > 0) == (dense > 0) and (n - warm_dense > 0) == (steps - dense > 0):
            return n
    return steps


def _dynamo_graphs() -> Dict[str, int]:
    """Graphs Dynamo compiled and graph breaks it met since its counters were last cleared."""
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"].get("unique_graphs", 0)),
            "graph_breaks": int(sum(counters["graph_break"].values()))}


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    rng = float(a.max() - a.min()) or 1.0
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(rng**2 / mse)


def bench_e2e(args) -> dict:
    import time

    from diffusers import FlowMatchEulerDiscreteScheduler

    import dit_sparse as ds

    if args.compile != "none" and args.with_cache:
        raise ValueError("bench e2e: --compile and --with-cache do not run together; drop one of them")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    spec = dict(E2E_MODELS[args.model])
    spec["config"] = _depth(spec, args.layers)
    model = _build_transformer(spec, device, dtype)
    sched = FlowMatchEulerDiscreteScheduler(shift=spec["flow_shift"])
    sched.set_timesteps(args.steps, device="cpu")
    timesteps = sched.timesteps.float()
    model_defaults = {"wan": {"radial": {}, "draft": {"density": 0.25}, "semantic": {}},
                      "hunyuan_video": {"radial": {}, "draft": {"density": 0.1}, "semantic": {}}}[spec["family"]]
    methods = args.methods.split(",")
    share = _attention_share(model, spec, device, dtype) if device == "cuda" else None
    runs = {}
    reference = None
    blocks_compiled = False

    if args.compile != "none":
        import torch._dynamo as dynamo
        from torch._dynamo.utils import counters

    def warm_timesteps(n: int) -> torch.Tensor:
        warm_sched = FlowMatchEulerDiscreteScheduler(shift=spec["flow_shift"])
        warm_sched.set_timesteps(n, device="cpu")
        return warm_sched.timesteps.float()

    def run_once(cache_contexts=False, steps=None):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = _denoise(model, spec, timesteps if steps is None else steps, device, dtype, args.guidance, args.seed,
                       cache_contexts)
        if device == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0

    # Compiled (``--compile blocks``): Diffusers' default dense first (eager, the yardstick of every speedup), then
    # dense compiled, then each method compiled; a compiled run is also compared with dense compiled.
    labels = ["dense"] + (["dense-compiled"] if args.compile != "none" else [])
    for label in labels + [m for m in methods if m != "dense"]:
        method = "dense" if label.startswith("dense") else label
        compiled = label != "dense" and args.compile != "none"
        entry = {}
        try:
            if compiled:
                if not blocks_compiled:
                    model.compile_repeated_blocks(fullgraph=True, backend=args.compile_backend)
                    blocks_compiled = True
                # A method's processors are new Python state: each method compiles its own graphs.
                dynamo.reset()
                counters.clear()
                entry["compiled"] = True
            if method != "dense" and args.presets:
                # The preset's whole config, schedule included (dense_steps as a fraction of --steps).
                cfg = ds.make_config(method, backend=args.backend, **_family_presets(spec["family"])[method])
                ds.apply_sparse_attention(model, cfg)
                ds.set_num_inference_steps(model, args.steps)
                entry["config"] = cfg.to_dict()
            elif method != "dense":
                opts = dict(model_defaults.get(method, {}))
                cfg = ds.make_config(method, dense_steps=args.dense_steps, dense_layers=args.dense_layers,
                                     backend=args.backend, **opts)
                ds.apply_sparse_attention(model, cfg)
                entry["config"] = cfg.to_dict()
            if args.warmup and (device == "cuda" or args.warmup_steps or compiled):
                # Compile / autotune / build caches outside the timed run; ``--warmup-steps`` runs a shorter loop
                # whose schedule has the same kinds of step (dense, fresh plan, reused plan) to save device time
                # (and runs on a CPU too, for the tests).
                warm = args.warmup_steps or args.steps
                if args.warmup_steps and method != "dense":
                    warm = warmup_steps_like(cfg, args.warmup_steps, args.steps)
                    ds.set_num_inference_steps(model, warm)
                entry["warmup_steps"] = warm
                run_once(steps=warm_timesteps(warm))
                if args.warmup_steps and method != "dense":
                    ds.set_num_inference_steps(model, args.steps)
                    ds.reset_sparse_state(model)
            graphs_before = _dynamo_graphs()["graphs"] if compiled else 0
            out, seconds = run_once()
            entry["seconds"] = seconds
            if compiled:
                # Graphs compiled in the warm-up, and any the timed run still compiled (then its time is not clean).
                entry.update(_dynamo_graphs())
                entry["graphs_compiled_in_timed_run"] = entry["graphs"] - graphs_before
            if label == "dense":
                reference = out
            elif method == "dense":
                entry["psnr_latents_vs_dense"] = _psnr(reference, out)
                entry["speedup"] = runs["dense"]["seconds"] / seconds
            else:
                info = ds.summary(model)
                entry["mean_density"] = info["mean_density"]
                entry["backend"] = info["backend"]
                entry["sparse_calls"] = info["sparse_calls"]
                entry["dense_calls"] = info["dense_calls"]
                entry["psnr_latents_vs_dense"] = _psnr(reference, out)
                entry["speedup"] = runs["dense"]["seconds"] / seconds
                if "seconds" in runs.get("dense-compiled", {}):
                    entry["speedup_vs_dense_compiled"] = runs["dense-compiled"]["seconds"] / seconds
                # The bounds keep everything but the sparse calls' attention at Diffusers' dense cost: with
                # fast_dense (dense steps on FA4, Wan's fused q/k prologue) they bound nothing.
                if share is not None and entry["mean_density"] is not None and not cfg.fast_dense and not compiled:
                    calls = info["sparse_calls"] + info["dense_calls"]
                    sparse_frac = info["sparse_calls"] / max(calls, 1)
                    entry["amdahl_bound"] = 1.0 / (1.0 - share * sparse_frac)
                    entry["amdahl_at_density"] = 1.0 / (1.0 - share * sparse_frac * (1.0 - entry["mean_density"]))
                ds.remove_sparse_attention(model)
        except Exception as err:
            entry["error"] = repr(err)[:500]
            try:
                ds.remove_sparse_attention(model)
            except Exception:
                pass
        runs[label] = entry
        print(args.model, label, entry, flush=True)

    if args.with_cache:
        # Sparse attention composed with a Diffusers cache (FirstBlockCache): both must run together.
        from diffusers.hooks import FirstBlockCacheConfig

        entry = {}
        try:
            method = [m for m in methods if m != "dense"][0]
            cfg = ds.make_config(method, dense_steps=args.dense_steps, dense_layers=args.dense_layers,
                                 backend=args.backend, **model_defaults.get(method, {}))
            model.enable_cache(FirstBlockCacheConfig(threshold=args.cache_threshold))
            ds.apply_sparse_attention(model, cfg)
            if args.warmup and device == "cuda":
                run_once(cache_contexts=True)
            out, seconds = run_once(cache_contexts=True)
            info = ds.summary(model)
            entry.update(method=method, cache="FirstBlockCache", threshold=args.cache_threshold, seconds=seconds,
                         speedup=runs["dense"]["seconds"] / seconds, mean_density=info["mean_density"],
                         sparse_calls=info["sparse_calls"], psnr_latents_vs_dense=_psnr(reference, out))
            ds.remove_sparse_attention(model)
            model.disable_cache()
        except Exception as err:
            entry["error"] = repr(err)[:500]
        runs["cache+sparse"] = entry
        print(args.model, "cache+sparse", entry, flush=True)

    payload = {
        "benchmark": "e2e",
        "command": "python -m dit_sparse.eval.bench " + " ".join(sys.argv[1:]),
        "commit": git_commit(),
        "date": _dt.datetime.utcnow().isoformat(timespec="seconds"),
        "model": args.model,
        "layers_built": args.layers,
        "latent_shape": list(spec["latent"]),
        "steps": args.steps,
        # The warm-up loop's length asked for; each run records the one it ran (lengthened to hold every kind of
        # step of its schedule, `warmup_steps_like`).
        "warmup_steps": (args.warmup_steps or args.steps) if args.warmup else 0,
        "cfg": len(cfg_branches(spec["family"])) > 1,
        "guidance": args.guidance,
        "dense_steps": "each preset's" if args.presets else args.dense_steps,
        "dense_layers": "each preset's" if args.presets else args.dense_layers,
        "presets": bool(args.presets),
        "compile": (None if args.compile == "none" else
                    f"compile_repeated_blocks(fullgraph=True, backend={args.compile_backend!r})"),
        "weights": "random (no download); PSNR is on final latents vs the dense run",
        "attention_share": share,
        "runs": runs,
    }
    path = write_result(f"e2e-{args.model}", payload, args.out)
    print("wrote", path)
    return payload


# ---------------------------------------------------------------------------------------------------------- pattern
# name -> (token grid, heads, head_dim, geometry model, preset) for the pattern and layer benchmarks
VIDEO_SHAPES = {
    "wan1.3b-480p": ((21, 30, 52), 12, 128, "wan", "wan2.1-1.3b"),
    "wan14b-720p": ((21, 45, 80), 40, 128, "wan", "wan2.1-14b"),
    "hunyuan-720p": ((33, 45, 80), 24, 128, "hunyuan_video", "hunyuanvideo"),
    # The two other Wan sizes: where the plan's cost changes with heads x tokens (session 21, the ordered means).
    "wan1.3b-720p": ((21, 45, 80), 12, 128, "wan", "wan2.1-1.3b"),
    "wan14b-480p": ((21, 30, 52), 40, 128, "wan", "wan2.1-14b"),
    "tiny": ((5, 8, 12), 2, 64, "wan", "tiny"),
}


def _video_qkv(shape: str, content: str = "random"):
    """Geometry and q, k, v (B, H, L, D) as transposed views of Diffusers' (B, L, H, D) layout.

    ``content``: "random" (Gaussian q, k, v: every pattern sees flat attention, so top-p keeps most blocks) or "photo"
    (`dit_sparse.eval.photo_qkv`: photographic content, q close to k, peaked to diffuse heads; the densities a
    content-aware pattern reaches there are those of real attention, not of noise).
    """
    from dit_sparse.geometry import VideoGeometry

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    (f, h, w), heads, dim, model, _ = VIDEO_SHAPES[shape]
    geometry = VideoGeometry(f, h, w, model)
    if content == "photo":
        from dit_sparse.eval.photo_qkv import photo_qkv

        qkv = photo_qkv(geometry, heads=heads, head_dim=dim)
        return (geometry, *(x.to(device=device, dtype=dtype).transpose(1, 2).contiguous().transpose(1, 2)
                            for x in qkv))
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, geometry.num_tokens, heads, dim, device=device, dtype=dtype).transpose(1, 2)
               for _ in range(3))
    return geometry, q, k, v


def bench_pattern(args) -> dict:
    """Pattern overhead (planning a layout) next to the sparse attention it serves, per method.

    With ``--presets`` each method runs at its model preset's options; the overhead at the preset's schedule divides
    a plan by the sparse calls that use it: a dynamic pattern (draft, semantic) plans every ``refresh_every``-th
    sparse step, for both CFG calls of a step with ``share_cfg_layouts``; a static one (radial, tile) is built once
    per geometry and later calls read it (the warm plan: a cache lookup).
    """
    import dit_sparse as ds
    from dit_sparse.kernels import block_sparse_attention
    from dit_sparse.patterns import make_pattern
    from dit_sparse.pipelines.presets import PRESETS

    geometry, q, k, v = _video_qkv(args.shape, args.qkv)
    length, heads = geometry.num_tokens, q.shape[1]
    preset = PRESETS[VIDEO_SHAPES[args.shape][4]]
    rows = {}
    for method in args.methods.split(","):
        entry = {}
        try:
            options = preset.sparse_options(method) if args.presets else {}
            # The schedule's dense steps and layers are the step benchmark's business: every call here is sparse.
            options.update(dense_steps=0, dense_layers=0, backend=args.backend, min_sparse_tokens=0)
            cfg = ds.make_config(method, **options)
            pattern = make_pattern(cfg)
            cache = PlanCache(shared=BoundedCache())  # the per-geometry cache a pipeline's state gives
            layout = pattern.plan(q, k, geometry, cache)
            entry["cold_ms"] = time_cuda(lambda: pattern.plan(q, k, geometry, {}), warmup=1, reps=3)["median_ms"]
            entry["plan_ms"] = time_cuda(lambda: pattern.plan(q, k, geometry, cache), reps=args.reps)["median_ms"]
            entry["attention_ms"] = time_cuda(
                lambda: block_sparse_attention(q, k, v, layout, backend=args.backend), reps=args.reps)["median_ms"]
            if not pattern.static:
                # The plan as a pipeline meets it: launched behind GPU work already queued (here one sparse
                # attention call), where its host-side launches overlap that work; only its GPU time and what the
                # host does after its read of the layout width stay exposed. Isolated, a small plan is bound by
                # its launches (Wan-1.3B 480p: 0.5 ms of CUDA kernels in 2.1 ms of host time under the profiler,
                # session 21). At 720p it measures more behind the attention than alone: the plan's kernels run
                # slower right after a long attention kernel (session 22, ``bench/probe_plan_behind.py``).
                entry["plan_behind_attention_ms"] = paired_extra_ms(
                    lambda: block_sparse_attention(q, k, v, layout, backend=args.backend),
                    lambda: pattern.plan(q, k, geometry, cache), reps=max(args.reps, 15))
            entry["density"] = float(layout.density())
            entry["overhead_ratio"] = entry["plan_ms"] / entry["attention_ms"]
            entry["static"] = bool(pattern.static)
            entry["refresh_every"] = int(cfg.refresh_every)
            # Planning per sparse call at the schedule: a dynamic pattern's plan serves refresh_every sparse steps,
            # and with share_cfg_layouts both CFG calls of each (Wan's pipelines make two transformer calls per step).
            entry["share_cfg_layouts"] = bool(cfg.share_cfg_layouts)
            shared_by = len(cfg_branches(VIDEO_SHAPES[args.shape][3])) if cfg.share_cfg_layouts else 1
            entry["calls_per_plan"] = entry["refresh_every"] * shared_by
            per_call = entry["plan_ms"] if entry["static"] else entry["plan_ms"] / entry["calls_per_plan"]
            entry["overhead_at_schedule"] = per_call / entry["attention_ms"]
            if "plan_behind_attention_ms" in entry:
                entry["overhead_at_schedule_behind_attention"] = (
                    max(0.0, entry["plan_behind_attention_ms"]) / entry["calls_per_plan"] / entry["attention_ms"])
            entry["options"] = {key: val for key, val in options.items() if key != "backend"}
        except Exception as err:
            entry["error"] = repr(err)[:500]
        rows[method] = entry
        print(args.shape, method, entry, flush=True)
    payload = {"benchmark": "pattern", "command": "python -m dit_sparse.eval.bench " + " ".join(sys.argv[1:]),
               "commit": git_commit(), "date": _dt.datetime.utcnow().isoformat(timespec="seconds"),
               "shape": args.shape, "tokens": length, "heads": heads, "qkv": args.qkv,
               "presets": preset.name if args.presets else None, "results": rows}
    path = write_result(f"pattern-{args.shape}", payload, args.out)
    print("wrote", path)
    return payload


# ---------------------------------------------------------------------------------------------------------- layer
def bench_layer(args) -> dict:
    """One self-attention call as a processor makes it: pattern planning + kernel, against dense SDPA."""
    import torch.nn.functional as F

    import dit_sparse as ds
    from dit_sparse.kernels import block_sparse_attention
    from dit_sparse.patterns import make_pattern

    geometry, q, k, v = _video_qkv(args.shape)
    heads = q.shape[1]
    dense_ms = time_cuda(lambda: F.scaled_dot_product_attention(q, k, v), reps=args.reps)["median_ms"]
    rows = {"dense_sdpa": {"ms": dense_ms}}
    for method in args.methods.split(","):
        try:
            cfg = ds.make_config(method, dense_steps=0, dense_layers=0, backend=args.backend)
            pattern = make_pattern(cfg)
            cache = PlanCache(shared=BoundedCache())  # the per-geometry cache a pipeline's state gives
            pattern.plan(q, k, geometry, cache)  # cold start outside the timing (k-means init, caches)

            def call():
                layout = pattern.plan(q, k, geometry, cache)
                return block_sparse_attention(q, k, v, layout, backend=args.backend)

            ms = time_cuda(call, reps=args.reps)["median_ms"]
            rows[method] = {"ms": ms, "speedup_vs_dense": dense_ms / ms,
                            "density": float(pattern.plan(q, k, geometry, cache).density())}
        except Exception as err:
            rows[method] = {"error": repr(err)[:500]}
        print(args.shape, method, rows[method], flush=True)
    payload = {"benchmark": "layer", "command": "python -m dit_sparse.eval.bench " + " ".join(sys.argv[1:]),
               "commit": git_commit(), "date": _dt.datetime.utcnow().isoformat(timespec="seconds"),
               "shape": args.shape, "tokens": geometry.num_tokens, "heads": heads, "results": rows}
    path = write_result(f"layer-{args.shape}", payload, args.out)
    print("wrote", path)
    return payload


# ---------------------------------------------------------------------------------------------------------- prologue
def _prologue_diff(out: torch.Tensor, ref: torch.Tensor) -> dict:
    diff = (out.float() - ref.float()).abs()
    return {"max_abs_diff": float(diff.max()), "share_bit_identical": float((out == ref).float().mean()),
            "max_abs_value": float(ref.float().abs().max())}


def _prologue_wan(shape: str, device, dtype, reps: int) -> dict:
    """Wan: torch.nn.RMSNorm across heads, then the interleaved rotation, on a slice of a fused projection."""
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    from dit_sparse.kernels import qk_norm_rope
    from dit_sparse.processors.wan import _apply_rotary_emb

    tokens, heads, dim = KERNEL_SHAPES[shape]
    f, h, w, _ = KERNEL_GRIDS[shape]
    width = heads * dim
    torch.manual_seed(0)
    norm = torch.nn.RMSNorm(width, eps=1e-6, device=device, dtype=dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(width, device=device) + 0.5)
    # A slice of the fused projection's output, as with fused q/k/v projections (the strided case).
    qkv = torch.randn(1, tokens, 3 * width, device=device, dtype=dtype) * 2
    x = qkv[..., :width]
    cos, sin = WanRotaryPosEmbed(dim, (1, 2, 2), 1024).to(device)(torch.zeros(1, 1, f, 2 * h, 2 * w, device=device))
    entry = {"tokens": tokens, "heads": heads, "head_dim": dim}
    for freqs_name, freqs in (("fp32 freqs (from_pretrained keeps rope in fp32)", (cos, sin)),
                              ("16-bit freqs (a model cast with .to())", (cos.to(dtype), sin.to(dtype)))):
        def stock():
            with torch.no_grad():
                return _apply_rotary_emb(norm(x).unflatten(2, (heads, -1)), *freqs)

        def fused():
            return qk_norm_rope.rms_norm_rope(x, norm.weight, norm.eps, *freqs, heads)

        entry[freqs_name] = {"stock_ms_q_and_k": 2 * time_cuda(stock, reps=reps)["median_ms"],
                             "fused_ms_q_and_k": 2 * time_cuda(fused, reps=reps)["median_ms"],
                             **_prologue_diff(fused(), stock())}
    return entry


def _prologue_hunyuan(shape: str, device, dtype, reps: int) -> dict:
    """HunyuanVideo: Diffusers' RMSNorm per head, the rotation on the video tokens, text after them: a single-stream
    block (one projection of [video; text]) and a dual-stream one (text from its own projection, concatenated)."""
    from diffusers.models.embeddings import apply_rotary_emb
    from diffusers.models.normalization import RMSNorm
    from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoRotaryPosEmbed

    from dit_sparse.kernels import qk_norm_rope

    tokens, heads, dim = KERNEL_SHAPES[shape]
    f, h, w, text = HUNYUAN_GRIDS[shape]
    video = f * h * w
    assert video + text == tokens, (shape, video, text, tokens)
    torch.manual_seed(0)
    norms = [RMSNorm(dim, eps=1e-6).to(device=device, dtype=dtype) for _ in range(2)]
    with torch.no_grad():
        for n in norms:
            n.weight.copy_(torch.rand(dim, device=device) + 0.5)
    x = torch.randn(1, tokens, heads * dim, device=device, dtype=dtype) * 2
    # HunyuanVideo's split of a head's channels between time and the two image axes (16, 56, 56 of 128).
    rope_dims = (16, (dim - 16) // 2, (dim - 16) // 2)
    cos, sin = HunyuanVideoRotaryPosEmbed(2, 1, rope_dims, 256.0)(torch.zeros(1, 1, f, 2 * h, 2 * w, device=device))
    entry = {"tokens": tokens, "video_tokens": video, "text_tokens": text, "heads": heads, "head_dim": dim}

    def single_stock():
        with torch.no_grad():
            y = norms[0](x.unflatten(2, (heads, -1)))
            return torch.cat([apply_rotary_emb(y[:, :video], (cos, sin), sequence_dim=1), y[:, video:]], dim=1)

    def single_fused():
        return qk_norm_rope.head_rms_norm_rope(x, norms[0].weight, norms[0].eps, cos, sin, heads, video)

    xv, xt = x[:, :video].contiguous(), x[:, video:].contiguous()

    def dual_stock():
        with torch.no_grad():
            y = apply_rotary_emb(norms[0](xv.unflatten(2, (heads, -1))), (cos, sin), sequence_dim=1)
            return torch.cat([y, norms[1](xt.unflatten(2, (heads, -1)))], dim=1)

    def dual_fused():
        return qk_norm_rope.joint_head_rms_norm_rope(
            [(xv, norms[0].weight, norms[0].eps, cos, sin, video), (xt, norms[1].weight, norms[1].eps, cos, sin, 0)],
            heads)

    for name, stock, fused in (("single-stream", single_stock, single_fused), ("dual-stream", dual_stock, dual_fused)):
        entry[name] = {"stock_ms_q_and_k": 2 * time_cuda(stock, reps=reps)["median_ms"],
                       "fused_ms_q_and_k": 2 * time_cuda(fused, reps=reps)["median_ms"],
                       **_prologue_diff(fused(), stock())}
    return entry


def bench_prologue(args) -> dict:
    """The q/k prologue (QK-norm, then RoPE) as Diffusers computes it against the fused kernel
    (`kernels.qk_norm_rope`) at a model's shape: time for q and k of one call, and how far the results differ.
    Wan's norm spans all heads; HunyuanVideo's is per head, with text tokens after the rotated video ones."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    rows = {}
    for shape in args.shapes.split(","):
        run = _prologue_hunyuan if shape in HUNYUAN_GRIDS else _prologue_wan
        rows[shape] = run(shape, device, dtype, args.reps)
        print("prologue", shape, rows[shape], flush=True)
    payload = {"benchmark": "prologue", "command": "python -m dit_sparse.eval.bench " + " ".join(sys.argv[1:]),
               "commit": git_commit(), "date": _dt.datetime.utcnow().isoformat(timespec="seconds"),
               "dtype": str(dtype), "results": rows}
    path = write_result("prologue", payload, args.out)
    print("wrote", path)
    return payload


# ---------------------------------------------------------------------------------------------------------- crossover
def bench_crossover(args) -> dict:
    """Where block sparsity starts to pay: one self-attention call (pattern planning + kernel, each method at its
    config's defaults or a step-benchmark row's options) against dense SDPA, over growing videos (``--frame``
    tokens per frame, more frames); per method the fewest tokens at which the sparse call is faster, the number
    ``min_sparse_tokens`` should be."""
    import torch.nn.functional as F

    import dit_sparse as ds
    from dit_sparse.geometry import VideoGeometry
    from dit_sparse.kernels import block_sparse_attention
    from dit_sparse.patterns import make_pattern

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    fh, fw = (int(x) for x in args.frame.lower().split("x"))
    rows: Dict[str, dict] = {}
    for frames in (int(x) for x in args.frames.split(",")):
        geometry = VideoGeometry(frames, fh, fw, "wan")
        torch.manual_seed(0)
        q, k, v = (torch.randn(1, geometry.num_tokens, args.heads, args.head_dim, device=device,
                               dtype=dtype).transpose(1, 2) for _ in range(3))
        entry: Dict[str, dict] = {"dense_sdpa": {"ms": time_cuda(
            lambda: F.scaled_dot_product_attention(q, k, v), reps=args.reps)["median_ms"]}}
        for method in args.methods.split(","):
            try:
                # A method name at its config's defaults, or a step-benchmark row (e.g. semantic-b64: top_p 0.3, a
                # density near 0.25 on random q/k, where the default top_p keeps almost every block).
                name, opts = STEP_METHODS.get(method, (method, {}))
                cfg = ds.make_config(name, dense_steps=0, dense_layers=0, **{"backend": args.backend, **opts})
                pattern = make_pattern(cfg)
                cache = PlanCache(shared=BoundedCache())  # the per-geometry cache a pipeline's state gives
                layout = pattern.plan(q, k, geometry, cache)  # cold start and tilings outside the timing

                def call():
                    # A static pattern's layout is built once per geometry in a run; a dynamic one plans every call.
                    lay = layout if pattern.static else pattern.plan(q, k, geometry, cache)
                    return block_sparse_attention(q, k, v, lay, backend=cfg.backend)

                ms = time_cuda(call, reps=args.reps)["median_ms"]
                entry[method] = {"ms": ms, "speedup_vs_dense": entry["dense_sdpa"]["ms"] / ms,
                                 "density": float(layout.density())}
            except Exception as err:
                entry[method] = {"error": repr(err)[:300]}
        rows[str(geometry.num_tokens)] = entry
        print(args.frame, frames, geometry.num_tokens, entry, flush=True)
        q = k = v = None
    crossover = {}
    for method in args.methods.split(","):
        faster = [int(n) for n, e in rows.items() if e.get(method, {}).get("speedup_vs_dense", 0) > 1.0]
        slower = [int(n) for n, e in rows.items() if 0 < e.get(method, {}).get("speedup_vs_dense", 0) <= 1.0]
        # The smallest size from which every larger measured size is faster.
        crossover[method] = min((n for n in faster if all(s < n for s in slower)), default=None)
    payload = {"benchmark": "crossover", "command": "python -m dit_sparse.eval.bench " + " ".join(sys.argv[1:]),
               "commit": git_commit(), "date": _dt.datetime.utcnow().isoformat(timespec="seconds"),
               "frame": args.frame, "heads": args.heads, "head_dim": args.head_dim, "backend": args.backend,
               "results": rows, "crossover_tokens": crossover}
    path = write_result("crossover", payload, args.out)
    print("crossover", crossover, "wrote", path)
    return payload


# ---------------------------------------------------------------------------------------------------------- step
def _depth(spec, layers: Optional[int]) -> dict:
    """The model config with ``layers`` blocks (HunyuanVideo, FLUX: dual- and single-stream blocks in their 1:2
    ratio)."""
    config = dict(spec["config"])
    if not layers:
        return config
    if spec["family"] in ("wan", "qwen_image"):
        config["num_layers"] = layers
    else:
        config["num_layers"] = max(1, layers // 3)
        config["num_single_layers"] = max(1, layers - layers // 3)
    return config


def _full_depth(spec) -> int:
    if "full_depth" in spec:
        return spec["full_depth"]
    if spec["family"] == "wan":
        return spec["config"]["num_layers"]
    return 20 + 40  # HunyuanVideo 13B: 20 dual-stream + 40 single-stream blocks


def cfg_branches(family: str) -> Tuple[str, ...]:
    """The transformer calls of one denoising step of ``family``'s pipeline: two with classifier-free guidance (Wan,
    Qwen-Image), one for the guidance-distilled models (HunyuanVideo, FLUX.1-dev)."""
    return ("cond", "uncond") if family in ("wan", "qwen_image") else ("cond",)


def _step_inputs(spec, device, dtype, seed: int = 0):
    """Per transformer call of one denoising step, its branch name and keyword inputs (all but ``timestep``; the
    calls share one ``hidden_states`` tensor), and how a scheduler timestep in [0, 1000] becomes the model's
    ``timestep``."""
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device, dtype)

    n_text, d_text = spec["text"]
    family = spec["family"]
    if family in ("wan", "hunyuan_video"):
        latents = rand(1, *spec["latent"])
        extra = _extra_inputs(spec, g, device, dtype)
        calls = [(name, dict(hidden_states=latents, encoder_hidden_states=rand(1, n_text, d_text), **extra))
                 for name in cfg_branches(family)]
        return calls, lambda t: t
    gh, gw = spec["grid"]
    latents = rand(1, gh * gw, 64 if "in_channels" not in spec["config"] else spec["config"]["in_channels"])
    if family == "flux":
        ids = torch.zeros(gh, gw, 3)
        ids[..., 1], ids[..., 2] = torch.arange(gh)[:, None], torch.arange(gw)[None, :]
        inputs = dict(hidden_states=latents, encoder_hidden_states=rand(1, n_text, d_text),
                      pooled_projections=rand(1, spec["pooled"]), img_ids=ids.view(-1, 3).to(device),
                      txt_ids=torch.zeros(n_text, 3, device=device),
                      guidance=torch.full((1,), 3.5, device=device))
        return [("cond", inputs)], lambda t: t / 1000.0
    calls = [(name, dict(hidden_states=latents, encoder_hidden_states=rand(1, n_text, d_text),
                         encoder_hidden_states_mask=torch.ones(1, n_text, device=device, dtype=torch.long),
                         img_shapes=[[(1, gh, gw)]])) for name in cfg_branches(family)]
    return calls, lambda t: t / 1000.0


def _layout_bytes(state) -> int:
    """Bytes of the layouts and warm-start tensors that the state keeps between steps."""
    total = 0
    for entry in state.caches.values():
        for value in entry.values():
            tensors = [value] if isinstance(value, torch.Tensor) else [
                t for t in getattr(value, "__dict__", {}).values() if isinstance(t, torch.Tensor)]
            total += sum(t.numel() * t.element_size() for t in tensors)
    return total


def _family_presets(family: str) -> dict:
    """The presets' per-method options of a model family (`dit_sparse.pipelines.presets`)."""
    from dit_sparse.pipelines import presets

    return {"wan": presets.WAN_SPARSE, "hunyuan_video": presets.HUNYUAN_SPARSE, "flux": presets.FLUX_SPARSE,
            "qwen_image": presets.QWEN_IMAGE_SPARSE}[family]


# The options that shape semantic's layout (not its selection): the step rows set them (a row's name says which).
SEMANTIC_LAYOUT_OPTIONS = ("block_size", "kv_block_size", "pack_pieces", "cluster_order", "fixed_blocks", "clusters")


def _preset_pattern_options(family: str, method: str) -> dict:
    """A preset's options of ``method`` that shape the pattern (decay, window, density, ...), without the schedule:
    the benchmarks time every layer and step sparse, planning on every step unless a row says otherwise."""
    schedule = ("dense_steps", "dense_layers", "refresh_every", "min_sparse_tokens", "fast_dense", "share_cfg_layouts")
    # Semantic's rows name their own layout (piece sizes, packing): the preset's must not turn a row into another.
    shape = SEMANTIC_LAYOUT_OPTIONS if method == "semantic" else ()
    return {key: v for key, v in _family_presets(family).get(method, {}).items() if key not in schedule + shape}


# The step benchmark's rows that run what the presets run (semantic's default blocks are 64 tokens), best first; the
# end-to-end estimate uses the first one measured, after the row of the preset's own refresh period ("draft-r4" where
# the preset says refresh_every=4).
PRESET_ROWS = {"radial": ("radial",), "draft": ("draft-r2", "draft"), "semantic": ("semantic-b64", "semantic"),
               "tile": ("tile",)}


def draft_row_labels(density: float, refresh: int = 1) -> tuple:
    """The step-benchmark rows that time draft at ``density`` planned every ``refresh`` steps, best match first; a
    fixed random layout of that density last (draft runs at 0.97-0.99 of it)."""
    d = "" if density == 0.25 else f"-{density:g}"  # the 0.25 rows carry no density in their names
    return ((f"draft{d}-r{refresh}",) if refresh > 1 else ()) + (f"draft{d}", f"fixed-{density:g}")


def implied_e2e(family: str, full_depth: int, ratios: Dict[str, float]) -> Dict[str, dict]:
    """End to end at each preset's schedule from per-step ratios (every layer sparse): a fraction f of the work is
    dense (the dense steps, and the dense layers of the sparse steps), the rest runs at the step ratio r, so the run
    is ``1 / (f / d + (1 - f) / r)`` times faster, d = 1 for Diffusers' dense attention and the "fa4-full" row's ratio
    for a preset with ``fast_dense`` (1 where that row was not measured). ``ratios``: step row label -> ratio vs
    dense."""
    presets = _family_presets(family)
    out = {}
    for method, labels in PRESET_ROWS.items():
        refresh = presets.get(method, {}).get("refresh_every", 1)
        own = 1  # the leading rows that time the preset's own plan: their "-cfg" rows go first with share_cfg_layouts
        if method == "semantic":
            # The default 64-token blocks before the older 128-token rows, each at the preset's period first.
            labels = tuple(y for x in labels for y in ((f"{x}-r{refresh}", x) if refresh > 1 else (x,)))
        else:
            labels = ((f"{method}-r{refresh}",) if refresh > 1 else ()) + labels
        if method == "draft":
            # The preset's own density first (rows at 0.25 stand in only where none was measured).
            labels = draft_row_labels(presets.get(method, {}).get("density", 0.25), refresh) + labels
        if method == "semantic" and presets.get(method, {}).get("kv_block_size") == 64 \
                and presets[method].get("block_size") == 128:
            # 128-token query pieces holding 64-token key pieces (HunyuanVideo's preset): only their own rows.
            labels = tuple(y for x in ("semantic-b128k64", "semantic-b128k64-fa4")
                           for y in ((f"{x}-r{refresh}", x) if refresh > 1 else (x,)))
        if method == "semantic" and (presets.get(method, {}).get("clusters") == "balanced"
                                     or presets.get(method, {}).get("pack_pieces")):
            # Balanced groups and packed pieces run fixed layouts: only their own rows time them.
            row = "semantic-balanced" if presets[method].get("clusters") == "balanced" else "semantic-packed"
            labels = ((f"{row}-r{refresh}",) if refresh > 1 else ()) + (row,)
            if row == "semantic-packed" and presets[method].get("warm_iters") == 1 and refresh > 1:
                # One warm k-means iteration (the presets since session 21): its own rows first, then the preset's
                # period with two (a step differs by < 1 %, ``...step-hunyuan-720p-semantic-kmeans-sample.json``).
                labels, own = (f"semantic-packed-w1-r{refresh}",) + labels, 2
        if presets.get(method, {}).get("share_cfg_layouts"):
            # The rows whose CFG branches share the preset rows' plan (the "-cfg" rows), where measured.
            labels = tuple(f"{x}-cfg" for x in labels[:own]) + labels
        label = next((x for x in labels if x in ratios), None)
        if label is None or method not in presets:
            continue
        steps = float(presets[method].get("dense_steps", 0.0))
        f = steps + (1 - steps) * presets[method].get("dense_layers", 0) / full_depth
        r = ratios[label]
        # With fast_dense the dense steps and layers run FA4 (the "fa4-full" row) instead of Diffusers' attention.
        d = ratios.get("fa4-full", 1.0) if presets[method].get("fast_dense") else 1.0
        out[method] = {"row": label, "dense_fraction": f, "per_step_ratio": r, "dense_ratio": d,
                       "e2e_implied": 1.0 / (f / d + (1 - f) / r)}
    return out


# Cluster pieces packed whole into fixed 128-token blocks (`SemanticConfig.pack_pieces`, clusters in a similarity
# order): a cover of the pieces' selection on FA4's full tiles; and that layout at the Wan presets' schedule as it
# was until session 20 (planned every other step, both CFG branches on one layout; the presets now plan every 3rd
# step, the "-r3-cfg" rows). The rows' names say their period.
PACKED = {"block_size": 128, "pack_pieces": True, "cluster_order": "similarity"}
PACKED_PRESET = {**PACKED, "refresh_every": 2, "share_cfg_layouts": True}

# The methods of the step benchmark: label -> (method, options). Semantic's top_p is the one that gives a density
# near 0.25 on random weights (the comparison point); every other option is the config's default, but for the
# block sizes the labels name (the rows measured before SemanticConfig's default became 64 keep their meaning).
STEP_METHODS = {
    "radial": ("radial", {}),
    "draft": ("draft", {"density": 0.25}),
    "draft-tiles": ("draft", {"density": 0.25, "blocks": "tiles"}),
    "draft-r2": ("draft", {"density": 0.25, "refresh_every": 2}),
    "draft-r4": ("draft", {"density": 0.25, "refresh_every": 4}),
    "semantic": ("semantic", {"top_p": 0.3, "block_size": 128}),
    "semantic-fixed": ("semantic", {"top_p": 0.3, "fixed_blocks": True, "block_size": 128}),
    "semantic-fixed-r2": ("semantic", {"top_p": 0.3, "fixed_blocks": True, "block_size": 128, "refresh_every": 2}),
    "semantic-r2": ("semantic", {"top_p": 0.3, "block_size": 128, "refresh_every": 2}),
    "semantic-k64": ("semantic", {"top_p": 0.3, "block_size": 128, "kv_clusters": 64}),
    "semantic-b64": ("semantic", {"top_p": 0.3, "block_size": 64}),
    "semantic-b64-r2": ("semantic", {"top_p": 0.3, "block_size": 64, "refresh_every": 2}),
    # Cluster pieces on each engine: our Triton kernel reads them in place, FlashAttention-4 runs them as whole tiles
    # of a padded sequence (`layout.pad_to_tiles`).
    "semantic-b64-triton": ("semantic", {"top_p": 0.3, "block_size": 64, "backend": "triton"}),
    "semantic-b64-fa4": ("semantic", {"top_p": 0.3, "block_size": 64, "backend": "fa4"}),
    "semantic-b64-r2-cfg-fa4": ("semantic", {"top_p": 0.3, "block_size": 64, "refresh_every": 2,
                                             "share_cfg_layouts": True, "backend": "fa4"}),
    # Query pieces of 128 tokens (FA4's full-rate query tile) holding two key pieces of 64; with clusters of at
    # least 256 / 512 tokens on average, fewer pieces run short (their tiles partly empty).
    "semantic-b128k64": ("semantic", {"top_p": 0.3, "block_size": 128, "kv_block_size": 64}),
    "semantic-b128k64-fa4": ("semantic", {"top_p": 0.3, "block_size": 128, "kv_block_size": 64, "backend": "fa4"}),
    "semantic-b128k64-r2": ("semantic", {"top_p": 0.3, "block_size": 128, "kv_block_size": 64, "refresh_every": 2}),
    "semantic-b128k64-triton": ("semantic", {"top_p": 0.3, "block_size": 128, "kv_block_size": 64,
                                             "backend": "triton"}),
    "semantic-b128k64-m256-fa4": ("semantic", {"top_p": 0.3, "block_size": 128, "kv_block_size": 64,
                                               "min_cluster_tokens": 256, "backend": "fa4"}),
    "semantic-b128k64-m512-fa4": ("semantic", {"top_p": 0.3, "block_size": 128, "kv_block_size": 64,
                                               "min_cluster_tokens": 512, "backend": "fa4"}),
    "semantic-b64-m256-fa4": ("semantic", {"top_p": 0.3, "block_size": 64, "min_cluster_tokens": 256,
                                           "backend": "fa4"}),
    "semantic-b32": ("semantic", {"top_p": 0.3, "block_size": 32}),
    # Balanced groups of exactly 128 tokens as blocks (fixed layouts, FA4); top_p 0.3 as the other semantic rows
    # (0.25 gave density 0.21 on Wan-1.3B).
    "semantic-balanced": ("semantic", {"top_p": 0.3, "clusters": "balanced", "block_size": 128}),
    "semantic-balanced-r2": ("semantic", {"top_p": 0.3, "clusters": "balanced", "block_size": 128,
                                          "refresh_every": 2}),
    "semantic-balanced-r4": ("semantic", {"top_p": 0.3, "clusters": "balanced", "block_size": 128,
                                          "refresh_every": 4}),
    # Packed pieces (PACKED above).
    "semantic-packed": ("semantic", {"top_p": 0.3, **PACKED}),
    "semantic-packed-r2": ("semantic", {"top_p": 0.3, **PACKED, "refresh_every": 2}),
    "semantic-packed-p2": ("semantic", {"top_p": 0.2, **PACKED}),
    "semantic-packed-r2-cfg": ("semantic", {"top_p": 0.3, **PACKED_PRESET}),
    "semantic-packed-r3": ("semantic", {"top_p": 0.3, **PACKED, "refresh_every": 3}),
    "semantic-packed-r3-cfg": ("semantic", {"top_p": 0.3, **PACKED_PRESET, "refresh_every": 3}),
    # k-means' first warm iteration on every 4th token (`SemanticConfig.kmeans_sample`), at the presets' period.
    "semantic-packed-s4-r3": ("semantic", {"top_p": 0.3, **PACKED, "refresh_every": 3, "kmeans_sample": 4}),
    "semantic-packed-s4-r3-cfg": ("semantic", {"top_p": 0.3, **PACKED_PRESET, "refresh_every": 3,
                                               "kmeans_sample": 4}),
    # One warm k-means iteration instead of the preset's (session 21: against the sample above, per ms saved).
    "semantic-packed-w1-r3": ("semantic", {"top_p": 0.3, **PACKED, "refresh_every": 3, "warm_iters": 1}),
    "semantic-packed-w1-r3-cfg": ("semantic", {"top_p": 0.3, **PACKED_PRESET, "refresh_every": 3, "warm_iters": 1}),
    # The same with the index lists' width read on the host every plan, as before session 22 made the static width
    # automatic on small layouts (`semantic.STATIC_KMAX_MAX_ENTRIES`).
    "semantic-packed-w1-r3-cfg-trim": ("semantic", {"top_p": 0.3, **PACKED_PRESET, "refresh_every": 3, "warm_iters": 1,
                                                    "static_kmax": False}),
    # Pieces packed into 64-token blocks: at Wan-1.3B 480p's ~65-token clusters 128-token blocks hold ~2 clusters each,
    # and the cover computes 1.5x the pieces' density there (``oracle-small-packed-wan480-clusters.json``).
    "semantic-packed-b64": ("semantic", {"top_p": 0.3, **PACKED, "block_size": 64}),
    "semantic-packed-k64": ("semantic", {"top_p": 0.3, **PACKED, "kv_block_size": 64}),
    # The preset's shape at a lower top_p, where the cover's density on random q/k comes near the yardstick's 0.25
    # (top_p 0.3 gives 0.40 at Wan-14B 720p): what density costs against what planning and the permutation cost.
    "semantic-packed-p2-r2-cfg": ("semantic", {"top_p": 0.2, **PACKED_PRESET}),
    "semantic-packed-p15-r2-cfg": ("semantic", {"top_p": 0.15, **PACKED_PRESET}),
    "semantic-packed-r2-cfg-triton": ("semantic", {"top_p": 0.3, **PACKED_PRESET, "backend": "triton"}),
    # One warm k-means iteration per plan instead of two (k-means is most of a 720p plan's GPU work).
    "semantic-packed-w1-r2-cfg": ("semantic", {"top_p": 0.3, **PACKED_PRESET, "warm_iters": 1}),
    "fixed-0.25": ("fixed", {"density": 0.25}),
    # The step ratio at other densities (the presets trade density against dense steps for the same quality).
    "fixed-0.35": ("fixed", {"density": 0.35}),
    "fixed-0.5": ("fixed", {"density": 0.5}),
    "draft-0.35-r4": ("draft", {"density": 0.35, "refresh_every": 4}),
    # Wan's presets: both CFG calls of a step run the layout the first one planned (share_cfg_layouts).
    "draft-0.35-r4-cfg": ("draft", {"density": 0.35, "refresh_every": 4, "share_cfg_layouts": True}),
    "semantic-b64-r2-cfg": ("semantic", {"top_p": 0.3, "block_size": 64, "refresh_every": 2,
                                         "share_cfg_layouts": True}),
    "fixed-0.1": ("fixed", {"density": 0.1}),
    "draft-0.1-r2": ("draft", {"density": 0.1, "refresh_every": 2}),
    "tile": ("tile", {}),
    # ("tile" is the preset's tile: on video, 2x8x8 tiles, a window over every frame and 3x3 tiles, edge tiles packed
    # into full blocks.) The same window with one block per tile (variable blocks, Triton), and narrower in space.
    # Windows over every frame and narrow in space: what the trained models' heads need (oracle-small-tile.json:
    # 2x8x8 tiles with such a window beat draft; the 3x3x3 cube of the default is worse than random on video).
    "tile-frames": ("tile", {"tile": (2, 8, 8), "window": (EVERY_TILE, 1, 3), "blocks": "tiles"}),
    "tile-frames-3x3": ("tile", {"tile": (2, 8, 8), "window": (EVERY_TILE, 3, 3), "blocks": "tiles"}),
}


# The families whose processors build q and k with the fused kernel (`kernels.qk_norm_rope`) on our kernels' calls.
FUSED_PROLOGUE_FAMILIES = ("wan", "hunyuan_video", "flux", "qwen_image")


def _qk_prologue(device: str) -> str:
    from dit_sparse.kernels import qk_norm_rope

    return "fused" if qk_norm_rope.enabled(torch.empty(0, device=device)) else "stock"


def step_kernel_profile(step, steps: int, top: int = 25) -> dict:
    """GPU time per step by kernel over ``steps`` steps (one refresh cycle, so planning's share is in it): where a
    sparse step's time goes against the yardstick's. ``busy_ms`` is the GPU's kernel time per step; what the step
    takes beyond it is time the GPU waited for the host. Without CUDA, the host's time by operator."""
    events, wall = _profiled_kernels(step, steps)
    events.sort(key=lambda e: -e[1])
    return {"steps": steps, "device": "cuda" if torch.cuda.is_available() else "cpu",
            "busy_ms": sum(us for _, us, _ in events) / 1e3 / steps, "wall_ms_profiled": 1e3 * wall / steps,
            "kernels": [{"name": key[:160], "ms": us / 1e3 / steps, "calls": count / steps}
                        for key, us, count in events[:top]]}


def bench_step(args) -> dict:
    """One denoising step (every transformer call of it, CFG included), every layer sparse, vs Diffusers' default
    dense attention in the same process; plus the end-to-end speedup each preset's schedule implies."""
    import time

    import dit_sparse as ds
    from dit_sparse.api import get_state

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    spec = dict(E2E_MODELS[args.model])
    spec["config"] = _depth(spec, args.layers)
    model = _build_transformer(spec, device, dtype)
    depth = model.config.num_layers + getattr(model.config, "num_single_layers", 0)
    calls, to_model_time = _step_inputs(spec, device, dtype)
    branches = [name for name, _ in calls]
    clock = {"t": 999.0}

    def step():
        clock["t"] -= 7.0  # a new timestep per step, as in a denoising loop
        tt = torch.full((1,), to_model_time(clock["t"]), device=device)
        with torch.no_grad():
            for name, inputs in calls:
                with model.cache_context(name):
                    model(timestep=tt, return_dict=False, **inputs)

    def timed(n_warm: int, n_timed: int) -> dict:
        for _ in range(n_warm):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(n_timed):
            t0 = time.perf_counter()
            step()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        out = {"step_s": sum(times) / len(times), "steps_s": times}
        if device == "cuda":
            out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return out

    rows: Dict[str, dict] = {}
    t0 = time.perf_counter()
    rows["dense"] = timed(1, args.reps)
    rows["dense"]["what"] = "Diffusers' default attention (no processors installed)"
    if args.profile:
        rows["dense"]["gpu_kernels"] = step_kernel_profile(step, 1)
    print(args.model, "dense", rows["dense"], flush=True)
    dense_s = rows["dense"]["step_s"]
    if device == "cuda" and "cudnn" in args.dense_variants.split(","):
        try:
            model.set_attention_backend("_native_cudnn")
            rows["dense-cudnn"] = timed(1, args.reps)
            rows["dense-cudnn"]["ratio_vs_dense"] = dense_s / rows["dense-cudnn"]["step_s"]
        except Exception as err:
            rows["dense-cudnn"] = {"error": repr(err)[:300]}
        finally:
            model.reset_attention_backend()
        print(args.model, "dense-cudnn", rows["dense-cudnn"], flush=True)

    labels = args.methods.split(",")
    if "fa4" in args.dense_variants.split(","):
        labels = ["fa4-full"] + labels
    for label in labels:
        method, opts = ("fixed", {"density": 1.0}) if label == "fa4-full" else STEP_METHODS[label]
        opts = dict(opts)
        entry: dict = {}
        try:
            # The yardstick runs on FA4 where the layout allows it (auto picks it first on Hopper); a row may name
            # its engine.
            backend = opts.pop("backend", args.backend)
            name = "radial" if method == "fixed" else method
            # The preset's pattern options (radial's decay on image models, tile's window), then the row's.
            preset = _preset_pattern_options(spec["family"], name)
            cfg = ds.make_config(name, dense_steps=0, dense_layers=0, backend=backend, min_sparse_tokens=0,
                                 **({} if method == "fixed" else {**preset, **opts}))
            ds.apply_sparse_attention(model, cfg)
            if cfg.refresh_every > 1:
                ds.set_num_inference_steps(model, 1000)
            state = get_state(model)
            if method == "fixed":
                from .quality import RandomLayoutPattern

                # Drawn once per geometry and reused: the kernel's fixed-layout rate with no planning at all.
                state.pattern = RandomLayoutPattern(cfg, opts["density"], reuse=True)
            first = time.perf_counter()
            step()
            if device == "cuda":
                torch.cuda.synchronize()
            entry["first_step_s"] = time.perf_counter() - first
            # With layouts reused across steps, the timed steps are whole refresh cycles starting at a planning step,
            # so that the mean carries planning's share (reused steps alone would leave it out).
            r = cfg.refresh_every
            n_warm = max(0, args.warmup - 1)
            n_warm += -(1 + n_warm) % r
            entry.update(timed(n_warm, -(-args.reps // r) * r), timed_steps_per_plan=r)
            info = ds.summary(model)
            entry.update(config=cfg.to_dict(), backend=info["backend"], mean_density=info["mean_density"],
                         ratio_vs_dense=dense_s / entry["step_s"], kept_between_steps_bytes=_layout_bytes(state))
            if args.profile:
                # After the timing, so the profiler's own overhead stays out of step_s.
                entry["gpu_kernels"] = step_kernel_profile(step, r)
            if label == "fa4-full":
                entry["what"] = "FlashAttention-4 through our processors with every block listed (fastest dense here)"
        except Exception as err:
            entry["error"] = repr(err)[:500]
        finally:
            try:
                ds.remove_sparse_attention(model)
            except Exception:
                pass
        rows[label] = entry
        print(args.model, label, {k: v for k, v in entry.items() if k != "config"}, flush=True)

    full = _full_depth(E2E_MODELS[args.model])
    implied = implied_e2e(spec["family"], full,
                          {label: e["ratio_vs_dense"] for label, e in rows.items() if "ratio_vs_dense" in e})
    payload = {
        "benchmark": "step", "command": "python -m dit_sparse.eval.bench " + " ".join(sys.argv[1:]),
        "commit": git_commit(), "date": _dt.datetime.utcnow().isoformat(timespec="seconds"),
        "model": args.model, "family": spec["family"],
        # How the sparse calls built q and k (`kernels.qk_norm_rope`): the report marks rows measured without it.
        "qk_prologue": _qk_prologue(device) if spec["family"] in FUSED_PROLOGUE_FAMILIES else None,
        "latent_shape": list(spec["latent"]) if "latent" in spec else None,
        "token_grid": list(spec["grid"]) if "grid" in spec else None, "cfg_calls_per_step": len(branches),
        "layers_timed": depth, "layers_full_model": full,
        "note": ("random weights; every layer and step sparse; ratio = dense step / sparse step in this process. "
                 + ("" if depth == full else f"Depth cut to {depth} of {full} identical blocks to save device time: "
                    "the per-step ratio of the full model is the same up to the embedding and output layers' share.")),
        "elapsed_s": time.perf_counter() - t0, "results": rows, "e2e_implied": implied,
    }
    path = write_result(f"step-{args.model}", payload, args.out)
    print("wrote", path)
    return payload


# ---------------------------------------------------------------------------------------------------------- compile
def bench_compile(args) -> dict:
    """Each method eager vs ``compile_repeated_blocks(fullgraph=True)`` (or, ``--route model``, the whole
    transformer under ``torch.compile(fullgraph=True)``), and Diffusers' dense eager vs compiled: step
    time after warm-up, the first steps' time (compilation included), graphs compiled (one per distinct block: more
    means recompilation) and graph breaks over ``--steps`` denoising steps with CFG (a fresh model per row:
    compilation changes the module in place)."""
    import time

    import torch._dynamo
    from torch._dynamo.utils import counters

    import dit_sparse as ds

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    spec = dict(E2E_MODELS[args.model])
    spec["config"] = _depth(spec, args.layers)
    calls, to_model_time = _step_inputs(spec, device, dtype)

    def run_steps(model, steps: int) -> List[float]:
        times = []
        for i in range(steps):
            tt = torch.full((1,), to_model_time(999.0 - 7.0 * i), device=device)
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.no_grad():
                for name, inputs in calls:
                    with model.cache_context(name, step_index=i, num_inference_steps=steps):
                        model(timestep=tt, return_dict=False, **inputs)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return times

    rows: Dict[str, dict] = {}
    for label in ["dense"] + [m for m in args.methods.split(",") if m and m != "dense"]:
        for compiled in (False, True):
            name = f"{label}-{'compiled' if compiled else 'eager'}"
            entry: dict = {}
            try:
                model = _build_transformer(spec, device, dtype)
                if label != "dense":
                    method, opts = STEP_METHODS[label]
                    preset = _preset_pattern_options(spec["family"], method)
                    cfg = ds.make_config(method, dense_steps=0, dense_layers=0, min_sparse_tokens=0,
                                         **{"backend": args.backend, **preset, **opts})
                    ds.apply_sparse_attention(model, cfg)
                    entry["config"] = cfg.to_dict()
                torch._dynamo.reset()
                counters.clear()
                runner = model
                if compiled and args.route == "blocks":
                    model.compile_repeated_blocks(fullgraph=True, backend=args.compile_backend)
                elif compiled:
                    # The whole transformer as one graph (torch.compile(transformer), what Diffusers' own tests do).
                    runner = torch.compile(model, fullgraph=True, backend=args.compile_backend)
                with torch._dynamo.config.patch(error_on_recompile=False):
                    times = run_steps(runner, args.steps)
                warm = times[args.warmup:] or times[-1:]
                entry.update(first_steps_s=times[: args.warmup], step_s=sum(warm) / len(warm), steps_s=times,
                             **_dynamo_graphs(), frames_compiled=int(counters["stats"].get("calls_captured", 0)))
                if label != "dense":
                    entry["mean_density"] = ds.summary(model)["mean_density"]
            except Exception as err:
                entry["error"] = repr(err)[:500]
            rows[name] = entry
            print(args.model, name, {k: v for k, v in entry.items() if k != "config"}, flush=True)
            model = None
            if device == "cuda":
                torch.cuda.empty_cache()
    for name, entry in rows.items():
        base = rows.get("dense-compiled" if name.endswith("compiled") else "dense-eager", {})
        if "step_s" in entry and "step_s" in base:
            entry["ratio_vs_dense_same_mode"] = base["step_s"] / entry["step_s"]
        if "step_s" in entry and "step_s" in rows.get("dense-eager", {}):
            entry["ratio_vs_dense_eager"] = rows["dense-eager"]["step_s"] / entry["step_s"]
    payload = {
        "benchmark": "compile", "command": "python -m dit_sparse.eval.bench " + " ".join(sys.argv[1:]),
        "commit": git_commit(), "date": _dt.datetime.utcnow().isoformat(timespec="seconds"), "model": args.model,
        "layers": spec["config"].get("num_layers"), "steps": args.steps, "warmup_steps": args.warmup,
        "compile": (f"compile_repeated_blocks(fullgraph=True, backend={args.compile_backend!r})"
                    if args.route == "blocks" else
                    f"torch.compile(transformer, fullgraph=True, backend={args.compile_backend!r})"),
        "results": rows,
    }
    path = write_result(f"compile-{args.model}", payload, args.out)
    print("wrote", path)
    return payload


# ---------------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dit_sparse.eval.bench")
    sub = p.add_subparsers(dest="what", required=True)
    k = sub.add_parser("kernel", help="block-sparse kernels vs dense baselines at several densities")
    k.add_argument("--shapes", default="wan1.3b-480p,wan14b-720p,hunyuan-720p")
    k.add_argument("--densities", default="1.0,0.5,0.25,0.1")
    k.add_argument("--backends", default="fa4,triton,flex")
    k.add_argument("--block", type=int, default=128)
    k.add_argument("--block-kv", type=int, default=None,
                   help="key block size of the random layouts (default: --block)")
    k.add_argument("--layout", default="random", choices=["random", "tile", "semantic"],
                   help="random blocks at --densities, or the tile pattern (image presets) or semantic's plans "
                        "(--semantic-rows), and random at its density")
    k.add_argument("--clusters", default="500", help="--layout semantic: kv_clusters of each semantic row")
    k.add_argument("--semantic-rows", default="semantic-b64",
                   help="--layout semantic: step-benchmark rows whose semantic options to plan with")
    k.add_argument("--top-p", type=float, default=0.3, help="--layout semantic: top_p (0.3: density ~0.25 on random "
                   "q/k; the presets' 0.9 on --qkv photo)")
    k.add_argument("--qkv", default="random", choices=("random", "photo"),
                   help="photo: photographic q/k/v of the shape's video grid (realistic cluster sizes and densities)")
    k.add_argument("--reps", type=int, default=7)
    k.add_argument("--out", default=None)
    k.set_defaults(func=bench_kernel)
    e = sub.add_parser("e2e", help="full-size random-weight transformer, CFG denoising loop, dense vs each method")
    e.add_argument("--model", default="wan1.3b-480p", choices=sorted(E2E_MODELS))
    e.add_argument("--methods", default="radial,draft,semantic")
    e.add_argument("--steps", type=int, default=10)
    e.add_argument("--dense-steps", type=int, default=2)
    e.add_argument("--dense-layers", type=int, default=1)
    e.add_argument("--layers", type=int, default=None,
                   help="blocks to build (default: the full model); a preset's dense layers then weigh more")
    e.add_argument("--presets", action="store_true",
                   help="each method at its preset for the model family, schedule included (ignores --dense-steps/"
                        "--dense-layers): the measured counterpart of the step benchmark's implied end to end")
    e.add_argument("--guidance", type=float, default=5.0)
    e.add_argument("--backend", default="auto")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--warmup", type=int, default=1)
    e.add_argument("--warmup-steps", type=int, default=None,
                   help="steps of the warm-up run (default: --steps); the preset's schedule scales to them")
    e.add_argument("--with-cache", action="store_true", help="also run FirstBlockCache together with sparse attention")
    e.add_argument("--cache-threshold", type=float, default=0.05)
    e.add_argument("--compile", default="none", choices=("none", "blocks"),
                   help="blocks: after Diffusers' dense run (eager), run dense and every method with the transformer "
                        "blocks compiled (compile_repeated_blocks(fullgraph=True)); compilation in the warm-up")
    e.add_argument("--compile-backend", default="inductor", help="torch.compile backend (aot_eager on a CPU test)")
    e.add_argument("--out", default=None)
    e.set_defaults(func=bench_e2e)
    pt = sub.add_parser("pattern", help="pattern planning overhead vs the sparse attention it serves")
    pt.add_argument("--shape", default="wan1.3b-480p", choices=sorted(VIDEO_SHAPES))
    pt.add_argument("--methods", default="radial,draft,semantic")
    pt.add_argument("--presets", action="store_true",
                    help="each method at the shape's model preset (density, top_p, refresh_every, ...), and the "
                         "planning overhead per sparse call at the preset's schedule")
    pt.add_argument("--qkv", default="random", choices=("random", "photo"),
                    help="photo: photographic q/k/v (realistic densities for the content-aware patterns)")
    pt.add_argument("--backend", default="auto")
    pt.add_argument("--reps", type=int, default=7)
    pt.add_argument("--out", default=None)
    pt.set_defaults(func=bench_pattern)
    ly = sub.add_parser("layer", help="one attention call including the pattern, vs dense SDPA")
    ly.add_argument("--shape", default="wan1.3b-480p", choices=sorted(VIDEO_SHAPES))
    ly.add_argument("--methods", default="radial,draft,semantic")
    ly.add_argument("--backend", default="auto")
    ly.add_argument("--reps", type=int, default=7)
    ly.add_argument("--out", default=None)
    ly.set_defaults(func=bench_layer)
    st = sub.add_parser("step", help="one denoising step per method vs Diffusers' default dense, same process")
    st.add_argument("--model", default="wan1.3b-480p", choices=sorted(E2E_MODELS))
    st.add_argument("--methods", default="radial,draft,semantic,fixed-0.25")
    st.add_argument("--dense-variants", default="cudnn,fa4", help="faster dense rows: cudnn (Diffusers' "
                    "_native_cudnn backend), fa4 (FlashAttention-4 with every block, through our processors)")
    st.add_argument("--layers", type=int, default=None, help="blocks to build (default: the full model)")
    st.add_argument("--backend", default="auto")
    st.add_argument("--warmup", type=int, default=1)
    st.add_argument("--reps", type=int, default=2)
    st.add_argument("--profile", action="store_true", help="also each row's GPU time per step by kernel, after its "
                    "timing (on a CPU the host's time by operator)")
    st.add_argument("--out", default=None)
    st.set_defaults(func=bench_step)
    co = sub.add_parser("compile", help="each method eager vs compile_repeated_blocks, and dense eager vs compiled")
    co.add_argument("--model", default="wan1.3b-480p", choices=sorted(E2E_MODELS))
    co.add_argument("--methods", default="radial,draft,draft-r2,semantic-b64")
    co.add_argument("--layers", type=int, default=None, help="blocks to build (default: the full model)")
    co.add_argument("--steps", type=int, default=4)
    co.add_argument("--warmup", type=int, default=2, help="first steps not counted in step_s (compilation)")
    co.add_argument("--backend", default="auto")
    co.add_argument("--compile-backend", default="inductor", help="torch.compile backend (aot_eager on a CPU test)")
    co.add_argument("--route", default="blocks", choices=("blocks", "model"),
                    help="blocks: compile_repeated_blocks(fullgraph=True); model: torch.compile(the transformer)")
    co.add_argument("--out", default=None)
    co.set_defaults(func=bench_compile)
    pr = sub.add_parser("prologue", help="QK-norm + RoPE (Wan, HunyuanVideo): stock vs fused kernel")
    pr.add_argument("--shapes", default="wan1.3b-480p,wan14b-720p,hunyuan-720p")
    pr.add_argument("--reps", type=int, default=7)
    pr.add_argument("--out", default=None)
    pr.set_defaults(func=bench_prologue)

    cr = sub.add_parser("crossover", help="the video size from which each method's sparse call beats dense SDPA")
    cr.add_argument("--frame", default="30x52", help="tokens per frame, height x width (Wan 480p: 30x52)")
    cr.add_argument("--frames", default="1,2,3,5,8,13,21")
    cr.add_argument("--heads", type=int, default=12)
    cr.add_argument("--head-dim", type=int, default=128)
    cr.add_argument("--methods", default="radial,draft,semantic")
    cr.add_argument("--backend", default="auto")
    cr.add_argument("--reps", type=int, default=7)
    cr.add_argument("--out", default=None)
    cr.set_defaults(func=bench_crossover)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
