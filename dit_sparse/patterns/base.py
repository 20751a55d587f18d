"""The pattern interface: which key blocks each query block computes.

A pattern sees only video tokens (B, H, L_video, D) and the token grid; the processor core adds text tokens and the
schedule. A *static* pattern depends on the geometry alone (built once per geometry, shared by all layers and steps);
a dynamic one reads q and k and is recomputed on the schedule's refresh steps, reusing ``cache`` (one dict per layer
and CFG branch) to carry state such as k-means centroids between steps.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict

import torch

from ..config import SparseConfig, env_flag
from ..geometry import VideoGeometry
from ..layout import BlockLayout

logger = logging.getLogger(__name__)

# "0" turns off the compiled planning of `compiled_planning` (eager planning everywhere).
COMPILE_PLANNING_ENV = "DIT_SPARSE_COMPILE_PLANNING"


class compiled_planning:  # noqa: N801 - used as a decorator
    """Runs a pattern's planning function (tensors in, tensors out) compiled by ``torch.compile(fullgraph=True)`` on
    CUDA tensors, eager elsewhere.

    Why: eager, a plan is some 40 small kernels (pooling, softmax, sort, cumsum, scatter) whose launches, not their
    work, cost the time: on an H200 draft's eager plan cost 1.4 ms per call even at 1,560 tokens (where dense attention
    takes 0.07 ms; ``...crossover-wan-frame-eager-planning.json``), and compiled with the whole block it cost
    nothing measurable (``...compile-wan1.3b-480p.json``). Compiled, the gathers of q and k into the tile order also
    fuse into the pooling, so the permuted copies are never written.

    Eager instead: on a CPU (``DIT_SPARSE_COMPILE_PLANNING=all`` compiles there too), inside a graph that is already
    being compiled (the caller's ``torch.compile``), with ``DIT_SPARSE_COMPILE_PLANNING=0``, or after compilation
    failed once (logged; e.g. no working compiler toolchain).
    Each new shape compiles once (Inductor's disk cache keeps the result for later processes).
    """

    def __init__(self, fn: Callable):
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__
        self._compiled = None
        self._failed = False

    @staticmethod
    def mode() -> str:
        """"cuda" (default: compile for CUDA tensors), "all" (every device: tests, CPU benchmarks) or "off"."""
        if os.environ.get(COMPILE_PLANNING_ENV, "").strip().lower() == "all":
            return "all"
        return "cuda" if env_flag(COMPILE_PLANNING_ENV, True) else "off"

    def __call__(self, *args, **kwargs):
        mode = self.mode()
        wanted = mode == "all" or (mode == "cuda" and args[0].is_cuda)
        if not wanted or self._failed or torch.compiler.is_compiling():
            return self.fn(*args, **kwargs)
        if self._compiled is None:
            self._compiled = torch.compile(self.fn, dynamic=False, fullgraph=True)
        try:
            return self._compiled(*args, **kwargs)
        except Exception as e:  # a compiler failure must not stop generation: plan eagerly from now on
            self._failed = True
            if "RecompileLimit" in type(e).__name__:
                # Not a failure: every new shape or setting (a demo's density slider) compiles once, up to Dynamo's
                # recompile_limit per function.
                logger.warning("compiled planning of %s reached Dynamo's recompile_limit (one graph per shape and "
                               "setting); planning eagerly from now on.", self.__name__)
            else:
                logger.warning("compiled planning of %s failed (%s: %s); planning eagerly from now on. Set %s=0 to "
                               "skip the attempt.", self.__name__, type(e).__name__, str(e).splitlines()[0][:200],
                               COMPILE_PLANNING_ENV)
            return self.fn(*args, **kwargs)


class Pattern:
    """Base class of block-selection patterns."""

    name: str = "base"
    static: bool = False
    # Whether ``plan`` reads or writes the layer's ``cache`` entries (warm-start state such as k-means centroids).
    # A dynamic pattern without them can run inside a compiled graph without the per-branch cache key.
    layer_state: bool = True

    def __init__(self, config: SparseConfig):
        self.config = config

    def plan(
        self, q: torch.Tensor, k: torch.Tensor, geometry: VideoGeometry, cache: Dict[str, Any]
    ) -> BlockLayout:  # pragma: no cover - interface
        """Returns the layout for video queries/keys q, k of shape (B, H, L, D)."""
        raise NotImplementedError

    def token_order(self, geometry: VideoGeometry, device: torch.device, cache):
        """The one token order (int64 [L]) that every layout this pattern plans for ``geometry`` applies to queries and
        keys alike, or None. Where there is one, the step hook can put the tokens in that order once per transformer
        call instead of every attention call gathering and scattering them (`dit_sparse.processors.hooks`). Only
        static patterns have one: a dynamic pattern reads q and k in their original order. Called after `prepare`."""
        return None

    def prepare(self, geometry: VideoGeometry, device: torch.device, cache) -> None:
        """Builds what a static pattern shares between layers (``cache.shared``) before the transformer's forward.

        Called by the step hook outside any compiled graph, so ``plan`` inside a ``torch.compile``-d block only reads
        the shared cache: no host read of a data-dependent size and no cache mutation that would change the graph's
        guards between calls. Dynamic patterns have nothing to prepare.
        """
