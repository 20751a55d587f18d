"""Procedural captioned videos, generated on the fly from seeds, to train the ``tiny`` and ``small`` video models.

Each clip shows a few textured shapes (square, circle, triangle) that move with a constant velocity, may spin
and change color, and occlude one another in z-order, over a textured background (solid, striped, checkered,
gradient), filmed by a camera that may pan and zoom (a global affine map of the scene). The caption is built from
the sampled attributes with a small template grammar, e.g.::

    a red square moves left over a white striped background
    a blue circle and a green triangle drift up while the camera zooms in over a gray checkered background

A :class:`SceneStyle` sets the scene statistics: ``TINY_STYLE`` (the default, one to three shapes, what the ``tiny``
model trains on) or ``SMALL_STYLE`` for the larger ``small`` model (33 frames at 384x640): two to eight smaller
shapes spread over the wide frame, some crossing the whole frame within the clip and some repeating the look of
another shape, so attention has long-range structure (the same object far away in space and time) and content
structure (equal-looking objects in distant places) and not only local structure.

Scene parameters are drawn per sample from ``random.Random`` seeded by ``(seed, index)``, so a clip depends only on
the seed and its index in the batch (not on the batch size or the device). Rendering is fully vectorised in torch
over (batch, frame, row, column): no Python loop runs per pixel or per frame, only over the (at most eight) objects,
so a batch renders in milliseconds on a GPU. Edges and textures are anti-aliased over about one pixel, so the same
scene renders consistently at any resolution.

``VOCAB`` is the complete list of words the captions use (a word-level tokenizer built from it covers them exactly).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import torch

FPS = 16.0  # frames per second of the clips (Wan's rate): velocities below are in scene units per second.

# Named colors (RGB in [0, 1]).
PALETTE = {
    "red": (0.86, 0.12, 0.12),
    "orange": (0.98, 0.55, 0.05),
    "yellow": (0.97, 0.87, 0.15),
    "green": (0.15, 0.68, 0.25),
    "blue": (0.12, 0.32, 0.88),
    "purple": (0.56, 0.22, 0.74),
    "white": (0.95, 0.95, 0.95),
    "gray": (0.50, 0.50, 0.50),
    "black": (0.07, 0.07, 0.07),
}
COLORS = tuple(PALETTE)
SHAPES = ("square", "circle", "triangle")
OBJECT_TEXTURES = ("solid", "striped", "checkered")
BACKGROUNDS = ("solid", "striped", "checkered", "gradient")
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, 1.0), "down": (0.0, -1.0)}
VERBS = {"moves": "move", "drifts": "drift", "slides": "slide", "glides": "glide"}  # singular -> plural

# Every word the caption templates can produce.
VOCAB: Tuple[str, ...] = tuple(
    sorted(
        set(COLORS)
        | set(SHAPES)
        | set(OBJECT_TEXTURES)
        | set(BACKGROUNDS)
        | set(DIRECTIONS)
        | set(VERBS)
        | set(VERBS.values())
        | {"a", "an", "spinning", "that", "turns", "stays", "stay", "still", "and", "while", "the", "camera"}
        | {"pans", "zooms", "in", "out", "over", "background"}
    )
)


def shade(rgb: Sequence[float]) -> Tuple[float, float, float]:
    """The second color of a pattern: a darker version of a light color, a lighter version of a dark one."""
    r, g, b = rgb
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    if lum > 0.4:
        return (0.55 * r, 0.55 * g, 0.55 * b)
    return (r + 0.4 * (1 - r), g + 0.4 * (1 - g), b + 0.4 * (1 - b))


@dataclass
class SceneObject:
    shape: str
    color: str
    texture: str
    radius: float
    center: Tuple[float, float]  # position at mid-clip
    velocity: Tuple[float, float]  # units per second
    direction: Optional[str]  # caption direction word, None when still
    angle: float  # orientation at t = 0 (radians)
    spin: float  # angular velocity (radians per second)
    tex_period: float
    color_to: Optional[str] = None  # linear color change over the clip

    @property
    def spinning(self) -> bool:
        return self.spin != 0.0


@dataclass
class Scene:
    background: str
    bg_color: str
    bg_angle: float
    bg_period: float
    objects: List[SceneObject] = field(default_factory=list)
    shared_motion: bool = False
    pan: Optional[str] = None  # camera pan direction word
    pan_speed: float = 0.0
    zoom: Optional[str] = None  # "in" / "out"
    zoom_rate: float = 0.0
    verbs: List[str] = field(default_factory=list)  # one singular verb per motion clause


@dataclass(frozen=True)
class SceneStyle:
    """Statistics of the sampled scenes (lengths in scene units: the frame is 2 units high).

    Args:
        object_counts (`tuple` of `int`), count_weights (`tuple` of `float`): how many shapes a scene has, and the
            weights of those counts.
        radius (`(float, float)`): range of the shape radius.
        center_x, center_y (`float`): shape positions at mid-clip are uniform in ``[-center_x, center_x] x
            [-center_y, center_y]`` (for a wide frame ``center_x`` should grow with the aspect ratio).
        speed (`(float, float)`): speed range of moving shapes, units per second.
        cross_prob (`float`): probability that a moving shape is fast (``cross_speed``), so that it travels across
            most of the frame within the clip.
        cross_speed (`(float, float)`): speed range of those shapes.
        repeat_prob (`float`): probability that a shape (after the first) copies the shape, texture and color of an
            earlier one, so equal-looking objects appear in distant places.
        shared_prob (`float`): probability that all shapes of a multi-shape scene move together.
    """

    object_counts: Tuple[int, ...] = (1, 2, 3)
    count_weights: Tuple[float, ...] = (0.4, 0.35, 0.25)
    radius: Tuple[float, float] = (0.18, 0.32)
    center_x: float = 0.6
    center_y: float = 0.55
    speed: Tuple[float, float] = (0.5, 0.9)
    cross_prob: float = 0.0
    cross_speed: Tuple[float, float] = (1.2, 2.0)
    repeat_prob: float = 0.0
    shared_prob: float = 0.5

    @property
    def max_objects(self) -> int:
        return max(self.object_counts)


# The ``tiny`` model's scenes (the defaults; the random draws are exactly those of the original generator).
TINY_STYLE = SceneStyle()
# The ``small`` model's scenes, for 5:3 frames (384x640, aspect 1.67): more and smaller shapes spread over the width;
# a third of the moving ones cross the frame in a 33-frame clip (2 s at 16 fps: 2.4-4 units against a frame 3.3
# units wide), a quarter repeat an earlier shape's look, and shared motion is rarer (it hides independent motion).
SMALL_STYLE = SceneStyle(
    object_counts=(2, 3, 4, 5, 6, 7, 8),
    count_weights=(0.1, 0.15, 0.2, 0.2, 0.15, 0.1, 0.1),
    radius=(0.1, 0.24),
    center_x=1.4,
    center_y=0.75,
    speed=(0.4, 0.9),
    cross_prob=0.35,
    cross_speed=(1.2, 2.0),
    repeat_prob=0.25,
    shared_prob=0.25,
)
STYLES = {"tiny": TINY_STYLE, "small": SMALL_STYLE}


def _style(style: Union[str, SceneStyle, None]) -> SceneStyle:
    if style is None:
        return TINY_STYLE
    if isinstance(style, str):
        if style not in STYLES:
            raise ValueError(f"unknown scene style {style!r}; known: {', '.join(STYLES)}")
        return STYLES[style]
    return style


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(obj: SceneObject) -> str:
    words = []
    if obj.spinning:
        words.append("spinning")
    if obj.texture != "solid":
        words.append(obj.texture)
    words += [obj.color, obj.shape]
    phrase = f"{_article(words[0])} {' '.join(words)}"
    if obj.color_to is not None:
        phrase += f" that turns {obj.color_to}"
    return phrase


def caption(scene: Scene) -> str:
    """The caption of a scene (lower case words from ``VOCAB`` separated by single spaces)."""
    objs = scene.objects
    if scene.shared_motion and len(objs) > 1:
        subject = " and ".join(_noun_phrase(o) for o in objs)
        d = objs[0].direction
        clause = f"{subject} stay still" if d is None else f"{subject} {VERBS[scene.verbs[0]]} {d}"
    else:
        parts = []
        for o, verb in zip(objs, scene.verbs):
            motion = "stays still" if o.direction is None else f"{verb} {o.direction}"
            parts.append(f"{_noun_phrase(o)} {motion}")
        clause = " and ".join(parts)
    camera = []
    if scene.pan is not None:
        camera.append(f"pans {scene.pan}")
    if scene.zoom is not None:
        camera.append(f"zooms {scene.zoom}")
    if camera:
        clause += " while the camera " + " and ".join(camera)
    return f"{clause} over {_article(scene.bg_color)} {scene.bg_color} {scene.background} background"


def sample_scene(rng: random.Random, max_objects: Optional[int] = None,
                 style: Union[str, SceneStyle, None] = None) -> Scene:
    """Draw the attributes of one scene from ``rng``.

    Args:
        rng (`random.Random`): the source of randomness.
        max_objects (`int`, *optional*): at most this many shapes (defaults to the style's largest count).
        style (`str` or `SceneStyle`, *optional*): ``"tiny"`` (default), ``"small"`` or a `SceneStyle`.
    """
    st = _style(style)
    bg_color = rng.choice(COLORS)
    scene = Scene(
        background=rng.choice(BACKGROUNDS),
        bg_color=bg_color,
        bg_angle=rng.uniform(0.0, math.pi),
        bg_period=rng.uniform(0.25, 0.5),
    )
    obj_colors = [c for c in COLORS if c != bg_color]
    n = rng.choices(st.object_counts, weights=st.count_weights)[0]
    n = min(max_objects, n) if max_objects is not None else n
    scene.shared_motion = n > 1 and rng.random() < st.shared_prob
    shared_dir = None if rng.random() < 0.1 else rng.choice(list(DIRECTIONS))
    # draws that the tiny style does not use are skipped (not just unused) so its scenes stay what they were
    shared_fast = scene.shared_motion and st.cross_prob > 0 and rng.random() < st.cross_prob
    for k in range(n):
        if scene.shared_motion:
            direction = shared_dir
        else:
            direction = None if rng.random() < 0.1 else rng.choice(list(DIRECTIONS))
        if direction is None:
            velocity = (0.0, 0.0)
        else:
            dx, dy = DIRECTIONS[direction]
            speed, jitter = rng.uniform(*st.speed), rng.uniform(-0.15, 0.15)
            if shared_fast or (not scene.shared_motion and st.cross_prob > 0 and rng.random() < st.cross_prob):
                speed = rng.uniform(*st.cross_speed)
            velocity = (speed * dx - jitter * dy, speed * dy + jitter * dx)
        shape = rng.choice(SHAPES)
        texture = rng.choice(OBJECT_TEXTURES)
        # a solid circle looks the same when it spins, so only textured circles (and all other shapes) may spin
        spins = rng.random() < 0.35 and not (shape == "circle" and texture == "solid")
        spin = rng.choice((-1.0, 1.0)) * rng.uniform(1.5, 3.0) if spins else 0.0
        color = rng.choice(obj_colors)
        color_to = None
        if rng.random() < 0.25:
            color_to = rng.choice([c for c in obj_colors if c != color])
        if k > 0 and st.repeat_prob > 0 and rng.random() < st.repeat_prob:
            twin = rng.choice(scene.objects)  # the same look elsewhere in the frame (its own motion and spin)
            shape, texture, color, color_to = twin.shape, twin.texture, twin.color, twin.color_to
            spin = spin if not (shape == "circle" and texture == "solid") else 0.0
        scene.objects.append(
            SceneObject(
                shape=shape,
                color=color,
                texture=texture,
                radius=rng.uniform(*st.radius),
                center=(rng.uniform(-st.center_x, st.center_x), rng.uniform(-st.center_y, st.center_y)),
                velocity=velocity,
                direction=direction,
                angle=rng.uniform(0.0, 2 * math.pi),
                spin=spin,
                tex_period=rng.uniform(0.09, 0.16),
                color_to=color_to,
            )
        )
    scene.verbs = [rng.choice(list(VERBS)) for _ in range(1 if scene.shared_motion else n)]
    camera = rng.choices(("none", "pan", "zoom", "both"), weights=(0.4, 0.3, 0.2, 0.1))[0]
    if camera in ("pan", "both"):
        scene.pan = rng.choice(list(DIRECTIONS))
        scene.pan_speed = rng.uniform(0.3, 0.5)
    if camera in ("zoom", "both"):
        scene.zoom = rng.choice(("in", "out"))
        scene.zoom_rate = rng.uniform(0.35, 0.6)
    return scene


def sample_scenes(batch_size: int, seed: int = 0, max_objects: Optional[int] = None,
                  style: Union[str, SceneStyle, None] = None) -> List[Scene]:
    """``batch_size`` scenes; scene ``i`` depends only on ``(seed, i)`` (and the style)."""
    return [sample_scene(random.Random(int(seed) * 1_000_003 + i), max_objects, style) for i in range(batch_size)]


def _soft_wave(u: torch.Tensor, period: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """A square wave in [-1, 1] of the given period, anti-aliased over about one pixel (``px``, in scene units)."""
    sharp = period / (2 * math.pi * px)
    return (sharp * torch.sin(2 * math.pi * u / period)).clamp(-1.0, 1.0)


def _sdf_circle(lx: torch.Tensor, ly: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(lx * lx + ly * ly) - radius


def _sdf_square(lx: torch.Tensor, ly: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    half = 0.85 * radius
    qx, qy = lx.abs() - half, ly.abs() - half
    return torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2) + torch.maximum(qx, qy).clamp(max=0)


def _sdf_triangle(lx: torch.Tensor, ly: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Equilateral triangle pointing up (Inigo Quilez's exact SDF), half side ``1.1 * radius``."""
    r = 1.1 * radius
    k = math.sqrt(3.0)
    px, py = lx.abs() - r, ly + r / k
    fold = (px + k * py) > 0
    px, py = torch.where(fold, (px - k * py) / 2, px), torch.where(fold, (-k * px - py) / 2, py)
    px = px - torch.minimum(torch.maximum(px, -2 * r), torch.zeros_like(px))
    return -torch.sqrt(px * px + py * py) * torch.sign(py)


_SDF = {"square": _sdf_square, "circle": _sdf_circle, "triangle": _sdf_triangle}


def _by_group(keys: Sequence[str], fn, out: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
    """``out[i] = fn[keys[i]](*(x[i] for x in tensors))``, computed once per group of equal keys (no wasted work)."""
    for key in dict.fromkeys(keys):
        idx = [i for i, k in enumerate(keys) if k == key]
        if fn.get(key) is None:
            continue
        if len(idx) == len(keys):
            return fn[key](*tensors)
        sel = torch.tensor(idx, device=out.device)
        out[sel] = fn[key](*(x[sel] for x in tensors))
    return out


def _rgb(names: Sequence[str], device, dtype) -> torch.Tensor:
    return torch.tensor([PALETTE[n] for n in names], device=device, dtype=dtype)


def _shade_rgb(names: Sequence[str], device, dtype) -> torch.Tensor:
    return torch.tensor([shade(PALETTE[n]) for n in names], device=device, dtype=dtype)


@torch.no_grad()
def render_scenes(
    scenes: Sequence[Scene],
    frames: int = 17,
    height: int = 256,
    width: int = 256,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
    fps: float = FPS,
) -> torch.Tensor:
    """Render scenes to videos of shape (B, 3, frames, height, width) with values in [-1, 1].

    The screen shows the scene rectangle ``[-aspect, aspect] x [-1, 1]`` (y up) mapped through the camera: scene
    point ``camera_center(t) + screen / zoom(t)``. Motion is centred on the middle of the clip.
    """
    device = torch.device(device)
    F, H, W = frames, height, width
    kw = dict(device=device, dtype=torch.float32)
    t = torch.arange(F, **kw) / fps
    tc = t - (F - 1) / fps / 2  # time relative to the middle of the clip
    tau = t / max((F - 1) / fps, 1e-6)  # 0 -> 1 over the clip (color changes)
    aspect = W / H
    sx = ((torch.arange(W, **kw) + 0.5) / W * 2 - 1) * aspect
    sy = 1 - (torch.arange(H, **kw) + 0.5) / H * 2

    def per_scene(values):
        return torch.tensor(values, **kw)

    # camera: (B, F) centre and zoom
    pan = per_scene([DIRECTIONS[s.pan] if s.pan else (0.0, 0.0) for s in scenes]) * per_scene(
        [s.pan_speed for s in scenes]
    ).unsqueeze(1)
    cx = pan[:, :1] * tc  # (B, F)
    cy = pan[:, 1:] * tc
    zrate = per_scene([(s.zoom_rate if s.zoom == "in" else -s.zoom_rate) if s.zoom else 0.0 for s in scenes])
    zoom = torch.exp(zrate[:, None] * tc)  # (B, F)
    wx = cx[:, :, None, None] + sx[None, None, None, :] / zoom[:, :, None, None]  # (B, F, 1, W)
    wy = cy[:, :, None, None] + sy[None, None, :, None] / zoom[:, :, None, None]  # (B, F, H, 1)
    px = (2.0 / H / zoom)[:, :, None, None]  # size of a pixel in scene units, (B, F, 1, 1)

    # background
    ang = per_scene([s.bg_angle for s in scenes])[:, None, None, None]
    period = per_scene([s.bg_period for s in scenes])[:, None, None, None]
    u = wx * torch.cos(ang) + wy * torch.sin(ang)
    v = -wx * torch.sin(ang) + wy * torch.cos(ang)
    patterns = {
        "solid": None,
        "striped": lambda u, v, p, px: 0.5 + 0.5 * _soft_wave(u, p, px),
        "checkered": lambda u, v, p, px: 0.5 + 0.5 * _soft_wave(u, p, px) * _soft_wave(v, p, px),
        "gradient": lambda u, v, p, px: (0.5 + u / (4 * p)).clamp(0.0, 1.0),
    }
    mix = _by_group([s.background for s in scenes], patterns, torch.zeros_like(u), u, v, period, px).unsqueeze(1)
    c1 = _rgb([s.bg_color for s in scenes], device, torch.float32)[:, :, None, None, None]
    c2 = _shade_rgb([s.bg_color for s in scenes], device, torch.float32)[:, :, None, None, None]
    video = c1 + (c2 - c1) * mix  # (B, 3, F, H, W)

    # objects, painted back to front (list order is the z-order)
    n_max = max((len(s.objects) for s in scenes), default=0)
    for k in range(n_max):
        objs = [s.objects[k] if k < len(s.objects) else None for s in scenes]
        active = per_scene([o is not None for o in objs])
        objs = [o if o is not None else scenes[0].objects[0] for o in objs]  # placeholder, masked by `active`
        center = per_scene([o.center for o in objs])
        vel = per_scene([o.velocity for o in objs])
        ox = (center[:, :1] + vel[:, :1] * tc)[:, :, None, None]  # (B, F, 1, 1)
        oy = (center[:, 1:] + vel[:, 1:] * tc)[:, :, None, None]
        theta = (per_scene([o.angle for o in objs])[:, None] + per_scene([o.spin for o in objs])[:, None] * t)
        cos, sin = torch.cos(theta)[:, :, None, None], torch.sin(theta)[:, :, None, None]
        dx, dy = wx - ox, wy - oy
        lx, ly = cos * dx + sin * dy, -sin * dx + cos * dy  # (B, F, H, W)
        radius = per_scene([o.radius for o in objs])[:, None, None, None]
        sd = _by_group([o.shape for o in objs], _SDF, torch.empty_like(lx), lx, ly, radius)
        alpha = (0.5 - sd / px).clamp(0.0, 1.0) * active[:, None, None, None]
        tp = per_scene([o.tex_period for o in objs])[:, None, None, None]
        textures = {
            "solid": None,
            "striped": lambda lx, ly, tp, px: 0.5 + 0.5 * _soft_wave(lx, tp, px),
            "checkered": lambda lx, ly, tp, px: 0.5 + 0.5 * _soft_wave(lx, tp, px) * _soft_wave(ly, tp, px),
        }
        tmix = _by_group([o.texture for o in objs], textures, torch.zeros_like(lx), lx, ly, tp, px)
        tmix = tmix.unsqueeze(1)
        change = per_scene([o.color_to is not None for o in objs])[:, None] * tau  # (B, F)
        change = change[:, None, :, None, None]
        a_rgb = _rgb([o.color for o in objs], device, torch.float32)[:, :, None, None, None]
        b_rgb = _rgb([o.color_to or o.color for o in objs], device, torch.float32)[:, :, None, None, None]
        a_sh = _shade_rgb([o.color for o in objs], device, torch.float32)[:, :, None, None, None]
        b_sh = _shade_rgb([o.color_to or o.color for o in objs], device, torch.float32)[:, :, None, None, None]
        col = a_rgb + (b_rgb - a_rgb) * change
        col_sh = a_sh + (b_sh - a_sh) * change
        paint = col + (col_sh - col) * tmix
        alpha = alpha.unsqueeze(1)
        video = video + (paint - video) * alpha
    return (video * 2 - 1).clamp(-1.0, 1.0).to(dtype)


def sample_batch(
    batch_size: int,
    frames: int = 17,
    height: int = 256,
    width: int = 256,
    generator: Optional[torch.Generator] = None,
    seed: Optional[int] = None,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
    max_objects: Optional[int] = None,
    style: Union[str, SceneStyle, None] = None,
) -> Tuple[torch.Tensor, List[str]]:
    """A batch of captioned synthetic videos.

    Args:
        batch_size (`int`): number of clips.
        frames, height, width (`int`): clip size (any positive values; ``4k + 1`` frames and sides divisible by 16
            suit the Wan VAE).
        generator (`torch.Generator`, *optional*): draws the batch seed when ``seed`` is not given.
        seed (`int`, *optional*): the batch seed; clip ``i`` depends only on ``(seed, i)``. Defaults to 0 when neither
            ``seed`` nor ``generator`` is given.
        device (`str` or `torch.device`): where to render.
        dtype (`torch.dtype`): dtype of the returned videos.
        max_objects (`int`, *optional*): at most this many shapes per clip (defaults to the style's largest count:
            3 for ``"tiny"``, 8 for ``"small"``).
        style (`str` or `SceneStyle`, *optional*): the scene statistics, ``"tiny"`` (default) or ``"small"``.

    Returns:
        `(videos, captions)`: a float tensor of shape (B, 3, frames, height, width) in [-1, 1] and B captions.
    """
    if seed is None:
        seed = 0 if generator is None else int(torch.randint(0, 2**62, (1,), generator=generator).item())
    scenes = sample_scenes(batch_size, seed, max_objects, style)
    videos = render_scenes(scenes, frames, height, width, device=device, dtype=dtype)
    return videos, [caption(s) for s in scenes]


__all__ = [
    "BACKGROUNDS",
    "COLORS",
    "FPS",
    "OBJECT_TEXTURES",
    "PALETTE",
    "SHAPES",
    "SMALL_STYLE",
    "STYLES",
    "TINY_STYLE",
    "VOCAB",
    "Scene",
    "SceneObject",
    "SceneStyle",
    "caption",
    "render_scenes",
    "sample_batch",
    "sample_scene",
    "sample_scenes",
    "shade",
]
