"""Can semantic's selection run on fixed 128-token tiles (FlashAttention-4) without losing what it chose well?

Semantic selects per cluster piece (variable blocks, our Triton kernel). Any fixed-tile kernel path that keeps that
selection exactly (FA4's block-sparse ``mask_mod`` masking the partial tiles, or computing them whole) must compute
every tile pair that holds a selected piece pair: the tile *cover* of the selection. This measures, on attention
captured from the trained small model, the cover's density against the selection's, under three token orders
(clusters in k-means label order; + whole tiles first, `whole_blocks_first`; clusters sorted by mean token position,
packed), with the error against dense and the oracle / random layouts at the cover's density (gain).

    python bench/semantic_cover.py [--top-p 0.9,0.5] [--captures FILE] [--out bench/results/semantic-cover-small.json]

The captures (layers 2, 4 at steps 5, 10 of a 20-step dense run, as ``oracle-small.json``) are computed when FILE does
not exist and saved there; ~6 min for the capture and ~20 min for the evaluation on a 2-core CPU.
"""
import argparse
import datetime as _dt
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.getcwd())
import dit_sparse as ds  # noqa: E402
from dit_sparse.eval.bench import git_commit  # noqa: E402
from dit_sparse.eval.fidelity import DenseReference, token_blocks  # noqa: E402
from dit_sparse.eval.oracle import CapturedAttention, block_mass, capture_attention, compare_layout, load_model  # noqa: E402
from dit_sparse.layout import BlockLayout, whole_blocks_first  # noqa: E402
from dit_sparse.patterns import make_pattern  # noqa: E402
from dit_sparse.patterns.semantic import block_plan, cluster_order  # noqa: E402
from dit_sparse.pipelines.presets import PRESETS  # noqa: E402
from dit_sparse.schedule import BoundedCache, PlanCache  # noqa: E402

TILE = 128
PROMPT = "a red square moves left over a striped background"


def captures(path: str):
    if os.path.exists(path):
        return [CapturedAttention(c["q"], c["k"], c["v"], c["geometry"], c["layer"], c["step"], 0)
                for c in torch.load(path, weights_only=False)]
    preset = PRESETS["small"]
    caps = capture_attention(load_model("small", "cpu"), PROMPT, layers=[2, 4], steps=[5, 10], height=preset.height,
                             width=preset.width, frames=preset.frames, num_inference_steps=20)
    torch.save([dict(q=c.q, k=c.k, v=c.v, geometry=c.geometry, layer=c.layer, step=c.step) for c in caps], path)
    return caps


