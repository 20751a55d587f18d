"""Block-selection patterns, one file per method."""

from __future__ import annotations

import importlib
from typing import Optional

from ..config import SparseConfig
from .base import Pattern

# method name -> (module, class); a method is one file in this folder.
PATTERNS = {
    "radial": ("radial", "RadialPattern"),
    "semantic": ("semantic", "SemanticPattern"),
    "draft": ("draft", "DraftPattern"),
    "tile": ("tile", "TilePattern"),
}


def make_pattern(config: SparseConfig) -> Optional[Pattern]:
    """The pattern for ``config`` (None for dense: processors then call Diffusers' attention unchanged)."""
    if config.method == "dense":
        return None
    if config.method not in PATTERNS:
        raise ValueError(f"no pattern for method {config.method!r}; known: dense, {', '.join(PATTERNS)}")
    module_name, cls_name = PATTERNS[config.method]
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ModuleNotFoundError as err:
        if err.name == f"{__name__}.{module_name}":
            raise ValueError(f"the {config.method!r} pattern is not available in this version of dit_sparse") from err
        raise
    return getattr(module, cls_name)(config)


__all__ = ["Pattern", "PATTERNS", "make_pattern"]
