"""When to be sparse: dense warm-up steps and layers, pattern refresh and reuse across steps.

One ``SparseState`` is owned by a transformer (shared with ``transformer_2`` of a Wan 2.2 pipeline, so both count the
same denoising steps). The step hook updates it once per transformer call; processors read plain booleans from it,
so a compiled block sees only a few distinct values (no recompilation per step).

Steps are counted by distinct timesteps: the conditional and unconditional calls of classifier-free guidance share a
step and are told apart by ``branch`` (0, 1, ...). A timestep larger than the previous one starts a new run, which
resets the step count, the caches and the statistics.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch

from .config import SparseConfig
from .geometry import VideoGeometry

DENSE = "dense"
STATIC = "static"
FRESH = "fresh"
CACHED = "cached"


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
    branch: int = 0
    run: int = 0
    last_timestep: Optional[float] = None
    geometry: Optional[VideoGeometry] = None
    total_steps: Optional[int] = None
    dense_steps: int = 0
    # What processors read during a call (booleans keep compiled graphs stable).
    dense_now: bool = True
    refresh_now: bool = True
    caches: Dict[Tuple, Dict[str, Any]] = field(default_factory=dict)
    stats: Dict[str, LayerStats] = field(default_factory=dict)
    backend_used: Optional[str] = None
    original_processors: Dict[int, Dict[str, Any]] = field(default_factory=dict)
    _scheduler_ref: Any = None

    # ------------------------------------------------------------------ set-up
    def set_scheduler(self, scheduler) -> None:
        """Remembers the pipeline's scheduler so a fractional ``dense_steps`` knows the run's step count."""
        self._scheduler_ref = weakref.ref(scheduler) if scheduler is not None else None

    def _scheduler_steps(self) -> Optional[int]:
        if self.total_steps is not None:
            return self.total_steps
        sched = self._scheduler_ref() if self._scheduler_ref is not None else None
        timesteps = getattr(sched, "timesteps", None) if sched is not None else None
        return len(timesteps) if timesteps is not None else None

    def reset(self) -> None:
        """Forgets the current run: step count, caches and statistics."""
        self.step = -1
        self.branch = 0
        self.last_timestep = None
        self.caches.clear()
        self.stats.clear()
        self.backend_used = None

    # ------------------------------------------------------------------ per transformer call
    def on_forward(self, timestep: float, geometry: VideoGeometry) -> None:
        """Advances the step counter for one transformer call at ``timestep``."""
        if self.last_timestep is None or timestep > self.last_timestep + 1e-6:
            self.reset()
            self.run += 1
            self.step = 0
            self.branch = 0
            # Dense configs never go sparse, so they need no step count.
            self.dense_steps = 0 if self.pattern is None else self.config.resolve_dense_steps(self._scheduler_steps())
        elif abs(timestep - self.last_timestep) <= 1e-6:
            self.branch += 1
        else:
            self.step += 1
            self.branch = 0
        self.last_timestep = timestep
        self.geometry = geometry
        self.dense_now = self.step < self.dense_steps
        sparse_step = self.step - self.dense_steps
        self.refresh_now = sparse_step >= 0 and sparse_step % self.config.refresh_every == 0

    def decide(self, layer: int, static: bool, cache_key: Tuple) -> str:
        """dense | static | fresh | cached for block ``layer`` in the current call."""
        if self.pattern is None or self.dense_now or layer < self.config.dense_layers:
            return DENSE
        if static:
            return STATIC
        if self.refresh_now or cache_key not in self.caches:
            return FRESH
        return CACHED

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
            "geometry": None if self.geometry is None else list(self.geometry.key),
            "layers": per_layer,
        }
