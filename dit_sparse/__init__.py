"""dit-sparse: training-free sparse attention for video diffusion transformers in Diffusers."""

from .api import (
    apply_sparse_attention,
    remove_sparse_attention,
    reset_sparse_state,
    set_num_inference_steps,
    sparse_attn_processors,
    summary,
)
from .config import DenseConfig, DraftConfig, RadialConfig, SemanticConfig, SparseConfig, make_config
from .geometry import VideoGeometry
from .layout import BlockLayout

__version__ = "0.1.0"

__all__ = [
    "BlockLayout",
    "DenseConfig",
    "DraftConfig",
    "RadialConfig",
    "SemanticConfig",
    "SparseConfig",
    "VideoGeometry",
    "apply_sparse_attention",
    "make_config",
    "remove_sparse_attention",
    "reset_sparse_state",
    "set_num_inference_steps",
    "sparse_attn_processors",
    "summary",
]