def tile_cover(selected: torch.Tensor, piece: torch.Tensor, length: int) -> torch.Tensor:
    """bool [N, T, T]: tile pairs (tiles of TILE positions of the order ``piece`` [N, L] lists) holding a selected
    piece pair (``selected`` [N, P, P])."""
    n, p = piece.shape[0], selected.shape[-1]
    tiles = -(-length // TILE)
    overlap = torch.zeros(n, tiles, p)
    overlap[torch.arange(n).unsqueeze(1).expand(-1, length), (torch.arange(length) // TILE).expand(n, -1), piece] = 1.0
    return torch.bmm(torch.bmm(overlap, selected.float()), overlap.transpose(1, 2)) > 0.5


def evaluate(cap, top_p: float, options: dict) -> dict:
    q, k, v = cap.q, cap.k, cap.v
    b, h, length, d = q.shape
    n = b * h
    reference = DenseReference(q, k, v)
    mass = block_mass(reference, TILE)
    config = ds.make_config("semantic", **{**options, "top_p": top_p, "min_sparse_tokens": 0})
    pattern = make_pattern(config)
    cache = PlanCache(shared=BoundedCache())
    # A real plan first, then its clustering once more from the plan's centroids (warm start: the same clusters up to
    # ``warm_iters`` more iterations); every layout below, the selection included, is built from these labels.
    pattern.plan(q, k, cap.geometry, cache)
    clusters = pattern.cluster_counts(length, length)[1]
    labels, _, counts = pattern.cluster(torch.cat([q, k], -1), clusters, dict(cache), "qk")
    labels, counts = labels.view(n, length), counts.view(n, clusters)
    positions = torch.arange(length, dtype=torch.float32).expand(n, -1)
    mean_position = torch.zeros(n, clusters).scatter_add_(1, labels, positions) / counts.clamp(min=1)
    row = dict(layer=cap.layer, step=cap.step, top_p=top_p)
    for order in ("label", "label-packed", "position-packed"):
        if order.startswith("position"):
            lab = mean_position.argsort(-1).argsort(-1).gather(1, labels)
            cnt = torch.zeros(n, clusters).scatter_add_(1, lab, torch.ones(n, length))
        else:
            lab, cnt = labels, counts
        perm = cluster_order(lab, clusters)
        idx, kv_counts, starts, kv_starts = block_plan(
            q.reshape(n, length, d), k.reshape(n, length, d), perm, perm, cnt, cnt, config.block_size, False,
            config.estimate, config.top_p, config.min_kv_ratio, True)[:4]
        bs = config.block_size
        own = BlockLayout(idx.view(b, h, *idx.shape[1:]).contiguous(), kv_counts.view(b, h, -1), bs, bs, length,
                          length, q_block_starts=starts.view(b, h, -1), kv_block_starts=kv_starts.view(b, h, -1),
                          q_perm=perm.view(b, h, length), kv_perm=perm.view(b, h, length))
        mask = own.to_block_mask()
        selected = mask.view(n, *mask.shape[2:])  # selected piece pairs [N, P, P]
        piece = token_blocks(own, "q", b, h).view(n, length).gather(1, perm)  # the piece at each position of perm
        if order == "label":  # the selection itself (variable blocks), from these clusters
            row["selection (variable pieces)"] = compare_layout(cap, own, reference, TILE, mass)
        if order.endswith("packed"):
            pack = whole_blocks_first(lab.gather(1, perm), TILE)
            perm, piece = perm.gather(1, pack), piece.gather(1, pack)
        cover = tile_cover(selected, piece, length)
        layout = BlockLayout.from_block_mask(cover.view(b, h, *cover.shape[1:]), TILE, TILE, length, length,
                                             q_perm=perm.view(b, h, length), kv_perm=perm.view(b, h, length))
        row[f"cover, {order}"] = compare_layout(cap, layout, reference, TILE, mass)
    return row


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--top-p", default="0.9,0.5")
    p.add_argument("--captures", default="/tmp/dit_sparse_caps_small.pt")
    p.add_argument("--out", default="bench/results/semantic-cover-small.json")
    args = p.parse_args()
    t0 = time.perf_counter()
    preset = PRESETS["small"].sparse["semantic"]
    options = {k: v for k, v in preset.items() if k not in ("dense_steps", "dense_layers")}
    rows = []
    for cap in captures(args.captures):
        for top_p in (float(x) for x in args.top_p.split(",")):
            rows.append(evaluate(cap, top_p, options))
            print(json.dumps({key: value if not isinstance(value, dict) else
                              {x: round(value[x], 3) for x in ("density", "rel_l2", "gain") if value[x] is not None}
                              for key, value in rows[-1].items()}), flush=True)
    summary = {}
    for top_p in sorted({r["top_p"] for r in rows}, reverse=True):
        group = [r for r in rows if r["top_p"] == top_p]
        summary[str(top_p)] = {name: {key: sum(r[name][key] for r in group) / len(group)
                                      for key in ("density", "rel_l2", "oracle_rel_l2", "random_rel_l2")}
                               for name in group[0] if isinstance(group[0][name], dict)}
    command = "python bench/semantic_cover.py " + " ".join(sys.argv[1:])
    payload = {"benchmark": "semantic-cover-small", "command": command,
               "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
               "settings": dict(model="small", layers=[2, 4], steps=[5, 10], num_inference_steps=20, prompt=PROMPT,
                                tile=TILE, semantic=options, device="cpu"),
               "elapsed_s": round(time.perf_counter() - t0, 1), "summary": summary, "rows": rows}
    with open(args.out, "w") as f:
        json.dump(payload, f, indent=2)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
