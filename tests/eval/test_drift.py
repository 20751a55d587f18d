"""The drift evaluator (`eval.drift`): a layout planned at step t reused at t + gap, against a fresh one."""

import torch

from dit_sparse.eval.drift import drift_rows, summarise
from dit_sparse.eval.oracle import CapturedAttention
from dit_sparse.geometry import VideoGeometry


def _captures(steps, same: bool):
    geometry = VideoGeometry(2, 8, 8, "wan")
    g = torch.Generator().manual_seed(0)
    base = [torch.randn(1, 2, geometry.num_tokens, 16, generator=g) for _ in range(3)]
    caps = []
    for step in steps:
        q, k, v = base if same else [torch.randn(1, 2, geometry.num_tokens, 16, generator=g) for _ in range(3)]
        caps.append(CapturedAttention(q, k, v, geometry, layer=1, step=step, branch=0))
    return caps


def test_drift_rows_label_variants_and_see_staleness():
    methods = {"draft": {"density": 0.5},
               "packed": {"method": "semantic", "kv_clusters": 8, "top_p": 0.9, "pack_pieces": True,
                          "cluster_order": "similarity"}}
    rows = drift_rows(_captures(range(3), same=True), methods, block_size=16, gaps=(1, 2))
    assert {r["method"] for r in rows} == {"draft", "packed"}
    assert {(r["step"], r["gap"]) for r in rows if r["method"] == "packed"} == {(1, 1), (2, 1), (2, 2)}
    # The same q, k, v at every step: draft's layout does not change, so reusing it costs nothing.
    assert all(r["reuse_penalty"] == 1.0 for r in rows if r["method"] == "draft")
    # New q, k, v at every step: a layout planned for other tensors is worse than a fresh one.
    stale = summarise(drift_rows(_captures(range(3), same=False), {"draft": {"density": 0.5}}, 16, gaps=(1,)))
    assert stale[0]["reuse_penalty"] > 1.0 and stale[0]["pairs"] == 2
