"""Attention inputs with photographic content: q, k, v of a video made from real photographs (scikit-image's bundled
images, no download), a stand-in for a trained DiT block where no trained weights are at hand.

`dit_sparse.eval.fidelity.synthetic_qkv` draws content as a few smooth blobs, which flatters methods that cluster
(Sparse VideoGen 2's separate clusters looked better than random there, and worse than random here). Here every
token carries the pixels it covers: a camera pans across a photograph while a second photograph's crop moves across
it, so tokens have high-frequency detail, repeated textures far apart, and the same object in distant frames. Per
head:

- content features: the token's p x p RGB patch plus its 3 x 3 neighbourhood mean (standardised), through a random
  projection to ``head_dim`` channels; k = q's projection plus a small perturbation (trained DiTs have q close to k);
- a positional part: a per-head constant vector rotated by Wan's 3-D RoPE, so its dot products decay with distance
  (local heads); heads mix the two with weights from mostly positional to mostly content;
- Wan's RMS norm across channels, a per-head temperature (entropy from peaked to diffuse), then the 3-D RoPE on the
  whole vector;
- v: another projection of the content features, so that which keys are dropped changes the output.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

from ..geometry import VideoGeometry
from .fidelity import rope_3d

IMAGES = ("rocket", "coffee", "astronaut", "chelsea", "stereo_motorcycle")


def _image(name: str) -> torch.Tensor:
    import skimage.data

    im = getattr(skimage.data, name)()
    if isinstance(im, tuple):
        im = im[0]
    return torch.from_numpy(im).float().permute(2, 0, 1) / 255.0  # [3, H, W]


def photo_video(geometry: VideoGeometry, patch: int = 8, seed: int = 0) -> torch.Tensor:
    """A video [F, 3, h * patch, w * patch]: a pan across one photograph with a moving crop of another pasted on."""
    f, h, w = geometry.key
    gen = torch.Generator().manual_seed(seed)
    names = [IMAGES[i] for i in torch.randperm(len(IMAGES), generator=gen)[:2].tolist()]
    bg, fg = _image(names[0]), _image(names[1])
    ph, pw = h * patch, w * patch
    # Scale the background so that the frame covers ~60 % of its width (room to pan).
    s = max(ph / bg.shape[1], pw / (0.6 * bg.shape[2]))
    bg = torch.nn.functional.interpolate(bg[None], scale_factor=s, mode="bilinear", align_corners=False)[0]
    oh, ow = max(ph // 3, 1), max(pw // 3, 1)
    fg = torch.nn.functional.interpolate(fg[None], size=(oh, ow), mode="bilinear", align_corners=False)[0]
    frames = []
    for t in range(f):
        a = t / max(f - 1, 1)
        x0 = int(round(a * (bg.shape[2] - pw)))
        y0 = int(round((0.5 + 0.5 * math.sin(3.0 * a)) * (bg.shape[1] - ph)))
        frame = bg[:, y0:y0 + ph, x0:x0 + pw].clone()
        fy = int(round((0.2 + 0.5 * a) * (ph - oh)))
        fx = int(round((0.9 - 0.8 * a) * (pw - ow)))
        frame[:, fy:fy + oh, fx:fx + ow] = fg
        frames.append(frame)
    return torch.stack(frames)


def photo_qkv(
    geometry: VideoGeometry,
    heads: int = 4,
    head_dim: int = 64,
    seed: int = 0,
    patch: int = 8,
    dtype: torch.dtype = torch.float32,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (1, heads, L, head_dim) from `photo_video` (see the module docstring)."""
    f, h, w = geometry.key
    video = photo_video(geometry, patch, seed)  # [F, 3, h p, w p]
    patches = video.unfold(2, patch, patch).unfold(3, patch, patch)  # [F, 3, h, w, p, p]
    feats = patches.permute(0, 2, 3, 1, 4, 5).reshape(f, h, w, -1)
    context = torch.nn.functional.avg_pool2d(video, patch * 3, stride=patch, padding=patch)  # [F, 3, h, w]
    feats = torch.cat([feats, context.permute(0, 2, 3, 1).repeat(1, 1, 1, 8)], -1).reshape(f * h * w, -1)
    feats = (feats - feats.mean(0)) / feats.std(0).clamp(min=1e-3)
    gen = torch.Generator().manual_seed(seed + 1)
    n_in = feats.shape[1]
    qs, ks, vs = [], [], []
    for head in range(heads):
        a = head / max(heads - 1, 1)
        w_q = torch.randn(n_in, head_dim, generator=gen) / math.sqrt(n_in)
        w_k = w_q + 0.3 * torch.randn(n_in, head_dim, generator=gen) / math.sqrt(n_in)
        w_v = torch.randn(n_in, head_dim, generator=gen) / math.sqrt(n_in)
        c = torch.randn(head_dim, generator=gen)
        content_weight = 0.25 + 0.6 * a  # head 0 mostly positional, the last mostly content
        temperature = 4.0 - 2.5 * ((head * 7) % heads) / max(heads - 1, 1)  # peaked to diffuse, not tied to a

        def build(wm):
            x = content_weight * feats @ wm + (1 - content_weight) * c
            x = x / x.pow(2).mean(-1, keepdim=True).sqrt()  # Wan's RMS norm (weights 1)
            return rope_3d(x * math.sqrt(temperature), geometry)

        qs.append(build(w_q))
        ks.append(build(w_k))
        vs.append(feats @ w_v)
    return tuple(torch.stack(x)[None].to(dtype).contiguous() for x in (qs, ks, vs))


__all__ = ["photo_qkv", "photo_video"]
