"""How fast a content-aware layout goes stale across denoising steps, on attention captured from a trained model.

For every captured layer, a method plans a layout at step t and the layout is reused at step t + r: the attention
error of the reused layout on step t + r's q, k, v is compared with a layout planned fresh at t + r (and with a random
layout of the same density). A reuse penalty close to 1 means the layout may be cached for r steps (AdaSpa's step
invariance); this is what ``SparseConfig.refresh_every`` should be chosen from.

    python -m dit_sparse.eval.drift --model tiny [--out bench/results/drift-tiny.json]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .fidelity import DenseReference, attention_error, random_block_layout
from .oracle import capture_attention


def drift_rows(captures, methods: Dict[str, dict], block_size: int, gaps: Sequence[int] = (1, 2, 4)) -> List[dict]:
    """Rows (method, layer, step, gap): rel-L2 of the layout planned ``gap`` steps earlier, of a fresh layout and of
    a random one of the fresh layout's density, on the later step's q, k, v."""
    from ..config import make_config
    from ..patterns import make_pattern

    by_layer: Dict[int, Dict[int, object]] = {}
    for cap in captures:
        by_layer.setdefault(cap.layer, {})[cap.step] = cap
    rows = []
    for label, options in methods.items():
        # A label names its method, or a variant carries it (``{"method": "semantic", "pack_pieces": True, ...}``).
        options = dict(options)
        method = options.pop("method", label)
        cfg = make_config(method, **{**options, "block_size": block_size, "dense_steps": 0, "dense_layers": 0})
        for layer, steps in sorted(by_layer.items()):
            pattern, cache = make_pattern(cfg), {}  # one cache per layer: warm starts as in a real run
            layouts = {s: pattern.plan(c.q, c.k, c.geometry, cache) for s, c in sorted(steps.items())}
            for step, cap in sorted(steps.items()):
                ref = DenseReference(cap.q, cap.k, cap.v)
                fresh = attention_error(cap.q, cap.k, cap.v, layouts[step], reference=ref)
                rnd = random_block_layout(cap.q.shape[2], cap.k.shape[2], cap.q.shape[1], fresh["density"],
                                          block_size, step, cap.q.shape[0]).to(cap.q.device)
                random_err = attention_error(cap.q, cap.k, cap.v, rnd, reference=ref)["rel_l2"]
                for gap in gaps:
                    if step - gap not in layouts:
                        continue
                    reused = attention_error(cap.q, cap.k, cap.v, layouts[step - gap], reference=ref)
                    rows.append(dict(method=label, layer=layer, step=step, gap=gap, fresh_rel_l2=fresh["rel_l2"],
                                     reused_rel_l2=reused["rel_l2"], random_rel_l2=random_err,
                                     reuse_penalty=reused["rel_l2"] / max(fresh["rel_l2"], 1e-12),
                                     density=fresh["density"], reused_density=reused["density"]))
    return rows


def summarise(rows: Sequence[dict]) -> List[dict]:
    groups: Dict[tuple, List[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["gap"]), []).append(r)
    out = []
    for (method, gap), rs in sorted(groups.items()):
        mean = lambda key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
        out.append(dict(method=method, gap=gap, pairs=len(rs), fresh_rel_l2=mean("fresh_rel_l2"),
                        reused_rel_l2=mean("reused_rel_l2"), random_rel_l2=mean("random_rel_l2"),
                        reuse_penalty=mean("reuse_penalty"), worst_penalty=max(r["reuse_penalty"] for r in rs)))
    return out


def markdown_table(summary: Sequence[dict]) -> str:
    lines = ["| method | reused after (steps) | rel-L2 fresh | rel-L2 reused | random | penalty (mean / worst) |",
             "|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['method']} | {s['gap']} | {s['fresh_rel_l2']:.3f} | {s['reused_rel_l2']:.3f} | "
                     f"{s['random_rel_l2']:.3f} | {s['reuse_penalty']:.2f} / {s['worst_penalty']:.2f} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    from ..pipelines.presets import PRESETS
    from .oracle import load_model

    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m dit_sparse.eval.drift", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", choices=["tiny", "small"])
    p.add_argument("--out", default=None, help="JSON path (default bench/results/drift-<model>.json; '' = none)")
    p.add_argument("--methods", default="draft,semantic")
    p.add_argument("--variants", default=None,
                   help='JSON {label: {"method": ..., option: value}}: the method\'s preset options with these '
                        "changed, as rows of their own (--methods '' runs only the variants)")
    p.add_argument("--layers", default="1,3,5")
    p.add_argument("--device", default="cpu")
    p.add_argument("--prompt", default="a blue circle and a green triangle drift up while the camera zooms in over a "
                                       "gray checkered background")
    args = p.parse_args(argv)
    preset = PRESETS[args.model]

    # Options checked before the (slow) capture.
    def preset_options(method: str) -> dict:
        # The schedule is the evaluator's (every captured step sparse) and the block size its own.
        options = preset.sparse_options(method)
        return {k: v for k, v in options.items() if k not in ("dense_steps", "dense_layers", "block_size")}

    methods = {m: preset_options(m) for m in args.methods.split(",") if m}
    for label, variant in (json.loads(args.variants) if args.variants else {}).items():
        if "method" not in variant:
            raise ValueError(f"--variants {label!r} names no method; give one, e.g. "
                             '{"packed": {"method": "semantic", "pack_pieces": true}}')
        methods[label] = {**preset_options(variant["method"]), **variant}

    pipe = load_model(args.model, args.device)
    steps = preset.steps
    first_sparse = int(round(preset.sparse["draft"].get("dense_steps", 0.25) * steps))
    layers = [int(x) for x in args.layers.split(",")]
    t0 = time.perf_counter()
    caps = capture_attention(pipe, args.prompt, layers=layers, steps=range(first_sparse, steps), height=preset.height,
                             width=preset.width, frames=preset.frames, num_inference_steps=steps)
    for cap in caps:  # captures are parked on the CPU; planning and the dense references run on --device
        cap.q, cap.k, cap.v = (t.to(args.device) for t in (cap.q, cap.k, cap.v))

    block = preset.sparse["draft"].get("block_size", 128)
    rows = drift_rows(caps, methods, block)
    summary = summarise(rows)
    out = f"bench/results/drift-{args.model}.json" if args.out is None else args.out
    if out:
        from .bench import git_commit

        payload = {"benchmark": f"drift-{args.model}", "command": "python -m dit_sparse.eval.drift " + " ".join(argv),
                   "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
                   "settings": dict(model=args.model, steps=steps, captured_steps=list(range(first_sparse, steps)),
                                    layers=layers, block_size=block, methods=methods, device=args.device,
                                    size=[preset.frames, preset.height, preset.width]),
                   "elapsed_s": round(time.perf_counter() - t0, 1), "summary": summary, "rows": rows}
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(payload, indent=2) + "\n")
    print(markdown_table(summary))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
