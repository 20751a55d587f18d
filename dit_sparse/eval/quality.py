"""Video quality of each method against dense attention on the packaged trained models (``tiny``, ``small``).

    python -m dit_sparse.eval.quality --model tiny [--out bench/results/quality-tiny.json] [--densities 0.15,0.25,0.35]
    python -m dit_sparse.eval.quality --model small --device cuda        # 8,640 tokens: a GPU run

Every row decodes the same prompts and seeds as the dense run and reports PSNR / SSIM per frame against the dense video
(averaged over frames, then prompts) and the mean density of the sparse calls:

- each method at its preset settings (``presets.<model>.sparse``);
- each method at matched densities: the method's knob (radial ``decay``, draft ``density``, semantic ``top_p``) is
  tuned on attention captured from the model (`dit_sparse.eval.oracle`) to reach each target density;
- a random layout of the same density (`RandomLayoutPattern`), the no-information baseline, under the same schedule.

The schedule (dense steps and layers) is the preset's for every row, so rows differ only in which blocks are kept.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..patterns.base import Pattern
from ..schedule import shared_or_build
from .fidelity import KNOBS as FIDELITY_KNOBS
from .oracle import load_model

PROMPTS = (
    "a red square moves left over a striped background",
    "a blue circle and a green triangle drift up while the camera zooms in over a gray checkered background",
    "a spinning purple triangle and a yellow circle glide right while the camera pans down over a blue striped "
    "background",
)
KNOBS = {method: knob for method, (knob, *_) in FIDELITY_KNOBS.items()}  # method -> its density knob
# What the random baseline copies from the methods' presets: the schedule, and min_sparse_tokens (without it the
# baseline fell back to dense attention on a GPU under 12,288 tokens, the small model's case, and had no density).
SCHEDULE = ("dense_steps", "dense_layers", "min_sparse_tokens")


class RandomLayoutPattern(Pattern):
    """A pattern that keeps random key blocks (the diagonal among them) at a given density: the baseline a
    content-aware pattern must beat. Installed in place of a config's pattern; a new layout per call, or with
    ``reuse`` one per geometry drawn once and shared by the layers like a static pattern's (the step benchmark's
    yardstick, no planning cost)."""

    name = "random"

    def __init__(self, config, density: float, seed: int = 0, reuse: bool = False):
        super().__init__(config)
        self.density, self.seed = density, seed
        self.static = reuse

    def plan(self, q, k, geometry, cache):
        from .fidelity import random_block_layout

        def draw():
            self.seed += 1
            layout = random_block_layout(q.shape[2], k.shape[2], q.shape[1], self.density, self.config.block_size,
                                         self.seed, q.shape[0])
            return layout.to(q.device)

        if not self.static:
            return draw()
        key = ("random", self.density, geometry.key, q.shape[0], q.shape[1], str(q.device))
        return shared_or_build(cache, key, draw)


def calibrate_knobs(pipe, method_options: Dict[str, dict], densities: Sequence[float], size: dict, steps: int,
                    prompt: str, seed: int = 0) -> Dict[str, Dict[float, float]]:
    """Per method and target density, the knob value that reaches the density on attention captured from ``pipe``
    (the middle layer, the step half-way through the run); ``{method: {density: knob}}``."""
    from .fidelity import tune_layout
    from .oracle import capture_attention

    layer = pipe.transformer.config.num_layers // 2
    caps = capture_attention(pipe, prompt, layers=[layer], steps=[steps // 2], num_inference_steps=steps, seed=seed,
                             height=size["height"], width=size["width"], frames=size["num_frames"])
    cap = caps[0]
    q, k = cap.q.to(pipe.device), cap.k.to(pipe.device)
    knobs: Dict[str, Dict[float, float]] = {}
    for method, options in method_options.items():
        if method not in KNOBS:
            continue
        opts = {key: v for key, v in options.items() if key not in SCHEDULE + (KNOBS[method], "block_size")}
        bs = options.get("block_size", 128)
        knobs[method] = {}
        for target in densities:
            _, knob, _, _ = tune_layout(method, q, k, cap.geometry, target, bs, options=opts)
            knobs[method][target] = knob[KNOBS[method]]
    return knobs


def evaluate(
    methods: Sequence[str] = ("radial", "draft", "semantic"),
    prompts: Sequence[str] = PROMPTS,
    height: Optional[int] = None,
    width: Optional[int] = None,
    frames: Optional[int] = None,
    steps: Optional[int] = None,
    seed: int = 0,
    guidance: float = 5.0,
    pipe=None,
    model: str = "tiny",
    densities: Sequence[float] = (),
    random_baseline: bool = False,
    device: str = "cpu",
    progress=None,
    variants: Optional[Dict[str, dict]] = None,
) -> Dict[str, dict]:
    """PSNR / SSIM against dense; returns ``{row name: metrics}`` with rows ``dense``, ``<method>`` (preset),
    ``<method>@<density>`` (matched), ``random@<density>`` (baseline at each target and each preset's density), and
    one row per entry of ``variants`` (``{label: {"method": ..., option: value}}``: the method's preset options with
    these changed).

    Sizes default to the model preset's (the size the model was trained at)."""
    import dit_sparse as ds
    from dit_sparse.pipelines.presets import PRESETS

    from .metrics import psnr, ssim

    preset = PRESETS[model]
    size = dict(height=height or preset.height, width=width or preset.width, num_frames=frames or preset.frames)
    steps = steps or preset.steps
    pipe = pipe if pipe is not None else load_model(model, device)

    def generate(prompt: str) -> np.ndarray:
        out = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance,
                   generator=torch.Generator().manual_seed(seed), output_type="np", **size)
        return out.frames[0]

    def run(name: str, config, pattern=None) -> dict:
        ds.apply_sparse_attention(pipe, config)
        if pattern is not None:
            from dit_sparse.api import get_state

            get_state(pipe.transformer).pattern = pattern
        t0 = time.perf_counter()
        scores = {"psnr": [], "ssim": [], "density": []}
        for prompt, ref in zip(prompts, dense):
            video = generate(prompt)
            scores["psnr"].append(min(psnr(ref, video), 100.0))
            scores["ssim"].append(ssim(ref, video))
            scores["density"].append(ds.summary(pipe)["mean_density"])
        ds.remove_sparse_attention(pipe)
        row = {key: float(np.mean(v)) for key, v in scores.items()}
        row.update(seconds=round(time.perf_counter() - t0, 2), config=config.to_dict())
        if progress:
            progress(f"{name}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}, density {row['density']:.3f}")
        return row

    t0 = time.perf_counter()
    dense = [generate(p) for p in prompts]
    results: Dict[str, dict] = {"dense": {"seconds": round(time.perf_counter() - t0, 2)}}
    options = {m: dict(preset.sparse[m]) for m in methods}
    schedule = {key: v for key, v in options[methods[0]].items() if key in SCHEDULE} if methods else {}
    for method in methods:
        results[method] = run(method, ds.make_config(method, **options[method]))
    for label, variant in (variants or {}).items():
        method = variant["method"]
        changed = {key: v for key, v in variant.items() if key != "method"}
        # A method the model's preset does not list (tile on the video models) starts from the config's defaults.
        results[label] = run(label, ds.make_config(method, **{**preset.sparse_options(method), **changed}))
    if densities:
        knobs = calibrate_knobs(pipe, options, densities, size, steps, prompts[0], seed)
        for method in methods:
            for target, knob in knobs.get(method, {}).items():
                cfg = ds.make_config(method, **{**options[method], KNOBS[method]: knob})
                results[f"{method}@{target}"] = {**run(f"{method}@{target}", cfg), "target_density": target,
                                                 "knob": {KNOBS[method]: knob}}
    if random_baseline:
        block = options[methods[0]].get("block_size", 128) if methods else 128
        # The targets, and the density every method row actually reached (matched rows can miss their target).
        reached = {round(r["density"], 3) for name, r in results.items() if name != "dense"}
        targets = sorted(set(densities) | reached)
        for target in targets:
            cfg = ds.make_config("radial", decay=1.0, block_size=block, **schedule)
            pattern = RandomLayoutPattern(cfg, target, seed=1000)
            results[f"random@{target}"] = {**run(f"random@{target}", cfg, pattern), "target_density": target}
    return results


