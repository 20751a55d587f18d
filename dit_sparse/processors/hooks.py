"""The step hook: a Diffusers ``ModelHook`` on the transformer that feeds ``SparseState``.

It reads the latents' shape (token grid; for Flux's packed image tokens, their position ids ``img_ids``; for
Qwen-Image's, ``img_shapes``), the timestep
and Diffusers' cache context (``cache_context("cond")``, the mechanism ``FirstBlockCache`` keys its state by) before
every transformer forward; nothing in Diffusers is patched.
Shaped like Diffusers' ``hooks/first_block_cache.py``: private hook + state, public ``apply_*`` elsewhere.

The bookkeeping runs in a PyTorch forward pre-hook that ``torch.compile`` does not trace: ``torch.compile(transformer,
fullgraph=True)`` then compiles only the model, without guards on our Python counters or a data-dependent timestep
comparison. The ``ModelHook`` itself only receives the cache context and the end-of-call reset.

Token order once per call: a static pattern whose layouts all share one token order (the tile pattern,
`Pattern.token_order`) would otherwise gather q, k and v into that order and scatter the output back in every attention
call (four passes over (B, L, H, D) memory per layer: 0.75 ms against 1.8 ms of attention per call at FLUX 4096^2).
Every other layer of a DiT works per token, so for the model families that say how (``reorder_tokens`` in their
processor module: Flux, Qwen-Image) the pre-hook puts the image tokens and what is indexed by them (position ids) in
that order before the forward and the post-hook restores the output's order after it; the processors then run the
layouts without their permutation. Not under autograd: a checkpointed block recomputed in backward runs after the
post-hook and would see the tokens in the wrong order.
"""

from __future__ import annotations

import inspect
from typing import Callable, Optional, Tuple

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from ..geometry import VideoGeometry
from ..layout import inverse_permutation
from ..schedule import PlanCache, SparseState

HOOK_NAME = "dit_sparse_step"


def _timestep_value(timestep) -> float:
    if isinstance(timestep, torch.Tensor):
        # One host read per transformer call (not per attention call); Wan 2.2 TI2V passes per-token timesteps.
        return float(timestep.detach().float().max())
    return float(timestep)


class _NoState(BaseState):
    def reset(self, *args, **kwargs) -> None:
        pass


class _ContextSlot(StateManager):
    """Receives the pipeline's ``cache_context`` (Diffusers sets it on every ``StateManager`` of a stateful hook)."""

    def __init__(self):
        super().__init__(_NoState)
        self.current = None

    def set_context(self, context) -> None:
        super().set_context(context)
        self.current = context


