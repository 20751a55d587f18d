"""The pattern interface: which key blocks each query block computes.

A pattern sees only video tokens (B, H, L_video, D) and the token grid; the processor core adds text tokens and the
schedule. A *static* pattern depends on the geometry alone (built once per geometry, shared by all layers and steps);
a dynamic one reads q and k and is recomputed on the schedule's refresh steps, reusing ``cache`` (one dict per layer
and CFG branch) to carry state such as k-means centroids between steps.
"""

from __future__ import annotations

from typing import Any, Dict

import torch

from ..config import SparseConfig
from ..geometry import VideoGeometry
from ..layout import BlockLayout


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

    def prepare(self, geometry: VideoGeometry, device: torch.device, cache) -> None:
        """Builds what a static pattern shares between layers (``cache.shared``) before the transformer's forward.

        Called by the step hook outside any compiled graph, so ``plan`` inside a ``torch.compile``-d block only reads
        the shared cache: no host read of a data-dependent size and no cache mutation that would change the graph's
        guards between calls. Dynamic patterns have nothing to prepare.
        """
