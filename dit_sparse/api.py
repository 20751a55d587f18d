"""The public entry points: apply / remove / inspect sparse attention on a pipeline or a transformer."""

from __future__ import annotations

import numbers
from typing import Any, Dict, List, Optional

from .config import SparseConfig
from .patterns import make_pattern
from .processors import model_module
from .processors.base import SparseAttentionCore
from .processors.hooks import attach_step_hook, detach_step_hook
from .schedule import SparseState

_STATE_ATTR = "_dit_sparse_state"
_ORIGINALS_ATTR = "_dit_sparse_original_processors"


def _transformers(pipe_or_transformer) -> List[Any]:
    """The transformer itself, or a pipeline's ``transformer`` and (Wan 2.2) ``transformer_2``."""
    if hasattr(pipe_or_transformer, "attn_processors") and hasattr(pipe_or_transformer, "set_attn_processor"):
        return [pipe_or_transformer]
    found = [getattr(pipe_or_transformer, n, None) for n in ("transformer", "transformer_2")]
    found = [t for t in found if t is not None]
    if not found:
        raise ValueError(
            f"{type(pipe_or_transformer).__name__} is neither a Diffusers transformer nor a pipeline with a "
            "`transformer`; pass e.g. a WanPipeline, a HunyuanVideoPipeline or pipe.transformer"
        )
    return found


def _check_config(config) -> None:
    if not isinstance(config, SparseConfig):
        raise ValueError(
            "config must be a dit_sparse config (DenseConfig, RadialConfig, SemanticConfig, DraftConfig, TileConfig "
            f"or make_config(...)), got {type(config).__name__}"
        )


def sparse_attn_processors(
    transformer, config: SparseConfig, *, state: Optional[SparseState] = None, model_index: int = 0
) -> Dict[str, Any]:
    """Processors for ``transformer.set_attn_processor(...)``; also attaches the step hook.

    ``transformer.set_attn_processor(sparse_attn_processors(transformer, config))`` is equivalent to
    ``apply_sparse_attention(transformer, config)``. Self-attention (Wan ``attn1``, HunyuanVideo joint attention) gets
    our sparse processors; the attention we do not sparsify (Wan cross-attention, HunyuanVideo's token refiner) keeps
    its current processor object.

    Side effects on ``transformer`` (undone by ``remove_sparse_attention``): it gets the step hook (a Diffusers
    ``ModelHook`` named ``"dit_sparse_step"`` in its hook registry, which also registers a PyTorch forward pre-hook),
    the ``SparseState`` as attribute ``_dit_sparse_state`` and, on the first call, its original processors as
    ``_dit_sparse_original_processors``. A second call replaces the hook and the state's config, and forgets the
    state's caches. The processors are only returned: nothing changes the attention until ``set_attn_processor``.

    A fractional ``dense_steps`` needs the run's step count. It is read at the first call of each run: from the cache
    context of a pipeline that passes it (``WanPipeline``: ``cache_context("cond", num_inference_steps=...)``), else
    from ``dit_sparse.set_num_inference_steps(transformer, n)``, else from the scheduler of a pipeline given to
    ``apply_sparse_attention``; failing all, the fraction is taken of ``DEFAULT_NUM_STEPS`` (50, Diffusers' default
    for Wan and HunyuanVideo), with a warning.

    Args:
        transformer: a ``WanTransformer3DModel`` or ``HunyuanVideoTransformer3DModel``.
        config (`SparseConfig`): the method and schedule.
        state (`SparseState`, *optional*): share one state (one step counter) between transformers (Wan 2.2).
        model_index (`int`): 0 for ``transformer``, 1 for ``transformer_2`` (keeps their caches apart).

    Returns:
        `dict` mapping every processor name of ``transformer.attn_processors`` to a processor.
    """
    _check_config(config)
    module = model_module(transformer)
    if state is None:
        state = SparseState(config)
    state.use(config, make_pattern(config))
    current = transformer.attn_processors
    if not hasattr(transformer, _ORIGINALS_ATTR):
        setattr(transformer, _ORIGINALS_ATTR, dict(current))
    originals = getattr(transformer, _ORIGINALS_ATTR)
    setattr(transformer, _STATE_ATTR, state)
    attach_step_hook(transformer, state, module.MODEL, module.patch_size(transformer), model_index,
                     getattr(module, "reorder_tokens", None))

    processors = {}
    for name, proc in current.items():
        layer = module.is_sparse_target(name, transformer)
        original = originals.get(name, proc)
        if layer is None:
            processors[name] = original
            continue
        core = SparseAttentionCore(state, layer, name if model_index == 0 else f"transformer_2.{name}", model_index)
        new = module.make_processor(core)
        # Keep the user's attention backend and context-parallel settings for the dense path.
        new._attention_backend = getattr(original, "_attention_backend", None)
        new._parallel_config = getattr(original, "_parallel_config", None)
        processors[name] = new
    return processors


