"""The dense pattern: every block (used to check that the sparse machinery reproduces dense attention)."""

from __future__ import annotations

from ..layout import BlockLayout
from .base import Pattern


class DensePattern(Pattern):
    name = "dense"
    static = True

    def plan(self, q, k, geometry, cache):
        bs = self.config.block_size
        return BlockLayout.dense(1, 1, q.shape[2], k.shape[2], bs, bs, device=q.device)