class SparseStepHook(ModelHook):
    """Records step index, CFG branch and token grid for the processors of one transformer."""

    _is_stateful = True

    def __init__(
        self, state: SparseState, model: str, patch_size: Tuple[int, int, int], model_index: int = 0,
        reorder_tokens: Optional[Callable] = None,
    ):
        super().__init__()
        self.state = state
        self.model = model
        self.patch_size = patch_size
        self.model_index = model_index
        # reorder_tokens(transformer, arguments, order) -> bool: the model module's (see the module docstring).
        self.reorder_tokens = reorder_tokens
        self.context = _ContextSlot()
        self._handles = []
        self._params = ("hidden_states", "timestep")
        self._signature = None

    def initialize_hook(self, module):
        # Inputs are read by name: the timestep is Wan's and HunyuanVideo's second argument but Flux's fourth. The
        # class's forward, not the instance's: other hooks (offloading, caches) may have wrapped the latter.
        self._signature = inspect.signature(type(module).forward)
        self._params = tuple(self._signature.parameters)[1:]
        self._handles = [
            module.register_forward_pre_hook(self._before_forward, with_kwargs=True),
            module.register_forward_hook(self._after_forward),
        ]
        return module

    def deinitalize_hook(self, module):  # (sic: Diffusers' name)
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return module

    @torch.compiler.disable
    def _before_forward(self, module, args, kwargs):
        # Called by nn.Module.__call__ before the (possibly compiled) forward; disabled for dynamo so that the
        # counters and the host read of the timestep never enter a graph.
        def arg(name):
            if name in kwargs:
                return kwargs[name]
            index = self._params.index(name) if name in self._params else len(args)
            return args[index] if index < len(args) else None

        hidden_states = arg("hidden_states")
        timestep = arg("timestep")
        if hidden_states is None or timestep is None:
            raise ValueError(
                "dit_sparse's step hook expects the transformer to be called with hidden_states and timestep"
            )
        if hidden_states.dim() == 3 and "img_shapes" in self._params:
            # Packed image tokens (Qwen-Image): the grid comes from img_shapes, the text count from the text stream.
            text = arg("encoder_hidden_states")
            geometry = VideoGeometry.from_image_shapes(
                hidden_states, arg("img_shapes"), self.model, text.shape[1] if text is not None else 0
            )
        elif hidden_states.dim() == 3:
            # Packed image tokens (Flux): the grid comes from img_ids, the text count from txt_ids.
            txt_ids, text = arg("txt_ids"), arg("encoder_hidden_states")
            text_tokens = txt_ids.shape[-2] if txt_ids is not None else (text.shape[1] if text is not None else 0)
            geometry = VideoGeometry.from_image_ids(hidden_states, arg("img_ids"), self.model, text_tokens)
        else:
            geometry = VideoGeometry.from_latents(hidden_states, self.patch_size, self.model)
        self.state.on_forward(
            _timestep_value(timestep), geometry, context=self.context.current, batch=hidden_states.shape[0],
            model_index=self.model_index,
        )
        self.state.prepare(hidden_states.device)
        return self._order_tokens(module, args, kwargs, hidden_states.device)

    def _order_tokens(self, module, args, kwargs, device):
        """The forward's (args, kwargs) with the image tokens in the pattern's token order, or None to leave them."""
        state = self.state
        state.token_order = None
        if (self.reorder_tokens is None or state.dense_now or state.fallback_now or state.pattern is None
                or torch.is_grad_enabled()):
            return None
        order = state.pattern.token_order(state.geometry, device, PlanCache(None, state.shared))
        if order is None:
            return None
        bound = self._signature.bind(module, *args, **kwargs)
        if not self.reorder_tokens(module, bound.arguments, order):
            return None
        state.token_order = order
        state.token_ordered_calls += 1
        return bound.args[1:], bound.kwargs

    @torch.compiler.disable
    def _after_forward(self, module, args, output):
        order = self.state.token_order
        if order is None:
            return None
        self.state.token_order = None
        return restore_token_order(output, order)

    def reset_state(self, module):
        # Diffusers resets stateful hooks at the end of every pipeline call: the next call starts a new run and the
        # per-layer caches are dropped; the statistics stay so summary(pipe) still describes the run that finished.
        self.state.end_run()
        return module


def restore_token_order(output, order: torch.Tensor):
    """A transformer's output (``return_dict`` or tuple) with its tokens (dim 1 of the sample) from ``order`` back in
    their original order: a gather by the inverse order, which reads and writes whole rows."""
    inverse = inverse_permutation(order)
    if isinstance(output, tuple):
        return (output[0].index_select(1, inverse), *output[1:])
    output.sample = output.sample.index_select(1, inverse)
    return output


def attach_step_hook(
    transformer, state: SparseState, model: str, patch_size, model_index: int = 0, reorder_tokens=None
) -> None:
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    if registry.get_hook(HOOK_NAME) is not None:
        registry.remove_hook(HOOK_NAME, recurse=False)
    registry.register_hook(
        SparseStepHook(state, model, tuple(patch_size), model_index, reorder_tokens), HOOK_NAME
    )


def detach_step_hook(transformer) -> None:
    registry = getattr(transformer, "_diffusers_hook", None)
    if registry is not None and registry.get_hook(HOOK_NAME) is not None:
        registry.remove_hook(HOOK_NAME, recurse=False)
