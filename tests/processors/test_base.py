"""The shared processor core: planning under autograd and gradient checkpointing."""

import dataclasses

import pytest
import torch
from tiny_models import tiny_wan, wan_inputs

import dit_sparse as ds
from dit_sparse import DraftConfig, SemanticConfig
from dit_sparse.api import get_state
from dit_sparse.layout import BlockLayout

CONFIG = SemanticConfig(
    dense_steps=0, dense_layers=0, block_size=16, q_clusters=4, kv_clusters=8, kmeans_iters=2, warm_iters=1, top_p=0.5
)


def _loss_and_grads(checkpointing: bool):
    # Like Diffusers' test_gradient_checkpointing_equivalence, with the semantic pattern installed.
    model = tiny_wan(num_layers=2).train()
    if checkpointing:
        model.enable_gradient_checkpointing()
    ds.apply_sparse_attention(model, CONFIG)
    out = model(**wan_inputs(frames=5, height=8, width=12))[0]
    loss = (out - 1.0).square().mean()
    loss.backward()
    return model, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_equivalence_with_semantic_pattern():
    _, loss, grads = _loss_and_grads(False)
    model, loss_ckpt, grads_ckpt = _loss_and_grads(True)
    torch.testing.assert_close(loss_ckpt, loss, atol=1e-6, rtol=1e-6)
    assert grads.keys() == grads_ckpt.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], atol=5e-5, rtol=1e-4, msg=name)
    assert ds.summary(model)["sparse_calls"] == 2  # the recomputation in backward is not a new call of the step
    # What the pattern caches for the next step is detached from this step's graph.
    for entry in get_state(model).caches.values():
        assert all(not (torch.is_tensor(v) and (v.requires_grad or v.grad_fn)) for v in entry.values())


def test_planning_runs_without_autograd():
    model = tiny_wan(num_layers=1).train()
    ds.apply_sparse_attention(model, CONFIG)
    state = get_state(model)
    seen = []
    plan = state.pattern.plan

    def spy(q, k, geometry, cache):
        seen.append(torch.is_grad_enabled())
        return plan(q, k, geometry, cache)

    state.pattern.plan = spy
    model(**wan_inputs(frames=5, height=8, width=12))[0].sum().backward()
    assert seen == [False]


@pytest.mark.parametrize("method", ["draft", "semantic"])
def test_layouts_kept_between_steps_are_compact_and_reuse_is_exact(monkeypatch, method):
    """refresh_every=2 keeps a refresh step's layout for the next step: with int16 key-block indices and int32
    permutations (`BlockLayout.compact`, half the memory), widened again for the kernels. The outputs equal those of
    keeping the layout as planned, and the kept bytes are smaller."""
    config = dataclasses.replace(DraftConfig(dense_steps=0, dense_layers=0, block_size=16) if method == "draft"
                                 else CONFIG, refresh_every=2)

    def run():
        model = tiny_wan(num_layers=2)
        ds.apply_sparse_attention(model, config)
        outs, kept = [], []
        with torch.no_grad():
            for step, t in enumerate((999.0, 900.0)):
                with model.cache_context("cond", step_index=step, num_inference_steps=2):
                    outs.append(model(**wan_inputs(timestep=t, seed=1 + step, frames=5, height=8, width=12))[0])
                kept.append([e["layout"] for e in get_state(model).caches.values() if "layout" in e])
        return outs, kept

    def nbytes(layouts):
        return sum(t.numel() * t.element_size() for lay in layouts
                   for t in {id(t): t for t in (lay.kv_indices, lay.q_perm, lay.kv_perm) if t is not None}.values())

    outs, kept = run()
    assert len(kept[0]) == 2 and not kept[1]  # kept by the refresh step, read and dropped by the next one
    assert all(lay.kv_indices.dtype == torch.int16 for lay in kept[0])
    assert all(p.dtype == torch.int32 for lay in kept[0] for p in (lay.q_perm, lay.kv_perm) if p is not None)
    monkeypatch.setattr(BlockLayout, "compact", lambda self: self)
    want, kept_as_planned = run()
    assert kept_as_planned[0][0].kv_indices.dtype == torch.int32
    assert nbytes(kept[0]) < 0.6 * nbytes(kept_as_planned[0])
    for got, expected in zip(outs, want):
        torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert not torch.equal(outs[1], want[0])  # the steps differ: the comparison is not vacuous


def test_compact_layout_round_trip():
    mask = torch.rand(1, 2, 5, 5, generator=torch.Generator().manual_seed(0)) < 0.5
    perm = torch.randperm(70).view(1, 1, 70)
    layout = BlockLayout.from_block_mask(mask, 16, 16, 70, 70, q_perm=perm, kv_perm=perm)
    small = layout.compact()
    assert small.kv_indices.dtype == torch.int16 and small.q_perm.dtype == torch.int32
    assert small.kv_perm is small.q_perm  # one order for queries and keys stays one tensor
    back = small.expanded()
    assert back.kv_indices.dtype == torch.int32 and back.q_perm.dtype == torch.int64
    assert torch.equal(back.kv_indices, layout.kv_indices) and torch.equal(back.q_perm, layout.q_perm)
    assert layout.expanded() is layout  # no copy when the dtypes are already the kernels'