def random_at(results: Dict[str, dict], density: float) -> Optional[dict]:
    """The random-baseline row whose density is nearest ``density``."""
    rows = [r for name, r in results.items() if name.startswith("random@")]
    return min(rows, key=lambda r: abs(r["density"] - density)) if rows else None


def markdown_table(results: Dict[str, dict]) -> str:
    with_random = any(name.startswith("random@") for name in results)
    head = "| method | setting | density | PSNR vs dense (dB) | SSIM vs dense |"
    sep = "|---|---|---|---|---|"
    if with_random:
        head += " random layout, same density: PSNR / SSIM |"
        sep += "---|"
    lines = [head, sep]
    for name, r in results.items():
        if name == "dense" or name.startswith("random@"):
            continue
        method, _, target = name.partition("@")
        setting = "preset" if not target else f"density {target}"
        if r.get("knob"):
            setting += " (" + ", ".join(f"{k}={v:.3g}" for k, v in r["knob"].items()) + ")"
        line = f"| {method} | {setting} | {r['density']:.3f} | {r['psnr']:.2f} | {r['ssim']:.3f} |"
        if with_random:
            base = random_at(results, r["density"])
            line += f" {base['psnr']:.2f} / {base['ssim']:.3f} (at {base['density']:.3f}) |" if base else " — |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m dit_sparse.eval.quality")
    p.add_argument("--model", default="tiny", choices=["tiny", "small"])
    p.add_argument("--out", default=None, help="JSON path (default bench/results/quality-<model>.json; '' = none)")
    p.add_argument("--methods", default="radial,draft,semantic")
    p.add_argument("--densities", default="0.15,0.25,0.35", help="matched densities ('' = presets only)")
    p.add_argument("--no-random", action="store_true", help="skip the random-layout baseline")
    p.add_argument("--prompts", type=int, default=len(PROMPTS))
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, choices=[None, "float32", "bfloat16", "float16"])
    p.add_argument("--variants", default=None,
                   help='more rows, JSON: {"label": {"method": "draft", "blocks": "tiles", ...}, ...} (preset options '
                        "of that method with these changed)")
    args = p.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    pipe = load_model(args.model, args.device, getattr(torch, args.dtype) if args.dtype else None)
    densities = [float(x) for x in args.densities.split(",") if x]
    t0 = time.perf_counter()
    # --methods '' with --variants runs the variants only (and the dense reference)
    methods = [m for m in args.methods.split(",") if m]
    results = evaluate(methods, prompts=PROMPTS[: args.prompts], height=args.height, width=args.width,
                       frames=args.frames, steps=args.steps, seed=args.seed, pipe=pipe, model=args.model,
                       densities=densities, random_baseline=not args.no_random, device=args.device, progress=log,
                       variants=json.loads(args.variants) if args.variants else None)
    out = f"bench/results/quality-{args.model}.json" if args.out is None else args.out
    if out:
        from .bench import git_commit

        device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
        command = "python -m dit_sparse.eval.quality " + " ".join(argv)
        payload = {"benchmark": f"quality-{args.model}", "command": command,
                   "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
                   "device": device, "settings": {k: v for k, v in vars(args).items() if k != "out"},
                   "prompts": list(PROMPTS[: args.prompts]), "elapsed_s": round(time.perf_counter() - t0, 1),
                   "results": results}
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(payload, indent=2) + "\n")
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
