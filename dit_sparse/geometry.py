"""VideoGeometry: what a flattened (B, L, H, D) tensor no longer says about the video.

Tokens are flattened frame-major, then height, then width (Wan and HunyuanVideo alike). Text tokens, where a model
has them in self-attention (HunyuanVideo), follow the video tokens and are handled by the processor core, so patterns
only ever see the video grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch


@dataclass(frozen=True)
class VideoGeometry:
    """Token grid of one transformer call.

    Args:
        frames (`int`): latent frames after temporal patching.
        height (`int`): token rows per frame after spatial patching.
        width (`int`): token columns per frame after spatial patching.
        model (`str`): "wan" or "hunyuan_video" (patterns use it for model-specific defaults such as the sink).
    """

    frames: int
    height: int
    width: int
    model: str = "wan"

    def __post_init__(self):
        for name in ("frames", "height", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"VideoGeometry.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def tokens_per_frame(self) -> int:
        return self.height * self.width

    @property
    def num_tokens(self) -> int:
        return self.frames * self.height * self.width

    @property
    def key(self) -> Tuple[int, int, int]:
        return (self.frames, self.height, self.width)

    @classmethod
    def from_latents(
        cls, hidden_states: torch.Tensor, patch_size: Tuple[int, int, int], model: str
    ) -> "VideoGeometry":
        """Token grid from latents (B, C, F, H, W) and the model's (t, h, w) patch size."""
        if hidden_states.dim() != 5:
            raise ValueError(
                "expected video latents (batch, channels, frames, height, width), "
                f"got shape {tuple(hidden_states.shape)}"
            )
        _, _, f, h, w = hidden_states.shape
        pt, ph, pw = patch_size
        return cls(f // pt, h // ph, w // pw, model)

    def token_coords(self, device=None) -> torch.Tensor:
        """(frame, row, col) of every video token, int64 [L, 3]."""
        idx = torch.arange(self.num_tokens, device=device)
        hw = self.tokens_per_frame
        return torch.stack([idx // hw, (idx % hw) // self.width, idx % self.width], dim=-1)
