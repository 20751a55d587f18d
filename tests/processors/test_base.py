"""The shared processor core: planning under autograd and gradient checkpointing."""

import torch
from tiny_models import tiny_wan, wan_inputs

import dit_sparse as ds
from dit_sparse import SemanticConfig
from dit_sparse.api import get_state

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
