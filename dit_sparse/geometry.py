"""VideoGeometry: what a flattened (B, L, H, D) tensor no longer says about the video.

Tokens are flattened frame-major, then height, then width (Wan, HunyuanVideo, Flux and Qwen-Image alike; an image is
one frame). Text tokens, where a model has them in self-attention, follow the video tokens (HunyuanVideo) or precede
the image tokens (Flux, Qwen-Image) and are handled by the processor core, so patterns only ever see the video grid.
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
        model (`str`): "wan", "hunyuan_video", "flux" or "qwen_image" (patterns use it for model-specific defaults
            such as the sink).
        text_tokens (`int`, defaults to 0): text tokens of the call's joint attention where the processor cannot
            count them itself (Flux's single-stream blocks receive one concatenated [text, image] sequence).
    """

    frames: int
    height: int
    width: int
    model: str = "wan"
    text_tokens: int = 0

    def __post_init__(self):
        for name in ("frames", "height", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"VideoGeometry.{name} must be >= 1, got {getattr(self, name)}")
        if self.text_tokens < 0:
            raise ValueError(f"VideoGeometry.text_tokens must be >= 0, got {self.text_tokens}")

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

    @classmethod
    def from_image_ids(
        cls, hidden_states: torch.Tensor, img_ids: torch.Tensor, model: str, text_tokens: int = 0
    ) -> "VideoGeometry":
        """Token grid (1, rows, cols) of packed image tokens (B, L, C) from their position ids ``img_ids`` [L, 3] of
        (0, row, col) (Flux packs 2x2 latents, so an H x W image gives an (H/16, W/16) grid)."""
        if hidden_states.dim() != 3:
            raise ValueError(
                f"expected packed image tokens (batch, tokens, channels), got shape {tuple(hidden_states.shape)}"
            )
        if img_ids is None or img_ids.shape[-1] != 3 or img_ids.dim() not in (2, 3):
            got = None if img_ids is None else tuple(img_ids.shape)
            raise ValueError(
                f"packed image tokens need img_ids [tokens, 3] of (0, row, col) to give their grid, got {got}; "
                "call the transformer with img_ids as its pipeline does"
            )
        if img_ids.dim() == 3:  # Diffusers' deprecated batched ids (identical per sample)
            img_ids = img_ids[0]
        # One host read per transformer call, like the timestep's.
        rows, cols = (img_ids[:, 1:].amax(dim=0).round().long() + 1).tolist()
        return cls(1, rows, cols, model, text_tokens)

    @classmethod
    def from_image_shapes(
        cls, hidden_states: torch.Tensor, img_shapes, model: str, text_tokens: int = 0
    ) -> "VideoGeometry":
        """Token grid of packed image tokens (B, L, C) from Qwen-Image's ``img_shapes``: per sample a list of (frames,
        rows, cols) of packed tokens (Qwen-Image packs 2x2 latents, so an H x W image gives (1, H/16, W/16)). Read as
        its RoPE reads it: the first sample's shapes (a batch shares one size). Several shapes of one size (an edit's
        condition images after the target) are stacked as frames; shapes of different sizes give the first shape's
        grid, which does not cover the tokens, so the processors run dense."""
        if hidden_states.dim() != 3:
            raise ValueError(
                f"expected packed image tokens (batch, tokens, channels), got shape {tuple(hidden_states.shape)}"
            )
        shapes = img_shapes
        if isinstance(shapes, list) and shapes:  # one entry per sample, as QwenEmbedRope takes it
            shapes = shapes[0]
        if not isinstance(shapes, list):
            shapes = [shapes]
        try:
            shapes = [tuple(int(x) for x in shape) for shape in shapes]
        except TypeError:
            shapes = []
        if not shapes or any(len(shape) != 3 for shape in shapes):
            raise ValueError(
                f"packed image tokens need img_shapes, per sample a list of (frames, rows, cols), to give their grid, "
                f"got {img_shapes!r}; call the transformer with img_shapes as its pipeline does"
            )
        frames, rows, cols = shapes[0]
        if all(shape[1:] == (rows, cols) for shape in shapes[1:]):
            frames = sum(shape[0] for shape in shapes)
        return cls(frames, rows, cols, model, text_tokens)

    def token_coords(self, device=None) -> torch.Tensor:
        """(frame, row, col) of every video token, int64 [L, 3]."""
        idx = torch.arange(self.num_tokens, device=device)
        hw = self.tokens_per_frame
        return torch.stack([idx // hw, (idx % hw) // self.width, idx % self.width], dim=-1)
