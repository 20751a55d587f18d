"""Where Diffusers meets us: one module per model family, found from the transformer's class."""

from __future__ import annotations

from types import ModuleType

from . import flux, hunyuan_video, qwen_image, wan

# Diffusers class name -> the module that knows how to build its processors.
MODELS = {
    "WanTransformer3DModel": wan,
    "WanVACETransformer3DModel": wan,
    "HunyuanVideoTransformer3DModel": hunyuan_video,
    "FluxTransformer2DModel": flux,
    "QwenImageTransformer2DModel": qwen_image,
}


def model_module(transformer) -> ModuleType:
    """The processor module for ``transformer`` or a ``ValueError`` naming the supported models."""
    for cls in type(transformer).__mro__:
        if cls.__name__ in MODELS:
            return MODELS[cls.__name__]
    raise ValueError(
        f"{type(transformer).__name__} is not supported by dit_sparse; supported transformers: {', '.join(MODELS)}"
    )


__all__ = ["MODELS", "model_module"]
