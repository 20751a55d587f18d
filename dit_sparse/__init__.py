"""dit-sparse: training-free sparse attention for video diffusion transformers in Diffusers."""

import importlib
from typing import TYPE_CHECKING

from .config import (
    EVERY_TILE,
    DenseConfig,
    DraftConfig,
    RadialConfig,
    SemanticConfig,
    SparseConfig,
    TileConfig,
    make_config,
)

__version__ = "0.1.0"

# Imported on first use: the API pulls in Diffusers (seconds, tens of seconds on a cold disk), which the console
# script's --help and the configs do not need.
_LAZY = {
    "apply_sparse_attention": "api",
    "remove_sparse_attention": "api",
    "reset_sparse_state": "api",
    "set_num_inference_steps": "api",
    "sparse_attn_processors": "api",
    "summary": "api",
    "VideoGeometry": "geometry",
    "BlockLayout": "layout",
}

if TYPE_CHECKING:
    from .api import (
        apply_sparse_attention,
        remove_sparse_attention,
        reset_sparse_state,
        set_num_inference_steps,
        sparse_attn_processors,
        summary,
    )
    from .geometry import VideoGeometry
    from .layout import BlockLayout


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "EVERY_TILE",
    "BlockLayout",
    "DenseConfig",
    "DraftConfig",
    "RadialConfig",
    "SemanticConfig",
    "SparseConfig",
    "TileConfig",
    "VideoGeometry",
    "apply_sparse_attention",
    "make_config",
    "remove_sparse_attention",
    "reset_sparse_state",
    "set_num_inference_steps",
    "sparse_attn_processors",
    "summary",
]