def apply_sparse_attention(pipe_or_transformer, config: SparseConfig) -> None:
    """Replaces self-attention processors with sparse ones and attaches the step hook.

    Given a pipeline, acts on ``transformer`` and, when present, ``transformer_2`` (Wan 2.2); both share one step
    counter, and the scheduler's step count resolves a fractional ``dense_steps``.

    Args:
        pipe_or_transformer: a Diffusers video pipeline (``WanPipeline``, ``HunyuanVideoPipeline``, ...) or its
            transformer.
        config (`SparseConfig`): e.g. ``RadialConfig()`` or ``make_config("radial", dense_steps=12)``.
    """
    _check_config(config)
    transformers = _transformers(pipe_or_transformer)
    state = SparseState(config)
    scheduler = getattr(pipe_or_transformer, "scheduler", None)
    if scheduler is not None:
        state.set_scheduler(scheduler)
    for index, transformer in enumerate(transformers):
        transformer.set_attn_processor(sparse_attn_processors(transformer, config, state=state, model_index=index))


def remove_sparse_attention(pipe_or_transformer) -> None:
    """Restores the original processor objects, removes the step hook and forgets every cache of the state."""
    for transformer in _transformers(pipe_or_transformer):
        state = getattr(transformer, _STATE_ATTR, None)
        if state is not None:
            state.clear_caches()
        originals = getattr(transformer, _ORIGINALS_ATTR, None)
        if originals is not None:
            transformer.set_attn_processor(dict(originals))
            delattr(transformer, _ORIGINALS_ATTR)
        detach_step_hook(transformer)
        if hasattr(transformer, _STATE_ATTR):
            delattr(transformer, _STATE_ATTR)


def get_state(pipe_or_transformer) -> SparseState:
    for transformer in _transformers(pipe_or_transformer):
        state = getattr(transformer, _STATE_ATTR, None)
        if state is not None:
            return state
    raise ValueError("no sparse attention is applied here; call apply_sparse_attention(pipe, config) first")


def summary(pipe_or_transformer) -> Dict[str, Any]:
    """Statistics of the latest run: calls, dense/sparse calls, mean density, backend, per-layer densities.

    Returns:
        `dict` with ``calls``, ``dense_calls``, ``sparse_calls``, ``mean_density`` (mean fraction of key blocks
        computed over sparse calls, None when no call was sparse), ``backend``, ``steps``, ``dense_fallback`` (why a
        sparse config ran dense, e.g. ``"8,640 video tokens < min_sparse_tokens 12,288"``; None when it did not),
        ``token_ordered_calls`` (transformer calls whose image tokens the step hook put in the pattern's token order
        once, so that no attention call permuted them: the tile pattern on Flux and Qwen-Image without autograd) and
        ``layers``.
    """
    return get_state(pipe_or_transformer).summary()


def set_num_inference_steps(pipe_or_transformer, num_steps: int) -> None:
    """Tells a transformer-only setup the run's step count, for a fractional ``dense_steps``."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 1:
        raise ValueError(
            f"num_steps must be a positive int (the num_inference_steps of the run), got {num_steps!r}; "
            "e.g. set_num_inference_steps(transformer, 50)"
        )
    get_state(pipe_or_transformer).total_steps = int(num_steps)


def reset_sparse_state(pipe_or_transformer) -> None:
    """Forgets step count and caches (a new run is also detected automatically from the timesteps)."""
    get_state(pipe_or_transformer).reset()
