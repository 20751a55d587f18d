"""The step hook: a Diffusers ``ModelHook`` on the transformer that feeds ``SparseState``.

It reads the latents' shape (token grid) and the timestep before every transformer forward; nothing in Diffusers is
patched. Shaped like Diffusers' ``hooks/first_block_cache.py``: private hook + state, public ``apply_*`` elsewhere.
"""

from __future__ import annotations

from typing import Tuple

import torch
from diffusers.hooks import HookRegistry, ModelHook

from ..geometry import VideoGeometry
from ..schedule import SparseState

HOOK_NAME = "dit_sparse_step"


def _timestep_value(timestep) -> float:
    if isinstance(timestep, torch.Tensor):
        # One host read per transformer call (not per attention call); Wan 2.2 TI2V passes per-token timesteps.
        return float(timestep.detach().float().max())
    return float(timestep)


class SparseStepHook(ModelHook):
    """Records step index, CFG branch and token grid for the processors of one transformer."""

    _is_stateful = True

    def __init__(self, state: SparseState, model: str, patch_size: Tuple[int, int, int]):
        super().__init__()
        self.state = state
        self.model = model
        self.patch_size = patch_size

    def pre_forward(self, module, *args, **kwargs):
        hidden_states = kwargs.get("hidden_states", args[0] if len(args) > 0 else None)
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        if hidden_states is None or timestep is None:
            raise ValueError(
                "dit_sparse's step hook expects the transformer to be called with hidden_states and timestep"
            )
        geometry = VideoGeometry.from_latents(hidden_states, self.patch_size, self.model)
        self.state.on_forward(_timestep_value(timestep), geometry)
        return args, kwargs

    def reset_state(self, module):
        # Diffusers resets stateful hooks at the end of every pipeline call; keep the statistics so summary(pipe)
        # still describes the run that just finished. The next call starts a new run (and clears them) by itself.
        self.state.last_timestep = None
        return module


def attach_step_hook(transformer, state: SparseState, model: str, patch_size) -> None:
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    if registry.get_hook(HOOK_NAME) is not None:
        registry.remove_hook(HOOK_NAME, recurse=False)
    registry.register_hook(SparseStepHook(state, model, tuple(patch_size)), HOOK_NAME)


def detach_step_hook(transformer) -> None:
    registry = getattr(transformer, "_diffusers_hook", None)
    if registry is not None and registry.get_hook(HOOK_NAME) is not None:
        registry.remove_hook(HOOK_NAME, recurse=False)
