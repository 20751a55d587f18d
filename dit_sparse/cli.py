"""The ``dit-sparse`` console script."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional


def quickcheck(args) -> int:
    """Runs a tiny random Wan transformer dense and sparse on the CPU and prints densities, difference, timings."""
    import torch
    from diffusers import WanTransformer3DModel

    import dit_sparse as ds

    torch.manual_seed(args.seed)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=64,
        in_channels=4,
        out_channels=4,
        text_dim=32,
        freq_dim=32,
        ffn_dim=128,
        num_layers=4,
        rope_max_seq_len=64,
    ).eval()
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(1, 4, args.frames, args.height // 4, args.width // 4, generator=g)
    text = torch.randn(1, 16, 32, generator=g)
    t = torch.tensor([900.0])

    def timed():
        start = time.perf_counter()
        with torch.no_grad():
            out = model(x, t, text, return_dict=False)[0]
        return out, time.perf_counter() - start

    timed()  # warm-up: first-call allocations would otherwise be billed to the dense run
    dense, dense_s = timed()
    cfg = ds.make_config(args.method, dense_steps=0, dense_layers=1, block_size=64)
    ds.apply_sparse_attention(model, cfg)
    sparse, sparse_s = timed()
    info = ds.summary(model)
    ds.remove_sparse_attention(model)
    report = {
        "method": args.method,
        "tokens": info["geometry"],
        "mean_density": info["mean_density"],
        "layer_density": {k: v["density"] for k, v in info["layers"].items()},
        "max_abs_difference": float((dense - sparse).abs().max()),
        "relative_l2_difference": float((dense - sparse).norm() / dense.norm()),
        "dense_seconds": dense_s,
        "sparse_seconds": sparse_s,
        "backend": info["backend"],
    }
    print(json.dumps(report, indent=2))
    return 0


def _run_generate(args, parser, generate) -> int:
    import os

    argv = [a for a in (getattr(args, "_argv", None) or sys.argv[2:])]
    args.argv = argv
    if args.ulysses > 1 and "WORLD_SIZE" not in os.environ:
        return generate.relaunch_with_torchrun(argv, args.ulysses)
    return generate.run_cli(args, parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dit-sparse", description="Sparse attention for video diffusion transformers"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quickcheck", help="tiny random Wan transformer, dense vs sparse, on the CPU")
    q.add_argument("--method", default="radial", choices=["radial", "dense"])
    q.add_argument("--frames", type=int, default=13)
    q.add_argument("--height", type=int, default=64)
    q.add_argument("--width", type=int, default=96)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=quickcheck)

    from .pipelines import demo, generate

    gen = sub.add_parser(
        "generate",
        help="text-to-video or text-to-image with sparse attention (Wan, HunyuanVideo, FLUX.1-dev, Qwen-Image, or "
        "the offline 'tiny' model)",
        description="Generate a video (mp4) or, with an image model, an image (png) with sparse attention; "
        "--compare-dense also runs the dense baseline with the same seed and reports speedup, PSNR and SSIM.",
    )
    generate.add_generate_arguments(gen)
    gen.set_defaults(func=lambda args: _run_generate(args, gen, generate))

    dem = sub.add_parser("demo", help="Gradio app: dense vs sparse side by side (pip install 'dit-sparse[demo]')")
    demo.add_demo_arguments(dem)
    dem.set_defaults(func=lambda args: demo.run_cli(args, dem))
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv[1:]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
