"""When to be sparse: dense warm-up steps and layers, pattern refresh and reuse across steps.

One ``SparseState`` is owned by a transformer (shared with ``transformer_2`` of a Wan 2.2 pipeline, so both count the
same denoising steps). The step hook updates it once per transformer call, outside any compiled graph; processors read
plain booleans from it, so a compiled block sees only a few distinct values (no recompilation per step).

Step and CFG branch come from Diffusers' ``transformer.cache_context(name, ...)`` where the pipeline gives one (the
mechanism ``FirstBlockCache`` keys its state by): the name (``"cond"``, ``"uncond"``, ...) is the branch, and the
context's ``step_index`` / ``num_inference_steps`` the step and the run's length. Without a context the step is
guessed from the timesteps: calls at the same timestep are branches 0, 1, ... of one step, a smaller timestep is the
next step, a larger one starts a new run. A new run (also: the end of a pipeline call) forgets the caches.

All state a later call reads lives here, keyed by name: the per-layer entries per (transformer, layer) and kind of
call (branch, grid, batch: a slot), read as one mapping ``caches`` by ``LayerKey``, and ``shared`` per geometry
(static layouts, tilings). Both are bounded whatever the caller does.
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, NamedTuple, Optional, Tuple

import torch

from .config import SparseConfig
from .geometry import VideoGeometry

logger = logging.getLogger(__name__)

DENSE = "dense"
STATIC = "static"
FRESH = "fresh"
CACHED = "cached"
# Cache-entry key of a layout planned in the current step (read by a later branch of it or by a checkpointed
# recomputation); `SparseState._new_step` removes it when the step ends.
PLANNED_NOW = "planned_now"

# A fractional ``dense_steps`` with no way to learn the run's step count (a transformer on its own, called by a
# pipeline that passes no ``num_inference_steps`` in its cache context) is taken of this many steps: the default
# ``num_inference_steps`` of Diffusers' Wan and HunyuanVideo pipelines. A warning says so once per state.
DEFAULT_NUM_STEPS = 50


class LayerKey(NamedTuple):
    """Names the cache entry of one attention layer in one kind of call."""

    model_index: int  # 0: ``transformer``, 1: Wan 2.2's ``transformer_2``
    layer: int  # block index
    branch: Hashable  # the cache-context name ("cond", "uncond"), or the call's ordinal in its step without one
    grid: Tuple[int, int, int]  # token grid (frames, height, width)
    batch: int

    @property
    def slot(self) -> Tuple:
        """The kind of transformer call this entry belongs to (everything but the layer)."""
        return (self.model_index, self.branch, self.grid, self.batch)


class BoundedCache:
    """A small least-recently-used mapping: the one eviction rule for objects shared by layers (per geometry)."""

    def __init__(self, maxsize: int = 8):
        self.maxsize = maxsize
        self._data: "OrderedDict[Hashable, Any]" = OrderedDict()

    def get_or_build(self, key: Hashable, build: Callable[[], Any]) -> Any:
        if key in self._data:
            self._data.move_to_end(key)
            return self._data[key]
        value = build()
        self._data[key] = value
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key) -> bool:
        return key in self._data


class PlanCache(dict):
    """What ``Pattern.plan`` gets as ``cache``: the layer's own entries (warm-start state), plus ``shared``, the
    state's per-geometry ``BoundedCache`` for objects every layer reads (a static layout, a tiling). Patterns must
    accept a plain dict too (then there is nothing shared to reuse)."""

    def __init__(self, entries: Optional[dict] = None, shared: Optional[BoundedCache] = None):
        super().__init__(entries or {})
        self.shared = shared


def shared_or_build(cache, key: Hashable, build: Callable[[], Any]) -> Any:
    """``cache.shared.get_or_build(key, build)`` when the caller passed a ``PlanCache``, else ``build()``."""
    shared = getattr(cache, "shared", None)
    return build() if shared is None else shared.get_or_build(key, build)


@dataclass
class LayerStats:
    calls: int = 0
    dense_calls: int = 0
    sparse_calls: int = 0
    # Accumulated on the device without a host sync; read by summary().
    density_sum: Any = 0.0


@dataclass
class SparseState:
    """Per-transformer schedule state and caches.

    Args:
        config (`SparseConfig`): the method's configuration.
    """

    config: SparseConfig
    pattern: Any = None
    step: int = -1
    # The call's ordinal within its step (0 for the first call, "cond" in Diffusers' pipelines, 1 for the second).
    branch: int = 0
    # What caches are keyed by: the cache-context name, or ``branch`` when the caller gives no context.
    branch_key: Hashable = 0
    run: int = 0
    last_timestep: Optional[float] = None
    geometry: Optional[VideoGeometry] = None
    total_steps: Optional[int] = None
    dense_steps: int = 0
    # What processors read during a call (booleans keep compiled graphs stable).
    dense_now: bool = True
    # The current call has too few video tokens to be sparse (``min_sparse_tokens``; see ``prepare``).
    fallback_now: bool = False
    refresh_now: bool = True
    # The order (int64 [L], `Pattern.token_order`) in which the step hook handed this call's image tokens to the
    # transformer, or None (original order). The processors then run the layouts without their permutation.
    token_order: Optional[torch.Tensor] = None
    # Transformer calls of this run whose tokens the step hook ordered that way (``summary()["token_ordered_calls"]``).
    token_ordered_calls: int = 0
    # Whether a layout planned now is read by a later step (refresh_every > 1 and the next step is no refresh).
    keep_layouts: bool = False
    # Keep every planned layout of the latest step (for inspection, e.g. generate's layout plot); off by default.
    retain_layouts: bool = False
    # At most this many kinds of call (transformer, branch, grid, batch) keep per-layer caches; the least recently
    # used kind is forgotten first, so a caller making many calls at one timestep cannot grow the state.
    max_slots: int = 4
    # (model_index, layer) -> {slot: entry}. Each processor holds its own inner mapping (`layer_caches`), so that a
    # compiled block reaches its entries without reading its layer index: a guard on it would make
    # compile_repeated_blocks compile every block anew. The inner mappings are emptied in place, never replaced.
    _layer_caches: Dict[Tuple[int, int], Dict[Tuple, Dict[str, Any]]] = field(default_factory=dict)
    shared: BoundedCache = field(default_factory=BoundedCache)
    stats: Dict[str, LayerStats] = field(default_factory=dict)
    backend_used: Optional[str] = None
    # Why the current run's calls are dense although the config is sparse (too few video tokens), else None.
    dense_fallback: Optional[str] = None
    _scheduler_ref: Any = None
    _context_steps: Optional[int] = None
    _run_ended: bool = False
    _step_offset: int = 0
    _seen: Dict[Hashable, int] = field(default_factory=dict)  # context names of the current step -> ordinal
    _calls_in_step: int = 0
    _slots: "OrderedDict[Tuple, None]" = field(default_factory=OrderedDict)
    _warned_steps: bool = False
    _warned_fallback: Optional[str] = None

    # ------------------------------------------------------------------ set-up
    def use(self, config: SparseConfig, pattern) -> None:
        """Switches to ``config`` and its ``pattern``; what was cached for the previous ones is forgotten."""
        self.config = config
        self.pattern = pattern
        self.clear_caches()

    def set_scheduler(self, scheduler) -> None:
        """Remembers the pipeline's scheduler so a fractional ``dense_steps`` knows the run's step count."""
        self._scheduler_ref = weakref.ref(scheduler) if scheduler is not None else None

    def _scheduler_steps(self) -> Optional[int]:
        """The run's step count: the cache context's, an explicit ``set_num_inference_steps``, the scheduler's."""
        if self._context_steps is not None:
            return self._context_steps
        if self.total_steps is not None:
            return self.total_steps
        sched = self._scheduler_ref() if self._scheduler_ref is not None else None
        timesteps = getattr(sched, "timesteps", None) if sched is not None else None
        return len(timesteps) if timesteps is not None else None

    def _resolve_dense_steps(self) -> int:
        if self.pattern is None:  # dense configs never go sparse, so they need no step count
            return 0
        steps = self._scheduler_steps()
        if steps is None and not isinstance(self.config.dense_steps, int):
            steps = DEFAULT_NUM_STEPS
            if not self._warned_steps:
                logger.warning(
                    "dense_steps=%s is a fraction of the run's steps, but the step count is unknown (no scheduler, no "
                    "num_inference_steps in the pipeline's cache_context): assuming %d steps. Pass the pipeline to "
                    "apply_sparse_attention, call dit_sparse.set_num_inference_steps(transformer, n), or give "
                    "dense_steps as an int", self.config.dense_steps, DEFAULT_NUM_STEPS,
                )
                self._warned_steps = True
        return self.config.resolve_dense_steps(steps)

    # ------------------------------------------------------------------ per-layer caches
    def layer_caches(self, model_index: int, layer: int) -> Dict[Tuple, Dict[str, Any]]:
        """The entries of one layer, per slot (see ``call_slot``): the mapping its processor keeps a reference to."""
        return self._layer_caches.setdefault((int(model_index), int(layer)), {})

    def call_slot(self, model_index: int, batch: int) -> Tuple:
        """The kind of the current call for transformer ``model_index`` (``LayerKey.slot``)."""
        # With share_cfg_layouts every call of a step reads and writes one entry (the first call's plan).
        branch = 0 if self.config.share_cfg_layouts else self.branch_key
        return (model_index, branch, self.geometry.key, int(batch))

    @property
    def caches(self) -> Dict[LayerKey, Dict[str, Any]]:
        """Every per-layer entry by ``LayerKey`` (a read-only view; the processors write through ``layer_caches``)."""
        return {LayerKey(index, layer, *slot[1:]): entry
                for (index, layer), per_slot in self._layer_caches.items() for slot, entry in per_slot.items()}

    def _drop_layer_caches(self, slot: Optional[Tuple] = None) -> None:
        """Forgets the per-layer entries of ``slot`` (all slots: None), in place."""
        for per_slot in self._layer_caches.values():
            if slot is None:
                per_slot.clear()
            else:
                per_slot.pop(slot, None)

    def clear_caches(self) -> None:
        """Forgets every cached layout and pattern state (per layer and shared)."""
        self._drop_layer_caches()
        self._slots.clear()
        self.shared.clear()

    def reset(self) -> None:
        """Forgets the current run: step count, caches and statistics."""
        self.step = -1
        self.branch = 0
        self.branch_key = 0
        self.last_timestep = None
        self._run_ended = False
        self._new_step()
        self.clear_caches()
        self.stats.clear()
        self.token_ordered_calls = 0
        self.backend_used = None
        self.dense_fallback = None

    def end_run(self) -> None:
        """The pipeline call is over (Diffusers resets stateful hooks): the next call starts a new run. Per-layer
        caches are dropped now, since no later call reads them; statistics stay for ``summary(pipe)``."""
        self._run_ended = True
        self.last_timestep = None
        self._drop_layer_caches()
        self._slots.clear()

    # ------------------------------------------------------------------ per transformer call
    def on_forward(
        self,
        timestep: float,
        geometry: VideoGeometry,
        context: Any = None,
        batch: int = 1,
        model_index: int = 0,
    ) -> None:
        """Advances step and branch for one transformer call at ``timestep``.

        Args:
            timestep (`float`): the call's (largest) timestep.
            geometry (`VideoGeometry`): the token grid of the call.
            context (*optional*): Diffusers' ``CacheContext`` of the call (or, in older Diffusers, its name).
            batch (`int`): the call's batch size (part of the cache key).
            model_index (`int`): 0 for ``transformer``, 1 for ``transformer_2``.
        """
        name = getattr(context, "name", context)
        step_index = getattr(context, "step_index", None)
        self._context_steps = getattr(context, "num_inference_steps", None)
        eps = 1e-6
        new_run = self._run_ended or self.last_timestep is None
        if not new_run:
            # A context's step index is trusted over the timesteps (a sampler may revisit a noise level).
            if step_index is not None:
                new_run = step_index - self._step_offset < self.step
            else:
                new_run = timestep > self.last_timestep + eps
        if new_run:
            self.reset()
            self.run += 1
            self.step = 0
            self._step_offset = step_index if step_index is not None else 0
            self.dense_steps = self._resolve_dense_steps()
        elif step_index is not None:
            if step_index - self._step_offset != self.step:
                self.step = step_index - self._step_offset
                self._new_step()
        elif timestep < self.last_timestep - eps or (name is not None and name in self._seen):
            self.step += 1
            self._new_step()
        if name is None:
            self.branch = self.branch_key = self._calls_in_step
        else:
            self.branch = self._seen.setdefault(name, self._calls_in_step)
            self.branch_key = name
            while len(self._seen) > 4 * self.max_slots:  # a caller inventing names: bounded too
                self._seen.pop(next(iter(self._seen)))
        self._calls_in_step += 1
        self.last_timestep = timestep
        self.geometry = geometry
        self._touch_slot(self.call_slot(model_index, batch))
        self.dense_now = self.step < self.dense_steps
        sparse_step = self.step - self.dense_steps
        every = self.config.refresh_every
        self.refresh_now = sparse_step >= 0 and sparse_step % every == 0
        # Shared between a step's calls, a layout is kept until the next plan replaces it (which later call of the
        # step reads it last is not known in advance).
        self.keep_layouts = (every > 1 and (sparse_step + 1) % every != 0) or self.config.share_cfg_layouts

    def fallback_reason(self, video_tokens: int, device) -> Optional[str]:
        """Why a sparse call of ``video_tokens`` tokens on ``device`` runs dense (``min_sparse_tokens``), or None."""
        if self.pattern is None:
            return None
        threshold = self.config.resolve_min_sparse_tokens(device)
        if video_tokens >= threshold:
            return None
        return f"{video_tokens:,} video tokens < min_sparse_tokens {threshold:,}"

    def prepare(self, device) -> None:
        """Before a transformer call on ``device`` (after ``on_forward``, outside any compiled graph): decides the
        dense fallback for the call's token count and builds what a static pattern shares between layers, so that
        the processors only read plain values."""
        reason = self.fallback_reason(self.geometry.num_tokens, device)
        if reason is not None:
            self.dense_fallback = reason
            if reason != self._warned_fallback:
                auto = "automatic, " if self.config.min_sparse_tokens is None else ""
                logger.warning(
                    "dit_sparse: %s (%sdevice %s): sparse attention would not be faster here, running dense. Set "
                    "min_sparse_tokens=0 in the config to run sparse anyway", reason, auto, torch.device(device).type,
                )
                self._warned_fallback = reason
        self.fallback_now = reason is not None
        prepare = getattr(self.pattern, "prepare", None)
        if prepare is not None and not (self.dense_now or self.fallback_now):
            prepare(self.geometry, torch.device(device), PlanCache(None, self.shared))

    def _new_step(self) -> None:
        self._seen.clear()
        self._calls_in_step = 0
        # Layouts planned in the step that ended are no longer this step's (outside any compiled graph: a graph that
        # compared step numbers would guard on them and recompile every step).
        for per_slot in self._layer_caches.values():
            for entry in per_slot.values():
                entry.pop(PLANNED_NOW, None)

    def _touch_slot(self, slot: Tuple) -> None:
        self._slots[slot] = None
        self._slots.move_to_end(slot)
        while len(self._slots) > self.max_slots:
            old, _ = self._slots.popitem(last=False)
            self._drop_layer_caches(old)

    def layer_cache_needed(self, compiling: bool = False) -> bool:
        """Whether a dynamic pattern's calls read or write per-layer cache entries: its own warm-start state, a layout
        reused by a later step (``refresh_every`` > 1) or kept for inspection (``retain_layouts``).

        ``compiling``: inside a compiled graph, a pattern without warm-start state plans on every call even when
        ``refresh_every`` > 1. A layout kept for a later step is Python state the graph would guard on: measured on
        tiny, draft with ``refresh_every=2`` under ``compile_repeated_blocks(fullgraph=True)`` recompiled until it
        hit the limit and failed (``python -m dit_sparse.eval.bench compile --model tiny``). A pattern with
        warm-start state (semantic) keeps its layouts there too: they are marked as this step's by a flag the step
        hook clears (`PLANNED_NOW`), not by the step number the graph would guard on."""
        layer_state = bool(getattr(self.pattern, "layer_state", True))
        if compiling and not layer_state and not self.retain_layouts:
            return False
        return self.config.refresh_every > 1 or self.retain_layouts or layer_state

    def decide(
        self, layer: int, static: bool, entry: Optional[Dict[str, Any]] = None, *, dense_layer: Optional[bool] = None
    ) -> str:
        """dense | static | fresh | cached for block ``layer`` in the current call, whose cache entry is ``entry``.

        ``dense_layer`` (whether ``layer < config.dense_layers``), when the caller knows it, spares the comparison:
        a compiled block that reads no layer index compiles once for every block of ``compile_repeated_blocks``.
        """
        if dense_layer is None:
            dense_layer = layer < self.config.dense_layers
        if self.pattern is None or self.dense_now or self.fallback_now or dense_layer:
            return DENSE
        if static:
            return STATIC
        if entry is not None and "layout" in entry:
            # Planned at this (run, step) already: by this call's branch, a recomputation (gradient checkpointing);
            # by another (``share_cfg_layouts``), the layout this call shares. Either way it is reused.
            if PLANNED_NOW in entry or not self.refresh_now:
                return CACHED
        return FRESH

    # ------------------------------------------------------------------ statistics
    def record(self, name: str, dense: bool, density: Optional[torch.Tensor] = None) -> None:
        if torch.compiler.is_compiling():
            # Python-side counters would break the graph; summary() then reports what eager calls saw.
            return
        st = self.stats.get(name)
        if st is None:
            st = self.stats[name] = LayerStats()
        st.calls += 1
        if dense:
            st.dense_calls += 1
        else:
            st.sparse_calls += 1
            st.density_sum = st.density_sum + density.detach().float()

    def summary(self) -> Dict[str, Any]:
        calls = sum(s.calls for s in self.stats.values())
        dense = sum(s.dense_calls for s in self.stats.values())
        sparse = sum(s.sparse_calls for s in self.stats.values())
        per_layer = {}
        total_density = 0.0
        for name, s in self.stats.items():
            dens = float(s.density_sum) / s.sparse_calls if s.sparse_calls else None
            per_layer[name] = {
                "calls": s.calls, "dense_calls": s.dense_calls, "sparse_calls": s.sparse_calls, "density": dens
            }
            if s.sparse_calls:
                total_density += float(s.density_sum)
        return {
            "method": self.config.method,
            "calls": calls,
            "dense_calls": dense,
            "sparse_calls": sparse,
            "mean_density": total_density / sparse if sparse else None,
            "backend": self.backend_used,
            "steps": self.step + 1,
            "dense_steps": self.dense_steps,
            "dense_fallback": self.dense_fallback,
            "token_ordered_calls": self.token_ordered_calls,
            "geometry": None if self.geometry is None else list(self.geometry.key),
            "layers": per_layer,
        }
