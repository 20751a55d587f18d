"""Ready-to-run pipelines: the ``generate`` CLI, the Gradio ``demo``, per-model ``presets`` and the offline ``tiny``
Wan model (gradio is imported only by the demo)."""

from .presets import PRESETS, ModelPreset, check_video_size, preset_for
from .tiny import build_tiny_pipeline

__all__ = ["PRESETS", "ModelPreset", "build_tiny_pipeline", "check_video_size", "preset_for"]
