"""Video quality of each method against dense attention on the packaged, trained ``tiny`` model (CPU, no download).

    python -m dit_sparse.eval.quality [--out bench/results/quality-tiny.json] [--height 128 --width 128 --steps 10]

Each method runs at the tiny preset's settings (``dit_sparse.pipelines.presets.TINY_SPARSE``) with the same prompts
and seeds as the dense run; PSNR / SSIM (and LPIPS where its weights are installed) are computed per frame against
the dense video and averaged, then averaged over prompts.
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

PROMPTS = (
    "a red square moves left over a striped background",
    "a blue circle and a green triangle drift up while the camera zooms in over a gray checkered background",
)


def evaluate(
    methods: Sequence[str] = ("radial", "draft", "semantic"),
    prompts: Sequence[str] = PROMPTS,
    height: int = 128,
    width: int = 128,
    frames: int = 17,
    steps: int = 10,
    seed: int = 0,
    guidance: float = 5.0,
    pipe=None,
) -> Dict[str, dict]:
    """PSNR / SSIM of each method against dense on the tiny model; returns ``{method: metrics}``."""
    import dit_sparse as ds
    from dit_sparse.pipelines.presets import TINY_SPARSE
    from dit_sparse.pipelines.tiny import build_tiny_pipeline

    from .metrics import psnr, ssim

    pipe = pipe if pipe is not None else build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)

    def generate(prompt: str) -> np.ndarray:
        out = pipe(prompt, height=height, width=width, num_frames=frames, num_inference_steps=steps,
                   guidance_scale=guidance, generator=torch.Generator().manual_seed(seed), output_type="np")
        return out.frames[0]

    t0 = time.perf_counter()
    dense = [generate(p) for p in prompts]
    results: Dict[str, dict] = {"dense": {"seconds": time.perf_counter() - t0}}
    for method in methods:
        cfg = ds.make_config(method, **TINY_SPARSE[method])
        ds.apply_sparse_attention(pipe, cfg)
        t0 = time.perf_counter()
        scores = {"psnr": [], "ssim": [], "density": []}
        for prompt, ref in zip(prompts, dense):
            video = generate(prompt)
            scores["psnr"].append(psnr(ref, video))
            scores["ssim"].append(ssim(ref, video))
            scores["density"].append(ds.summary(pipe)["mean_density"])
        ds.remove_sparse_attention(pipe)
        results[method] = {k: float(np.mean(v)) for k, v in scores.items()}
        results[method]["seconds"] = time.perf_counter() - t0
        results[method]["config"] = cfg.to_dict()
    return results


def markdown_table(results: Dict[str, dict]) -> str:
    lines = ["| method | PSNR vs dense (dB) | SSIM vs dense | mean density of sparse calls |", "|---|---|---|---|"]
    for method, r in results.items():
        if method == "dense":
            continue
        lines.append(f"| {method} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['density']:.2f} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dit_sparse.eval.quality")
    p.add_argument("--out", default="bench/results/quality-tiny.json")
    p.add_argument("--methods", default="radial,draft,semantic")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    results = evaluate(args.methods.split(","), height=args.height, width=args.width, frames=args.frames,
                       steps=args.steps, seed=args.seed)
    payload = {"benchmark": "quality-tiny", "command": "python -m dit_sparse.eval.quality " + " ".join(argv or []),
               "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "settings": {k: v for k, v in vars(args).items() if k != "out"}, "prompts": list(PROMPTS),
               "results": results}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(payload, indent=2))
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
