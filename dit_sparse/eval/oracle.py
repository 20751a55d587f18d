"""Oracle-relative fidelity of the block-selection patterns on attention captured from a *trained* model.

A pattern is judged by where its error falls between two layouts of the same density: a random layout (no
information) and the oracle (per query block, the key blocks that carry the most dense attention mass, computed
exactly). The normalised gain

    gain = (err_random - err) / (err_random - err_oracle)

is 0 for a pattern that chooses no better than chance and 1 for one that chooses as well as the oracle (it can be
negative: worse than random; and above 1: a permuted layout can beat the raster-block oracle). ``err`` is the
relative L2 error of the attention output against dense attention; the attention mass kept is reported beside it.

q, k, v come from a real denoising run (`capture_attention` hooks our processors with the dense config, so the run
itself is exactly dense) at a few layers and steps.

    python -m dit_sparse.eval.oracle --model tiny [--out bench/results/oracle-tiny.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from ..geometry import VideoGeometry
from ..layout import BlockLayout, cdiv
from ..schedule import BoundedCache, PlanCache
from .fidelity import KNOBS, DenseReference, attention_error, random_block_layout, tune_layout


@dataclasses.dataclass
class CapturedAttention:
    """q, k, v (B, H, L, D) of one self-attention call of a denoising run, video tokens in raster order."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    geometry: VideoGeometry
    layer: int
    step: int
    branch: int

    @property
    def name(self) -> str:
        return f"layer{self.layer}/step{self.step}/branch{self.branch}"


class _CaptureCore:
    """Wraps a processor's `SparseAttentionCore`: records q, k, v of chosen (layer, step, branch), then delegates."""

    def __init__(self, core, layers, steps, branches, store: List[CapturedAttention], dtype):
        self.core, self.layers, self.steps, self.branches, self.store, self.dtype = (
            core, layers, steps, branches, store, dtype)

    def __getattr__(self, name):
        # Everything else the processors ask of their core (`runs_own_kernel` on CUDA, where Wan's processor builds
        # q and k with the fused kernel when our kernels run the call) is the wrapped core's.
        return getattr(self.core, name)

    def __call__(self, query, key, value, **kwargs):
        state = self.core.state
        if self.core.layer in self.layers and state.step in self.steps and state.branch in self.branches:
            def grab(x):  # Diffusers' (B, L, H, D) -> (B, H, L, D), detached, on the CPU to keep GPU memory free
                return x.detach().transpose(1, 2).to("cpu", self.dtype).contiguous()

            self.store.append(CapturedAttention(grab(query), grab(key), grab(value), state.geometry,
                                                self.core.layer, state.step, state.branch))
        return self.core(query, key, value, **kwargs)


def capture_attention(
    pipe,
    prompt: str,
    *,
    layers: Sequence[int],
    steps: Sequence[int],
    branches: Sequence[int] = (0,),
    height: int,
    width: int,
    frames: int,
    num_inference_steps: int,
    guidance_scale: float = 5.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> List[CapturedAttention]:
    """Runs ``pipe`` densely and returns the self-attention q, k, v of the given layers, steps and CFG branches.

    Args:
        pipe: a Diffusers video pipeline whose transformer our processors support (Wan, HunyuanVideo).
        prompt (`str`): the prompt.
        layers, steps, branches (`Sequence[int]`): which transformer blocks, denoising steps (0-based) and CFG
            branches (0 = the first call of a step) to record.
        height, width, frames, num_inference_steps, guidance_scale, seed: the generation.
        dtype (`torch.dtype`): dtype of the stored tensors (float32 by default: fidelity is computed in float32).

    Returns:
        `List[CapturedAttention]` in call order.
    """
    from .. import DenseConfig, apply_sparse_attention, remove_sparse_attention

    apply_sparse_attention(pipe, DenseConfig(dense_steps=0, dense_layers=0))
    store: List[CapturedAttention] = []
    wrapped = []
    try:
        for proc in pipe.transformer.attn_processors.values():
            core = getattr(proc, "core", None)
            if core is not None and not isinstance(core, _CaptureCore):
                proc.core = _CaptureCore(core, set(layers), set(steps), set(branches), store, dtype)
                wrapped.append(proc)
        pipe(prompt, height=height, width=width, num_frames=frames, num_inference_steps=num_inference_steps,
             guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(seed), output_type="latent")
    finally:
        for proc in wrapped:
            proc.core = proc.core.core
        remove_sparse_attention(pipe)
    return store


def load_model(model: str, device: str = "cpu", dtype: Optional[torch.dtype] = None):
    """The packaged trained pipeline ``tiny`` or ``small`` on ``device``."""
    from ..pipelines import tiny as _tiny

    builders = {"tiny": _tiny.build_tiny_pipeline, "small": getattr(_tiny, "build_small_pipeline", None)}
    if builders.get(model) is None:
        raise ValueError(f"unknown packaged model {model!r}; use 'tiny' or 'small'")
    pipe = builders[model]()
    if getattr(pipe, "_dit_sparse_tiny_source", None) == "random":
        # build_tiny_pipeline falls back to random weights (for shape tests); attention measured there says nothing
        # about a trained model, and an oracle or quality run on it looked plausible when the weights were missing.
        raise ValueError(
            "the trained tiny model was not found (dit_sparse/pipelines/tiny_model/ or $DIT_SPARSE_TINY_MODEL), and "
            "these evaluators measure a trained model's attention; reinstall dit-sparse or set DIT_SPARSE_TINY_MODEL "
            "to a folder written by python -m dit_sparse.pipelines.train_tiny"
        )
    pipe.set_progress_bar_config(disable=True)
    if dtype is not None:
        pipe.transformer.to(dtype)
    return pipe.to(device)



# ------------------------------------------------------------------------------------------------------ the oracle
def block_mass(reference: DenseReference, block: int) -> torch.Tensor:
    """Dense attention mass of every (query block, key block) pair, [B, H, Nq, Nk], raster blocks of ``block``."""
    per_query = reference.fixed_block_mass(block)  # [B, H, Lq, Nk]
    b, h, lq, nk = per_query.shape
    nq = cdiv(lq, block)
    pad = nq * block - lq
    if pad:
        per_query = torch.nn.functional.pad(per_query, (0, 0, 0, pad))
    return per_query.view(b, h, nq, block, nk).sum(3)


def oracle_layout(mass: torch.Tensor, density: float, block: int, length: int) -> BlockLayout:
    """Per query block, the key blocks of most dense mass; ``round(density * Nq * Nk)`` blocks per (batch, head),
    spread as evenly over the rows as `random_block_layout` spreads them (``floor`` or ``ceil`` per row), so the
    oracle and the random baseline compute the same number of blocks per row."""
    b, h, nq, nk = mass.shape
    total = min(nq * nk, max(nq, int(round(density * nq * nk))))
    # The rows that get one more block are the ones whose next block carries the most mass.
    base = total // nq
    ranked = mass.sort(-1, descending=True).values
    extra_gain = ranked[..., base] if base < nk else torch.zeros_like(ranked[..., 0])
    extra_rows = extra_gain.argsort(-1, descending=True).argsort(-1) < (total % nq)
    counts = base + extra_rows.long()
    rank = mass.argsort(-1, descending=True).argsort(-1)
    return BlockLayout.from_block_mask(rank < counts.unsqueeze(-1), block, block, length, length)


def _gain(err: float, err_random: float, err_oracle: float) -> Optional[float]:
    span = err_random - err_oracle
    return None if span <= 1e-9 else (err_random - err) / span


def compare_layout(capture: CapturedAttention, layout: BlockLayout, reference: DenseReference, block: int,
                   mass: torch.Tensor, random_seeds: int = 2) -> dict:
    """Error and mass of ``layout`` next to the oracle and random layouts of its density, and the gain."""
    q, k, v = capture.q, capture.k, capture.v
    own = attention_error(q, k, v, layout, reference=reference)
    dens = own["density"]
    length = q.shape[2]
    oracle = attention_error(q, k, v, oracle_layout(mass, dens, block, length), reference=reference)
    rand = [attention_error(q, k, v, random_block_layout(length, length, q.shape[1], dens, block, seed,
                                                         q.shape[0]).to(q.device), reference=reference)
            for seed in range(random_seeds)]
    r_err = sum(r["rel_l2"] for r in rand) / len(rand)
    r_mass = sum(r["mass_kept"] for r in rand) / len(rand)
    return dict(density=dens, rel_l2=own["rel_l2"], mass_kept=own["mass_kept"], oracle_rel_l2=oracle["rel_l2"],
                oracle_mass_kept=oracle["mass_kept"], random_rel_l2=r_err, random_mass_kept=r_mass,
                gain=_gain(own["rel_l2"], r_err, oracle["rel_l2"]))


def evaluate_captures(
    captures: Sequence[CapturedAttention],
    methods: Dict[str, dict],
    densities: Sequence[float] = (),
    block_size: int = 128,
    random_seeds: int = 2,
    progress=None,
) -> List[dict]:
    """Rows of (capture, method, setting): each method at its own options ("preset") and, for every target density,
    at the knob value that reaches it ("matched"), each with `compare_layout`'s numbers.

    Args:
        captures: from `capture_attention`.
        methods (`Dict[str, dict]`): method name (or a label, with the method under ``"method"``) -> config options
            (besides the schedule, which is ignored here).
        densities (`Sequence[float]`): target densities for the matched rows.
        block_size (`int`): block size of the oracle and random layouts, and of every method's config that does
            not set its own (a variant may: e.g. 128-token query groups with 32-token key groups, judged against the
            oracle at ``block_size``).
    """
    from ..config import make_config
    from ..patterns import make_pattern

    rows = []
    for cap in captures:
        reference = DenseReference(cap.q, cap.k, cap.v)
        mass = block_mass(reference, block_size)
        for label, options in methods.items():
            method = options.get("method", label)  # a label may name a variant: {"method": "semantic", ...}
            own_block = options.get("block_size", block_size)
            options = {**{k: v for k, v in options.items() if k != "method"}, "block_size": own_block,
                       "dense_steps": 0, "dense_layers": 0}
            cache = PlanCache(shared=BoundedCache())  # the per-geometry cache a pipeline's state gives
            t0 = time.perf_counter()
            pattern = make_pattern(make_config(method, **options))
            layout = pattern.plan(cap.q, cap.k, cap.geometry, cache)
            row = dict(capture=cap.name, layer=cap.layer, step=cap.step, method=label, setting="preset",
                       plan_s=round(time.perf_counter() - t0, 3))
            row.update(compare_layout(cap, layout, reference, block_size, mass, random_seeds))
            rows.append(row)
            if progress:
                progress(_line(row))
            tune_opts = {k: v for k, v in options.items() if k not in _KNOB_NAMES + _SCHEDULE}
            for target in densities:
                layout, knob, _, _ = tune_layout(method, cap.q, cap.k, cap.geometry, target, own_block, cache=cache,
                                                 options=tune_opts)
                row = dict(capture=cap.name, layer=cap.layer, step=cap.step, method=label, setting=f"d={target}",
                           knob=knob)
                row.update(compare_layout(cap, layout, reference, block_size, mass, random_seeds))
                rows.append(row)
                if progress:
                    progress(_line(row))
    return rows


# Config fields that the matched-density rows must not pass on: the knob being tuned and the schedule.
_KNOB_NAMES = tuple(knob for knob, *_ in KNOBS.values())
_SCHEDULE = ("block_size", "dense_steps", "dense_layers")


def _line(row: dict) -> str:
    gain = "—" if row["gain"] is None else f"{row['gain']:+.2f}"
    return (f"{row['capture']:<24} {row['method']:<9} {row['setting']:<7} density {row['density']:.3f}  rel_l2 "
            f"{row['rel_l2']:.4f} (oracle {row['oracle_rel_l2']:.4f}, random {row['random_rel_l2']:.4f})  mass "
            f"{row['mass_kept']:.3f} (oracle {row['oracle_mass_kept']:.3f}, random {row['random_mass_kept']:.3f})  "
            f"gain {gain}")


def summarise(rows: Sequence[dict]) -> List[dict]:
    """Means over captures per (method, setting): density, errors, masses, gain (mean of per-capture gains)."""
    groups: Dict[tuple, List[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["setting"]), []).append(r)
    out = []
    for (method, setting), rs in groups.items():
        mean = {key: sum(r[key] for r in rs) / len(rs) for key in
                ("density", "rel_l2", "mass_kept", "oracle_rel_l2", "oracle_mass_kept", "random_rel_l2",
                 "random_mass_kept")}
        gains = [r["gain"] for r in rs if r["gain"] is not None]
        mean["gain"] = sum(gains) / len(gains) if gains else None
        # The gain of the means: less noisy where a capture's random-oracle span is small.
        mean["gain_of_means"] = _gain(mean["rel_l2"], mean["random_rel_l2"], mean["oracle_rel_l2"])
        out.append(dict(method=method, setting=setting, captures=len(rs), **mean))
    return out


def markdown_table(summary: Sequence[dict]) -> str:
    head = ("| method | setting | density | rel-L2 error | oracle | random | mass kept | oracle | random | "
            "gain vs oracle |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        gain = "—" if s["gain_of_means"] is None else f"{s['gain_of_means']:.2f}"
        lines.append(f"| {s['method']} | {s['setting']} | {s['density']:.3f} | {s['rel_l2']:.3f} | "
                     f"{s['oracle_rel_l2']:.3f} | {s['random_rel_l2']:.3f} | {s['mass_kept']:.3f} | "
                     f"{s['oracle_mass_kept']:.3f} | {s['random_mass_kept']:.3f} | {gain} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------- CLI
def _parse_ints(text: str) -> List[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..pipelines.presets import PRESETS

    p = argparse.ArgumentParser(prog="python -m dit_sparse.eval.oracle", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", help="a packaged trained model: tiny or small")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/oracle-<model>.json; '' = none)")
    p.add_argument("--methods", default="radial,draft,semantic")
    p.add_argument("--densities", default="0.15,0.25,0.35")
    p.add_argument("--layers", default=None, help="blocks to capture (default: every other block after the first)")
    p.add_argument("--steps", default=None, help="denoising steps to capture (default: three after the dense ones)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--num-inference-steps", type=int, default=None)
    p.add_argument("--prompt", default="a red square moves left over a striped background")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", default=None,
                   help='more rows, JSON: {"label": {"method": "semantic", "clusters": "separate", ...}, ...}; a '
                        'variant that names block_size keeps it, every other method runs at --block-size')
    p.add_argument("--workload", default="model", choices=["model", "photo"],
                   help="q/k/v captured from --model, or from photographic video (eval.photo_qkv; no model)")
    p.add_argument("--grid", default="9x16x24", help="photo workload: frames x height x width tokens")
    p.add_argument("--photo-seeds", type=int, default=2, help="photo workload: videos (one capture each)")
    p.add_argument("--block-size", type=int, default=None, help="block size (default: the methods', else 128)")
    args = p.parse_args(argv)
    variants = json.loads(args.variants) if args.variants else {}
    if args.workload == "photo":
        return _main_photo(args, argv, variants)

    preset = PRESETS[args.model]
    height, width, frames = args.height or preset.height, args.width or preset.width, args.frames or preset.frames
    steps = args.num_inference_steps or preset.steps
    pipe = load_model(args.model, args.device)
    n_layers = pipe.transformer.config.num_layers
    layers = _parse_ints(args.layers) if args.layers else list(range(1, n_layers, 2))
    cap_steps = _parse_ints(args.steps) if args.steps else sorted({steps // 4, steps // 2, (3 * steps) // 4})
    methods = {m: {k: v for k, v in preset.sparse[m].items() if k not in ("dense_steps", "dense_layers")}
               for m in args.methods.split(",") if m}
    block = args.block_size or next((o["block_size"] for o in methods.values() if "block_size" in o),
                                    next((o["block_size"] for o in variants.values() if "block_size" in o), 128))
    # Preset methods run at the oracle's block size; a variant keeps the block size it names.
    methods = {m: {k: v for k, v in o.items() if k != "block_size"} for m, o in methods.items()}
    methods.update(variants)
    t0 = time.perf_counter()
    captures = capture_attention(pipe, args.prompt, layers=layers, steps=cap_steps, height=height, width=width,
                                 frames=frames, num_inference_steps=steps, seed=args.seed)
    captures = [dataclasses.replace(c, q=c.q.to(args.device), k=c.k.to(args.device), v=c.v.to(args.device))
                for c in captures]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    densities = [float(x) for x in args.densities.split(",") if x]
    rows = evaluate_captures(captures, methods, densities, block, progress=log)
    summary = summarise(rows)
    table = markdown_table(summary)
    out = f"bench/results/oracle-{args.model}.json" if args.out is None else args.out
    if out:
        from .bench import git_commit

        payload = {
            "benchmark": "oracle-fidelity", "model": args.model, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(
                timespec="seconds"), "commit": git_commit(),
            "command": "python -m dit_sparse.eval.oracle " + " ".join(argv if argv is not None else sys.argv[1:]),
            "settings": dict(height=height, width=width, frames=frames, num_inference_steps=steps, layers=layers,
                             steps=cap_steps, tokens=captures[0].geometry.num_tokens if captures else None,
                             block_size=block, prompt=args.prompt, seed=args.seed, methods=methods,
                             densities=densities, device=str(args.device)),
            "elapsed_s": round(time.perf_counter() - t0, 1), "summary": summary, "rows": rows,
        }
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(payload, indent=2) + "\n")
    print(table)
    return 0


def _main_photo(args, argv, variants: Dict[str, dict]) -> int:
    """The photographic workload: each method (config defaults, or a variant) on `photo_qkv` q/k/v."""
    from ..geometry import VideoGeometry
    from .bench import git_commit
    from .photo_qkv import photo_qkv

    geometry = VideoGeometry(*(int(x) for x in args.grid.lower().split("x")))
    block = args.block_size or 64
    t0 = time.perf_counter()
    captures = [CapturedAttention(*photo_qkv(geometry, seed=seed), geometry, layer=0, step=seed, branch=0)
                for seed in range(args.photo_seeds)]
    methods = {m: {} for m in args.methods.split(",") if m}
    methods.update(variants)
    densities = [float(x) for x in args.densities.split(",") if x]
    rows = evaluate_captures(captures, methods, densities, block,
                             progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    summary = summarise(rows)
    out = "bench/results/oracle-photo.json" if args.out is None else args.out
    if out:
        payload = {
            "benchmark": "oracle-fidelity", "workload": "photo", "commit": git_commit(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m dit_sparse.eval.oracle " + " ".join(argv if argv is not None else sys.argv[1:]),
            "settings": dict(grid=list(geometry.key), tokens=geometry.num_tokens, heads=4, head_dim=64,
                             block_size=block, seeds=args.photo_seeds, methods=methods, densities=densities),
            "elapsed_s": round(time.perf_counter() - t0, 1), "summary": summary, "rows": rows,
        }
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(payload, indent=2) + "\n")
    print(markdown_table(summary))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
